"""One worker's whole training run: extract → cluster → relabel → rebuild sampler and memory → train.

Every rank runs this same function; the runtime (Ray Train or a single process) is injected as
a :class:`~ray_reid.engine.context.WorkerContext`, so nothing here imports Ray.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ray_reid.config import TrainConfig
from ray_reid.data.image_folder import RecordImageDataset
from ray_reid.data.records import ReidDataset
from ray_reid.data.resolve import load_configured_dataset
from ray_reid.data.sampler import PseudoIdentitySampler, rank_loss_weight, split_identities
from ray_reid.data.transforms import test_transform, train_transform
from ray_reid.engine.checkpoint import load_checkpoint, save_checkpoint
from ray_reid.engine.context import WorkerContext
from ray_reid.engine.extract import extract_features
from ray_reid.engine.neck_init import init_neck_statistics
from ray_reid.engine.pseudo_labels import shard_for_clustering
from ray_reid.engine.train_epoch import train_one_epoch
from ray_reid.eval.cluster_metrics import clustering_scores
from ray_reid.eval.features import query_gallery_metrics
from ray_reid.losses.cluster_memory import ClusterMemory
from ray_reid.models import build_model

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def shard_indices(n: int, rank: int, world_size: int) -> np.ndarray:
    """Contiguous, disjoint shards covering 0..n-1 exactly once (no duplicates, no gaps)."""
    return np.array_split(np.arange(n), world_size)[rank]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def require_shared_identities(dataset: ReidDataset) -> None:
    """Refuse before training a dataset whose query and gallery share no identity.

    Every query would lack a true match, so mAP and CMC are undefined; better to say so up front
    than after hours of training (a mixed-up or partially copied test split is the usual cause).
    """
    query_ids, gallery_ids = {r.pid for r in dataset.query}, {r.pid for r in dataset.gallery}
    if not query_ids & gallery_ids:
        raise ValueError(
            f"dataset {dataset.name!r} at {dataset.root}: query ({len(query_ids)} ids) and gallery "
            f"({len(gallery_ids)} ids) share no identity, so no query can be matched; check the query and "
            "gallery folders come from the same release"
        )


def evaluate_model(model: torch.nn.Module, dataset: ReidDataset, cfg: TrainConfig, ctx: WorkerContext,
                   transform, skipped: list[str] | None = None) -> dict[str, float] | None:
    """Sharded extraction of query+gallery (global view), gathered; metrics on rank 0, None elsewhere."""
    records = list(dataset.query) + list(dataset.gallery)
    shard = shard_indices(len(records), ctx.rank, ctx.world_size)
    feats = extract_features(unwrap(model), [records[i] for i in shard], transform, device=ctx.device,
                             loader_workers=cfg.data.loader_workers, amp=cfg.optim.amp,
                             bad_image_policy=cfg.data.on_bad_image, skipped=skipped)
    gathered = ctx.all_gather(feats["global"] if feats else np.zeros((0, 1), np.float32))
    if ctx.rank != 0:
        return None
    return query_gallery_metrics(np.concatenate([g for g in gathered if len(g)], axis=0), dataset.query,
                                 dataset.gallery)


def _restore(ckpt_dir: Path | None, model, optimizer, scheduler) -> tuple[int, list[dict[str, Any]]]:
    if ckpt_dir is None:
        return 0, []
    loaded = load_checkpoint(ckpt_dir)
    state = loaded["state"]
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    epoch = int(state["epoch"]) + 1
    log.info("resuming from %s: epoch %d done, continuing at epoch %d", ckpt_dir, epoch - 1, epoch)
    return epoch, list(loaded["history"])


def train_worker(cfg: TrainConfig, ctx: WorkerContext, *, dataset: ReidDataset | None = None,
                 teacher: torch.nn.Module | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the configured training on this rank; returns the metric history."""
    seed_everything(cfg.run.seed + ctx.rank)
    if dataset is None:
        dataset = load_configured_dataset(cfg.data.dataset, cfg.data.root)
    require_shared_identities(dataset)
    train = list(dataset.train)
    n_train = len(train)
    true_ids = np.array([r.pid for r in train])
    camids = np.array([r.camid for r in train])
    world = ctx.world_size
    # The global batch (optim.p identities x k) is fixed; this (re)start's world size only decides how it is
    # split, so an elastic run that shrinks or grows keeps the same step (sampler and loss weight follow).
    shares = split_identities(cfg.optim.p, world)
    batch_local = shares[ctx.rank] * cfg.optim.k
    loss_weight = rank_loss_weight(cfg.optim.p, world, ctx.rank)

    tf_train, tf_test = train_transform(cfg.data), test_transform(cfg.data)
    model = build_model(cfg.model).to(ctx.device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr,
                                 weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.optim.step_size, gamma=cfg.optim.gamma)
    schedule_offset = 0
    if cfg.run.teacher:
        from ray_reid.engine.teacher import load_teacher, teacher_schedule_offset

        if teacher is None:
            teacher = load_teacher(cfg.run.teacher, cfg.model, ctx.device)
        schedule_offset = teacher_schedule_offset(cfg, cfg.run.teacher)
    # Learning to Purification's student first trains an extra epoch (the public code's epoch -1) on the
    # teacher's labels and frozen memories, at teacher_epoch_iters x iters; optim.epochs of its own follow.
    warmup = teacher is not None and cfg.optim.teacher_epoch_iters > 0
    n_epochs = cfg.optim.epochs + int(warmup)
    with ctx.latest_checkpoint() as ckpt_dir:
        start_epoch, history = _restore(ckpt_dir, model, optimizer, scheduler)
    # before DDP wraps the model: every rank sets the same statistics from the same images
    init_neck_statistics(model, train, tf_test, device=ctx.device, loader_workers=cfg.data.loader_workers,
                         bad_image_policy=cfg.data.on_bad_image)
    model = ctx.prepare_model(model)
    shard = shard_indices(n_train, ctx.rank, world)
    train_set = RecordImageDataset(train, tf_train, bad_image_policy=cfg.data.on_bad_image)
    skipped: list[str] = []  # undecodable files this rank met while extracting (on_bad_image="skip")

    def say(msg: str) -> None:
        if ctx.rank == 0:
            log.info(msg)

    say(f"{dataset.summary()}; {world} worker(s), batch {cfg.optim.p}x{cfg.optim.k}"
        + (f" (identities per rank {shares})" if world > 1 else "") + ", "
        f"epochs {start_epoch}..{n_epochs - 1}"
        + (f" (epoch 0 on the teacher's labels at {cfg.optim.teacher_epoch_iters:g}x iterations)" if warmup else "")
        + (f"; clustering schedule continues from the teacher's step {schedule_offset}" if schedule_offset else ""))
    for epoch in range(start_epoch, n_epochs):
        torch.manual_seed(cfg.run.seed * 100003 + epoch * 101 + ctx.rank)
        t0 = time.perf_counter()
        from_teacher = warmup and epoch == 0
        iters = max(1, round(cfg.optim.teacher_epoch_iters * cfg.optim.iters)) if from_teacher else cfg.optim.iters
        feats = extract_features(teacher if from_teacher else unwrap(model), [train[i] for i in shard], tf_test,
                                 device=ctx.device, loader_workers=cfg.data.loader_workers, amp=cfg.optim.amp,
                                 bad_image_policy=cfg.data.on_bad_image, skipped=skipped,
                                 normalize=cfg.cluster.sphere)
        t1 = time.perf_counter()
        # the clusterer's epoch is its schedule step: a student's continues where its teacher's ended
        pseudo = ctx.assign_labels(epoch + schedule_offset, n_train, shard,
                                   shard_for_clustering(feats, n_train, cfg.cluster), camids=camids[shard])
        t2 = time.perf_counter()
        memories = {
            view: ClusterMemory.from_centroids(torch.tensor(pseudo.centroids[view], device=ctx.device),
                                               temp=cfg.optim.temp, momentum=cfg.optim.momentum)
            for view in unwrap(model).views
        }
        sampler = PseudoIdentitySampler(pseudo.labels, camids, num_instances=cfg.optim.k, batch_size=batch_local,
                                        num_iterations=iters, rank=ctx.rank, world_size=world,
                                        seed=cfg.run.seed, epoch=epoch, global_batch_size=cfg.optim.p * cfg.optim.k)
        loader = DataLoader(train_set, batch_size=batch_local, sampler=sampler, drop_last=True,
                            num_workers=cfg.data.loader_workers, persistent_workers=False)
        train_metrics = train_one_epoch(model, loader, pseudo.labels, memories, optimizer, cfg.optim, epoch=epoch,
                                        device=ctx.device, teacher=teacher, on_log=say,
                                        log_every=cfg.run.log_every, update_memory=not from_teacher,
                                        loss_weight=loss_weight)
        scheduler.step()
        t3 = time.perf_counter()
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "n_clusters": pseudo.n_clusters,
            "n_outliers": pseudo.n_outliers,
            "cluster_target": pseudo.target,
            "labels_from": "teacher" if from_teacher else "model",
            "world_size": world,
            "global_batch": sum(ctx.all_gather(batch_local)),  # the same every epoch, whatever the world size
            "extract_seconds": t1 - t0,
            "cluster_seconds": t2 - t1,
            "train_seconds": t3 - t2,
            **{k: v for k, v in train_metrics.items() if k != "train_seconds"},
        }
        sizes = np.bincount(pseudo.labels[pseudo.labels >= 0]) if pseudo.n_clusters else np.zeros(1, np.int64)
        metrics.update({"cluster_size_median": float(np.median(sizes)), "cluster_size_max": int(sizes.max()),
                        "n_singletons": int((sizes == 1).sum())})
        if ctx.rank == 0:
            scores = clustering_scores(pseudo.labels, true_ids).as_dict()
            metrics.update({"ari": scores["ari"], "nmi": scores["nmi"],
                            "pairwise_precision": scores["pairwise_precision"],
                            "pairwise_recall": scores["pairwise_recall"]})
        last = epoch == n_epochs - 1
        if (epoch + 1) % cfg.run.eval_every == 0 or last:
            t4 = time.perf_counter()
            evaluated = evaluate_model(model, dataset, cfg, ctx, tf_test, skipped)
            if evaluated is not None:
                metrics.update(evaluated)
                metrics["eval_seconds"] = time.perf_counter() - t4
        if cfg.data.on_bad_image == "skip":  # same on every rank, so the collective is called by all
            bad = set(skipped) | set(train_set.bad_paths)
            metrics["skipped_images"] = len(set().union(*ctx.all_gather(sorted(bad))))
        say(
            f"epoch {epoch}{' (teacher labels)' if from_teacher else ''}: loss {metrics.get('loss', float('nan')):.3f}, "
            f"{pseudo.n_clusters} clusters"
            + (f" (ARI {metrics['ari']:.3f})" if "ari" in metrics else "")
            + (f", mAP {metrics['mAP']:.1%} rank-1 {metrics['rank1']:.1%}" if "mAP" in metrics else "")
            + f" | extract {t1 - t0:.1f}s cluster {t2 - t1:.1f}s train {t3 - t2:.1f}s"
        )
        history.append(metrics)
        if ctx.rank == 0:
            with tempfile.TemporaryDirectory(prefix="ray_reid_ckpt_") as tmp:
                state = {
                    "model": unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "torch_rng": torch.get_rng_state(),
                    "labels": torch.tensor(pseudo.labels),
                    "memories": {v: m.features.detach().cpu() for v, m in memories.items()},
                }
                meta = {"model": asdict(cfg.model), "config": cfg.to_dict(), "epoch": epoch, "n_train": n_train}
                save_checkpoint(tmp, state, meta, history)
                ctx.report(metrics, Path(tmp))
        else:
            ctx.report(metrics, None)
    return history
