"""k-reciprocal Jaccard distance and DBSCAN on it: cluster-contrast's pseudo-labelling baseline.

The algorithm is cluster-contrast's ``compute_jaccard_distance`` (itself the encoding step of
Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR'17):

1. ``initial_rank``: the k1 nearest neighbours of every point, the point itself first.
2. ``R(i, k)``: the k-reciprocal set, the j among i's first k neighbours that also have i
   among their first k. Like the public code, the neighbour list holds k1 columns in all,
   so ``R(i, k1)`` looks at k1 columns (self included) and ``R(i, k1/2)`` at
   ``round(k1/2) + 1`` of them (NumPy's round-half-to-even, as the public code).
3. Expansion: for every candidate c in ``R(i, k1)`` whose ``R(c, k1/2)`` overlaps
   ``R(i, k1)`` in more than 2/3 of its own members, add ``R(c, k1/2)`` to i's set S(i).
4. ``V[i, S(i)] = exp(-d(i, j)) / sum_{j in S(i)} exp(-d(i, j))`` with d the squared L2
   distance (``2 - 2 x_i.x_j`` on the unit sphere, as the public code computes it).
5. Local query expansion: ``V[i] <- mean of V[l]`` over the k2 nearest neighbours l of i.
6. ``d_J(i, l) = 1 - m / (2 - m)`` with ``m = sum_j min(V[i, j], V[l, j])``, clipped at 0.

The public code holds V and the distance as dense N x N matrices and loops over rows in
Python (18-23 s per call at N = 12,936). Here every step is a sparse-matrix operation:
V has a few hundred non-zeros per row, and ``m`` is accumulated over an inverted index
(column -> rows) in blocks of rows, for the upper triangle only (d_J is symmetric), so
memory stays O(stored pairs) plus one ``block x N`` scratch buffer.

The result is a CSR matrix storing exactly the pairs with distance < 1; **an absent entry
means distance 1** (the two points share no support column). Stored zeros are meaningful
(the diagonal, duplicates) and are kept, so never call ``eliminate_zeros`` on it.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from ray_reid.clustering._backend import VALID_DEVICES, to_numpy
from ray_reid.clustering.fusion import PURIFICATION_WEIGHTS, split_views, weights_for
from ray_reid.clustering.knn import _as_features, knn_search

log = logging.getLogger(__name__)

# Scratch budget (float64 cells) of one block of the sum-of-minima accumulation.
_BLOCK_CELLS = 1 << 22
# Pairs generated per block: small enough that the pair arrays stay in cache.
_BLOCK_PAIRS = 1 << 14
# Pairs whose feature rows are gathered at once when computing support distances.
_PAIR_CHUNK = 1 << 10


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        valid = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be in {valid}, got {value}")
    return int(value)


def _half_columns(k1: int) -> int:
    """Columns of the neighbour list that ``R(i, k1/2)`` looks at, as the public code slices them."""
    return min(int(np.around(k1 / 2)) + 1, k1)


def _knn_graph(indices: np.ndarray, k: int, dtype=np.float32) -> sp.csr_matrix:
    """0/1 matrix A with ``A[i, j] = 1`` iff j is among the first k columns of i's list."""
    n = indices.shape[0]
    cols = np.ascontiguousarray(indices[:, :k]).ravel()
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    graph = sp.csr_matrix((np.ones(n * k, dtype=dtype), cols, indptr), shape=(n, n))
    graph.sort_indices()
    return graph


def _reciprocal_sets(indices: np.ndarray, k: int) -> sp.csr_matrix:
    """0/1 matrix of the k-reciprocal sets: ``R[i, j] = 1`` iff j in N(i, k) and i in N(j, k)."""
    graph = _knn_graph(indices, k)
    recip = graph.multiply(graph.T).tocsr()
    recip.eliminate_zeros()
    recip.sort_indices()
    return recip


