"""Test-only reference: a direct, loop-for-loop port of the published k-reciprocal re-ranking.

This is the dense ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3)``
that torchreid and fast-reid ship (Zhong et al., CVPR'17; the distance-matrix version by
H. Huang): an (N x N) distance, a full argsort, a dense V and Python loops over rows. It is
O(N^2) in memory and kept here only to check :mod:`ray_reid.eval.rerank` against on small N.
"""

from __future__ import annotations

import numpy as np


def _reciprocal(initial_rank: np.ndarray, i: int, cols: int) -> np.ndarray:
    forward = initial_rank[i, :cols]
    backward = initial_rank[forward, :cols]
    return forward[np.where(backward == i)[0]]


def published_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """Re-ranked [num_query, num_gallery] distance, exactly as the published function computes it."""
    original = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1), np.concatenate([q_g_dist.T, g_g_dist], axis=1)],
        axis=0,
    )
    original = np.power(original, 2).astype(np.float32)
    original = np.transpose(1.0 * original / np.max(original, axis=0))
    V = np.zeros_like(original).astype(np.float32)
    initial_rank = np.argsort(original).astype(np.int32)
    query_num = q_g_dist.shape[0]
    all_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    half = int(np.around(k1 / 2.0)) + 1

    for i in range(all_num):
        k_reciprocal = _reciprocal(initial_rank, i, k1 + 1)
        expansion = k_reciprocal
        for candidate in k_reciprocal:
            cand_reciprocal = _reciprocal(initial_rank, candidate, half)
            if len(np.intersect1d(cand_reciprocal, k_reciprocal)) > 2.0 / 3 * len(cand_reciprocal):
                expansion = np.append(expansion, cand_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        V[i, expansion] = 1.0 * weight / np.sum(weight)
    original = original[:query_num]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]

    jaccard = np.zeros_like(original, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        non_zero = np.where(V[i, :] != 0)[0]
        for j in non_zero:
            images = inv_index[j]
            temp_min[0, images] = temp_min[0, images] + np.minimum(V[i, j], V[images, j])
        jaccard[i] = 1 - temp_min / (2.0 - temp_min)

    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:query_num, query_num:]
