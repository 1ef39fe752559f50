"""Where a run lives and which of its checkpoints counts, for local folders and ``s3://`` alike.

A run is ``<run.storage_path>/<run.name>``: a local folder or an S3 prefix. Everything that
asks "where is this run", "what is its latest checkpoint" or "write these files into it" comes
here, and every question goes through one pyarrow filesystem, so a local run and an S3 run
take the same code path.

*The latest checkpoint is the newest complete one*: the highest epoch whose ``checkpoint_*``
folder holds ``state.pt``, ``meta.json`` and ``history.json`` with ``state.pt`` matching the
size and SHA-256 its meta recorded (:func:`ray_reid.engine.checkpoint.newest_complete_checkpoint`,
the one rule that resume, evaluate, export and the teacher lookup all follow). A folder a crash
left partial (an orphan half-written by a killed worker, an upload cut short) is never picked;
a complete one Ray Train's controller had not registered yet is, as resume picks it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint_"
#: A checkpoint folder is complete when all of these are there (see ray_reid.engine.checkpoint).
CHECKPOINT_FILES = ("state.pt", "meta.json", "history.json")


def is_uri(location: str | os.PathLike) -> bool:
    """True for ``scheme://...`` locations (only ``s3://`` is supported), False for local paths."""
    return "://" in os.fspath(location)


def absolute(location: str | os.PathLike) -> str:
    """A location as workers in other directories can use it: local paths made absolute, URIs checked.

    Ray workers and Tune trials run in their own working directories, so a relative
    ``runs/teacher`` given on the driver would point nowhere there.
    """
    text = os.fspath(location)
    if is_uri(text):
        if not text.startswith("s3://"):
            raise ValueError(f"unsupported storage URI {text!r}: use a local path or s3://bucket/prefix")
        return text.rstrip("/")
    return str(Path(text).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for local paths and URIs alike."""
    out = location.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def run_dir(run: Any) -> str:
    """The run folder of a ``RunSection`` (or of a whole ``TrainConfig``): absolute path or ``s3://`` URI."""
    run = getattr(run, "run", run)
    return join(absolute(run.storage_path), run.name)


def filesystem(location: str, endpoint_url: str | None = None) -> tuple[Any, str]:
    """``(pyarrow filesystem, path in it)`` for a local path or an ``s3://`` URI."""
    from pyarrow import fs as pafs

    from ray_reid.storage import pyarrow_filesystem

    location = absolute(location)
    if not is_uri(location):
        return pafs.LocalFileSystem(), location
    s3fs, path = pyarrow_filesystem(location, endpoint_url)
    return s3fs, path


def _exists(fs: Any, path: str, kind: str = "any") -> bool:
    from pyarrow import fs as pafs

    info = fs.get_file_info(path)
    if kind == "file":
        return info.type == pafs.FileType.File
    if kind == "dir":
        return info.type == pafs.FileType.Directory
    return info.type != pafs.FileType.NotFound


def read_text(location: str) -> str:
    fs, path = filesystem(location)
    if not _exists(fs, path, "file"):
        raise FileNotFoundError(f"no such file: {location}")
    with fs.open_input_stream(path) as fh:
        return fh.read().decode()


def read_json(location: str) -> Any:
    text = read_text(location)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{location} is not valid JSON: {exc}") from exc


def is_checkpoint(location: str) -> bool:
    """True when ``location`` is a complete checkpoint folder (every file of CHECKPOINT_FILES present)."""
    fs, path = filesystem(location)
    return all(_exists(fs, f"{path}/{name}", "file") for name in CHECKPOINT_FILES)


def latest_checkpoint(run: str) -> str | None:
    """The run's newest complete checkpoint (path or URI), or None when it has none yet.

    On S3 the candidates are checked in the node's cache, so a following :func:`local_checkpoint`
    finds the chosen one there. Incomplete folders passed over are logged, not removed (that is
    resume's job, :func:`ray_reid.engine.checkpoint.checkpoint_to_resume`).
    """
    from ray_reid.engine.checkpoint import newest_complete_checkpoint

    run = absolute(run)
    chosen, rejected = newest_complete_checkpoint(run)
    for name, why in rejected.items():
        log.warning("skipping checkpoint %s: incomplete (%s)", join(run, name), why)
    return join(run, chosen.name) if chosen is not None else None


def checkpoint_of(run_or_checkpoint: str) -> str:
    """A checkpoint folder given itself or its run folder (then its newest complete checkpoint)."""
    location = absolute(run_or_checkpoint)
    if is_checkpoint(location):
        return location
    fs, path = filesystem(location)
    if not _exists(fs, path, "dir"):
        raise FileNotFoundError(f"no run or checkpoint at {run_or_checkpoint}")
    found = latest_checkpoint(location)
    if found is None:
        raise FileNotFoundError(f"{run_or_checkpoint} is neither a checkpoint ({', '.join(CHECKPOINT_FILES)}) "
                                "nor a run folder with a complete checkpoint_* folder")
    return found


def local_checkpoint(run_or_checkpoint: str) -> Path:
    """A local folder holding the checkpoint (a run means its newest complete one): itself, or its copy in
    the node cache.

    Only the one checkpoint is fetched from S3, not the whole run (embeddings, older checkpoints).
    """
    location = checkpoint_of(run_or_checkpoint)
    if not is_uri(location):
        return Path(location)
    from ray_reid.data.resolve import cache_dir
    from ray_reid.storage import fetch_prefix

    return fetch_prefix(location, cache_dir() / "s3")


def read_history(run: str) -> list[dict[str, Any]]:
    """Metric history stored in the run's latest checkpoint (empty when it has none yet)."""
    found = latest_checkpoint(run)
    return list(read_json(join(found, "history.json"))) if found else []


@contextlib.contextmanager
def writable_dir(location: str) -> Iterator[Path]:
    """A local folder to write files into that end up at ``location``.

    Local: the folder itself. S3: a temp folder uploaded (each file a whole object) when the
    block ends without an error; on an error nothing is uploaded.
    """
    location = absolute(location)
    if not is_uri(location):
        Path(location).mkdir(parents=True, exist_ok=True)
        yield Path(location)
        return
    from ray_reid.storage import upload_dir

    with tempfile.TemporaryDirectory(prefix="ray_reid_stage_") as staging:
        yield Path(staging)
        upload_dir(staging, location + "/")
