"""Candidate graphs for graph-constrained agglomeration: a k-NN graph, or one the caller supplies.

The graph path of :class:`~ray_reid.clustering.hierarchical.HierarchicalSSE` only ever merges
clusters joined by an edge, so the graph decides which merges are possible and its size
decides the memory (O(N·k) edges instead of N²). Edges come back undirected, as two host
int64 arrays (u, v) with u < v and no duplicates: i–j is an edge when j is among the k
nearest neighbours of i *or* i among those of j.

Search: exact (``flat``) is :func:`ray_reid.clustering.knn.knn_search` (symmetric blocked BLAS
on CPU, faiss or CuPy on a GPU); ``ivf`` is faiss's inverted-file index (approximate, far
cheaper at 10⁵–10⁶ points on a CPU); ``auto`` takes flat on a GPU or up to
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

KNN_INDEXES = ("auto", "flat", "ivf")
# Above this many rows a CPU exact search (N²·d/2 flops) costs minutes: 'auto' switches to IVF.
FLAT_MAX_ROWS = 50_000
# IVF: cells ≈ 2·√N, of which 16 are probed per query; k-means trained on ≤ 64 points per cell.
_IVF_CELLS_PER_SQRT_N = 2
_IVF_PROBES = 16
_IVF_TRAIN_PER_CELL = 64


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


def knn_graph(features: Any, n_neighbors: int, *, device: str = "auto",
              index: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Undirected k-NN graph of the rows of ``features`` (N×d NumPy or CuPy); host (u, v), u < v.

    ``n_neighbors`` counts neighbours besides the point itself; ``n_neighbors >= N - 1`` gives
    the complete graph.
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
    else:
        _, indices = knn_search(features, k, device=device)
    return edges_from_neighbours(indices)
