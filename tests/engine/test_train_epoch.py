"""The train step's loss is the configured mix of cluster-memory cross-entropy and batch-hard triplet."""

import pytest
import torch
import torch.nn.functional as F

from ray_reid.config import OptimConfig
from ray_reid.engine.train_epoch import train_one_epoch
from ray_reid.losses.cluster_memory import ClusterMemory
from ray_reid.losses.triplet import hard_triplet_loss


class _Net(torch.nn.Module):
    views = ("global",)

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(12, 8)

    def forward(self, x):
        return {"global": F.normalize(self.lin(x.flatten(1)), dim=1)}


@pytest.mark.parametrize("memory_weight, triplet_weight", [(1.0, 0.0), (0.0, 1.0), (0.5, 2.0)])
def test_loss_is_the_weighted_memory_and_triplet_terms(memory_weight, triplet_weight):
    torch.manual_seed(0)
    net = _Net()
    images, labels = torch.randn(6, 3, 2, 2), torch.tensor([0, 0, 1, 1, 2, 2])
    centroids = F.normalize(torch.randn(3, 8), dim=1)
    out = net(images)["global"]
    expected = (memory_weight * F.cross_entropy(out @ centroids.t() / 0.05, labels)
                + triplet_weight * hard_triplet_loss(out, labels, margin=0.3))

    cfg = OptimConfig(memory_weight=memory_weight, triplet_weight=triplet_weight, triplet_margin=0.3, temp=0.05)
    memories = {"global": ClusterMemory.from_centroids(centroids, temp=0.05, momentum=0.1)}
    metrics = train_one_epoch(net, [(images, torch.arange(6))], labels.numpy(), memories,
                              torch.optim.SGD(net.parameters(), lr=0.0), cfg, epoch=0)
    assert abs(metrics["loss"] - float(expected.detach())) < 1e-5
    assert ("ce_global" in metrics) == (memory_weight > 0)
    assert ("triplet" in metrics) == (triplet_weight > 0)


def test_a_config_without_any_loss_is_refused():
    with pytest.raises(ValueError, match=r"optim\.memory_weight=0.*triplet_weight"):
        OptimConfig(memory_weight=0.0, triplet_weight=0.0)
