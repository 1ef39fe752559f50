"""Scenarios on a cluster that grows while the job runs, as an autoscaler grows ``cluster.yaml``'s cluster.

Each scenario runs in a process of its own (``python late_nodes.py SCENARIO ARGS_JSON``), because it
builds a ``ray.cluster_utils.Cluster`` and connects its driver to it: the test process already holds
the suite's shared Ray session. The node types of ``cluster.yaml`` are scaled down to CPUs and
custom resources and written as the autoscaler config the job reads (``RAY_REID_AUTOSCALING_CONFIG``,
what ``~/ray_bootstrap_config.yaml`` is on a ``ray up`` head); the scenario then adds the node the
autoscaler would start, once the job is visibly waiting for it. It prints one JSON line of what the
cluster's own state API recorded, for the test to check. ``AutoscalingCluster.start()`` is not used:
it runs ``ray stop --force``, which kills every Ray on the machine.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ports.py: run as a script
from ports import free_port  # noqa: E402

RESULT_PREFIX = "LATE_NODES_RESULT "
CLUSTERS: list[Any] = []  # shut down when the scenario ends, however it ends


class Recorder(logging.Handler):
    """Keeps the driver's log messages so the scenario can wait for a given one."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def wait_for(self, text: str, timeout: float, alive: Callable[[], bool]) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.messages if text in m]
            if found:
                return found[0]
            if not alive():
                raise RuntimeError(f"the job ended before logging {text!r}")
            time.sleep(0.5)
        raise TimeoutError(f"no log message with {text!r} within {timeout:.0f}s")


def autoscaler_config(folder: Path, head: dict[str, float], types: dict[str, dict[str, Any]]) -> Path:
    """``cluster.yaml``'s shape (head type + worker types with resources and max_workers), scaled down."""
    raw = {"cluster_name": "late-nodes", "max_workers": sum(t["max_workers"] for t in types.values()),
           "head_node_type": "head",
           "available_node_types": {"head": {"resources": head, "max_workers": 0, "node_config": {}},
                                    **{name: {**spec, "node_config": {}} for name, spec in types.items()}}}
    path = folder / "ray_bootstrap_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def start_cluster(head: dict[str, float]):
    import ray
    from ray.cluster_utils import Cluster

    resources = {k: v for k, v in head.items() if k != "CPU"}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": int(head.get("CPU", 0)), "resources": resources, "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": free_port()})
    CLUSTERS.append(cluster)
    ray.init(address=cluster.address, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}}, log_to_driver=False)
    return cluster


def run_in_thread(target: Callable[[], Any]):
    box: dict[str, Any] = {}

    def body():
        try:
            box["value"] = target()
        except BaseException as exc:  # handed to the main thread, which re-raises it
            box["error"] = exc

    thread = threading.Thread(target=body, name="job", daemon=True)
    thread.start()
    return thread, box


def tiny_overrides(data_root: str, storage: str) -> dict[str, Any]:
    return {"data.dataset": "synthetic", "data.root": data_root, "data.height": 32, "data.width": 16,
            "model.backbone": "resnet18", "cluster.merge_percent": 0.5, "optim.iters": 1, "optim.p": 4,
            "optim.k": 2, "run.cpus_per_worker": 1, "run.storage_path": storage, "run.eval_every": 1,
            # every node is this host: the local folder is shared (the check is another test's subject)
            "run.shared_storage": True}


def clusterer_joins_late(args: dict[str, Any], recorder: Recorder) -> dict[str, Any]:
    """(a) A training job submitted before the clusterer node exists ends with its actor on that node."""
    from ray.util.state import list_actors, list_tasks

    from ray_reid.config import config_from_dict
    from ray_reid.run import train

    epochs = int(args["epochs"])
    config = autoscaler_config(Path(args["tmp"]), {"CPU": 2}, {
        "clusterer": {"resources": {"CPU": 1, "clusterer": 1}, "min_workers": 1, "max_workers": 1},
        "cpu_worker": {"resources": {"CPU": 2}, "min_workers": 0, "max_workers": 2}})
    os.environ["RAY_REID_AUTOSCALING_CONFIG"] = str(config)
    cluster = start_cluster({"CPU": 2})
    cfg = config_from_dict({}, {**tiny_overrides(args["data_root"], str(Path(args["tmp"]) / "runs")),
                                "optim.epochs": epochs, "run.num_workers": 2, "run.name": "late-clusterer",
                                "run.placement_timeout_s": 600})
    thread, box = run_in_thread(lambda: train(cfg))
    waiting = recorder.wait_for("waiting for a node with {'clusterer': 1}", 300, thread.is_alive)
    pending = [a["state"] for a in list_actors(filters=[("class_name", "=", "ClusteringActor")])]
    started = time.monotonic()
    node = cluster.add_node(num_cpus=1, resources={"clusterer": 1})  # what the autoscaler would start
    thread.join(timeout=900)
    if thread.is_alive() or "error" in box:
        raise RuntimeError(f"the training job did not finish: {box.get('error')!r}")
    actors = list_actors(filters=[("class_name", "=", "ClusteringActor")], detail=True)
    submits = list_tasks(filters=[("func_or_class_name", "=", "ClusteringActor.submit")], detail=True, limit=1000)
    return {"waiting_message": waiting, "pending_states": pending, "clusterer_node": node.node_id,
            "head_node": cluster.head_node.node_id, "seconds_after_join": time.monotonic() - started,
            "epochs": box["value"].summary["epochs"],
            "actors": [{"node_id": a["node_id"], "state": a["state"]} for a in actors],
            "submits": [{"node_id": t["node_id"], "state": t["state"]} for t in submits],
            "placement_logs": [m for m in recorder.messages if "ClusteringActor" in m and "placed" in m]}


