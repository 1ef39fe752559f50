"""What the epoch loop needs from its runtime, so the loop itself stays free of Ray.

The Ray Train implementation lives in ``ray_reid.distributed.worker``; :class:`LocalContext`
runs the same loop in one process (tests, debugging, a laptop).
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

import numpy as np
import torch

from ray_reid import locations
from ray_reid.config import ClusterConfig
from ray_reid.engine.pseudo_labels import PseudoLabels, assign_pseudo_labels


class WorkerContext(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def assign_labels(self, epoch: int, n_total: int, shard: np.ndarray,
                      features: Mapping[str, np.ndarray], camids: np.ndarray | None = None) -> PseudoLabels: ...

    def all_gather(self, obj: Any) -> list[Any]: ...

    def latest_checkpoint(self) -> Any: ...  # context manager yielding a folder or None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None: ...


class LocalContext:
    """Single-process runtime: clusters in-process and keeps checkpoints in the run folder (local or S3)."""

    rank = 0
    world_size = 1

    def __init__(self, cluster_cfg: ClusterConfig, run_dir: str | os.PathLike, device: str | None = None):
        self.cluster_cfg = cluster_cfg
        self.run_dir = locations.absolute(run_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.reports: list[dict[str, Any]] = []

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def assign_labels(self, epoch: int, n_total: int, shard: np.ndarray,
                      features: Mapping[str, np.ndarray], camids: np.ndarray | None = None) -> PseudoLabels:
        if len(shard) != n_total:
            raise ValueError(f"a single process must extract all {n_total} images, got {len(shard)}")
        return assign_pseudo_labels(features, self.cluster_cfg, epoch=epoch, camids=camids)

    def all_gather(self, obj: Any) -> list[Any]:
        return [obj]

    @contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        """The newest complete checkpoint, as every resume finds it; partial leftovers are removed."""
        from ray_reid.engine.checkpoint import checkpoint_to_resume

        chosen = checkpoint_to_resume(self.run_dir)
        yield chosen.local_path if chosen is not None else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        """Commit the checkpoint whole: a rename locally, whole objects on S3 (see ray_reid.locations)."""
        self.reports.append(dict(metrics))
        if checkpoint_dir is None:
            return
        name = f"{locations.CHECKPOINT_PREFIX}{int(metrics['epoch']):06d}"
        if locations.is_uri(self.run_dir):
            from ray_reid.storage import upload_dir

            upload_dir(checkpoint_dir, locations.join(self.run_dir, name) + "/")
            return
        root = Path(self.run_dir)
        root.mkdir(parents=True, exist_ok=True)
        dest = root / name
        staged = root / f".{dest.name}.tmp"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(checkpoint_dir, staged)
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
