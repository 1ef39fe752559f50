"""The cluster stage of an epoch: embeddings of every training image in, pseudo-identities out.

Arrays in, labels out, no Ray: the ClusteringActor calls :func:`assign_pseudo_labels` on the
embeddings the workers put in the object store, and in-process runs and tests call it directly.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from ray_reid import clustering
from ray_reid.clustering.schedule import hct_target_clusters
from ray_reid.config import ClusterConfig
from ray_reid.losses.cluster_memory import cluster_centroids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PseudoLabels:
    """One epoch's pseudo-identities: a label per training image (-1 = outlier, left out of the epoch)."""

    labels: np.ndarray
    centroids: dict[str, np.ndarray] = field(repr=False)
    target: int | None
    seconds: float

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if (self.labels >= 0).any() else 0

    @property
    def n_outliers(self) -> int:
        return int((self.labels < 0).sum())


def view_weights(views: tuple[str, ...], cfg: ClusterConfig) -> list[float]:
    """Fusion weights in the order of ``views`` (global first, then up/down, as in DESIGN.md §5)."""
    if len(views) > len(cfg.view_weights):
        raise ValueError(
            f"cluster.view_weights has {len(cfg.view_weights)} weights but the model has views {views}"
        )
    return list(cfg.view_weights[: len(views)])


def target_clusters(n_samples: int, epoch: int, cfg: ClusterConfig) -> int:
    """HCT schedule for the hierarchical clusterer, floored at ``min_clusters_ratio`` of N."""
    floor = max(1, math.ceil(cfg.min_clusters_ratio * n_samples))
    return max(floor, hct_target_clusters(n_samples, cfg.merge_percent, cfg.first_step + epoch))


def mean_sq_distance(x: np.ndarray, *, unit: bool) -> float:
    """Mean squared distance over all pairs (i, j), 2(mean‖x‖² − ‖mean x‖²), in O(N·d).

    The threshold schedule is relative to it: training spreads the features (a pretrained init's
    are packed in a narrow cone: 0.08 on the proxy's validation domain; trained ones near 2), so
    an absolute cost threshold that fits epoch 0 leaves only singletons a few epochs later.
    """
    x = np.asarray(x, dtype=np.float64)
    if unit:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    mean = x.mean(axis=0)
    return float(2.0 * ((x * x).sum(axis=1).mean() - mean @ mean))


def shard_for_clustering(features: Mapping[str, np.ndarray], n_total: int,
                         cfg: ClusterConfig) -> dict[str, np.ndarray]:
    """A rank's embeddings as sent to the clusterer: float16 once the whole set would pass
    ``cluster.fp16_shards_above_gb`` in float32 (halves the object store and the actor's copy;
    unit-norm features lose ~3 decimal digits, far below cluster gaps)."""
    total = n_total * sum(int(arr.shape[1]) for arr in features.values()) * 4
    if total < cfg.fp16_shards_above_gb * 1e9:
        return dict(features)
    return {view: np.asarray(arr, dtype=np.float16) for view, arr in features.items()}


def hierarchy_connectivity(n_samples: int, cfg: ClusterConfig) -> str:
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


def _relabel_compact(labels: np.ndarray) -> np.ndarray:
    """Map labels to 0..C-1 in order of first appearance, keeping -1 for outliers."""
    out = np.full(labels.shape, -1, dtype=np.int64)
    keep = labels >= 0
    if keep.any():
        _, first, inverse = np.unique(labels[keep], return_index=True, return_inverse=True)
        order = np.argsort(np.argsort(first))
        out[keep] = order[inverse]
    return out


def _dbscan_fused(features: Mapping[str, np.ndarray], views: tuple[str, ...], cfg: ClusterConfig) -> np.ndarray:
    """DBSCAN on the weighted sum of per-view Jaccard distances (absent sparse entries mean distance 1)."""
    weights = np.asarray(view_weights(views, cfg), dtype=np.float64)
    weights = weights / weights.sum()
    similarity = None
    for view, w in zip(views, weights):
        dist = clustering.compute_jaccard_distance(features[view], k1=cfg.k1, k2=cfg.k2, device=cfg.device).tocsr()
        sim = dist.copy()
        sim.data = w * (1.0 - sim.data)
        similarity = sim if similarity is None else similarity + sim
    fused = similarity.tocsr()
    # every view stores its diagonal (distance 0, similarity w), so the fused diagonal stays stored
    fused.data = 1.0 - fused.data
    return clustering.dbscan_on_sparse_distance(fused, eps=cfg.eps, min_samples=cfg.min_samples)


