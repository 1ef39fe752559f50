"""Jobs submitted to a cluster smaller than the one it will become: they wait for, then use, the nodes that join.

Each scenario of ``late_nodes.py`` runs in its own process on a ``ray.cluster_utils.Cluster`` (node
types of ``cluster.yaml`` scaled down to CPUs and custom resources), adds the node an autoscaler
would start once the job waits for it, and reports what Ray's state API recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

SCRIPT = Path(__file__).with_name("late_nodes.py")
REPO = Path(__file__).resolve().parents[2]


def run_scenario(name: str, tmp_path: Path, data_root: Path, timeout: float, **extra) -> dict:
    args = {"tmp": str(tmp_path), "data_root": str(data_root), **extra}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(SCRIPT), name, json.dumps(args)], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    (tmp_path / f"{name}.log").write_text(done.stdout + done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith("LATE_NODES_RESULT ")]
    assert done.returncode == 0 and lines, (f"scenario {name} exited {done.returncode}; its output ends with:\n"
                                            f"{(done.stdout + done.stderr)[-6000:]}")
    result = json.loads(lines[-1].split(" ", 1)[1])
    print(f"{name}: wall {result['wall_s']:.0f}s, driver CPU {result['driver_cpu_s']:.0f}s, "
          f"{result['seconds_after_join']:.0f}s after the node joined; load {os.getloadavg()}")
    return result


def test_training_waits_for_the_clusterer_node_and_clusters_every_epoch_there(tiny_synthetic_root, tmp_path):
    epochs = 2
    result = run_scenario("clusterer_joins_late", tmp_path, tiny_synthetic_root, 1200, epochs=epochs)
    # the driver said what it waited for while the actor was pending, and why it asked for that node
    assert "waiting for a node with {'clusterer': 1} for the ClusteringActor" in result["waiting_message"]
    assert set(result["pending_states"]) <= {"PENDING_CREATION", "DEPENDENCIES_UNREADY"}, result["pending_states"]
    assert any("'clusterer' of the autoscaler config" in m for m in result["placement_logs"])
    assert result["epochs"] == epochs
    # the state API: the one actor ran on the node that joined late, and so did every rank's submit of every epoch
    assert [a["node_id"] for a in result["actors"]] == [result["clusterer_node"]], result["actors"]
    assert len(result["submits"]) == 2 * epochs  # 2 ranks × epochs
    assert {t["node_id"] for t in result["submits"]} == {result["clusterer_node"]}, result["submits"]
    assert {t["state"] for t in result["submits"]} == {"FINISHED"}


def test_sweep_admitted_on_an_empty_worker_pool_scales_up_and_completes(tiny_synthetic_root, tmp_path):
    result = run_scenario("workers_join_late", tmp_path, tiny_synthetic_root, 1400)
    # admitted against what the cluster can scale to, with a warning, not refused
    assert "the cluster can scale to 1" in result["warning"] and "head + 1 × cpu_worker" in result["warning"]
    assert any("running up to 1 at once" in m for m in result["admission_logs"]), result["admission_logs"]
    assert any("'clusterer' node" in m for m in result["admission_logs"]), result["admission_logs"]
    assert result["workers_before_join"] == 0  # the first trial's workers waited for the node
    assert sorted(r["cluster.lam"] for r in result["rows"]) == [0.1, 1.0]
    assert all(r["status"] == "TERMINATED" and r["epochs_run"] == 1 for r in result["rows"]), result["rows"]
    assert Path(result["files"]["table"]).is_file() and Path(result["files"]["best_config"]).is_file()
    # every trial's Train worker ran on the node that joined; every trial's actor on the clusterer (head) node
    assert len(result["workers"]) == 2 and {w["node_id"] for w in result["workers"]} == {result["worker_node"]}
    assert len(result["actors"]) == 2 and {a["node_id"] for a in result["actors"]} == {result["head_node"]}
