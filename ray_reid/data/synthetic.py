"""A synthetic person re-ID dataset in the Market-1501 layout, drawn from a seed.

The real benchmarks cannot be downloaded on the development machines, yet every stage of
the pipeline (reader, clustering, training, evaluation) has to be exercised on pictures
that pose the same problem: people told apart by clothes and build, seen by cameras that
each tint, blur, scale and frame them differently, so that raw appearance groups images
by camera about as strongly as by person. This module draws such a set with NumPy masks
on a supersampled canvas, one independent RNG per image, and writes real JPEG files under
``bounding_box_train/``, ``query/`` and ``bounding_box_test/`` so the Market reader serves
it unchanged.

Run ``python -m ray_reid.data.synthetic --out DIR`` for the embedded default set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

log = logging.getLogger(__name__)

#: Bumped whenever the same config would draw different pixels; recorded in summary.json.
GENERATOR_VERSION = 1

TRAIN_DIR, QUERY_DIR, GALLERY_DIR = "bounding_box_train", "query", "bounding_box_test"
SPLIT_DIRS = (TRAIN_DIR, QUERY_DIR, GALLERY_DIR)
SUMMARY_FILE = "summary.json"
DISTRACTOR_PID = 0

# Stream tags: every random decision draws from ``default_rng([seed, TAG, ...])`` so that
# images, identities and cameras never share a stream and the output does not depend on
# the order (or process) in which images are drawn.
_TAG_SPLIT, _TAG_LAYOUT, _TAG_IDENTITY, _TAG_CAMERA, _TAG_IMAGE = 1, 2, 3, 4, 5
_TAG_DISTRACTOR_LAYOUT, _TAG_DISTRACTOR_IDENTITY = 6, 7

VIEWS = ("front", "back", "side")
TOP_PATTERNS = ("solid", "stripes", "checks", "logo")
BOTTOM_KINDS = ("trousers", "shorts", "skirt")


@dataclass(frozen=True)
class SyntheticConfig:
    """What to draw; validated on construction so a bad value fails before any file is written.

    ``ids`` counts identities of both halves: ``ids // 2`` train, the rest test, disjoint.
    Every test identity gets at least two images in two of its cameras, so that each of
    its queries (one per camera) keeps a gallery match under another camera.
    """

    ids: int = 200
    cams: int = 6
    seed: int = 0
    height: int = 64
    width: int = 32
    distractors: int = 50
    min_cams_per_id: int = 2
    max_images_per_cam: int = 6
    near_duplicate_fraction: float = 0.3
    jpeg_quality: int = 90
    supersample: int = 2
    camera_strength: float = 1.0

    def __post_init__(self) -> None:
        ints = {
            "ids": (2, 9999, "pids are written with 4 digits and both halves need one id"),
            "cams": (2, 9, "Market names hold a one-digit camera and re-ID needs two views"),
            "seed": (0, 2**63 - 1, "seeds feed numpy.random.SeedSequence"),
            "height": (16, 1024, "a person needs at least 16 rows to be drawn"),
            "width": (8, 1024, "a person needs at least 8 columns to be drawn"),
            "distractors": (0, 999_999, "frame numbers are written with 6 digits"),
            "min_cams_per_id": (2, 9, "an identity seen by one camera cannot be matched"),
            "max_images_per_cam": (1, 999, "frame numbers must stay unique"),
            "jpeg_quality": (1, 95, "PIL advises against quality above 95"),
            "supersample": (1, 4, "anti-aliasing beyond 4x only costs time"),
        }
        for name, (lo, hi, why) in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"SyntheticConfig.{name} must be an int, got {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"SyntheticConfig.{name} must be in [{lo}, {hi}] ({why}), got {value}")
            object.__setattr__(self, name, int(value))  # NumPy ints would not serialise to JSON
        if self.min_cams_per_id > self.cams:
            raise ValueError(
                f"SyntheticConfig.min_cams_per_id={self.min_cams_per_id} exceeds cams={self.cams}"
            )
        for name, hi in (("near_duplicate_fraction", 1.0), ("camera_strength", 2.0)):
            value = getattr(self, name)
            is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            if not is_number or not 0.0 <= value <= hi:
                raise ValueError(f"SyntheticConfig.{name} must be a float in [0, {hi}], got {value!r}")
            object.__setattr__(self, name, float(value))

    @property
    def num_train_ids(self) -> int:
        return self.ids // 2

    @property
    def num_test_ids(self) -> int:
        return self.ids - self.ids // 2


#: The embedded default set: small enough for the main training job to run on 2 CPU cores.
DEFAULT_CONFIG = SyntheticConfig()


@dataclass(frozen=True)
class SyntheticSummary:
    """What was written where; ``to_dict`` is the content of ``summary.json`` (no paths, no times)."""

    root: str
    config: SyntheticConfig
    num_train_images: int
    num_train_ids: int
    num_query_images: int
    num_query_ids: int
    num_gallery_images: int
    num_gallery_ids: int
    num_distractors: int
    version: int = GENERATOR_VERSION

    def to_dict(self) -> dict:
        return {
            "generator": "ray_reid.data.synthetic",
            "version": self.version,
            "config": dataclasses.asdict(self.config),
            "cameras": self.config.cams,
            "ids": {"total": self.config.ids, "train": self.num_train_ids, "test": self.num_query_ids},
            "splits": {
                TRAIN_DIR: {"images": self.num_train_images, "ids": self.num_train_ids},
                QUERY_DIR: {"images": self.num_query_images, "ids": self.num_query_ids},
                GALLERY_DIR: {
                    "images": self.num_gallery_images,
                    "ids": self.num_gallery_ids,
                    "distractors": self.num_distractors,
                },
            },
        }


class _Shot(NamedTuple):
    """One image to draw: which split, whose, which camera (0-based), its index there."""

    split: str
    pid: int
    cam: int
    idx: int

    @property
    def filename(self) -> str:
        return f"{self.pid:04d}_c{self.cam + 1}s1_{self.idx + 1:06d}_01.jpg"


@dataclass(frozen=True)
class _Identity:
    """A person's looks; colours are RGB floats in 0..255, sizes relative to the camera's scale."""

    top: tuple[float, float, float]
    top_pattern: str
    top_second: tuple[float, float, float]
    pattern_period: float
    logo_shape: int
    bottom: tuple[float, float, float]
    bottom_kind: str
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    long_hair: bool
    shoes: tuple[float, float, float]
    height_scale: float
    width_scale: float
    backpack: tuple[float, float, float] | None
    bag: tuple[float, float, float] | None
    bag_side: int
    hat: tuple[float, float, float] | None


@dataclass(frozen=True)
class _Camera:
    """A camera's look: colour response, optics, framing, viewpoint habits and its scene."""

    gain: float
    cast: tuple[float, float, float]
    contrast: float
    blur: float
    noise: float
    scale: float
    view_probs: tuple[float, float, float]
    scene: np.ndarray  # float32 (h, w, 3) at canvas resolution, larger than one crop


