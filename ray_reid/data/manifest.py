"""Parquet manifests: a dataset's records plus image sizes and content hashes, in one file.

A manifest lets a cluster job skip walking 100k files on shared storage, lets data move
(paths are stored relative to the dataset root, so a local cache of an S3 prefix still
resolves), and makes silent corruption detectable (``verify_manifest``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pathlib
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ray_reid.data.records import ImageRecord, ReidDataset
from ray_reid.validation import check_count

log = logging.getLogger(__name__)

SPLITS = ("train", "query", "gallery")
MANIFEST_VERSION = "1"
_META_NAME = b"ray_reid.dataset"
_META_ROOT = b"ray_reid.root"
_META_VERSION = b"ray_reid.manifest_version"

SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("pid", pa.int64()),
        ("camid", pa.int64()),
        ("split", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)

T = TypeVar("T")
U = TypeVar("U")


def _image_facts(path: str) -> tuple[int, int, str]:
    """(width, height, sha256) reading the file once; PIL parses only the header."""
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not a readable image") from None
    return width, height, digest


def _parallel_map(
    fn: Callable[[T], U], items: Sequence[T], *, workers: int, desc: str, progress: bool
) -> list[U]:
    """``fn`` over ``items`` on a thread pool (hashing is I/O and hashlib releases the GIL), in order."""
    check_count("workers", workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = tqdm(pool.map(fn, items), total=len(items), desc=desc, unit="img", disable=not progress)
        return list(results)


def _relative(path: str, root: str) -> str:
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel == os.curdir or rel.split(os.sep)[0] == os.pardir or os.path.isabs(rel):
        raise ValueError(f"record path {path} is not inside the dataset root {root}")
    return pathlib.PurePath(rel).as_posix()


def _atomic_write_table(table: pa.Table, path: pathlib.Path) -> None:
    """Write next to ``path`` then ``os.replace``: readers never see half a manifest, and a
    failed write leaves the previous manifest as it was."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_manifest(
    dataset: ReidDataset, path: str | os.PathLike[str], *, workers: int = 8, progress: bool = True
) -> pathlib.Path:
    """Write ``dataset`` as a Parquet manifest at ``path`` (parent folders created); returns the path.

    Every image is read to hash it, so a missing file raises FileNotFoundError and a file
    that is not an image raises ValueError before anything is written.
    """
    root = os.path.abspath(dataset.root)
    rows: list[tuple[str, ImageRecord]] = [(s, r) for s in SPLITS for r in getattr(dataset, s)]
    rel_paths = [_relative(r.path, root) for _, r in rows]
    facts = _parallel_map(
        _image_facts,
        [r.path for _, r in rows],
        workers=workers,
        desc=f"manifest {dataset.name}",
        progress=progress,
    )
    table = pa.table(
        {
            "path": rel_paths,
            "pid": [r.pid for _, r in rows],
            "camid": [r.camid for _, r in rows],
            "split": [s for s, _ in rows],
            "width": [w for w, _, _ in facts],
            "height": [h for _, h, _ in facts],
            "sha256": [d for _, _, d in facts],
        },
        schema=SCHEMA.with_metadata(
            {
                _META_NAME: dataset.name.encode(),
                _META_ROOT: root.encode(),
                _META_VERSION: MANIFEST_VERSION.encode(),
            }
        ),
    )
    out = pathlib.Path(path).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_table(table, out)
    log.info("wrote manifest %s (%d images of %s)", out, len(rows), dataset.name)
    return out


