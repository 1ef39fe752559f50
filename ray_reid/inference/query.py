"""``search``: embed (or read) query crops, find their nearest gallery crops, write what was found.

Outputs: ``results.csv`` and ``results.json`` (top-k per query: path, camera, distance),
``rank_list.png`` (a handful of queries and their hits), and with ``evaluate=True``
``metrics.json``: mAP and CMC under the Market-1501 protocol, for query and gallery crops whose
names carry identities, computed by the very function ``evaluate`` uses
(:func:`~ray_reid.eval.features.reid_metrics`), on the embeddings the index holds.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_reid.atomic import atomic_write
from ray_reid.inference.images import cameras_of, decode_crop, list_images, parse_ids, read_bytes
from ray_reid.inference.model import Embedder, InferenceSpec, load_trained
from ray_reid.inference.search import EmbeddingIndex, IndexConfig, reranked_topk, search_topk
from ray_reid.inference.shards import MANIFEST, EmbeddingFolder, Embeddings, read_embeddings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult:
    query_paths: np.ndarray
    distances: np.ndarray
    indices: np.ndarray
    gallery_paths: np.ndarray
    metrics: dict[str, float] | None
    skipped_queries: list[dict[str, str]]


def embed_locally(paths: list[str], weights: dict, spec: InferenceSpec, *, batch_size: int = 64,
                  endpoint_url: str | None = None) -> tuple[list[str], np.ndarray, list[dict[str, str]]]:
    """Embed a few crops in this process (no Ray): the global view of those that decode, and the others."""
    embedder = Embedder(weights, spec)
    kept, feats, bad = [], [], []
    for start in range(0, len(paths), batch_size):
        crops = []
        for path in paths[start:start + batch_size]:
            crop, error = decode_crop(read_bytes(path, endpoint_url=endpoint_url), spec.height, spec.width)
            if crop is None:
                bad.append({"path": path, "error": error})
            else:
                kept.append(path)
                crops.append(crop)
        if crops:
            feats.append(embedder(np.stack(crops))["global"])
    if not feats:
        raise ValueError(f"none of the {len(paths)} query crops could be decoded (first: {bad[0]})")
    return kept, np.concatenate(feats), bad


def load_queries(location: str, gallery: Embeddings, *, model: str | None, endpoint_url: str | None
                 ) -> tuple[list[str], np.ndarray, list[dict[str, str]]]:
    """Query embeddings from an embedding folder, or from crops embedded with the gallery's model."""
    if EmbeddingFolder(location, endpoint_url=endpoint_url).exists(MANIFEST):
        queries = read_embeddings(location, views=["global"], endpoint_url=endpoint_url)
        if queries.spec.weights_sha256 != gallery.spec.weights_sha256:
            raise ValueError(f"queries in {location} were embedded by another model than the index "
                             f"({queries.spec.checkpoint} vs {gallery.spec.checkpoint}): distances would mean nothing")
        return list(queries.paths), queries.features["global"], queries.bad
    weights, spec = load_trained(model or gallery.spec.checkpoint)
    if spec.weights_sha256 != gallery.spec.weights_sha256:
        raise ValueError(f"model {model or gallery.spec.checkpoint} is not the one that embedded the index "
                         f"({gallery.spec.checkpoint}, weights sha256 {gallery.spec.weights_sha256[:12]}...)")
    paths = list_images(location, endpoint_url=endpoint_url)
    log.info("embedding %d query crops from %s with %s", len(paths), location, spec.checkpoint)
    return embed_locally(paths, weights, spec, endpoint_url=endpoint_url)