# Clothing colours lean dark and neutral as real crowds do, which is what makes people hard
# to tell apart; the bright ones are rarer.
_CLOTHES = np.array(
    [
        (25, 25, 28), (45, 45, 50), (90, 90, 95), (150, 150, 150), (225, 225, 220),
        (30, 40, 80), (60, 85, 130), (120, 30, 35), (190, 40, 40), (40, 90, 50),
        (100, 105, 60), (185, 165, 125), (100, 70, 45), (210, 190, 60), (215, 130, 160),
        (100, 60, 130), (220, 120, 40), (130, 170, 210),
    ],
    dtype=np.float32,
)
_CLOTHES_WEIGHTS = np.array([4, 3, 2.5, 2.5, 2.5, 3, 3, 1.5, 1.5, 1.5, 1.5, 2, 2, 1.2, 1.2, 1.2, 1.2, 1.5])
_CLOTHES_WEIGHTS = _CLOTHES_WEIGHTS / _CLOTHES_WEIGHTS.sum()
_SKINS = np.array([(240, 200, 170), (215, 170, 130), (180, 130, 95), (135, 90, 60), (95, 65, 45)], np.float32)
_HAIRS = np.array([(20, 15, 12), (60, 40, 25), (110, 75, 40), (190, 160, 100), (140, 140, 140)], np.float32)
_HAIR_WEIGHTS = np.array([5, 3, 1.5, 1, 0.5]) / 11.0


