"""SSE-regularised bottom-up clustering (the "Clustering Matters" sphere-feature method).

Merges start from singletons and always take the pair of lowest *current* cost

    cost(A, B) = D(A, B) + lam · R(A, B)

with D the single (min) or average (mean) squared Euclidean linkage and R one of
``sse`` (SSE of the union: a loose merged cluster is expensive), ``size`` (n_A + n_B, BUC's
diversity term), ``delta_sse`` (Ward's increase) or ``none``. Costs are exact after every
merge, unlike BUC/HCT's once-per-step sort, and the work is O(K) per merge on K×K state
(see :mod:`ray_reid.clustering._agglomerate`). This module validates and converts; the
kernel trusts it.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

import numpy as np

from ray_reid.clustering import _backend
from ray_reid.clustering._agglomerate import LINKAGES, REGULARIZERS, agglomerate

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "float64")
# "auto" keeps the K×K state in float64 while it fits this many bytes, float32 beyond.
# float32 is ample for costs on the unit sphere (relative error ~1e-7) and halves memory:
# Market-1501's 12,936 images need 2×0.67 GB instead of 2×1.34 GB.
_FLOAT64_STATE_BUDGET = 1 << 30


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
    linkage:
        ``"single"`` (min squared distance between members) or ``"average"`` (mean).
    regularizer:
        ``"sse"``, ``"size"``, ``"delta_sse"`` or ``"none"``.
    normalize:
        L2-normalise every feature first (sphere features); zero rows are then an error.
    device:
        ``"auto"`` (CuPy when a GPU is usable), ``"cpu"`` or ``"cuda"``.
    precision:
        Float type of the K×K state: ``"float64"``, ``"float32"`` or ``"auto"`` (float64 while
        the state fits 1 GiB, else float32). Ties are broken exactly only within one precision.

    Attributes
    ----------
    labels_: int64 array [N]
        Cluster of every sample, 0..K-1. Clusters are numbered by their smallest sample
        index, which is also the order of first appearance in ``X``.
    n_clusters_: int
    merges_: int64 array [N - K, 2]
        Merge history: (id_a, id_b), each cluster named by its smallest sample index, id_a < id_b.
    merge_costs_: float64 array [N - K]
        Cost of each merge when it was taken.

    Ties between equal costs go to the pair with the lexicographically smallest
    (min id, max id), so the result does not depend on the device or on the state layout.
    """

    def __init__(
        self,
        n_clusters: int | None = None,
        *,
        lam: float,
        distance_threshold: float | None = None,
        linkage: str = "single",
        regularizer: str = "sse",
        normalize: bool = True,
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        self.n_clusters = n_clusters
        self.distance_threshold = distance_threshold
        self.lam = lam
        self.linkage = linkage
        self.regularizer = regularizer
        self.normalize = normalize
        self.device = device
        self.precision = precision

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
        if self.n_clusters is None:
            return
        if isinstance(self.n_clusters, bool) or not isinstance(self.n_clusters, numbers.Integral):
            raise ValueError(f"n_clusters must be an integer in [1, {n_samples}], got {self.n_clusters!r}")
        if not 1 <= self.n_clusters <= n_samples:
            raise ValueError(
                f"n_clusters must be in [1, {n_samples}] (the number of samples), got {self.n_clusters}"
            )

    def _state_dtype(self, n_samples: int) -> type:
        if self.precision != "auto":
            return np.dtype(self.precision).type
        n_matrices = 2 if self.linkage == "single" and self.regularizer in ("sse", "delta_sse") else 1
        return np.float64 if n_matrices * n_samples * n_samples * 8 <= _FLOAT64_STATE_BUDGET else np.float32

    def fit(self, X: Any, y: Any = None) -> HierarchicalSSE:
        """Cluster the rows of ``X`` (N×d NumPy or CuPy array); ``y`` is ignored."""
        ndim = getattr(X, "ndim", None)
        if ndim is None:
            X = np.asarray(X)
            ndim = X.ndim
        if ndim != 2:
            raise ValueError(f"X must be a 2-D array (n_samples, n_features), got {ndim} dimension(s)")
        n_samples, n_features = (int(s) for s in X.shape)
        if n_samples < 1 or n_features < 1:
            raise ValueError(f"X must have at least one sample and one feature, got shape {tuple(X.shape)}")
        self._check_params(n_samples)
        xp = _backend.get_xp(self.device)
        dtype = self._state_dtype(n_samples)

        if _backend.array_module(X) is not xp:
            X = xp.asarray(_backend.to_numpy(X))
        if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
            raise ValueError(f"X must hold real numbers, got dtype {X.dtype}")
        # Normalise in float64 whatever the state precision: it is N×d, not K×K.
        X = X.astype(xp.float64)
        bad = ~xp.isfinite(X).all(axis=1)
        if bool(bad.any()):
            rows = _backend.to_numpy(xp.flatnonzero(bad))[:5].tolist()
            raise ValueError(f"X contains NaN or inf values (first bad rows: {rows})")
        if self.normalize:
            norms = xp.linalg.norm(X, axis=1)
            zero = norms == 0
            if bool(zero.any()):
                rows = _backend.to_numpy(xp.flatnonzero(zero))[:5].tolist()
                raise ValueError(f"cannot L2-normalise all-zero rows of X (first: {rows}); pass normalize=False")
            X /= norms[:, None]
        X = xp.ascontiguousarray(X.astype(dtype, copy=False))

        log.info(
            "HierarchicalSSE: %d samples -> %s clusters (linkage=%s, regularizer=%s, lam=%g, %s on %s)",
            n_samples,
            self.n_clusters if self.distance_threshold is None else f"cost <= {self.distance_threshold:g}, >= {self.n_clusters or 1}",
            self.linkage,
            self.regularizer,
            self.lam,
            np.dtype(dtype).name,
            xp.__name__,
        )
        result = agglomerate(
            X,
            1 if self.n_clusters is None else int(self.n_clusters),
            lam=float(self.lam),
            linkage=self.linkage,
            regularizer=self.regularizer,
            xp=xp,
            dtype=dtype,
            max_cost=None if self.distance_threshold is None else float(self.distance_threshold),
        )
        self.labels_ = result.labels
        self.n_clusters_ = int(self.labels_.max()) + 1
        self.merges_ = result.merges
        self.merge_costs_ = result.costs
        return self

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """``fit(X)`` and return ``labels_``."""
        return self.fit(X).labels_
