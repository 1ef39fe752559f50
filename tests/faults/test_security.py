"""Fault 6: crafted pickles run no code, S3 keys stay inside the cache, no secret lands on disk or in
logs, and a local Ray keeps its dashboard off the network."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from pathlib import Path

import pytest
import torch
from fault_helpers import checkpoint_dirs
from s3_server import put_tree

REPO = Path(__file__).resolve().parents[2]


class CodeOnLoad:
    """Unpickling this calls ``open(marker, "w")``: any loader that runs pickled code creates the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _train_main():
    spec = importlib.util.spec_from_file_location("ray_reid_jobs_train_sec", REPO / "jobs" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _cli(root: str, storage: Path, name: str, *extra: str) -> list[str]:
    return ["--dataset", "synthetic", "--data-root", root, "--height", "32", "--width", "16", "--backbone",
            "resnet18", "--merge-percent", "0.5", "--epochs", "1", "--iters", "2", "--batch", "4x2", "--workers", "0",
            "--storage-path", str(storage), "--name", name, "--eval-every", "1", *extra]


@pytest.fixture
def crafted_checkpoint(tmp_path):
    """A checkpoint folder that looks right (meta, history) but whose state.pt carries a code payload."""
    from ray_reid.models import ModelConfig, build_model

    folder = tmp_path / "runs" / "evil" / "checkpoint_000000"
    folder.mkdir(parents=True)
    marker = tmp_path / "code_ran"
    model = build_model(ModelConfig(backbone="resnet18", pretrained=None))
    torch.save({"model": model.state_dict(), "epoch": 0, "payload": CodeOnLoad(marker)}, folder / "state.pt")
    (folder / "meta.json").write_text(json.dumps({"model": {"backbone": "resnet18", "views": "global",
                                                            "pretrained": None, "gem_p": 3.0}, "epoch": 0}))
    (folder / "history.json").write_text("[]")
    return folder, marker


def test_crafted_checkpoint_is_refused_everywhere_it_can_be_loaded_and_no_code_runs(
        crafted_checkpoint, tiny_synthetic_root, tmp_path):
    from ray_reid.engine.checkpoint import load_checkpoint
    from ray_reid.engine.teacher import load_teacher
    from ray_reid.models import ModelConfig
    from ray_reid.models.weights import _read_state_dict

    folder, marker = crafted_checkpoint
    with pytest.raises(ValueError, match=f"checkpoint file {folder / 'state.pt'} cannot be loaded safely"):
        load_checkpoint(folder)
    with pytest.raises(ValueError, match="cannot be loaded safely"):  # as a teacher for distillation
        load_teacher(str(folder), ModelConfig(backbone="resnet18", pretrained=None))
    with pytest.raises(ValueError, match="refusing to load"):  # as pretrained backbone weights
        _read_state_dict(folder / "state.pt")
    with pytest.raises(ValueError, match="cannot be loaded safely"):  # as the run to resume
        _train_main()(_cli(str(tiny_synthetic_root), tmp_path / "runs", "evil", "--epochs", "2"))
    assert not marker.exists(), "a refused load still executed the pickled payload"
    assert len(checkpoint_dirs(folder.parent)) == 1

    # Control: the file really is hostile, an unsafe load runs the payload.
    torch.load(folder / "state.pt", weights_only=False)
    assert marker.exists()


def test_every_torch_load_in_the_package_is_weights_only():
    offenders = []
    for path in sorted((REPO / "ray_reid").rglob("*.py")) + sorted((REPO / "jobs").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line and not line.lstrip().startswith(("#", '"')) \
                    and "``" not in line:
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


@pytest.mark.parametrize("evil_key", ["tiny/../escaped.jpg", "tiny/query//escaped.jpg"])
def test_s3_dataset_with_escaping_key_is_refused_and_nothing_lands_outside_the_cache(
        s3, tiny_synthetic_root, tmp_path, monkeypatch, evil_key):
    put_tree(s3.client, tiny_synthetic_root, s3.bucket, "tiny")
    s3.client.put_object(Bucket=s3.bucket, Key=evil_key, Body=b"\xff\xd8 not an image")
    monkeypatch.setenv("RAY_REID_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=re.escape(f"refusing S3 key {evil_key!r}")):
        _train_main()(_cli(f"s3://{s3.bucket}/tiny", tmp_path / "runs", "keys"))
    assert not [p for p in tmp_path.rglob("escaped.jpg")], "an unsafe key was written somewhere"
    assert not (tmp_path / "runs" / "keys").exists()


def test_no_credential_in_run_folder_cache_or_logs_after_an_s3_run(s3, tiny_synthetic_root, tmp_path, monkeypatch,
                                                                   caplog, capfd):
    secret = "SECRETsentinel9f3c2e7a1b"
    key_id = "AKIASENTINEL9F3C2E7A"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SESSION_TOKEN", secret + "token")
    monkeypatch.setenv("RAY_REID_CACHE", str(tmp_path / "cache"))
    put_tree(s3.client, tiny_synthetic_root, s3.bucket, "tiny")
    with caplog.at_level(logging.DEBUG, logger="ray_reid"):
        assert _train_main()(_cli(f"s3://{s3.bucket}/tiny", tmp_path / "runs", "s3run", "--verbose")) == 0
    run_dir = tmp_path / "runs" / "s3run"
    assert checkpoint_dirs(run_dir) and (run_dir / "summary.json").is_file()
    assert (tmp_path / "cache" / "s3" / s3.bucket / "tiny").is_dir(), "the dataset did not come through S3"
    out, err = capfd.readouterr()
    leaks = [str(p) for p in tmp_path.rglob("*") if p.is_file()
             and (secret.encode() in p.read_bytes() or key_id.encode() in p.read_bytes())]
    assert leaks == [], f"credentials written to {leaks}"
    for text, where in ((caplog.text, "log records"), (out, "stdout"), (err, "stderr")):
        assert secret not in text and key_id not in text, f"credentials in {where}"


def test_no_credentials_in_code_or_configs():
    pattern = re.compile(r"AKIA[0-9A-Z]{16}|aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{20,}", re.I)
    hits = []
    for path in sorted(REPO.glob("ray_reid/**/*.py")) + sorted(REPO.glob("jobs/**/*")) + sorted(REPO.glob("*.y*ml")):
        if path.is_file():
            hits += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in pattern.finditer(path.read_text(errors="ignore"))]
    assert hits == []


def test_local_ray_binds_the_dashboard_to_loopback_and_a_cluster_address_is_joined_as_given(monkeypatch):
    from ray_reid.distributed import session

    calls: list[dict] = []
    monkeypatch.setattr(session.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(session.ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(session.ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert "loopback" in session.connect()
    local = calls[-1]
    assert local["address"] == "local" and local.get("include_dashboard") is True
    assert local["dashboard_host"] == "127.0.0.1"
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    session.connect()
    assert calls[-1]["address"] == "ray://head:10001" and "dashboard_host" not in calls[-1]
