"""Regularised agglomeration on a candidate graph by rounds of reciprocal-nearest-neighbour merges.

Private kernel behind ``HierarchicalSSE(connectivity="knn")``: it trusts its caller (finite,
already-normalised features; a clean edge list; a combination of linkage and regulariser that
is reducible, see below) and does only the arithmetic. No K×K state: per cluster it keeps the
size n, the feature sum s and the sum of squared norms q (plus ‖s‖²), per candidate edge its
current cost (and, for single linkage, the smallest member distance across it). Memory is
O(N·d + E) for E edges, so a k-NN graph costs O(N·(d + k)).

Costs from cluster statistics (the same formulas, operand for operand, as the dense kernel
:mod:`ray_reid.clustering._agglomerate`, so equal inputs give bit-identical costs):

* average linkage  D(A,B) = q_A/n_A + q_B/n_B − 2·s_A·s_B/(n_A n_B)
* single linkage   D(A,B) = min over the candidate edges between A and B of ‖x_a − x_b‖²
* ``sse``          SSE(A∪B) = q_A + q_B − ‖s_A + s_B‖²/(n_A + n_B)
* ``size``         n_A + n_B
* ``delta_sse``    n_A n_B/(n_A + n_B)·‖s_A/n_A − s_B/n_B‖²

Why rounds of reciprocal nearest neighbours give the greedy result. Call the cost c = D + λR
*reducible* when merging A and B never brings the union closer to a third cluster C than the
nearer of the two: c(A∪B, C) ≥ min(c(A, C), c(B, C)). Then a reciprocal-nearest pair (A, B)
stays reciprocal-nearest whatever else merges first, so the exact greedy loop merges it
eventually, and merging all such pairs at once (RAC, Sumengen et al. 2021; the NN-chain
argument) builds the same hierarchy; the greedy sequence of costs is non-decreasing, so its
order is recovered by sorting the merges by cost (respecting which merge feeds which).
Per combination:

* Linkage alone. Average: D(A∪B, C) = (n_A D(A,C) + n_B D(B,C))/(n_A + n_B), a weighted mean
  of the two, so ≥ their minimum. Single: D(A∪B, C) = min(D(A,C), D(B,C)) exactly.
* ``sse``, ``size`` and ``none`` are *monotone*: R(A∪B, C) ≥ max(R(A,C), R(B,C)). For size
  this is n_A + n_B + n_C > n_A + n_C. For SSE, SSE(T) ≤ SSE(U) whenever T ⊆ U, because
  SSE(U) = Σ_U ‖x − μ_U‖² ≥ Σ_T ‖x − μ_U‖² ≥ Σ_T ‖x − μ_T‖² (the mean minimises the sum).
  With a monotone R and λ ≥ 0: for average linkage, with w = n_A/(n_A + n_B),
  c(A∪B, C) ≥ w·D(A,C) + (1−w)·D(B,C) + λ·max(R(A,C), R(B,C)) ≥ w·c(A,C) + (1−w)·c(B,C)
  ≥ min(c(A,C), c(B,C)); for single linkage, if D(A,C) is the smaller distance,
  c(A∪B, C) ≥ D(A,C) + λR(A,C) = c(A,C). Reducible, with no condition on (A, B) at all.
* ``delta_sse`` (Ward's increase) is reducible on its own only under the precondition that
  (A, B) is the closest pair *in Ward's terms*; added to a linkage with λ > 0 the precondition
  is on the sum, and it fails: for three singletons on a line A = −1, C = 0.2, B = 1 with
  squared distances, Ward's Δ(A∪B, C) = (2/3)·0.04 is far below Δ(A,C) and Δ(B,C), so the
  union can be cheaper than both. A random search over small clusters finds violations for
  both linkages (3% of triples with single, 0.1% with average, up to 47% below the minimum).
  So ``delta_sse`` with λ > 0 is refused on the graph path; the dense path serves it exactly.

On a candidate graph (a k-NN graph), a pair that shares no edge is never merged and its cost
counts as +∞. Single linkage stays reducible: D_G(A∪B, C) = min(D_G(A,C), D_G(B,C)) over
edges, so the argument above goes through, and the result is the exact graph-constrained
greedy hierarchy. Average linkage uses the exact all-pairs D (from s and q, the point of the
method), but on a sparse graph C can be adjacent to B only while the hidden c(A, C) is small:
then c(A∪B, C) may fall below c(B, C), the only visible cost. The result is then the RAC
hierarchy of the graph: every merge joins two adjacent clusters that were each other's
nearest neighbours in the graph when merged. On the complete graph nothing is hidden and it
is the dense greedy result. Ties go to the lowest (min id, max id) pair as in the dense path.
Exact ties need one more rule, because a reciprocal pair (A, B) can lose A to a cluster that
another merge of the same cost creates later (with a lower id): a round merges a reciprocal
pair only if neither side has a second edge of equal cost, or if it is the lowest pair of
all (which the sequential loop takes next anyway). Without ties every reciprocal pair
qualifies; with many exact ties (duplicate samples) rounds merge fewer pairs each.

Cut at K clusters: the greedy loop stops after N − K merges, which with a reducible cost are
the N − K cheapest of the hierarchy. Rounds stop as soon as N − K merges cost less than every
remaining candidate edge (no later merge can be cheaper), and the merges are ordered by
(cost, id_a, id_b) among those whose inputs exist, exactly the dense loop's choice.

One code path for NumPy and CuPy (``xp``); the only backend-specific primitive is the
segmented minimum (``ufunc.at`` / ``cupyx.scatter_min``). A round costs O(E) for the
nearest-neighbour search plus the re-costing of the edges of clusters that changed: O(1) for an
edge whose dot product s_A·s_C is the sum of cached dots of its parts (C adjacent to both halves
of a merged cluster), O(d) for one that must gather two cluster sums.
"""

