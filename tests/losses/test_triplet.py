
import pytest
import torch
import torch.nn.functional as F

from ray_reid.losses import hard_triplet_loss


def brute_force(feats, targets, margin):
    losses = []
    for a in range(len(targets)):
        pos = [torch.dist(feats[a], feats[p]) for p in range(len(targets)) if targets[p] == targets[a]]
        neg = [torch.dist(feats[a], feats[n]) for n in range(len(targets)) if targets[n] != targets[a]]
        gap = max(pos) - min(neg)
        losses.append(F.softplus(gap) if margin is None else torch.clamp(gap + margin, min=0))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("margin", [0.3, 1.0, None])
def test_matches_brute_force(margin):
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(8, 5, generator=g), dim=1)
    targets = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    torch.testing.assert_close(hard_triplet_loss(feats, targets, margin), brute_force(feats, targets, margin))


def test_zero_when_well_separated_and_gradient_finite():
    feats = torch.tensor([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0], [10.0, 0.0]], requires_grad=True)
    loss = hard_triplet_loss(feats, torch.tensor([0, 0, 1, 1]), 0.3)
    assert loss.item() == 0.0
    loss = hard_triplet_loss(feats, torch.tensor([0, 1, 0, 1]), 0.3)
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(feats.grad).all()


def test_single_identity_rejected():
    with pytest.raises(ValueError, match="two identities"):
        hard_triplet_loss(torch.randn(3, 4), torch.zeros(3, dtype=torch.long))
