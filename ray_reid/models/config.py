"""What network to build: the ``model`` section of a run's config, taken as is by :func:`build_model`."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ray_reid.validation import check, check_name, check_positive

#: ``model.views`` names -> the embedding views the network returns (DESIGN.md §5).
VIEW_SETS: dict[str, tuple[str, ...]] = {"global": ("global",), "global+parts": ("global", "up", "down")}


def view_set_name(views: str | tuple[str, ...] | list[str]) -> str:
    """``"global"`` / ``"global+parts"`` from either the name or the explicit tuple of views."""
    if isinstance(views, str):
        return views
    for name, names in VIEW_SETS.items():
        if tuple(views) == names:
            return name
    return str(tuple(views))


@dataclass(frozen=True)
class ModelConfig:
    """Backbone and heads. ``pretrained`` is ``imagenet`` / ``imagenet:<VARIANT>`` (torchvision's weights for
    the backbone, through its download cache), a local path or ``s3://`` URI of a torchvision ImageNet ResNet
    ``state_dict``; ``None`` trains from random initialisation."""

    backbone: str = "resnet50"
    views: str = "global"
    pretrained: str | None = None
    gem_p: float = 3.0
    last_stride: int = 1

    def __post_init__(self) -> None:
        from ray_reid.models.backbone import BACKBONES  # the registry; it imports torchvision

        object.__setattr__(self, "views", view_set_name(self.views))
        check_name("model.backbone", self.backbone, BACKBONES)
        check_name("model.views", self.views, VIEW_SETS)
        check_positive(self, "model", "gem_p")
        check(self.last_stride in (1, 2), "model.last_stride", self.last_stride, "1 or 2")
        check(self.pretrained is None or (isinstance(self.pretrained, str) and bool(self.pretrained.strip())),
              "model.pretrained", self.pretrained, "None, 'imagenet' or a path / s3:// URI")
        if self.pretrained is not None:
            from ray_reid.models.weights import imagenet_weights, is_imagenet_spec

            if is_imagenet_spec(self.pretrained):
                imagenet_weights(self.backbone, self.pretrained)  # refuses a backbone without them, naming it

    @property
    def view_names(self) -> tuple[str, ...]:
        """The views the network returns, global first."""
        return VIEW_SETS[self.views]

    @property
    def embed_dim(self) -> int:
        """Width of every view's embedding (the trunk's last-stage channels)."""
        from ray_reid.models.backbone import backbone_channels

        return backbone_channels(self.backbone)

    def replace(self, **changes) -> ModelConfig:
        return replace(self, **changes)
