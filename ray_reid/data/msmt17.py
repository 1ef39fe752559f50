"""MSMT17: splits come from list files, not from folders.

``train/`` and ``test/`` (``mask_train_v2/``/``mask_test_v2/`` in V2) hold the images;
``list_{train,val,query,gallery}.txt`` hold ``<relpath> <pid>`` lines with ``relpath``
relative to the train or test folder. The camera is the third ``_`` field of the file
name (``0000_000_01_0303morning_0015_0.jpg`` -> camera 01 -> camid 0). ``list_val.txt``
(optional) is merged into train, as the 32,621-image train figure everyone reports does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ray_reid.data._folders import (
    JUNK_PID,
    check_ids,
    detect_root,
    is_image_file,
    relabel,
    require_folder,
    sort_records,
)
from ray_reid.data.records import ImageRecord, ReidDataset
from ray_reid.data.registry import register_dataset

NUM_CAMS = 15
CANONICAL = ("MSMT17_V1", "MSMT17_V2", "MSMT17")
TRAIN_DIRS = ("train", "mask_train_v2")
TEST_DIRS = ("test", "mask_test_v2")
LINE_HELP = "'<relpath> <pid>', e.g. '0000/0000_000_01_0303morning_0015_0.jpg 0'"


def _pick_dir(base: str, names: tuple[str, ...], what: str) -> str:
    for name in names:
        if os.path.isdir(os.path.join(base, name)):
            return os.path.join(base, name)
    return require_folder(os.path.join(base, names[0]), what)


class _Listing:
    """Directory listings cached per folder: one ``scandir`` per identity folder instead
    of one ``stat`` per listed file (126k on MSMT17), which matters on network storage."""

    def __init__(self) -> None:
        self._files: dict[str, frozenset[str]] = {}

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(path)
        if folder not in self._files:
            try:
                with os.scandir(folder) as entries:
                    self._files[folder] = frozenset(e.name for e in entries if e.is_file())
            except (FileNotFoundError, NotADirectoryError):
                self._files[folder] = frozenset()
        return name in self._files[folder]


def _parse_line(line: str, source: str) -> tuple[str, int, int]:
    """(relpath, pid, 1-based camera) of one list line; ``source`` is 'file:line'."""
    parts = line.split()
    if len(parts) != 2:
        raise ValueError(f"{source}: cannot parse {line.strip()!r}; expected {LINE_HELP}")
    relpath, pid_text = parts
    try:
        pid = int(pid_text)
    except ValueError:
        raise ValueError(f"{source}: pid {pid_text!r} is not an integer; expected {LINE_HELP}") from None
    if os.path.isabs(relpath) or ".." in relpath.replace("\\", "/").split("/"):
        raise ValueError(f"{source}: path {relpath!r} must be relative to the image folder, without '..'")
    name = relpath.rsplit("/", 1)[-1]
    if not is_image_file(name):
        raise ValueError(f"{source}: {relpath!r} is not an image file name")
    fields = name.split("_")
    if len(fields) < 3 or not fields[2].isdigit():
        raise ValueError(
            f"{source}: cannot read the camera from {name!r}; expected <pid>_<idx>_<camera>_..., "
            "e.g. 0000_000_01_0303morning_0015_0.jpg"
        )
    return relpath, pid, int(fields[2])


def read_list(list_path: str, image_dir: str, listing: _Listing | None = None) -> list[ImageRecord]:
    """Records of one list file; every problem is reported with the list file and line number."""
    listing = listing or _Listing()
    records: list[ImageRecord] = []
    seen: dict[str, int] = {}
    with open(list_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            source = f"{list_path}:{lineno}"
            relpath, pid, cam = _parse_line(line, source)
            check_ids(pid, cam, num_cams=NUM_CAMS, source=source)
            path = os.path.join(image_dir, *relpath.split("/"))
            if path in seen:
                raise ValueError(f"{source}: {relpath!r} is listed twice (first at line {seen[path]})")
            seen[path] = lineno
            if not listing.exists(path):
                raise FileNotFoundError(f"{source}: listed image {path} does not exist")
            if pid != JUNK_PID:
                records.append(ImageRecord(path, pid, cam - 1))
    if not records:
        raise ValueError(f"list file {list_path} lists no usable images")
    return records


def _merge(parts: Iterable[list[ImageRecord]], sources: list[str]) -> list[ImageRecord]:
    merged: dict[str, tuple[ImageRecord, str]] = {}
    for records, source in zip(parts, sources, strict=True):
        for r in records:
            if r.path in merged:
                raise ValueError(f"{r.path} is listed in both {merged[r.path][1]} and {source}")
            merged[r.path] = (r, source)
    return [r for r, _ in merged.values()]


@register_dataset("msmt17")
def msmt17(root: str | os.PathLike[str], merge_val: bool = True) -> ReidDataset:
    """MSMT17 (V1 or V2 layout). ``merge_val=False`` trains on ``list_train.txt`` only."""
    base = detect_root(
        root, markers=("list_train.txt", *TRAIN_DIRS), canonical=CANONICAL, dataset="msmt17"
    )
    train_dir = _pick_dir(base, TRAIN_DIRS, "msmt17 train image")
    test_dir = _pick_dir(base, TEST_DIRS, "msmt17 test image")
    listing = _Listing()

    def list_file(name: str) -> str:
        path = os.path.join(base, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"missing msmt17 list file {path}")
        return path

    train_lists = [list_file("list_train.txt")]
    val_path = os.path.join(base, "list_val.txt")
    if merge_val and os.path.isfile(val_path):
        train_lists.append(val_path)
    train = _merge((read_list(p, train_dir, listing) for p in train_lists), train_lists)
    query = read_list(list_file("list_query.txt"), test_dir, listing)
    gallery = read_list(list_file("list_gallery.txt"), test_dir, listing)
    return ReidDataset(
        name="msmt17",
        root=base,
        train=relabel(sort_records(train)),
        query=sort_records(query),
        gallery=sort_records(gallery),
    )
