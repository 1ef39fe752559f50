"""The re-ID network: ResNet trunk → per view GeM → BN neck → L2-normalised embedding."""

from __future__ import annotations

import logging

import torch
from torch import nn

from ray_reid.models.backbone import ResNetTrunk
from ray_reid.models.config import ModelConfig
from ray_reid.models.heads import BNNeck, GeM, view_regions

log = logging.getLogger(__name__)


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
        self.views: tuple[str, ...] = cfg.view_names
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
