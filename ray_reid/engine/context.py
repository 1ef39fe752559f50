"""What the epoch loop needs from its runtime, so the loop itself stays free of Ray.

The Ray Train implementation lives in ``ray_reid.distributed.worker``; :class:`LocalContext`
runs the same loop in one process (tests, debugging, a laptop).
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

import numpy as np
import torch

from ray_reid.config import ClusterConfig
from ray_reid.engine.pseudo_labels import PseudoLabels, assign_pseudo_labels


class WorkerContext(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def assign_labels(self, epoch: int, n_total: int, shard: np.ndarray,
                      features: Mapping[str, np.ndarray]) -> PseudoLabels: ...

    def all_gather(self, obj: Any) -> list[Any]: ...

    def latest_checkpoint(self) -> Any: ...  # context manager yielding a folder or None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None: ...


class LocalContext:
    """Single-process runtime: clusters in-process and keeps checkpoints in a local folder."""

    rank = 0
    world_size = 1

    def __init__(self, cluster_cfg: ClusterConfig, checkpoint_root: str | Path, device: str | None = None):
        self.cluster_cfg = cluster_cfg
        self.checkpoint_root = Path(checkpoint_root)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.reports: list[dict[str, Any]] = []

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def assign_labels(self, epoch: int, n_total: int, shard: np.ndarray,
                      features: Mapping[str, np.ndarray]) -> PseudoLabels:
        if len(shard) != n_total:
            raise ValueError(f"a single process must extract all {n_total} images, got {len(shard)}")
        return assign_pseudo_labels(features, self.cluster_cfg, epoch=epoch)

    def all_gather(self, obj: Any) -> list[Any]:
        return [obj]

    def _checkpoints(self) -> list[Path]:
        return sorted(self.checkpoint_root.glob("checkpoint_*"))

    @contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        found = self._checkpoints()
        yield found[-1] if found else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir is None:
            return
        self.checkpoint_root.mkdir(parents=True, exist_ok=True)
        dest = self.checkpoint_root / f"checkpoint_{int(metrics['epoch']):06d}"
        staged = self.checkpoint_root / f".{dest.name}.tmp"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(checkpoint_dir, staged)
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
