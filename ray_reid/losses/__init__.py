"""Training losses: rank-synchronised cluster memory, batch-hard triplet, feature distillation."""

from ray_reid.losses.cluster_memory import ClusterMemory, cluster_centroids
from ray_reid.losses.distill import distillation_loss
from ray_reid.losses.triplet import hard_triplet_loss, pairwise_distances

__all__ = ["ClusterMemory", "cluster_centroids", "distillation_loss", "hard_triplet_loss", "pairwise_distances"]
