"""Pseudo-labelling: arrays in, labels out. No Ray here, so every clusterer runs and tests alone.

Exports are resolved lazily: importing the package does not pull in faiss or scikit-learn
until the clusterer that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "HierarchicalSSE": "ray_reid.clustering.hierarchical",
    "JaccardDBSCAN": "ray_reid.clustering.jaccard",
    "compute_jaccard_distance": "ray_reid.clustering.jaccard",
    "dbscan_on_sparse_distance": "ray_reid.clustering.jaccard",
    "knn_search": "ray_reid.clustering.knn",
    "fuse_views": "ray_reid.clustering.fusion",
    "fused_sq_distances": "ray_reid.clustering.fusion",
    "PURIFICATION_WEIGHTS": "ray_reid.clustering.fusion",
    "hct_target_clusters": "ray_reid.clustering.schedule",
    "scheduled_target": "ray_reid.clustering.schedule",
    "make_clusterer": "ray_reid.clustering.registry",
    "register_clusterer": "ray_reid.clustering.registry",
    "available_clusterers": "ray_reid.clustering.registry",
    "fused_jaccard_distance": "ray_reid.clustering.jaccard",
    "fixed_target": "ray_reid.clustering.schedule",
    "score_against_truth": "ray_reid.clustering.report",
    "cupy_available": "ray_reid.clustering._backend",
    "get_xp": "ray_reid.clustering._backend",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ray_reid.clustering' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
