"""Re-ID accuracy straight from query and gallery embeddings, as the trainer reports it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ray_reid.eval.rank import compute_distmat, evaluate_rank
from ray_reid.eval.topk import as_features as _as_features


def l2_normalize(feats: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length; the protocol compares directions, not magnitudes."""
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return feats / np.maximum(norms, eps)


def reid_metrics(
    query_feats: Any,
    gallery_feats: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    ranks: Sequence[int] = (1, 5, 10),
    *,
    normalize: bool = True,
    rerank: Any = None,
) -> dict[str, float]:
    """``{"mAP": .., "rank1": .., "rank5": .., "rank10": ..}`` as fractions in [0, 1].

    Features are L2-normalised first (``normalize=True``, idempotent for features that
    already are), so the distance is ``2 − 2·cos`` as the Market-1501 protocol expects.
    A ``rank{k}`` key is produced for every ``k`` in ``ranks``. With ``rerank`` (a
    :class:`~ray_reid.eval.rerank.RerankConfig`) the gallery is ranked by the k-reciprocal
    re-ranked distance instead.
    """
    ranks = tuple(ranks)
    if not ranks or any(isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1 for r in ranks):
        raise ValueError(f"ranks must be a non-empty sequence of positive integers, got {ranks!r}")
    q = _as_features("query_feats", query_feats)
    g = _as_features("gallery_feats", gallery_feats)
    if normalize:
        q, g = l2_normalize(q), l2_normalize(g)
    if rerank is not None:
        from ray_reid.eval.rerank import k_reciprocal_rerank

        distmat = k_reciprocal_rerank(q, g, rerank)
    else:
        distmat = compute_distmat(q, g)
    return metrics_from_distances(distmat, q_pids, g_pids, q_camids, g_camids, ranks)


def metrics_from_distances(distances: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any,
                           ranks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """:func:`reid_metrics` of a query × gallery distance already computed (an array, or an
    object with ``shape`` and ``block(start, stop)`` such as re-ranked distances).

    Lets a caller that needed the distances anyway (search ranks its hits by them) score them
    without computing them a second time; k-reciprocal re-ranking is the costly case.
    """
    ranks = tuple(ranks)
    if not ranks or any(isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1 for r in ranks):
        raise ValueError(f"ranks must be a non-empty sequence of positive integers, got {ranks!r}")
    cmc, m_ap = evaluate_rank(distances, q_pids, g_pids, q_camids, g_camids, max_rank=max(ranks))
    out = {"mAP": m_ap}
    out.update({f"rank{int(r)}": float(cmc[int(r) - 1]) for r in ranks})
    return out


def query_gallery_metrics(features: Any, query: Sequence[Any], gallery: Sequence[Any], *,
                          rerank: Any = None) -> dict[str, float]:
    """:func:`reid_metrics` of features in ``query + gallery`` order, ids and cameras from the records."""
    records = list(query) + list(gallery)
    feats = _as_features("features", features)
    if len(feats) != len(records):
        raise ValueError(f"got {len(feats)} feature rows for {len(query)} queries + {len(gallery)} gallery images")
    nq = len(query)
    pids = np.array([r.pid for r in records])
    cams = np.array([r.camid for r in records])
    return reid_metrics(feats[:nq], feats[nq:], pids[:nq], pids[nq:], cams[:nq], cams[nq:], rerank=rerank)
