"""The cluster stage of an epoch: embeddings of every training image in, pseudo-identities out.

Arrays in, labels out, no Ray: the ClusteringActor calls :func:`assign_pseudo_labels` on the
embeddings the workers put in the object store, and in-process runs and tests call it directly.
Which clusterer, its schedule, its path (dense or k-NN graph) and how views are fused are the
clusterer's business (:func:`ray_reid.clustering.registry.make_clusterer`); this stage only
relabels compactly, refuses a clustering that left nothing to train on, and builds the per-view
centroids the memories start from.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from ray_reid.clustering.registry import make_clusterer, outlier_knobs
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


def shard_for_clustering(features: Mapping[str, np.ndarray], n_total: int,
                         cfg: ClusterConfig) -> dict[str, np.ndarray]:
    """A rank's embeddings as sent to the clusterer: float16 once the whole set would pass
    ``cluster.fp16_shards_above_gb`` in float32 (halves the object store and the actor's copy;
    unit-norm features lose ~3 decimal digits, far below cluster gaps)."""
    total = n_total * sum(int(arr.shape[1]) for arr in features.values()) * 4
    if total < cfg.fp16_shards_above_gb * 1e9:
        return dict(features)
    return {view: np.asarray(arr, dtype=np.float16) for view, arr in features.items()}


def _relabel_compact(labels: np.ndarray) -> np.ndarray:
    """Map labels to 0..C-1 in order of first appearance, keeping -1 for outliers."""
    out = np.full(labels.shape, -1, dtype=np.int64)
    keep = labels >= 0
    if keep.any():
        _, first, inverse = np.unique(labels[keep], return_index=True, return_inverse=True)
        order = np.argsort(np.argsort(first))
        out[keep] = order[inverse]
    return out


def assign_pseudo_labels(
    features: Mapping[str, np.ndarray],
    cfg: ClusterConfig,
    *,
    epoch: int,
    camids: np.ndarray | None = None,
) -> PseudoLabels:
    """Cluster the (multi-view) embeddings of the whole training set and build per-view centroids.

    With ``cluster.camera_centred`` the clusterer sees every view minus its camera's mean (``camids``, one
    per image, required then); the centroids the memories start from are always the model's own features.
    """
    start = time.perf_counter()
    views = tuple(features)
    n = len(features[views[0]])
    clusterer = make_clusterer(cfg, n_samples=n, epoch=epoch)
    inputs = dict(features)
    if cfg.camera_centred:
        if camids is None:
            raise ValueError("cluster.camera_centred=True needs the camera id of every training image; none was given")
        from ray_reid.clustering.camera import centre_by_camera

        inputs = {view: centre_by_camera(arr, camids, unit=cfg.sphere) for view, arr in inputs.items()}
    raw = clusterer.fit_predict(inputs)  # checks the embeddings (shape, NaN) once, naming the view
    target = getattr(clusterer, "n_clusters", None)  # a scheduled target, for clusterers that take one
    labels = _relabel_compact(np.asarray(raw))
    if not (labels >= 0).any():
        raise ValueError(f"epoch {epoch}: cluster.method={cfg.method!r} left all {n} images outliers, so there is "
                         f"nothing to train on; change {outlier_knobs(cfg)}")
    label_t = torch.from_numpy(labels)
    centroids = {}
    for view in views:  # memories hold sphere centroids even when clustering saw raw features; fp16 shards too
        unit = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(features[view])).float(), dim=1)
        centroids[view] = cluster_centroids(unit, label_t).numpy()
    result = PseudoLabels(labels=labels, centroids=centroids, target=target, seconds=time.perf_counter() - start)
    log.info(
        "epoch %d: %s gave %d clusters, %d outliers from %d images in %.1fs%s", epoch, cfg.method,
        result.n_clusters, result.n_outliers, n, result.seconds, f" (target {target})" if target else "",
    )
    return result
