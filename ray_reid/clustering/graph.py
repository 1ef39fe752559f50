"""Candidate graphs for graph-constrained agglomeration: a k-NN graph, or one the caller supplies.

The graph path of :class:`~ray_reid.clustering.hierarchical.HierarchicalSSE` only ever merges
clusters joined by an edge, so the graph decides which merges are possible and its size
decides the memory (O(N·k) edges instead of N²). Edges come back undirected, as two host
int64 arrays (u, v) with u < v and no duplicates: i–j is an edge when j is among the k
nearest neighbours of i *or* i among those of j.

Search: exact (``flat``) is :func:`ray_reid.clustering.knn.knn_search` (symmetric blocked BLAS
on CPU, faiss or CuPy on a GPU); ``ivf`` is faiss's inverted-file index (approximate, far
cheaper at 10⁵–10⁶ points on a CPU); ``pca`` is an exact search among the features projected
on their top ``PCA_DIMS`` principal directions (the candidate *graph* is approximate, the merge
costs stay exact on the full features; at d = 2048 the search is ~10× fewer multiply-adds than
flat and, unlike IVF, still one BLAS product per block); ``auto`` takes flat on a GPU or up to
``FLAT_MAX_ROWS`` rows, IVF beyond. Without faiss, IVF falls back to the exact search.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ray_reid.clustering._backend import to_numpy
from ray_reid.clustering.knn import _gpu_search, knn_search

log = logging.getLogger(__name__)

KNN_INDEXES = ("auto", "flat", "ivf", "pca")
# Above this many rows a CPU exact search (N²·d/2 flops) costs minutes: 'auto' switches to IVF.
FLAT_MAX_ROWS = 50_000
# IVF: cells ≈ 2·√N, of which 16 are probed per query; k-means trained on ≤ 64 points per cell.
_IVF_CELLS_PER_SQRT_N = 2
_IVF_PROBES = 16
_IVF_TRAIN_PER_CELL = 64
# pca: directions estimated on at most this many sampled rows (randomized range finder with
# power iterations: a few thin matrix products, no d×d eigenproblem); rows projected in blocks.
PCA_DIMS = 128
_PCA_SAMPLE_ROWS = 8192
_PCA_OVERSAMPLE = 16
_PCA_POWER_ITERATIONS = 2
_PCA_BLOCK_ROWS = 65536
# pca: candidates per sample searched in the projection, as a multiple of k, then ranked exactly
_PCA_CANDIDATES = 2
_REFINE_GATHER_BYTES = 64 << 20


def edges_from_neighbours(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected unique edges (u < v) from an N×k neighbour table; self and missing (-1) entries dropped."""
    n, k = indices.shape
    u = np.repeat(np.arange(n, dtype=np.int64), k)
    v = indices.reshape(-1).astype(np.int64, copy=False)
    ok = (v >= 0) & (v != u)
    return _unique_pairs(u[ok], v[ok], n)


