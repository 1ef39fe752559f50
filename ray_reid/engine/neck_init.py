"""Give a never-trained BN neck the statistics of the training images before the first extraction.

A fresh ``BatchNorm1d`` neck holds running mean 0 and variance 1, so in eval mode it is the
identity, while in train mode it standardises each batch. The first epoch's cluster memory is
built from eval-mode features (un-standardised pooled trunk features, which a pretrained trunk
packs into a narrow cone) and then trained against with train-mode features (standardised,
centred): the two live in different spaces, the logits against the memory are close to
uniform, and the first epoch's gradient pulls a good init apart. Measured on the proxy's val
domain, ResNet-18 from the source-pretrained init, *true* labels, 15 iterations: 28.8% mAP at
the init → 27.0% after the epoch with the fresh neck; 37.0% once the neck's running statistics
are set from the training images first (benchmarks/reproduce.py, README "The proxy benchmark").
The public cluster-contrast code has the same mismatch at its epoch 0.

The statistics are exact (mean and unbiased variance of the pooled features over the images,
not a momentum average over batches), computed on the same evenly spaced subset of the training
list on every rank, so every rank's neck is identical without a collective.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ray_reid.data.image_folder import RecordImageDataset
from ray_reid.data.records import ImageRecord

log = logging.getLogger(__name__)


def untrained_necks(model: torch.nn.Module) -> list[str]:
    """Views whose BN neck has never seen a batch (``num_batches_tracked == 0``)."""
    necks = getattr(model, "necks", {})
    return [view for view, neck in necks.items() if int(neck.bn.num_batches_tracked) == 0]


@torch.no_grad()
def init_neck_statistics(model: torch.nn.Module, records: Sequence[ImageRecord], transform, *,
                         device: torch.device | str = "cpu", max_images: int = 2048, batch_size: int = 128,
                         loader_workers: int = 0, bad_image_policy: str = "raise") -> list[str]:
    """Set every untrained neck's running mean/variance from up to ``max_images`` training images.

    The trunk runs in eval mode (its own running statistics, as extraction does); returns the
    views that were initialised (none when every neck has already been trained, e.g. on resume).
    """
    views = untrained_necks(model)
    if not views:
        return []
    if not records:
        raise ValueError("init_neck_statistics needs at least one training image")
    if max_images < 2:
        raise ValueError(f"max_images must be >= 2 (a variance needs two samples), got {max_images}")
    n = len(records)
    pick = np.unique(np.linspace(0, n - 1, num=min(n, max_images)).round().astype(np.int64))
    subset = [records[i] for i in pick]
    pooled: dict[str, list[torch.Tensor]] = {v: [] for v in views}
    hooks = [model.necks[v].bn.register_forward_pre_hook(
        lambda _m, args, v=v: pooled[v].append(args[0].detach().float().cpu())) for v in views]
    was_training = model.training
    model.eval()
    try:
        loader = DataLoader(RecordImageDataset(subset, transform, bad_image_policy=bad_image_policy),
                            batch_size=batch_size, shuffle=False, num_workers=loader_workers)
        for images, _ in loader:
            model(images.to(device, non_blocking=True))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for v in views:
        feats = torch.cat(pooled[v])
        if feats.shape[0] < 2:
            raise ValueError(f"only {feats.shape[0]} readable image(s) to set the {v!r} neck's statistics")
        bn = model.necks[v].bn
        bn.running_mean.copy_(feats.mean(0).to(bn.running_mean))
        bn.running_var.copy_(feats.var(0, unbiased=True).to(bn.running_var))
        bn.num_batches_tracked.fill_(1)
    log.info("BN neck(s) %s never trained: running statistics set from %d training images, so the first "
             "memory and the training features share one space", ", ".join(views), len(subset))
    return views
