"""How good are the pseudo-labels? Clustering quality against the true identities.

Unsupervised re-ID lives or dies by its pseudo-labels, so every epoch's clustering is
scored against the (held-back) true ids: ARI and NMI for overall agreement, and pairwise
precision/recall, the numbers that say *how* it fails — precision drops when different
people are merged (the contrastive loss then pulls them together), recall drops when one
person is split or thrown out as an outlier.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

#: Pseudo-label of a sample the clusterer refused to assign (DBSCAN noise).
OUTLIER = -1


@dataclass(frozen=True)
class ClusteringScores:
    """Agreement between predicted clusters and true ids (see :func:`clustering_scores`)."""

    ari: float
    nmi: float
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f: float
    n_clusters: int
    n_outliers: int
    n_samples: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _labels(name: str, values: Any) -> np.ndarray:
    if type(values).__module__.startswith(("torch", "cupy")):
        values = values.get() if hasattr(values, "get") else values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, got shape {arr.shape}")
    return arr


def _pairs(counts: np.ndarray) -> int:
    """Number of unordered pairs inside groups of the given sizes, as an exact Python int."""
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def clustering_scores(pred: Any, true: Any) -> ClusteringScores:
    """Score predicted cluster labels ``pred`` against true ids ``true`` (same length).

    Outliers are ``pred == -1``. For ARI and NMI each outlier counts as its own singleton
    cluster: discarding outliers would let a clusterer look better by throwing out the
    hard samples, and one big "outlier cluster" would be rewarded for grouping them.

    Pairwise scores count unordered pairs of samples: a pair is predicted positive when
    both share a non-outlier cluster, and truly positive when both share a true id.
    Precision = TP / predicted positives, recall = TP / true positives, F their harmonic
    mean. They come from the sparse contingency table (memory O(N), never O(N²)). Where a
    denominator has no pairs (all predicted singletons, or all true ids distinct) the
    ratio is vacuously 1.0, so a perfect clustering scores 1.0 throughout.
    """
    pred = _labels("pred", pred)
    true = _labels("true", true)
    if len(pred) != len(true):
        raise ValueError(f"pred has {len(pred)} labels but true has {len(true)}; they must match")
    if len(pred) == 0:
        raise ValueError("pred and true are empty: nothing to score")
    if pred.dtype.kind not in "iu":
        raise ValueError(f"pred must hold integer cluster labels (-1 = outlier), got dtype {pred.dtype}")
    if (pred < OUTLIER).any():
        raise ValueError(f"pred holds labels below -1 (e.g. {int(pred.min())}); only -1 marks outliers")

    _, true_idx = np.unique(true, return_inverse=True)
    true_idx = true_idx.ravel()
    outlier = pred == OUTLIER
    n_outliers = int(outlier.sum())
    cluster_ids, pred_idx = np.unique(pred, return_inverse=True)
    pred_idx = pred_idx.ravel()
    n_clusters = int(len(cluster_ids) - (1 if n_outliers else 0))

    # Outliers become fresh singleton labels for ARI/NMI.
    pred_singletons = pred_idx.astype(np.int64).copy()
    pred_singletons[outlier] = len(cluster_ids) + np.arange(n_outliers)
    ari = float(adjusted_rand_score(true_idx, pred_singletons))
    nmi = float(normalized_mutual_info_score(true_idx, pred_singletons))

    inlier = ~outlier
    contingency = sparse.coo_matrix(
        (np.ones(int(inlier.sum()), dtype=np.int64), (pred_idx[inlier], true_idx[inlier])),
        shape=(len(cluster_ids), int(true_idx.max()) + 1),
    ).tocsr()
    contingency.sum_duplicates()
    tp = _pairs(contingency.data)
    predicted_pos = _pairs(np.bincount(pred_idx[inlier]))
    true_pos = _pairs(np.bincount(true_idx))
    precision = tp / predicted_pos if predicted_pos else 1.0
    recall = tp / true_pos if true_pos else 1.0
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return ClusteringScores(
        ari=ari,
        nmi=nmi,
        pairwise_precision=float(precision),
        pairwise_recall=float(recall),
        pairwise_f=float(f),
        n_clusters=n_clusters,
        n_outliers=n_outliers,
        n_samples=int(len(pred)),
    )
