"""Leave out the members a clustering is least sure of: those whose nearest neighbours lie elsewhere.

DBSCAN on the Jaccard distance marks the images without enough reliable neighbours as
outliers and the epoch trains without them; a hierarchy assigns every image to some cluster,
so each wrong merge becomes a confident wrong positive in the contrastive loss. The criterion
here is the local one a k-NN classifier would use: an image keeps its pseudo-label when at least
``min_agreement`` of its ``n_neighbors`` nearest neighbours (itself excluded) carry the same
label. It needs only the k-NN search (exact, faiss/CuPy on a GPU), never an N×N matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ray_reid.clustering.knn import knn_search


def neighbour_agreement(features: Any, labels: np.ndarray, *, n_neighbors: int, device: str = "auto") -> np.ndarray:
    """Fraction of each row's ``n_neighbors`` nearest other rows with the same label (-1 never agrees)."""
    labels = np.asarray(labels)
    n = int(features.shape[0])
    if labels.shape != (n,):
        raise ValueError(f"labels must have one entry per feature row ({n}), got shape {labels.shape}")
    if not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be an integer >= 1, got {n_neighbors!r}")
    if n < 2:
        return np.zeros(n, dtype=np.float64)
    k = min(int(n_neighbors), n - 1)
    _, indices = knn_search(features, k + 1, device=device)  # column 0 is the row itself
    neigh = labels[np.asarray(indices)[:, 1:k + 1]]
    same = (neigh == labels[:, None]) & (labels[:, None] >= 0)
    return same.mean(axis=1)


def drop_uncertain(features: Any, labels: np.ndarray, *, n_neighbors: int, min_agreement: float,
                   device: str = "auto") -> np.ndarray:
    """A copy of ``labels`` with -1 for every member whose neighbour agreement is below ``min_agreement``."""
    if not 0.0 <= min_agreement <= 1.0:
        raise ValueError(f"min_agreement must be in [0, 1], got {min_agreement!r}")
    out = np.array(labels, dtype=np.int64, copy=True)
    if min_agreement == 0.0:
        return out
    agreement = neighbour_agreement(features, out, n_neighbors=n_neighbors, device=device)
    out[agreement < min_agreement] = -1
    return out
