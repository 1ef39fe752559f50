"""Run tracking: a real (tiny, in-process) training leaves TensorBoard event files we read back."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ray_reid.config import config_from_dict
from ray_reid.engine.tracking import PROJECTOR_POINTS, TENSORBOARD_DIR, epoch_scalars, log_to_mlflow, scalar_tag


def test_training_writes_every_epochs_scalars_to_tensorboard(tiny_synthetic_root, tmp_path):
    from ray_reid import run

    cfg = config_from_dict({}, {
        "data.dataset": "synthetic", "data.root": str(tiny_synthetic_root), "data.height": 32, "data.width": 16,
        "model.backbone": "resnet18", "cluster.merge_percent": 0.5, "optim.epochs": 2, "optim.iters": 1,
        "optim.p": 4, "optim.k": 2, "run.num_workers": 0, "run.eval_every": 1, "run.storage_path": str(tmp_path),
        "run.name": "tb",
    })
    result = run.train(cfg)
    events = EventAccumulator(str(tmp_path / "tb" / TENSORBOARD_DIR))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("loss/loss", "clusters/n_clusters", "pseudo_labels/ari", "pseudo_labels/nmi", "eval/mAP",
                "eval/rank1", "time/train_seconds"):
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
    for tag, key in (("eval/mAP", "mAP"), ("clusters/n_clusters", "n_clusters"), ("loss/loss", "loss")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [0, 1]
        assert [s.value for s in scalars] == pytest.approx([row[key] for row in result.history], rel=1e-6)

    # the end-of-training projector sample: every training crop here (fewer than PROJECTOR_POINTS),
    # unit-norm embeddings, coloured by the last epoch's pseudo-label, true id and camera
    logdir = tmp_path / "tb" / TENSORBOARD_DIR
    n_train = len(list((tiny_synthetic_root / "bounding_box_train").glob("*.jpg")))
    config = (logdir / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "train_sample:00001"' in config
    sample = logdir / "00001" / "train_sample"
    tensors = np.loadtxt(sample / "tensors.tsv", delimiter="\t", ndmin=2)
    meta = [line.split("\t") for line in (sample / "metadata.tsv").read_text().splitlines()]
    assert meta[0] == ["pseudo_label", "true_id", "camera", "file"]
    assert tensors.shape == (len(meta) - 1, 512) and len(meta) - 1 == min(PROJECTOR_POINTS, n_train)
    np.testing.assert_allclose(np.linalg.norm(tensors, axis=1), 1.0, atol=1e-4)
    assert len({row[2] for row in meta[1:]}) == 3  # all three cameras drawn


def test_tags_group_the_history_keys_and_skip_non_scalars():
    assert scalar_tag("epoch") is None
    assert scalar_tag("loss_up") == "loss/loss_up" and scalar_tag("ari") == "pseudo_labels/ari"
    assert scalar_tag("extract_seconds") == "time/extract_seconds" and scalar_tag("rank5") == "eval/rank5"
    row = {"epoch": 3, "mAP": 0.5, "labels_from": "model", "ari": float("nan"), "n_clusters": 7}
    assert epoch_scalars(row) == {"eval/mAP": 0.5, "clusters/n_clusters": 7.0}


def test_mlflow_without_the_extra_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(ImportError, match=r"run.mlflow_uri is set but mlflow is not installed.*ray-reid\[mlflow\]"):
        log_to_mlflow(f"file://{tmp_path}", "x", "y", {}, [], [])
