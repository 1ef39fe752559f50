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
(column -> rows) in blocks of rows, so memory stays O(N * nnz-per-row) plus one
``block x N`` scratch buffer.

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

from ray_reid.clustering._backend import VALID_DEVICES
from ray_reid.clustering.knn import _as_features, knn_search

log = logging.getLogger(__name__)

# Scratch budget (float64 cells) of one block of the sum-of-minima accumulation.
_BLOCK_CELLS = 1 << 22
# Rows of features gathered at once when computing the pair distances of V's support.
_PAIR_CHUNK = 1 << 15


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


def _expanded_sets(indices: np.ndarray, k1: int) -> sp.csr_matrix:
    """0/1 matrix of S(i): ``R(i, k1)`` plus the ``R(c, k1/2)`` of candidates that overlap enough."""
    r_full = _reciprocal_sets(indices, k1)
    r_half = _reciprocal_sets(indices, _half_columns(k1))
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
    return out


def _support_sq_distances(
    x: np.ndarray, knn_dist: np.ndarray, knn_idx: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """Squared L2 distance of every (rows[p], cols[p]) support pair.

    Most of S(i) lies in i's own neighbour list, whose distances faiss already computed;
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
    x: np.ndarray, knn_dist: np.ndarray, knn_idx: np.ndarray, expanded: sp.csr_matrix
) -> sp.csr_matrix:
    """V: row-wise softmax of ``-d(i, j)`` over the support S(i) of ``expanded``."""
    n = x.shape[0]
    counts = np.diff(expanded.indptr)
    assert (counts > 0).all(), "every expanded set holds at least the point itself"
    rows = np.repeat(np.arange(n), counts)
    dist = _support_sq_distances(x, knn_dist, knn_idx, rows, expanded.indices)
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


def _jaccard_from_encoding(v: sp.csr_matrix, *, progress: bool) -> sp.csr_matrix:
    """``1 - m / (2 - m)`` for every pair sharing a support column, via an inverted index.

    For a block of rows, every stored ``V[i, j]`` is paired with the column's stored
    ``V[l, j]`` (the inverted index is V in CSC form); the minima are summed per (i, l)
    with ``bincount`` into a ``block x N`` buffer, whose non-zeros become the block's rows.
    """
    n = v.shape[0]
    inv = v.tocsc()
    inv.sort_indices()
    col_start = inv.indptr[:-1]
    col_len = np.diff(inv.indptr)
    block = max(1, min(n, _BLOCK_CELLS // n))

    indptr = np.zeros(n + 1, dtype=np.int64)
    out_cols: list[np.ndarray] = []
    out_vals: list[np.ndarray] = []
    starts = range(0, n, block)
    for a in tqdm(starts, desc="jaccard", unit="block", disable=not progress, leave=False):
        b = min(a + block, n)
        lo, hi = v.indptr[a], v.indptr[b]
        cols = v.indices[lo:hi]
        vals = v.data[lo:hi]
        local_rows = np.repeat(np.arange(b - a, dtype=np.int64), np.diff(v.indptr[a : b + 1]))
        lens = col_len[cols]
        total = int(lens.sum())
        # Position of every (entry, column partner) pair in the inverted index.
        first = np.cumsum(lens) - lens
        pos = np.arange(total, dtype=np.int64) + np.repeat(col_start[cols] - first, lens)
        partner = inv.indices[pos]
        mins = np.minimum(np.repeat(vals, lens), inv.data[pos])
        key = np.repeat(local_rows * n, lens) + partner
        sums = np.bincount(key, weights=mins, minlength=(b - a) * n).reshape(b - a, n)
        r, c = np.nonzero(sums)
        m = sums[r, c]
        dist = (1.0 - m / (2.0 - m)).astype(np.float32)
        np.maximum(dist, 0.0, out=dist)
        keep = dist < 1.0
        r, c, dist = r[keep], c[keep], dist[keep]
        indptr[a + 1 : b + 1] = indptr[a] + np.cumsum(np.bincount(r, minlength=b - a))
        out_cols.append(c.astype(np.int32, copy=False))
        out_vals.append(dist)
    data = np.concatenate(out_vals) if out_vals else np.zeros(0, np.float32)
    indices = np.concatenate(out_cols) if out_cols else np.zeros(0, np.int32)
    if indptr[-1] <= np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    return sp.csr_matrix((data, indices, indptr), shape=(n, n))


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
    distances, indices = knn_search(x, k1, device=device)
    expanded = _expanded_sets(indices, k1)
    v = _query_expand(_encode(x, distances, indices, expanded), indices, k2)
    log.debug(
        "jaccard: N=%d, |S(i)| mean %.1f, nnz(V) per row %.1f",
        n,
        expanded.nnz / n,
        v.nnz / n,
    )
    return _jaccard_from_encoding(v, progress=progress)


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
    ) -> None:
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
        """Cluster the rows of ``X`` [N, d]; ``y`` is ignored (sklearn convention)."""
        from sklearn.cluster import DBSCAN

        x = _as_features(X, name="X")
        self._validate(x.shape[0])
        dist = compute_jaccard_distance(
            x, k1=self.k1, k2=self.k2, device=self.device, progress=self.progress
        )
        labels = DBSCAN(
            eps=float(self.eps), min_samples=int(self.min_samples), metric="precomputed"
        ).fit_predict(dist)
        self.labels_ = labels.astype(np.int64, copy=False)
        self.n_clusters_ = int(self.labels_.max() + 1) if self.labels_.size else 0
        self.n_outliers_ = int((self.labels_ == -1).sum())
        log.info(
            "JaccardDBSCAN: %d points -> %d clusters, %d outliers",
            x.shape[0],
            self.n_clusters_,
            self.n_outliers_,
        )
        return self

    def fit_predict(self, X, y=None) -> np.ndarray:
        """``fit(X)`` and return ``labels_``."""
        return self.fit(X).labels_
