"""The published k-reciprocal Jaccard distance, loop for loop: the one reference benchmark and tests compare against.

Written from the algorithm as published (Zhong et al.'s k-reciprocal encoding as cluster-contrast's
``compute_jaccard_distance`` uses it): a dense N x N distance matrix and a full row-wise argsort of it,
Python loops over rows for the k-reciprocal sets and their expansion, dense V and query-expanded V, a
per-column inverted index and a dense N x N Jaccard matrix. Like the public code it keeps k1
neighbour columns (self included) and slices them ``[:k + 1]``. O(N^2) memory: small N only, or the
benchmark's baseline. ``benchmarks/clustering_jaccard.py`` times it; ``tests/clustering/test_jaccard.py``
checks :func:`ray_reid.clustering.compute_jaccard_distance` against :func:`published_from_rank`.
"""

from __future__ import annotations

import time

import numpy as np


def published_rank(x: np.ndarray, k1: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """The dense N x N float32 squared distance and the first k1 columns of its full argsort."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    sq = np.einsum("ij,ij->i", x, x)
    original_dist = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    initial_rank = np.argsort(original_dist, axis=1).astype(np.int32)[:, :k1]
    return original_dist, initial_rank


def published_port(x: np.ndarray, k1: int = 30, k2: int = 6) -> tuple[np.ndarray, np.ndarray, float]:
    """Dense Jaccard distance [N, N] float32, the k1-column neighbour list it ranked with,
    and the seconds the ranking (dense distance + argsort) took."""
    t0 = time.perf_counter()
    original_dist, initial_rank = published_rank(x, k1)
    rank_secs = time.perf_counter() - t0
    return published_from_rank(original_dist, initial_rank, k1, k2), initial_rank, rank_secs


def published_from_rank(
    original_dist: np.ndarray, initial_rank: np.ndarray, k1: int = 30, k2: int = 6
) -> np.ndarray:
    """Everything after the ranking, as published: Python loops over rows, dense V and Jaccard."""
    n = original_dist.shape[0]

    def k_reciprocal_neigh(i: int, k: int) -> np.ndarray:
        forward = initial_rank[i, : k + 1]
        backward = initial_rank[forward, : k + 1]
        return forward[np.where(backward == i)[0]]

    nn_k1 = [k_reciprocal_neigh(i, k1) for i in range(n)]
    nn_k1_half = [k_reciprocal_neigh(i, int(np.around(k1 / 2))) for i in range(n)]

    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        k_reciprocal = nn_k1[i]
        expansion = k_reciprocal
        for candidate in k_reciprocal:
            cand = nn_k1_half[candidate]
            if len(np.intersect1d(cand, k_reciprocal)) > 2 / 3 * len(cand):
                expansion = np.append(expansion, cand)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        v[i, expansion] = weight / np.sum(weight)
    del nn_k1, nn_k1_half

    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i, :] = np.mean(v[initial_rank[i, :k2], :], axis=0)
        v = v_qe
        del v_qe

    inv_index = [np.where(v[:, j] != 0)[0] for j in range(n)]
    jaccard = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        temp_min = np.zeros((1, n), dtype=np.float32)
        nonzero = np.where(v[i, :] != 0)[0]
        for j in nonzero:
            rows = inv_index[j]
            temp_min[0, rows] = temp_min[0, rows] + np.minimum(v[i, j], v[rows, j])
        jaccard[i] = 1 - temp_min / (2 - temp_min)
    jaccard[jaccard < 0] = 0.0
    return jaccard
