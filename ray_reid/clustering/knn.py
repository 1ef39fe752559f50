"""Exact k-nearest-neighbour search with faiss, the first step of k-reciprocal re-ranking.

Re-ranking treats "i is its own nearest neighbour" as an invariant (the k-reciprocal set of
``i`` always contains ``i``), so the self-neighbour is forced to column 0 even when faiss
returns an equal-distance duplicate first or, with many duplicates, not at all.
"""

from __future__ import annotations

import logging

import numpy as np

from ray_reid.clustering._backend import VALID_DEVICES, to_numpy

log = logging.getLogger(__name__)


def _as_features(features, *, name: str = "features") -> np.ndarray:
    """Host float32 C-contiguous copy/view of ``features``, validated for faiss."""
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


def _use_gpu(device: str) -> bool:
    """Whether faiss should search on a GPU for ``device`` ('auto' | 'cpu' | 'cuda')."""
    if device not in VALID_DEVICES:
        raise ValueError(f"device must be one of {VALID_DEVICES}, got {device!r}")
    if device == "cpu":
        return False
    import faiss

    has_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if device == "cuda" and not has_gpu:
        raise ValueError("device='cuda' was requested but faiss sees no GPU (faiss.get_num_gpus() == 0)")
    return has_gpu


def _put_self_first(distances: np.ndarray, indices: np.ndarray) -> None:
    """Make column 0 of row i be i itself (in place), keeping the rest in faiss's order.

    Rows where faiss already put i first are untouched. If i appears later (an exact
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


def knn_search(features, k: int, *, device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row among all rows, the row itself included.

    Returns ``(squared L2 distances [N, k] float32, indices [N, k] int64)``, each row sorted
    by distance with the row's own index in column 0. Exact search (``IndexFlatL2``) keeps
    the result identical to a brute-force argsort up to distance ties; on a GPU node faiss's
    GPU flat index is used when ``device`` is 'auto' or 'cuda'.
    """
    x = _as_features(features)
    n, d = x.shape
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer in [1, N={n}], got {k!r}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, N={n}] (the point itself counts as a neighbour), got {k}")

    import faiss

    if _use_gpu(device):
        res = faiss.StandardGpuResources()
        index = faiss.GpuIndexFlatL2(res, d)
    else:
        index = faiss.IndexFlatL2(d)
    index.add(x)
    distances, indices = index.search(x, int(k))
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    distances = np.ascontiguousarray(distances, dtype=np.float32)
    if (indices < 0).any():
        raise RuntimeError("faiss returned missing neighbours (-1) for an exact flat index")
    _put_self_first(distances, indices)
    return distances, indices