def search_images(index_location: str, queries_location: str, out: str, *, k: int = 10,
                  camera_filter: bool = True, index_cfg: IndexConfig = IndexConfig(), evaluate: bool = False,
                  plot_queries: int = 8, model: str | None = None, rerank: Any = None,
                  endpoint_url: str | None = None) -> SearchResult:
    """Top ``k`` gallery crops of ``index_location`` for every crop of ``queries_location``; outputs to ``out``.

    ``camera_filter`` skips gallery crops from the query's own camera (the re-ID question is
    "where *else* did this person appear"); crops whose names carry no camera are never filtered.
    ``rerank`` (a :class:`~ray_reid.eval.rerank.RerankConfig`) ranks by the k-reciprocal
    re-ranked distance instead (exact; memory O((Q + G)·k1)), for the hits and the metrics.
    """
    from ray_reid import locations
    from ray_reid.eval.features import l2_normalize, metrics_from_distances, reid_metrics
    from ray_reid.eval.plots import plot_search_results

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    gallery = read_embeddings(index_location, views=["global"], endpoint_url=endpoint_url)
    q_paths, q_feats, skipped = load_queries(queries_location, gallery, model=model, endpoint_url=endpoint_url)
    if skipped:
        log.warning("%d query crops could not be decoded and were skipped (first: %s)", len(skipped),
                    skipped[0]["path"])
    q_cams = cameras_of(q_paths)
    g_feats = gallery.features["global"]
    cams = {"query_cameras": q_cams, "gallery_cameras": gallery.cameras} if camera_filter else {}
    reranked = None
    if rerank is not None:
        # normalised as reid_metrics normalises, so that --evaluate scores these very distances
        q_feats, g_feats = l2_normalize(q_feats), l2_normalize(g_feats)
        dist, idx, reranked = reranked_topk(q_feats, g_feats, k, rerank, **cams)
        how = f"k-reciprocal re-ranked (k1={rerank.k1}, k2={rerank.k2}, lambda={rerank.lambda_value:g})"
    else:
        index = EmbeddingIndex(g_feats, index_cfg)
        dist, idx = search_topk(index, q_feats, k, **cams)
        how = f"faiss {index.kind}"
    metrics = None
    if evaluate:
        q_ids = np.array([parse_ids(p)[0] for p in q_paths])
        g_ids = np.array([parse_ids(p)[0] for p in gallery.paths])
        if (q_cams < 0).any() or (gallery.cameras < 0).any():
            raise ValueError("evaluation needs identities and cameras in every file name (<pid>_c<camera>...); "
                             f"e.g. {q_paths[int(np.argmax(q_cams < 0))] if (q_cams < 0).any() else gallery.paths[0]}"
                             " has none")
        if reranked is not None:  # the re-ranked distances the hits came from: computed once
            metrics = metrics_from_distances(reranked, q_ids, g_ids, q_cams, gallery.cameras)
        else:
            metrics = reid_metrics(q_feats, g_feats, q_ids, g_ids, q_cams, gallery.cameras)
        metrics.update(queries=len(q_paths), gallery=len(g_feats), rerank=rerank is not None)
        log.info("mAP %.1f%%  rank-1 %.1f%%  rank-5 %.1f%%  rank-10 %.1f%%  (%d queries, %d gallery, "
                 "Market-1501 protocol%s)", 100 * metrics["mAP"], 100 * metrics["rank1"], 100 * metrics["rank5"],
                 100 * metrics["rank10"], len(q_paths), len(g_feats), ", re-ranked" if rerank is not None else "")
    target = locations.absolute(out)
    with locations.writable_dir(target) as folder:
        _write_results(folder, q_paths, q_cams, gallery, dist, idx)
        if metrics is not None:
            _write_json(folder / "metrics.json", {**metrics, "index": index_location, "queries_from": queries_location})
        if plot_queries:
            labelled = {}
            if evaluate:
                labelled = {"query_pids": [parse_ids(p)[0] for p in q_paths],
                            "gallery_pids": [parse_ids(p)[0] for p in gallery.paths]}
            plot_search_results(q_paths, list(gallery.paths), idx, dist, folder / "rank_list.png",
                                read=lambda p: read_bytes(p, endpoint_url=endpoint_url), n_queries=plot_queries,
                                topk=min(k, 10), **labelled)
    log.info("searched %d queries against %d gallery crops (top %d by %s%s): results.csv, results.json, "
             "rank_list.png in %s", len(q_paths), len(g_feats), k, how, ", other cameras only" if camera_filter else "",
             target)
    return SearchResult(np.asarray(q_paths, dtype=object), dist, idx, gallery.paths, metrics, skipped)


def _write_json(path, obj: Any) -> None:
    def _write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, default=float)

    atomic_write(path, _write)


def _write_results(folder, q_paths, q_cams, gallery: Embeddings, dist: np.ndarray, idx: np.ndarray) -> None:
    rows = []
    for qi, qpath in enumerate(q_paths):
        hits = [{"rank": r + 1, "path": str(gallery.paths[g]), "camera": int(gallery.cameras[g]),
                 "distance": float(dist[qi, r])} for r, g in enumerate(idx[qi]) if g >= 0]
        rows.append({"query": qpath, "camera": int(q_cams[qi]), "hits": hits})
    _write_json(folder / "results.json", rows)

    def _csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["query", "query_camera", "rank", "gallery", "gallery_camera", "distance"])
            for row in rows:
                for hit in row["hits"]:
                    writer.writerow([row["query"], row["camera"], hit["rank"], hit["path"], hit["camera"],
                                     f"{hit['distance']:.6f}"])

    atomic_write(folder / "results.csv", _csv)