from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ray_reid.clustering._agglomerate import _flat_labels, _to_host

log = logging.getLogger(__name__)

# Bytes of feature rows gathered at once when re-costing edges (two gathers per chunk).
_GATHER_BYTES = 1 << 26


@dataclass(frozen=True)
class RoundStats:
    """What one round did: the figures a cost model of bigger runs is built from."""

    edges: int  # candidate edges at the start of the round
    recosted: int  # edges whose cost was (re)computed in the round
    merges: int
    seconds: float
    gathered: int = 0  # of those, edges whose s_u·s_v needed two rows gathered (O(d)); the rest summed cached dots


@dataclass(frozen=True)
class GraphAgglomeration:
    """Outcome of one run: flat labels, the merge history in greedy order, per-round figures."""

    labels: np.ndarray  # int64 [N], 0..K-1 numbered by each cluster's smallest sample index
    merges: np.ndarray  # int64 [M, 2], (id_a, id_b) with id_a < id_b
    costs: np.ndarray  # float64 [M]
    rounds: list[RoundStats] = field(default_factory=list)
    components_limited: bool = False  # the graph ran out of edges before K clusters


def scatter_min(target: Any, index: Any, values: Any) -> None:
    """``target[index[i]] = min(target[index[i]], values[i])`` for every i, repeated indices included."""
    if type(target).__module__.startswith("cupy"):
        import cupyx

        cupyx.scatter_min(target, index, values)
    else:
        np.minimum.at(target, index, values)