def _expanded_sets(indices: np.ndarray, k1: int, half_columns: int | None = None) -> sp.csr_matrix:
    """0/1 matrix of S(i): ``R(i, k1)`` plus the ``R(c, k1/2)`` of candidates that overlap enough.

    ``k1`` and ``half_columns`` count columns of the neighbour list, self included; the
    half sets default to the clusterer's slicing (:func:`_half_columns`). Test-time
    re-ranking slices ``k1 + 1`` and ``round(k1/2) + 1`` columns instead.
    """
    r_full = _reciprocal_sets(indices, k1)
    r_half = _reciprocal_sets(indices, _half_columns(k1) if half_columns is None else half_columns)
    half_size = np.diff(r_half.indptr).astype(np.float64)
    # overlap[i, c] = |R(c, k1/2) & R(i, k1)|, kept only for candidates c in R(i, k1).
    overlap = (r_full @ r_half.T).multiply(r_full).tocsr()
    overlap.eliminate_zeros()
    # Same float expression as the public ``len(a) > 2/3 * len(b)``, so borderline counts agree.
    keep = overlap.data > (2 / 3) * half_size[overlap.indices]
    overlap.data = keep.astype(np.float32)
    overlap.eliminate_zeros()
    expanded = (r_full + overlap @ r_half).tocsr()
    expanded.data[:] = 1.0
    expanded.sort_indices()
    return expanded


