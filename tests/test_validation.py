"""The shared value checks: one wording of each error, whichever config or estimator raises it."""

import numpy as np
import pytest

from ray_reid.validation import check_count, check_name


@pytest.mark.parametrize("value", [1, 7, np.int64(3)])
def test_count_accepts_positive_integers(value):
    check_count("EmbedConfig.batch_size", value)


@pytest.mark.parametrize("value", [0, -2, 2.0, True, "4", None])
def test_count_refuses_what_is_not_a_positive_integer_and_names_it(value):
    with pytest.raises(ValueError, match=rf"^EmbedConfig\.batch_size must be an integer >= 1, got {value!r}$"):
        check_count("EmbedConfig.batch_size", value)


def test_optional_count_allows_none_and_says_so_when_refusing():
    check_count("IndexConfig.nlist", None, optional=True)
    with pytest.raises(ValueError, match=r"IndexConfig\.nlist must be None or an integer >= 1, got 0"):
        check_count("IndexConfig.nlist", 0, optional=True)


def test_name_error_lists_the_registered_names():
    with pytest.raises(ValueError, match=r"model\.backbone='resnet5'.*resnet18, resnet50"):
        check_name("model.backbone", "resnet5", ["resnet50", "resnet18"])
