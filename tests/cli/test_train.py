"""The train command refuses a bad name before Ray (or anything else) starts, naming the key and the valid names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ray_reid.cli import main as ray_reid_main
from ray_reid.cli.train import main as train_main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the command gets as far as connecting to Ray."""
    import ray_reid.distributed.session as session

    def refuse(**_):
        raise AssertionError("Ray was started for a config that should have been refused")

    monkeypatch.setattr(session, "connect", refuse)


@pytest.mark.parametrize("flags, key, valid", [
    (["--backbone", "resnet5"], "model.backbone='resnet5'", "resnet101, resnet18, resnet34, resnet50"),
    (["--dataset", "market"], "data.dataset='market'", "cuhk03, cuhk03-detected, cuhk03-labeled, dukemtmc, market1501"),
    (["--clusterer", "kmeans"], "cluster.method='kmeans'", "dbscan_jaccard, hc_sse"),
    (["--linkage", "ward"], "cluster.linkage='ward'", "average, single"),
    (["--regularizer", "l2"], "cluster.regularizer='l2'", "delta_sse, none, size, sse"),
    (["--views", "parts"], "model.views='parts'", "global, global+parts"),
])
def test_bad_names_are_refused_before_ray_starts(no_ray, tmp_path, flags, key, valid):
    with pytest.raises(SystemExit) as exc:
        train_main([*flags, "--storage-path", str(tmp_path)])
    assert key in str(exc.value) and valid in str(exc.value)
    assert list(tmp_path.iterdir()) == []  # no run folder either


def test_the_script_exits_non_zero_naming_the_key_without_starting_ray(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "train.py"), "--backbone", "resnet5",
                           "--storage-path", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "model.backbone='resnet5' is invalid" in proc.stderr and "resnet18" in proc.stderr
    assert "Ray" not in proc.stderr + proc.stdout and list(tmp_path.iterdir()) == []


def test_console_script_dispatches_and_lists_commands(no_ray, capsys):
    assert ray_reid_main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert ray_reid_main(["nope"]) == 2
    assert "valid commands: train, evaluate, purify, tune, export" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="cluster.method='kmeans'"):
        ray_reid_main(["train", "--clusterer", "kmeans"])