def _pair_sq_distances(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Squared L2 distance of each (rows[p], cols[p]) pair, in chunks to bound memory."""
    sq_norm = np.einsum("ij,ij->i", x, x)
    out = np.empty(rows.size, dtype=np.float64)
    for start in range(0, rows.size, _PAIR_CHUNK):
        r = rows[start : start + _PAIR_CHUNK]
        c = cols[start : start + _PAIR_CHUNK]
        dot = np.einsum("ij,ij->i", x[r], x[c])
        out[start : start + _PAIR_CHUNK] = sq_norm[r] + sq_norm[c] - 2.0 * dot
    np.maximum(out, 0.0, out=out)  # rounding can dip below 0; the search clips the same way
    return out


def _support_sq_distances(
    x: np.ndarray, knn_dist: np.ndarray, knn_idx: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """Squared L2 distance of every (rows[p], cols[p]) support pair.

    Most of S(i) lies in i's own neighbour list, whose distances the search already computed;
    only the pairs brought in by expansion from outside it are computed here.
    """
    n, k = knn_idx.shape
    known_keys = (np.arange(n, dtype=np.int64)[:, None] * n + knn_idx).ravel()
    order = np.argsort(known_keys, kind="stable")
    known_keys = known_keys[order]
    known_vals = knn_dist.ravel()[order].astype(np.float64)
    keys = rows.astype(np.int64) * n + cols
    pos = np.minimum(np.searchsorted(known_keys, keys), known_keys.size - 1)
    found = known_keys[pos] == keys
    out = np.where(found, known_vals[pos], 0.0)
    missing = np.flatnonzero(~found)
    if missing.size:
        out[missing] = _pair_sq_distances(x, rows[missing], cols[missing])
    return out


def _encode(
    x: np.ndarray,
    knn_dist: np.ndarray,
    knn_idx: np.ndarray,
    expanded: sp.csr_matrix,
    row_scale: np.ndarray | None = None,
) -> sp.csr_matrix:
    """V: row-wise softmax of ``-d(i, j)`` over the support S(i) of ``expanded``.

    ``row_scale`` [N], when given, divides row i's distances first (re-ranking's
    ``d / max_j d(i, j)``); that changes the weights, not which pairs are supported.
    """
    n = x.shape[0]
    counts = np.diff(expanded.indptr)
    assert (counts > 0).all(), "every expanded set holds at least the point itself"
    rows = np.repeat(np.arange(n), counts)
    dist = _support_sq_distances(x, knn_dist, knn_idx, rows, expanded.indices)
    if row_scale is not None:
        dist /= np.asarray(row_scale, dtype=np.float64)[rows]
    # Subtracting the row minimum leaves the softmax unchanged and keeps exp() in range.
    row_min = np.minimum.reduceat(dist, expanded.indptr[:-1])
    weights = np.exp(-(dist - np.repeat(row_min, counts)))
    weights /= np.repeat(np.add.reduceat(weights, expanded.indptr[:-1]), counts)
    return sp.csr_matrix(
        (weights.astype(np.float32), expanded.indices.copy(), expanded.indptr.copy()), shape=(n, n)
    )


def _query_expand(v: sp.csr_matrix, indices: np.ndarray, k2: int) -> sp.csr_matrix:
    """Row i becomes the mean of V's rows over i's k2 nearest neighbours (i included)."""
    if k2 == 1:
        return v
    neighbours = _knn_graph(indices, k2, dtype=np.float32)
    v_qe = (neighbours @ v).tocsr()
    v_qe.data /= np.float32(k2)
    v_qe.eliminate_zeros()
    v_qe.sort_indices()
    return v_qe


def _row_blocks(row_pairs: np.ndarray, width: int) -> list[tuple[int, int]]:
    """Consecutive row ranges holding about ``_BLOCK_PAIRS`` pairs and at most ``_BLOCK_CELLS / width`` rows.

    Small blocks keep the pair arrays in cache; the cap on rows bounds the dense scratch
    (``width`` columns a row).
    """
    n = len(row_pairs)
    cum = np.cumsum(row_pairs)
    max_rows = max(1, _BLOCK_CELLS // max(1, width))
    blocks = []
    a = 0
    while a < n:
        done = cum[a - 1] if a else 0
        b = int(np.searchsorted(cum, done + _BLOCK_PAIRS, side="right"))
        b = min(max(b, a + 1), a + max_rows, n)
        blocks.append((a, b))
        a = b
    return blocks


def _upper_jaccard(v: sp.csr_matrix, *, progress: bool) -> tuple[np.ndarray, ...]:
    """Upper triangle of ``d_J(i, l) = max(0, 1 - m / (2 - m))``, ``m = sum_j min(V[i, j], V[l, j])``.

    Only pairs l >= i sharing a column are visited, and only those with d_J < 1 are kept.

    The inverted index is V's entries in column order (rows ascending within a column), so
    the partners l >= i of an entry (i, j) are the tail of column j from i's own position:
    only the upper triangle is generated, half the pairs. Per block of rows the minima are
    summed per (i, l) with ``bincount`` into a dense ``block x (N - a)`` buffer.
    Returns ``(indptr, cols, distances)`` of the upper triangle in CSR layout.
    """
    n = v.shape[0]
    counts = np.diff(v.indptr)
    entry_row = np.repeat(np.arange(n, dtype=np.int64), counts)
    order = np.argsort(v.indices, kind="stable")
    inv_rows = entry_row[order]
    inv_vals = v.data[order]
    col_end = np.cumsum(np.bincount(v.indices, minlength=n))
    csc_pos = np.empty(v.nnz, dtype=np.int64)
    csc_pos[order] = np.arange(v.nnz, dtype=np.int64)
    lens = col_end[v.indices] - csc_pos  # partners with row >= the entry's row
    row_pairs = np.add.reduceat(lens, v.indptr[:-1])

    indptr = np.zeros(n + 1, dtype=np.int64)
    out_cols: list[np.ndarray] = []
    out_dist: list[np.ndarray] = []
    blocks = _row_blocks(row_pairs, n)
    for a, b in tqdm(blocks, desc="jaccard", unit="block", disable=not progress, leave=False):
        lo, hi = v.indptr[a], v.indptr[b]
        blens = lens[lo:hi]
        total = int(row_pairs[a:b].sum())
        first = np.cumsum(blens) - blens
        pos = np.arange(total, dtype=np.int64)
        pos += np.repeat(csc_pos[lo:hi] - first, blens)
        width = n - a
        key = inv_rows[pos]
        key += np.repeat((entry_row[lo:hi] - a) * width - a, blens)
        mins = np.minimum(np.repeat(v.data[lo:hi], blens), inv_vals[pos])
        sums = np.bincount(key, weights=mins, minlength=(b - a) * width).reshape(b - a, width)
        r, c, dist = _overlap_to_distance(sums)
        out_dist.append(dist)
        out_cols.append((c + a).astype(np.int32))
        indptr[a + 1 : b + 1] = indptr[a] + np.cumsum(np.bincount(r, minlength=b - a))
    cols = np.concatenate(out_cols) if out_cols else np.zeros(0, np.int32)
    dist_all = np.concatenate(out_dist) if out_dist else np.zeros(0, np.float32)
    return indptr, cols, dist_all


def _overlap_to_distance(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, d_J)`` of a block of summed minima ``m``: d_J = 1 − m / (2 − m), only where d_J < 1."""
    r, c = np.nonzero(sums)
    m = sums[r, c]
    dist = (1.0 - m / (2.0 - m)).astype(np.float32)
    np.maximum(dist, 0.0, out=dist)
    keep = dist < 1.0  # float32 rounding can bring a tiny overlap to exactly 1
    return r[keep], c[keep], dist[keep]


