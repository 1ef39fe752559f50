"""What a checkpoint holds, and how it is written and read safely.

Everything goes through ``torch.save`` of plain containers of tensors and numbers and is read
back with ``torch.load(weights_only=True)``, so a crafted checkpoint or teacher file cannot run
code on the cluster. Files are written to a temp name and renamed, so a crash mid-write never
leaves a truncated ``state.pt`` where a good one was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ray_reid.atomic import atomic_write
from ray_reid.locations import CHECKPOINT_FILES

STATE_FILE, META_FILE, HISTORY_FILE = CHECKPOINT_FILES


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
    write_json(directory / META_FILE, meta)
    write_json(directory / HISTORY_FILE, history)
    return directory


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
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
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
