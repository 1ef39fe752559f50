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


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) of a process from /proc, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), fields[0]


def process_title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def is_running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    stat = _stat(pid)
    return stat is not None and stat[1] not in ("Z", "X")


def children(pid: int, recursive: bool = False) -> set[int]:
    """Pids whose parent is ``pid`` (and their descendants when ``recursive``), read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents.setdefault(stat[0], []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                if recursive:
                    todo.append(child)
    return found


def ray_actor_pids(class_name: str) -> set[int]:
    """Pids of live ``class_name`` actors of *this* driver's Ray (children of its raylet).

    The state API needs a dashboard and refuses to choose when other engineers' Ray instances run
    on the same host, so the processes are found from the raylet's children and their titles.
    """
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    return {pid for pid in children(raylet)
            if process_title(pid).split(" ")[0].split(".")[0] == f"ray::{class_name}" and is_running(pid)}
