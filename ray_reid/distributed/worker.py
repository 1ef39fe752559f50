"""The per-worker entry point of the TorchTrainer and its Ray-backed WorkerContext."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from ray_reid.config import config_from_dict
from ray_reid.engine.loop import train_worker
from ray_reid.engine.pseudo_labels import PseudoLabels
from ray_reid.storage import use_endpoint


class RayTrainContext:
    """WorkerContext over Ray Train: DDP via prepare_model, clustering via the named actor."""

    def __init__(self, actor):
        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.actor = actor

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model)

    def assign_labels(self, epoch: int, n_total: int, shard: np.ndarray,
                      features: Mapping[str, np.ndarray]) -> PseudoLabels:
        ref = ray.put(dict(features))
        return ray.get(self.actor.submit.remote(epoch, n_total, self.world_size, self.rank, shard, [ref]))

    def all_gather(self, obj: Any) -> list[Any]:
        if self.world_size == 1 or not dist.is_initialized():
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    @contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield Path(folder)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """TorchTrainer's function: rebuild the typed config from plain dicts and run the shared loop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [rank %(process)d] %(name)s: %(message)s")
    cfg = config_from_dict(loop_config["config"])
    use_endpoint(cfg.run.s3_endpoint)
    threads = max(1, int(cfg.run.cpus_per_worker))
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    train_worker(cfg, RayTrainContext(loop_config["actor"]))