def edges_from_matrix(connectivity: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Undirected unique edges from an N×N adjacency (dense or scipy.sparse; any non-zero is an edge)."""
    import scipy.sparse as sp

    shape = getattr(connectivity, "shape", None)
    if shape is None or len(shape) != 2 or tuple(shape) != (n, n):
        raise ValueError(f"connectivity must be an N×N adjacency matrix with N = {n} (the number of samples), "
                         f"got shape {shape}")
    coo = sp.coo_matrix(connectivity)
    keep = coo.data != 0
    u, v = coo.row[keep].astype(np.int64), coo.col[keep].astype(np.int64)
    ok = u != v
    return _unique_pairs(u[ok], v[ok], n)


def _unique_pairs(u: np.ndarray, v: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    key = np.unique(lo * n + hi)
    return key // n, key % n


def _ivf_knn(x: np.ndarray, k: int, on_gpu: bool) -> tuple[np.ndarray, np.ndarray]:
    """Approximate self k-NN with faiss IndexIVFFlat (cells ≈ 2√N, 16 probed)."""
    import faiss

    n, d = x.shape
    cells = max(1, min(n // 39, _IVF_CELLS_PER_SQRT_N * int(math.sqrt(n))))
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, cells)
    index.cp.niter = 10
    rng = np.random.default_rng(0)
    train = x[np.sort(rng.choice(n, size=min(n, _IVF_TRAIN_PER_CELL * cells), replace=False))]
    if on_gpu:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.train(train)
    index.add(x)
    index.nprobe = min(cells, _IVF_PROBES)
    log.info("IVF k-NN: %d cells, %d probed, trained on %d of %d rows", cells, index.nprobe, len(train), n)
    distances, indices = index.search(x, k)
    return distances, indices.astype(np.int64, copy=False)


def pca_project(features: Any, dims: int = PCA_DIMS, *, seed: int = 0) -> Any:
    """``features`` (N×d, NumPy or CuPy) on their top ``dims`` principal directions, float32, same device.

    Why PCA and not a random projection: re-ID embeddings (and the benchmark's mixtures) put
    the identity structure in the leading directions and spread the noise evenly, so the
    principal subspace keeps more of the gap between a neighbour and a stranger than a random
    subspace of the same size does. The directions come from at most ``_PCA_SAMPLE_ROWS``
    sampled rows by a randomized range finder (Halko et al. 2011) with power iterations, so
    the cost is O(N·d·dims), not a d×d eigendecomposition. Distances are translation
    invariant, so the projection skips centring. ``dims >= d`` returns a float32 copy.
    """
    from ray_reid.clustering._backend import array_module

    xp = array_module(features)
    n, d = int(features.shape[0]), int(features.shape[1])
    if isinstance(dims, bool) or not isinstance(dims, (int, np.integer)) or dims < 1:
        raise ValueError(f"dims must be a positive integer, got {dims!r}")
    if dims >= d:
        return features.astype(xp.float32, copy=True)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, _PCA_SAMPLE_ROWS), replace=False))
    sample = features[xp.asarray(rows)].astype(xp.float32)
    sample -= sample.mean(axis=0, keepdims=True)
    width = min(d, dims + _PCA_OVERSAMPLE, len(rows))
    basis = _orthonormal(sample @ xp.asarray(rng.standard_normal((d, width)), dtype=xp.float32))
    for _ in range(_PCA_POWER_ITERATIONS):
        basis = _orthonormal(sample @ (sample.T @ basis))
    # right singular vectors of B = basisᵀ·sample from the small Gram matrix B·Bᵀ
    b = basis.T @ sample
    evals, evecs = xp.linalg.eigh((b @ b.T).astype(xp.float64))
    top = xp.argsort(evals)[::-1][: min(dims, width)]
    scale = 1.0 / xp.sqrt(xp.maximum(evals[top], evals[top[0]] * 1e-12))
    components = xp.ascontiguousarray((b.T @ (evecs[:, top] * scale).astype(xp.float32)))  # d × dims, orthonormal
    out = xp.empty((n, components.shape[1]), dtype=xp.float32)
    for a in range(0, n, _PCA_BLOCK_ROWS):
        out[a : a + _PCA_BLOCK_ROWS] = features[a : a + _PCA_BLOCK_ROWS].astype(xp.float32, copy=False) @ components
    return out


def refine_neighbours(features: Any, candidates: Any, k: int) -> np.ndarray:
    """The ``k`` nearest of each row's ``candidates`` (N×m indices) by exact squared distance; host N×k.

    The projection ranks neighbours approximately; re-ranking a few times k candidates on the
    full features recovers nearly all of the exact k-NN for O(N·m·d) work (one batched
    matrix-vector product per block of rows), a small fraction of a flat search.
    """
    from ray_reid.clustering._backend import array_module

    xp = array_module(features)
    cand = xp.asarray(candidates)
    n, m = int(cand.shape[0]), int(cand.shape[1])
    d = int(features.shape[1])
    rows = max(1, _REFINE_GATHER_BYTES // max(1, m * d * 4))
    out = np.empty((n, min(k, m)), dtype=np.int64)
    sq_norm = xp.einsum("ij,ij->i", features, features)
    for a in range(0, n, rows):
        b = min(n, a + rows)
        c = cand[a:b]
        x = features[a:b]
        # ‖x_j‖² − 2·x_i·x_j ranks the candidates j of row i as ‖x_i − x_j‖² does
        d2 = sq_norm[c] - 2 * xp.matmul(features[c], x[:, :, None])[:, :, 0]
        keep = xp.argsort(d2, axis=1, kind="stable")[:, : out.shape[1]]
        out[a:b] = to_numpy(xp.take_along_axis(c, keep, axis=1))
    return out


def _flat_knn_low_dim(x: np.ndarray, k: int) -> np.ndarray:
    """Exact self k-NN of few-dimensional host rows: faiss's flat index when installed, else ours.

    In a few dozen dimensions the matrix product is cheap and the selection of the k best per
    row dominates: faiss's heap selection is ~3× faster there than the symmetric search's
    partitions (at d = 2048 the two cost the same, so flat search keeps the symmetric one).
    """
    try:
        import faiss
    except ImportError:
        return knn_search(x, k, device="cpu")[1]
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(x, dtype=np.float32))
    _, indices = index.search(np.ascontiguousarray(x, dtype=np.float32), k)
    return indices.astype(np.int64, copy=False)


def _orthonormal(y: Any) -> Any:
    """An orthonormal basis of the columns of the tall ``y`` (m × w) through its w × w Gram matrix.

    LAPACK's Householder QR of a tall float32 matrix costs a second per call on these cores;
    the eigendecomposition of YᵀY (float64) is milliseconds and is accurate enough for
    choosing a subspace (directions with negligible energy are dropped, not amplified).
    """
    from ray_reid.clustering._backend import array_module

    xp = array_module(y)
    evals, evecs = xp.linalg.eigh((y.T @ y).astype(xp.float64))
    keep = evals > evals.max() * 1e-10
    return y @ (evecs[:, keep] / xp.sqrt(evals[keep])).astype(xp.float32)


def knn_graph(features: Any, n_neighbors: int, *, device: str = "auto",
              index: str = "auto", pca_dims: int = PCA_DIMS) -> tuple[np.ndarray, np.ndarray]:
    """Undirected k-NN graph of the rows of ``features`` (N×d NumPy or CuPy); host (u, v), u < v.

    ``n_neighbors`` counts neighbours besides the point itself; ``n_neighbors >= N - 1`` gives
    the complete graph. ``pca_dims`` is the projection's size for ``index="pca"``.
    """
    if index not in KNN_INDEXES:
        raise ValueError(f"knn_index must be one of {KNN_INDEXES}, got {index!r}")
    n = int(features.shape[0])
    k = min(int(n_neighbors) + 1, n)
    if k >= n:  # every pair: no search needed
        iu, iv = np.triu_indices(n, 1)
        return iu.astype(np.int64), iv.astype(np.int64)
    gpu = _gpu_search(device)
    use_ivf = index == "ivf" or (index == "auto" and gpu is None and n > FLAT_MAX_ROWS)
    if use_ivf:
        try:
            import faiss  # noqa: F401
        except ImportError:
            log.warning("knn_index=%r needs faiss, which is not installed: exact search instead", index)
            use_ivf = False
    if use_ivf:
        x = np.ascontiguousarray(to_numpy(features), dtype=np.float32)
        _, indices = _ivf_knn(x, k, on_gpu=gpu == "faiss")
    elif index == "pca":
        reduced = pca_project(features, pca_dims)
        log.info("PCA k-NN: exact search among %d of %d dimensions", reduced.shape[1], features.shape[1])
        wide = min(n, _PCA_CANDIDATES * k)
        candidates = _flat_knn_low_dim(reduced, wide) if gpu is None else knn_search(reduced, wide, device=device)[1]
        del reduced
        indices = candidates if wide == k else refine_neighbours(features, candidates, k)
    else:
        _, indices = knn_search(features, k, device=device)
    return edges_from_neighbours(indices)
