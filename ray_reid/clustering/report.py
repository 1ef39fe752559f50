"""Score a clustering against held-back true ids, as a flat dict a run can log.

Clustering code stays free of evaluation details: the metrics themselves (ARI, NMI,
pairwise precision/recall, outlier count) live in :mod:`ray_reid.eval.cluster_metrics`.
"""

from __future__ import annotations

import logging
from typing import Any

from ray_reid.eval.cluster_metrics import clustering_scores

log = logging.getLogger(__name__)


def score_against_truth(labels: Any, true_ids: Any) -> dict[str, float | int]:
    """ARI, NMI, pairwise precision/recall/F and counts of ``labels`` (-1 = outlier) against ``true_ids``."""
    scores = clustering_scores(labels, true_ids).as_dict()
    log.info(
        "clustering vs truth: ARI %.4f, NMI %.4f, %d clusters, %d outliers",
        scores["ari"],
        scores["nmi"],
        scores["n_clusters"],
        scores["n_outliers"],
    )
    return scores