def workers_join_late(args: dict[str, Any], recorder: Recorder) -> dict[str, Any]:
    """(b) A sweep whose trials need more workers than exist at submission starts, scales up and completes."""
    from ray.util.state import list_actors

    from ray_reid.config import config_from_dict
    from ray_reid.distributed.tune import run_sweep
    from ray_reid.tuning.space import SweepConfig, parse_search_space

    # the head carries the clusterer resource (the trials' actors go there); workers come from cpu_worker
    head = {"CPU": 1, "clusterer": 1}
    config = autoscaler_config(Path(args["tmp"]), head, {
        "cpu_worker": {"resources": {"CPU": 2}, "min_workers": 0, "max_workers": 1}})
    os.environ["RAY_REID_AUTOSCALING_CONFIG"] = str(config)
    cluster = start_cluster(head)
    base = config_from_dict({}, {**tiny_overrides(args["data_root"], str(Path(args["tmp"]) / "runs")),
                                 "optim.epochs": 1, "run.num_workers": 1})
    space = parse_search_space({"cluster.lam": {"type": "grid", "values": [0.1, 1.0]}})
    sweep = SweepConfig(name="late-workers", storage_path=str(Path(args["tmp"]) / "tune"), search="grid",
                        scheduler="fifo", clusterer_cpus=0.5)
    thread, box = run_in_thread(lambda: run_sweep(base, space, sweep))
    warning = recorder.wait_for("today's nodes hold 0 trial(s)", 300, thread.is_alive)
    # the first trial runs (function + actor on the head) and its TorchTrainer waits for a worker CPU
    deadline = time.monotonic() + 300
    while not list_actors(filters=[("class_name", "=", "ClusteringActor"), ("state", "=", "ALIVE")]):
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"no trial's ClusteringActor came up: {box.get('error')!r}")
        time.sleep(1.0)
    time.sleep(10.0)  # long enough for the worker group's placement group to be pending
    workers_before = len(list_actors(filters=[("class_name", "=", "RayTrainWorker")]))
    started = time.monotonic()
    node = cluster.add_node(num_cpus=2)  # what the autoscaler would start for the pending workers
    thread.join(timeout=1200)
    if thread.is_alive() or "error" in box:
        raise RuntimeError(f"the sweep did not finish: {box.get('error')!r}")
    outcome = box["value"]
    actors = list_actors(filters=[("class_name", "=", "ClusteringActor")], detail=True)
    workers = list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True)
    return {"warning": warning, "workers_before_join": workers_before, "worker_node": node.node_id,
            "head_node": cluster.head_node.node_id, "seconds_after_join": time.monotonic() - started,
            "rows": [{k: r[k] for k in ("trial_id", "cluster.lam", "status", "epochs_run", "final_mAP")}
                     for r in outcome.rows],
            "files": {k: str(v) for k, v in outcome.files.items()},
            "actors": [{"node_id": a["node_id"], "state": a["state"]} for a in actors],
            "workers": [{"node_id": w["node_id"], "state": w["state"]} for w in workers],
            "admission_logs": [m for m in recorder.messages if "running up to" in m or "trial ClusteringActors" in m]}


SCENARIOS = {"clusterer_joins_late": clusterer_joins_late, "workers_join_late": workers_join_late}


def main() -> None:
    name, args = sys.argv[1], json.loads(sys.argv[2])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    recorder = Recorder()
    logging.getLogger("ray_reid").addHandler(recorder)
    start = time.monotonic()
    cpu = time.process_time()
    try:
        result = SCENARIOS[name](args, recorder)
    finally:
        import ray

        ray.shutdown()
        for cluster in CLUSTERS:
            cluster.shutdown()
    result["wall_s"] = time.monotonic() - start
    result["driver_cpu_s"] = time.process_time() - cpu
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
