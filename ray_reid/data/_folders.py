"""Rules shared by every reader: which files are images, where the dataset root is,
how Market-style file names parse, range checks and train relabelling.

Kept in one place so Market, Duke, CUHK03-NP, MSMT17 and the synthetic set cannot drift
apart on what counts as junk or how cameras are numbered.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

from ray_reid.data.records import ImageRecord

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
MARKET_PATTERN_HELP = "<pid>_c<camera>... e.g. 0001_c1s1_000151_01.jpg (pid -1 = junk, 0 = distractor)"
JUNK_PID = -1

# (folder name in the tree, split name in ReidDataset)
MARKET_SPLITS: tuple[tuple[str, str], ...] = (
    ("bounding_box_train", "train"),
    ("query", "query"),
    ("bounding_box_test", "gallery"),
)


def is_image_file(name: str) -> bool:
    """Image by extension (case-insensitive); hidden files (``.DS_Store``, macOS ``._x.jpg``) never are."""
    if name.startswith("."):
        return False
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def existing_root(root: str | os.PathLike[str]) -> str:
    """Absolute form of ``root``; FileNotFoundError when it is not a folder."""
    path = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"dataset root {path} does not exist or is not a folder")
    return path


def detect_root(
    root: str | os.PathLike[str], *, markers: Sequence[str], canonical: Sequence[str], dataset: str
) -> str:
    """The folder holding the dataset: ``root`` itself when it contains any of ``markers``,
    else the first of its ``canonical`` subfolders (the name the archive unpacks to) that
    contains one. Lets users point at either the dataset or the folder they unpacked it in.
    """
    base = existing_root(root)
    for candidate in (base, *(os.path.join(base, sub) for sub in canonical)):
        if any(os.path.exists(os.path.join(candidate, m)) for m in markers):
            return candidate
    expected = [os.path.join(base, markers[0])]
    expected += [os.path.join(base, sub, markers[0]) for sub in canonical]
    raise FileNotFoundError(f"no {dataset} data under {base}: expected folder {' or '.join(expected)}")


def require_folder(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"missing {what} folder {path}")
    return path


def check_ids(pid: int, cam: int, *, num_cams: int | None, source: str) -> None:
    """Range checks on a parsed (pid, 1-based camera); ``source`` names the file (and line)."""
    if pid < JUNK_PID:
        raise ValueError(f"{source}: pid {pid} is out of range (must be >= -1; -1 marks junk)")
    if cam < 1 or (num_cams is not None and cam > num_cams):
        upper = str(num_cams) if num_cams is not None else "any"
        raise ValueError(f"{source}: camera {cam} is out of range 1..{upper} (1-based in file names)")


def parse_market_name(path: str, *, num_cams: int | None) -> tuple[int, int]:
    """(pid, 0-based camid) from a Market-style file name."""
    name = os.path.basename(path)
    match = MARKET_NAME.match(name)
    if match is None:
        raise ValueError(f"image name {path} does not match the expected pattern {MARKET_PATTERN_HELP}")
    pid, cam = int(match.group(1)), int(match.group(2))
    check_ids(pid, cam, num_cams=num_cams, source=path)
    return pid, cam - 1


def read_market_folder(folder: str, *, num_cams: int | None) -> list[ImageRecord]:
    """Records of one Market-style split folder, junk dropped, sorted by path.

    Raises ValueError when the folder holds no usable image: an empty split is always a
    broken download or a wrong path, never something to train or evaluate on.
    """
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if e.is_file() and is_image_file(e.name))
    if not names:
        raise ValueError(
            f"split folder {folder} contains no images (accepted extensions: {sorted(IMAGE_EXTENSIONS)})"
        )
    records = []
    for name in names:
        path = os.path.join(folder, name)
        pid, camid = parse_market_name(path, num_cams=num_cams)
        if pid != JUNK_PID:
            records.append(ImageRecord(path, pid, camid))
    if not records:
        raise ValueError(f"split folder {folder} contains only junk images (pid -1)")
    return records


def relabel(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    """Train ids mapped to 0..n-1 in sorted order of the original id (classifier-ready)."""
    records = list(records)
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [r._replace(pid=mapping[r.pid]) for r in records]


def sort_records(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    """Sorted by path so that every machine sees the same order (sharding depends on it)."""
    return sorted(records, key=lambda r: r.path)
