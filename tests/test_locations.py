"""Run locations: one code path for local folders and S3; the latest checkpoint is the registered one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ray_reid import locations


def make_checkpoint(folder: Path, epoch: int, *, complete: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"epoch": epoch}))
    (folder / "history.json").write_text(json.dumps([{"epoch": e} for e in range(epoch + 1)]))
    if complete:
        (folder / "state.pt").write_bytes(b"weights")
    return folder


def ray_snapshot(run: Path, latest: str | None) -> None:
    """The part of Ray Train's checkpoint_manager_snapshot.json that names the registered latest checkpoint."""
    result = {"version": 0, "checkpoint_dir_name": latest, "metrics": {}} if latest else None
    (run / locations.RAY_TRAIN_SNAPSHOT).write_text(json.dumps({"latest_checkpoint_result": result}))


def test_run_dir_is_absolute_locally_and_kept_for_s3(tmp_path, monkeypatch):
    from ray_reid.config import config_from_dict

    monkeypatch.chdir(tmp_path)
    local = config_from_dict({}, {"run.storage_path": "runs", "run.name": "a"})
    assert locations.run_dir(local) == str(tmp_path / "runs" / "a")
    remote = config_from_dict({}, {"run.storage_path": "s3://b/runs/", "run.name": "a"})
    assert locations.run_dir(remote.run) == "s3://b/runs/a"
    with pytest.raises(ValueError, match="unsupported storage URI 'gs://b'"):
        locations.absolute("gs://b")


def test_latest_is_the_checkpoint_ray_train_registered_never_the_orphan(tmp_path):
    run = tmp_path / "run"
    make_checkpoint(run / "checkpoint_2026-01-01_10-00-00.000001", 0)
    make_checkpoint(run / "checkpoint_2026-01-01_10-00-05.000001", 1)
    # written by a worker killed before the controller registered it: newest by name, complete, not registered
    make_checkpoint(run / "checkpoint_2026-01-01_10-00-09.000001", 2)
    ray_snapshot(run, "checkpoint_2026-01-01_10-00-05.000001")
    assert locations.latest_checkpoint(str(run)) == str(run / "checkpoint_2026-01-01_10-00-05.000001")
    assert locations.checkpoint_of(str(run)) == str(run / "checkpoint_2026-01-01_10-00-05.000001")
    assert [r["epoch"] for r in locations.read_history(str(run))] == [0, 1]
    ray_snapshot(run, None)
    assert locations.latest_checkpoint(str(run)) is None and locations.read_history(str(run)) == []


def test_registered_checkpoint_that_is_gone_is_an_error_naming_it(tmp_path):
    run = tmp_path / "run"
    make_checkpoint(run / "checkpoint_a", 0)
    ray_snapshot(run, "checkpoint_b")
    with pytest.raises(FileNotFoundError, match="registered .*checkpoint_b as the latest"):
        locations.latest_checkpoint(str(run))


def test_without_a_snapshot_the_newest_complete_checkpoint_counts(tmp_path):
    run = tmp_path / "run"
    assert locations.latest_checkpoint(str(run)) is None
    make_checkpoint(run / "checkpoint_000000", 0)
    make_checkpoint(run / "checkpoint_000001", 1, complete=False)  # an upload cut short: no state.pt
    assert locations.latest_checkpoint(str(run)) == str(run / "checkpoint_000000")
    assert locations.checkpoint_of(str(run / "checkpoint_000000")) == str(run / "checkpoint_000000")
    with pytest.raises(FileNotFoundError, match="neither a checkpoint"):
        locations.checkpoint_of(str(run / "checkpoint_000001"))
    with pytest.raises(FileNotFoundError, match="no run or checkpoint at"):
        locations.checkpoint_of(str(tmp_path / "nowhere"))


def test_s3_runs_take_the_same_path_and_only_the_latest_checkpoint_is_fetched(s3, tmp_path, monkeypatch):
    from ray_reid.storage import upload_dir

    monkeypatch.setenv("RAY_REID_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    make_checkpoint(run / "checkpoint_x0", 0)
    make_checkpoint(run / "checkpoint_x1", 1)
    make_checkpoint(run / "checkpoint_x2", 2)  # the orphan
    (run / "embeddings").mkdir()
    (run / "embeddings" / "epoch_0000.parquet").write_bytes(b"big")
    ray_snapshot(run, "checkpoint_x1")
    uri = f"s3://{s3.bucket}/runs/r"
    upload_dir(run, uri)
    assert locations.latest_checkpoint(uri) == f"{uri}/checkpoint_x1"
    assert [r["epoch"] for r in locations.read_history(uri)] == [0, 1]
    local = locations.local_checkpoint(uri)
    assert local.name == "checkpoint_x1" and (local / "state.pt").read_bytes() == b"weights"
    fetched = {p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").rglob("*")
               if p.is_file() and not p.name.startswith(".")}
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
