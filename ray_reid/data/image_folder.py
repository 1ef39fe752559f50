"""A torch Dataset over ImageRecords, returning ``(image, index)``.

The index, not the label, comes back: pseudo-labels change every epoch, so the training
loop looks them up in the current label array instead of baking them into the dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2

from ray_reid.data.records import ImageRecord

log = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("raise", "skip")


class BadImageError(ValueError):
    """An image file exists but cannot be decoded."""


def load_rgb(path: str) -> Image.Image:
    """Open and fully decode ``path`` as RGB (lazy PIL decoding would fail later, far from the path)."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(f"cannot decode image {path}: {exc}") from exc


class RecordImageDataset(torch.utils.data.Dataset):
    """Images of ``records`` through ``transform`` (default: to float tensor in [0, 1]).

    ``bad_image_policy="raise"`` fails on the first undecodable file, naming it.
    ``"skip"`` logs it, remembers it in ``bad_paths`` and returns the next decodable record
    instead, *with that record's index*, so labels looked up by index stay consistent. Note
    that with DataLoader workers each worker process keeps its own ``bad_paths``.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        bad_image_policy: str = "raise",
    ) -> None:
        if bad_image_policy not in BAD_IMAGE_POLICIES:
            raise ValueError(f"bad_image_policy must be one of {BAD_IMAGE_POLICIES}, got {bad_image_policy!r}")
        self.records = list(records)
        self.transform = transform or v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        self.bad_image_policy = bad_image_policy
        self.bad_paths: list[str] = []

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        index %= len(self)
        if self.bad_image_policy == "raise":
            return self.transform(load_rgb(self.records[index].path)), index
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            path = self.records[candidate].path
            try:
                image = load_rgb(path)
            except (BadImageError, FileNotFoundError) as exc:
                if path not in self.bad_paths:
                    self.bad_paths.append(path)
                    log.warning("skipping unreadable image (%s)", exc)
                continue
            return self.transform(image), candidate
        raise BadImageError(f"none of the {len(self)} images could be decoded; first bad one: {self.bad_paths[0]}")
