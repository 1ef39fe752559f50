"""Candidate graphs for graph-constrained agglomeration: a k-NN graph, or one the caller supplies.

The graph path of :class:`~ray_reid.clustering.hierarchical.HierarchicalSSE` only ever merges
clusters joined by an edge, so the graph decides which merges are possible and its size
decides the memory (O(N·k) edges instead of N²). Edges come back undirected, as two host
int64 arrays (u, v) with u < v and no duplicates: i–j is an edge when j is among the k
nearest neighbours of i *or* i among those of j.

Search: exact (``flat``) is :func:`ray_reid.clustering.knn.knn_search` (symmetric blocked BLAS
on CPU, faiss or CuPy on a GPU); ``ivf`` is faiss's inverted-file index (approximate, far
cheaper at 10⁵–10⁶ points on a CPU); ``cells`` compares each row exactly, on the full features,
with the rows of its few nearest k-means cells cut in a PCA projection (:func:`cell_knn`; the
projection only chooses whom to compare, so within an identity the ranking stays exact);
``pca`` is an exact search among the features projected
on their top ``PCA_DIMS`` principal directions (the candidate *graph* is approximate, the merge
costs stay exact on the full features; at d = 2048 the search is ~10× fewer multiply-adds than
flat and, unlike IVF, still one BLAS product per block); ``auto`` takes flat on a GPU or up to
``FLAT_MAX_ROWS`` rows, IVF beyond. Without faiss, IVF falls back to the exact search.
"""

from __future__ import annotations

import contextlib
import logging
import math
from types import ModuleType
from typing import Any

import numpy as np

from ray_reid.clustering._backend import to_numpy
from ray_reid.clustering.knn import _gpu_search, knn_search

log = logging.getLogger(__name__)

KNN_INDEXES = ("auto", "flat", "ivf", "pca", "cells")
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
# cells: k-means in a CELL_DIMS-d projection into cells of ~CELL_SIZE rows; each row compared
# exactly with the rows of its cell's CELL_PROBES nearest cells
CELL_DIMS = 64
CELL_SIZE = 24
CELL_PROBES = 8
_CELL_KMEANS_ITERATIONS = 8
_CELL_BLOCK_VALUES = 1 << 24  # 64 MB of float32 distances per block of rows
# up to this many cells: one flat k-means, and each row's probes chosen among all centroids;
# beyond: a two-level k-means, and probes chosen among _CELL_SHORTLIST × probes cells near its own
_CELL_FLAT_KMEANS_MAX = 1024
_CELL_SHORTLIST = 4


