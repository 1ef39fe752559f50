"""Loading ImageNet trunk weights from a local file or an S3 object, never unpickling code.

Nodes of a training cluster usually cannot reach download.pytorch.org, so weights are
supplied as a torchvision ``state_dict`` on shared storage. ``torch.load(weights_only=True)``
only reconstructs tensors and plain containers: a checkpoint carrying arbitrary pickled
objects is refused instead of executed.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

IGNORED_PREFIXES = ("fc.",)  # the ImageNet classifier: no counterpart in the re-ID trunk
DEFAULT_CACHE_DIR = Path("~/.cache/ray_reid/weights")


def load_backbone_weights(
    model: nn.Module, path_or_uri: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None
) -> nn.Module:
    """Load a torchvision ResNet ``state_dict`` into ``model.backbone`` (or ``model`` itself).

    Returns the module that received the weights. Any key mismatch other than ``fc.*`` is a
    ValueError: a silently half-loaded trunk trains, just worse, and nobody notices.
    """
    trunk = getattr(model, "backbone", model)
    local = resolve_weights_path(path_or_uri, cache_dir=cache_dir)
    state = _read_state_dict(local)
    state = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    expected = trunk.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"weights at {path_or_uri} do not match the {getattr(trunk, 'name', type(trunk).__name__)} trunk: "
            f"{len(missing)} missing keys (e.g. {missing[:5]}), {len(unexpected)} unexpected keys "
            f"(e.g. {unexpected[:5]})"
        )
    wrong = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items() if v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"weights at {path_or_uri} have wrong shapes (key, file, model): {wrong[:5]}")
    trunk.load_state_dict(state, strict=True)
    log.info("loaded %d trunk tensors from %s", len(state), path_or_uri)
    return trunk


def resolve_weights_path(path_or_uri: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """Local path of the weights: the file itself, or the S3 object's copy in the cache."""
    text = os.fspath(path_or_uri)
    if text.startswith("s3://"):
        from ray_reid.storage import fetch_file  # size/ETag-verified, atomic, shared with datasets

        return fetch_file(text, Path(cache_dir or DEFAULT_CACHE_DIR).expanduser())
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"refusing to load {path}: it is not a plain tensor state_dict (weights_only load failed: {exc})"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights file {path} does not hold a state_dict of tensors (got {type(obj).__name__})")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}
