"""The per-worker entry point of the TorchTrainer and its Ray-backed WorkerContext."""

from __future__ import annotations

import logging
import os
import tempfile
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
from ray_reid.engine.checkpoint import checkpoint_to_resume, download_checkpoint
from ray_reid.engine.loop import train_worker
from ray_reid.engine.pseudo_labels import PseudoLabels
from ray_reid.logs import quiet_console
from ray_reid.storage import use_endpoint

log = logging.getLogger(__name__)


class RayTrainContext:
    """WorkerContext over Ray Train: DDP via prepare_model, clustering via the named actor."""

    def __init__(self, actor, run_uri: str, s3_endpoint: str | None = None):
        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.actor = actor
        self.run_uri = run_uri
        self.s3_endpoint = s3_endpoint

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model)

    def assign_labels(self, epoch: int, n_total: int, shard: np.ndarray,
                      features: Mapping[str, np.ndarray], camids: np.ndarray | None = None) -> PseudoLabels:
        ref = ray.put(dict(features))
        return ray.get(self.actor.submit.remote(epoch, n_total, self.world_size, self.rank, shard, [ref],
                                                camids=camids))

    def all_gather(self, obj: Any) -> list[Any]:
        if self.world_size == 1 or not dist.is_initialized():
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    @contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        """The newest complete checkpoint in the run's storage, the same folder on every rank.

        Not simply ``ray.train.get_checkpoint()``: that is the newest one the controller
        registered, and a group killed within a controller poll of its last reports leaves
        finished checkpoints it never saw (see :func:`~ray_reid.engine.checkpoint.newest_complete_checkpoint`). Rank 0
        chooses, removes the incomplete leftovers, and tells the other ranks which folder.
        """
        registered = ray.train.get_checkpoint()
        with tempfile.TemporaryDirectory(prefix="ray_reid_resume_") as workdir:
            chosen = None
            if self.rank == 0:
                chosen = checkpoint_to_resume(self.run_uri, workdir, endpoint_url=self.s3_endpoint)
                if chosen is not None:
                    known = Path(registered.path).name if registered is not None else None
                    log.info("resuming from %s/%s, the newest complete checkpoint (epoch %d)%s", self.run_uri,
                             chosen.name, chosen.epoch,
                             "" if known == chosen.name else f"; Ray Train had registered {known or 'none'}")
            name = self.all_gather(chosen.name if chosen is not None else None)[0]
            if name is None:
                if registered is None:
                    yield None
                    return
                with registered.as_directory() as folder:  # e.g. a run whose folder moved: trust Ray
                    yield Path(folder)
                return
            # Another rank makes its own copy of rank 0's choice (validated there already).
            yield chosen.local_path if chosen is not None else download_checkpoint(
                self.run_uri, name, Path(workdir) / name, self.s3_endpoint)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """TorchTrainer's function: rebuild the typed config from plain dicts and run the shared loop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [rank %(process)d] %(name)s: %(message)s")
    quiet_console()  # Ray Train configured this process's logging before calling us: filter its console
    cfg = config_from_dict(loop_config["config"])
    use_endpoint(cfg.run.s3_endpoint)
    threads = max(1, int(cfg.run.cpus_per_worker))
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    train_worker(cfg, RayTrainContext(loop_config["actor"], loop_config["run_uri"], cfg.run.s3_endpoint))
