"""Exact top-k by blocks: equal to the head of a stable full argsort, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from ray_reid.eval.topk import FeatureDistances, exact_topk, smallest_k


@pytest.mark.parametrize("k", [1, 5, 30, 40])
@pytest.mark.parametrize("ties", [False, True])
def test_smallest_k_is_the_head_of_a_stable_argsort(k, ties):
    rng = np.random.default_rng(k)
    dist = rng.integers(0, 4, (50, 40)).astype(np.float32) if ties else rng.random((50, 40), dtype=np.float32)
    vals, cols = smallest_k(dist, k)
    ref = np.argsort(dist, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(cols, ref)
    np.testing.assert_array_equal(vals, np.take_along_axis(dist, ref, axis=1))


def test_exact_topk_from_features_and_from_a_dense_matrix_agree_with_brute_force():
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((37, 12)), rng.standard_normal((300, 12))
    brute = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    d, i = exact_topk(FeatureDistances(q, g), 7, block_rows=5)
    np.testing.assert_array_equal(i, np.argsort(brute, axis=1, kind="stable")[:, :7])
    np.testing.assert_allclose(d, np.sort(brute, axis=1)[:, :7], rtol=1e-4, atol=1e-4)
    d2, i2 = exact_topk(brute.astype(np.float32), 7, block_rows=11)
    np.testing.assert_array_equal(i2, i)
    # k beyond the gallery: every entry, in order.
    _, i3 = exact_topk(brute, 500)
    assert i3.shape == (37, 300)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="k must be a positive integer"):
        exact_topk(np.zeros((2, 3)), 0)
    with pytest.raises(ValueError, match="dimension 4 but gallery_feats has 3"):
        FeatureDistances(np.zeros((2, 4)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"query_feats contains NaN.*\[1\]"):
        FeatureDistances(np.array([[0.0, 1.0], [np.nan, 0.0]]), np.zeros((3, 2)))
