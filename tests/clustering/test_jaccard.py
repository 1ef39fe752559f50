"""compute_jaccard_distance against a loop-by-loop port of the published algorithm; JaccardDBSCAN."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

from benchmarks.published_jaccard import published_from_rank
from ray_reid.clustering._backend import cupy_available
from ray_reid.clustering.jaccard import JaccardDBSCAN, compute_jaccard_distance
from ray_reid.clustering.knn import knn_search


def sphere_clusters(n: int, d: int = 16, centres: int = 6, noise: float = 0.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d))
    labels = rng.integers(0, centres, n)
    x = c[labels] + noise * rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def published_jaccard(x: np.ndarray, k1: int, k2: int, initial_rank: np.ndarray) -> np.ndarray:
    """The published loops on the unit sphere's squared distance ``2 - 2 x_i.x_j`` (float64), ranked by
    ``initial_rank`` (k1 columns, the point first, as the public code's faiss search returns it)."""
    x64 = x.astype(np.float64)
    return published_from_rank(2.0 - 2.0 * (x64 @ x64.T), initial_rank, k1, k2)


def densify(dist: sp.csr_matrix) -> np.ndarray:
    """Dense view where absent entries are distance 1, as documented."""
    out = np.ones(dist.shape, dtype=np.float64)
    coo = dist.tocoo()
    out[coo.row, coo.col] = coo.data
    return out


@pytest.mark.parametrize(
    "n,k1,k2,seed",
    [(30, 5, 2, 0), (60, 7, 3, 1), (80, 20, 6, 2), (120, 30, 6, 3), (50, 9, 1, 4), (40, 1, 1, 5)],
)
def test_matches_published_loops(n, k1, k2, seed):
    x, _ = sphere_clusters(n, seed=seed)
    _, initial_rank = knn_search(x, k1, device="cpu")
    expected = published_jaccard(x, k1, k2, initial_rank)
    got = compute_jaccard_distance(x, k1=k1, k2=k2, device="cpu")
    assert isinstance(got, sp.csr_matrix) and got.shape == (n, n)
    assert got.dtype == np.float32
    np.testing.assert_allclose(densify(got), expected, atol=1e-5, rtol=0)
    # Exactly the pairs below 1 are stored, and each stored pair is below 1.
    assert got.nnz == int((expected < 1).sum())
    assert (got.data < 1).all() and (got.data >= 0).all()
    assert got.has_sorted_indices


@pytest.mark.parametrize("block_pairs,block_cells", [(1, 1), (97, 1000), (5000, 200 * 7)])
def test_blocking_does_not_change_the_result(monkeypatch, block_pairs, block_cells):
    """Many small row blocks (down to one row each) give the same matrix as one block."""
    from ray_reid.clustering import jaccard

    x, _ = sphere_clusters(90, seed=8)
    whole = compute_jaccard_distance(x, k1=10, k2=3, device="cpu")
    monkeypatch.setattr(jaccard, "_BLOCK_PAIRS", block_pairs)
    monkeypatch.setattr(jaccard, "_BLOCK_CELLS", block_cells)
    blocked = compute_jaccard_distance(x, k1=10, k2=3, device="cpu")
    np.testing.assert_array_equal(blocked.indptr, whole.indptr)
    np.testing.assert_array_equal(blocked.indices, whole.indices)
    np.testing.assert_allclose(blocked.data, whole.data, atol=1e-7)


def test_structure_symmetric_diagonal_stored_and_non_trivial():
    x, _ = sphere_clusters(100, seed=11)
    dist = compute_jaccard_distance(x, k1=12, k2=4, device="cpu")
    dense = densify(dist)
    np.testing.assert_allclose(dense, dense.T, atol=1e-6)
    assert (dist.diagonal() <= 1e-6).all()
    assert (dist.getnnz(axis=1) >= 1).all()
    coo = dist.tocoo()
    assert ((coo.row == coo.col).sum()) == 100  # the diagonal is stored even where it is 0
    # Neither empty nor dense: neighbourhoods are local.
    assert 100 < dist.nnz < 100 * 100 * 0.8


def test_duplicates_keep_explicit_zero_distances():
    x, _ = sphere_clusters(40, seed=12)
    x = np.concatenate([x, x[:3]])  # rows 40..42 duplicate rows 0..2
    dist = compute_jaccard_distance(x, k1=6, k2=2, device="cpu")
    for a, b in [(0, 40), (1, 41), (2, 42)]:
        row = dist.getrow(a)
        assert b in row.indices  # stored, though possibly exactly 0
        assert dist[a, b] <= 1e-6


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"k1": 0}, "k1 must be in"),
        ({"k1": 41}, "k1 must be in"),
        ({"k1": 5, "k2": 6}, "k2 must be in"),
        ({"k2": 0}, "k2 must be in"),
        ({"k1": 3.0}, "k1 must be an integer"),
        ({"device": "gpu"}, "device must be one of"),
    ],
)
def test_validation(kwargs, match):
    x, _ = sphere_clusters(40)
    with pytest.raises(ValueError, match=match):
        compute_jaccard_distance(x, **kwargs)


