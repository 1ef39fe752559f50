"""Nearest gallery crops for query embeddings: a faiss index, a camera filter, re-ranked top-k.

``flat`` is exact (every distance computed, BLAS-bound); past a few million rows its
memory (4·d bytes a row) and time grow linearly, so ``ivfpq`` trades a little recall for an
index of ``pq_m`` bytes a row and a search that visits ``nprobe`` of ``nlist`` cells. On a
machine where faiss sees a GPU the index is moved there.

Distances are squared Euclidean on unit vectors (``2 − 2·cos``), the quantity ``evaluate``
ranks by; equal distances are ordered by gallery index, as ``evaluate_rank`` orders them,
so a full ranking here gives the same CMC and mAP.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_reid.clustering.knn import _as_features, _gpu_search
from ray_reid.validation import check_count

log = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "flat", "ivfpq")
#: ``auto`` switches from the exact flat index to IVF-PQ beyond this many gallery rows.
IVFPQ_FROM_ROWS = 2_000_000


@dataclass(frozen=True)
class IndexConfig:
    """Which faiss index; ``nlist=None`` means ``4·√N`` cells (faiss's rule of thumb)."""

    kind: str = "auto"
    nlist: int | None = None
    pq_m: int = 32
    nprobe: int = 32
    device: str = "auto"  # 'auto' | 'cpu' | 'cuda'

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"IndexConfig.kind must be one of {INDEX_KINDS}, got {self.kind!r}")
        for name in ("pq_m", "nprobe"):
            check_count(f"IndexConfig.{name}", getattr(self, name))
        check_count("IndexConfig.nlist", self.nlist, optional=True)


class EmbeddingIndex:
    """A faiss index over gallery embeddings; ``search`` returns ``(distances, indices)`` best first."""

    def __init__(self, gallery: np.ndarray, cfg: IndexConfig = IndexConfig()) -> None:
        import faiss

        x = _as_features(gallery, name="gallery embeddings")
        self.ntotal, self.dim = x.shape
        self.kind = cfg.kind if cfg.kind != "auto" else ("ivfpq" if self.ntotal > IVFPQ_FROM_ROWS else "flat")
        if self.kind == "flat":
            index = faiss.IndexFlatL2(self.dim)
        else:
            if self.dim % cfg.pq_m:
                raise ValueError(f"IndexConfig.pq_m={cfg.pq_m} must divide the embedding width {self.dim}")
            nlist = cfg.nlist or max(1, int(4 * math.sqrt(self.ntotal)))
            if self.ntotal < 39 * nlist:
                raise ValueError(f"an IVF index with nlist={nlist} needs at least {39 * nlist} gallery rows to "
                                 f"train, got {self.ntotal}: use kind='flat' or a smaller nlist")
            index = faiss.IndexIVFPQ(faiss.IndexFlatL2(self.dim), self.dim, nlist, cfg.pq_m, 8)
            index.nprobe = min(cfg.nprobe, nlist)
            index.train(x)
        self.on_gpu = _gpu_search(cfg.device) == "faiss"
        if self.on_gpu:
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(x)
        self.index = index
        log.info("faiss %s index over %d embeddings of width %d%s", self.kind, self.ntotal, self.dim,
                 " on GPU" if self.on_gpu else "")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest rows per query (squared L2, ascending; ties by gallery index; -1 past the end)."""
        q = _as_features(queries, name="query embeddings")
        if q.shape[1] != self.dim:
            raise ValueError(f"query embeddings have width {q.shape[1]} but the index holds width {self.dim}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(min(k, self.ntotal))
        dist, idx = self.index.search(q, k)
        order = np.lexsort((np.where(idx < 0, np.iinfo(np.int64).max, idx), dist), axis=1)
        return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


def search_topk(index: EmbeddingIndex, queries: np.ndarray, k: int, *, query_cameras: np.ndarray | None = None,
                gallery_cameras: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` per query, skipping gallery rows of the query's camera when cameras are given.

    Camera ``-1`` (unknown) is never filtered. The search widens (×4 each round) for the
    queries that lost too many hits to the filter, until they have ``k`` or the gallery is
    exhausted; missing slots are ``-1`` with distance ``inf``.
    """
    filtering = query_cameras is not None and gallery_cameras is not None
    if not filtering:
        dist, idx = index.search(queries, k)
        return _pad(dist, idx, k)
    query_cameras = np.asarray(query_cameras)
    gallery_cameras = np.asarray(gallery_cameras)
    if len(gallery_cameras) != index.ntotal or len(query_cameras) != len(queries):
        raise ValueError(f"cameras must have one entry per row: {len(query_cameras)} for {len(queries)} queries, "
                         f"{len(gallery_cameras)} for {index.ntotal} gallery rows")
    out_d = np.full((len(queries), k), np.inf, np.float32)
    out_i = np.full((len(queries), k), -1, np.int64)
    todo = np.arange(len(queries))
    width = min(index.ntotal, 2 * k)
    while len(todo):
        dist, idx = index.search(queries[todo], width)
        cams = np.where(idx >= 0, gallery_cameras[np.maximum(idx, 0)], -1)
        qc = query_cameras[todo][:, None]
        keep = (idx >= 0) & ~((cams == qc) & (qc != -1))
        enough = (keep.sum(axis=1) >= k) | (width >= index.ntotal)
        for row in np.flatnonzero(enough):
            sel = np.flatnonzero(keep[row])[:k]
            out_d[todo[row], :len(sel)] = dist[row, sel]
            out_i[todo[row], :len(sel)] = idx[row, sel]
        todo = todo[~enough]
        width = min(index.ntotal, width * 4)
    return out_d, out_i