def _rgb(value: np.ndarray) -> tuple[float, float, float]:
    v = np.clip(value, 0, 255)
    return (float(v[0]), float(v[1]), float(v[2]))


def _clothing_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    base = _CLOTHES[rng.choice(len(_CLOTHES), p=_CLOTHES_WEIGHTS)]
    return _rgb(base + rng.normal(0.0, 12.0, 3))


def _random_identity(rng: np.random.Generator) -> _Identity:
    """Draw a person from scratch."""
    top = _clothing_colour(rng)
    second = _clothing_colour(rng)
    return _Identity(
        top=top,
        top_pattern=str(rng.choice(TOP_PATTERNS, p=[0.45, 0.2, 0.15, 0.2])),
        top_second=second,
        pattern_period=float(rng.uniform(0.035, 0.07)),
        logo_shape=int(rng.integers(3)),
        bottom=_clothing_colour(rng),
        bottom_kind=str(rng.choice(BOTTOM_KINDS, p=[0.65, 0.2, 0.15])),
        skin=_rgb(_SKINS[rng.integers(len(_SKINS))] + rng.normal(0, 8, 3)),
        hair=_rgb(_HAIRS[rng.choice(len(_HAIRS), p=_HAIR_WEIGHTS)] + rng.normal(0, 6, 3)),
        long_hair=bool(rng.random() < 0.35),
        shoes=_clothing_colour(rng),
        height_scale=float(rng.uniform(0.86, 1.0)),
        width_scale=float(rng.uniform(0.8, 1.25)),
        backpack=_clothing_colour(rng) if rng.random() < 0.3 else None,
        bag=_clothing_colour(rng) if rng.random() < 0.2 else None,
        bag_side=int(rng.choice([-1, 1])),
        hat=_clothing_colour(rng) if rng.random() < 0.15 else None,
    )


def _near_duplicate(base: _Identity, rng: np.random.Generator) -> _Identity:
    """``base`` with exactly one detail changed: the hard negatives real crowds are full of."""
    detail = rng.integers(9)
    if detail == 0:
        return dataclasses.replace(base, top=_clothing_colour(rng))
    if detail == 1:
        others = [p for p in TOP_PATTERNS if p != base.top_pattern]
        return dataclasses.replace(base, top_pattern=str(rng.choice(others)))
    if detail == 2:
        return dataclasses.replace(base, bottom=_clothing_colour(rng))
    if detail == 3:
        others = [k for k in BOTTOM_KINDS if k != base.bottom_kind]
        return dataclasses.replace(base, bottom_kind=str(rng.choice(others)))
    if detail == 4:
        return dataclasses.replace(base, backpack=None if base.backpack else _clothing_colour(rng))
    if detail == 5:
        return dataclasses.replace(base, bag=None if base.bag else _clothing_colour(rng))
    if detail == 6:
        return dataclasses.replace(base, hat=None if base.hat else _clothing_colour(rng))
    if detail == 7:
        return dataclasses.replace(base, shoes=_clothing_colour(rng))
    return dataclasses.replace(base, long_hair=not base.long_hair)


def _identities(config: SyntheticConfig, pids: Sequence[int]) -> dict[int, _Identity]:
    """Looks of one split's identities; a share of them copy an earlier one but for one detail.

    Near-duplicates stay within a split so both training clusters and test rankings meet them.
    """
    out: dict[int, _Identity] = {}
    originals: list[int] = []
    for pid in pids:
        rng = np.random.default_rng([config.seed, _TAG_IDENTITY, pid])
        if originals and rng.random() < config.near_duplicate_fraction:
            base = out[originals[int(rng.integers(len(originals)))]]
            out[pid] = _near_duplicate(base, rng)
        else:
            out[pid] = _random_identity(rng)
            originals.append(pid)
    return out


def _canvas_size(config: SyntheticConfig) -> tuple[int, int]:
    return config.height * config.supersample, config.width * config.supersample


