"""Tiny real dataset trees on disk (8x4 JPEG/PNG files), one builder per layout."""

from __future__ import annotations

import pathlib
import types
import zlib

import pytest
from PIL import Image

MARKET_TRAIN = [
    "0002_c1s1_000451_03.jpg",
    "0002_c2s1_000301_01.jpg",
    "0007_c3s3_077419_02.jpg",
    "0007_c6s4_002202_01.JPG",  # upper-case extension is still an image
    "0015_c5s1_013152_01.jpg",
]
MARKET_QUERY = ["0001_c1s1_001051_00.jpg", "0003_c4s6_015641_00.jpg"]
MARKET_GALLERY = [
    "-1_c1s1_000401_03.jpg",  # junk: dropped
    "0000_c1s1_000151_01.jpg",  # distractor: kept
    "0001_c2s1_000301_02.jpg",
    "0003_c6s2_000976_01.jpg",
    "0003_c1s2_000976_01.png",
]
STRAY_FILES = ["Thumbs.db", ".DS_Store", "readme.txt"]


def write_image(path: pathlib.Path, size: tuple[int, int] = (4, 8)) -> pathlib.Path:
    """A small real image whose pixels depend on the name, so contents (and hashes) differ."""
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = zlib.crc32(path.name.encode())
    colour = (seed & 255, (seed >> 8) & 255, (seed >> 16) & 255)
    fmt = {".png": "PNG", ".bmp": "BMP"}.get(path.suffix.lower(), "JPEG")
    Image.new("RGB", size, colour).save(path, format=fmt)
    return path


def write_split(folder: pathlib.Path, names: list[str], strays: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_image(folder / name)
    if strays:
        for name in STRAY_FILES:
            (folder / name).write_bytes(b"not an image")


def make_market_tree(
    root: pathlib.Path,
    train: list[str] = MARKET_TRAIN,
    query: list[str] = MARKET_QUERY,
    gallery: list[str] = MARKET_GALLERY,
) -> pathlib.Path:
    write_split(root / "bounding_box_train", train)
    write_split(root / "query", query, strays=False)
    write_split(root / "bounding_box_test", gallery)
    return root


@pytest.fixture
def market_root(tmp_path: pathlib.Path) -> pathlib.Path:
    return make_market_tree(tmp_path / "market")


MSMT_TRAIN = [
    ("0000/0000_000_01_0303morning_0015_0.jpg", 0),
    ("0000/0000_001_05_0303morning_0016_1.jpg", 0),
    ("0001/0001_000_15_0303noon_0100_0.jpg", 1),
]
MSMT_VAL = [("0002/0002_000_03_0303afternoon_0200_0.jpg", 2)]
MSMT_QUERY = [("0000/0000_000_02_0303morning_0300_0.jpg", 0), ("0005/0005_000_07_0303noon_0400_0.jpg", 5)]
MSMT_GALLERY = [
    ("0000/0000_003_04_0303morning_0500_1.jpg", 0),
    ("0005/0005_001_11_0303noon_0600_0.jpg", 5),
    ("0009/0009_000_09_0303noon_0700_0.jpg", 9),
]


def write_list(path: pathlib.Path, entries: list[tuple[str, int]], extra_lines: tuple[str, ...] = ()) -> None:
    lines = [f"{rel} {pid}" for rel, pid in entries] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")


def make_msmt_tree(root: pathlib.Path, *, val: bool = True, test_dir: str = "test") -> pathlib.Path:
    for rel, _ in MSMT_TRAIN + (MSMT_VAL if val else []):
        write_image(root / "train" / rel)
    for rel, _ in MSMT_QUERY + MSMT_GALLERY:
        write_image(root / test_dir / rel)
    write_list(root / "list_train.txt", MSMT_TRAIN)
    if val:
        write_list(root / "list_val.txt", MSMT_VAL)
    write_list(root / "list_query.txt", MSMT_QUERY)
    write_list(root / "list_gallery.txt", MSMT_GALLERY)
    return root


@pytest.fixture
def msmt_root(tmp_path: pathlib.Path) -> pathlib.Path:
    return make_msmt_tree(tmp_path / "MSMT17_V1")


CUHK_TRAIN = ["0003_c1_21.png", "0003_c2_22.png", "0010_c1_01.png"]
CUHK_QUERY = ["1367_c1_01.png"]
CUHK_GALLERY = ["1367_c2_02.png", "1370_c2_05.png"]


def make_cuhk_tree(root: pathlib.Path) -> pathlib.Path:
    """Both subsets; the labeled one has one extra train image so the two are told apart."""
    for subset, extra in (("detected", []), ("labeled", ["0011_c2_03.png"])):
        make_market_tree(root / "cuhk03-np" / subset, CUHK_TRAIN + extra, CUHK_QUERY, CUHK_GALLERY)
    return root


@pytest.fixture
def trees() -> types.SimpleNamespace:
    """The builders and expected file lists above, for tests (test modules cannot import
    a conftest reliably: ``tests/`` is not a package)."""
    public = {k: v for k, v in globals().items() if k.isupper() or k.startswith(("make_", "write_"))}
    return types.SimpleNamespace(**public)
