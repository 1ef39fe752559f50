"""Loading ImageNet trunk weights, never unpickling code.

Three sources, one loader: ``imagenet`` (torchvision's own weights enum for the backbone,
fetched through torchvision's download and the torch hub cache, ``$TORCH_HOME/hub/checkpoints``,
as any torchvision user gets them), a local file, or an ``s3://`` object (for cluster nodes
that cannot reach download.pytorch.org). Every file is read with ``weights_only=True``, which
only reconstructs tensors and plain containers: a file carrying arbitrary pickled objects is
refused instead of executed.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

IGNORED_PREFIXES = ("fc.",)  # the ImageNet classifier: no counterpart in the re-ID trunk
DEFAULT_CACHE_DIR = Path("~/.cache/ray_reid/weights")
IMAGENET = "imagenet"
# The published cluster-contrast and Learning to Purification runs start from torchvision's
# original ImageNet ResNet-50 (``resnet50(pretrained=True)`` / ``resnet50-19c8e357.pth``),
# which torchvision now names IMAGENET1K_V1; its DEFAULT is the later, differently trained V2.
IMAGENET_DEFAULT_VARIANT = "IMAGENET1K_V1"


def is_imagenet_spec(spec: object) -> bool:
    """True for ``imagenet`` and ``imagenet:<VARIANT>`` (case-insensitive prefix)."""
    return isinstance(spec, str) and spec.split(":", 1)[0].strip().lower() == IMAGENET


def imagenet_weights(backbone: str, spec: str = IMAGENET) -> Any:
    """torchvision's weights enum member for ``backbone``, without downloading anything.

    ``spec`` is ``imagenet`` (= IMAGENET1K_V1, what the papers used) or ``imagenet:<VARIANT>``.
    Raises ValueError naming the backbone when torchvision has no ImageNet weights for it, or
    listing the variants it has when the variant is unknown.
    """
    from torchvision.models import get_model_weights

    _, _, variant = spec.partition(":")
    variant = variant.strip().upper() or IMAGENET_DEFAULT_VARIANT
    try:
        enum = get_model_weights(backbone)
    except (ValueError, KeyError):
        raise ValueError(f"backbone {backbone!r} has no ImageNet weights in torchvision; "
                         "pass a local path or s3:// URI of a state_dict instead") from None
    available = [w.name for w in enum if w.name.startswith("IMAGENET")]
    if not available:
        raise ValueError(f"backbone {backbone!r} has no ImageNet weights in torchvision ({enum.__name__} holds "
                         f"{[w.name for w in enum]})")
    if variant not in available:
        raise ValueError(f"ImageNet weights {variant!r} do not exist for backbone {backbone!r}; "
                         f"valid: {', '.join(f'imagenet:{v}' for v in available)}")
    return enum[variant]


def load_backbone_weights(
    model: nn.Module, path_or_uri: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None
) -> nn.Module:
    """Load a torchvision ResNet ``state_dict`` into ``model.backbone`` (or ``model`` itself).

    Returns the module that received the weights. Any key mismatch other than ``fc.*`` is a
    ValueError: a silently half-loaded trunk trains, just worse, and nobody notices.
    """
    trunk = getattr(model, "backbone", model)
    if is_imagenet_spec(path_or_uri):
        state = _imagenet_state_dict(getattr(trunk, "name", type(trunk).__name__), os.fspath(path_or_uri))
    else:
        state = _read_state_dict(resolve_weights_path(path_or_uri, cache_dir=cache_dir))
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


def _imagenet_state_dict(backbone: str, spec: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights through its own download and the torch hub cache."""
    weights = imagenet_weights(backbone, spec)
    log.info("ImageNet weights for %s: torchvision %s (hub cache %s)", backbone, weights,
             Path(torch.hub.get_dir()) / "checkpoints")
    try:
        obj = weights.get_state_dict(progress=log.isEnabledFor(logging.INFO), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise ValueError(f"refusing to load torchvision's {weights} from the hub cache: it is not a plain tensor "
                         f"state_dict (weights_only load failed: {exc})") from exc
    except (OSError, RuntimeError, EOFError) as exc:  # URLError is an OSError
        raise ValueError(f"cannot fetch torchvision's {weights} for backbone {backbone!r} from {weights.url} "
                         f"(hub cache {Path(torch.hub.get_dir()) / 'checkpoints'}): {exc}") from exc
    return _as_state_dict(obj, f"torchvision's {weights}")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"refusing to load {path}: it is not a plain tensor state_dict (weights_only load failed: {exc})"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"cannot read weights file {path}: {exc}") from exc
    return _as_state_dict(obj, f"weights file {path}")


def _as_state_dict(obj: Any, what: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{what} does not hold a state_dict of tensors (got {type(obj).__name__})")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}
