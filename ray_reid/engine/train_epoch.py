"""The train stage of an epoch: contrastive learning against the cluster memories (plain torch)."""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Mapping

import numpy as np
import torch

from ray_reid.config import OptimConfig
from ray_reid.engine.amp import autocast, grad_scaler
from ray_reid.losses.cluster_memory import ClusterMemory
from ray_reid.losses.distill import distillation_loss
from ray_reid.losses.triplet import hard_triplet_loss

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Raised as soon as a loss is NaN/inf: continuing would only write a poisoned checkpoint."""


def view_loss_weights(views: tuple[str, ...], parts_weight: float) -> dict[str, float]:
    """(1-λ2) for the global view and λ2 for each part view (Purification); 1 for a single view."""
    if views == ("global",):
        return {"global": 1.0}
    return {v: (1.0 - parts_weight) if v == "global" else parts_weight for v in views}


def train_one_epoch(
    model: torch.nn.Module,
    loader,
    labels: np.ndarray,
    memories: Mapping[str, ClusterMemory],
    optimizer: torch.optim.Optimizer,
    cfg: OptimConfig,
    *,
    epoch: int,
    device: torch.device | str = "cpu",
    teacher: torch.nn.Module | None = None,
    on_log: Callable[[str], None] | None = None,
    log_every: int = 10,
    update_memory: bool = True,
    loss_weight: float = 1.0,
) -> dict[str, float]:
    """Run ``len(loader)`` iterations; return mean losses and throughput for the epoch.

    ``update_memory=False`` keeps the memories frozen (a student's first epoch uses the
    teacher's memories as fixed targets). ``loss_weight`` scales what is back-propagated, not the
    loss reported: a rank holding a larger or smaller share of the global batch than 1/world
    (:func:`ray_reid.data.sampler.rank_loss_weight`). The teacher runs in the BatchNorm mode of
    ``cfg.teacher_bn`` for the epoch and is put back in its previous mode afterwards.
    """
    model.train()
    teacher_was_training = teacher.training if teacher is not None else False
    if teacher is not None:
        # "train" as the public LP trainer: the frozen teacher normalises with each batch's statistics
        teacher.train(cfg.teacher_bn == "train")
    try:
        return _train_steps(model, loader, labels, memories, optimizer, cfg, epoch=epoch, device=device,
                            teacher=teacher, on_log=on_log, log_every=log_every, update_memory=update_memory,
                            loss_weight=loss_weight)
    finally:
        if teacher is not None:
            teacher.train(teacher_was_training)


def _train_steps(model, loader, labels, memories, optimizer, cfg: OptimConfig, *, epoch, device, teacher, on_log,
                 log_every, update_memory, loss_weight=1.0) -> dict[str, float]:
    views = tuple(memories)
    weights = view_loss_weights(views, cfg.parts_weight)
    scaler = grad_scaler(device, cfg.amp)
    label_t = torch.tensor(labels, dtype=torch.long)  # a copy: arrays from the object store are read-only
    totals: dict[str, float] = {}
    n_iter = 0
    n_images = 0
    start = time.perf_counter()
    for it, (images, indices) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        targets = label_t[indices].to(device)
        with autocast(device, cfg.amp):
            out = model(images)
        out = {v: out[v].float() for v in views}
        teacher_out = None
        if teacher is not None and cfg.distill_weight > 0:
            with torch.no_grad(), autocast(device, cfg.amp):
                teacher_out = teacher(images)
            teacher_out = {v: f.float() for v, f in teacher_out.items()}
        loss = images.new_zeros(())
        parts: dict[str, float] = {}
        for view in views:
            term = images.new_zeros(())
            if cfg.memory_weight > 0:
                ce = memories[view](out[view], targets)
                term = cfg.memory_weight * ce
                parts[f"ce_{view}"] = float(ce.detach())
            if teacher_out is not None:
                dist = distillation_loss(out[view], teacher_out[view])
                term = term + cfg.distill_weight * dist
                parts[f"distill_{view}"] = float(dist.detach())
            loss = loss + weights[view] * term
        if cfg.triplet_weight > 0:
            tri = hard_triplet_loss(out["global"], targets, margin=cfg.triplet_margin)
            loss = loss + cfg.triplet_weight * tri
            parts["triplet"] = float(tri.detach())
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"loss became {value} at epoch {epoch}, iteration {it} ({parts}); stopping before any checkpoint "
                "is written from this state"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss * loss_weight if loss_weight != 1.0 else loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if update_memory:
            for view in views:
                memories[view].update(out[view].detach(), targets)
        parts["loss"] = value
        for key, val in parts.items():
            totals[key] = totals.get(key, 0.0) + val
        n_iter += 1
        n_images += len(images)
        if on_log is not None and (it + 1) % log_every == 0:
            on_log(f"epoch {epoch} iter {it + 1}/{len(loader)} loss {value:.3f}")
    seconds = time.perf_counter() - start
    metrics = {key: val / max(n_iter, 1) for key, val in totals.items()}
    metrics["iterations"] = n_iter
    metrics["train_images_per_s"] = n_images / seconds if seconds > 0 else float("nan")
    metrics["train_seconds"] = seconds
    return metrics
