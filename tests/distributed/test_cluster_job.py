"""A training job submitted to a real two-node Ray cluster, as a user runs it on AWS.

The cluster is made with ``ray start`` on loopback (a 3-CPU head and a 1-CPU node carrying the
``clusterer`` resource, like the clusterer node type of ``cluster.yaml``); the job goes through
the dashboard's job server with the repository as ``--working-dir``. It must succeed, write the
run folder, and put the ClusteringActor on the clusterer node, not next to the DDP workers.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
from local_cluster import RAY_BIN, LocalCluster

REPO = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 420
# What the job's working_dir upload leaves out besides .gitignore'd paths: the venv and runs
# are ignored by .gitignore already; .git is not, and has no business on the cluster.
EXCLUDES = [".git", ".venv", "runs", "**/__pycache__", ".pytest_cache", "*.egg-info"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def cluster():
    if not Path(RAY_BIN).is_file():
        pytest.skip(f"no `ray` CLI next to {sys.executable}")
    with LocalCluster(head_cpus=3, worker_cpus=1, startup_timeout=300,
                      worker_resources={"clusterer": 1}, env={"OMP_NUM_THREADS": "1"}) as running:
        yield running


def wait_for_job(client, job_id: str, timeout: float) -> str:
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout
    status = client.get_job_status(job_id)
    while not status.is_terminal():
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            raise AssertionError(f"job {job_id} still {status} after {timeout:.0f}s; its logs end with:\n"
                                 f"{client.get_job_logs(job_id)[-6000:]}")
        time.sleep(2.0)
        status = client.get_job_status(job_id)
    assert status == JobStatus.SUCCEEDED, (f"job {job_id} ended {status}: {client.get_job_info(job_id).message}\n"
                                           f"its logs end with:\n{client.get_job_logs(job_id)[-6000:]}")
    return status


def test_two_node_cluster_has_the_clusterer_node(cluster):
    nodes = cluster.alive_nodes()
    assert len(nodes) == 2
    clusterer = [n for n in nodes if n["resources_total"].get("clusterer")]
    assert len(clusterer) == 1 and not clusterer[0]["is_head_node"]


def test_submitted_training_job_succeeds_with_actor_on_clusterer_node(cluster, tiny_synthetic_root, tmp_path):
    storage = tmp_path / "runs"
    # sys.executable, not `python`: the job runs under the shell of the head's raylet, whose
    # PATH need not start with this venv on a developer's machine.
    entrypoint = " ".join([
        sys.executable, "jobs/train.py", "--dataset", "synthetic", "--data-root", str(tiny_synthetic_root),
        "--height", "32", "--width", "16", "--backbone", "resnet18", "--epochs", "2", "--iters", "2",
        "--batch", "4x2", "--workers", "2", "--cpus-per-worker", "1", "--storage-path", str(storage),
        "--name", "cluster-test", "--set", "cluster.merge_percent=0.5",
        "--set", "run.shared_storage=true",  # both nodes are this host: the local folder is shared
    ])
    client = cluster.job_client()
    job_id = client.submit_job(entrypoint=entrypoint,
                               runtime_env={"working_dir": str(REPO), "excludes": EXCLUDES},
                               entrypoint_num_cpus=0)
    wait_for_job(client, job_id, JOB_TIMEOUT_S)
    logs = client.get_job_logs(job_id)

    run_dir = storage / "cluster-test"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["workers"] == 2 and summary["run"] == "cluster-test"
    assert summary["n_clusters"] >= 1
    checkpoints = [p for p in run_dir.glob("checkpoint_*") if (p / "state.pt").is_file()]
    assert len(checkpoints) == 2, sorted(p.name for p in run_dir.iterdir())

    # The driver says where the actor went; that node must be the one with the `clusterer` resource.
    assert "placed on the node with the 'clusterer' resource" in logs, logs[-4000:]
    found = re.search(r"ClusteringActor runs on node ([0-9a-f]{8})", logs)
    assert found, logs[-4000:]
    clusterer_ids = [n["node_id"] for n in cluster.alive_nodes() if n["resources_total"].get("clusterer")]
    assert [i[:8] for i in clusterer_ids] == [found.group(1)]

    # The cluster's own records agree: the actor on the clusterer node, both DDP ranks on the head
    # (the clusterer node's only CPU is the actor's).
    head_ids = [n["node_id"] for n in cluster.alive_nodes() if n["is_head_node"]]
    actors = cluster.actors("ClusteringActor")
    assert [a["node_id"] for a in actors] == clusterer_ids, actors
    workers = cluster.actors("RayTrainWorker")
    assert len(workers) == 2 and {w["node_id"] for w in workers} == set(head_ids), workers


def test_cli_submission_needs_the_cluster_token(cluster):
    """The dashboard refuses a client without this cluster's token: auth is really on."""
    import subprocess

    env = {**cluster.env, "RAY_AUTH_TOKEN": "0" * 64}
    result = subprocess.run([RAY_BIN, "job", "list", "--address", cluster.dashboard_url], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    ok = subprocess.run([RAY_BIN, "job", "list", "--address", cluster.dashboard_url], env=cluster.env,
                        capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr[-2000:]
