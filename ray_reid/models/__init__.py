"""Re-ID networks: ResNet trunk with last stride 1, GeM pooling, BN necks, global / part views."""

from ray_reid.models.backbone import BACKBONES, ResNetTrunk, backbone_channels, register_backbone
from ray_reid.models.heads import BNNeck, GeM
from ray_reid.models.config import VIEW_SETS, ModelConfig
from ray_reid.models.reid_net import ReidNet, build_model
from ray_reid.models.weights import load_backbone_weights

__all__ = [
    "BACKBONES",
    "BNNeck",
    "GeM",
    "ModelConfig",
    "VIEW_SETS",
    "ReidNet",
    "ResNetTrunk",
    "backbone_channels",
    "build_model",
    "load_backbone_weights",
    "register_backbone",
]
