"""Feature extraction: every image of a split through the model, in eval mode, all views."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ray_reid.data.image_folder import RecordImageDataset
from ray_reid.data.records import ImageRecord
from ray_reid.engine.amp import autocast

log = logging.getLogger(__name__)


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    records: Sequence[ImageRecord],
    transform,
    *,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    loader_workers: int = 0,
    progress: bool = False,
    desc: str = "extract",
    bad_image_policy: str = "raise",
    skipped: list[str] | None = None,
    normalize: bool = True,
    amp: bool = False,
) -> dict[str, np.ndarray]:
    """Return ``{view: float32 [len(records), D]}`` in the order of ``records``.

    With ``bad_image_policy="skip"`` an undecodable image gets its neighbour's features; its path is
    appended to ``skipped`` (when given) so the caller can report how many were left out.
    ``normalize=False`` asks the model for its features before L2 normalisation. ``amp=True``
    runs the forward pass under bf16/fp16 autocast on a GPU (nothing changes on a CPU); the
    features come back as float32, re-normalised there so their norm is 1 to float32 precision.

    The model is put in eval mode for the pass (BN running statistics, no dropout) and put back
    in its previous mode afterwards, so an epoch can extract and then keep training.
    """
    was_training = model.training
    model.eval()
    dataset = RecordImageDataset(list(records), transform, bad_image_policy=bad_image_policy)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=loader_workers)
    chunks: dict[str, list[np.ndarray]] = {}
    iterator = loader
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(loader, desc=desc, unit="batch", leave=False)
    try:
        for images, _ in iterator:
            images = images.to(device, non_blocking=True)
            with autocast(device, amp):
                out = model(images) if normalize else model(images, normalize=False)
            for view, feats in out.items():
                feats = feats.float()
                if normalize and feats.dtype != out[view].dtype:
                    feats = torch.nn.functional.normalize(feats, dim=1)
                chunks.setdefault(view, []).append(feats.cpu().numpy())
    finally:
        model.train(was_training)
        if skipped is not None:
            skipped.extend(dataset.bad_paths)
    if not chunks:
        return {}
    return {view: np.concatenate(parts, axis=0) for view, parts in chunks.items()}
