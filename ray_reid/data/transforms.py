"""Image transforms for training and testing (torchvision.transforms.v2), on PIL inputs, from the data config.

The training augmentation is the one every result in DESIGN.md §8 used: resize, flip,
pad 10 + random crop back to size, normalise, random erasing. Two erasing rules are offered
because they differ: torchvision's (area 2–33 %, log-uniform aspect, 10 attempts, fill 0 after
normalisation = the ImageNet mean colour) and cluster-contrast's, which every published
cluster-contrast / Learning to Purification number was trained with (:class:`ClusterContrastErasing`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchvision.transforms import InterpolationMode, v2

from ray_reid.data.config import IMAGENET_MEAN, DataConfig


class ClusterContrastErasing(v2.RandomErasing):
    """Random erasing drawn by cluster-contrast's rule (``clustercontrast/utils/data/transforms.py``).

    It differs from torchvision's default in every knob, and the published cluster-contrast and
    Learning to Purification numbers were trained with it: area fraction uniform in
    [``sl``, ``sh``] = [0.02, 0.4] (torchvision: 0.33), aspect ratio h/w uniform in
    [``r1``, 1/``r1``] = [0.3, 3.33] on a *linear* scale (torchvision: log-uniform), up to
    ``attempts`` = 100 draws (torchvision: 10) for a box strictly smaller than the image, and a
    per-channel fill. The public trainers apply it after ``Normalize`` with
    ``mean=[0.485, 0.456, 0.406]``, so those three numbers are written into the *normalised*
    tensor (pixel value mean + mean·std, not the mean colour); ``value`` defaults to exactly that.
    When every attempt fails the image is returned unerased, as in the public code.
    """

    def __init__(self, p: float = 0.5, *, sl: float = 0.02, sh: float = 0.4, r1: float = 0.3,
                 value: tuple[float, ...] = IMAGENET_MEAN, attempts: int = 100) -> None:
        if not 0.0 < sl <= sh <= 1.0:
            raise ValueError(f"ClusterContrastErasing needs 0 < sl <= sh <= 1, got sl={sl!r}, sh={sh!r}")
        if not 0.0 < r1 <= 1.0:
            raise ValueError(f"ClusterContrastErasing needs 0 < r1 <= 1, got r1={r1!r}")
        if not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"ClusterContrastErasing needs attempts >= 1, got {attempts!r}")
        super().__init__(p=p, scale=(sl, sh), ratio=(r1, 1.0 / r1), value=list(value))
        self.sl, self.sh, self.r1, self.attempts = sl, sh, r1, attempts

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        channels, height, width = v2.query_chw(flat_inputs)
        if len(self.value) not in (1, channels):
            raise ValueError(f"erasing value has {len(self.value)} entries but the image has {channels} channels")
        area = height * width
        for _ in range(self.attempts):
            target = area * torch.empty(1).uniform_(self.sl, self.sh).item()
            aspect = torch.empty(1).uniform_(self.r1, 1.0 / self.r1).item()
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if w < width and h < height:
                i = int(torch.randint(0, height - h + 1, (1,)).item())
                j = int(torch.randint(0, width - w + 1, (1,)).item())
                return dict(i=i, j=j, h=h, w=w, v=torch.tensor(self.value)[:, None, None])
        return dict(i=0, j=0, h=height, w=width, v=None)


def _erasing(cfg: DataConfig) -> v2.Transform:
    if cfg.erasing == "cluster_contrast":
        return ClusterContrastErasing(p=cfg.erasing_p)
    return v2.RandomErasing(p=cfg.erasing_p, value=0)


def _to_normalized_tensor(cfg: DataConfig) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(cfg.mean), std=list(cfg.std))]


def train_transform(cfg: DataConfig = DataConfig()) -> v2.Compose:
    """Augmenting transform: PIL image -> float32 [3, H, W], normalised."""
    steps: list[v2.Transform] = [v2.Resize(cfg.size, interpolation=InterpolationMode.BICUBIC)]
    if cfg.flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(p=cfg.flip_p))
    if cfg.pad > 0:
        steps += [v2.Pad(cfg.pad), v2.RandomCrop(cfg.size)]
    if cfg.color_jitter > 0:
        s = cfg.color_jitter
        steps.append(v2.RandomApply([v2.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4))],
                                    p=0.8))
    if cfg.grayscale_p > 0:
        steps.append(v2.RandomGrayscale(p=cfg.grayscale_p))
    if cfg.blur_p > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel_size=3, sigma=(0.1, 1.5))], p=cfg.blur_p))
    steps += _to_normalized_tensor(cfg)
    if cfg.erasing_p > 0:
        steps.append(_erasing(cfg))
    return v2.Compose(steps)


def test_transform(cfg: DataConfig = DataConfig()) -> v2.Compose:
    """Deterministic transform for extraction and evaluation: resize and normalise only."""
    return v2.Compose([v2.Resize(cfg.size, interpolation=InterpolationMode.BICUBIC), *_to_normalized_tensor(cfg)])


test_transform.__test__ = False  # not a pytest test, despite the name
