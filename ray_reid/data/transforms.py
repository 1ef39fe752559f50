"""Image transforms for training and testing (torchvision.transforms.v2), on PIL inputs.

The training augmentation is the one every result in DESIGN.md §8 used: resize, flip,
pad 10 + random crop back to size, normalise, random erasing. Erasing fills with 0 after
normalisation, i.e. with the ImageNet mean colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode, v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TransformConfig:
    height: int = 256
    width: int = 128
    flip_p: float = 0.5
    pad: int = 10
    erasing_p: float = 0.5
    # Photometric augmentation, off by default (the published recipes start from ImageNet
    # weights). From random init it is what teaches invariance to the per-camera gain, colour
    # cast, contrast and blur that otherwise make clusters follow cameras instead of people.
    color_jitter: float = 0.0
    grayscale_p: float = 0.0
    blur_p: float = 0.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TransformConfig.{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.pad, int) or self.pad < 0:
            raise ValueError(f"TransformConfig.pad must be an integer >= 0, got {self.pad!r}")
        if not 0.0 <= self.color_jitter <= 1.0:
            raise ValueError(f"TransformConfig.color_jitter must be in [0, 1], got {self.color_jitter!r}")
        for name in ("flip_p", "erasing_p", "grayscale_p", "blur_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"TransformConfig.{name} must be a probability in [0, 1], got {value!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(
                f"TransformConfig.mean/std must be 3 values each with std > 0, got {self.mean!r} / {self.std!r}"
            )

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)


def _to_normalized_tensor(cfg: TransformConfig) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(cfg.mean), std=list(cfg.std))]


def train_transform(cfg: TransformConfig = TransformConfig()) -> v2.Compose:
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
        steps.append(v2.RandomErasing(p=cfg.erasing_p, value=0))
    return v2.Compose(steps)


def test_transform(cfg: TransformConfig = TransformConfig()) -> v2.Compose:
    """Deterministic transform for extraction and evaluation: resize and normalise only."""
    return v2.Compose([v2.Resize(cfg.size, interpolation=InterpolationMode.BICUBIC), *_to_normalized_tensor(cfg)])


test_transform.__test__ = False  # not a pytest test, despite the name
