"""Cluster-contrast memory: one L2-normalised centroid per pseudo-identity, momentum-updated.

The memory is rebuilt from cluster means every epoch (the number of clusters changes with
each re-clustering) and updated after every step from the batch features. In a DDP job the
update first gathers every rank's batch, so all ranks apply the same updates in the same
order and keep bit-identical memories; the public single-process code (DataParallel) never
needed that and does not do it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def cluster_centroids(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean feature of each cluster 0..C-1; label -1 (outlier) is ignored.

    Every label in 0..max must occur: a gap means the labels were not relabelled to be
    contiguous, and an empty centroid would silently become a zero row in the memory.
    """
    if features.ndim != 2 or labels.ndim != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"need features [N, D] and labels [N], got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.to(features.device, torch.long)
    keep = labels >= 0
    if not bool(keep.any()):
        raise ValueError("cluster_centroids: every label is -1 (outlier); there is no cluster to build")
    if bool((labels < -1).any()):
        raise ValueError(f"labels must be >= -1, got minimum {int(labels.min())}")
    labels, feats = labels[keep], features[keep].float()
    num = int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=num)
    if bool((counts == 0).any()):
        empty = torch.nonzero(counts == 0).flatten()[:10].tolist()
        raise ValueError(f"labels must cover 0..{num - 1} without gaps; empty clusters: {empty}")
    sums = torch.zeros(num, feats.shape[1], dtype=feats.dtype, device=feats.device).index_add_(0, labels, feats)
    return F.normalize(sums / counts.unsqueeze(1).to(feats.dtype), dim=1)


class ClusterMemory(nn.Module):
    """Cross-entropy of batch features against a bank of cluster centroids.

    ``features`` is a buffer, not a parameter: it moves with ``.to()`` and lands in the
    ``state_dict`` (checkpoints), but autograd treats it as a constant; it changes only
    through :meth:`update`.
    """

    features: torch.Tensor

    def __init__(self, num_features: int, num_clusters: int, temp: float = 0.05, momentum: float = 0.1) -> None:
        super().__init__()
        if num_features < 1 or num_clusters < 1:
            raise ValueError(f"need num_features >= 1 and num_clusters >= 1, got {num_features}, {num_clusters}")
        if not temp > 0:
            raise ValueError(f"temp must be > 0, got {temp!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.num_features = num_features
        self.temp = float(temp)
        self.momentum = float(momentum)
        self.register_buffer("features", torch.zeros(num_clusters, num_features))

    @classmethod
    def from_centroids(cls, centroids: torch.Tensor, temp: float = 0.05, momentum: float = 0.1) -> "ClusterMemory":
        memory = cls(centroids.shape[1], centroids.shape[0], temp=temp, momentum=momentum)
        memory.set_centroids(centroids)
        return memory

    @property
    def num_clusters(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def set_centroids(self, centroids: torch.Tensor) -> None:
        """Replace the bank (any number of clusters) with the normalised ``centroids``."""
        if centroids.ndim != 2 or centroids.shape[1] != self.num_features or centroids.shape[0] < 1:
            raise ValueError(
                f"centroids must be [C >= 1, {self.num_features}], got {tuple(centroids.shape)}"
            )
        self.features = F.normalize(centroids.detach().to(self.features.device, torch.float32), dim=1).clone()

    def forward(self, feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of ``feats @ memory.T / temp`` against cluster ids ``targets``."""
        if feats.ndim != 2 or feats.shape[1] != self.num_features:
            raise ValueError(f"feats must be [B, {self.num_features}], got {tuple(feats.shape)}")
        logits = feats.float() @ self.features.t() / self.temp
        return F.cross_entropy(logits, targets.to(logits.device, torch.long))

    @torch.no_grad()
    def update(self, feats: torch.Tensor, targets: torch.Tensor) -> None:
        """Momentum update ``m[y] <- normalise(momentum * m[y] + (1 - momentum) * f)``.

        Samples are applied in rank-major, then batch order, every rank seeing every rank's
        batch, which is what makes the memories identical across ranks.
        """
        feats = feats.detach().float()
        targets = targets.detach().to(feats.device, torch.long)
        if feats.ndim != 2 or feats.shape[1] != self.num_features or targets.shape != feats.shape[:1]:
            raise ValueError(
                f"need feats [B, {self.num_features}] and targets [B], got {tuple(feats.shape)}, {tuple(targets.shape)}"
            )
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            feats, targets = _all_gather_rows(feats, targets)
        if targets.numel() == 0:
            return
        if bool((targets < 0).any() | (targets >= self.num_clusters).any()):
            raise ValueError(
                f"targets must be cluster ids in [0, {self.num_clusters}), got range "
                f"[{int(targets.min())}, {int(targets.max())}]"
            )
        self._sequential_update(feats.to(self.features.device), targets.to(self.features.device))

    def _sequential_update(self, feats: torch.Tensor, targets: torch.Tensor) -> None:
        """Exactly the one-sample-at-a-time loop, vectorised over clusters.

        Updates of different clusters commute, so the r-th sample of every cluster can be
        applied together: the number of rounds is the largest per-cluster count in the batch
        (K under a P×K sampler) instead of the batch size.
        """
        order = torch.sort(targets, stable=True).indices
        sorted_targets = targets[order]
        _, counts = torch.unique_consecutive(sorted_targets, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        occurrence = torch.empty_like(targets)
        occurrence[order] = torch.arange(targets.numel(), device=targets.device) - torch.repeat_interleave(
            starts, counts
        )
        mem = self.features
        for r in range(int(counts.max())):
            idx = torch.nonzero(occurrence == r).flatten()
            ys = targets[idx]
            mem[ys] = F.normalize(self.momentum * mem[ys] + (1.0 - self.momentum) * feats[idx], dim=1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        """Let a checkpoint's memory restore with its own number of clusters (it changes every epoch)."""
        saved = state_dict.get(prefix + "features")
        if saved is not None and saved.ndim == 2 and saved.shape != self.features.shape:
            if saved.shape[1] != self.num_features:
                raise ValueError(
                    f"checkpoint memory {prefix}features has width {saved.shape[1]}, this memory {self.num_features}"
                )
            self.features = self.features.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"num_clusters={self.num_clusters}, num_features={self.num_features}, temp={self.temp}, momentum={self.momentum}"


def _all_gather_rows(feats: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate every rank's rows in rank order; batches may differ in size (padding + counts)."""
    world = dist.get_world_size()
    count = torch.tensor([feats.shape[0]], device=feats.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    pad = longest - feats.shape[0]
    if pad:
        feats = torch.cat([feats, feats.new_zeros(pad, feats.shape[1])])
        targets = torch.cat([targets, targets.new_full((pad,), -1)])
    all_feats = [torch.empty_like(feats) for _ in range(world)]
    all_targets = [torch.empty_like(targets) for _ in range(world)]
    dist.all_gather(all_feats, feats.contiguous())
    dist.all_gather(all_targets, targets.contiguous())
    return (
        torch.cat([f[:n] for f, n in zip(all_feats, sizes)]),
        torch.cat([t[:n] for t, n in zip(all_targets, sizes)]),
    )
