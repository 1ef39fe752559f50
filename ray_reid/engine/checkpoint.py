"""What a checkpoint holds, and how it is written and read safely.

Everything goes through ``torch.save`` of plain containers of tensors and numbers and is read
back with ``torch.load(weights_only=True)``, so a crafted checkpoint or teacher file cannot run
code on the cluster. Files are written to a temp name and renamed, so a crash mid-write never
leaves a truncated ``state.pt`` where a good one was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ray_reid.atomic import atomic_write
from ray_reid.locations import CHECKPOINT_FILES

STATE_FILE, META_FILE, HISTORY_FILE = CHECKPOINT_FILES
CHECKPOINT_PREFIX = "checkpoint_"

log = logging.getLogger(__name__)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def _write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False, default=float)

    atomic_write(path, _write)
    return path


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any], meta: dict[str, Any],
                    history: list[dict[str, Any]]) -> Path:
    """Write ``state`` (tensors/numbers), ``meta`` (config, architecture) and the metric history."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / STATE_FILE, lambda tmp: torch.save(state, tmp))
    # The digest lets a resume tell a complete copy in storage from one cut short by a crash:
    # Ray Train copies the folder file by file, with no rename at the end.
    meta = {**meta, "state_sha256": _sha256(directory / STATE_FILE),
            "state_bytes": (directory / STATE_FILE).stat().st_size}
    write_json(directory / META_FILE, meta)
    write_json(directory / HISTORY_FILE, history)
    return directory


class UnsafeCheckpointError(ValueError):
    """A checkpoint whose ``state.pt`` carries pickled code: refused loudly, never skipped or deleted.

    A cut-short file is an incomplete checkpoint that resume may pass over and remove; a hostile
    one is evidence, and silently training from scratch past it would hide the attack.
    """


