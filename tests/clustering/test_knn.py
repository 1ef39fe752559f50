"""knn_search against a brute-force argsort, the self-first rule, and input validation."""

from __future__ import annotations

import numpy as np
import pytest

from ray_reid.clustering._backend import cupy_available
from ray_reid.clustering.knn import knn_search


def clustered(n: int, d: int = 16, centres: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d))
    x = c[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, d))
    return x.astype(np.float32)


def brute_force(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    x64 = x.astype(np.float64)
    sq = ((x64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    idx = np.argsort(sq, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sq, idx, axis=1), idx


@pytest.mark.parametrize("n,k", [(40, 1), (40, 7), (97, 30), (25, 25)])
def test_matches_brute_force(n, k):
    x = clustered(n, seed=n + k)
    dist, idx = knn_search(x, k, device="cpu")
    ref_dist, ref_idx = brute_force(x, k)
    assert dist.shape == idx.shape == (n, k)
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)
    # Continuous random data has no distance ties, so the neighbour order is exact.
    np.testing.assert_array_equal(idx, ref_idx)
    assert (idx[:, 0] == np.arange(n)).all()
    assert (np.diff(dist, axis=1) >= -1e-5).all()


@pytest.mark.parametrize("block_rows,k", [(1, 5), (7, 3), (7, 12), (16, 40), (64, 64)])
def test_blocked_cpu_search_matches_brute_force(monkeypatch, block_rows, k):
    """Blocks smaller and larger than k, N not a multiple of the block: every row still exact."""
    from ray_reid.clustering import knn

    monkeypatch.setattr(knn, "_BLOCK_ROWS", block_rows)
    x = clustered(64, seed=block_rows + k)
    dist, idx = knn_search(x, k, device="cpu")
    ref_dist, ref_idx = brute_force(x, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dup_rows", [(0, 1, 2, 3, 4), (2, 5, 7, 9, 11)])
def test_self_first_with_exact_duplicates(monkeypatch, dup_rows):
    from ray_reid.clustering import knn

    monkeypatch.setattr(knn, "_BLOCK_ROWS", 4)  # duplicates fall in different blocks
    x = clustered(16, seed=3)
    x[list(dup_rows)] = x[dup_rows[0]]
    dist, idx = knn_search(x, 3, device="cpu")
    assert (idx[:, 0] == np.arange(len(x))).all()
    group = set(dup_rows)
    for i in dup_rows:  # the other neighbours are duplicates, listed once each, never self
        np.testing.assert_allclose(dist[i], 0.0, atol=1e-5)
        assert len(set(idx[i].tolist())) == 3
        assert set(idx[i, 1:].tolist()) <= group - {i}


def test_accepts_float64_and_noncontiguous_input():
    x = clustered(30, d=8, seed=1)
    wide = np.zeros((30, 16), dtype=np.float64)
    wide[:, ::2] = x
    wide = np.asfortranarray(wide)[:, ::2]  # float64, neither C- nor F-contiguous
    assert not wide.flags.c_contiguous
    d1, i1 = knn_search(x, 5, device="cpu")
    d2, i2 = knn_search(wide, 5, device="cpu")
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, rtol=1e-6)


@pytest.mark.parametrize(
    "features,k,device,match",
    [
        (np.zeros((5, 3), np.float32), 0, "cpu", "k must be in"),
        (np.zeros((5, 3), np.float32), 6, "cpu", "k must be in"),
        (np.zeros((5, 3), np.float32), 2.0, "cpu", "integer"),
        (np.zeros((5, 3), np.float32), True, "cpu", "integer"),
        (np.zeros(5, np.float32), 1, "cpu", "2-D"),
        (np.zeros((0, 3), np.float32), 1, "cpu", "at least one row"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), 1, "cpu", "NaN or infinite"),
        (np.array([["a", "b"]]), 1, "cpu", "real numbers"),
        (np.zeros((5, 3), np.float32), 2, "tpu", "device must be one of"),
    ],
)
def test_validation(features, k, device, match):
    with pytest.raises(ValueError, match=match):
        knn_search(features, k, device=device)


def test_cuda_without_gpu_is_a_clear_error():
    import faiss

    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no GPU"):
        knn_search(clustered(10), 2, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu_and_takes_cupy_input():
    import cupy

    x = clustered(200, d=32, seed=7)
    d_cpu, i_cpu = knn_search(x, 10, device="cpu")
    d_gpu, i_gpu = knn_search(cupy.asarray(x), 10, device="cuda")
    np.testing.assert_array_equal(i_cpu, i_gpu)
    np.testing.assert_allclose(d_cpu, d_gpu, rtol=1e-4, atol=1e-4)


def test_row_max_is_each_rows_largest_squared_distance():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2500, 8)).astype(np.float32)  # > one 1,024-row block: both halves of the triangle
    _, _, row_max = knn_search(x, 4, device="cpu", return_row_max=True)
    brute = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1).max(axis=1)
    np.testing.assert_allclose(row_max, brute, rtol=1e-5)