def _load_table(path: str | os.PathLike[str]) -> tuple[pa.Table, str, str]:
    """The validated table, dataset name and stored root of manifest ``path``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"manifest {path} does not exist")
    try:
        table = pq.read_table(path)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"manifest {path} is not a readable Parquet file: {exc}") from None
    for column in COLUMNS:
        if column not in table.column_names:
            raise ValueError(f"manifest {path} is missing column {column!r} (required: {', '.join(COLUMNS)})")
    meta = table.schema.metadata or {}
    for key in (_META_NAME, _META_ROOT):
        if key not in meta:
            raise ValueError(f"manifest {path} has no {key.decode()!r} schema metadata")
    for column in COLUMNS:
        if table.column(column).null_count:
            raise ValueError(f"manifest {path}: column {column!r} has missing values")
    bad = sorted(set(table.column("split").to_pylist()) - set(SPLITS))
    if bad:
        raise ValueError(f"manifest {path}: bad split value(s) {bad}; valid splits: {', '.join(SPLITS)}")
    return table, meta[_META_NAME].decode(), meta[_META_ROOT].decode()


def _absolute(root: str, rel: str) -> str:
    return os.path.join(root, *rel.split("/"))


def _base(root: str | os.PathLike[str] | None, stored_root: str) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(root))) if root is not None else stored_root


def read_manifest(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> ReidDataset:
    """The dataset stored in manifest ``path``; ``root`` replaces the stored root (data that moved)."""
    table, name, stored_root = _load_table(path)
    base = _base(root, stored_root)
    columns = [table.column(c).to_pylist() for c in ("path", "pid", "camid", "split")]
    splits: dict[str, list[ImageRecord]] = {s: [] for s in SPLITS}
    for rel, pid, camid, split in zip(*columns, strict=True):
        if pid < 0 or camid < 0:
            raise ValueError(
                f"manifest {os.fspath(path)}: {rel} has pid {pid} / camid {camid}; both must be >= 0"
            )
        splits[split].append(ImageRecord(_absolute(base, rel), int(pid), int(camid)))
    return ReidDataset(name=name, root=base, **splits)


def verify_manifest(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    workers: int = 8,
    progress: bool = True,
) -> list[str]:
    """Manifest paths (relative, as stored) whose file is missing or whose hash or size changed."""
    table, _, stored_root = _load_table(path)
    base = _base(root, stored_root)
    rel_paths = table.column("path").to_pylist()
    expected = zip(*(table.column(c).to_pylist() for c in ("width", "height", "sha256")), strict=True)

    def facts_or_none(rel: str) -> tuple[int, int, str] | None:
        try:
            return _image_facts(_absolute(base, rel))
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s: %s", rel, exc)
            return None

    actual = _parallel_map(
        facts_or_none, rel_paths, workers=workers, desc="verify manifest", progress=progress
    )
    changed = [rel for rel, want, got in zip(rel_paths, expected, actual, strict=True) if got != tuple(want)]
    if changed:
        log.warning(
            "manifest %s: %d of %d images changed or missing", os.fspath(path), len(changed), len(rel_paths)
        )
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ray_reid.data.manifest write NAME ROOT OUT`` / ``verify MANIFEST [--root R]``.

    Write once on a machine that sees the data, then ship the small manifest with the job;
    ``verify`` exits 1 when any image changed, so it can gate a training run.
    """
    import argparse

    from ray_reid.data.registry import available_datasets, load_dataset

    parser = argparse.ArgumentParser(prog="python -m ray_reid.data.manifest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="read a dataset and write its Parquet manifest")
    w.add_argument("name", help=f"dataset name: {', '.join(available_datasets())}")
    w.add_argument("root", help="dataset folder (or the folder containing it)")
    w.add_argument("out", help="manifest file to write (.parquet)")
    w.add_argument("--workers", type=int, default=8)
    w.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="reader option")
    v = sub.add_parser("verify", help="re-hash every image; list the ones that changed")
    v.add_argument("manifest")
    v.add_argument("--root", default=None, help="where the data lives now (default: the stored root)")
    v.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)

    options: dict[str, object] = {}
    if args.command == "write":
        for item in args.option:
            key, sep, value = item.partition("=")
            if not sep or not key:
                parser.error(f"--option must be KEY=VALUE, got {item!r}")
            options[key] = {"true": True, "false": False}.get(value.lower(), value)
    try:
        if args.command == "write":
            dataset = load_dataset(args.name, args.root, **options)
            print(dataset.summary())
            print(write_manifest(dataset, args.out, workers=args.workers))
            return 0
        changed = verify_manifest(args.manifest, args.root, workers=args.workers)
    except (FileNotFoundError, ValueError) as exc:  # bad user input: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for rel in changed:
        print(rel)
    print(f"{len(changed)} image(s) changed or missing", file=sys.stderr)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
