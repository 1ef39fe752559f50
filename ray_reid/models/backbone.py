"""ResNet trunks for re-ID: torchvision's ResNet with the classifier dropped and last stride 1.

The trunk keeps torchvision's submodule names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``)
so an ImageNet ``state_dict`` from torchvision loads into it key for key, minus ``fc.*``.
Weights are never downloaded here (``weights=None``); see :mod:`ray_reid.models.weights`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet

#: name -> (torchvision constructor, channels of the layer4 output)
BACKBONES: dict[str, tuple[Callable[..., resnet.ResNet], int]] = {
    "resnet18": (resnet.resnet18, 512),
    "resnet34": (resnet.resnet34, 512),
    "resnet50": (resnet.resnet50, 2048),
    "resnet101": (resnet.resnet101, 2048),
}


def register_backbone(name: str, constructor: Callable[..., resnet.ResNet], channels: int) -> None:
    """Make ``model.backbone: name`` buildable: a torchvision-style ResNet constructor (``weights=None``
    keyword, ``layer1``..``layer4``) and the channels of its last stage. Names are never silently replaced."""
    if name in BACKBONES and BACKBONES[name] != (constructor, channels):
        raise ValueError(f"backbone {name!r} is already registered")
    BACKBONES[name] = (constructor, int(channels))


def backbone_channels(name: str) -> int:
    """Feature width of ``name``'s last stage; raises ValueError listing the valid names."""
    return _lookup(name)[1]


def _lookup(name: str) -> tuple[Callable[..., resnet.ResNet], int]:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; valid names: {sorted(BACKBONES)}") from None


class ResNetTrunk(nn.Module):
    """Stem plus the four residual stages of a torchvision ResNet, returning the layer4 map.

    ``last_stride=1`` keeps layer4 at the resolution of layer3 (a 256×128 crop gives a
    16×8 map instead of 8×4): re-ID needs the spatial detail far more than ImageNet does,
    and the part views split this map by rows.
    """

    def __init__(self, name: str = "resnet50", *, last_stride: int = 1) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
        ctor, channels = _lookup(name)
        net = ctor(weights=None)
        self.name = name
        self.out_channels = channels
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if last_stride != 2:
            _set_block_stride(self.layer4[0], last_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _set_block_stride(block: nn.Module, stride: int) -> None:
    """Every strided conv of the block (3×3 conv and the 1×1 downsample alike) gets ``stride``.

    BasicBlock strides in ``conv1``, Bottleneck (v1.5) in ``conv2``; changing whichever conv
    is strided covers both without special cases.
    """
    changed = 0
    for module in block.modules():
        if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
            module.stride = (stride, stride)
            changed += 1
    assert changed >= 2, "expected a strided conv and a strided downsample in the first layer4 block"
