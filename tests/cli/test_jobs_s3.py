"""`jobs/purify.py --storage-path s3://...` then `jobs/evaluate.py s3://.../run`, as scripts, against loopback S3.

In-process training (`--workers 0`) keeps this fast; the run folders, checkpoints, the purify comparison
and the evaluation outputs all live in the bucket, and the student's teacher is the teacher's S3 URI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from s3_server import DUMMY_ENV, keys_under

REPO = Path(__file__).resolve().parents[2]
TINY = ["--dataset", "synthetic", "--height", "32", "--width", "16", "--backbone", "resnet18",
        "--merge-percent", "0.5", "--epochs", "1", "--iters", "2", "--batch", "4x2", "--workers", "0",
        "--eval-every", "1"]


def run_job(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def keys(s3, prefix: str) -> set[str]:
    return {key[len(prefix):] for key in keys_under(s3.client, s3.bucket, prefix)}


def test_purify_and_evaluate_scripts_with_s3_storage(s3, tiny_synthetic_root, tmp_path):
    env = {**os.environ, **DUMMY_ENV, "RAY_REID_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    storage = f"s3://{s3.bucket}/runs"
    proc = run_job("purify.py", *TINY, "--data-root", str(tiny_synthetic_root), "--storage-path", storage,
                   "--name", "lp", "--s3-endpoint", s3.endpoint, env=env)
    assert "teacher" in proc.stdout and "student" in proc.stdout and "mAP" in proc.stdout

    teacher, student = keys(s3, "runs/lp-teacher/"), keys(s3, "runs/lp-student/")
    for run in (teacher, student):
        assert {"summary.json", "metrics.csv", "training_curves.png", "config.yaml"} <= run
        assert {"checkpoint_000000/state.pt", "checkpoint_000000/meta.json", "checkpoint_000000/history.json"} <= run
    student_cfg = yaml.safe_load(s3.client.get_object(Bucket=s3.bucket, Key="runs/lp-student/config.yaml")["Body"]
                                 .read())
    assert student_cfg["run"]["teacher"] == f"{storage}/lp-teacher"  # not /cwd/s3:/...
    assert student_cfg["model"]["views"] == "global+parts"
    comparison = json.loads(s3.client.get_object(Bucket=s3.bucket, Key="runs/lp-purify.json")["Body"].read())
    assert comparison["teacher"]["run"] == "lp-teacher" and comparison["student"]["run"] == "lp-student"
    # the student's epoch 0 is the published epoch -1 on the teacher's labels, then its one epoch of its own
    student_history = json.loads(s3.client.get_object(
        Bucket=s3.bucket, Key="runs/lp-student/checkpoint_000001/history.json")["Body"].read())
    assert [row["labels_from"] for row in student_history] == ["teacher", "model"]
    assert "distill_global" in student_history[0]
    assert not (REPO / "s3:").exists()

    run_job("evaluate.py", f"{storage}/lp-student", "--max-tsne-points", "60", "--s3-endpoint", s3.endpoint, env=env)
    out = keys(s3, "runs/lp-student/checkpoint_000001/eval/")  # the run's latest checkpoint
    assert out == {"metrics.json", "rank_list.png", "embedding.png"}
    metrics = json.loads(s3.client.get_object(
        Bucket=s3.bucket, Key="runs/lp-student/checkpoint_000001/eval/metrics.json")["Body"].read())
    # the same checkpoint and data give the figures the run itself reported for that epoch
    assert abs(metrics["mAP"] - comparison["student"]["mAP"]) < 1e-6
    assert metrics["epoch"] == 1 and 0 <= metrics["pseudo_ari"] <= 1