def test_bad_features():
    with pytest.raises(ValueError, match="NaN or infinite"):
        compute_jaccard_distance(np.full((10, 4), np.inf), k1=3, k2=1)
    with pytest.raises(ValueError, match="2-D"):
        compute_jaccard_distance(np.zeros((2, 3, 4)), k1=1, k2=1)


def blobs_with_outliers(seed: int = 0):
    """Four tight, far-apart blobs of 25 points plus 3 isolated points on the unit sphere."""
    rng = np.random.default_rng(seed)
    d = 32
    centres = np.eye(d)[:4] * 1.0
    labels = np.repeat(np.arange(4), 25)
    x = centres[labels] + 0.05 * rng.standard_normal((100, d))
    far = np.eye(d)[[10, 20, 30]]
    x = np.concatenate([x, far])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.concatenate([labels, [-1, -1, -1]])


def test_dbscan_recovers_blobs_and_marks_outliers():
    x, truth = blobs_with_outliers()
    model = JaccardDBSCAN(eps=0.6, min_samples=4, k1=20, k2=6, device="cpu")
    labels = model.fit_predict(x)
    assert labels.shape == (103,) and labels.dtype == np.int64
    assert adjusted_rand_score(truth[:100], labels[:100]) == 1.0
    assert (labels[:100] >= 0).all()
    assert (labels[100:] == -1).all()
    assert model.n_clusters_ == 4
    assert model.n_outliers_ == 3
    assert model.fit(x) is model


def test_dbscan_on_sparse_equals_dbscan_on_dense_reference():
    x, _ = sphere_clusters(120, centres=8, noise=0.7, seed=21)
    _, initial_rank = knn_search(x, 15, device="cpu")
    dense = published_jaccard(x, 15, 4, initial_rank)
    expected = DBSCAN(eps=0.5, min_samples=3, metric="precomputed").fit_predict(dense)
    got = JaccardDBSCAN(eps=0.5, min_samples=3, k1=15, k2=4, device="cpu").fit_predict(x)
    assert len(set(expected.tolist())) > 2  # an interesting case: several clusters
    assert adjusted_rand_score(expected, got) == 1.0
    np.testing.assert_array_equal(expected == -1, got == -1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"eps": 0.0}, "eps must be in"),
        ({"eps": 1.0}, "eps must be in"),
        ({"eps": "0.6"}, "eps must be a real number"),
        ({"min_samples": 0}, "min_samples must be in"),
        ({"min_samples": 2.5}, "min_samples must be an integer"),
        ({"k1": 200}, "k1 must be in"),
        ({"k1": 4, "k2": 5}, "k2 must be in"),
        ({"device": "tpu"}, "device must be one of"),
    ],
)
def test_dbscan_validation(kwargs, match):
    x, _ = blobs_with_outliers()
    with pytest.raises(ValueError, match=match):
        JaccardDBSCAN(**kwargs).fit(x)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_available(), reason="needs a CUDA device")
def test_gpu_neighbour_search_gives_the_same_distance():
    import cupy

    x, _ = sphere_clusters(150, seed=31)
    cpu = compute_jaccard_distance(x, k1=20, k2=6, device="cpu")
    gpu = compute_jaccard_distance(cupy.asarray(x), k1=20, k2=6, device="cuda")
    np.testing.assert_allclose(densify(gpu), densify(cpu), atol=1e-5)