def _jaccard_between(a: sp.csr_matrix, b: sp.csr_matrix, *, progress: bool = False) -> sp.csr_matrix:
    """``d_J`` between every row of ``a`` [r, N] and every row of ``b`` [c, N], as CSR [r, c].

    The rectangular form of :func:`_upper_jaccard` (re-ranking needs queries against the
    gallery only, not all pairs): ``b``'s entries indexed by column, the partners of an
    entry (i, j) of ``a`` are column j of ``b``; minima summed per (i, l) with ``bincount``
    in row blocks. Stored entries are the pairs with distance < 1; absent ones mean 1.
    """
    r, c = a.shape[0], b.shape[0]
    bc = b.tocsc()
    bc.sort_indices()
    col_start = bc.indptr.astype(np.int64)
    inv_rows, inv_vals = bc.indices.astype(np.int64), bc.data
    entry_row = np.repeat(np.arange(r, dtype=np.int64), np.diff(a.indptr))
    lens = (col_start[a.indices + 1] - col_start[a.indices]).astype(np.int64)
    row_pairs = np.bincount(entry_row, weights=lens, minlength=r).astype(np.int64)

    indptr = np.zeros(r + 1, dtype=np.int64)
    out_cols: list[np.ndarray] = []
    out_dist: list[np.ndarray] = []
    for a0, b0 in tqdm(_row_blocks(row_pairs, max(c, 1)), desc="jaccard", unit="block",
                       disable=not progress, leave=False):
        lo, hi = a.indptr[a0], a.indptr[b0]
        blens = lens[lo:hi]
        total = int(blens.sum())
        first = np.cumsum(blens) - blens
        pos = np.arange(total, dtype=np.int64)
        pos += np.repeat(col_start[a.indices[lo:hi]] - first, blens)
        key = inv_rows[pos]
        key += np.repeat((entry_row[lo:hi] - a0) * c, blens)
        mins = np.minimum(np.repeat(a.data[lo:hi], blens), inv_vals[pos])
        sums = np.bincount(key, weights=mins, minlength=(b0 - a0) * c).reshape(b0 - a0, c)
        rr, cc, dist = _overlap_to_distance(sums)
        out_dist.append(dist)
        out_cols.append(cc.astype(np.int32))
        indptr[a0 + 1 : b0 + 1] = indptr[a0] + np.cumsum(np.bincount(rr, minlength=b0 - a0))
    cols = np.concatenate(out_cols) if out_cols else np.zeros(0, np.int32)
    data = np.concatenate(out_dist) if out_dist else np.zeros(0, np.float32)
    result = sp.csr_matrix((data, cols, indptr), shape=(r, c))
    result.has_sorted_indices = True
    return result


