"""Pooling and embedding heads: GeM pooling, BatchNorm neck, and the global / part views.

Each view owns its own GeM exponent and BN neck (Learning to Purification, DESIGN.md §5):
the part views see different statistics from the whole map, so sharing them would blur both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn



class GeM(nn.Module):
    """Generalised-mean pooling with a trainable exponent ``p``.

    p = 1 is average pooling and p → ∞ max pooling; learning p lets the network choose how
    much to focus on the strongest activations. Inputs are clamped at ``eps`` because the
    fractional power of 0 has an infinite gradient.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM p must be > 0, got {p!r}")
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1))
        return pooled.pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


class BNNeck(nn.Module):
    """BatchNorm1d whose bias is fixed at zero, then L2 normalisation.

    A frozen zero shift keeps the normalised embedding centred on the origin, which is what
    cosine similarity against the cluster memory assumes (the BNNeck of Luo et al.).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        out = self.bn(x)
        return F.normalize(out, dim=1) if normalize else out


def view_regions(feature_map: torch.Tensor, views: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Crop the [B, C, H, W] map for each view: whole map, upper or lower half of the rows.

    With odd H the middle row goes to the lower half (``H // 2`` rows above it).
    """
    height = feature_map.shape[-2]
    if height < 2 and any(v != "global" for v in views):
        raise ValueError(f"part views need a feature map at least 2 rows high, got {tuple(feature_map.shape)}")
    half = height // 2
    regions = {"global": feature_map, "up": feature_map[..., :half, :], "down": feature_map[..., half:, :]}
    return {v: regions[v] for v in views}
