"""Members whose nearest neighbours sit in other clusters are left out; brute-force cross-check."""

import numpy as np
import pytest

from ray_reid.clustering.outliers import drop_uncertain, neighbour_agreement


def brute_agreement(x, labels, k):
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.array([(labels[nn[i]] == labels[i]).mean() if labels[i] >= 0 else 0.0 for i in range(len(x))])


def test_agreement_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    labels = rng.integers(-1, 4, size=60)
    for k in (1, 3, 7):
        np.testing.assert_allclose(neighbour_agreement(x, labels, n_neighbors=k, device="cpu"),
                                   brute_agreement(x, labels, k))


def test_a_wrongly_merged_point_is_dropped_and_the_core_kept():
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 0.05, size=(10, 2))
    b = rng.normal(3.0, 0.05, size=(10, 2))
    x = np.concatenate([a, b]).astype(np.float32)
    labels = np.array([0] * 10 + [1] * 10)
    labels[3] = 1  # a member of blob a merged into cluster 1 by mistake
    out = drop_uncertain(x, labels, n_neighbors=4, min_agreement=0.5, device="cpu")
    assert out[3] == -1
    assert (out[np.arange(20) != 3] == labels[np.arange(20) != 3]).all()
    assert labels[3] == 1  # the input is not modified


def test_off_and_bad_arguments():
    x = np.eye(4, dtype=np.float32)
    labels = np.array([0, 0, 1, -1])
    np.testing.assert_array_equal(drop_uncertain(x, labels, n_neighbors=2, min_agreement=0.0), labels)
    assert neighbour_agreement(x, labels, n_neighbors=10)[3] == 0.0  # an outlier never agrees; k capped at N-1
    with pytest.raises(ValueError, match="min_agreement"):
        drop_uncertain(x, labels, n_neighbors=2, min_agreement=1.5)
    with pytest.raises(ValueError, match="n_neighbors"):
        neighbour_agreement(x, labels, n_neighbors=0)
    with pytest.raises(ValueError, match="one entry per feature row"):
        neighbour_agreement(x, labels[:3], n_neighbors=1)
