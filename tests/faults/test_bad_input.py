"""Fault 5: bad input is refused with an error naming the culprit, and never damages a finished run.

Each case reruns (or resumes) the same run name over a good finished run and compares SHA-256 of
every file of that run before and after: a refused input must leave checkpoints and results as
they were. Runs go through ``jobs/train.py``'s ``main`` in-process (``--workers 0``) or its CLI.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_helpers import checkpoint_dirs, tree_digest

from ray_reid.data.image_folder import BadImageError
from ray_reid.engine.train_epoch import NonFiniteLossError

REPO = Path(__file__).resolve().parents[2]
TRAIN_PY = REPO / "jobs" / "train.py"


def _train_main():
    spec = importlib.util.spec_from_file_location("ray_reid_jobs_train", TRAIN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def cli_args(root: Path, storage: Path, name: str, *extra: str) -> list[str]:
    return ["--dataset", "synthetic", "--data-root", str(root), "--height", "32", "--width", "16",
            "--backbone", "resnet18", "--merge-percent", "0.5", "--epochs", "1", "--iters", "2", "--batch", "4x2",
            "--workers", "0", "--storage-path", str(storage), "--name", name, "--eval-every", "1", *extra]


@pytest.fixture(scope="module")
def finished(tiny_synthetic_root, tmp_path_factory):
    """A good finished one-epoch run (checkpoint + results) that every bad rerun must leave alone."""
    storage = tmp_path_factory.mktemp("finished")
    assert _train_main()(cli_args(tiny_synthetic_root, storage, "good")) == 0
    run_dir = storage / "good"
    assert len(checkpoint_dirs(run_dir)) == 1 and (run_dir / "summary.json").is_file()
    return storage, run_dir


def _copy_root(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _first_image(folder: Path) -> Path:
    return sorted(folder.glob("*.jpg"))[0]


def test_truncated_train_jpeg_is_refused_by_name_and_the_finished_run_is_untouched(
        finished, tiny_synthetic_root, tmp_path):
    storage, run_dir = finished
    root = _copy_root(tiny_synthetic_root, tmp_path / "data")
    bad = _first_image(root / "bounding_box_train")
    _truncate(bad)
    before = tree_digest(run_dir)
    with pytest.raises(BadImageError, match=str(bad)):  # resumes at epoch 1, fails extracting it
        _train_main()(cli_args(root, storage, "good", "--epochs", "2"))
    assert tree_digest(run_dir) == before


def test_skip_policy_logs_each_bad_file_and_reports_the_count_in_the_summary(
        tiny_synthetic_root, tmp_path, caplog):
    import json

    root = _copy_root(tiny_synthetic_root, tmp_path / "data")
    bad = [_first_image(root / "bounding_box_train"), _first_image(root / "bounding_box_test")]
    for path in bad:
        _truncate(path)
    with caplog.at_level(logging.WARNING):
        assert _train_main()(cli_args(root, tmp_path / "runs", "skip", "--on-bad-image", "skip")) == 0
    summary = json.loads((tmp_path / "runs" / "skip" / "summary.json").read_text())
    assert summary["skipped_images"] == 2  # one train image (extraction) + one gallery image (evaluation)
    for path in bad:
        assert any(str(path) in rec.getMessage() for rec in caplog.records), f"{path} not named in the log"
    assert any("2 undecodable images were skipped" in rec.getMessage() for rec in caplog.records)


def test_default_run_summary_has_no_skip_count(finished):
    import json

    _, run_dir = finished
    assert "skipped_images" not in json.loads((run_dir / "summary.json").read_text())


def test_empty_dataset_folders_are_refused_naming_the_folder(finished, tiny_synthetic_root, tmp_path):
    storage, run_dir = finished
    before = tree_digest(run_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"no synthetic data under {empty}"):
        _train_main()(cli_args(empty, storage, "good", "--epochs", "2"))
    root = _copy_root(tiny_synthetic_root, tmp_path / "data")
    for path in (root / "bounding_box_train").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match=f"split folder {root / 'bounding_box_train'} contains no images"):
        _train_main()(cli_args(root, storage, "good", "--epochs", "2"))
    assert tree_digest(run_dir) == before


def test_unparseable_file_name_is_refused_naming_the_file_and_the_pattern(finished, tiny_synthetic_root, tmp_path):
    storage, run_dir = finished
    before = tree_digest(run_dir)
    root = _copy_root(tiny_synthetic_root, tmp_path / "data")
    odd = root / "query" / "person_final.jpg"
    shutil.copy(_first_image(root / "query"), odd)
    with pytest.raises(ValueError, match=rf"image name {odd} does not match the expected pattern <pid>_c<camera>"):
        _train_main()(cli_args(root, storage, "good", "--epochs", "2"))
    assert tree_digest(run_dir) == before


def test_query_and_gallery_without_a_shared_identity_are_refused_before_training(
        finished, tiny_synthetic_root, tmp_path):
    storage, run_dir = finished
    before = tree_digest(run_dir)
    root = _copy_root(tiny_synthetic_root, tmp_path / "data")
    for i, path in enumerate(sorted((root / "query").glob("*.jpg"))):  # query ids that no gallery image has
        cam = path.name.split("_")[1]
        path.rename(path.with_name(f"{9000 + i}_{cam}_renamed.jpg"))
    with pytest.raises(ValueError, match=rf"at {root}: query \(\d+ ids\) and gallery \(\d+ ids\) share no identity"):
        _train_main()(cli_args(root, storage, "fresh"))
    assert not (storage / "fresh").exists(), "nothing may be written for a refused dataset"
    with pytest.raises(ValueError, match="share no identity"):
        _train_main()(cli_args(root, storage, "good", "--epochs", "2"))
    assert tree_digest(run_dir) == before


@pytest.mark.parametrize("flags, culprit", [
    (["--set", "optim.bogus=1"], "unknown config key optim.bogus"),
    (["--set", "nosuch.key=1"], "unknown config section|section.key with section in"),
    (["--lr", "-1"], r"optim.lr=-1.0 is invalid"),
    (["--set", "cluster.merge_percent=1.5"], r"cluster.merge_percent=1.5 is invalid: expected a number in \(0, 1\)"),
    (["--on-bad-image", "ignore"], r"data.on_bad_image='ignore' is invalid: expected one of \('raise', 'skip'\)"),
])
def test_cli_refuses_bad_config_with_nonzero_exit_naming_the_key(flags, culprit, tiny_synthetic_root, tmp_path):
    storage = tmp_path / "runs"
    proc = subprocess.run([sys.executable, str(TRAIN_PY), *cli_args(tiny_synthetic_root, storage, "cfg"), *flags],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert proc.returncode != 0
    import re

    assert re.search(culprit, proc.stderr), proc.stderr[-2000:]
    assert not storage.exists(), "a refused config must not create the run folder"


def test_non_finite_embeddings_reaching_the_clustering_service_fail_every_rank_without_hanging():
    from ray_reid.config import ClusterConfig
    from ray_reid.distributed.actor import ClusteringService
    from dataclasses import asdict

    service = ClusteringService(asdict(ClusterConfig(merge_percent=0.5)))
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(12, 8)).astype(np.float32)
    feats[7, 3] = np.inf
    errors: dict[int, BaseException] = {}

    def rank(r: int) -> None:
        idx = np.arange(6) + 6 * r
        try:
            service.submit(0, 12, 2, r, idx, {"global": feats[idx]}, timeout=60)
        except BaseException as exc:  # collected per rank
            errors[r] = exc

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not any(t.is_alive() for t in threads)
    assert set(errors) == {0, 1}
    for exc in errors.values():
        assert isinstance(exc, ValueError) and "view 'global' hold NaN or inf in 1 of 12 rows" in str(exc)


def test_exploding_lr_stops_with_non_finite_loss_naming_epoch_and_iteration_and_writes_no_checkpoint(
        tiny_synthetic_root, tmp_path):
    storage = tmp_path / "runs"
    with pytest.raises(NonFiniteLossError, match=r"at epoch 0, iteration \d+"):
        _train_main()(cli_args(tiny_synthetic_root, storage, "boom", "--lr", "1e30"))
    assert not checkpoint_dirs(storage / "boom")


def test_nan_loss_while_resuming_leaves_the_finished_run_untouched(finished, tiny_synthetic_root, monkeypatch):
    from ray_reid.losses.cluster_memory import ClusterMemory

    storage, run_dir = finished
    before = tree_digest(run_dir)
    real_forward = ClusterMemory.forward
    monkeypatch.setattr(ClusterMemory, "forward", lambda self, f, t: real_forward(self, f, t) * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 1, iteration 0"):
        _train_main()(cli_args(tiny_synthetic_root, storage, "good", "--epochs", "2"))
    assert tree_digest(run_dir) == before


def _half_then_crash(real_save):
    """A torch.save that dies half-way through the file, as a full disk or a killed process would."""

    def save(obj, f, *args, **kwargs):
        import io

        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        with open(f, "wb") as fh:
            fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(28, "No space left on device (injected)")

    return save


def test_crash_half_way_through_a_checkpoint_write_keeps_the_old_checkpoint(finished, monkeypatch):
    from ray_reid.engine.checkpoint import load_checkpoint, save_checkpoint

    _, run_dir = finished
    ckpt = checkpoint_dirs(run_dir)[-1]
    before = tree_digest(ckpt)
    old = load_checkpoint(ckpt)
    monkeypatch.setattr(torch, "save", _half_then_crash(torch.save))
    with pytest.raises(OSError, match="injected"):
        save_checkpoint(ckpt, {"epoch": 99, "model": {}}, {"epoch": 99}, [])
    assert tree_digest(ckpt) == before, "the old checkpoint changed or a temp file was left behind"
    assert load_checkpoint(ckpt)["state"]["epoch"] == old["state"]["epoch"]


def test_crash_writing_the_next_epochs_checkpoint_leaves_the_run_untouched(finished, tiny_synthetic_root,
                                                                            monkeypatch):
    storage, run_dir = finished
    before = tree_digest(run_dir)
    monkeypatch.setattr(torch, "save", _half_then_crash(torch.save))
    with pytest.raises(OSError, match="injected"):
        _train_main()(cli_args(tiny_synthetic_root, storage, "good", "--epochs", "2"))
    assert tree_digest(run_dir) == before
    assert len(checkpoint_dirs(run_dir)) == 1
