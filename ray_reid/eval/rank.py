"""Query/gallery ranking metrics (CMC and mAP) under the Market-1501 protocol.

The reference implementation (torchreid's ``eval_market1501``) argsorts every query row
and walks the queries in a Python loop; at MSMT17 scale (11,659 × 82,161) its up-front
``argsort`` of the whole matrix alone needs 7.7 GB of int64 indices. Here queries are
processed in chunks whose working arrays fit a memory budget, and inside a chunk nothing
loops over queries:

* only the *values* of each row are sorted (a SIMD sort, ~3× cheaper than ``argsort``),
  with excluded gallery entries pushed to ``+inf``;
* the rank of each true match is then found by a vectorised binary search in its sorted
  row; ties between equal distances are broken by gallery index, exactly as a stable
  ``argsort`` would order them;
* per-query AP and first-hit ranks are reduced with ``bincount`` over the matches.

Per-query APs are kept in one array and averaged at the end, so the result does not
depend on the chunk size, bit for bit.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ray_reid.eval.topk import FeatureDistances

log = logging.getLogger(__name__)

#: Working memory (bytes) one chunk of queries may use, on top of the distance matrix itself.
DEFAULT_MEMORY_BUDGET = 256 * 2**20

#: Gallery ids that are "junk" in Market-style sets: never counted, neither right nor wrong.
JUNK_PID = -1


def _as_numpy_2d(distmat: Any) -> np.ndarray:
    """A NumPy view of ``distmat`` (NumPy array or torch tensor) without copying when possible."""
    if type(distmat).__module__.startswith("torch"):
        import torch  # local: torch is only needed when a tensor is passed

        t = distmat.detach()
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float32)
        distmat = t.cpu().numpy()
    arr = np.asarray(distmat)
    if arr.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"distmat must hold real numbers, got dtype {arr.dtype}")
    return arr


def _as_ids(name: str, values: Any, expected_len: int, dim_name: str) -> np.ndarray:
    if type(values).__module__.startswith("torch"):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if len(arr) != expected_len:
        raise ValueError(f"{name} has length {len(arr)} but distmat has {expected_len} {dim_name}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and len(arr) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        elif len(arr):
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
        else:
            arr = arr.astype(np.int64)
    return arr.astype(np.int64, copy=False)


def _bytes_per_element(dtype: np.dtype, needs_cast: bool) -> int:
    # sorted copy of the row values, an optional cast copy, and ~5 boolean masks.
    return dtype.itemsize * (2 if needs_cast else 1) + 5


def auto_chunk_size(
    num_gallery: int, dtype: Any = np.float32, budget: int = DEFAULT_MEMORY_BUDGET, *, needs_cast: bool = False
) -> int:
    """Largest number of query rows whose working arrays fit in ``budget`` bytes (at least 1)."""
    per_row = max(1, int(num_gallery)) * _bytes_per_element(np.dtype(dtype), needs_cast)
    return max(1, int(budget // per_row))


def _search(sorted_rows: np.ndarray, rows: np.ndarray, values: np.ndarray, *, right: bool) -> np.ndarray:
    """Row-wise ``searchsorted``: for each (row, value), how many entries of that row are < (or <=) value.

    NumPy's ``searchsorted`` is 1-D only; a fixed number of halving steps over all
    (row, value) pairs at once keeps this a handful of vectorised gathers.
    """
    n_cols = sorted_rows.shape[1]
    lo = np.zeros(len(values), dtype=np.int64)
    hi = np.full(len(values), n_cols, dtype=np.int64)
    for _ in range(int(n_cols).bit_length() + 1):
        active = lo < hi
        if not active.any():
            break
        mid = (lo + hi) >> 1
        probe = sorted_rows[rows, np.minimum(mid, n_cols - 1)]
        go_right = (probe <= values) if right else (probe < values)
        lo = np.where(active & go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)
    return lo


def _chunk_ranks(
    dist: np.ndarray,
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    g_pids: np.ndarray,
    g_camids: np.ndarray,
    g_valid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks (among kept gallery entries) of every true match of every query in the chunk.

    Returns ``(rows, ranks)``: the query row of each true match and its rank; rows ascending.
    """
    same_pid = q_pids[:, None] == g_pids[None, :]
    keep = same_pid & (q_camids[:, None] == g_camids[None, :])
    np.logical_not(keep, out=keep)
    keep &= g_valid[None, :]
    positive = same_pid
    positive &= keep
    rows, cols = np.nonzero(positive)
    del positive, same_pid
    if len(rows) == 0:
        return rows.astype(np.int64), np.zeros(0, dtype=np.int64)

    values = dist[rows, cols]
    kept_sorted = np.array(dist, copy=True)
    kept_sorted[~keep] = np.inf
    kept_sorted.sort(axis=1)

    smaller = _search(kept_sorted, rows, values, right=False)
    not_larger = _search(kept_sorted, rows, values, right=True)
    ranks = smaller + 1
    # A match tied in distance with other kept entries: stable order puts lower gallery
    # indices first. Exact ties are rare, so they are resolved one by one.
    for i in np.flatnonzero(not_larger - smaller > 1):
        r, c = rows[i], cols[i]
        ranks[i] += int(np.count_nonzero(keep[r, :c] & (dist[r, :c] == values[i])))
    return rows.astype(np.int64), ranks


