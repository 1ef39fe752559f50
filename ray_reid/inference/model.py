"""A trained run's network, ready for inference: weights, input size and normalisation together.

:class:`InferenceSpec` is everything besides the weights that a consumer of embeddings must
agree on (architecture, input size, pixel normalisation); it is written next to embeddings
and exported graphs, so a search can refuse an index made by another model.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ray_reid.data.config import IMAGENET_MEAN, IMAGENET_STD
from ray_reid.models import ModelConfig, build_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceSpec:
    """The model side of an embedding: which network, which input, which checkpoint."""

    backbone: str
    views: tuple[str, ...]
    height: int
    width: int
    embed_dim: int
    checkpoint: str
    weights_sha256: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "views", tuple(self.views))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["views"] = list(self.views)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "InferenceSpec":
        return cls(**raw)


def resolve_checkpoint(run_or_checkpoint: str | os.PathLike) -> Path:
    """A local checkpoint folder for a run folder (its newest complete checkpoint), a checkpoint folder, or ``s3://`` either."""
    from ray_reid.locations import local_checkpoint

    return local_checkpoint(os.fspath(run_or_checkpoint))


def load_trained(run_or_checkpoint: str | os.PathLike) -> tuple[dict[str, torch.Tensor], InferenceSpec]:
    """The model's ``state_dict`` and its :class:`InferenceSpec`, read safely (``weights_only``)."""
    from ray_reid.config import config_from_dict
    from ray_reid.engine.checkpoint import load_checkpoint

    folder = resolve_checkpoint(run_or_checkpoint)
    loaded = load_checkpoint(folder)
    try:
        model_cfg = ModelConfig(**{**loaded["meta"]["model"], "pretrained": None})
        cfg = config_from_dict(loaded["meta"]["config"])
        weights = loaded["state"]["model"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {folder} does not describe a ray-reid model (meta.json model/config, "
                         f"state.pt model): {exc}") from exc
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(weights[name].detach().cpu().contiguous().numpy().tobytes())
    spec = InferenceSpec(backbone=model_cfg.backbone, views=model_cfg.view_names, height=cfg.data.height,
                         width=cfg.data.width, embed_dim=model_cfg.embed_dim, checkpoint=str(run_or_checkpoint),
                         weights_sha256=digest.hexdigest())
    return weights, spec


def build_network(weights: dict[str, torch.Tensor], spec: InferenceSpec) -> torch.nn.Module:
    """The trained ReidNet in eval mode (BN running statistics, as at evaluation)."""
    model = build_model(ModelConfig(backbone=spec.backbone, views=spec.views, pretrained=None))
    model.load_state_dict(weights)
    return model.eval()


class Embedder:
    """uint8 crops ``[B, H, W, 3]`` in, ``{view: float32 [B, d]}`` unit-norm embeddings out.

    Normalisation happens here, on the model's device, so the pipeline ships 1 byte per
    pixel instead of 4. On CUDA the forward pass runs under autocast (bf16 where supported,
    else fp16) with channels_last; the output is cast back to float32 and re-normalised.
    """

    def __init__(self, weights: dict[str, torch.Tensor], spec: InferenceSpec, *, device: str | None = None,
                 amp: bool | None = None) -> None:
        self.spec = spec
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.amp = (self.device.type == "cuda") if amp is None else bool(amp)
        self.model = build_network(weights, spec).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.mean = torch.tensor(spec.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std, device=self.device).view(1, 3, 1, 1)

    @torch.inference_mode()
    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        if pixels.ndim != 4 or pixels.shape[1:] != (self.spec.height, self.spec.width, 3):
            raise ValueError(f"expected uint8 crops of shape [B, {self.spec.height}, {self.spec.width}, 3], "
                             f"got {tuple(pixels.shape)}")
        if len(pixels) == 0:
            return {v: np.zeros((0, self.spec.embed_dim), np.float32) for v in self.spec.views}
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device).permute(0, 3, 1, 2)
        # the same operations, in the same order, as ToDtype(scale=True) + Normalize of test_transform
        x = x.to(torch.float32).mul_(1.0 / 255).sub_(self.mean).div_(self.std)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast("cuda", dtype=dtype, enabled=self.amp):
                out = self.model(x)
            out = {v: torch.nn.functional.normalize(f.float(), dim=1) for v, f in out.items()}
        else:
            out = self.model(x)
        return {v: f.float().cpu().numpy() for v, f in out.items()}
