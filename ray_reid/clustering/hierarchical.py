"""SSE-regularised bottom-up clustering (the "Clustering Matters" sphere-feature method).

Merges start from singletons and always take the pair of lowest *current* cost

    cost(A, B) = D(A, B) + lam · R(A, B)

with D the single (min) or average (mean) squared Euclidean linkage and R one of
``sse`` (SSE of the union: a loose merged cluster is expensive), ``size`` (n_A + n_B, BUC's
diversity term), ``delta_sse`` (Ward's increase) or ``none``. Costs are exact after every
merge, unlike BUC/HCT's once-per-step sort, and the work is O(K) per merge on K×K state
(see :mod:`ray_reid.clustering._agglomerate`). This module validates and converts; the
kernels trust it.

Past a few tens of thousands of samples K×K state no longer fits (8.5 GB at N = 32,621), so
``connectivity="knn"`` runs the same cost on a k-NN candidate graph instead: per-cluster
statistics only, rounds of reciprocal-nearest-neighbour merges, O(N·(d + k)) memory (see
:mod:`ray_reid.clustering._rac`, which also proves which linkage × regulariser pairs that is
exact for). On the complete graph it is the dense result; on a k-NN graph, clusters that share
no edge are never merged.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from typing import Any

import numpy as np

from ray_reid.clustering import _backend
from ray_reid.clustering._agglomerate import LINKAGES, REGULARIZERS, agglomerate
from ray_reid.clustering.fusion import PURIFICATION_WEIGHTS, fuse_checked, split_views, weights_for
from ray_reid.clustering.graph import KNN_INDEXES

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "float64")
# "auto" keeps the K×K state in float64 while it fits this many bytes, float32 beyond.
# float32 is ample for costs on the unit sphere (relative error ~1e-7) and halves memory:
# Market-1501's 12,936 images need 2×0.67 GB instead of 2×1.34 GB.
_FLOAT64_STATE_BUDGET = 1 << 30
CONNECTIVITIES = ("dense", "knn")
# Rows validated and normalised at a time: the float64 working copy stays one chunk, not N×d.
_PREPARE_ROWS = 8192


class HierarchicalSSE:
    """Agglomerative clustering with a regularised merge cost, scikit-learn style.

    Parameters
    ----------
    n_clusters:
        Number of clusters to stop at (1..N, checked at ``fit``); ``None`` with a
        ``distance_threshold`` lets the data decide.
    distance_threshold:
        Stop before the first merge whose cost exceeds it (scikit-learn's meaning), so the
        number of clusters follows the features, as DBSCAN's ``eps`` does; ``n_clusters``
        (when given) still bounds it from below.
    lam:
        Weight of the regulariser, finite and >= 0. Ignored when ``regularizer="none"``.
        The default, 0.05, is the run config's (``cluster.lam``).
    linkage:
        ``"single"`` (min squared distance between members) or ``"average"`` (mean).
    regularizer:
        ``"sse"``, ``"size"``, ``"delta_sse"`` or ``"none"``.
    normalize:
        L2-normalise every feature first (sphere features); zero rows are then an error.
    device:
        ``"auto"`` (CuPy when a GPU is usable), ``"cpu"`` or ``"cuda"``.
    precision:
        Float type of the K×K state (graph path: of the N×d cluster sums): ``"float64"``,
        ``"float32"`` or ``"auto"`` (float64 while the state fits 1 GiB, else float32). Ties are
        broken exactly only within one precision.
    connectivity:
        ``"dense"`` (every pair is a candidate, K×K state), ``"knn"`` (only pairs joined in the
        k-NN graph of the samples; no K×K state), or an N×N adjacency matrix (NumPy or
        scipy.sparse, any non-zero entry is an edge). The graph path refuses
        ``regularizer="delta_sse"`` with ``lam > 0``, whose cost is not reducible.
    n_neighbors:
        k of the k-NN graph (neighbours besides the sample itself); ``>= N - 1`` is the
        complete graph, where the result equals the dense one.
    knn_index:
        ``"flat"`` (exact), ``"ivf"`` (faiss inverted file, approximate), ``"pca"`` (exact search in
        a 128-d PCA projection, 2k candidates re-ranked exactly), ``"cells"`` (exact distances
        among the samples of each sample's 8 nearest k-means cells of ~24, cut in a 64-d PCA
        projection; see :func:`ray_reid.clustering.graph.cell_knn`) or ``"auto"`` (flat on
        a GPU or up to 50,000 samples, IVF beyond).
    view_weights:
        For ``fit({view: array, ...})`` with several views: the weight of each view's squared
        distance, in the mapping's order (Learning to Purification's 0.7/0.15/0.15). The views
        are fused exactly into one matrix (see :mod:`ray_reid.clustering.fusion`), each view
        L2-normalised first when ``normalize``.
    relative_threshold:
        Read ``distance_threshold`` in units of the mean pairwise squared distance of the
        (normalised, fused) input instead of absolutely. Training spreads the features (a
        pretrained init's sit in a narrow cone), so a threshold that fits epoch 0 would leave only
        singletons a few epochs later; a relative one follows them, as DBSCAN's ``eps`` on a
        Jaccard distance does.
    min_cluster_size:
        Clusters smaller than this become outliers (label -1), as DBSCAN's noise points do.
    min_agreement, agreement_neighbors:
        A member whose ``agreement_neighbors`` nearest other samples hold fewer than this fraction
        of its own cluster becomes an outlier (0 keeps everyone; see
        :mod:`ray_reid.clustering.outliers`). A hierarchy assigns every sample somewhere, so
        without it each wrong merge is a confident wrong positive; applied before
        ``min_cluster_size``.

    Attributes
    ----------
    labels_: int64 array [N]
        Cluster of every sample, 0..K-1, or -1 in a cluster under ``min_cluster_size``. Clusters
        are numbered by their smallest sample index, the order of first appearance in ``X``.
    n_clusters_: int
    merges_: int64 array [N - K, 2]
        Merge history: (id_a, id_b), each cluster named by its smallest sample index, id_a < id_b.
    merge_costs_: float64 array [N - K]
        Cost of each merge when it was taken.
    rounds_: list of RoundStats, or None
        Graph path only: edges, re-costed edges (and how many of them gathered two cluster sums
        rather than summing cached dot products), merges and seconds of every round.
    n_edges_: int or None
        Graph path only: undirected edges of the candidate graph.
    graph_seconds_: float or None
        Graph path only: time spent building the candidate graph (the k-NN search).
    distance_threshold_: float or None
        The absolute cost the merging stopped at (``distance_threshold``, scaled when relative).

    On a graph with more connected components than ``n_clusters``, fitting stops at the
    component count (``n_clusters_ > n_clusters``) with a warning.

    Ties between equal costs go to the pair with the lexicographically smallest
    (min id, max id), so the result does not depend on the device or on the state layout.
    """

    def __init__(
        self,
        n_clusters: int | None = None,
        *,
        lam: float = 0.05,
        distance_threshold: float | None = None,
        linkage: str = "single",
        regularizer: str = "sse",
        normalize: bool = True,
        device: str = "auto",
        precision: str = "auto",
        connectivity: Any = "dense",
        n_neighbors: int = 30,
        knn_index: str = "auto",
        view_weights: tuple[float, ...] = PURIFICATION_WEIGHTS,
        relative_threshold: bool = False,
        min_cluster_size: int = 1,
        min_agreement: float = 0.0,
        agreement_neighbors: int = 4,
    ) -> None:
        self.n_clusters = n_clusters
        self.distance_threshold = distance_threshold
        self.lam = lam
        self.linkage = linkage
        self.regularizer = regularizer
        self.normalize = normalize
        self.device = device
        self.precision = precision
        self.connectivity = connectivity
        self.n_neighbors = n_neighbors
        self.knn_index = knn_index
        self.view_weights = view_weights
        self.relative_threshold = relative_threshold
        self.min_cluster_size = min_cluster_size
        self.min_agreement = min_agreement
        self.agreement_neighbors = agreement_neighbors

    @property
    def _graph(self) -> bool:
        return not (isinstance(self.connectivity, str) and self.connectivity == "dense")

    def _check_params(self, n_samples: int) -> None:
        if self.linkage not in LINKAGES:
            raise ValueError(f"linkage must be one of {LINKAGES}, got {self.linkage!r}")
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {self.regularizer!r}")
        if self.device not in _backend.VALID_DEVICES:
            raise ValueError(f"device must be one of {_backend.VALID_DEVICES}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if isinstance(self.lam, bool) or not isinstance(self.lam, numbers.Real) or not math.isfinite(self.lam):
            raise ValueError(f"lam must be a finite real number >= 0, got {self.lam!r}")
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam!r}")
        if self.distance_threshold is not None:
            t = self.distance_threshold
            if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t) or t < 0:
                raise ValueError(f"distance_threshold must be None or a finite real number >= 0, got {t!r}")
        elif self.n_clusters is None:
            raise ValueError("give n_clusters, distance_threshold or both; both are None")
        if self.n_clusters is not None:
            if isinstance(self.n_clusters, bool) or not isinstance(self.n_clusters, numbers.Integral):
                raise ValueError(f"n_clusters must be an integer in [1, {n_samples}], got {self.n_clusters!r}")
            if not 1 <= self.n_clusters <= n_samples:
                raise ValueError(
                    f"n_clusters must be in [1, {n_samples}] (the number of samples), got {self.n_clusters}"
                )
        if (isinstance(self.min_cluster_size, bool) or not isinstance(self.min_cluster_size, numbers.Integral)
                or self.min_cluster_size < 1):
            raise ValueError(f"min_cluster_size must be an integer >= 1, got {self.min_cluster_size!r}")
        if (isinstance(self.min_agreement, bool) or not isinstance(self.min_agreement, numbers.Real)
                or not 0 <= self.min_agreement <= 1):
            raise ValueError(f"min_agreement must be a number in [0, 1], got {self.min_agreement!r}")
        if (isinstance(self.agreement_neighbors, bool) or not isinstance(self.agreement_neighbors, numbers.Integral)
                or self.agreement_neighbors < 1):
            raise ValueError(f"agreement_neighbors must be an integer >= 1, got {self.agreement_neighbors!r}")
        if isinstance(self.connectivity, str) and self.connectivity not in CONNECTIVITIES:
            raise ValueError(
                f"connectivity must be one of {CONNECTIVITIES} or an N×N adjacency matrix, got {self.connectivity!r}"
            )
        if self.connectivity is None:
            raise ValueError(f"connectivity must be one of {CONNECTIVITIES} or an N×N adjacency matrix, got None")
        if (
            isinstance(self.n_neighbors, bool)
            or not isinstance(self.n_neighbors, numbers.Integral)
            or self.n_neighbors < 1
        ):
            raise ValueError(f"n_neighbors must be an integer >= 1, got {self.n_neighbors!r}")
        if self.knn_index not in KNN_INDEXES:
            raise ValueError(f"knn_index must be one of {KNN_INDEXES}, got {self.knn_index!r}")
        if self._graph and self.regularizer == "delta_sse" and self.lam > 0:
            raise ValueError(
                "regularizer='delta_sse' with lam > 0 cannot run on a graph (connectivity="
                f"{self.connectivity if isinstance(self.connectivity, str) else 'matrix'!r}): Ward's increase "
                "added to a linkage is not reducible (merging two clusters can bring the union closer to a "
                "third than either was), so reciprocal-nearest-neighbour rounds would not give the greedy "
                "result; use connectivity='dense', which computes it exactly"
            )

    def _state_dtype(self, n_samples: int, n_features: int) -> type:
        if self.precision != "auto":
            return np.dtype(self.precision).type
        if self._graph:
            # the dense path's choice for one K×K matrix, so that "auto" compares like with like;
            # float32 sums also halve the memory traffic of re-costing edges, the graph path's main cost
            return np.float64 if n_samples * max(n_samples, n_features) * 8 <= _FLOAT64_STATE_BUDGET else np.float32
        n_matrices = 2 if self.linkage == "single" and self.regularizer in ("sse", "delta_sse") else 1
        return np.float64 if n_matrices * n_samples * n_samples * 8 <= _FLOAT64_STATE_BUDGET else np.float32

    def fit(self, X: Any, y: Any = None) -> HierarchicalSSE:
        """Cluster the rows of ``X``: an N×d NumPy or CuPy array, or ``{view: N×d array}``; ``y`` is ignored."""
        names, views = split_views(X)  # the one NaN/shape check
        n_samples = int(views[0].shape[0])
        self._check_params(n_samples)
        normalize = self.normalize
        if len(views) > 1:
            X = fuse_checked(views, weights_for(names, self.view_weights), normalize=normalize)
            normalize = False
        else:
            X = views[0]
        xp = _backend.get_xp(self.device)
        n_features = int(X.shape[1])
        dtype = self._state_dtype(n_samples, n_features)
        X = _prepared(X, xp, dtype, normalize)

        log.info(
            "HierarchicalSSE: %d samples -> %s clusters (linkage=%s, regularizer=%s, lam=%g, %s, %s on %s)",
            n_samples,
            self.n_clusters if self.distance_threshold is None else
            f"cost <= {self.distance_threshold:g}{' x mean sq. distance' if self.relative_threshold else ''}, "
            f">= {self.n_clusters or 1}",
            self.linkage,
            self.regularizer,
            self.lam,
            self._describe_connectivity(n_samples),
            np.dtype(dtype).name,
            xp.__name__,
        )
        self.rounds_ = None
        self.n_edges_ = None
        self.graph_seconds_ = None
        max_cost = None if self.distance_threshold is None else float(self.distance_threshold)
        if max_cost is not None and self.relative_threshold:
            max_cost *= mean_sq_distance(X)
        self.distance_threshold_ = max_cost
        if self._graph:
            result = self._fit_graph(X, xp, max_cost)
        else:
            result = agglomerate(
                X,
                1 if self.n_clusters is None else int(self.n_clusters),
                lam=float(self.lam),
                linkage=self.linkage,
                regularizer=self.regularizer,
                xp=xp,
                dtype=dtype,
                max_cost=max_cost,
            )
        labels = result.labels
        if self.min_agreement > 0:
            from ray_reid.clustering.outliers import drop_uncertain

            kept = int((labels >= 0).sum())
            labels = drop_uncertain(X, labels, n_neighbors=int(self.agreement_neighbors),
                                    min_agreement=float(self.min_agreement), device=self.device)
            log.info("%d of %d members left out (fewer than %.0f%% of their %d nearest neighbours in their "
                     "cluster)", kept - int((labels >= 0).sum()), kept, 100 * self.min_agreement,
                     self.agreement_neighbors)
        self.labels_ = _without_small_clusters(labels, int(self.min_cluster_size))
        self.n_clusters_ = int(self.labels_.max()) + 1
        self.merges_ = result.merges
        self.merge_costs_ = result.costs
        return self

    def _describe_connectivity(self, n_samples: int) -> str:
        if not self._graph:
            return "dense K×K state"
        if isinstance(self.connectivity, str):
            return f"k-NN graph, k={min(int(self.n_neighbors), n_samples - 1)}, index={self.knn_index}"
        return "caller's adjacency graph"

    def _fit_graph(self, X: Any, xp: Any, max_cost: float | None) -> Any:
        from ray_reid.clustering._rac import rac_agglomerate
        from ray_reid.clustering.graph import edges_from_matrix, knn_graph

        n_samples = int(X.shape[0])
        start = time.perf_counter()
        gab = None
        if isinstance(self.connectivity, str):
            u, v, gab = knn_graph(X, int(self.n_neighbors), device=self.device, index=self.knn_index,
                                  return_dots=True)
        else:
            u, v = edges_from_matrix(self.connectivity, n_samples)
        self.n_edges_ = int(u.size)
        self.graph_seconds_ = time.perf_counter() - start
        log.info("candidate graph: %d edges (%.1f per sample) in %.1fs", u.size, 2 * u.size / n_samples,
                 time.perf_counter() - start)
        result = rac_agglomerate(
            X, xp.asarray(u), xp.asarray(v), 1 if self.n_clusters is None else int(self.n_clusters),
            lam=float(self.lam), linkage=self.linkage, regularizer=self.regularizer, xp=xp, max_cost=max_cost,
            gab=None if gab is None else xp.asarray(gab),
        )
        self.rounds_ = result.rounds
        log.info("RAC: %d merges in %d rounds, %.1fs", len(result.merges), len(result.rounds),
                 sum(r.seconds for r in result.rounds))
        return result

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """``fit(X)`` and return ``labels_``."""
        return self.fit(X).labels_


def _prepared(X: Any, xp: Any, dtype: Any, normalize: bool) -> Any:
    """Optionally L2-normalised, C-contiguous ``dtype`` copy of ``X`` on ``xp``'s device.

    ``X`` was checked at the boundary (:func:`ray_reid.clustering.fusion.split_views`: 2-D, real,
    finite). Works chunk by chunk in float64, so the only full-size array is the result (an N×d
    float64 copy of 300,000 × 512 features alone would be 1.2 GB). fp16 input is fine.
    """
    n = int(X.shape[0])
    on_device = _backend.array_module(X) is xp
    out = xp.empty(X.shape, dtype=dtype)
    zero_rows: list[int] = []
    for i0 in range(0, n, _PREPARE_ROWS):
        block = X[i0 : i0 + _PREPARE_ROWS]
        if not on_device:
            block = xp.asarray(_backend.to_numpy(block))
        block = block.astype(xp.float64)
        if normalize:
            norms = xp.linalg.norm(block, axis=1)
            zero = norms == 0
            if bool(zero.any()):
                zero_rows += (_backend.to_numpy(xp.flatnonzero(zero)) + i0)[: 5 - len(zero_rows)].tolist()
                continue
            block /= norms[:, None]
        out[i0 : i0 + block.shape[0]] = block.astype(dtype, copy=False)
    if zero_rows:
        raise ValueError(f"cannot L2-normalise all-zero rows of X (first: {zero_rows}); pass normalize=False")
    return out


def mean_sq_distance(x: Any, *, unit: bool = False) -> float:
    """Mean squared distance over all pairs (i, j), 2(mean‖x‖² − ‖mean x‖²), in O(N·d), NumPy or CuPy.

    The scale a relative ``distance_threshold`` is read in: a pretrained init's features are
    packed in a narrow cone (0.08 on the proxy's validation domain), trained ones near 2.
    """
    xp = _backend.array_module(x)
    n = int(x.shape[0])
    total = xp.zeros(int(x.shape[1]), dtype=xp.float64)
    sq = 0.0
    for i0 in range(0, n, _PREPARE_ROWS):
        block = x[i0 : i0 + _PREPARE_ROWS].astype(xp.float64)
        if unit:
            block = block / xp.linalg.norm(block, axis=1, keepdims=True)
        total += block.sum(axis=0)
        sq += float((block * block).sum())
    mean = total / n
    return float(2.0 * (sq / n - float(mean @ mean)))


def _without_small_clusters(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Clusters under ``min_size`` members become -1 (as outliers stay); the rest renumbered 0..C-1 in order."""
    kept = labels >= 0
    if min_size > 1:
        kept &= np.bincount(labels[kept], minlength=1)[np.maximum(labels, 0)] >= min_size
    elif kept.all():
        return labels
    out = np.full(labels.shape, -1, dtype=np.int64)
    if kept.any():
        _, out[kept] = np.unique(labels[kept], return_inverse=True)
    return out