#: How ``evaluate_rank`` finds the ranks of the true matches.
METHODS = ("count", "sort")


def _match_ranks_by_counting(
    dist: np.ndarray,
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    g_pids: np.ndarray,
    g_camids: np.ndarray,
    by_pid: np.ndarray,
    sorted_pids: np.ndarray,
    start: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, ranks)`` as :func:`_chunk_ranks` returns them, from the compiled counting kernel."""
    from ray_reid.eval import _rank_kernel  # numba compiles on first use: only when evaluating

    group_start = np.searchsorted(sorted_pids, q_pids, side="left")
    group_stop = np.searchsorted(sorted_pids, q_pids, side="right")
    counts = _rank_kernel.count_matches(q_pids, q_camids, g_camids, by_pid, group_start, group_stop)
    offsets = np.zeros(len(q_pids) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    ranks = np.empty(int(offsets[-1]), dtype=np.int64)
    dist = np.ascontiguousarray(dist)
    first_nan = _rank_kernel.match_ranks(
        dist, q_pids, q_camids, g_pids, g_camids, by_pid, group_start, group_stop, offsets, ranks
    )
    if first_nan >= 0:
        raise ValueError(f"distmat contains NaN (first in query row {start + int(first_nan)})")
    rows = np.repeat(np.arange(len(q_pids), dtype=np.int64), counts)
    return rows, ranks


def evaluate_rank(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    *,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    n_jobs: int = 1,
    progress: bool = False,
    method: str = "count",
) -> tuple[np.ndarray, float]:
    """CMC curve and mAP of a query × gallery distance matrix, Market-1501 protocol.

    For each query, gallery entries with the same pid *and* the same camera are removed
    (same-camera re-finds are too easy), gallery junk (pid ``-1``) is ignored, and
    distractors (pid ``0``) stay in the ranking as wrong answers. Queries left without any
    true match are skipped; a ``ValueError`` is raised when none has one. Equal distances
    are ordered by gallery index (a stable sort).

    AP is torchreid's: the mean over the query's true matches of precision at each match's
    position. ``cmc[r]`` is the fraction of valid queries whose first true match is at
    rank ``<= r + 1``. The curve always has ``max_rank`` entries: where ``max_rank``
    exceeds the gallery, the tail repeats the last value (every valid query has found its
    first match by then), which is what the definition gives — torchreid instead shortens
    the curve, which breaks callers that index ``cmc[9]`` on a tiny gallery.

    ``distmat`` is a NumPy array (any real dtype; float32 and float64 are used as they
    are), a torch tensor, or any :class:`~ray_reid.eval.topk.DistanceBlocks` (features or a
    re-ranked distance, computed a block of query rows at a time and never held whole).

    ``method`` picks how each true match's rank is found; both give the same ranks, hence
    bit-identical results. ``"count"`` (default): one pass over each row counts the kept
    entries before every match (compiled; see :mod:`ray_reid.eval._rank_kernel`).
    ``"sort"``: the rows' values are sorted and the matches binary-searched in them (the
    reference, ~10× slower). ``chunk_size`` (query rows per step) defaults to what fits
    ``memory_budget`` bytes of working arrays; the result does not depend on it. ``n_jobs``
    threads work on chunks at once (both methods release the GIL); the budget is then
    shared between them.

    Returns ``(cmc, mAP)``: a float64 array of length ``max_rank`` and a float in [0, 1].
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    blocks = distmat if hasattr(distmat, "block") and hasattr(distmat, "shape") else None
    dist = None if blocks is not None else _as_numpy_2d(distmat)
    num_q, num_g = (int(v) for v in (blocks.shape if blocks is not None else dist.shape))
    q_pids = _as_ids("q_pids", q_pids, num_q, "query rows")
    q_camids = _as_ids("q_camids", q_camids, num_q, "query rows")
    g_pids = _as_ids("g_pids", g_pids, num_g, "gallery columns")
    g_camids = _as_ids("g_camids", g_camids, num_g, "gallery columns")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    max_rank = int(max_rank)
    if num_q == 0 or num_g == 0:
        raise ValueError(f"distmat is empty (shape {(num_q, num_g)}): need at least one query and one gallery entry")

    if blocks is not None:
        work_dtype = np.dtype(np.float32)
    else:
        work_dtype = dist.dtype if dist.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive integer, got {n_jobs!r}")
    if chunk_size is None:
        if method == "sort":
            chunk_size = auto_chunk_size(
                num_g, work_dtype, memory_budget // n_jobs, needs_cast=blocks is not None or work_dtype != dist.dtype
            )
        else:  # only the rows themselves: a block computed or cast for the step
            chunk_size = max(1, int((memory_budget // n_jobs) // (num_g * work_dtype.itemsize)))
            if blocks is None and work_dtype == dist.dtype:  # rows are views: keep steps short for threads
                chunk_size = min(chunk_size, max(64, -(-num_q // (4 * n_jobs))))
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    chunk_size = min(int(chunk_size), num_q)

    g_valid = g_pids != JUNK_PID
    if method == "count":
        by_pid = np.argsort(g_pids, kind="stable")
        sorted_pids = g_pids[by_pid]
    ap = np.full(num_q, np.nan)
    first_hit_counts = np.zeros(max_rank + 1, dtype=np.int64)  # last bin: first hit beyond max_rank

    def ranks_of_chunk(start: int) -> tuple[int, int, np.ndarray, np.ndarray]:
        stop = min(start + chunk_size, num_q)
        if blocks is not None:
            chunk = np.asarray(blocks.block(start, stop))
            if chunk.shape != (stop - start, num_g) or chunk.dtype.kind != "f":
                raise ValueError(f"distance block {start}:{stop} has shape {chunk.shape} and dtype {chunk.dtype}, "
                                 f"expected ({stop - start}, {num_g}) floats")
        else:
            chunk = np.asarray(dist[start:stop], dtype=work_dtype)
        if method == "count":
            rows, ranks = _match_ranks_by_counting(chunk, q_pids[start:stop], q_camids[start:stop], g_pids, g_camids,
                                                   by_pid, sorted_pids, start)
            return start, stop, rows, ranks
        nan_rows = np.isnan(chunk).any(axis=1)
        if nan_rows.any():
            raise ValueError(f"distmat contains NaN (first in query row {start + int(np.flatnonzero(nan_rows)[0])})")
        rows, ranks = _chunk_ranks(chunk, q_pids[start:stop], q_camids[start:stop], g_pids, g_camids, g_valid)
        return start, stop, rows, ranks

    starts = range(0, num_q, chunk_size)
    with ThreadPoolExecutor(max_workers=n_jobs) if n_jobs > 1 else nullcontext() as pool:
        chunks = pool.map(ranks_of_chunk, starts) if pool is not None else map(ranks_of_chunk, starts)
        for start, stop, rows, ranks in tqdm(chunks, total=len(starts), desc="evaluate_rank", unit="chunk",
                                             disable=not progress):
            if len(rows) == 0:
                continue
            n_rows = stop - start
            num_pos = np.bincount(rows, minlength=n_rows)
            order = np.lexsort((ranks, rows))
            rows, ranks = rows[order], ranks[order]
            row_start = np.concatenate(([0], np.cumsum(num_pos)[:-1]))
            hit_number = np.arange(len(rows)) - row_start[rows] + 1  # k-th true match of its query
            ap_sum = np.bincount(rows, weights=hit_number / ranks, minlength=n_rows)
            has_pos = num_pos > 0
            ap[start:stop][has_pos] = ap_sum[has_pos] / num_pos[has_pos]
            first = ranks[row_start[has_pos]]
            first_hit_counts += np.bincount(np.minimum(first, max_rank + 1) - 1, minlength=max_rank + 1)

    valid = ~np.isnan(ap)
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise ValueError(
            "no query has a valid match in the gallery (every true match is junk or shares the query's camera)"
        )
    if n_valid < num_q:
        log.info("evaluate_rank: %d of %d queries have no valid gallery match and are skipped", num_q - n_valid, num_q)
    cmc = np.cumsum(first_hit_counts[:max_rank]) / n_valid
    return cmc.astype(np.float64), float(ap[valid].mean())


def compute_distmat(query_feats: Any, gallery_feats: Any, *, chunk_size: int = 4096) -> np.ndarray:
    """Squared Euclidean distances ``‖q − g‖²`` between every query and gallery feature, float32.

    Computed as ``‖q‖² + ‖g‖² − 2 q·g`` by BLAS matrix products over chunks of queries (no
    ``num_q × num_g × dim`` temporary), clipped at 0 against round-off. On L2-normalised
    features this is ``2 − 2·cos``, the protocol's distance; normalise before calling for
    that (``reid_metrics`` does).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    distances = FeatureDistances(query_feats, gallery_feats)  # checks both (finite, 2-D, same dimension)
    out = np.empty(distances.shape, dtype=np.float32)
    for start in range(0, distances.shape[0], chunk_size):
        stop = min(start + chunk_size, distances.shape[0])
        distances.block(start, stop, out=out[start:stop])
    return out
