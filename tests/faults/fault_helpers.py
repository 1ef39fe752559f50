"""Helpers shared by the fault-injection tests: tiny run configs, file digests, waiting on things."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable


def tiny_overrides(root: Path, storage: Path, name: str, **extra) -> dict:
    """The smallest real run: 2 iterations per epoch on 32x16 crops of the tiny synthetic set."""
    overrides = {
        "data.dataset": "synthetic", "data.root": str(root), "data.height": 32, "data.width": 16,
        "model.backbone": "resnet18", "cluster.merge_percent": 0.5, "optim.epochs": 2, "optim.iters": 2,
        "optim.p": 4, "optim.k": 2, "run.num_workers": 0, "run.cpus_per_worker": 1,
        "run.storage_path": str(storage), "run.name": name, "run.eval_every": 1,
    }
    overrides.update(extra)
    return overrides


def tree_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` by relative path: equal digests = nothing touched."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Finished checkpoint folders of a run (those holding a state.pt), oldest first."""
    return sorted(p for p in Path(run_dir).glob("checkpoint_*") if (p / "state.pt").is_file())


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def ray_actor_pids(class_name: str) -> set[int]:
    """Pids of live ``class_name`` actors of *this* driver's Ray (children of its raylet).

    The state API needs a dashboard and refuses to choose when other engineers' Ray instances run
    on the same host, so the processes are found from the raylet's children and their titles.
    """
    import psutil
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    pids = set()
    for child in psutil.Process(raylet).children():
        try:
            title = child.cmdline()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if title and title[0].split(".")[0] == f"ray::{class_name}" and child.status() != psutil.STATUS_ZOMBIE:
            pids.add(child.pid)
    return pids
