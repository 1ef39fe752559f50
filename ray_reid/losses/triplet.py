"""Batch-hard triplet loss (Hermans et al.; HCT uses it next to its clustering)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_distances(feats: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [B, B] through one matrix product.

    The expansion ‖a‖² + ‖b‖² − 2ab cancels badly on the diagonal, so self-distances are set
    to exactly 0; the clamp before the square root keeps the gradient finite there.
    """
    sq = feats.pow(2).sum(1)
    d2 = sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * feats @ feats.t()
    eye = torch.eye(feats.shape[0], dtype=torch.bool, device=feats.device)
    return d2.masked_fill(eye, 0.0).clamp(min=1e-12).sqrt()


def hard_triplet_loss(feats: torch.Tensor, targets: torch.Tensor, margin: float | None = 0.3) -> torch.Tensor:
    """Mean over anchors of ``[d(a, hardest positive) - d(a, hardest negative) + margin]_+``.

    ``margin=None`` uses the soft margin ``log(1 + exp(d_ap - d_an))``, which keeps pushing
    after the hinge would have stopped. An anchor whose identity has no other image in the
    batch uses itself as positive (distance ~0); a batch with a single identity has no
    negatives at all and is an error, since the loss would be meaningless.
    """
    if feats.ndim != 2 or targets.ndim != 1 or feats.shape[0] != targets.shape[0]:
        raise ValueError(f"need feats [B, D] and targets [B], got {tuple(feats.shape)} and {tuple(targets.shape)}")
    if margin is not None and margin < 0:
        raise ValueError(f"margin must be >= 0 or None (soft margin), got {margin!r}")
    dist = pairwise_distances(feats.float())
    same = targets.unsqueeze(0) == targets.unsqueeze(1)
    if bool(same.all()):
        raise ValueError("hard_triplet_loss needs at least two identities in the batch")
    hardest_pos = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(dim=1)
    diff = hardest_pos - hardest_neg
    if margin is None:
        return F.softplus(diff).mean()
    return F.relu(diff + margin).mean()