def _pad(dist: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if dist.shape[1] == k:
        return dist, idx
    pad = k - dist.shape[1]
    return (np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf),
            np.pad(idx, ((0, 0), (0, pad)), constant_values=-1))


class CameraMasked:
    """A query × gallery distance whose same-camera entries are pushed to +inf (the re-ID question).

    Wraps any :class:`~ray_reid.eval.topk.DistanceBlocks` (e.g. a re-ranked distance) so that
    :func:`~ray_reid.eval.topk.exact_topk` returns other-camera hits only; camera ``-1``
    (unknown) is never masked.
    """

    def __init__(self, distances: Any, query_cameras: np.ndarray, gallery_cameras: np.ndarray) -> None:
        self.distances = distances
        self.query_cameras, self.gallery_cameras = np.asarray(query_cameras), np.asarray(gallery_cameras)
        if self.query_cameras.shape != (distances.shape[0],) or self.gallery_cameras.shape != (distances.shape[1],):
            raise ValueError(f"cameras must have one entry per row: {self.query_cameras.shape} for "
                             f"{distances.shape[0]} queries, {self.gallery_cameras.shape} for {distances.shape[1]} "
                             "gallery rows")

    @property
    def shape(self) -> tuple[int, int]:
        return self.distances.shape

    def block(self, start: int, stop: int) -> np.ndarray:
        out = np.array(self.distances.block(start, stop), copy=True)  # dtype kept: no new ties
        qc = self.query_cameras[start:stop, None]
        out[(qc == self.gallery_cameras[None, :]) & (qc != -1)] = np.inf
        return out


def reranked_topk(queries: np.ndarray, gallery: np.ndarray, k: int, rerank: Any, *,
                  query_cameras: np.ndarray | None = None, gallery_cameras: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, Any]:
    """Top ``k`` by the k-reciprocal re-ranked distance (exact), optionally other cameras only.

    Returns ``(distances, indices, reranked)``; ``reranked`` is the
    :class:`~ray_reid.eval.rerank.RerankedDistances` the metrics can rank by. Slots past the
    gallery's usable rows are ``-1`` with distance ``inf``.
    """
    from ray_reid.eval.rerank import k_reciprocal_rerank
    from ray_reid.eval.topk import exact_topk

    reranked = k_reciprocal_rerank(queries, gallery, rerank)
    source: Any = reranked
    if query_cameras is not None and gallery_cameras is not None:
        source = CameraMasked(reranked, query_cameras, gallery_cameras)
    dist, idx = exact_topk(source, k)
    idx = np.where(np.isfinite(dist), idx, -1)
    return *_pad(dist, idx, k), reranked
