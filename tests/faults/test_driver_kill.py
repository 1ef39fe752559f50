"""Fault 3: the driver (``jobs/train.py`` with its own local Ray) is SIGKILLed after a checkpoint;
rerunning the same command with the same ``--name`` continues after the newest complete checkpoint.

The driver runs in its own session (process group), so killing that group takes down its Ray too
(GCS, raylet, workers), the way a stopped job or a lost head node would, without touching any
other Ray on the machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_helpers import checkpoint_dirs, children, is_running, process_title

from ray_reid.engine.checkpoint import check_complete

REPO = Path(__file__).resolve().parents[2]
# Enough epochs that the kill (one poll after the first checkpoint) lands mid-run even when a loaded host
# lets the run finish two more epochs before the test's polling loop gets the CPU back.
EPOCHS = 6
POLL_MARGIN_S = 2.5  # Train registers a reported checkpoint at its next 2 s poll


def _command(root: Path, storage: Path) -> list[str]:
    return [sys.executable, str(REPO / "jobs" / "train.py"), "--dataset", "synthetic", "--data-root", str(root),
            "--height", "32", "--width", "16", "--backbone", "resnet18", "--merge-percent", "0.5",
            "--epochs", str(EPOCHS), "--iters", "2", "--batch", "4x2", "--workers", "2", "--max-failures", "0",
            "--storage-path", str(storage), "--name", "job", "--eval-every", "1"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never join the test session's Ray
    env.update(OMP_NUM_THREADS="1", RAY_DEDUP_LOGS="0", PYTHONUNBUFFERED="1")  # the log explains a failure
    return env


def _checkpoint_epoch(folder: Path) -> int:
    return int(json.loads((folder / "meta.json").read_text())["epoch"])


@pytest.mark.slow
def test_killed_driver_rerun_with_the_same_name_continues_after_the_latest_checkpoint(tiny_synthetic_root, tmp_path):
    storage = tmp_path / "runs"
    run_dir = storage / "job"
    log1 = tmp_path / "first.log"
    with open(log1, "w") as out:
        driver = subprocess.Popen(_command(tiny_synthetic_root, storage), stdout=out, stderr=subprocess.STDOUT,
                                  cwd=REPO, env=_env(), start_new_session=True)
    seen: dict[Path, float] = {}
    family: set[int] = set()
    try:
        deadline = time.monotonic() + 540  # Ray start + 1 epoch; slow on a shared 2-core host
        while time.monotonic() < deadline and driver.poll() is None:
            for folder in checkpoint_dirs(run_dir):
                seen.setdefault(folder, time.monotonic())
            family |= children(driver.pid, recursive=True)
            if seen and time.monotonic() - min(seen.values()) > POLL_MARGIN_S:
                break
            time.sleep(0.2)
        assert driver.poll() is None, f"driver ended before it could be killed:\n{log1.read_text()[-3000:]}"
        assert seen, f"no checkpoint within the time limit:\n{log1.read_text()[-3000:]}"
        family |= children(driver.pid, recursive=True)
        killed_at = time.monotonic()
        settled = [_checkpoint_epoch(f) for f, t in seen.items() if killed_at - t > POLL_MARGIN_S - 0.5]
        on_disk = [_checkpoint_epoch(f) for f in checkpoint_dirs(run_dir)]
        assert max(on_disk) < EPOCHS - 1, "the run had already finished its last epoch"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the group this test started: the driver and its Ray
        driver.wait(timeout=60)

    # Everything the driver started goes with it: nothing of the dead job may keep running.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(is_running(pid) for pid in family):
        time.sleep(0.5)
    leftovers = [(pid, process_title(pid)[:80]) for pid in sorted(family) if is_running(pid)]
    for pid, _ in leftovers:  # started by this test; stop them before failing
        os.kill(pid, signal.SIGKILL)
    assert leftovers == [], f"processes of the killed driver survived: {leftovers}"

    # What the dead driver left complete in storage, registered by its controller or not.
    complete = [check_complete(f)[0] for f in run_dir.glob("checkpoint_*")]
    rerun = subprocess.run(_command(tiny_synthetic_root, storage), capture_output=True, text=True, cwd=REPO,
                           env=_env(), timeout=480, start_new_session=True)
    log2 = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, log2[-4000:]
    resumed = [int(m) for m in re.findall(r"continuing at epoch (\d+)", log2)]
    assert resumed, "the rerun did not resume from a checkpoint"
    # Resumes right after the newest complete checkpoint: at most the epoch in progress is lost.
    assert resumed[0] - 1 == max(complete) and resumed[0] - 1 >= max(settled), (resumed, complete, settled)
    history = json.loads((checkpoint_dirs(run_dir)[-1] / "history.json").read_text())
    assert [row["epoch"] for row in history] == list(range(EPOCHS))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == EPOCHS and 0.0 <= summary["mAP"] <= 1.0
