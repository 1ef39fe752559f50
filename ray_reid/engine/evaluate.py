"""A finished checkpoint, evaluated on its own: the figures the run reported, plus what people look at.

The same extraction and metrics as the training run's own evaluation (one process instead of
sharded ranks), so a checkpoint evaluated here gives the mAP its epoch reported; then the
clustering scores of the pseudo-labels it was trained on, a rank list and a t-SNE picture.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ray_reid.config import config_from_dict
from ray_reid.data.resolve import load_configured_dataset
from ray_reid.data.transforms import test_transform
from ray_reid.engine.checkpoint import load_checkpoint, write_json
from ray_reid.engine.extract import extract_features
from ray_reid.eval.cluster_metrics import clustering_scores
from ray_reid.eval.features import query_gallery_metrics
from ray_reid.eval.rank import compute_distmat
from ray_reid.models import build_model

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
RANK_LIST_FILE = "rank_list.png"
EMBEDDING_FILE = "embedding.png"


def evaluate_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path, *, dataset: str | None = None,
                        data_root: str | None = None, max_tsne_points: int = 2000,
                        device: str | None = None, rerank: Any = None) -> dict[str, Any]:
    """Write metrics.json, rank_list.png and embedding.png for a local checkpoint folder; return the metrics.

    With ``rerank`` (a :class:`~ray_reid.eval.rerank.RerankConfig`) the metrics also carry the
    k-reciprocal re-ranked figures under ``"rerank"`` (and the rank list uses that distance).

    ``dataset``/``data_root`` default to the ones the checkpoint was trained on; naming another
    dataset without a root means its registered default location (``None``).
    """
    from ray_reid.eval.plots import plot_embedding, plot_rank_list

    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    loaded = load_checkpoint(checkpoint_dir)
    cfg = config_from_dict(loaded["meta"]["config"])
    name = dataset or cfg.data.dataset
    root = data_root if data_root is not None else (cfg.data.root if dataset is None else None)
    data = load_configured_dataset(name, root)
    model = build_model(cfg.model.replace(pretrained=None))  # the weights come from the checkpoint
    model.load_state_dict(loaded["state"]["model"])
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    transform = test_transform(cfg.data)
    out_dir.mkdir(parents=True, exist_ok=True)

    records = list(data.query) + list(data.gallery)
    feats = extract_features(model, records, transform, device=device, progress=True, desc="query+gallery")["global"]
    metrics: dict[str, Any] = query_gallery_metrics(feats, data.query, data.gallery)
    if rerank is not None:
        reranked = query_gallery_metrics(feats, data.query, data.gallery, rerank=rerank)
        metrics["rerank"] = {**reranked, **dataclasses.asdict(rerank)}
        log.info("re-ranked (k1=%d k2=%d lambda=%.2f): mAP %.1f%% -> %.1f%%, rank-1 %.1f%% -> %.1f%%", rerank.k1,
                 rerank.k2, rerank.lambda_value, 100 * metrics["mAP"], 100 * reranked["mAP"],
                 100 * metrics["rank1"], 100 * reranked["rank1"])
    metrics.update({"checkpoint": str(checkpoint_dir), "dataset": name, "epoch": int(loaded["state"]["epoch"])})

    train_feats = extract_features(model, data.train, transform, device=device, progress=True, desc="train")["global"]
    true_ids = np.array([r.pid for r in data.train])
    labels = loaded["state"].get("labels")
    pseudo = labels.numpy() if labels is not None and len(labels) == len(true_ids) else None
    if pseudo is not None:
        metrics.update({f"pseudo_{k}": v for k, v in clustering_scores(pseudo, true_ids).as_dict().items()})
    write_json(out_dir / METRICS_FILE, metrics)
    nq = len(data.query)
    if rerank is not None:
        from ray_reid.eval.rerank import k_reciprocal_rerank

        distmat = k_reciprocal_rerank(feats[:nq], feats[nq:], rerank).to_dense()
    else:
        distmat = compute_distmat(feats[:nq], feats[nq:])
    plot_rank_list(data.query, data.gallery, distmat, out_dir / RANK_LIST_FILE)
    plot_embedding(train_feats, true_ids, pseudo if pseudo is not None else np.full(len(true_ids), -1),
                   out_dir / EMBEDDING_FILE, max_points=max_tsne_points)
    return metrics