def assign_pseudo_labels(
    features: Mapping[str, np.ndarray],
    cfg: ClusterConfig,
    *,
    epoch: int,
) -> PseudoLabels:
    """Cluster the (multi-view) embeddings of the whole training set and build per-view centroids."""
    start = time.perf_counter()
    views = tuple(features)
    n = len(features[views[0]])
    for view in views:
        arr = features[view]
        if arr.ndim != 2 or len(arr) != n:
            raise ValueError(f"features of view {view!r} have shape {arr.shape}; expected ({n}, D)")
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).any(axis=1).sum())
            raise ValueError(f"features of view {view!r} hold NaN or inf in {bad} of {n} rows; refusing to cluster")
    target = None
    if cfg.method == "hc_sse":
        x = features[views[0]] if len(views) == 1 else clustering.fuse_views(
            [features[v] for v in views], view_weights(views, cfg), normalize=cfg.sphere
        )
        graph = {"connectivity": hierarchy_connectivity(n, cfg), "n_neighbors": cfg.n_neighbors,
                 "knn_index": cfg.knn_index}
        if cfg.schedule == "threshold":
            clusterer = clustering.HierarchicalSSE(
                None, distance_threshold=cfg.distance_threshold * mean_sq_distance(x, unit=cfg.sphere and len(views) == 1),
                lam=cfg.lam, linkage=cfg.linkage,
                regularizer=cfg.regularizer, normalize=cfg.sphere and len(views) == 1, device=cfg.device, **graph,
            )
        else:
            target = target_clusters(n, epoch, cfg)
            clusterer = clustering.HierarchicalSSE(
                target, lam=cfg.lam, linkage=cfg.linkage, regularizer=cfg.regularizer,
                normalize=cfg.sphere and len(views) == 1, device=cfg.device, **graph,
            )
        raw = clusterer.fit_predict(x)
        if cfg.min_agreement > 0:
            from ray_reid.clustering.outliers import drop_uncertain

            xs = np.asarray(x, dtype=np.float32)
            if cfg.sphere and len(views) == 1:
                xs = xs / np.linalg.norm(xs, axis=1, keepdims=True)
            before = int((np.asarray(raw) >= 0).sum())
            raw = drop_uncertain(xs, np.asarray(raw), n_neighbors=cfg.agreement_neighbors,
                                 min_agreement=cfg.min_agreement, device=cfg.device)
            log.info("epoch %d: %d of %d members left out (fewer than %.0f%% of their %d nearest neighbours in "
                     "their cluster)", epoch, before - int((raw >= 0).sum()), before, 100 * cfg.min_agreement,
                     cfg.agreement_neighbors)
            if (raw < 0).all():
                raise ValueError(f"epoch {epoch}: cluster.min_agreement={cfg.min_agreement} left every image out; "
                                 "lower it or raise cluster.distance_threshold")
        if cfg.min_cluster_size > 1:
            raw = np.asarray(raw).copy()
            kept = raw >= 0
            raw[kept & (np.bincount(raw[kept], minlength=1)[np.maximum(raw, 0)] < cfg.min_cluster_size)] = -1
            if (raw < 0).all():
                raise ValueError(f"epoch {epoch}: every cluster is smaller than cluster.min_cluster_size="
                                 f"{cfg.min_cluster_size}; raise cluster.distance_threshold ({cfg.distance_threshold})")
    elif cfg.method == "dbscan_jaccard":
        if len(views) == 1:
            raw = clustering.JaccardDBSCAN(eps=cfg.eps, min_samples=cfg.min_samples, k1=cfg.k1, k2=cfg.k2,
                                device=cfg.device).fit_predict(features[views[0]])
        else:
            raw = _dbscan_fused(features, views, cfg)
    else:  # config validation makes this unreachable
        raise ValueError(f"unknown clusterer {cfg.method!r}")
    labels = _relabel_compact(np.asarray(raw))
    centroids = {}
    if (labels >= 0).any():
        label_t = torch.from_numpy(labels)
        for view in views:  # memories hold sphere centroids even when clustering saw raw features; fp16 shards too
            unit = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(features[view])).float(), dim=1)
            centroids[view] = cluster_centroids(unit, label_t).numpy()
    result = PseudoLabels(labels=labels, centroids=centroids, target=target, seconds=time.perf_counter() - start)
    log.info(
        "epoch %d: %s gave %d clusters, %d outliers from %d images in %.1fs%s", epoch, cfg.method,
        result.n_clusters, result.n_outliers, n, result.seconds, f" (target {target})" if target else "",
    )
    return result