def _scene(rng: np.random.Generator, h: int, w: int, strength: float) -> np.ndarray:
    """A camera's fixed background: wall, floor, texture and clutter; crops are cut from it.

    Colours are a grey level plus a tint whose size follows ``strength``: street scenes are
    mostly paving and walls, and a rainbow of backgrounds would make cameras trivially apart.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def colour(lo: float, hi: float, tint: float) -> np.ndarray:
        return (rng.uniform(lo, hi) + strength * rng.normal(0.0, tint, 3)).astype(np.float32)

    wall = colour(90, 175, 15)
    floor = colour(80, 160, 12)
    horizon = rng.uniform(0.55, 0.85) * h
    img = np.empty((h, w, 3), np.float32)
    grad = (1.0 + rng.uniform(-0.35, 0.35) * (yy / h - 0.5))[..., None]
    img[:] = wall * grad
    img[yy >= horizon] = floor
    texture = rng.integers(3)
    if texture == 0:  # smooth blotches
        low = rng.normal(0.0, 17.0, (max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
        up = np.asarray(Image.fromarray(np.uint8(np.clip(low + 128, 0, 255))).resize((w, h), Image.BICUBIC))
        img += strength * (up.astype(np.float32) - 128.0)
    elif texture == 1:  # vertical poles / panels
        period = rng.uniform(0.08, 0.3) * w
        img[(xx % period) < period * rng.uniform(0.1, 0.4)] *= rng.uniform(0.55, 0.85)
    else:  # tiles
        period = rng.uniform(0.06, 0.15) * h
        lines = ((yy % period) < 1.5) | ((xx % period) < 1.5)
        img[lines & (yy >= horizon * 0.5)] *= rng.uniform(0.6, 0.85)
    for _ in range(int(rng.integers(2, 6))):  # clutter: boxes, signs, parked things
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        bh, bw = rng.uniform(0.05, 0.3) * h, rng.uniform(0.05, 0.25) * w
        img[(yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw)] = colour(50, 200, 24)
    return np.clip(img, 0, 255)


def _camera(config: SyntheticConfig, cam: int) -> _Camera:
    """Draw one camera; the spread of these values is what makes raw pixels cluster by camera.

    Every photometric deviation from a neutral camera (gain, colour cast, contrast, blur,
    extra noise, background tint and texture) is scaled by ``camera_strength``: 0 leaves
    only the scene layout, framing and viewpoint habits to tell cameras apart, 1 is the
    calibrated default (raw-pixel rank-1 about 20% on DEFAULT_CONFIG), 2 is harsher.
    """
    rng = np.random.default_rng([config.seed, _TAG_CAMERA, cam])
    s = config.camera_strength
    ch, cw = _canvas_size(config)
    probs = 0.15 / 3 + 0.85 * rng.dirichlet([0.8, 0.8, 0.8])
    return _Camera(
        gain=float(1.0 + s * rng.uniform(-0.2, 0.18)),
        cast=_rgb(1.0 + s * rng.uniform(-0.12, 0.12, 3)),
        contrast=float(1.0 + s * rng.uniform(-0.2, 0.06)),
        blur=float(s * rng.uniform(0.0, 0.7)) * config.height / 64.0,
        noise=float(2.0 + s * rng.uniform(0.0, 4.0)),
        scale=float(rng.uniform(0.8, 0.96)),
        view_probs=(float(probs[0]), float(probs[1]), float(1.0 - probs[0] - probs[1])),
        scene=_scene(rng, int(ch * 1.5), int(cw * 3), s),
    )


class _Painter:
    """Masks over one canvas in canvas pixel coordinates; paint order is occlusion order."""

    def __init__(self, img: np.ndarray) -> None:
        self.img = img
        h, w = img.shape[:2]
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5

    def rect(self, y0: float, y1: float, x0: float, x1: float) -> np.ndarray:
        return (self.yy >= y0) & (self.yy < y1) & (self.xx >= x0) & (self.xx < x1)

    def ellipse(self, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
        return ((self.yy - cy) / ry) ** 2 + ((self.xx - cx) / rx) ** 2 <= 1.0

    def limb(self, y0: float, y1: float, x_top: float, x_bottom: float, half: float) -> np.ndarray:
        """A vertical band of half-width ``half`` whose centre runs from x_top to x_bottom."""
        t = np.clip((self.yy - y0) / max(y1 - y0, 1e-6), 0.0, 1.0)
        centre = x_top + (x_bottom - x_top) * t
        return (self.yy >= y0) & (self.yy < y1) & (np.abs(self.xx - centre) <= half)

    def trapezoid(self, y0: float, y1: float, cx: float, half_top: float, half_bottom: float) -> np.ndarray:
        t = np.clip((self.yy - y0) / max(y1 - y0, 1e-6), 0.0, 1.0)
        half = half_top + (half_bottom - half_top) * t
        return (self.yy >= y0) & (self.yy < y1) & (np.abs(self.xx - cx) <= half)

    def paint(self, mask: np.ndarray, rgb: Sequence[float]) -> None:
        self.img[mask] = rgb


def _draw_person(p: _Painter, who: _Identity, view: str, top: float, cx: float, hp: float,
                 phase: float, facing: int) -> None:
    """Draw ``who`` of height ``hp`` with head at ``top``, centred at ``cx``, seen from ``view``.

    What is visible depends on the view as in real footage: a backpack is a big block from
    behind, a thin profile from the side and two straps from the front; a logo shows only
    from the front; a side view is narrower and shows the walking stride.
    """
    def y(t: float) -> float:  # fraction of body height -> canvas row
        return top + t * hp

    side = view == "side"
    bw = 0.25 * hp * who.width_scale * (0.62 if side else 1.0)
    half = bw / 2

    # Things behind the body come first.
    if who.long_hair and view != "back":
        p.paint(p.rect(y(0.04), y(0.24), cx - 0.055 * hp, cx + 0.055 * hp), who.hair)
    if who.backpack is not None and side:
        xa, xb = cx - facing * (half * 0.8), cx - facing * (half + 0.09 * hp)
        p.paint(p.rect(y(0.16), y(0.44), min(xa, xb), max(xa, xb)), who.backpack)

    # Legs, bottoms and shoes.
    stride = phase * (0.09 if side else 0.025) * hp
    leg_half = 0.23 * bw if not side else 0.3 * bw
    hips = [cx - 0.25 * bw, cx + 0.25 * bw] if not side else [cx, cx]
    feet = [hips[0] - stride, hips[1] + stride]
    bottom_end = {"trousers": 0.93, "shorts": 0.68, "skirt": 0.52}[who.bottom_kind]
    for hx, fx in zip(hips, feet):
        p.paint(p.limb(y(0.5), y(0.94), hx, fx, leg_half), who.skin)
        t_end = bottom_end
        x_end = hx + (fx - hx) * (t_end - 0.5) / 0.44
        p.paint(p.limb(y(0.5), y(t_end), hx, x_end, leg_half * 1.08), who.bottom)
        toe = facing * leg_half * 0.5 if side else 0.0  # shoes point the way the person walks
        p.paint(p.rect(y(0.93), y(1.0), fx - leg_half * 1.2 + toe, fx + leg_half * 1.2 + toe), who.shoes)
    if who.bottom_kind == "skirt":
        p.paint(p.trapezoid(y(0.48), y(0.72), cx, half * 0.9, half * 1.35), who.bottom)

    # Torso with its pattern.
    torso = p.trapezoid(y(0.14), y(0.52), cx, half, half * 0.88)
    p.paint(torso, who.top)
    period = max(who.pattern_period * hp, 2.0)
    if who.top_pattern in ("stripes", "checks"):
        bands = ((p.yy - y(0.14)) % period) < period / 2
        if who.top_pattern == "checks":
            bands ^= ((p.xx - cx) % period) < period / 2
        p.paint(torso & bands, who.top_second)
    elif who.top_pattern == "logo" and view == "front":
        size = 0.06 * hp
        cy = y(0.29)
        if who.logo_shape == 0:
            mark = p.ellipse(cy, cx, size, size)
        elif who.logo_shape == 1:
            mark = p.rect(cy - size, cy + size, cx - size, cx + size)
        else:
            mark = p.trapezoid(cy - size, cy + size, cx, 0.0, size * 1.2)
        p.paint(mark, who.top_second)

    # Arms: sleeves in the top colour, hands in skin; one swinging arm from the side.
    arm_half = 0.05 * hp
    if side:
        swing = -phase * 0.07 * hp
        p.paint(p.limb(y(0.15), y(0.47), cx, cx + swing, arm_half), who.top)
        p.paint(p.limb(y(0.43), y(0.5), cx + swing * 0.85, cx + swing, arm_half * 0.9), who.skin)
    else:
        for sgn in (-1, 1):
            ax = cx + sgn * (half + arm_half * 0.8)
            p.paint(p.limb(y(0.15), y(0.44), ax, ax + sgn * 0.01 * hp, arm_half), who.top)
            p.paint(p.limb(y(0.44), y(0.5), ax + sgn * 0.01 * hp, ax + sgn * 0.012 * hp, arm_half * 0.85), who.skin)

    # Head, hair, hat.
    hcy, hry, hrx = y(0.075), 0.068 * hp, 0.048 * hp * (1.08 if side else 1.0)
    head = p.ellipse(hcy, cx, hry, hrx)
    p.paint(head, who.skin)
    if view == "back":
        p.paint(head, who.hair)
        if who.long_hair:
            p.paint(p.rect(hcy, y(0.26), cx - hrx, cx + hrx), who.hair)
    elif view == "side":
        p.paint(head & ((p.yy < hcy - 0.2 * hry) | (facing * (p.xx - cx) < -0.2 * hrx)), who.hair)
        if who.long_hair:
            x0 = cx - facing * hrx
            p.paint(p.rect(hcy, y(0.24), min(x0, cx), max(x0, cx)), who.hair)
    else:
        p.paint(head & (p.yy < hcy - 0.25 * hry), who.hair)
    if who.hat is not None:
        p.paint(p.rect(y(0.0), hcy - 0.3 * hry, cx - hrx * 1.05, cx + hrx * 1.05), who.hat)
        brim = (cx - hrx * 1.3, cx + hrx * 1.3) if not side else (
            (cx, cx + facing * hrx * 1.6) if facing > 0 else (cx + facing * hrx * 1.6, cx))
        p.paint(p.rect(hcy - 0.35 * hry, hcy - 0.22 * hry, brim[0], brim[1]), who.hat)

    # Things in front: backpack from behind, straps from the front, the bag on its side.
    if who.backpack is not None:
        if view == "back":
            p.paint(p.rect(y(0.17), y(0.45), cx - half * 0.78, cx + half * 0.78), who.backpack)
        elif view == "front":
            for sgn in (-1, 1):
                sx = cx + sgn * half * 0.6
                p.paint(p.rect(y(0.14), y(0.34), sx - 0.012 * hp, sx + 0.012 * hp), who.backpack)
    if who.bag is not None:
        # Seen from behind the person's right is on the viewer's other side; from the side the
        # bag shows only when carried on the near side.
        if view == "side":
            if who.bag_side == facing:
                p.paint(p.rect(y(0.42), y(0.56), cx - 0.05 * hp, cx + 0.05 * hp), who.bag)
        else:
            sgn = who.bag_side if view == "front" else -who.bag_side
            bx = cx + sgn * (half + 0.07 * hp)
            p.paint(p.rect(y(0.41), y(0.55), bx - 0.045 * hp, bx + 0.045 * hp), who.bag)


def _render(shot: _Shot, who: _Identity, camera: _Camera, config: SyntheticConfig) -> Image.Image:
    """One crop of ``who`` through ``camera``, with per-image framing, pose, occlusion and noise."""
    rng = np.random.default_rng([config.seed, _TAG_IMAGE, shot.pid, shot.cam, shot.idx])
    ch, cw = _canvas_size(config)
    sh, sw = camera.scene.shape[:2]
    oy, ox = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    img = camera.scene[oy:oy + ch, ox:ox + cw].copy()
    painter = _Painter(img)

    view = str(rng.choice(VIEWS, p=camera.view_probs))
    hp = ch * camera.scale * who.height_scale * rng.uniform(0.93, 1.05)
    top = (ch - hp) * rng.uniform(0.25, 0.95) if hp < ch else 0.0
    cx = cw / 2 + rng.normal(0.0, 0.06) * cw
    _draw_person(painter, who, view, top, cx, hp, phase=float(rng.uniform(-1, 1)),
                 facing=int(rng.choice([-1, 1])))

    if rng.random() < 0.12:  # partial occlusion: a pole, a passer-by, something in front
        colour = rng.uniform(20, 235, 3)
        if rng.random() < 0.5:
            x0 = rng.uniform(-0.1, 0.9) * cw
            painter.paint(painter.rect(0, ch, x0, x0 + rng.uniform(0.12, 0.3) * cw), colour)
        else:
            painter.paint(painter.rect(ch * rng.uniform(0.7, 0.9), ch, 0, cw), colour)

    gain = camera.gain * rng.uniform(0.9, 1.1)
    img = (img - 128.0) * camera.contrast + 128.0
    img *= gain * np.asarray(camera.cast, np.float32)
    small = Image.fromarray(np.uint8(np.clip(img, 0, 255) + 0.5)).resize((config.width, config.height), Image.BOX)
    blur = camera.blur * rng.uniform(0.8, 1.2)
    if blur > 0.05:
        small = small.filter(ImageFilter.GaussianBlur(radius=blur))
    arr = np.asarray(small, np.float32) + rng.normal(0.0, camera.noise, (config.height, config.width, 3))
    return Image.fromarray(np.uint8(np.clip(arr, 0, 255) + 0.5))


def _split_pids(config: SyntheticConfig) -> tuple[list[int], list[int]]:
    """Disjoint train and test pids (1-based), interleaved as in Market rather than in two runs."""
    perm = np.random.default_rng([config.seed, _TAG_SPLIT]).permutation(config.ids) + 1
    n_train = config.num_train_ids
    return sorted(int(p) for p in perm[:n_train]), sorted(int(p) for p in perm[n_train:])


def _plan(config: SyntheticConfig) -> list[_Shot]:
    """Every image to draw, in file order.

    Each identity picks a random camera subset and an uneven number of images per camera.
    Test identities put their first image per camera in ``query`` and the rest in the
    gallery; two of their cameras hold at least two images, so whichever camera a query
    comes from, another camera still has a gallery image of the same person.
    """
    train, test = _split_pids(config)
    shots: list[_Shot] = []
    for split_pids, is_test in ((train, False), (test, True)):
        for pid in split_pids:
            rng = np.random.default_rng([config.seed, _TAG_LAYOUT, pid])
            n_cams = int(rng.integers(config.min_cams_per_id, config.cams + 1))
            cams = np.sort(rng.choice(config.cams, size=n_cams, replace=False))
            # Fewer images per camera are likelier than many, as in Market's long tail.
            sizes = np.arange(1, config.max_images_per_cam + 1)
            weights = (config.max_images_per_cam + 3 - sizes) / (config.max_images_per_cam + 3 - sizes).sum()
            counts = rng.choice(sizes, size=n_cams, p=weights)
            if is_test:
                for i in np.argsort(-counts, kind="stable")[:2]:
                    counts[i] = max(counts[i], 2)
            for cam, count in zip(cams.tolist(), counts.tolist()):
                for idx in range(count):
                    split = TRAIN_DIR if not is_test else (QUERY_DIR if idx == 0 else GALLERY_DIR)
                    shots.append(_Shot(split, pid, cam, idx))
    for d in range(config.distractors):
        cam = int(np.random.default_rng([config.seed, _TAG_DISTRACTOR_LAYOUT, d]).integers(config.cams))
        shots.append(_Shot(GALLERY_DIR, DISTRACTOR_PID, cam, d))
    return shots


def _summarise(root: Path, config: SyntheticConfig, shots: Sequence[_Shot]) -> SyntheticSummary:
    def of(split: str) -> list[_Shot]:
        return [s for s in shots if s.split == split]

    gallery = of(GALLERY_DIR)
    return SyntheticSummary(
        root=str(root),
        config=config,
        num_train_images=len(of(TRAIN_DIR)),
        num_train_ids=len({s.pid for s in of(TRAIN_DIR)}),
        num_query_images=len(of(QUERY_DIR)),
        num_query_ids=len({s.pid for s in of(QUERY_DIR)}),
        num_gallery_images=len(gallery),
        num_gallery_ids=len({s.pid for s in gallery if s.pid != DISTRACTOR_PID}),
        num_distractors=sum(s.pid == DISTRACTOR_PID for s in gallery),
    )


def _write_into(tmp: Path, config: SyntheticConfig, shots: Sequence[_Shot], progress: bool) -> None:
    for name in SPLIT_DIRS:
        (tmp / name).mkdir()
    cameras = [_camera(config, c) for c in range(config.cams)]
    train, test = _split_pids(config)
    people = {**_identities(config, train), **_identities(config, test)}
    for shot in tqdm(shots, desc="synthetic re-ID", unit="img", disable=not progress):
        if shot.pid == DISTRACTOR_PID:
            who = _random_identity(np.random.default_rng([config.seed, _TAG_DISTRACTOR_IDENTITY, shot.idx]))
        else:
            who = people[shot.pid]
        image = _render(shot, who, cameras[shot.cam], config)
        # No EXIF, no optimiser passes: fixed quality and subsampling keep the bytes a function of the pixels.
        image.save(tmp / shot.split / shot.filename, format="JPEG", quality=config.jpeg_quality, subsampling=0)


def generate_dataset(out_dir: str | os.PathLike, config: SyntheticConfig = DEFAULT_CONFIG, *,
                     overwrite: bool = False, progress: bool = True) -> SyntheticSummary:
    """Draw the dataset described by ``config`` into ``out_dir`` (Market-1501 layout).

    The set is drawn into a sibling temporary folder and renamed into place, so a crash
    or interrupt never leaves a half-written dataset where a reader would take it for a
    whole one. An existing non-empty ``out_dir`` is refused unless ``overwrite``.
    """
    if not isinstance(config, SyntheticConfig):
        raise TypeError(f"config must be a SyntheticConfig, got {type(config).__name__}")
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"output directory {out} is not empty; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)

    shots = _plan(config)
    summary = _summarise(out, config, shots)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    try:
        _write_into(tmp, config, shots, progress)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0o700; a dataset is meant to be shared
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
            os.rename(out, old / out.name)
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %d images to %s", len(shots), out)
    return summary


def _parser() -> argparse.ArgumentParser:
    d = DEFAULT_CONFIG
    ap = argparse.ArgumentParser(
        prog="python -m ray_reid.data.synthetic",
        description="Write a synthetic person re-ID dataset in the Market-1501 layout.",
    )
    ap.add_argument("--out", required=True, help="output directory (created; refused if non-empty)")
    ap.add_argument("--ids", type=int, default=d.ids, help="identities in total, half train / half test")
    ap.add_argument("--cams", type=int, default=d.cams, help="number of cameras (2..9)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--height", type=int, default=d.height, help="image height in pixels")
    ap.add_argument("--width", type=int, default=d.width, help="image width in pixels")
    ap.add_argument("--distractors", type=int, default=d.distractors, help="gallery images of pid 0000")
    ap.add_argument("--min-cams-per-id", type=int, default=d.min_cams_per_id)
    ap.add_argument("--max-images-per-cam", type=int, default=d.max_images_per_cam)
    ap.add_argument("--near-duplicate-fraction", type=float, default=d.near_duplicate_fraction)
    ap.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality)
    ap.add_argument("--supersample", type=int, default=d.supersample, help="draw at this factor, then downsample")
    ap.add_argument("--camera-strength", type=float, default=d.camera_strength,
                    help="how far cameras differ (0 identical .. 2 harsh; 1 calibrated default)")
    ap.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    fields = {f.name for f in dataclasses.fields(SyntheticConfig)}
    try:
        config = SyntheticConfig(**{k: v for k, v in vars(args).items() if k in fields})
        summary = generate_dataset(args.out, config, overwrite=args.overwrite, progress=not args.quiet)
    except (ValueError, FileExistsError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = summary
    print(
        f"{s.root}: train {s.num_train_images} imgs / {s.num_train_ids} ids, "
        f"query {s.num_query_images} / {s.num_query_ids}, gallery {s.num_gallery_images} "
        f"({s.num_gallery_ids} ids + {s.num_distractors} distractors), {s.config.cams} cameras"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