class _Clusters:
    """Per-cluster statistics in slots indexed by cluster id (its smallest sample index)."""

    def __init__(self, x: Any, xp: ModuleType, linkage: str, regularizer: str, lam: float):
        self.xp = xp
        self.linkage = linkage
        self.regularizer = regularizer
        self.lam = lam
        self.s = x  # feature sums, updated in place
        dtype = x.dtype
        self.n = xp.ones(x.shape[0], dtype=dtype)
        self.q = xp.einsum("ij,ij->i", x, x)
        self.g = self.q.copy()  # ‖s‖²
        self.qn = self.q / self.n
        self.gn2 = self.g / (self.n * self.n)
        self.chunk = max(256, _GATHER_BYTES // max(1, x.shape[1] * dtype.itemsize))

    def dots(self, a: Any, b: Any) -> Any:
        """s_a · s_b for every pair of slots (a[i], b[i]), in chunks that bound the gathered rows."""
        xp = self.xp
        out = xp.empty(a.shape[0], dtype=self.s.dtype)
        for i0 in range(0, int(a.shape[0]), self.chunk):
            i1 = i0 + self.chunk
            out[i0:i1] = xp.einsum("ij,ij->i", self.s[a[i0:i1]], self.s[b[i0:i1]])
        return out

    def costs(self, a: Any, b: Any, gab: Any, dist: Any) -> Any:
        """Merge cost of each pair; mirrors ``_agglomerate._State.cost_rows`` operation for operation."""
        xp = self.xp
        n_a, n_b = self.n[a], self.n[b]
        if self.linkage == "single":
            cost = dist.copy()
        else:
            nn = n_a * n_b
            cost = xp.add(self.qn[a], self.qn[b])
            t = xp.divide(gab, nn)
            t *= 2
            cost -= t
        if self.regularizer != "none" and self.lam != 0.0:
            if self.regularizer == "size":
                reg = xp.add(n_a, n_b)
            elif self.regularizer == "sse":
                t = xp.add(self.g[a], self.g[b])
                t += gab
                t += gab
                t /= xp.add(n_a, n_b)
                reg = xp.add(self.q[a], self.q[b])
                reg -= t
            else:  # delta_sse (reaches here only with lam == 0 from the public layer, kept for completeness)
                nn = n_a * n_b
                reg = xp.add(self.gn2[a], self.gn2[b])
                t = xp.divide(gab, nn)
                t *= 2
                reg -= t
                nn /= xp.add(n_a, n_b)
                reg *= nn
            reg *= self.lam
            cost = reg + cost
        return cost

    def merge(self, a: Any, b: Any, gab: Any) -> None:
        """Fold slots ``b`` into slots ``a`` (disjoint, a < b pairwise); ``gab`` = s_a·s_b before."""
        xp = self.xp
        g_new = xp.add(self.g[a], self.g[b]) + 2 * gab
        self.s[a] += self.s[b]
        self.n[a] += self.n[b]
        self.q[a] += self.q[b]
        self.g[a] = g_new
        self.qn[a] = self.q[a] / self.n[a]
        self.gn2[a] = self.g[a] / (self.n[a] * self.n[a])


class _Edges:
    """Undirected candidate edges (u < v, unique) with their current cost and s_u·s_v."""

    def __init__(self, clusters: _Clusters, u: Any, v: Any, single: bool, gab: Any = None):
        xp = clusters.xp
        self.xp = xp
        self.clusters = clusters
        self.single = single
        self.u, self.v = u, v
        self.dist = None
        # s_u·s_v per edge, kept in float64 whatever the sums' dtype: merged edges add these up
        # (see relabel), and float64 keeps that accumulation from drifting over many rounds
        self.gab = (clusters.dots(u, v) if gab is None else xp.asarray(gab)).astype(xp.float64)
        self.summed = 0  # edges of the last relabel whose dot came from cached dots, no gather
        if single:  # ‖x_u − x_v‖² as the dense kernel forms it: (q_u + q_v) − 2 x_u·x_v, clipped at 0
            self.dist = xp.add(clusters.q[u], clusters.q[v])
            self.dist -= 2 * self.gab
            xp.maximum(self.dist, 0, out=self.dist)
        self.cost = clusters.costs(u, v, self.gab, self.dist)

    @property
    def size(self) -> int:
        return int(self.u.shape[0])

    def nearest(self, n_slots: int) -> tuple[Any, Any, Any]:
        """Per slot: the cheapest edge's cost, its partner (lowest id among ties), how many edges tie."""
        xp = self.xp
        src = xp.concatenate([self.u, self.v])
        dst = xp.concatenate([self.v, self.u])
        both = xp.concatenate([self.cost, self.cost])
        best = xp.full(n_slots, xp.inf, dtype=self.cost.dtype)
        scatter_min(best, src, both)
        tied = both == best[src]
        partner = xp.full(n_slots, n_slots, dtype=xp.int64)
        scatter_min(partner, src[tied], dst[tied])
        return best, partner, xp.bincount(src[tied], minlength=n_slots)

    def safe_pairs(self, n_slots: int) -> tuple[Any, float]:
        """Mask of the edges to merge this round, and the cheapest cost of any edge.

        A reciprocal-nearest pair is merged when neither side has a second edge at the same
        cost: then every cluster formed later is strictly farther from both (reducibility with
        strict inequalities), so the sequential loop merges exactly this pair. A pair with such
        a tie waits, unless it is the lowest (cost, id_a, id_b) pair of all, which the
        sequential loop takes now; so every round merges at least one pair.
        """
        xp = self.xp
        best, partner, ties = self.nearest(n_slots)
        floor = best.min()
        rnn = (partner[self.u] == self.v) & (partner[self.v] == self.u)
        safe = rnn & (ties[self.u] == 1) & (ties[self.v] == 1)
        lowest = rnn & (self.cost == floor)
        lowest_u = xp.where(lowest, self.u, n_slots).min()
        safe |= lowest & (self.u == lowest_u)
        return safe, float(floor)

    def relabel(self, rep: Any, changed: Any) -> int:
        """Point edges of merged clusters at their survivors, drop loops, merge parallel edges, re-cost.

        Only edges touching a changed slot can change or collide (an untouched edge keeps two
        unchanged endpoints), so the sort and the re-costing cover those edges alone. The dot
        product of a new edge needs no gather when every pair of its parts already had an edge:
        s_{A∪B}·s_C = s_A·s_C + s_B·s_C, and with both ends merged the four cross dots; those
        are the parallel edges that collapse onto it, so their cached dots are summed. Only an
        edge with a missing part (C adjacent to A but not to B) gathers two rows for an O(d) dot.
        Returns how many edges were re-costed.
        """
        xp = self.xp
        touched = changed[self.u] | changed[self.v]
        keep = ~touched
        tu, tv = rep[self.u[touched]], rep[self.v[touched]]
        tgab = self.gab[touched]
        tdist = self.dist[touched] if self.single else None
        loop = tu == tv
        live = ~loop
        tu, tv, tgab = tu[live], tv[live], tgab[live]
        lo, hi = xp.minimum(tu, tv), xp.maximum(tu, tv)
        n_slots = int(rep.shape[0])
        key = lo * n_slots + hi
        # stable (CuPy's sort always is, and takes no kind): a run's dots add up in one order on every backend
        order = xp.argsort(key, kind="stable") if xp is np else xp.argsort(key)
        key = key[order]
        first = xp.ones(key.shape[0], dtype=bool)
        first[1:] = key[1:] != key[:-1]
        starts = xp.flatnonzero(first)
        new_u, new_v = lo[order][starts], hi[order][starts]
        n_new = int(starts.shape[0])
        new_dist = None
        if self.single:
            tdist = tdist[live][order]
            # min over each run of parallel edges: single linkage's Lance–Williams update
            new_dist = xp.full(n_new, xp.inf, dtype=tdist.dtype)
            run = xp.cumsum(first) - 1
            scatter_min(new_dist, run, tdist)
        # parts of each slot this round: 2 for a survivor (it absorbed one slot), else 1
        parts = xp.bincount(rep, minlength=n_slots)
        run_length = xp.diff(xp.concatenate([starts, xp.asarray([key.shape[0]], dtype=starts.dtype)]))
        complete = run_length == parts[new_u] * parts[new_v]
        # a complete run has parts_u·parts_v <= 4 edges: add them up in edge order, no segmented ufunc
        sorted_gab = tgab[order]
        new_gab = xp.zeros(n_new, dtype=xp.float64)
        for j in range(4):
            has = complete & (run_length > j)
            new_gab[has] += sorted_gab[starts[has] + j]
        gather = xp.flatnonzero(~complete)
        new_gab[gather] = self.clusters.dots(new_u[gather], new_v[gather])
        self.summed = n_new - int(gather.shape[0])
        new_cost = self.clusters.costs(new_u, new_v, new_gab, new_dist)
        self.u = xp.concatenate([self.u[keep], new_u])
        self.v = xp.concatenate([self.v[keep], new_v])
        self.gab = xp.concatenate([self.gab[keep], new_gab])
        self.cost = xp.concatenate([self.cost[keep], new_cost])
        if self.single:
            self.dist = xp.concatenate([self.dist[keep], new_dist])
        return n_new


def rac_agglomerate(
    x: Any,
    u: Any,
    v: Any,
    n_clusters: int,
    *,
    lam: float,
    linkage: str,
    regularizer: str,
    xp: ModuleType,
    max_cost: float | None = None,
    progress: bool | None = None,
    gab: Any = None,
) -> GraphAgglomeration:
    """Merge the rows of ``x`` (N×d ``xp`` array, consumed: it becomes the cluster sums) over edges (u, v).

    ``u < v`` elementwise, no duplicates. Stops at ``n_clusters`` clusters, or earlier when the
    graph has more connected components than that (``components_limited``), or, with
    ``max_cost``, before the first merge dearer than it (the dense kernel's threshold rule: with a
    reducible cost the greedy loop's costs never decrease, so that is a prefix of its order).
    ``gab`` (optional, one per edge) is x_u·x_v when the caller has it already (a candidate search
    that computed it by a matrix product); otherwise the first round gathers the rows for it.
    """
    n = int(x.shape[0])
    assert 1 <= n_clusters <= n, (n_clusters, n)
    assert not (regularizer == "delta_sse" and lam > 0), "delta_sse with lam > 0 is not reducible"
    budget = n - n_clusters
    clusters = _Clusters(x, xp, linkage, regularizer, float(lam))
    edges = _Edges(clusters, u, v, single=linkage == "single", gab=gab)
    rounds: list[RoundStats] = []
    # merges per round, host side: survivor id, absorbed id, cost
    done_a: list[np.ndarray] = []
    done_b: list[np.ndarray] = []
    done_c: list[np.ndarray] = []
    n_done = 0
    recosted = edges.size
    gathered = edges.size if gab is None else 0
    disable = None if progress is None else not progress
    bar = tqdm(total=budget, desc="RAC merges", unit="merge", disable=disable, mininterval=1.0)
    while budget:
        start = time.perf_counter()
        n_edges = edges.size
        if n_edges == 0:
            break
        pick, floor = edges.safe_pairs(n)
        if max_cost is not None and floor > max_cost:
            break
        if n_done >= budget:
            # every later merge costs at least the cheapest candidate now (reducibility): the cut is known
            # once N - K merges are strictly cheaper than that
            if sum(int((c < floor).sum()) for c in done_c) >= budget:
                break
        a, b = edges.u[pick], edges.v[pick]
        cost, gab = edges.cost[pick], edges.gab[pick]
        clusters.merge(a, b, gab)
        rep = xp.arange(n, dtype=xp.int64)
        rep[b] = a
        changed = xp.zeros(n, dtype=bool)
        changed[a] = True
        changed[b] = True
        recosted_next = edges.relabel(rep, changed)
        gathered_next = recosted_next - edges.summed
        host = _to_host(xp.stack([a.astype(xp.float64), b.astype(xp.float64), cost.astype(xp.float64)]))
        done_a.append(host[0].astype(np.int64))
        done_b.append(host[1].astype(np.int64))
        done_c.append(host[2])
        merged = int(host.shape[1])
        n_done += merged
        rounds.append(RoundStats(edges=n_edges, recosted=recosted, merges=merged,
                                 seconds=time.perf_counter() - start, gathered=gathered))
        recosted, gathered = recosted_next, gathered_next
        bar.update(min(merged, max(0, budget - bar.n)))
        log.debug("RAC round %d: %d edges, %d merges, %d clusters left", len(rounds), n_edges, merged, n - n_done)
    bar.close()

    merges, costs = _greedy_order(done_a, done_b, done_c, n)
    if max_cost is not None:
        over = np.flatnonzero(costs > max_cost)
        keep = int(over[0]) if over.size else int(costs.size)
        merges, costs = merges[:keep], costs[:keep]
        budget = min(budget, keep)
    limited = merges.shape[0] < budget
    if limited:
        log.warning(
            "the candidate graph has %d connected components, more than the %d clusters asked for: "
            "stopping there (raise n_neighbors to connect it)", n - merges.shape[0], n_clusters,
        )
    merges, costs = merges[:budget], costs[:budget]
    parent = np.arange(n, dtype=np.int64)
    parent[merges[:, 1]] = merges[:, 0]
    return GraphAgglomeration(labels=_flat_labels(parent), merges=merges, costs=costs, rounds=rounds,
                              components_limited=limited)


def _greedy_order(done_a: list[np.ndarray], done_b: list[np.ndarray], done_c: list[np.ndarray],
                  n: int) -> tuple[np.ndarray, np.ndarray]:
    """The performed merges in the order the sequential greedy loop takes them.

    A merge is available once both of its clusters exist (the merges that built them are
    done); among available merges the loop takes the lowest (cost, id_a, id_b). Sorting by that
    key already respects the dependencies unless exact ties cross them; then a heap walk
    (Kahn's algorithm) restores the loop's order.
    """
    if not done_a:
        return np.empty((0, 2), dtype=np.int64), np.empty(0, dtype=np.float64)
    a, b, c = np.concatenate(done_a), np.concatenate(done_b), np.concatenate(done_c)
    m = a.size
    # the merge that last built each slot, as of each round: dependencies of every merge
    last = np.full(n, -1, dtype=np.int64)
    dep_a = np.empty(m, dtype=np.int64)
    dep_b = np.empty(m, dtype=np.int64)
    offset = 0
    for ra in done_a:
        idx = np.arange(offset, offset + ra.size)
        dep_a[idx] = last[a[idx]]
        dep_b[idx] = last[b[idx]]
        last[a[idx]] = idx
        offset += ra.size
    order = np.lexsort((b, a, c))
    position = np.empty(m, dtype=np.int64)
    position[order] = np.arange(m)
    ok = ((dep_a < 0) | (position[np.maximum(dep_a, 0)] < position)) & (
        (dep_b < 0) | (position[np.maximum(dep_b, 0)] < position))
    if not ok.all():
        order = _heap_order(a, b, c, dep_a, dep_b)
    return np.stack([a[order], b[order]], axis=1), c[order]


def _heap_order(a, b, c, dep_a, dep_b) -> np.ndarray:
    """Kahn's algorithm over the merge forest, always taking the lowest (cost, id_a, id_b) available."""
    m = a.size
    waiting = (dep_a >= 0).astype(np.int64) + (dep_b >= 0)
    consumer = np.full(m, -1, dtype=np.int64)
    consumer[dep_a[dep_a >= 0]] = np.flatnonzero(dep_a >= 0)
    consumer[dep_b[dep_b >= 0]] = np.flatnonzero(dep_b >= 0)
    heap = [(float(c[i]), int(a[i]), int(b[i]), int(i)) for i in np.flatnonzero(waiting == 0)]
    heapq.heapify(heap)
    out = np.empty(m, dtype=np.int64)
    for pos in range(m):
        *_, i = heapq.heappop(heap)
        out[pos] = i
        j = consumer[i]
        if j >= 0:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(heap, (float(c[j]), int(a[j]), int(b[j]), int(j)))
    return out
