"""Nodes that come and go: the storage refusal on two nodes and an elastic run losing and regaining one.

Each scenario runs in its own process on a ``ray.cluster_utils.Cluster`` of real nodes
(``elastic_cluster.py`` says why and how); the assertions here read what it observed and the
run folder it left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def run_scenario(name: str, root: Path, workdir: Path, timeout: float, **env: str) -> dict:
    log_path = workdir / f"{name}.log"
    workdir.mkdir(parents=True, exist_ok=True)
    environ = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0",
               # a worker group that cannot be placed (capacity Ray Train still counts on a dead node) gives up
               # and is re-planned after 30 s instead of 60 s
               "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "30", **env}
    with open(log_path, "w") as log_file:
        proc = subprocess.run([sys.executable, str(HERE / "elastic_cluster.py"), name, str(root), str(workdir)],
                              stdout=log_file, stderr=subprocess.STDOUT, env=environ, timeout=timeout)
    tail = log_path.read_text()[-8000:]
    assert proc.returncode == 0, f"scenario {name} failed (rc {proc.returncode}); log ends with:\n{tail}"
    return json.loads((workdir / "observed.json").read_text())


def test_local_storage_on_two_nodes_is_refused_before_any_epoch_unless_shared(tiny_synthetic_root, tmp_path):
    observed = run_scenario("storage", tiny_synthetic_root, tmp_path, timeout=900)
    assert observed["nodes"] == 2
    message = observed["refused"]
    assert message is not None, "a local storage path on a 2-node cluster was not refused"
    assert str(tmp_path / "runs") in message and "2 node(s)" in message and "--shared-storage" in message
    assert all(f"node {node_id[:8]}" in message for node_id in observed["node_ids"])  # both nodes named
    # refused before anything ran: no run folder, no ClusteringActor
    assert observed["run_dir_after_refusal"] is False and observed["actor_after_refusal"] is False
    # the same run, with the path declared shared (it is: one host), trains across both nodes
    assert [row["epoch"] for row in observed["shared_history"]] == [0]
    assert observed["shared_history"][0]["world_size"] == 2
    assert Path(observed["shared_checkpoint"]).parent == tmp_path / "runs" / "shared"


def test_elastic_run_shrinks_when_a_node_goes_and_grows_back_with_the_same_global_batch(
        tiny_synthetic_root, tmp_path):
    epochs = 14
    observed = run_scenario("elastic", tiny_synthetic_root, tmp_path, timeout=2300, ELASTIC_EPOCHS=str(epochs))
    assert observed["error"] is None, observed["error"]
    history = observed["history"]
    # every epoch exactly once, in order, none missing
    assert [row["epoch"] for row in history] == list(range(epochs))
    sizes = [row["world_size"] for row in history]
    # started on both nodes, went on with one after the loss, grew back to two when a node joined again
    first_one = sizes.index(1)
    assert sizes[0] == 2 and first_one > observed["removed_after_epoch"]
    assert 2 in sizes[first_one:], f"never grew back: world sizes by epoch {sizes}"
    # the same global batch (p x k = 4 x 2) whatever the world size
    assert {row["global_batch"] for row in history} == {8}
    # at most the epoch in progress lost: no epoch was checkpointed twice (a resume from an older checkpoint
    # would train, and checkpoint, finished epochs again)
    by_epoch: dict[int, list[str]] = {}
    for name, seen in observed["seen"].items():
        by_epoch.setdefault(seen["epoch"], []).append(name)
    assert all(len(names) == 1 for names in by_epoch.values()), by_epoch
    assert sorted(by_epoch) == list(range(epochs))
    # the checkpoints agree with the history the run returned
    assert all(history[s["epoch"]]["world_size"] == s["world_size"] for s in observed["seen"].values())
    assert history[-1]["n_clusters"] >= 1 and 0.0 <= history[-1]["mAP"] <= 1.0
    # the actor sat on the clusterer node all along (the driver logs where it runs)
    assert f"ClusteringActor runs on node {observed['clusterer_node'][:8]}" in (tmp_path / "elastic.log").read_text()