def _symmetric_csr(
    n: int, indptr: np.ndarray, cols: np.ndarray, data: np.ndarray
) -> sp.csr_matrix:
    """Full symmetric CSR from its upper triangle (diagonal included), explicit zeros kept.

    Row i of the result is row i of the strict lower part (the transpose, columns < i)
    followed by row i of the upper part (columns >= i), so it comes out sorted. Built by
    moving entries, not by sparse addition, which would drop stored zeros.
    """
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    strict = cols != rows
    strict_counts = np.bincount(rows[strict], minlength=n)
    strict_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(strict_counts, out=strict_indptr[1:])
    # CSC of the strict upper part is, read as CSR, its transpose: the strict lower part.
    lower = sp.csr_matrix(
        (data[strict], cols[strict], strict_indptr), shape=(n, n)
    ).tocsc()
    lower_start = lower.indptr.astype(np.int64)
    lower_cols, lower_data = lower.indices, lower.data
    lower_counts = np.diff(lower_start)
    upper_counts = np.diff(indptr)
    out_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lower_counts + upper_counts, out=out_indptr[1:])

    out_cols = np.empty(out_indptr[-1], dtype=np.int32)
    out_data = np.empty(out_indptr[-1], dtype=data.dtype)
    dest = np.repeat(out_indptr[:-1] - lower_start[:-1], lower_counts) + np.arange(lower_cols.size)
    out_cols[dest] = lower_cols
    out_data[dest] = lower_data
    dest = np.repeat(out_indptr[:-1] + lower_counts - indptr[:-1], upper_counts) + np.arange(cols.size)
    out_cols[dest] = cols
    out_data[dest] = data
    if out_indptr[-1] <= np.iinfo(np.int32).max:
        out_indptr = out_indptr.astype(np.int32)
    result = sp.csr_matrix((out_data, out_cols, out_indptr), shape=(n, n))
    result.has_sorted_indices = True
    return result


def compute_jaccard_distance(
    features, *, k1: int = 30, k2: int = 6, device: str = "auto", progress: bool = False
) -> sp.csr_matrix:
    """k-reciprocal Jaccard distance of every pair of rows of ``features`` [N, d], as sparse CSR.

    Stored entries are the pairs with distance < 1 (rows sorted by column, diagonal stored,
    explicit zeros kept); **absent entries mean distance 1**. ``k1`` is the neighbour-list
    length (self included) and ``k2`` the query-expansion width; ``device`` picks where
    faiss searches neighbours ('auto' | 'cpu' | 'cuda'). The sparse steps run on the host.
    """
    x = _as_features(features)
    n = x.shape[0]
    k1 = _check_int("k1", k1, 1, n)
    k2 = _check_int("k2", k2, 1, k1)
    return _jaccard(x, k1=k1, k2=k2, device=device, progress=progress)


def _jaccard(x: np.ndarray, *, k1: int, k2: int, device: str, progress: bool) -> sp.csr_matrix:
    """The distance of :func:`compute_jaccard_distance` for checked float32 features and parameters."""
    n = x.shape[0]
    distances, indices = knn_search(x, k1, device=device)
    expanded = _expanded_sets(indices, k1)
    v = _query_expand(_encode(x, distances, indices, expanded), indices, k2)
    log.debug("jaccard: N=%d, |S(i)| mean %.1f, nnz(V) per row %.1f", n, expanded.nnz / n, v.nnz / n)
    indptr, cols, dist = _upper_jaccard(v, progress=progress)
    return _symmetric_csr(n, indptr, cols, dist)


def fused_jaccard_distance(views, weights, *, k1: int, k2: int, device: str = "auto",
                           progress: bool = False) -> sp.csr_matrix:
    """Σ_v w_v · d_J(view v) with weights scaled to sum 1, sparse as :func:`compute_jaccard_distance`.

    An absent entry still means distance 1: in each view it is 1, so the weighted sum is too.
    Every view stores its diagonal (distance 0), so the fused diagonal stays stored.
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    similarity = None
    for view, weight in zip(views, w):
        sim = _jaccard(np.ascontiguousarray(to_numpy(view), dtype=np.float32), k1=k1, k2=k2, device=device,
                       progress=progress)
        sim.data = weight * (1.0 - sim.data)
        similarity = sim if similarity is None else similarity + sim
    fused = similarity.tocsr()
    fused.data = 1.0 - fused.data
    return fused


def _within(dist: sp.csr_matrix, eps: float) -> sp.csr_matrix:
    """Only the stored entries <= eps (zeros included): all DBSCAN can use, and far fewer.

    sklearn's sparse precomputed path walks every stored entry, most of which lie near 1.
    """
    keep = dist.data <= eps
    rows = np.repeat(np.arange(dist.shape[0]), np.diff(dist.indptr))[keep]
    indptr = np.zeros(dist.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=dist.shape[0]), out=indptr[1:])
    out = sp.csr_matrix((dist.data[keep], dist.indices[keep], indptr), shape=dist.shape)
    out.has_sorted_indices = True
    return out


def dbscan_on_sparse_distance(dist: sp.csr_matrix, *, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN labels (-1 = outlier) from a sparse distance whose absent entries mean "far" (>= 1 > eps).

    Public so that a fused multi-view Jaccard distance (DESIGN.md §5) is clustered exactly as
    a single view's is.
    """
    from sklearn.cluster import DBSCAN

    labels = DBSCAN(eps=float(eps), min_samples=int(min_samples), metric="precomputed").fit_predict(
        _within(dist.tocsr(), float(eps)))
    return labels.astype(np.int64, copy=False)


