"""Which images a run reads and how they are shaped on the way in: the ``data`` section of a run's config.

The transforms (:mod:`ray_reid.data.transforms`) and the dataset resolution take it as is.
Defaults are the published recipe (DESIGN.md §5: 256×128, flip, pad 10 + crop, random erasing);
the embedded synthetic config scales them down.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray_reid.data.image_folder import BAD_IMAGE_POLICIES
from ray_reid.validation import check, check_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Random-erasing rules: torchvision's, or cluster-contrast's (ray_reid.data.transforms.ClusterContrastErasing),
#: which every published cluster-contrast / Learning to Purification number was trained with.
ERASING_RULES = ("torchvision", "cluster_contrast")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic"
    root: str | None = None  # None with 'synthetic' = the embedded set, generated into the cache
    height: int = 256
    width: int = 128
    flip_p: float = 0.5
    pad: int = 10
    erasing_p: float = 0.5
    erasing: str = "torchvision"  # which rule draws the erased box: one of ERASING_RULES
    # Photometric augmentation, off by default (the published recipes start from ImageNet
    # weights). From random init it is what teaches invariance to the per-camera gain, colour
    # cast, contrast and blur that otherwise make clusters follow cameras instead of people.
    color_jitter: float = 0.0
    grayscale_p: float = 0.0
    blur_p: float = 0.0
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    loader_workers: int = 0
    on_bad_image: str = "raise"

    def __post_init__(self) -> None:
        from ray_reid.data.registry import available_datasets  # filled when ray_reid.data is imported

        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        check_name("data.dataset", self.dataset, available_datasets())
        if self.root is None and self.dataset != "synthetic":
            raise ValueError(f"config value data.root is required for dataset {self.dataset!r}")
        for name in ("height", "width"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 1, f"data.{name}", value, "an integer >= 1")
        check(isinstance(self.pad, int) and self.pad >= 0, "data.pad", self.pad, "an integer >= 0")
        for name in ("flip_p", "erasing_p", "color_jitter", "grayscale_p", "blur_p"):
            value = getattr(self, name)
            check(0 <= value <= 1, f"data.{name}", value, "a number in [0, 1]")
        check(len(self.mean) == 3 and len(self.std) == 3 and min(self.std) > 0, "data.mean/std",
              (self.mean, self.std), "3 values each, std > 0")
        check(self.erasing in ERASING_RULES, "data.erasing", self.erasing, f"one of {ERASING_RULES}")
        check(self.loader_workers >= 0, "data.loader_workers", self.loader_workers, "an integer >= 0")
        check(self.on_bad_image in BAD_IMAGE_POLICIES, "data.on_bad_image", self.on_bad_image,
              f"one of {BAD_IMAGE_POLICIES}")

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)
