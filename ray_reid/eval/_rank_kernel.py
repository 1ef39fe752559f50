"""Compiled kernel of ``evaluate_rank``: the rank of every true match, by counting, not sorting.

mAP needs the rank of *every* true match of a query, but not the order of anything else. A
query has a few dozen true matches among tens of thousands of gallery entries, so instead
of sorting its row, one pass over it drops each kept entry into the bucket between the
true matches it falls between (a binary search over the sorted matches); the running sum of
the bucket counts is then each match's rank. Entries farther than the farthest match are
skipped with one comparison. O(gallery) per query instead of O(gallery · log gallery),
and nothing the size of a row is allocated.

Order and ties are those of a stable sort: entry (d, g) precedes (d', g') when d < d', or
d = d' and g < g' (gallery index). The public layer (``rank.py``) validates the input; this
kernel assumes clean, contiguous arrays.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def count_matches(q_pids, q_cams, g_cams, by_pid, group_start, group_stop):
    """True matches per query: gallery entries of the query's id from another camera (junk excluded)."""
    out = np.zeros(len(q_pids), dtype=np.int64)
    for r in range(len(q_pids)):
        if q_pids[r] == -1:
            continue
        n = 0
        for t in range(group_start[r], group_stop[r]):
            if g_cams[by_pid[t]] != q_cams[r]:
                n += 1
        out[r] = n
    return out


@numba.njit(nogil=True, cache=True)
def match_ranks(dist, q_pids, q_cams, g_pids, g_cams, by_pid, group_start, group_stop, offsets, out_ranks):
    """Fill ``out_ranks[offsets[r]:offsets[r+1]]`` with the ascending 1-based ranks of row r's matches.

    ``by_pid`` lists gallery indices grouped by id (ascending within an id); row r's id
    occupies ``by_pid[group_start[r]:group_stop[r]]``. Returns the index of the first row
    holding a NaN distance, or -1.
    """
    n_rows, n_gallery = dist.shape
    first_nan = -1
    for r in range(n_rows):
        m = offsets[r + 1] - offsets[r]
        if m == 0:  # no match: nothing to rank, but a NaN must still be reported
            if first_nan < 0:
                for g in range(n_gallery):
                    if dist[r, g] != dist[r, g]:
                        first_nan = r
                        break
            continue
        qp, qc = q_pids[r], q_cams[r]
        values = np.empty(m, dtype=dist.dtype)
        index = np.empty(m, dtype=np.int64)
        j = 0
        nan_match = False
        for t in range(group_start[r], group_stop[r]):
            g = by_pid[t]
            if g_cams[g] != qc:
                values[j] = dist[r, g]
                index[j] = g
                nan_match |= values[j] != values[j]
                j += 1
        if nan_match:
            if first_nan < 0:
                first_nan = r
            continue
        order = np.argsort(values, kind="mergesort")  # stable: equal values keep index order
        values = values[order]
        index = index[order]
        farthest = values[m - 1]
        counts = np.zeros(m + 1, dtype=np.int64)
        for g in range(n_gallery):
            v = dist[r, g]
            if v > farthest:
                continue
            if v != v:
                if first_nan < 0:
                    first_nan = r
                continue
            gp = g_pids[g]
            if gp == -1 or (gp == qp and g_cams[g] == qc):
                continue
            lo, hi = 0, m  # matches strictly before (v, g)
            while lo < hi:
                mid = (lo + hi) >> 1
                if values[mid] < v or (values[mid] == v and index[mid] < g):
                    lo = mid + 1
                else:
                    hi = mid
            counts[lo] += 1
        acc = 0
        base = offsets[r]
        for j in range(m):
            acc += counts[j]  # bucket j holds the j-th match itself and the entries just before it
            out_ranks[base + j] = acc
    return first_nan
