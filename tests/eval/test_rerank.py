"""k-reciprocal re-ranking against the published dense function, its memory, and bad input."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from published_rerank import published_re_ranking

from ray_reid.eval.rerank import RerankConfig, RerankedDistances, k_reciprocal_rerank
from ray_reid.eval.topk import FeatureDistances, exact_topk


def clustered(nq, ng, d=16, ids=15, noise=0.7, seed=0, normalize=True):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, d))
    labels = rng.integers(0, ids, nq + ng)
    x = (centres[labels] + noise * rng.standard_normal((nq + ng, d))).astype(np.float32)
    if normalize:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:nq], x[nq:], labels[:nq], labels[nq:]


def euclidean(a, b):
    return np.sqrt(FeatureDistances(a, b).block(0, len(a)))


@pytest.mark.parametrize(
    "nq, ng, d, k1, k2, lam, normalize",
    [
        (40, 200, 16, 20, 6, 0.3, True),  # the paper's parameters
        (30, 100, 8, 7, 3, 0.3, True),  # odd k1: round(k1/2) differs from k1 // 2
        (50, 250, 32, 20, 1, 0.5, True),  # no query expansion
        (10, 60, 4, 21, 6, 0.0, False),  # Jaccard only, features not on the sphere
        (3, 40, 8, 5, 6, 1.0, True),  # original distance only; k2 = k1 + 1
    ],
)
def test_equals_the_published_dense_function(nq, ng, d, k1, k2, lam, normalize):
    q, g, _, _ = clustered(nq, ng, d, normalize=normalize, seed=nq + k1)
    ref = published_re_ranking(euclidean(q, g), euclidean(q, q), euclidean(g, g), k1=k1, k2=k2, lambda_value=lam)
    ours = k_reciprocal_rerank(q, g, RerankConfig(k1=k1, k2=k2, lambda_value=lam), device="cpu")
    assert isinstance(ours, RerankedDistances) and ours.shape == (nq, ng)
    dense = ours.to_dense()
    np.testing.assert_allclose(dense, ref, rtol=0, atol=1e-5)
    # Row blocks of any size give the same matrix (up to BLAS rounding, which depends on the block's shape).
    blocks = np.concatenate([ours.block(i, min(i + 7, nq)) for i in range(0, nq, 7)])
    np.testing.assert_allclose(blocks, dense, rtol=0, atol=1e-6)


def test_reranking_changes_the_order_and_top_k_walks_it_exactly():
    q, g, _, _ = clustered(60, 240, seed=3)
    rr = k_reciprocal_rerank(q, g, device="cpu")
    dense = np.concatenate([rr.block(s, min(s + 13, 60)) for s in range(0, 60, 13)])  # the blocks top-k sees
    d, i = exact_topk(rr, 10, block_rows=13)
    ref_i = np.argsort(dense, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(d, np.take_along_axis(dense, ref_i, axis=1))
    plain_i = np.argsort(FeatureDistances(q, g).block(0, 60), axis=1, kind="stable")[:, :10]
    assert (plain_i != ref_i).any(), "re-ranking left every top-10 list unchanged"


def test_memory_grows_linearly_with_the_number_of_images_not_quadratically():
    peaks = {}
    for nq, ng in [(350, 1750), (700, 3500)]:
        q, g, _, _ = clustered(nq, ng, d=32, ids=nq // 3, noise=0.4)
        tracemalloc.start()
        rr = k_reciprocal_rerank(q, g, device="cpu")
        peaks[nq + ng] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        # What is kept: a support set's worth of gallery pairs per query, not the gallery.
        assert rr.jaccard.nnz < 0.05 * nq * ng
    growth = peaks[4200] / peaks[2100]
    # The neighbour search's scratch is a fixed 1,024 rows x N, so growth is linear once N > 1,024.
    assert growth < 2.6, f"peak memory grew {growth:.2f}x for 2x the images (quadratic would be 4x): {peaks}"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k1": 0}, "rerank.k1 must be a positive integer"),
        ({"k2": 2.5}, "rerank.k2 must be a positive integer"),
        ({"k1": 5, "k2": 7}, r"rerank.k2 \(7\) must be at most k1 \+ 1 \(6\)"),
        ({"lambda_value": 1.5}, r"rerank.lambda_value must be a number in \[0, 1\]"),
    ],
)
def test_config_validation_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RerankConfig(**kwargs)


def test_bad_input_is_refused_by_name():
    q, g, _, _ = clustered(5, 20)
    with pytest.raises(ValueError, match="dimension 16 but gallery_feats has 8"):
        k_reciprocal_rerank(q, g[:, :8])
    with pytest.raises(ValueError, match=r"k1 = 20 needs more than k1 images.*got 15"):
        k_reciprocal_rerank(q, g[:10])
    bad = g.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"gallery_feats contains NaN.*\[3\]"):
        k_reciprocal_rerank(q, bad)
