"""Multi-node scenarios on ``ray.cluster_utils.Cluster``, each run in a fresh Python process.

``python elastic_cluster.py SCENARIO DATA_ROOT WORKDIR`` builds an in-process cluster of real
Ray nodes (a raylet each, on this host), runs the scenario against ``ray_reid.distributed.trainer.fit``,
writes what it observed to ``WORKDIR/observed.json`` and shuts down only the nodes it started
(``Cluster.shutdown``: never ``ray stop``, never ``AutoscalingCluster.start()``, both of which end
every Ray on the machine). A separate process because the test session already holds a
``ray.init`` of its own, and one process can join one cluster only.

Scenarios:

- ``storage``: a head and a worker node; a run with a local storage path is refused before any
  epoch, then the same run with ``run.shared_storage`` (the folder is on this one host, so it
  really is shared) trains on both nodes.
- ``elastic``: ``cluster.yaml``'s shape scaled down to CPUs: a head with no worker resources (the
  driver and Ray Train's controller), a ``clusterer`` node whose one CPU the ClusteringActor takes
  (placed there by the same rule as on AWS, where it takes the node's GPU), and two 1-CPU worker
  nodes; ``--workers 1-2``. After the first checkpoint one worker node is removed mid-epoch, the
  run goes on with one worker, then a node joins again and the group grows back to two. Every
  complete checkpoint folder that appears is recorded (epoch, world size, global batch).
  The clusterer node offers a CPU like a worker node: Ray Train's capacity estimate must not
  count it (``ray_reid.distributed.elastic``), or the 1-worker restart would ask for two.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "faults"))

log = logging.getLogger("elastic_cluster")

#: GCS declares a killed node dead after period x threshold (defaults 3 s x 5 would be 15 s+).
SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


def tiny(root: str, storage: Path, name: str, **extra) -> Any:
    from fault_helpers import tiny_overrides

    from ray_reid.config import config_from_dict

    return config_from_dict({}, tiny_overrides(Path(root), storage, name, **extra))


def storage_scenario(root: str, workdir: Path) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    from ray_reid.distributed.trainer import fit

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": SYSTEM_CONFIG})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        observed: dict[str, Any] = {"nodes": len(alive), "node_ids": alive}
        storage = workdir / "runs"
        common = {"run.num_workers": 2, "optim.epochs": 1}
        started = time.monotonic()
        try:
            fit(tiny(root, storage, "local", **common))
            observed["refused"] = None
        except ValueError as exc:
            observed["refused"] = str(exc)
        observed["refusal_seconds"] = time.monotonic() - started
        observed["run_dir_after_refusal"] = (storage / "local").exists()
        try:
            ray.get_actor("ray_reid_clusterer_local")
            observed["actor_after_refusal"] = True
        except ValueError:
            observed["actor_after_refusal"] = False
        outcome = fit(tiny(root, storage, "shared", **common, **{"run.shared_storage": True}))
        observed["shared_history"] = outcome.history
        observed["shared_checkpoint"] = outcome.checkpoint_path
        return observed
    finally:
        ray.shutdown()
        cluster.shutdown()


class CheckpointWatcher(threading.Thread):
    """Records every complete checkpoint folder of a run as it appears (Ray prunes all but the newest few)."""

    def __init__(self, run_dir: Path):
        super().__init__(daemon=True, name="checkpoint-watcher")
        self.run_dir = run_dir
        self.seen: dict[str, dict[str, Any]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.poll()
            time.sleep(0.3)

    def poll(self) -> None:
        from ray_reid.engine.checkpoint import check_complete

        for folder in sorted(self.run_dir.glob("checkpoint_*")):
            if folder.name in self.seen:
                continue
            try:
                epoch, why = check_complete(folder)
                if why is not None:
                    continue  # still being written (or cut short): looked at again next poll
                last = json.loads((folder / "history.json").read_text())[-1]
            except (OSError, ValueError):
                continue  # pruned or half-written between the listing and the read
            self.seen[folder.name] = {"epoch": epoch, "world_size": last.get("world_size"),
                                      "global_batch": last.get("global_batch"), "at": time.monotonic()}
            log.info("checkpoint %s: epoch %d by %s worker(s)", folder.name, epoch, last.get("world_size"))

    def newest(self) -> dict[str, Any] | None:
        return max(self.seen.values(), key=lambda c: c["epoch"], default=None)


def wait_for(predicate, timeout: float, what: str, alive: threading.Thread) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if not alive.is_alive():
            raise RuntimeError(f"the run ended while waiting for {what}")
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def elastic_scenario(root: str, workdir: Path, epochs: int) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    from ray_reid.distributed.trainer import fit

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": SYSTEM_CONFIG})
    events: list[tuple[float, str]] = []
    t0 = time.monotonic()

    def event(text: str) -> None:
        events.append((round(time.monotonic() - t0, 1), text))
        log.info("%s", text)

    try:
        clusterer = cluster.add_node(num_cpus=1, resources={"clusterer": 1})
        node_a = cluster.add_node(num_cpus=1)
        node_b = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        event(f"cluster up: head (0 CPU), clusterer {clusterer.node_id[:8]}, workers {node_a.node_id[:8]}, "
              f"{node_b.node_id[:8]}")
        storage = workdir / "runs"
        cfg = tiny(root, storage, "elastic", **{
            "run.num_workers": 2, "run.min_workers": 1, "run.elastic_resize_interval_s": 5,
            "run.max_failures": 3, "run.shared_storage": True, "optim.epochs": epochs, "run.eval_every": 1000})
        watcher = CheckpointWatcher(storage / "elastic")
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["result"] = fit(cfg)
            except BaseException as exc:  # reported in observed.json
                outcome["error"] = repr(exc)

        run = threading.Thread(target=target, daemon=True)
        run.start()
        watcher.start()
        wait_for(lambda: watcher.newest() is not None, 600, "the first checkpoint", run)
        time.sleep(2.5)  # > one controller poll (2 s) after the report, as the worker-kill test
        before = watcher.newest()
        event(f"removing node {node_b.node_id[:8]} after epoch {before['epoch']} ({before['world_size']} workers)")
        cluster.remove_node(node_b, allow_graceful=False)
        event("node removed")
        wait_for(lambda: any(c["world_size"] == 1 for c in watcher.seen.values()), 900,
                 "a checkpoint written by a 1-worker group", run)
        shrunk = min((c for c in watcher.seen.values() if c["world_size"] == 1), key=lambda c: c["epoch"])
        event(f"epoch {shrunk['epoch']} checkpointed by 1 worker; a node joins again")
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        event("node added")
        run.join(timeout=1500)
        watcher.stop.set()
        watcher.join(timeout=10)
        watcher.poll()
        event("run ended" if not run.is_alive() else "run still going after 25 min")
        result = outcome.get("result")
        return {"events": events, "error": outcome.get("error"), "seen": watcher.seen,
                "clusterer_node": clusterer.node_id,
                "history": result.history if result else None, "removed_after_epoch": before["epoch"],
                "epochs": epochs}
    finally:
        ray.shutdown()
        cluster.shutdown()


def main(argv: list[str]) -> int:
    scenario, root, workdir = argv[1], argv[2], Path(argv[3])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    workdir.mkdir(parents=True, exist_ok=True)
    if scenario == "storage":
        observed = storage_scenario(root, workdir)
    elif scenario == "elastic":
        observed = elastic_scenario(root, workdir, epochs=int(os.environ.get("ELASTIC_EPOCHS", "14")))
    else:
        raise SystemExit(f"unknown scenario {scenario!r}: storage or elastic")
    tmp = workdir / "observed.json.tmp"
    tmp.write_text(json.dumps(observed, indent=2, default=str))
    tmp.rename(workdir / "observed.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
