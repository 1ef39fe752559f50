"""Exact query × gallery distances a block of rows at a time, and the exact best k of each row.

Evaluation and search share this: both walk the query × gallery distance matrix in blocks
of query rows whose size fits a memory budget, never holding the whole matrix (3.8 GB of
float32 at MSMT17 scale). Evaluation counts, in every block, how many kept gallery entries
precede each true match (:mod:`ray_reid.eval.rank`); search keeps the k best entries of every
row with a partial sort (:func:`smallest_k`), O(gallery) per row instead of a full sort.

Ties follow one rule everywhere: equal distances are ordered by gallery index, as a stable
``argsort`` orders them, so a top-k list is exactly the head of the full stable ranking.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

#: Working memory (bytes) one block of distances may use.
DEFAULT_BLOCK_BYTES = 256 * 2**20


class DistanceBlocks(Protocol):
    """A query × gallery distance matrix that hands out dense blocks of query rows.

    ``evaluate_rank`` and :func:`exact_topk` accept one wherever they accept an array, so a
    matrix that is never materialised (features, or a re-ranked distance) ranks the same way.
    """

    @property
    def shape(self) -> tuple[int, int]: ...

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a dense float32 or float64 array [stop - start, num_gallery]."""
        ...


def as_features(name: str, feats: Any) -> np.ndarray:
    """Float32 C-contiguous [N, d] copy/view of ``feats`` (NumPy or torch), refused when not finite."""
    if type(feats).__module__.startswith("torch"):
        feats = feats.detach().float().cpu().numpy()
    arr = np.asarray(feats)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (num_images, dim), got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ValueError(f"{name} contains NaN or infinite values (first bad rows: {bad[:5].tolist()})")
    return arr


def squared_distances(query: np.ndarray, gallery: np.ndarray, gallery_sq_norm: np.ndarray | None = None,
                      out: np.ndarray | None = None) -> np.ndarray:
    """``‖q − g‖²`` for every pair, float32, by one BLAS product (``‖q‖² + ‖g‖² − 2 q·g``), clipped at 0."""
    if gallery_sq_norm is None:
        gallery_sq_norm = np.einsum("ij,ij->i", gallery, gallery)
    if out is None:
        out = np.empty((query.shape[0], gallery.shape[0]), dtype=np.float32)
    np.matmul(query, gallery.T, out=out)
    out *= -2.0
    out += np.einsum("ij,ij->i", query, query)[:, None]
    out += gallery_sq_norm[None, :]
    np.maximum(out, 0.0, out=out)
    return out


class FeatureDistances:
    """Squared L2 distances between query and gallery features, computed block by block.

    On L2-normalised features this is ``2 − 2·cos``, the Market-1501 protocol's distance.
    """

    def __init__(self, query_feats: Any, gallery_feats: Any) -> None:
        self.query = as_features("query_feats", query_feats)
        self.gallery = as_features("gallery_feats", gallery_feats)
        if self.query.shape[1] != self.gallery.shape[1]:
            raise ValueError(
                f"query_feats has dimension {self.query.shape[1]} but gallery_feats has "
                f"{self.gallery.shape[1]}; they must match"
            )
        self._g_sq = np.einsum("ij,ij->i", self.gallery, self.gallery)

    @property
    def shape(self) -> tuple[int, int]:
        return self.query.shape[0], self.gallery.shape[0]

    def block(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start:stop`` of the distance matrix, written into ``out`` when given."""
        return squared_distances(self.query[start:stop], self.gallery, self._g_sq, out=out)


def rows_per_block(num_gallery: int, bytes_per_cell: int = 4, budget: int = DEFAULT_BLOCK_BYTES) -> int:
    """Largest number of query rows whose ``bytes_per_cell``-wide distance rows fit ``budget`` (>= 1)."""
    return max(1, int(budget // (max(1, int(num_gallery)) * bytes_per_cell)))


def smallest_k(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest entries of every row, ascending, ties by column: ``(values, columns)``.

    A partial sort (``argpartition``, O(columns) per row) then a sort of the k survivors.
    A row whose k-th value is tied with entries outside the partition's pick is redone with a
    stable full sort, so the result always equals the first k of a stable ``argsort``.
    """
    n_rows, n_cols = dist.shape
    k = min(int(k), n_cols)
    if k <= 0:
        return np.zeros((n_rows, 0), dist.dtype), np.zeros((n_rows, 0), np.int64)
    if k == n_cols:
        cols = np.argsort(dist, axis=1, kind="stable")
    else:
        cols = np.argpartition(dist, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(dist, cols, axis=1)
        order = np.lexsort((cols, vals), axis=1)
        cols = np.take_along_axis(cols, order, axis=1)
        # Ties across the cut: more entries equal to the k-th value than the pick kept.
        kth = np.take_along_axis(dist, cols[:, -1:], axis=1)
        picked_at_kth = (np.take_along_axis(dist, cols, axis=1) == kth).sum(axis=1)
        tied = np.flatnonzero((dist == kth).sum(axis=1) > picked_at_kth)
        for r in tied:  # rare: exact float ties at the k-th place
            cols[r] = np.argsort(dist[r], kind="stable")[:k]
    cols = cols.astype(np.int64, copy=False)
    return np.take_along_axis(dist, cols, axis=1), cols


def exact_topk(distances: Any, k: int, *, block_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest gallery entries of every query: ``(distances [Q, k], gallery indices [Q, k])``.

    ``distances`` is a dense array or any :class:`DistanceBlocks` (e.g. :class:`FeatureDistances`
    or a re-ranked distance); it is walked ``block_rows`` query rows at a time (default: what
    fits :data:`DEFAULT_BLOCK_BYTES`). Exact, ties ordered by gallery index.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    num_q, num_g = distances.shape
    k = min(int(k), num_g)
    if block_rows is None:
        block_rows = rows_per_block(num_g)
    out_d = np.empty((num_q, k), dtype=np.float32)
    out_i = np.empty((num_q, k), dtype=np.int64)
    for start in range(0, num_q, block_rows):
        stop = min(start + block_rows, num_q)
        block = distances.block(start, stop) if hasattr(distances, "block") else np.asarray(distances[start:stop])
        out_d[start:stop], out_i[start:stop] = smallest_k(block, k)
    return out_d, out_i