class JaccardDBSCAN:
    """DBSCAN on the k-reciprocal Jaccard distance: cluster-contrast's pseudo-labeller.

    The sparse distance goes to ``sklearn.cluster.DBSCAN(metric="precomputed")``, which
    treats the *stored* entries of a sparse matrix as the only candidate neighbours (and
    stores the diagonal itself). That is exact here because absent entries mean distance 1
    and ``eps`` must be below 1, so they could never be neighbours anyway.

    Attributes after ``fit``: ``labels_`` (int64, -1 = outlier, dropped from training),
    ``n_clusters_``, ``n_outliers_``.
    """

    def __init__(
        self,
        *,
        eps: float = 0.6,
        min_samples: int = 4,
        k1: int = 30,
        k2: int = 6,
        device: str = "auto",
        progress: bool = False,
        view_weights: tuple[float, ...] = PURIFICATION_WEIGHTS,
    ) -> None:
        self.view_weights = view_weights
        self.eps = eps
        self.min_samples = min_samples
        self.k1 = k1
        self.k2 = k2
        self.device = device
        self.progress = progress

    def _validate(self, n: int) -> None:
        if isinstance(self.eps, bool) or not isinstance(self.eps, numbers.Real):
            raise ValueError(f"eps must be a real number in (0, 1), got {self.eps!r}")
        if not 0.0 < float(self.eps) < 1.0:
            raise ValueError(
                f"eps must be in (0, 1): Jaccard distances lie in [0, 1] and pairs at 1 are "
                f"not stored, got {self.eps}"
            )
        _check_int("min_samples", self.min_samples, 1)
        _check_int("k1", self.k1, 1, n)
        _check_int("k2", self.k2, 1, self.k1)
        if self.device not in VALID_DEVICES:
            raise ValueError(f"device must be one of {VALID_DEVICES}, got {self.device!r}")

    def fit(self, X, y=None) -> "JaccardDBSCAN":
        """Cluster the rows of ``X`` [N, d], or of ``{view: [N, d]}`` on the fused distance; ``y`` is ignored."""
        names, views = split_views(X)  # the one NaN/shape check
        n = int(views[0].shape[0])
        self._validate(n)
        if len(views) == 1:
            x = np.ascontiguousarray(to_numpy(views[0]), dtype=np.float32)
            dist = _jaccard(x, k1=self.k1, k2=self.k2, device=self.device, progress=self.progress)
        else:
            dist = fused_jaccard_distance(views, weights_for(names, self.view_weights), k1=self.k1, k2=self.k2,
                                          device=self.device, progress=self.progress)
        self.labels_ = dbscan_on_sparse_distance(dist, eps=self.eps, min_samples=self.min_samples)
        self.n_clusters_ = int(self.labels_.max() + 1) if self.labels_.size else 0
        self.n_outliers_ = int((self.labels_ == -1).sum())
        log.info(
            "JaccardDBSCAN: %d points -> %d clusters, %d outliers",
            n,
            self.n_clusters_,
            self.n_outliers_,
        )
        return self

    def fit_predict(self, X, y=None) -> np.ndarray:
        """``fit(X)`` and return ``labels_``."""
        return self.fit(X).labels_
