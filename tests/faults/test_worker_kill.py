"""Fault 1: a Ray Train worker process is SIGKILLed mid-run; the group restarts from the newest complete checkpoint.

The uninterrupted run with the same seed is the reference. Every epoch reseeds torch from
(seed, epoch, rank), the sampler from (seed, epoch), and a checkpoint restores model, optimizer
and scheduler, so the resumed run redoes the interrupted epoch from the same state with the same
randomness: its final figures must match the reference to float noise, not merely "be close".
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time

import pytest

from fault_helpers import checkpoint_dirs, ray_actor_pids, wait_for

from ray_reid.engine.checkpoint import check_complete

EPOCHS = 4
# A checkpoint reported less than one controller poll (2 s) before a crash may not be registered yet.
POLL_MARGIN_S = 2.5


@pytest.mark.slow
def test_killed_worker_resumes_from_latest_checkpoint_and_matches_an_uninterrupted_run(
        ray_session, make_cfg, tmp_path):
    from ray_reid.distributed.trainer import fit

    common = {"run.num_workers": 2, "optim.epochs": EPOCHS, "run.seed": 7}
    reference = fit(make_cfg("reference", **common))
    workers_before = ray_actor_pids("RayTrainWorker")  # idle leftovers of the reference run, if any

    run_dir = tmp_path / "runs" / "killed"
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = fit(make_cfg("killed", **common, **{"run.max_failures": 1}))
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    wait_for(lambda: bool(checkpoint_dirs(run_dir)) or not thread.is_alive(), 240, "the first checkpoint")
    assert thread.is_alive(), f"run ended before its first checkpoint: {outcome}"
    time.sleep(POLL_MARGIN_S)
    group = ray_actor_pids("RayTrainWorker") - workers_before
    assert len(group) == 2, f"expected the run's 2 RayTrainWorker processes, found {sorted(group)}"
    n_ckpt_at_kill = len(checkpoint_dirs(run_dir))
    assert n_ckpt_at_kill < EPOCHS, "run already past its last checkpoint when the worker was killed"
    os.kill(max(group), signal.SIGKILL)
    # The controller notices, tears the group down and starts a new one: new worker processes.
    wait_for(lambda: len(ray_actor_pids("RayTrainWorker") - workers_before - group) == 2 or not thread.is_alive(),
             240, "a restarted worker group")
    restarted = ray_actor_pids("RayTrainWorker") - workers_before - group
    # What the killed group left complete in storage (registered by the controller or not); a folder
    # it was writing at the kill does not count. The new group may already have added to it.
    at_restart = {f.name: check_complete(f)[0] for f in run_dir.glob("checkpoint_*")}
    newest_at_restart = max(at_restart.values(), default=-1)
    thread.join(timeout=420)
    assert not thread.is_alive(), "run did not finish within 7 minutes after the worker was killed"
    assert "error" not in outcome, f"run failed instead of resuming: {outcome.get('error')!r}"
    resumed = outcome["result"]

    assert len(restarted) == 2, "the worker group was not restarted after the kill"
    # No epoch counted twice, none missing, and at most the epoch in progress lost: the new group resumed
    # from the newest complete checkpoint, so every checkpoint it wrote is of a later epoch.
    assert [row["epoch"] for row in resumed.history] == list(range(EPOCHS))
    written_after = sorted(json.loads((f / "meta.json").read_text())["epoch"]
                           for f in checkpoint_dirs(run_dir) if f.name not in at_restart)
    assert written_after == list(range(newest_at_restart + 1, EPOCHS)), (at_restart, written_after)
    # Kept: the three newest epochs; an older one only if Ray registered it (its own to prune).
    epochs_on_disk = sorted(json.loads((f / "meta.json").read_text())["epoch"] for f in checkpoint_dirs(run_dir))
    assert epochs_on_disk[-3:] == list(range(EPOCHS - 3, EPOCHS)) and len(epochs_on_disk) <= 4, epochs_on_disk

    # Same seed, same state at the resumed epoch: figures agree to float-summation noise. gloo
    # all-reduce order and BLAS threading can move the last bits, so losses get 1e-3 relative slack;
    # hc_sse stops at a scheduled cluster count, so n_clusters must be identical.
    want, got = reference.history[-1], resumed.history[-1]
    assert got["n_clusters"] == want["n_clusters"]
    assert math.isclose(got["loss"], want["loss"], rel_tol=1e-3), (got["loss"], want["loss"])
    assert got["mAP"] == pytest.approx(want["mAP"], abs=0.02)
    assert got["ari"] == pytest.approx(want["ari"], abs=0.02)
    # Epochs finished before the kill are carried over verbatim from the checkpoint.
    for before, after in zip(reference.history[:n_ckpt_at_kill], resumed.history[:n_ckpt_at_kill]):
        assert after["loss"] == pytest.approx(before["loss"], rel=1e-3)
