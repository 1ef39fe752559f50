"""Run locations: one code path for local folders and S3; the latest checkpoint is the newest complete one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ray_reid import locations


def make_checkpoint(folder: Path, epoch: int, *, complete: bool = True) -> Path:
    """A real checkpoint folder (state.pt with its SHA-256 in meta.json); ``complete=False`` cuts state.pt short."""
    from ray_reid.engine.checkpoint import save_checkpoint

    save_checkpoint(folder, {"epoch": epoch, "w": torch.full((256,), float(epoch))}, {"epoch": epoch},
                    [{"epoch": e} for e in range(epoch + 1)])
    if not complete:
        state = folder / "state.pt"
        state.write_bytes(state.read_bytes()[:100])  # a copy or upload cut short
    return folder


def test_run_dir_is_absolute_locally_and_kept_for_s3(tmp_path, monkeypatch):
    from ray_reid.config import config_from_dict

    monkeypatch.chdir(tmp_path)
    local = config_from_dict({}, {"run.storage_path": "runs", "run.name": "a"})
    assert locations.run_dir(local) == str(tmp_path / "runs" / "a")
    remote = config_from_dict({}, {"run.storage_path": "s3://b/runs/", "run.name": "a"})
    assert locations.run_dir(remote.run) == "s3://b/runs/a"
    with pytest.raises(ValueError, match="unsupported storage URI 'gs://b'"):
        locations.absolute("gs://b")


def test_latest_is_the_newest_complete_checkpoint_whatever_the_names_or_registration(tmp_path):
    run = tmp_path / "run"
    assert locations.latest_checkpoint(str(run)) is None and locations.read_history(str(run)) == []
    make_checkpoint(run / "checkpoint_2026-01-01_10-00-00.000001", 0)
    make_checkpoint(run / "checkpoint_2026-01-01_10-00-05.000001", 1)
    # newer epoch, newest name, but cut short (a killed worker's half-written orphan): skipped
    make_checkpoint(run / "checkpoint_2026-01-01_10-00-09.000001", 2, complete=False)
    # a newer name holding an older epoch (a resumed group's first checkpoint): the epoch decides
    make_checkpoint(run / "checkpoint_2026-01-01_10-00-12.000001", 0)
    assert locations.latest_checkpoint(str(run)) == str(run / "checkpoint_2026-01-01_10-00-05.000001")
    assert locations.checkpoint_of(str(run)) == str(run / "checkpoint_2026-01-01_10-00-05.000001")
    assert [r["epoch"] for r in locations.read_history(str(run))] == [0, 1]
    assert (run / "checkpoint_2026-01-01_10-00-09.000001").is_dir()  # a lookup never deletes
    # a complete newer one, registered or not, counts (as resume uses it)
    make_checkpoint(run / "checkpoint_2026-01-01_10-00-20.000001", 3)
    assert locations.latest_checkpoint(str(run)) == str(run / "checkpoint_2026-01-01_10-00-20.000001")


def test_explicit_checkpoint_folders_and_missing_runs(tmp_path):
    run = tmp_path / "run"
    make_checkpoint(run / "checkpoint_000000", 0)
    (run / "checkpoint_000001").mkdir()  # started, nothing written yet
    (run / "checkpoint_000001" / "meta.json").write_text("{}")
    assert locations.latest_checkpoint(str(run)) == str(run / "checkpoint_000000")
    assert locations.checkpoint_of(str(run / "checkpoint_000000")) == str(run / "checkpoint_000000")
    with pytest.raises(FileNotFoundError, match="neither a checkpoint"):
        locations.checkpoint_of(str(run / "checkpoint_000001"))
    with pytest.raises(FileNotFoundError, match="no run or checkpoint at"):
        locations.checkpoint_of(str(tmp_path / "nowhere"))


def test_every_consumer_follows_the_one_rule(tmp_path):
    """Evaluate/export (local_checkpoint), the teacher lookup and resume pick the same folder."""
    from ray_reid.engine.checkpoint import checkpoint_to_resume
    from ray_reid.engine.teacher import teacher_checkpoint
    from ray_reid.inference.model import resolve_checkpoint

    run = tmp_path / "run"
    make_checkpoint(run / "checkpoint_000000", 0)
    make_checkpoint(run / "checkpoint_000001", 1)
    make_checkpoint(run / "checkpoint_000002", 2, complete=False)
    want = run / "checkpoint_000001"
    assert locations.local_checkpoint(str(run)) == want
    assert resolve_checkpoint(run) == want
    assert teacher_checkpoint(str(run)) == want
    chosen = checkpoint_to_resume(str(run))
    assert chosen.local_path == want and chosen.epoch == 1
    assert not (run / "checkpoint_000002").exists()  # resume removes the partial leftover


def test_s3_runs_take_the_same_path_and_only_the_latest_checkpoint_is_fetched(s3, tmp_path, monkeypatch):
    from ray_reid.storage import upload_dir

    monkeypatch.setenv("RAY_REID_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    make_checkpoint(run / "checkpoint_x0", 0)
    make_checkpoint(run / "checkpoint_x1", 1)
    make_checkpoint(run / "checkpoint_x2", 2, complete=False)  # an upload cut short
    (run / "embeddings").mkdir()
    (run / "embeddings" / "epoch_0000.parquet").write_bytes(b"big")
    uri = f"s3://{s3.bucket}/runs/r"
    upload_dir(run, uri)
    assert locations.latest_checkpoint(uri) == f"{uri}/checkpoint_x1"
    assert [r["epoch"] for r in locations.read_history(uri)] == [0, 1]
    local = locations.local_checkpoint(uri)
    assert local.name == "checkpoint_x1" and (local / "state.pt").read_bytes() == (run / "checkpoint_x1" /
                                                                                  "state.pt").read_bytes()
    fetched = {p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").rglob("*")
               if p.is_file() and not p.name.startswith(".")}
    # the rejected partial copy is gone from the cache; older checkpoints and embeddings were never fetched
    assert fetched == {f"s3/{s3.bucket}/runs/r/checkpoint_x1/{n}" for n in locations.CHECKPOINT_FILES}


def test_writable_dir_uploads_to_s3_only_when_the_block_succeeds(s3):
    uri = f"s3://{s3.bucket}/out"
    with locations.writable_dir(uri) as folder:
        (folder / "a.json").write_text("{}")
    assert locations.read_json(f"{uri}/a.json") == {}
    with pytest.raises(RuntimeError), locations.writable_dir(uri) as folder:
        (folder / "b.json").write_text("{}")
        raise RuntimeError("failed half-way")
    keys = [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]]
    assert keys == ["out/a.json"]
