"""Test-time k-reciprocal re-ranking (Zhong et al., CVPR'17) in O(N·k) memory.

The published ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3)``
(torchreid, fast-reid) builds the (Q+G)² distance matrix, a full argsort of it and a dense
(Q+G)² encoding V: 35 GB of float32 for MSMT17's 93,820 test images before the argsort.
The algorithm itself only ever looks at each image's k1 + 1 nearest neighbours, so here it
runs on the sparse machinery the pseudo-labeller already has
(:mod:`ray_reid.clustering.jaccard`):

1. exact k-NN of all Q+G images among themselves (k1 + 1 columns, self first) and each
   image's largest squared distance ``M(i)`` (the published code divides row i by it);
2. k-reciprocal sets over ``k1 + 1`` columns, expanded by the sets over ``round(k1/2) + 1``
   columns of candidates that overlap them by more than 2/3;
3. ``V[i, S(i)]`` = softmax of ``-d(i, j)² / M(i)``; local query expansion over k2 neighbours;
4. Jaccard distance of each query's V row to each gallery row (sparse: pairs that share
   no support are at distance 1 and are not stored);
5. ``final = (1 − λ)·d_J + λ·d²/M(i)``, handed out a block of query rows at a time.

``d`` is the Euclidean distance between features (the paper's; the published function
squares the distances it is given). Memory is the k-NN lists, V (a few hundred entries a
row) and the stored Jaccard pairs, plus one block of dense rows while ranking.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ray_reid.clustering.jaccard import _encode, _expanded_sets, _jaccard_between, _query_expand
from ray_reid.clustering.knn import knn_search
from ray_reid.eval.topk import as_features, squared_distances

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankConfig:
    """Parameters of k-reciprocal re-ranking; the defaults are the paper's (and torchreid's)."""

    k1: int = 20  #: neighbours (besides the image itself) the k-reciprocal sets are drawn from
    k2: int = 6  #: neighbours (the image included) averaged in local query expansion
    lambda_value: float = 0.3  #: weight of the original distance against the Jaccard distance

    def __post_init__(self) -> None:
        for name in ("k1", "k2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"rerank.{name} must be a positive integer, got {value!r}")
        if self.k2 > self.k1 + 1:
            raise ValueError(f"rerank.k2 ({self.k2}) must be at most k1 + 1 ({self.k1 + 1})")
        lam = self.lambda_value
        if isinstance(lam, bool) or not isinstance(lam, (int, float, np.floating)) or not 0.0 <= lam <= 1.0:
            raise ValueError(f"rerank.lambda_value must be a number in [0, 1], got {lam!r}")


class RerankedDistances:
    """The re-ranked query × gallery distance, stored as its sparse Jaccard part.

    Dense rows are produced on demand (:meth:`block`), so ``evaluate_rank`` and
    :func:`~ray_reid.eval.topk.exact_topk` walk it like any distance matrix without it ever
    being held whole. Attributes: ``jaccard`` (CSR [Q, G], absent entries mean 1),
    ``row_max`` (each query's largest squared distance over all Q+G images), ``config``.
    """

    def __init__(self, query: np.ndarray, gallery: np.ndarray, jaccard: sp.csr_matrix,
                 row_max: np.ndarray, config: RerankConfig) -> None:
        self.query, self.gallery = query, gallery
        self.jaccard, self.row_max, self.config = jaccard, row_max, config
        self._g_sq = np.einsum("ij,ij->i", gallery, gallery)

    @property
    def shape(self) -> tuple[int, int]:
        return self.query.shape[0], self.gallery.shape[0]

    def block(self, start: int, stop: int) -> np.ndarray:
        """Re-ranked distances of query rows ``start:stop`` to the whole gallery, float32."""
        lam = np.float32(self.config.lambda_value)
        out = squared_distances(self.query[start:stop], self.gallery, self._g_sq)
        out /= self.row_max[start:stop, None]
        out *= lam
        jac = self.jaccard[start:stop]
        # (1 - λ)·d_J with d_J = 1 where no pair is stored: add (1 - λ) everywhere, then
        # correct the stored pairs by (1 - λ)·(d_J - 1).
        out += np.float32(1.0) - lam
        rows = np.repeat(np.arange(stop - start), np.diff(jac.indptr))
        out[rows, jac.indices] += (np.float32(1.0) - lam) * (jac.data - np.float32(1.0))
        return out

    def to_dense(self) -> np.ndarray:
        """The whole [Q, G] matrix (small inputs, tests)."""
        return self.block(0, self.shape[0])


def k_reciprocal_rerank(query_feats: Any, gallery_feats: Any, config: RerankConfig = RerankConfig(), *,
                        device: str = "auto", progress: bool = False) -> RerankedDistances:
    """Re-rank a query × gallery search by k-reciprocal encoding (Zhong et al., CVPR'17).

    Equal, within float32 rounding, to the published ``re_ranking(q_g, q_q, g_g, k1, k2,
    lambda_value)`` given the Euclidean distance matrices of these features; see the module
    docstring for the steps. ``device`` picks where faiss searches neighbours ('auto' | 'cpu'
    | 'cuda'). Needs Q + G > k1 (every image must have k1 neighbours besides itself).
    """
    q = as_features("query_feats", query_feats)
    g = as_features("gallery_feats", gallery_feats)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query_feats has dimension {q.shape[1]} but gallery_feats has {g.shape[1]}; they must match")
    if not isinstance(config, RerankConfig):
        raise TypeError(f"config must be a RerankConfig, got {type(config).__name__}")
    if len(q) == 0 or len(g) == 0:
        raise ValueError(f"need at least one query and one gallery image, got {len(q)} and {len(g)}")
    x = np.concatenate([q, g])
    n, k1 = len(x), config.k1
    if n < k1 + 1:
        raise ValueError(f"rerank.k1 = {k1} needs more than k1 images in query + gallery, got {n}")

    knn_dist, knn_idx, row_max = knn_search(x, k1 + 1, device=device, return_row_max=True)
    # A row whose farthest image is at distance 0 (all images identical) has nothing to scale.
    row_max = np.where(row_max > 0, row_max, np.float32(1.0)).astype(np.float32)
    expanded = _expanded_sets(knn_idx, k1 + 1, int(np.around(k1 / 2.0)) + 1)
    v = _encode(x, knn_dist, knn_idx, expanded, row_scale=row_max)
    v = _query_expand(v, knn_idx, config.k2)
    nq = len(q)
    jaccard = _jaccard_between(v[:nq], v[nq:], progress=progress)
    log.info(
        "re-ranking: %d queries x %d gallery, k1=%d k2=%d lambda=%.2f; %.1f supported gallery pairs per query",
        nq, len(g), k1, config.k2, config.lambda_value, jaccard.nnz / max(nq, 1),
    )
    if not math.isfinite(float(jaccard.data.sum())):
        raise FloatingPointError("re-ranking produced a non-finite Jaccard distance")
    return RerankedDistances(q, g, jaccard, row_max[:nq].copy(), config)
