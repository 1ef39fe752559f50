"""The re-ID network: ResNet trunk → per view GeM → BN neck → L2-normalised embedding."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ray_reid.models.backbone import ResNetTrunk, backbone_channels
from ray_reid.models.heads import BNNeck, GeM, normalize_views, view_regions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    """What network to build. ``views`` also accepts the strings ``"global"`` / ``"global+parts"``.

    ``pretrained`` is ``imagenet`` / ``imagenet:<VARIANT>`` (torchvision's weights for the
    backbone, through its download cache), a local path or ``s3://`` URI of a torchvision
    ImageNet ResNet ``state_dict``; ``None`` trains from random initialisation.
    """

    backbone: str = "resnet50"
    views: tuple[str, ...] = ("global",)
    last_stride: int = 1
    gem_p: float = 3.0
    pretrained: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "views", normalize_views(self.views))
        backbone_channels(self.backbone)  # raises with the valid names
        if self.last_stride not in (1, 2):
            raise ValueError(f"ModelConfig.last_stride must be 1 or 2, got {self.last_stride!r}")
        if not (isinstance(self.gem_p, (int, float)) and self.gem_p > 0):
            raise ValueError(f"ModelConfig.gem_p must be a number > 0, got {self.gem_p!r}")
        if self.pretrained is not None and (not isinstance(self.pretrained, str) or not self.pretrained.strip()):
            raise ValueError(f"ModelConfig.pretrained must be None, 'imagenet' or a path / s3:// URI, "
                             f"got {self.pretrained!r}")
        if self.pretrained is not None:
            from ray_reid.models.weights import imagenet_weights, is_imagenet_spec

            if is_imagenet_spec(self.pretrained):
                imagenet_weights(self.backbone, self.pretrained)  # refuses a backbone without them, naming it

    @property
    def embed_dim(self) -> int:
        """Width of every view's embedding (the trunk's last-stage channels)."""
        return backbone_channels(self.backbone)


class ReidNet(nn.Module):
    """Returns ``{view: [B, D] unit-norm embedding}`` in train and eval mode alike.

    One code path for one view or three: the engine, the memories and the distillation all
    iterate over ``model.views``, so a single-view model is not a special case anywhere.
    Every parameter takes part in every forward pass (DDP needs no ``find_unused_parameters``);
    the frozen BN biases have ``requires_grad=False`` and DDP leaves them out.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.views: tuple[str, ...] = cfg.views
        self.embed_dim = cfg.embed_dim
        self.backbone = ResNetTrunk(cfg.backbone, last_stride=cfg.last_stride)
        self.pools = nn.ModuleDict({v: GeM(cfg.gem_p) for v in self.views})
        self.necks = nn.ModuleDict({v: BNNeck(self.embed_dim) for v in self.views})

    def forward(self, x: torch.Tensor, normalize: bool = True) -> dict[str, torch.Tensor]:
        """``normalize=False`` returns the BN-neck output before L2 normalisation (raw, non-sphere features)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"ReidNet expects images [B, 3, H, W], got shape {tuple(x.shape)}")
        fmap = self.backbone(x)
        regions = view_regions(fmap, self.views)
        return {v: self.necks[v](self.pools[v](regions[v]), normalize) for v in self.views}


def build_model(cfg: ModelConfig) -> ReidNet:
    """Build the network and load ImageNet trunk weights when ``cfg.pretrained`` names some."""
    from ray_reid.models.weights import load_backbone_weights

    model = ReidNet(cfg)
    if cfg.pretrained is None:
        log.info("no pretrained weights given: training %s from random init", cfg.backbone)
    else:
        load_backbone_weights(model, cfg.pretrained)
    return model
