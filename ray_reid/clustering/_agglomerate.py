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

The same code runs on NumPy and CuPy arrays (``xp``); on a GPU it syncs with the host once
per merge for the pair and once for the set of rows to recompute.
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
# Compact the K×K state once this fraction of its slots is dead (and it is big enough to matter).
_COMPACT_DEAD_FRACTION = 0.5
_COMPACT_MIN_SLOTS = 1024


@dataclass(frozen=True)
class Agglomeration:
    """Outcome of one run: flat labels and the merge history (host NumPy arrays)."""

    labels: np.ndarray  # int64 [N], 0..K-1 numbered by each cluster's smallest sample index
    merges: np.ndarray  # int64 [M, 2], (id_a, id_b) with id_a < id_b, cluster ids = smallest member
    costs: np.ndarray  # float64 [M], the merge cost paid at each merge


def _needs_gram(linkage: str, regularizer: str) -> bool:
    return linkage == "average" or regularizer in ("sse", "delta_sse")


class _State:
    """The per-cluster arrays of one agglomeration and the cost formulas that read them."""

    def __init__(self, x: Any, xp: ModuleType, dtype: Any, linkage: str, regularizer: str, lam: float):
        self.xp = xp
        self.linkage = linkage
        self.regularizer = regularizer
        self.lam = lam
        k = x.shape[0]
        x = x.astype(dtype, copy=False)
        self.n = xp.ones(k, dtype=dtype)
        self.q = xp.einsum("ij,ij->i", x, x)
        # ``x @ x.T`` lets BLAS use a symmetric rank-k update; results are K×K in ``dtype``.
        gram = x @ x.T
        self.g = xp.ascontiguousarray(xp.diagonal(gram)).copy()
        self.dist = None
        if linkage == "single":
            if _needs_gram(linkage, regularizer):
                dist = gram.copy()
            else:
                dist = gram  # the Gram matrix is not needed afterwards: reuse its memory
                gram = None
            dist *= -2
            dist += self.q[:, None]
            dist += self.q[None, :]
            xp.maximum(dist, 0, out=dist)
            self.dist = dist
        self.gram = gram
        self.active = xp.ones(k, dtype=bool)
        self.ids = np.arange(k, dtype=np.int64)  # host: cluster id (smallest member) per slot
        self.n_active = k

    @property
    def n_slots(self) -> int:
        return int(self.n.shape[0])

    def cost_rows(self, rows: Any) -> Any:
        """Current merge cost from each slot in ``rows`` to every slot (inf for dead slots and self)."""
        xp = self.xp
        n_r = self.n[rows][:, None]
        n_c = self.n[None, :]
        if self.linkage == "single":
            cost = self.dist[rows]
        else:
            q_r = self.q[rows][:, None]
            mean_sq = (q_r / n_r + self.q[None, :] / n_c) - 2 * self.gram[rows] / (n_r * n_c)
            cost = mean_sq
        if self.regularizer != "none" and self.lam != 0.0:
            if self.regularizer == "size":
                reg = n_r + n_c
            elif self.regularizer == "sse":
                g_r = self.g[rows][:, None]
                q_r = self.q[rows][:, None]
                reg = (q_r + self.q[None, :]) - ((g_r + self.g[None, :]) + 2 * self.gram[rows]) / (n_r + n_c)
            else:  # delta_sse: Ward's increase n_A n_B/(n_A+n_B) · ‖μ_A − μ_B‖²
                g_r = self.g[rows][:, None]
                centre_sq = (g_r / (n_r * n_r) + self.g[None, :] / (n_c * n_c)) - 2 * self.gram[rows] / (
                    n_r * n_c
                )
                reg = (n_r * n_c) / (n_r + n_c) * centre_sq
            cost = cost + self.lam * reg
        # ``dist[rows]`` with an index array is a copy, so the masking below never touches D.
        cost[:, ~self.active] = xp.inf
        cost[xp.arange(cost.shape[0]), rows] = xp.inf
        return cost

    def merge(self, a: int, b: int) -> None:
        """Fold slot ``b`` into slot ``a`` (a < b); slot ``a`` keeps the smaller id."""
        xp = self.xp
        if self.gram is not None:
            gram = self.gram
            g_new = (gram[a, a] + gram[b, b]) + 2 * gram[a, b]
            gram[a] += gram[b]
            gram[:, a] = gram[a]
            gram[a, a] = g_new
            self.g[a] = g_new
        if self.dist is not None:
            dist = self.dist
            xp.minimum(dist[a], dist[b], out=dist[a])
            dist[:, a] = dist[a]
        self.n[a] += self.n[b]
        self.q[a] += self.q[b]
        self.active[b] = False
        self.n_active -= 1

    def compact(self, keep: Any) -> None:
        """Drop dead slots; ``keep`` (ascending host indices) preserves id order."""
        xp = self.xp
        keep_d = xp.asarray(keep)
        if self.gram is not None:
            self.gram = xp.ascontiguousarray(self.gram[xp.ix_(keep_d, keep_d)])
        if self.dist is not None:
            self.dist = xp.ascontiguousarray(self.dist[xp.ix_(keep_d, keep_d)])
        self.n = self.n[keep_d]
        self.q = self.q[keep_d]
        self.g = self.g[keep_d]
        self.active = self.active[keep_d]
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
) -> Agglomeration:
    """Merge the rows of ``x`` (an ``xp`` array, N×d, finite) greedily down to ``n_clusters``.

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
        picked = _to_host(xp.stack([i.astype(xp.float64), row_arg[i].astype(xp.float64), row_min[i].astype(xp.float64)]))
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
        cost_a = state.cost_rows(xp.asarray([a]))[0]
        better = state.active & ~stale & ((cost_a < row_min) | ((cost_a == row_min) & (row_arg > a)))
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
