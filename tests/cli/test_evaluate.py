"""jobs/evaluate.py on a real (tiny) checkpoint: metrics plus the two pictures."""

import json

from PIL import Image

from ray_reid.config import config_from_dict
from ray_reid.engine.context import LocalContext
from ray_reid.engine.loop import train_worker


def test_evaluate_writes_metrics_rank_list_and_embedding(tiny_synthetic_root, tmp_path):
    from ray_reid.cli.evaluate import main

    cfg = config_from_dict({}, {
        "data.dataset": "synthetic", "data.root": str(tiny_synthetic_root), "data.height": 32, "data.width": 16,
        "model.backbone": "resnet18", "cluster.merge_percent": 0.5, "optim.epochs": 1, "optim.iters": 1,
        "optim.p": 4, "optim.k": 2, "run.num_workers": 0, "run.storage_path": str(tmp_path), "run.name": "ev",
    })
    history = train_worker(cfg, LocalContext(cfg.cluster, tmp_path / "ev"))
    assert main([str(tmp_path / "ev"), "--out", str(tmp_path / "out"), "--max-tsne-points", "60", "--rerank",
                 "--rerank-k1", "10"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # the same model and data give the same figures as the training run's own final evaluation
    assert abs(metrics["mAP"] - history[-1]["mAP"]) < 1e-6 and abs(metrics["rank1"] - history[-1]["rank1"]) < 1e-6
    assert 0 <= metrics["pseudo_ari"] <= 1 and metrics["epoch"] == 0
    rerank = metrics["rerank"]
    assert (rerank["k1"], rerank["k2"], rerank["lambda_value"]) == (10, 6, 0.3)
    assert 0 < rerank["mAP"] <= 1 and rerank["mAP"] != metrics["mAP"]
    for name in ("rank_list.png", "embedding.png"):
        with Image.open(tmp_path / "out" / name) as img:
            assert img.size[0] > 100 and img.size[1] > 100


def test_bad_rerank_parameters_exit_naming_the_field(capsys):
    import pytest

    from ray_reid.cli.evaluate import main

    with pytest.raises(SystemExit, match=r"rerank.k2 \(30\) must be at most k1 \+ 1 \(21\)"):
        main(["nowhere", "--rerank", "--rerank-k2", "30"])