def edges_from_neighbours(indices: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Undirected unique edges (u < v) from an N×k neighbour table; self and missing (-1) entries dropped.

    With ``values`` (N×k, a symmetric quantity such as x_i·x_j) a third array holds each edge's
    value, taken from whichever of its two entries comes first.
    """
    n, k = indices.shape
    u = np.repeat(np.arange(n, dtype=np.int64), k)
    v = indices.reshape(-1).astype(np.int64, copy=False)
    ok = (v >= 0) & (v != u)
    if values is None:
        return _unique_pairs(u[ok], v[ok], n)
    u, v = u[ok], v[ok]
    key, first = np.unique(np.minimum(u, v) * n + np.maximum(u, v), return_index=True)
    return key // n, key % n, np.asarray(values).reshape(-1)[ok][first]


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


def kmeans_cells(z: np.ndarray, n_cells: int, *, iterations: int = _CELL_KMEANS_ITERATIONS,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means of the few-dimensional host rows ``z``: (cell of every row, centroids of the non-empty cells).

    Only the partition matters here (which rows get compared exactly), not its optimality, so a
    handful of iterations from a random sample of rows is enough; cells left empty are dropped and
    the returned cell numbers are 0..C-1 over the non-empty ones.
    """
    n = z.shape[0]
    n_cells = max(1, min(int(n_cells), n))
    rng = np.random.default_rng(seed)
    centroids = z[np.sort(rng.choice(n, size=n_cells, replace=False))].astype(np.float32)
    assign = np.zeros(n, dtype=np.int64)
    for _ in range(iterations + 1):
        assign = _nearest_centroids(z, centroids, 1)[:, 0]
        order = np.argsort(assign, kind="stable")
        present, starts = np.unique(assign[order], return_index=True)
        sums = np.add.reduceat(z[order].astype(np.float64), starts, axis=0)
        counts = np.diff(np.append(starts, n))
        centroids = (sums / counts[:, None]).astype(np.float32)
    # renumber the non-empty cells (the last assignment was made against those same centroids)
    renumber = np.full(n_cells, -1, dtype=np.int64)
    renumber[present] = np.arange(present.size)
    return renumber[assign], centroids


def _nearest_centroids(z: np.ndarray, centroids: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` nearest centroids of every row of ``z`` (N×m, unordered), in row blocks.

    ‖z − c‖² ranks as ‖c‖² − 2 z·c: one matrix product per block; the blocks bound the N×C
    temporary (1.7 GB at N = 100,000 and 4,167 cells if done at once).
    """
    n, n_cells = z.shape[0], centroids.shape[0]
    m = min(m, n_cells)
    c_sq = (centroids * centroids).sum(1)
    rows = max(1, _CELL_BLOCK_VALUES // max(1, n_cells))
    out = np.empty((n, m), dtype=np.int64)
    for a in range(0, n, rows):
        near = c_sq[None, :] - 2 * (z[a : a + rows] @ centroids.T)
        if m == 1:
            out[a : a + rows, 0] = np.argmin(near, axis=1)
        elif m < n_cells:
            out[a : a + rows] = np.argpartition(near, m - 1, axis=1)[:, :m]
        else:
            out[a : a + rows] = np.arange(n_cells)
    return out


def _nearest_in_shortlist(z: np.ndarray, centroids: np.ndarray, cell: np.ndarray, shortlist: np.ndarray,
                          m: int) -> np.ndarray:
    """Per row, the ``m`` nearest centroids among ``shortlist[cell[row]]`` (its own cell's nearest cells)."""
    n, width = z.shape[0], shortlist.shape[1]
    m = min(m, width)
    c_sq = (centroids * centroids).sum(1)
    rows = max(1, _CELL_BLOCK_VALUES // max(1, width * z.shape[1]))
    out = np.empty((n, m), dtype=np.int64)
    for a in range(0, n, rows):
        cand = shortlist[cell[a : a + rows]]
        near = c_sq[cand] - 2 * np.einsum("rd,rpd->rp", z[a : a + rows], centroids[cand])
        pick = np.argpartition(near, m - 1, axis=1)[:, :m] if m < width else np.arange(width)[None]
        out[a : a + rows] = np.take_along_axis(cand, np.broadcast_to(pick, (cand.shape[0], m)), axis=1)
    return out


def balanced_cells(z: np.ndarray, cell_size: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means cells of about ``cell_size`` rows, none over twice that: (cell of every row, centroids).

    Plain k-means in a projection leaves some cells with ten times their share (several
    identities that the projection does not separate), and a cell's work grows with the square
    of its size, so every oversized cell is cut again by k-means of its own rows into parts of
    about ``cell_size``, until none is (a part that k-means will not cut evenly, duplicates say, is
    halved along its widest axis, so every pass at least halves it).
    Beyond ``_CELL_FLAT_KMEANS_MAX`` cells the first k-means stops there and the same cutting
    makes the rest: a two-level k-means.
    """
    n = z.shape[0]
    # past _CELL_FLAT_KMEANS_MAX cells a flat k-means costs N·C per pass (4,167 cells at
    # N = 100,000: 30 s here); fewer, coarser cells cut again below cost N·(C₀ + C/C₀)
    cell, _ = kmeans_cells(z, min(math.ceil(n / cell_size), _CELL_FLAT_KMEANS_MAX), seed=seed)
    for _ in range(64):  # every pass at least halves each oversized cell: log2(N) passes at most
        sizes = np.bincount(cell)
        big = np.flatnonzero(sizes > 2 * cell_size)
        if big.size == 0:
            break
        next_id = int(sizes.size)
        for c in big:
            rows = np.flatnonzero(cell == c)
            parts, _ = kmeans_cells(z[rows], math.ceil(rows.size / cell_size), seed=seed + 1)
            if parts.max() == 0 or np.bincount(parts).max() > 2 * cell_size:
                # k-means would not cut it evenly: halve along the widest coordinate (always shrinks)
                axis = int(np.argmax(z[rows].var(axis=0)))
                parts = (np.argsort(np.argsort(z[rows, axis], kind="stable")) >= rows.size // 2).astype(np.int64)
            cell[rows[parts > 0]] = next_id + parts[parts > 0] - 1
            next_id += int(parts.max())
    _, cell = np.unique(cell, return_inverse=True)
    counts = np.bincount(cell).astype(np.float64)
    centroids = np.stack([np.bincount(cell, weights=z[:, j].astype(np.float64)) for j in range(z.shape[1])], axis=1)
    return cell.astype(np.int64), (centroids / counts[:, None]).astype(np.float32)


def cell_knn(features: Any, k: int, *, dims: int = CELL_DIMS, cell_size: int = CELL_SIZE,
             probes: int = CELL_PROBES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Self k-NN with exact distances among the rows of nearby cells: host (indices N×k, dot products N×k).

    Why: on a CPU an exact search at d = 2048 is the dense path's Gram matrix again (N²·d/2
    multiply-adds), and a search in a projection ranks the *exact* neighbours badly where they
    matter, among the near-equidistant members of one identity (the projection drops the
    per-image detail that orders them). Here the projection only decides *which rows are compared*:
    k-means on the rows projected to ``dims`` principal directions cuts them into cells of about
    ``cell_size`` rows, and every row is compared, by one matrix product per cell on the full
    features, with the rows of the ``probes`` cells whose centroids are nearest to it (its own among
    them, so a row near a cell boundary also sees the cell across it). Neighbours
    are ranked by exact distances; a true neighbour is missed only when it sits in a cell that
    was not probed. Cost ≈ N·probes·cell_size·d multiply-adds (about 1/35 of the flat search at
    N = 12,936 with cells of 24 and 8 probes), one product per cell (the rows probing it against
    its rows); memory O(N·probes·cell_size) for the candidates' distances.

    The dot products x_i·x_j of the returned neighbours come for free from the same products; the
    graph agglomeration starts from them instead of gathering two rows per edge. Rows with fewer
    than k candidates (tiny inputs) are padded with -1. The row itself is among its candidates and
    comes back as its own nearest neighbour (column 0) unless an exact duplicate ties with it.
    """
    from ray_reid.clustering._backend import array_module

    xp = array_module(features)
    n = int(features.shape[0])
    k = min(int(k), n)
    z = to_numpy(pca_project(features, dims, seed=seed))
    cell, centroids = balanced_cells(z, cell_size, seed=seed)
    n_cells = centroids.shape[0]
    # the cells each row probes: its `probes` nearest centroids (its own cell is the nearest or
    # close to it), so a row near a cell boundary also sees the cell across it, where the other
    # images of its identity may sit
    n_probe = min(int(probes), n_cells)
    if n_cells <= _CELL_FLAT_KMEANS_MAX:
        row_probe = _nearest_centroids(z, centroids, n_probe)
    else:  # among the cells near the row's own cell only: O(N·shortlist) instead of O(N·C)
        row_probe = _nearest_in_shortlist(z, centroids, cell, _nearest_centroids(
            centroids, centroids, _CELL_SHORTLIST * n_probe), n_probe)
    del z
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(n_cells + 1))
    width = int(np.diff(bounds).max())
    # per row, p blocks of `width` slots, one per probed cell: exact distances (minus ‖x_i‖²,
    # which does not change a row's order), the candidate's index and x_i·x_j; unused slots +inf
    dist = np.full((n, n_probe, width), np.inf, dtype=np.float32)
    who = np.full((n, n_probe, width), -1, dtype=np.int32 if n < 2**31 else np.int64)
    dot = np.zeros((n, n_probe, width), dtype=np.float32)
    # group the (row, slot) probes by the cell probed: one product per cell, the probing rows
    # gathered against the cell's rows (contiguous once the features are sorted by cell)
    flat_cell = row_probe.reshape(-1)
    by_cell = np.argsort(flat_cell, kind="stable")
    starts = np.searchsorted(flat_cell[by_cell], np.arange(n_cells + 1))
    order_d = xp.asarray(order)
    xs = features[order_d]
    sq = xp.einsum("ij,ij->i", xs, xs)
    with _one_blas_thread(xp):
        for c in range(n_cells):
            probing = by_cell[starts[c] : starts[c + 1]]
            if probing.size == 0:
                continue
            rows, slots = probing // n_probe, probing % n_probe
            a, b = int(bounds[c]), int(bounds[c + 1])
            g = features[xp.asarray(rows)] @ xs[a:b].T
            dist[rows, slots, : b - a] = to_numpy(sq[None, a:b] - 2 * g)
            dot[rows, slots, : b - a] = to_numpy(g)
            who[rows, slots, : b - a] = order[a:b]
    dist, who, dot = dist.reshape(n, -1), who.reshape(n, -1), dot.reshape(n, -1)
    m = min(k, dist.shape[1])
    part = np.argpartition(dist, m - 1, axis=1)[:, :m] if m < dist.shape[1] else np.broadcast_to(
        np.arange(m), (n, m))
    best = np.take_along_axis(part, np.argsort(np.take_along_axis(dist, part, axis=1), axis=1, kind="stable"), axis=1)
    indices = np.full((n, k), -1, dtype=np.int64)
    dots = np.zeros((n, k), dtype=np.float32)
    indices[:, :m] = np.take_along_axis(who, best, axis=1)
    dots[:, :m] = np.take_along_axis(dot, best, axis=1)
    missing = ~np.isfinite(np.take_along_axis(dist, best, axis=1))
    indices[:, :m][missing] = -1
    return indices, dots


def _one_blas_thread(xp: ModuleType) -> contextlib.AbstractContextManager:
    """Host BLAS on one thread for a loop of small products (a few hundred rows by a few dozen).

    At those sizes OpenBLAS's second thread mostly spins waiting for work: measured at
    N = 12,936 × 2048, the cell search took 2.2 s of CPU on two threads and 1.3 s on one, and
    less wall time too. Device arrays (CuPy) are unaffected.
    """
    if xp is not np:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


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


def knn_graph(features: Any, n_neighbors: int, *, device: str = "auto", index: str = "auto",
              pca_dims: int = PCA_DIMS, return_dots: bool = False) -> tuple[Any, ...]:
    """Undirected k-NN graph of the rows of ``features`` (N×d NumPy or CuPy); host (u, v), u < v.

    ``n_neighbors`` counts neighbours besides the point itself; ``n_neighbors >= N - 1`` gives
    the complete graph. ``pca_dims`` is the projection's size for ``index="pca"``. With
    ``return_dots`` a third item is x_u·x_v per edge where the search computed it anyway
    (``index="cells"``), else None.
    """
    if index not in KNN_INDEXES:
        raise ValueError(f"knn_index must be one of {KNN_INDEXES}, got {index!r}")
    n = int(features.shape[0])
    k = min(int(n_neighbors) + 1, n)
    if k >= n:  # every pair: no search needed
        iu, iv = np.triu_indices(n, 1)
        return (iu.astype(np.int64), iv.astype(np.int64)) + ((None,) if return_dots else ())
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
    elif index == "cells":
        indices, dots = cell_knn(features, k)
        log.info("cell k-NN: exact distances among the rows of %d nearby cells of ~%d (k-means in %d dimensions)",
                 CELL_PROBES, CELL_SIZE, CELL_DIMS)
        u, v, gab = edges_from_neighbours(indices, dots)
        return (u, v, gab) if return_dots else (u, v)
    elif index == "pca":
        reduced = pca_project(features, pca_dims)
        log.info("PCA k-NN: exact search among %d of %d dimensions", reduced.shape[1], features.shape[1])
        wide = min(n, _PCA_CANDIDATES * k)
        candidates = _flat_knn_low_dim(reduced, wide) if gpu is None else knn_search(reduced, wide, device=device)[1]
        del reduced
        indices = candidates if wide == k else refine_neighbours(features, candidates, k)
    else:
        _, indices = knn_search(features, k, device=device)
    return edges_from_neighbours(indices) + ((None,) if return_dots else ())
