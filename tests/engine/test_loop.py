"""The full epoch loop in one process: extract → cluster → memory → train → eval → checkpoint → resume."""

import json
import math

import numpy as np
import pytest

from ray_reid.config import config_from_dict
from ray_reid.engine.checkpoint import load_checkpoint
from ray_reid.engine.context import LocalContext
from ray_reid.engine.loop import shard_indices, train_worker


def tiny_config(root, storage, **extra):
    overrides = {
        "data.dataset": "synthetic", "data.root": str(root), "data.height": 32, "data.width": 16,
        "model.backbone": "resnet18", "cluster.merge_percent": 0.5, "optim.epochs": 1, "optim.iters": 2,
        "optim.p": 4, "optim.k": 2, "run.num_workers": 0, "run.storage_path": str(storage), "run.name": "t",
        "run.eval_every": 1,
    }
    overrides.update(extra)
    return config_from_dict({}, overrides)


@pytest.mark.parametrize("n, world", [(10, 1), (10, 3), (7, 2), (2, 4)])
def test_shards_cover_every_image_once(n, world):
    shards = [shard_indices(n, r, world) for r in range(world)]
    joined = np.concatenate(shards)
    assert sorted(joined.tolist()) == list(range(n))


def test_one_epoch_in_process_then_resume(tiny_synthetic_root, tmp_path):
    cfg = tiny_config(tiny_synthetic_root, tmp_path)
    ctx = LocalContext(cfg.cluster, tmp_path / "t")
    history = train_worker(cfg, ctx)
    assert [row["epoch"] for row in history] == [0]
    row = history[0]
    assert math.isfinite(row["loss"]) and row["loss"] > 0
    assert row["n_clusters"] >= 1 and 0.0 <= row["mAP"] <= 1.0 and "ari" in row
    ckpts = sorted((tmp_path / "t").glob("checkpoint_*"))
    assert len(ckpts) == 1
    loaded = load_checkpoint(ckpts[0])
    assert loaded["state"]["epoch"] == 0 and loaded["meta"]["model"]["backbone"] == "resnet18"
    assert json.loads((ckpts[0] / "history.json").read_text())[0]["epoch"] == 0

    # same run, more epochs: resumes after the finished epoch instead of starting again
    cfg2 = tiny_config(tiny_synthetic_root, tmp_path, **{"optim.epochs": 2})
    ctx2 = LocalContext(cfg2.cluster, tmp_path / "t")
    history2 = train_worker(cfg2, ctx2)
    assert [r["epoch"] for r in ctx2.reports] == [1]
    assert [r["epoch"] for r in history2] == [0, 1]


def test_evaluating_every_epoch_trains_the_same_weights_as_evaluating_once(tiny_synthetic_root, tmp_path):
    """Evaluation is read-only: the proxy benchmark evaluates seed 0 after every epoch and the other seeds
    only after the last, and pretrain_proxy.py's --eval-every relies on the same, so the weights must not
    depend on how often the query/gallery pass ran."""
    import torch

    states = {}
    for every in (1, 2):
        name = f"every{every}"
        cfg = tiny_config(tiny_synthetic_root, tmp_path, **{"optim.epochs": 2, "run.eval_every": every,
                                                            "run.name": name})
        ctx = LocalContext(cfg.cluster, tmp_path / name)
        history = train_worker(cfg, ctx)
        assert ["mAP" in row for row in history] == ([True, True] if every == 1 else [False, True])
        states[every] = load_checkpoint(sorted((tmp_path / name).glob("checkpoint_*"))[-1])["state"]["model"]
    assert states[1].keys() == states[2].keys()
    differ = [k for k in states[1] if not torch.equal(states[1][k], states[2][k])]
    assert not differ, f"weights differ after per-epoch evaluation: {differ[:5]}"
