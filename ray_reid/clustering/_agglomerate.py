"""Exact greedy agglomeration with a regularised merge cost, at cluster level.

Private kernel behind :class:`ray_reid.clustering.hierarchical.HierarchicalSSE`: it trusts
its caller (finite, contiguous, already-normalised features; valid names and ranges) and
does only the arithmetic.

Why it looks the way it does. The public BUC/HCT code sorts all N² sample pairs once per
step and walks them in Python with costs that go stale as clusters grow. Here the state is
per *cluster*, K×K, and every merge touches O(K) of it:

* ``G`` — Gram matrix of cluster feature sums, G[A,B] = s_A·s_B. Merging B into A is a
  row/column addition, and every quantity the costs need follows from it, n and q:
  ‖s_A+s_B‖² = G_AA + 2G_AB + G_BB, mean pair distance = q_A/n_A + q_B/n_B − 2G_AB/(n_A n_B).
* ``D`` — only for single linkage, the min squared distance between members; merging is an
  element-wise minimum of two rows (Lance–Williams for single linkage).
* D and G live interleaved in one (K, K, m) array: a merge rewrites one row and one column,
  and the column (one cache line per row, the costly part) then serves both at once.
* Per row, the minimum current cost and its argmin. A merge A+B→A changes only the costs
  that involve A or B, so a row keeps its minimum unless that minimum pointed at A or B (then
  the row is recomputed) or the new cost to A beats it. The global merge is the argmin over
  row minima, O(K).

Every cluster lives in the slot of its smallest sample index, and slots keep their relative
order when the state is compacted, so "lowest slot" always means "lowest cluster id". Ties
are broken towards the lexicographically smallest pair (min id, max id): ``argmin`` returns
the first minimum, each row prefers its lowest partner, and the lowest row holding the global
minimum is the smaller member of the smallest tied pair. This needs every cost to come out
bit-identical whichever of its two clusters computes it, so every formula below is written
with commutative operations on (row, column) operands only.

Dead slots are dropped by an in-place compaction once 30% of them are dead, so per-merge work
follows the live K rather than N, and peak memory stays one K×K×m array (N = 12,936 with
single linkage + SSE in float32: 1.34 GB).

The same code runs on NumPy and CuPy arrays (``xp``); on a GPU it syncs with the host twice
per merge (the chosen pair with its cost, and the set of rows to recompute, whose size is
data-dependent) and once per compaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

LINKAGES = ("single", "average")
REGULARIZERS = ("sse", "size", "delta_sse", "none")

# Rows recomputed at once: bounds the temporary (chunk × K) cost block.
_ROW_CHUNK = 512
# Compact the K×K state once this fraction of its slots is dead (and it is big enough to matter);
# compaction is in place, so this trades copying against the O(slots) work of every merge.
_COMPACT_DEAD_FRACTION = 0.3
_COMPACT_MIN_SLOTS = 1024
# Rows moved per step of a compaction (bounds its temporary).
_COMPACT_CHUNK = 256


@dataclass(frozen=True)
class Agglomeration:
    """Outcome of one run: flat labels and the merge history (host NumPy arrays)."""

    labels: np.ndarray  # int64 [N], 0..K-1 numbered by each cluster's smallest sample index
    merges: np.ndarray  # int64 [M, 2], (id_a, id_b) with id_a < id_b, cluster ids = smallest member
    costs: np.ndarray  # float64 [M], the merge cost paid at each merge


def _channels(linkage: str, regularizer: str) -> tuple[bool, bool]:
    """Which K×K quantities the cost needs: (min-distance matrix D, Gram matrix G of sums)."""
    needs_dist = linkage == "single"
    needs_gram = linkage == "average" or regularizer in ("sse", "delta_sse")
    return needs_dist, needs_gram


class _State:
    """The per-cluster arrays of one agglomeration and the cost formulas that read them.

    D and G are interleaved in one (K, K, m) array, m = number of matrices needed: a merge
    writes one row *and one column*, and the column write (one cache line per row, the
    expensive part) then touches both matrices at once. Compaction moves the live block to
    the front of the same buffer, so it never allocates a second K×K array.
    """

    def __init__(
        self, x: Any, xp: ModuleType, dtype: Any, linkage: str, regularizer: str, lam: float, block: int = 1024
    ):
        self.xp = xp
        self.linkage = linkage
        self.regularizer = regularizer
        self.lam = lam
        k = int(x.shape[0])
        x = x.astype(dtype, copy=False)
        needs_dist, needs_gram = _channels(linkage, regularizer)
        self.c_dist = 0 if needs_dist else None
        self.c_gram = int(needs_dist) if needs_gram else None
        m = int(needs_dist) + int(needs_gram)
        self.n = xp.ones(k, dtype=dtype)
        self.q = xp.einsum("ij,ij->i", x, x)
        self.g = self.q.copy()  # ‖s‖² per cluster: the Gram diagonal
        self.pen = xp.zeros(k, dtype=dtype)  # 0 for live slots, inf for dead ones: added to costs
        self._buf = xp.empty(k * k * m, dtype=dtype)
        self.pairs = self._buf.reshape(k, k, m)
        # Upper block-rows of X Xᵀ only (half the flops), mirrored; each diagonal block is
        # symmetrised so that both triangles hold bit-identical values.
        for i0 in range(0, k, block):
            i1 = min(i0 + block, k)
            gram = x[i0:i1] @ x[i0:].T
            diag = gram[:, : i1 - i0]
            gram[:, : i1 - i0] = xp.triu(diag) + xp.triu(diag, 1).T
            both = xp.empty((i1 - i0, k - i0, m), dtype=dtype)
            if needs_gram:
                both[:, :, self.c_gram] = gram
            if needs_dist:
                dist = self.q[i0:i1, None] + self.q[None, i0:]
                dist -= 2 * gram
                xp.maximum(dist, 0, out=dist)
                both[:, :, 0] = dist
            self._mirror(both, i0)
        if needs_gram:
            self.g = xp.ascontiguousarray(xp.diagonal(self.pairs[:, :, self.c_gram])).copy()
        self._refresh_ratios()
        self.active = xp.ones(k, dtype=bool)
        self.ids = np.arange(k, dtype=np.int64)  # host: cluster id (smallest member) per slot
        self.n_active = k

    def _mirror(self, upper: Any, i0: int, tile: int = 256) -> None:
        """Write block-row ``upper`` (rows i0.., columns i0.., all channels) and its transpose.

        The transpose goes tile by tile so that its strided reads stay in cache (about 8× faster
        than one big transposed copy on CPU).
        """
        i1 = i0 + upper.shape[0]
        self.pairs[i0:i1, i0:] = upper
        for j0 in range(0, upper.shape[1], tile):
            j1 = min(j0 + tile, upper.shape[1])
            self.pairs[i0 + j0 : i0 + j1, i0:i1] = upper[:, j0:j1].transpose(1, 0, 2)

    def _refresh_ratios(self) -> None:
        self.qn = self.q / self.n  # mean squared norm per cluster (average linkage)
        self.gn2 = self.g / (self.n * self.n)  # ‖centroid‖² per cluster (delta_sse)

    @property
    def n_slots(self) -> int:
        return int(self.n.shape[0])

    def cost_rows(self, rows: Any) -> Any:
        """Current merge cost from each slot in ``rows`` to every slot (inf for dead slots and self).

        Every entry is built from (row, column) operands with commutative operations only, so
        cost(i, j) computed from row i equals cost(j, i) from row j bit for bit.
        """
        xp = self.xp
        block = self.pairs[rows]  # fancy index: a copy, safe to use as scratch
        gram = block[:, :, self.c_gram] if self.c_gram is not None else None
        n_r = self.n[rows][:, None]
        if self.linkage == "single":
            cost = block[:, :, 0]
        else:  # mean over pairs of ‖x_a − x_b‖² = q_A/n_A + q_B/n_B − 2 s_A·s_B/(n_A n_B)
            nn = n_r * self.n
            cost = xp.add(self.qn[rows][:, None], self.qn)
            t = xp.divide(gram, nn)
            t *= 2
            cost -= t
        if self.regularizer != "none" and self.lam != 0.0:
            if self.regularizer == "size":
                reg = xp.add(n_r, self.n)
            elif self.regularizer == "sse":  # q_U − ‖s_A + s_B‖²/n_U
                t = xp.add(self.g[rows][:, None], self.g)
                t += gram
                t += gram
                t /= xp.add(n_r, self.n)
                reg = xp.add(self.q[rows][:, None], self.q)
                reg -= t
            else:  # delta_sse: Ward's increase n_A n_B/(n_A+n_B) · ‖μ_A − μ_B‖²
                nn = n_r * self.n
                reg = xp.add(self.gn2[rows][:, None], self.gn2)
                t = xp.divide(gram, nn)
                t *= 2
                reg -= t
                nn /= xp.add(n_r, self.n)
                reg *= nn
            reg *= self.lam
            cost = reg + cost
        else:
            cost = xp.ascontiguousarray(cost)
        cost += self.pen
        cost[xp.arange(cost.shape[0]), rows] = xp.inf
        return cost

    def merge(self, a: int, b: int) -> None:
        """Fold slot ``b`` into slot ``a`` (a < b); slot ``a`` keeps the smaller id."""
        xp = self.xp
        pairs = self.pairs
        if self.c_gram is not None:
            c = self.c_gram
            g_new = (pairs[a, a, c] + pairs[b, b, c]) + 2 * pairs[a, b, c]
            pairs[a, :, c] += pairs[b, :, c]
        if self.c_dist is not None:
            xp.minimum(pairs[a, :, 0], pairs[b, :, 0], out=pairs[a, :, 0])
        pairs[:, a, :] = pairs[a, :, :]
        if self.c_gram is not None:
            pairs[a, a, self.c_gram] = g_new
            self.g[a] = g_new
        self.n[a] += self.n[b]
        self.q[a] += self.q[b]
        self.qn[a] = self.q[a] / self.n[a]
        self.gn2[a] = self.g[a] / (self.n[a] * self.n[a])
        self.active[b] = False
        self.pen[b] = xp.inf
        self.n_active -= 1

    def compact(self, keep: np.ndarray) -> None:
        """Drop dead slots, moving the live block to the front of the same buffer.

        ``keep`` is ascending, so new row i' starts no later than its source row ``keep[i']``
        and new rows < i' end before that source: moving chunks of rows forward, each chunk
        gathered before it is written, never overwrites a row still to be read.
        """
        xp = self.xp
        k_new, m = keep.size, self.pairs.shape[2]
        keep_d = xp.asarray(keep)
        old = self.pairs
        row_len = k_new * m
        for r0 in range(0, k_new, _COMPACT_CHUNK):
            r1 = min(r0 + _COMPACT_CHUNK, k_new)
            # gathered copy before any write; two ``take``s are ~5x faster than one ix_ gather
            rows = xp.take(xp.take(old, keep_d[r0:r1], axis=0), keep_d, axis=1)
            self._buf[r0 * row_len : r1 * row_len] = rows.reshape(-1)
        self.pairs = self._buf[: k_new * row_len].reshape(k_new, k_new, m)
        for name in ("n", "q", "g", "pen", "qn", "gn2", "active"):
            setattr(self, name, getattr(self, name)[keep_d])
        self.ids = self.ids[keep]


def _row_minima(state: _State, rows: Any, row_min: Any, row_arg: Any) -> None:
    """Recompute minimum cost and its (lowest) argmin for ``rows`` from scratch, in chunks."""
    for start in range(0, int(rows.shape[0]), _ROW_CHUNK):
        chunk = rows[start : start + _ROW_CHUNK]
        cost = state.cost_rows(chunk)
        arg = cost.argmin(axis=1)
        row_arg[chunk] = arg
        row_min[chunk] = cost[state.xp.arange(cost.shape[0]), arg]


def agglomerate(
    x: Any,
    n_clusters: int,
    *,
    lam: float,
    linkage: str,
    regularizer: str,
    xp: ModuleType,
    dtype: Any = np.float64,
    progress: bool | None = None,
    max_cost: float | None = None,
) -> Agglomeration:
    """Merge the rows of ``x`` (an ``xp`` array, N×d, finite) greedily down to ``n_clusters``.

    With ``max_cost`` merging also stops before the first merge whose cost exceeds it.
    ``progress=None`` shows a tqdm bar only on a terminal.
    """
    n = int(x.shape[0])
    assert 1 <= n_clusters <= n, (n_clusters, n)
    assert linkage in LINKAGES and regularizer in REGULARIZERS, (linkage, regularizer)
    n_merges = n - n_clusters
    state = _State(x, xp, dtype, linkage, regularizer, float(lam))
    parent = np.arange(n, dtype=np.int64)  # host union-find over sample ids, parent = survivor id
    merges = np.empty((n_merges, 2), dtype=np.int64)
    costs = np.empty(n_merges, dtype=np.float64)

    row_min = xp.full(n, xp.inf, dtype=dtype)
    row_arg = xp.zeros(n, dtype=xp.int64)
    if n_merges:
        _row_minima(state, xp.arange(n), row_min, row_arg)

    disable = None if progress is None else not progress
    bar = tqdm(total=n_merges, desc="agglomerate", unit="merge", disable=disable, mininterval=1.0)
    for m in range(n_merges):
        i = row_min.argmin()
        # One device->host transfer per merge: both slots and the cost (slots are exact in float64).
        picked = _to_host(xp.stack([v.astype(xp.float64) for v in (i, row_arg[i], row_min[i])]))
        if max_cost is not None and picked[2] > max_cost:
            merges, costs = merges[:m], costs[:m]
            break
        a, b = sorted((int(picked[0]), int(picked[1])))
        costs[m] = picked[2]
        id_a, id_b = int(state.ids[a]), int(state.ids[b])
        merges[m] = (id_a, id_b)
        parent[id_b] = id_a

        state.merge(a, b)
        row_min[b] = xp.inf
        # Rows whose best partner was a or b lost it: recompute them from scratch.
        stale = state.active & ((row_arg == a) | (row_arg == b))
        stale[a] = False
        # Every other row keeps its minimum unless the new cluster a is better (or ties lower).
        # Stale rows are overwritten below and dead rows stay at inf, so neither needs masking.
        cost_a = state.cost_rows(xp.asarray([a]))[0]
        better = (cost_a < row_min) | ((cost_a == row_min) & (row_arg > a))
        row_min = xp.where(better, cost_a, row_min)
        row_arg = xp.where(better, a, row_arg)
        arg_a = cost_a.argmin()
        row_arg[a] = arg_a
        row_min[a] = cost_a[arg_a]
        _row_minima(state, xp.flatnonzero(stale), row_min, row_arg)

        dead = state.n_slots - state.n_active
        if state.n_slots >= _COMPACT_MIN_SLOTS and dead >= _COMPACT_DEAD_FRACTION * state.n_slots:
            keep = np.flatnonzero(_to_host(state.active))
            remap = np.full(state.n_slots, -1, dtype=np.int64)
            remap[keep] = np.arange(keep.size)
            state.compact(keep)
            keep_d = xp.asarray(keep)
            row_min = row_min[keep_d]
            row_arg = xp.asarray(remap)[row_arg[keep_d]]
            log.debug("compacted agglomeration state to %d slots", keep.size)
        bar.update(1)
    bar.close()

    return Agglomeration(labels=_flat_labels(parent), merges=merges, costs=costs)


def _to_host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _flat_labels(parent: np.ndarray) -> np.ndarray:
    """Labels 0..K-1 from the survivor forest, numbered by each cluster's smallest sample index."""
    root = parent.copy()
    while True:  # pointer jumping: depth halves every pass
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    _, labels = np.unique(root, return_inverse=True)
    return labels.astype(np.int64, copy=False).reshape(-1)
