"""What a finished run leaves in its folder for people: summary, per-epoch metrics, plots, config."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from pathlib import Path
from typing import Any

from ray_reid.atomic import atomic_write
from ray_reid.config import TrainConfig, save_config
from ray_reid.engine.checkpoint import write_json
from ray_reid.engine.tracking import TENSORBOARD_DIR, flatten, log_to_mlflow, write_tensorboard
from ray_reid.eval.plots import plot_training_curves

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("mAP", "rank1", "rank5", "rank10", "n_clusters", "n_outliers", "ari", "nmi")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summarize(history: list[dict[str, Any]], cfg: TrainConfig, wall_seconds: float, **extra: Any) -> dict[str, Any]:
    """Final figures of a run: the last evaluated epoch's metrics plus the best mAP seen."""
    if not history:
        raise ValueError("no epoch was reported: nothing to summarise")
    last = history[-1]
    evaluated = [row for row in history if row.get("mAP") is not None]
    summary: dict[str, Any] = {"run": cfg.run.name, "dataset": cfg.data.dataset, "clusterer": cfg.cluster.method,
                               "backbone": cfg.model.backbone, "views": cfg.model.views,
                               "workers": cfg.run.num_workers, "epochs": int(last["epoch"]) + 1}
    for key in SUMMARY_KEYS:
        source = evaluated[-1] if key.startswith(("mAP", "rank")) and evaluated else last
        summary[key] = _clean(source.get(key))
    if evaluated:
        best = max(evaluated, key=lambda r: r["mAP"])
        summary["best_mAP"] = best["mAP"]
        summary["best_epoch"] = int(best["epoch"])
    sizes = sorted({int(row["world_size"]) for row in history if "world_size" in row})
    if sizes:  # an elastic run's groups had these sizes over its epochs (one size for a fixed run)
        summary["world_sizes"] = sizes
    if "skipped_images" in last:  # on_bad_image="skip": how many undecodable files were left out
        summary["skipped_images"] = int(last["skipped_images"])
    summary["wall_seconds"] = wall_seconds
    summary.update(extra)
    return summary


def write_run_outputs(run_dir: str | os.PathLike, history: list[dict[str, Any]], cfg: TrainConfig,
                      wall_seconds: float, **extra: Any) -> dict[str, Any]:
    """Write summary.json, metrics.csv, training_curves.png, config.yaml and TensorBoard event files.

    With ``cfg.run.mlflow_uri`` the same figures, the config and those files also go to MLflow.
    Returns the summary.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(history, cfg, wall_seconds, **extra)
    write_json(run_dir / "summary.json", summary)
    keys: list[str] = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for row in history:
        writer.writerow({k: _clean(row.get(k)) for k in keys})
    atomic_write(run_dir / "metrics.csv", lambda tmp: Path(tmp).write_text(buf.getvalue()))
    plot_training_curves(history, run_dir / "training_curves.png")
    save_config(cfg, run_dir / "config.yaml")
    write_tensorboard(run_dir, history)
    if cfg.run.mlflow_uri:
        run_id = log_to_mlflow(cfg.run.mlflow_uri, "ray-reid", cfg.run.name, flatten(cfg.to_dict()), history,
                               [run_dir / n for n in ("summary.json", "metrics.csv", "training_curves.png",
                                                      "config.yaml")])
        log.info("logged to MLflow at %s (run %s)", cfg.run.mlflow_uri, run_id)
    log.info("run outputs written to %s (TensorBoard: tensorboard --logdir %s/%s)", run_dir, run_dir,
             TENSORBOARD_DIR)
    return summary
