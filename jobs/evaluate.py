"""Evaluate a checkpoint: `python jobs/evaluate.py CHECKPOINT_OR_RUN_DIR [--dataset D --data-root R] [--out DIR]`.

Writes metrics.json (mAP, rank-1/5/10, clustering scores of the checkpoint's pseudo-labels),
rank_list.png (queries with their top-10 gallery images, right/wrong marked) and embedding.png
(t-SNE of training features coloured by true id and by pseudo-label).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

log = logging.getLogger("evaluate")


def find_checkpoint(path: Path) -> Path:
    """A checkpoint folder itself, or the latest ``checkpoint_*`` inside a run folder."""
    if (path / "state.pt").is_file():
        return path
    found = sorted(p for p in path.glob("checkpoint_*") if (p / "state.pt").is_file())
    if not found:
        raise SystemExit(f"error: {path} is neither a checkpoint (no state.pt) nor a run folder with checkpoints")
    return found[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <checkpoint>/eval)")
    parser.add_argument("--max-tsne-points", type=int, default=2000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import numpy as np
    import torch

    from ray_reid.config import config_from_dict
    from ray_reid.data.resolve import load_configured_dataset
    from ray_reid.data.transforms import TransformConfig, test_transform
    from ray_reid.engine.checkpoint import load_checkpoint, write_json
    from ray_reid.engine.extract import extract_features
    from ray_reid.eval.cluster_metrics import clustering_scores
    from ray_reid.eval.features import reid_metrics
    from ray_reid.eval.plots import plot_embedding, plot_rank_list
    from ray_reid.eval.rank import compute_distmat
    from ray_reid.models import ModelConfig, build_model

    ckpt_dir = find_checkpoint(args.checkpoint)
    loaded = load_checkpoint(ckpt_dir)
    cfg = config_from_dict(loaded["meta"]["config"])
    dataset_name = args.dataset or cfg.data.dataset
    root = args.data_root if args.data_root is not None else (cfg.data.root if args.dataset is None else None)
    dataset = load_configured_dataset(dataset_name, root)
    model = build_model(ModelConfig(**{**loaded["meta"]["model"], "pretrained": None}))
    model.load_state_dict(loaded["state"]["model"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    tf = test_transform(TransformConfig(height=cfg.data.height, width=cfg.data.width))
    out = args.out or (ckpt_dir / "eval")
    out.mkdir(parents=True, exist_ok=True)

    records = list(dataset.query) + list(dataset.gallery)
    feats = extract_features(model, records, tf, device=device, progress=True, desc="query+gallery")["global"]
    nq = len(dataset.query)
    pids = np.array([r.pid for r in records])
    cams = np.array([r.camid for r in records])
    metrics = reid_metrics(feats[:nq], feats[nq:], pids[:nq], pids[nq:], cams[:nq], cams[nq:])
    metrics.update({"checkpoint": str(ckpt_dir), "dataset": dataset_name, "epoch": int(loaded["state"]["epoch"])})

    train_feats = extract_features(model, dataset.train, tf, device=device, progress=True, desc="train")["global"]
    true_ids = np.array([r.pid for r in dataset.train])
    labels = loaded["state"].get("labels")
    pseudo = labels.numpy() if labels is not None and len(labels) == len(true_ids) else None
    if pseudo is not None:
        metrics.update({f"pseudo_{k}": v for k, v in clustering_scores(pseudo, true_ids).as_dict().items()})
    write_json(out / "metrics.json", metrics)
    distmat = compute_distmat(feats[:nq], feats[nq:])
    plot_rank_list(dataset.query, dataset.gallery, distmat, out / "rank_list.png")
    plot_embedding(train_feats, true_ids, pseudo if pseudo is not None else np.full(len(true_ids), -1),
                   out / "embedding.png", max_points=args.max_tsne_points)
    log.info("mAP %.1f%% rank-1 %.1f%% rank-5 %.1f%% rank-10 %.1f%%; written to %s", 100 * metrics["mAP"],
             100 * metrics["rank1"], 100 * metrics["rank5"], 100 * metrics["rank10"], out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
