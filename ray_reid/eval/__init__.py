"""Evaluation: query/gallery ranking (CMC, mAP), clustering quality, and the pictures.

Plotting lives in :mod:`ray_reid.eval.plots` and is imported from there, so that
importing the metrics does not pull in matplotlib.
"""

from ray_reid.eval.cluster_metrics import ClusteringScores, clustering_scores
from ray_reid.eval.features import l2_normalize, reid_metrics
from ray_reid.eval.rank import compute_distmat, evaluate_rank
from ray_reid.eval.rerank import RerankConfig, RerankedDistances, k_reciprocal_rerank
from ray_reid.eval.topk import FeatureDistances, exact_topk

__all__ = [
    "ClusteringScores",
    "FeatureDistances",
    "RerankConfig",
    "RerankedDistances",
    "clustering_scores",
    "compute_distmat",
    "evaluate_rank",
    "exact_topk",
    "k_reciprocal_rerank",
    "l2_normalize",
    "reid_metrics",
]
