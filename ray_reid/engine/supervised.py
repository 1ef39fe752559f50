"""The same training loop with the true identities as its labels: the supervised reference.

Two uses, one mechanism. Pretraining a backbone with identity labels on a *source* domain is
how the proxy benchmark stands in for ImageNet weights (no download reaches these machines),
and training on the *target* domain's true labels is the ceiling every unsupervised method is
measured against. Using the exact loop of the unsupervised methods (cluster memory, P×K
sampler, augmentation, schedule) with perfect labels makes the ceiling differ from them in
one thing only: the labels.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ray_reid.config import ClusterConfig, TrainConfig
from ray_reid.data.records import ReidDataset
from ray_reid.data.resolve import load_configured_dataset
from ray_reid.engine.context import LocalContext
from ray_reid.engine.pseudo_labels import PseudoLabels, _relabel_compact
from ray_reid.losses.cluster_memory import cluster_centroids

log = logging.getLogger(__name__)


class GroundTruthContext(LocalContext):
    """In-process runtime whose "clustering" returns the true identities of the training images."""

    def __init__(self, true_ids: np.ndarray, cluster_cfg: ClusterConfig, checkpoint_root: str | Path,
                 device: str | None = None) -> None:
        super().__init__(cluster_cfg, checkpoint_root, device)
        self.labels = _relabel_compact(np.asarray(true_ids, dtype=np.int64))

    def assign_labels(self, epoch: int, n_total: int, shard: np.ndarray,
                      features: Mapping[str, np.ndarray], camids: np.ndarray | None = None) -> PseudoLabels:
        if n_total != len(self.labels):
            raise ValueError(f"ground truth holds {len(self.labels)} labels but the training set has {n_total} images")
        start = time.perf_counter()
        label_t = torch.from_numpy(self.labels)
        centroids = {view: cluster_centroids(torch.from_numpy(np.ascontiguousarray(f)), label_t).numpy()
                     for view, f in features.items()}
        return PseudoLabels(labels=self.labels, centroids=centroids, target=None,
                            seconds=time.perf_counter() - start)


def train_supervised(cfg: TrainConfig, *, dataset: ReidDataset | None = None) -> tuple[list[dict], Path]:
    """Train ``cfg`` in-process on the true train identities; returns (history, run folder)."""
    from ray_reid.engine.loop import train_worker

    if dataset is None:
        dataset = load_configured_dataset(cfg.data.dataset, cfg.data.root)
    run_dir = Path(cfg.run.storage_path).expanduser().resolve() / cfg.run.name
    ctx = GroundTruthContext(np.array([r.pid for r in dataset.train]), cfg.cluster, run_dir)
    history = train_worker(cfg, ctx, dataset=dataset)
    return history, run_dir


def export_backbone(run_dir: str | Path, out_path: str | Path) -> Path:
    """Write the trunk of a run's latest checkpoint as a torchvision ResNet ``state_dict``.

    The trunk keeps torchvision's key names, so the file loads wherever ImageNet weights do
    (``--pretrained``); the re-ID heads stay behind, as they would for ImageNet weights.
    """
    from ray_reid.atomic import atomic_write
    from ray_reid.engine.checkpoint import load_checkpoint
    from ray_reid.locations import local_checkpoint

    state = load_checkpoint(local_checkpoint(str(run_dir)))["state"]["model"]
    trunk = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if not trunk:
        raise ValueError(f"checkpoint of {run_dir} holds no backbone.* weights")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: torch.save(trunk, tmp))
    log.info("wrote %d trunk tensors to %s", len(trunk), out)
    return out