def load_checkpoint(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint folder: ``{"state": ..., "meta": ..., "history": ...}``.

    Raises FileNotFoundError / ValueError naming the file when it is missing or unreadable;
    ``weights_only=True`` refuses pickled code.
    """
    directory = Path(directory)
    state_path = directory / STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(f"checkpoint {directory} has no {STATE_FILE}")
    try:
        state = torch.load(state_path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):  # a whole file that carries pickled code
            raise UnsafeCheckpointError(f"checkpoint file {state_path} cannot be loaded safely: {exc}") from exc
        raise ValueError(f"checkpoint file {state_path} cannot be loaded safely: {exc}") from exc
    except Exception as exc:  # torch raises RuntimeError, EOFError... for cut-short or corrupt files
        raise ValueError(f"checkpoint file {state_path} cannot be loaded safely: {exc}") from exc
    meta = _read_json(directory / META_FILE)
    history = _read_json(directory / HISTORY_FILE) if (directory / HISTORY_FILE).exists() else []
    return {"state": state, "meta": meta, "history": history}


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file missing: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"checkpoint file {path} is not valid JSON: {exc}") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_complete(directory: str | os.PathLike) -> tuple[int, str | None]:
    """``(epoch, None)`` for a complete, intact checkpoint folder, else ``(-1, why not)``.

    Complete means meta and history parse, the history ends at the meta's epoch, and
    ``state.pt`` has the size and SHA-256 recorded in the meta (older checkpoints without a
    digest are loaded instead). Nothing is trusted from the folder's name.
    """
    directory = Path(directory)
    try:
        meta = _read_json(directory / META_FILE)
        history = _read_json(directory / HISTORY_FILE)
        epoch = int(meta["epoch"])
        state_path = directory / STATE_FILE
        if not state_path.is_file():
            return -1, f"no {STATE_FILE}"
        if "state_sha256" in meta:
            if state_path.stat().st_size != meta["state_bytes"] or _sha256(state_path) != meta["state_sha256"]:
                return -1, f"{STATE_FILE} does not match the size/SHA-256 in {META_FILE} (cut short)"
        else:
            load_checkpoint(directory)
    except UnsafeCheckpointError:
        raise
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        return -1, str(exc)
    if not history or int(history[-1].get("epoch", -1)) != epoch:
        return -1, f"{HISTORY_FILE} does not end at epoch {epoch}"
    return epoch, None


@dataclass(frozen=True)
class StoredCheckpoint:
    """A validated checkpoint of a run: its folder name in storage, its epoch, and a local copy."""

    name: str
    epoch: int
    local_path: Path


def _run_filesystem(run_uri: str, endpoint_url: str | None):
    from pyarrow import fs as pafs

    from ray_reid.storage import pyarrow_filesystem

    filesystem, path = pyarrow_filesystem(run_uri, endpoint_url)
    return filesystem or pafs.LocalFileSystem(), path


def checkpoint_names(run_uri: str, *, endpoint_url: str | None = None) -> list[str]:
    """Names of the ``checkpoint_*`` folders directly under a run folder (local or ``s3://``), sorted."""
    from pyarrow import fs as pafs

    filesystem, path = _run_filesystem(run_uri, endpoint_url)
    infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    return sorted(i.base_name for i in infos
                  if i.type == pafs.FileType.Directory and i.base_name.startswith(CHECKPOINT_PREFIX))


def epoch_of(run_uri: str, name: str, endpoint_url: str | None) -> int:
    """The epoch a folder's meta.json claims (-1 when unreadable): only to order the candidates."""
    filesystem, path = _run_filesystem(run_uri, endpoint_url)
    try:
        with filesystem.open_input_stream(f"{path}/{name}/{META_FILE}") as fh:
            return int(json.loads(fh.read())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def newest_complete_checkpoint(run_uri: str, workdir: str | os.PathLike | None = None, *,
                               endpoint_url: str | None = None) -> tuple[StoredCheckpoint | None, dict[str, str]]:
    """The checkpoint of the highest epoch in ``run_uri`` that is complete, and why others were passed over.

    *The* rule for "the latest checkpoint of a run", used by resume, evaluate, export and the
    teacher lookup alike (:func:`ray_reid.locations.latest_checkpoint`): the highest epoch whose
    folder passes :func:`check_complete` (meta, history and ``state.pt`` matching the SHA-256 in
    its meta), whether or not Ray Train's controller registered it. A partial folder (a copy or
    upload cut short, an orphan a killed worker left half-written) is never chosen; a complete
    one the controller never saw is, since a worker group killed within a poll of its last
    report leaves finished checkpoints, and resuming before them would train those epochs again.

    Local folders are checked in place. S3 folders are copied, newest first and only as far as
    needed, into ``workdir`` when given (a resume's scratch folder), else into the node's S3
    cache, where :func:`ray_reid.locations.local_checkpoint` then finds the chosen one; a rejected
    copy is removed. Returns ``(None, rejected)`` when the run has no complete checkpoint.
    """
    local = "://" not in run_uri
    names = checkpoint_names(run_uri, endpoint_url=endpoint_url)
    order = sorted(names, key=lambda n: (epoch_of(run_uri, n, endpoint_url), n), reverse=True)
    rejected: dict[str, str] = {}
    for name in order:
        folder = _local_copy(run_uri, name, workdir, endpoint_url)
        epoch, why = check_complete(folder)
        if why is None:
            return StoredCheckpoint(name=name, epoch=epoch, local_path=folder), rejected
        rejected[name] = why
        if not local:
            shutil.rmtree(folder, ignore_errors=True)
    return None, rejected


def _local_copy(run_uri: str, name: str, workdir: str | os.PathLike | None, endpoint_url: str | None) -> Path:
    if "://" not in run_uri:
        return Path(run_uri) / name
    if workdir is None:
        from ray_reid.data.resolve import cache_dir
        from ray_reid.storage import fetch_prefix

        return fetch_prefix(f"{run_uri.rstrip('/')}/{name}", cache_dir() / "s3", endpoint_url=endpoint_url)
    shutil.rmtree(Path(workdir) / name, ignore_errors=True)
    return download_checkpoint(run_uri, name, Path(workdir) / name, endpoint_url)


def checkpoint_to_resume(run_uri: str, workdir: str | os.PathLike | None = None, *,
                         endpoint_url: str | None = None) -> StoredCheckpoint | None:
    """:func:`newest_complete_checkpoint`, with the incomplete folders it passed over removed from storage."""
    chosen, rejected = newest_complete_checkpoint(run_uri, workdir, endpoint_url=endpoint_url)
    for name, why in rejected.items():
        log.warning("checkpoint %s/%s is incomplete (%s): removed", run_uri, name, why)
    if rejected:
        remove_checkpoints(run_uri, sorted(rejected), endpoint_url=endpoint_url)
    return chosen


def download_checkpoint(run_uri: str, name: str, dest: Path, endpoint_url: str | None = None) -> Path:
    """Copy one checkpoint folder of a run into ``dest``; a local run folder is used in place."""
    if "://" not in run_uri:
        return Path(run_uri) / name
    from pyarrow import fs as pafs

    filesystem, path = _run_filesystem(run_uri, endpoint_url)
    dest.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(f"{path}/{name}", str(dest), source_filesystem=filesystem,
                    destination_filesystem=pafs.LocalFileSystem())
    return dest


def remove_checkpoints(run_uri: str, names: list[str], *, endpoint_url: str | None = None) -> None:
    """Delete the named checkpoint folders of a run (orphans a crash left behind)."""
    filesystem, path = _run_filesystem(run_uri, endpoint_url)
    for name in names:
        if not name.startswith(CHECKPOINT_PREFIX) or "/" in name:
            raise ValueError(f"refusing to delete {name!r}: not a checkpoint folder name")
        filesystem.delete_dir(f"{path}/{name}")


def remove_orphans(run_uri: str, registered_paths: list[str], *, endpoint_url: str | None = None,
                   keep: int = 3) -> list[str]:
    """Delete checkpoint folders Ray Train never registered, except those among the ``keep`` newest epochs.

    A group killed before the controller saw its last reports leaves such folders; Ray's
    ``num_to_keep`` only prunes what it registered, so without this they would stay for ever.
    Registered folders are left to Ray. Returns the names removed.
    """
    registered = {Path(p).name for p in registered_paths}
    names = checkpoint_names(run_uri, endpoint_url=endpoint_url)
    by_epoch = sorted(names, key=lambda n: (epoch_of(run_uri, n, endpoint_url), n), reverse=True)
    orphans = [n for n in by_epoch[keep:] if n not in registered]
    if orphans:
        log.info("removing %d checkpoint folder(s) Ray Train never registered: %s", len(orphans), ", ".join(orphans))
        remove_checkpoints(run_uri, orphans, endpoint_url=endpoint_url)
    return orphans
