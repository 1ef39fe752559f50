"""Synthetic embeddings shaped like a re-ID training set: a mixture of clusters on the unit sphere.

Cluster sizes are uneven (Market-1501's 751 ids hold 2..72 images each), some clusters
have a near-duplicate twin (people dressed alike), and features are L2-normalised as the
trainer's embeddings are. Shared by the clustering benchmarks so they measure the same data.
"""

from __future__ import annotations

import numpy as np


def sphere_mixture(
    n: int,
    n_clusters: int = 751,
    dim: int = 2048,
    *,
    noise: float = 0.9,
    twin_fraction: float = 0.15,
    twin_distance: float = 0.6,
    seed: int = 0,
    dtype=np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(features [n, dim], true_labels [n])``; every cluster gets at least one point."""
    if n < n_clusters:
        raise ValueError(f"n={n} must be >= n_clusters={n_clusters}")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    n_twins = int(twin_fraction * n_clusters) // 2
    for a, b in rng.permutation(n_clusters)[: 2 * n_twins].reshape(-1, 2):
        direction = rng.standard_normal(dim)
        direction -= direction @ centres[a] * centres[a]
        direction /= np.linalg.norm(direction)
        centres[b] = centres[a] + twin_distance * direction
        centres[b] /= np.linalg.norm(centres[b])
    weights = rng.lognormal(mean=0.0, sigma=0.6, size=n_clusters)
    extra = rng.multinomial(n - n_clusters, weights / weights.sum())
    labels = np.repeat(np.arange(n_clusters), 1 + extra)
    rng.shuffle(labels)
    x = centres[labels] + noise * rng.standard_normal((n, dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(dtype, copy=False), labels
