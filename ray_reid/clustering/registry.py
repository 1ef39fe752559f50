"""Clusterers by name: ``cluster.method`` → an estimator whose ``fit_predict`` labels one epoch's embeddings.

A clusterer is registered as a *builder*: ``builder(cfg, *, n_samples, epoch) -> estimator``, where
``cfg`` is the run's ``cluster`` section and the estimator (scikit-learn style) takes one N×d array or
``{view: N×d array}`` and returns a label per row, -1 for an outlier. The builder is where a schedule
(the HCT target shrinking with the epoch) turns into the estimator's parameters, so the engine never
decides anything about clustering: it asks :func:`make_clusterer` and calls ``fit_predict``.

Adding one::

    @register_clusterer("my_method")
    def _my_method(cfg, *, n_samples, epoch):
        return MyEstimator(threshold=cfg.eps, view_weights=cfg.view_weights)

Config validation lists :func:`available_clusterers`, so ``cluster.method: my_method`` is accepted
once the module registering it is imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

Builder = Callable[..., Any]

_CLUSTERERS: dict[str, Builder] = {}
_KNOBS: dict[str, tuple[str, ...]] = {}
log = logging.getLogger(__name__)


def register_clusterer(name: str, *, knobs: tuple[str, ...] = ()) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` as ``cluster.method: name``; a name is never silently replaced.

    ``knobs`` are the ``cluster.*`` keys that decide how many images end up outliers: an error
    about a clustering that left nothing to train on names them with their values.
    """

    def decorator(builder: Builder) -> Builder:
        if name in _CLUSTERERS and _CLUSTERERS[name] is not builder:
            raise ValueError(f"clusterer {name!r} is already registered (by {_CLUSTERERS[name]!r})")
        _CLUSTERERS[name] = builder
        _KNOBS[name] = tuple(knobs)
        return builder

    return decorator


def available_clusterers() -> list[str]:
    return sorted(_CLUSTERERS)


def outlier_knobs(cfg: Any) -> str:
    """``cluster.key=value`` for the keys of ``cfg.method`` that decide its outliers (for error messages)."""
    return ", ".join(f"cluster.{k}={getattr(cfg, k)!r}" for k in _KNOBS.get(cfg.method, ()))


def make_clusterer(cfg: Any, *, n_samples: int, epoch: int = 0) -> Any:
    """The estimator ``cfg.method`` names, set up for ``epoch`` of a run on ``n_samples`` images."""
    try:
        builder = _CLUSTERERS[cfg.method]
    except KeyError:
        raise ValueError(f"unknown clusterer {cfg.method!r}; valid names: {', '.join(available_clusterers())}"
                         ) from None
    return builder(cfg, n_samples=n_samples, epoch=epoch)


@register_clusterer("hc_sse", knobs=("min_cluster_size", "min_agreement", "schedule", "distance_threshold",
                                              "merge_percent"))
def _hierarchical_sse(cfg: Any, *, n_samples: int, epoch: int) -> Any:
    from ray_reid.clustering.hierarchical import HierarchicalSSE
    from ray_reid.clustering.schedule import scheduled_target

    common = dict(lam=cfg.lam, linkage=cfg.linkage, regularizer=cfg.regularizer, normalize=cfg.sphere,
                  device=cfg.device, view_weights=cfg.view_weights, min_cluster_size=cfg.min_cluster_size,
                  min_agreement=cfg.min_agreement, agreement_neighbors=cfg.agreement_neighbors,
                  connectivity=hierarchy_connectivity(n_samples, cfg), n_neighbors=cfg.n_neighbors,
                  knn_index=cfg.knn_index)
    if cfg.schedule == "threshold":
        return HierarchicalSSE(None, distance_threshold=cfg.distance_threshold, relative_threshold=True, **common)
    target = scheduled_target(n_samples, epoch, merge_percent=cfg.merge_percent, first_step=cfg.first_step,
                              min_clusters_ratio=cfg.min_clusters_ratio)
    return HierarchicalSSE(target, **common)


def hierarchy_connectivity(n_samples: int, cfg: Any) -> str:
    """Dense K×K state or the k-NN graph path, by ``cluster.connectivity`` and ``cluster.graph_above``; logged."""
    if cfg.connectivity == "auto":
        if cfg.regularizer == "delta_sse" and cfg.lam > 0:
            choice, why = "dense", "delta_sse is exact on the dense path only"
        elif n_samples > cfg.graph_above:
            choice, why = "knn", f"{n_samples} images > cluster.graph_above={cfg.graph_above}"
        else:
            choice, why = "dense", f"{n_samples} images <= cluster.graph_above={cfg.graph_above}"
    else:
        choice, why = cfg.connectivity, "cluster.connectivity"
    detail = f" (k={cfg.n_neighbors}, index {cfg.knn_index})" if choice == "knn" else ""
    log.info("hierarchical clustering on the %s path%s: %s", "k-NN graph" if choice == "knn" else "dense",
             detail, why)
    return choice


@register_clusterer("dbscan_jaccard", knobs=("eps", "min_samples", "k1"))
def _dbscan_jaccard(cfg: Any, *, n_samples: int, epoch: int) -> Any:
    from ray_reid.clustering.jaccard import JaccardDBSCAN

    return JaccardDBSCAN(eps=cfg.eps, min_samples=cfg.min_samples, k1=cfg.k1, k2=cfg.k2, device=cfg.device,
                         view_weights=cfg.view_weights)
