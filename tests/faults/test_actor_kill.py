"""Fault 2: the ClusteringActor process dies while ranks wait in ``submit``, and again between clusterings.

The test pre-creates the run's named actor from the real ``ClusteringActor`` class, subclassed only to
leave a marker file per call (epoch, rank, pid) and to hold epoch 1's calls for a few seconds so the
kill lands while both ranks are inside ``submit``. ``fit`` finds it by name (get_if_exists) and uses it.
The run has ``max_failures=0``: surviving means the actor restart and task retry did the work, not a
restart of the worker group.
"""

from __future__ import annotations

import pytest
import os
import signal
import sys
import threading
import time
from pathlib import Path

from fault_helpers import wait_for

from ray_reid.distributed.actor import ACTOR_NAME_PREFIX, ClusteringActor

HOLD_EPOCH = 1
HOLD_SECONDS = 4.0


class MarkedClusteringActor(ClusteringActor.__ray_actor_class__):
    """The real actor body plus markers, so the test can see which incarnation served which call."""

    def __init__(self, cluster_cfg, embeddings_uri=None, s3_endpoint=None, *, marker_dir: str):
        super().__init__(cluster_cfg, embeddings_uri, s3_endpoint)
        self.marker_dir = Path(marker_dir)

    def _mark(self, kind: str, epoch: int, rank: int) -> None:
        (self.marker_dir / f"{kind}_e{epoch}_r{rank}_p{os.getpid()}").touch()

    def submit(self, epoch, n_total, world_size, rank, indices, refs, camids=None):
        self._mark("in", epoch, rank)
        if epoch == HOLD_EPOCH:
            time.sleep(HOLD_SECONDS)
        result = super().submit(epoch, n_total, world_size, rank, indices, refs, camids=camids)
        self._mark("out", epoch, rank)
        return result


def _markers(folder: Path, kind: str, epoch: int) -> dict[int, set[int]]:
    """rank -> pids of the actor processes that left a ``kind`` marker for ``epoch``."""
    found: dict[int, set[int]] = {}
    for path in folder.glob(f"{kind}_e{epoch}_r*_p*"):
        _, _, rank, pid = path.name.split("_")
        found.setdefault(int(rank[1:]), set()).add(int(pid[1:]))
    return found


@pytest.mark.slow
def test_actor_killed_during_and_between_clusterings_is_restarted_and_pending_calls_retried(
        ray_session, make_cfg, tmp_path):
    import ray

    from ray_reid.distributed.trainer import fit

    assert ClusteringActor._default_options == {"max_restarts": -1, "max_task_retries": -1}
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test module is not importable on workers
    cfg = make_cfg("actorkill", **{"run.num_workers": 2, "optim.epochs": 3, "run.max_failures": 0})
    markers = tmp_path / "markers"
    markers.mkdir()
    name = f"{ACTOR_NAME_PREFIX}_{cfg.run.name}"
    # Keep the handle: a non-detached actor dies when its creator's last handle goes.
    handle = ray.remote(**ClusteringActor._default_options)(MarkedClusteringActor).options(
        name=name, max_concurrency=4, num_cpus=1).remote(cfg.to_dict()["cluster"], marker_dir=str(markers))
    ray.get(handle.where.remote(), timeout=120)

    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = fit(cfg)
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    # Kill 1: both ranks are inside submit for epoch 1 (held there), the shards are in the dead process.
    wait_for(lambda: len(_markers(markers, "in", HOLD_EPOCH)) == 2 or not thread.is_alive(), 300,
             "both ranks to enter submit for epoch 1")
    assert thread.is_alive(), f"run ended early: {outcome}"
    first_pid = next(iter(_markers(markers, "in", HOLD_EPOCH)[0]))
    assert not _markers(markers, "out", HOLD_EPOCH)
    os.kill(first_pid, signal.SIGKILL)

    # The retried calls run in a new process and cluster epoch 1 from the workers' object refs.
    wait_for(lambda: len(_markers(markers, "out", HOLD_EPOCH)) == 2 or not thread.is_alive(), 180,
             "epoch 1 clustering to be redone by the restarted actor")
    served = _markers(markers, "out", HOLD_EPOCH)
    assert len(served) == 2, f"epoch 1 not served to both ranks: {served}, run outcome {outcome}"
    second_pids = set().union(*served.values())
    assert first_pid not in second_pids and len(second_pids) == 1
    assert all(first_pid in pids and len(pids) == 2 for pids in _markers(markers, "in", HOLD_EPOCH).values())

    # Kill 2: between clusterings (ranks training epoch 1); Ray restarts it, epoch 2 goes to the new one.
    epoch2_started = bool(_markers(markers, "in", 2))
    ray.kill(handle, no_restart=False)

    thread.join(timeout=300)
    assert not thread.is_alive(), "run did not finish within 5 minutes of the actor kills"
    assert "error" not in outcome, f"run failed instead of surviving the actor kills: {outcome.get('error')!r}"
    history = outcome["result"].history
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert all(row["n_clusters"] >= 1 for row in history)
    last_pids = set().union(*_markers(markers, "out", 2).values())
    assert len(_markers(markers, "out", 2)) == 2 and not last_pids & (second_pids | {first_pid})
    assert not epoch2_started, "second kill was meant to land between clusterings, epoch 2 had begun"
