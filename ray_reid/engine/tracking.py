"""Run tracking: every epoch's figures as TensorBoard scalars, and in MLflow when asked.

Written by the driver from the metric history the ranks reported (rank 0's figures: losses,
clusters, ARI/NMI of the pseudo-labels, mAP/CMC on evaluated epochs, seconds per stage), so
a resumed run rewrites the whole curve and a run on S3 gets its event files uploaded with the
rest of the run folder. Scalars are grouped into TensorBoard sections by what they measure.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Sub-folder of the run folder holding the event files (``tensorboard --logdir RUN/tensorboard``).
TENSORBOARD_DIR = "tensorboard"

_SECTIONS = (
    (("mAP", "rank1", "rank5", "rank10", "rank20"), "eval"),
    (("n_clusters", "n_outliers", "cluster_target"), "clusters"),
    (("ari", "nmi", "pairwise_precision", "pairwise_recall"), "pseudo_labels"),
    (("lr",), "optim"),
)


def scalar_tag(key: str) -> str | None:
    """TensorBoard tag of a history key (``loss_g`` -> ``loss/loss_g``), None for non-scalars and the epoch."""
    if key == "epoch":
        return None
    for keys, section in _SECTIONS:
        if key in keys:
            return f"{section}/{key}"
    if key.startswith("loss"):
        return f"loss/{key}"
    if key.endswith("_seconds") or key.endswith("per_second") or key.startswith("images_per"):
        return f"time/{key}"
    return f"train/{key}"


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The finite numeric figures of one history row, by TensorBoard tag."""
    out = {}
    for key, value in row.items():
        tag = scalar_tag(key)
        if tag is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[tag] = float(value)
    return out


def write_tensorboard(run_dir: str | os.PathLike, history: list[dict[str, Any]]) -> Path:
    """Event files of every epoch's scalars under ``<run_dir>/tensorboard`` (rewritten whole); returns the folder."""
    from torch.utils.tensorboard import SummaryWriter

    logdir = Path(run_dir) / TENSORBOARD_DIR
    if logdir.exists():  # a resumed run: the history holds every epoch, so start the curve afresh
        shutil.rmtree(logdir)
    with SummaryWriter(log_dir=str(logdir)) as writer:
        for row in history:
            step = int(row["epoch"])
            for tag, value in epoch_scalars(row).items():
                writer.add_scalar(tag, value, global_step=step)
    return logdir


def log_to_mlflow(uri: str, experiment: str, run_name: str, params: dict[str, Any],
                  history: list[dict[str, Any]], artifacts: list[Path]) -> str:
    """One MLflow run with the flattened config as params, every epoch's scalars and the output files.

    Needs the optional ``mlflow`` extra (``pip install ray-reid[mlflow]``); returns the run id.
    """
    try:
        import mlflow
    except ImportError as exc:
        raise ImportError("run.mlflow_uri is set but mlflow is not installed: pip install 'ray-reid[mlflow]'") from exc
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as active:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        for row in history:
            step = int(row["epoch"])
            mlflow.log_metrics({tag.replace("/", "."): v for tag, v in epoch_scalars(row).items()}, step=step)
        for path in artifacts:
            if path.exists():
                mlflow.log_artifact(str(path))
        return active.info.run_id


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``: config sections as MLflow params."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


#: Training crops drawn for the end-of-training projector sample (TensorBoard's Projector tab).
PROJECTOR_POINTS = 500


def projector_sample(cfg: Any, checkpoint_dir: str | os.PathLike, *, max_points: int = PROJECTOR_POINTS,
                     seed: int = 0) -> tuple[Any, list[list[Any]], list[str]]:
    """Global embeddings of a seeded sample of training crops by the final model, with what to colour them by.

    Returns ``(features [n, d], metadata rows, header)``; the header is ``pseudo_label``
    (the label the last epoch trained on, -1 = outlier), ``true_id``, ``camera``, ``file``,
    so the projector shows at a glance whether clusters follow people or cameras.
    """
    import numpy as np

    from ray_reid.data.resolve import load_configured_dataset
    from ray_reid.data.transforms import test_transform
    from ray_reid.engine.checkpoint import load_checkpoint
    from ray_reid.engine.extract import extract_features
    from ray_reid.models import build_model

    loaded = load_checkpoint(checkpoint_dir)
    data = load_configured_dataset(cfg.data.dataset, cfg.data.root)
    model = build_model(cfg.model.replace(pretrained=None))  # the weights come from the checkpoint
    model.load_state_dict(loaded["state"]["model"])
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(data.train), size=min(max_points, len(data.train)), replace=False))
    records = [data.train[i] for i in pick]
    feats = extract_features(model, records, test_transform(cfg.data))["global"]
    labels = loaded["state"].get("labels")
    pseudo = labels.numpy()[pick] if labels is not None and len(labels) == len(data.train) else np.full(len(pick), -1)
    rows = [[int(p), r.pid, r.camid, os.path.basename(r.path)] for p, r in zip(pseudo, records)]
    return feats, rows, ["pseudo_label", "true_id", "camera", "file"]


def write_projector(run_dir: str | os.PathLike, features: Any, metadata: list[list[Any]], header: list[str], *,
                    step: int = 0, tag: str = "train_sample") -> Path:
    """An embedding projector entry in ``<run_dir>/tensorboard`` (tensors.tsv, metadata.tsv, projector config)."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    logdir = Path(run_dir) / TENSORBOARD_DIR
    with SummaryWriter(log_dir=str(logdir)) as writer:
        writer.add_embedding(torch.as_tensor(features), metadata=metadata, metadata_header=header,
                             global_step=step, tag=tag)
    return logdir
