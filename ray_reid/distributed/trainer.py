"""Driver side of a training run: the ClusteringActor plus a TorchTrainer wired to it."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from ray_reid import locations
from ray_reid.config import TrainConfig
from ray_reid.distributed.actor import get_or_create_actor
from ray_reid.distributed.elastic import CapacityClaim, actor_bundle
from ray_reid.distributed.placement import (
    ActorPlacement,
    capacity_from_config,
    check_storage_shared,
    check_workers_fit,
    clusterer_placement,
    live_nodes,
    node_types_from_config,
    read_autoscaler_config,
    wait_until_placed,
)
from ray_reid.distributed.worker import train_loop_per_worker
from ray_reid.engine.checkpoint import HISTORY_FILE, newest_complete_checkpoint, remove_orphans
from ray_reid.storage import pyarrow_filesystem, use_endpoint

log = logging.getLogger(__name__)

#: Checkpoints kept per run (Ray Train's ``num_to_keep``; orphans beyond it are removed too).
KEEP_CHECKPOINTS = 3


@dataclass
class FitOutcome:
    history: list[dict[str, Any]]
    checkpoint_path: str | None
    run_path: str


def scaling_config(run) -> ScalingConfig:
    """Ray Train's scaling: ``num_workers`` fixed, or ``(min_workers, num_workers)`` for an elastic run.

    Elastic (Ray 2.60 Train V2): each (re)start takes as many workers as the cluster's nodes can hold
    now, between the two bounds; a lost node restarts the group smaller from the newest complete
    checkpoint, and every ``elastic_resize_interval_s`` a running group checks whether it can grow
    back (growing restarts it the same way, so it too costs at most the epoch in progress). The
    worker loop reads the world size of its own start: shards, the actor's rendezvous, the sampler's
    identity split and the loss weights follow it, the global batch does not change.
    """
    use_gpu = run.gpus_per_worker > 0
    resources = {"CPU": run.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = run.gpus_per_worker
    workers = run.num_workers if run.min_workers is None else (run.min_workers, run.num_workers)
    return ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources,
                         elastic_resize_monitor_interval_s=run.elastic_resize_interval_s)


def build_trainer(cfg: TrainConfig, actor, *, callbacks: list | None = None) -> TorchTrainer:
    use_gpu = cfg.run.gpus_per_worker > 0
    filesystem, path = pyarrow_filesystem(cfg.run.storage_path, cfg.run.s3_endpoint)
    return TorchTrainer(
        train_loop_per_worker=train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "actor": actor, "run_uri": locations.run_dir(cfg)},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=scaling_config(cfg.run),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=path,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
            logging_config=LoggingConfig(log_level=cfg.run.ray_log_level),
            callbacks=callbacks,
        ),
    )


def fit(cfg: TrainConfig, *, callbacks: list | None = None, actor_name: str | None = None,
        actor_options: dict[str, Any] | None = None) -> FitOutcome:
    """Run (or resume, for the same storage_path and run name) the distributed training.

    The one training path of ``ray_reid.run.train`` and of every Tune trial: a trial only adds its
    report callback and puts the actor in its own placement-group bundle (``actor_options``).
    """
    use_endpoint(cfg.run.s3_endpoint)
    run_uri = locations.run_dir(cfg)
    raw = read_autoscaler_config()
    nodes, declared = live_nodes(), node_types_from_config(raw)
    storage = check_storage_shared(cfg.run.storage_path, shared=cfg.run.shared_storage, nodes=nodes, declared=declared)
    if not storage.ok:
        raise ValueError(storage.message)
    if actor_options is None:  # a trial's workers were admitted with its sweep
        capacity = capacity_from_config(raw, nodes)
        warning = check_workers_fit(workers=cfg.run.min_workers or cfg.run.num_workers,
                                    cpus_per_worker=cfg.run.cpus_per_worker,
                                    gpus_per_worker=cfg.run.gpus_per_worker, capacity=capacity, declared=declared)
        if warning:
            log.warning("%s", warning)
        placement = clusterer_placement(requested=cfg.run.clusterer_resource, nodes=nodes, declared=declared,
                                        num_workers=cfg.run.num_workers, gpus_per_worker=cfg.run.gpus_per_worker,
                                        cpus_per_worker=cfg.run.cpus_per_worker)
    else:
        placement = ActorPlacement(options=actor_options, reason="in the trial's placement-group bundle")
    actor = get_or_create_actor(
        cfg.run.name, dict(cfg.to_dict()["cluster"]), placement, num_workers=cfg.run.num_workers,
        embeddings_uri=f"{run_uri}/embeddings" if cfg.run.save_embeddings else None, s3_endpoint=cfg.run.s3_endpoint,
        name=actor_name,
    )
    where = wait_until_placed(actor, placement, timeout_s=cfg.run.placement_timeout_s)
    log.info("ClusteringActor runs on node %s (%s)", where["node_id"][:8], where["device"])
    trainer = build_trainer(cfg, actor, callbacks=callbacks)
    # elastic: Ray Train sizes each start from the nodes' total resources; take the actor's share out first
    claim = CapacityClaim(f"ray_reid_clusterer_{cfg.run.name}", actor_bundle(placement.options)) \
        if cfg.run.min_workers is not None else contextlib.nullcontext()
    try:
        with claim:
            result = trainer.fit()
    finally:
        ray.kill(actor, no_restart=True)
    remove_orphans(run_uri, [c.path for c, _ in (result.best_checkpoints or [])], endpoint_url=cfg.run.s3_endpoint,
                   keep=KEEP_CHECKPOINTS)
    return final_outcome(run_uri, endpoint_url=cfg.run.s3_endpoint)


def final_outcome(run_uri: str, *, endpoint_url: str | None = None) -> FitOutcome:
    """What a finished fit hands back: the history of the run's newest *complete* checkpoint in storage.

    Not Ray's ``result.checkpoint``: after the rerun of a killed driver, the controller's last
    registered checkpoint can be older than epochs the workers finished and wrote, and a summary
    built from it would drop those epochs (the driver-kill fault test caught that).
    """
    chosen, _ = newest_complete_checkpoint(run_uri, endpoint_url=endpoint_url)
    if chosen is None:
        return FitOutcome(history=[], checkpoint_path=None, run_path=run_uri)
    history = json.loads((chosen.local_path / HISTORY_FILE).read_text())
    return FitOutcome(history=history, checkpoint_path=locations.join(run_uri, chosen.name), run_path=run_uri)
