"""Exact k-nearest-neighbour search of a point set against itself, for k-reciprocal re-ranking.

On a GPU, faiss's flat index does it (a CuPy brute force where faiss is absent). On CPU the
query set *is* the database, so the distance matrix is symmetric: computing only its upper
triangle, block by block with one BLAS matrix product each, halves the dominant cost of a
flat search (which cannot know the queries are the database). Every block's rows keep their best k from the columns to their
right, and the block's transpose offers each later row its best k among the block's rows.

Re-ranking treats "i is its own nearest neighbour" as an invariant (the k-reciprocal set of
``i`` always contains ``i``), so the self-neighbour is forced to column 0 even when the search
returns an equal-distance duplicate first or, with many duplicates, not at all.
"""

from __future__ import annotations

import logging

import numpy as np

from ray_reid.clustering._backend import VALID_DEVICES, cupy_available, to_numpy

log = logging.getLogger(__name__)

# Rows per block of the CPU self-search: a block x N float32 product stays small (50 MB at N = 12,936).
_BLOCK_ROWS = 1024


def _as_features(features, *, name: str = "features") -> np.ndarray:
    """Host float32 C-contiguous copy/view of ``features``, validated for the search."""
    x = to_numpy(features)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, d], got shape {x.shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise ValueError(f"{name} contains NaN or infinite values (first bad rows: {bad[:5].tolist()})")
    return x


def _gpu_search(device: str) -> str | None:
    """How to search for ``device`` ('auto' | 'cpu' | 'cuda'): 'faiss', 'cupy' (no faiss GPU) or None (host).

    A bare GPU machine may have CuPy but no faiss: the brute-force CuPy search serves it, exact too.
    """
    if device not in VALID_DEVICES:
        raise ValueError(f"device must be one of {VALID_DEVICES}, got {device!r}")
    if device == "cpu":
        return None
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return "faiss"
    if cupy_available():
        return "cupy"
    if device == "cuda":
        raise ValueError("device='cuda' was requested but there is no GPU: faiss sees none "
                         "(faiss.get_num_gpus() == 0 or faiss absent) and CuPy has no usable device")
    return None


def _cupy_self_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact self k-NN (and each row's largest distance) on the GPU by CuPy brute force in row blocks."""
    import cupy

    xd = cupy.asarray(x, dtype=cupy.float32)
    n = xd.shape[0]
    sq = cupy.einsum("ij,ij->i", xd, xd)
    rows = max(1, min(n, (1 << 27) // max(1, n)))  # a block of distances stays within 512 MB
    best_d = np.empty((n, k), dtype=np.float32)
    best_i = np.empty((n, k), dtype=np.int64)
    row_max = np.empty(n, dtype=np.float32)
    for a in range(0, n, rows):
        b = min(a + rows, n)
        dist = xd[a:b] @ (-2.0 * xd).T
        dist += sq[a:b, None]
        dist += sq[None, :]
        cupy.maximum(dist, 0, out=dist)
        row_max[a:b] = dist.max(axis=1).get()
        if k < n:
            idx = cupy.argpartition(dist, k - 1, axis=1)[:, :k]
        else:
            idx = cupy.broadcast_to(cupy.arange(n), dist.shape)
        part = cupy.take_along_axis(dist, idx, axis=1)
        order = cupy.argsort(part, axis=1)
        best_d[a:b] = cupy.take_along_axis(part, order, axis=1).get()
        best_i[a:b] = cupy.take_along_axis(idx, order, axis=1).get()
    return best_d, best_i, row_max


def _put_self_first(distances: np.ndarray, indices: np.ndarray) -> None:
    """Make column 0 of row i be i itself (in place), keeping the rest in the search's order.

    Rows where the search already put i first are untouched. If i appears later (an exact
    duplicate won the tie), i moves to the front and the entries before it shift right;
    if i is missing (more than k duplicates), it is inserted and the last entry dropped.
    """
    n, k = indices.shape
    rows = np.arange(n)
    bad = np.flatnonzero(indices[:, 0] != rows)
    if bad.size == 0:
        return
    log.debug("knn_search: moving the self-neighbour to column 0 in %d rows", bad.size)
    for i in bad:  # rare (exact duplicates only), so a loop over the few bad rows is fine
        pos = np.flatnonzero(indices[i] == i)
        p = int(pos[0]) if pos.size else k - 1
        d_self = float(distances[i, p]) if pos.size else 0.0
        indices[i, 1 : p + 1] = indices[i, :p].copy()
        distances[i, 1 : p + 1] = distances[i, :p].copy()
        indices[i, 0] = i
        distances[i, 0] = d_self


def _smallest_k(dist: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Indices of the k smallest entries along ``axis`` (all of them when fewer than k+1)."""
    size = dist.shape[axis]
    if size <= k:
        shape = [1, 1]
        shape[axis] = size
        return np.broadcast_to(np.arange(size).reshape(shape), dist.shape)
    return np.take(np.argpartition(dist, k - 1, axis=axis), np.arange(k), axis=axis)


def _merge_best(best_d, best_i, cand_d, cand_i, k):
    """Keep the k smallest of the running best and the new candidates, per row (in place)."""
    both_d = np.concatenate([best_d, cand_d], axis=1)
    both_i = np.concatenate([best_i, cand_i], axis=1)
    keep = _smallest_k(both_d, k, axis=1)
    best_d[:] = np.take_along_axis(both_d, keep, axis=1)
    best_i[:] = np.take_along_axis(both_i, keep, axis=1)


def _cpu_self_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact self k-NN from the upper triangle of the squared-distance matrix, in row blocks.

    Also returns each row's largest squared distance (re-ranking normalises by it), which the
    same blocks give for the price of one max-reduction each.
    """
    n = x.shape[0]
    sq_norm = np.einsum("ij,ij->i", x, x)
    minus_two_x = -2.0 * x  # folds the -2 into the product: one pass fewer per block
    best_d = np.full((n, k), np.inf, dtype=np.float32)
    best_i = np.full((n, k), -1, dtype=np.int64)
    row_max = np.zeros(n, dtype=np.float32)
    for a in range(0, n, _BLOCK_ROWS):
        b = min(a + _BLOCK_ROWS, n)
        dist = x[a:b] @ minus_two_x[a:].T  # columns a..n-1: the upper triangle of rows a..b-1
        dist += sq_norm[a:b, None]
        dist += sq_norm[None, a:]
        np.maximum(row_max[a:b], dist.max(axis=1), out=row_max[a:b])
        np.maximum(row_max[a:], dist.max(axis=0), out=row_max[a:])
        keep = _smallest_k(dist, k, axis=1)
        _merge_best(
            best_d[a:b], best_i[a:b], np.take_along_axis(dist, keep, axis=1), keep + a, k
        )
        if b < n:  # the block seen from the later rows: their candidates among rows a..b-1
            right = np.ascontiguousarray(dist[:, b - a :].T)  # selection along contiguous rows
            keep = _smallest_k(right, k, axis=1)
            _merge_best(best_d[b:], best_i[b:], np.take_along_axis(right, keep, axis=1), keep + a, k)
    # Rounding can take a squared distance (a self-distance, say) just below 0.
    np.maximum(best_d, 0.0, out=best_d)
    order = np.argsort(best_d, axis=1, kind="stable")
    return np.take_along_axis(best_d, order, axis=1), np.take_along_axis(best_i, order, axis=1), row_max


def _gpu_row_max(x: np.ndarray) -> np.ndarray:
    """Largest squared distance of every row, as a one-neighbour inner-product search on a GPU.

    ``max_j ||x_i - x_j||^2 = ||x_i||^2 + max_j (-2 x_i . x_j + ||x_j||^2)``: the inner product
    of ``[-2 x_i, 1]`` with ``[x_j, ||x_j||^2]``, so faiss's exact flat IP index finds it.
    """
    import faiss

    sq_norm = np.einsum("ij,ij->i", x, x)
    base = np.ascontiguousarray(np.hstack([x, sq_norm[:, None]]), dtype=np.float32)
    query = np.ascontiguousarray(np.hstack([-2.0 * x, np.ones((len(x), 1), np.float32)]), dtype=np.float32)
    index = faiss.GpuIndexFlatIP(faiss.StandardGpuResources(), base.shape[1])
    index.add(base)
    best, _ = index.search(query, 1)
    return np.maximum(sq_norm + best[:, 0], 0.0).astype(np.float32)


def knn_search(
    features, k: int, *, device: str = "auto", return_row_max: bool = False
) -> tuple[np.ndarray, ...]:
    """Exact k nearest neighbours of every row among all rows, the row itself included.

    Returns ``(squared L2 distances [N, k] float32, indices [N, k] int64)``, each row sorted
    by distance with the row's own index in column 0. The search is exact, identical to a
    brute-force argsort up to float32 rounding of near-ties: faiss's GPU flat index when
    ``device`` is 'auto' or 'cuda' and faiss sees a GPU, a CuPy brute force on a GPU without
    faiss, else the symmetric CPU search.
    With ``return_row_max`` a third array [N] float32 holds each row's *largest* squared
    distance to any row (test-time re-ranking divides by it).
    """
    x = _as_features(features)
    n, d = x.shape
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer in [1, N={n}], got {k!r}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, N={n}] (the point itself counts as a neighbour), got {k}")

    backend = _gpu_search(device)
    if backend == "cupy":
        distances, indices, row_max = _cupy_self_knn(x, int(k))
    elif backend == "faiss":
        import faiss

        index = faiss.GpuIndexFlatL2(faiss.StandardGpuResources(), d)
        index.add(x)
        distances, indices = index.search(x, int(k))
        row_max = _gpu_row_max(x) if return_row_max else None
    else:
        distances, indices, row_max = _cpu_self_knn(x, int(k))
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    distances = np.ascontiguousarray(distances, dtype=np.float32)
    if (indices < 0).any():
        raise RuntimeError("exact neighbour search returned missing neighbours (-1)")
    _put_self_first(distances, indices)
    if return_row_max:
        return distances, indices, np.maximum(row_max, 0.0)
    return distances, indices
