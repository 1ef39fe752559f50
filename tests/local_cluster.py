"""A real two-node Ray cluster on loopback, made with ``ray start`` like a user's cluster.

Each node is a ``ray start --block`` process started in its own session, so the node and
everything it spawns (GCS, raylet, dashboard, agents, workers) share one process group that
:meth:`LocalCluster.stop` can end without touching anybody else's Ray: ``ray stop`` would kill
every Ray process of the user. A last sweep kills, by pid, any process whose command line
names this cluster's own temp folder (a worker that left the group, say).

Why each node gets its own ``--temp-dir``: two nodes on one host sharing one temp dir share
the runtime-env agent's working-dir cache, and the second node's agent deletes the job's
working_dir under the running driver. ``ray start --address`` accepts a ``--temp-dir`` of its
own (checked with Ray 2.60).

Token authentication: every process of the cluster and every client gets
``RAY_AUTH_MODE=token`` and a random ``RAY_AUTH_TOKEN`` made for this cluster, so neither a
``~/.ray/auth_token`` left by another local ``ray.init()`` nor its absence changes the outcome.

Usage::

    with LocalCluster(tmp_path, head_cpus=3, worker_cpus=1, worker_resources={"clusterer": 1}) as cluster:
        client = cluster.job_client()      # JobSubmissionClient on the head's dashboard
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

from ports import free_port

log = logging.getLogger(__name__)

#: What `ray start --block` prints once its node is up and registered.
STARTED = "Ray runtime started"

RAY_BIN = str(Path(sys.executable).with_name("ray"))


TRACEBACK = "Traceback (most recent call last)"


class NodeStartFailed(RuntimeError):
    """`ray start` of one node failed (rather than being slow); ``process`` is that node's."""

    def __init__(self, message: str, process: subprocess.Popen) -> None:
        super().__init__(message)
        self.process = process


class LocalCluster:
    """A head (``head_cpus``, dashboard on 127.0.0.1) plus one worker node on this host."""

    def __init__(self, root: str | os.PathLike | None = None, *, head_cpus: int = 3, worker_cpus: int = 1,
                 worker_resources: dict[str, float] | None = None, startup_timeout: float = 180.0,
                 env: dict[str, str] | None = None, node_attempts: int = 3) -> None:
        # Ray puts AF_UNIX sockets under the temp dir, whose paths may not exceed 107 bytes:
        # pytest's tmp_path is too deep, so by default the cluster makes (and removes) its own.
        self._owns_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="rrc-", dir="/tmp") if root is None else root).resolve()
        self.head_cpus = head_cpus
        self.worker_cpus = worker_cpus
        self.worker_resources = dict(worker_resources or {})
        self.startup_timeout = startup_timeout
        self.node_attempts = node_attempts
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {
            **os.environ,
            # One token for the whole cluster and its clients (see the module docstring).
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
            # The venv first on PATH, so job drivers and workers find its `python` and `ray`.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **(env or {}),
        }
        for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
            self.env.pop(var, None)
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    # -- lifecycle -------------------------------------------------------------------------

    def _node_ports(self) -> list[str]:
        """Every port a node opens, chosen free, so two nodes on one host never collide."""
        return [
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
        ]

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.root / f"{name}.ray_start.log"
        cmd = [RAY_BIN, "start", "--block", f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1",
               "--disable-usage-stats", *self._node_ports(), *args]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=self.env, start_new_session=True)
        self.processes.append(process)
        self.logs.append(log_path)
        return process

    def _start_node(self, name: str, args: list[str], ready, what: str) -> None:
        """Start one node, retrying when `ray start` gives up on its own.

        `ray start` waits a fixed 30 s for the raylet to register with the GCS; on a loaded
        2-core machine that can run out, so a node whose `ray start` fails is started again
        (each attempt in a temp dir of its own) before the test is failed.
        """
        for attempt in range(1, self.node_attempts + 1):
            process = self._spawn(f"{name}-{attempt}", args)
            try:
                self._wait(ready, what)
                return
            except NodeStartFailed as failed:
                if attempt == self.node_attempts or failed.process is not process:
                    raise
                log.warning("%s; starting it again (attempt %d of %d)", str(failed).splitlines()[0], attempt + 1,
                            self.node_attempts)
                self._end(process)
                self.processes.remove(process)
                self.logs.pop()

    def start(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._start_node("head", ["--head", f"--port={self.gcs_port}", f"--num-cpus={self.head_cpus}",
                                      "--num-gpus=0", "--dashboard-host=127.0.0.1",
                                      f"--dashboard-port={self.dashboard_port}"],
                             lambda nodes: len(nodes) >= 1, "the head node and its dashboard")
            self._start_node("node2", [f"--address={self.address}", f"--num-cpus={self.worker_cpus}",
                                       "--num-gpus=0", f"--resources={json.dumps(self.worker_resources)}"],
                             lambda nodes: len(nodes) >= 2, "the second node to join")
        except BaseException:
            self.stop()
            raise
        return self

    def _dashboard_up(self) -> bool:
        try:
            request = urllib.request.Request(f"{self.dashboard_url}/api/version", headers=self.auth_headers())
            urllib.request.urlopen(request, timeout=2).close()
            return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            for process, log_path in zip(self.processes, self.logs):
                if process.poll() is not None:
                    raise NodeStartFailed(f"`ray start` exited with code {process.returncode} while waiting for "
                                          f"{what}; its log {log_path}:\n{self.tail(log_path)}", process)
            # A `ray start` that gave up can hang on exit with its children still up: its traceback
            # in the log is the sign.
            if TRACEBACK in self.tail(self.logs[-1], chars=None):
                raise NodeStartFailed(f"`ray start` failed while waiting for {what}; its log {self.logs[-1]}:\n"
                                      f"{self.tail(self.logs[-1])}", self.processes[-1])
            # The node's own `ray start` must say it is up: a node of a failed attempt may still
            # be listed as alive until the GCS notices it died.
            if STARTED in self.tail(self.logs[-1], chars=None):
                nodes = self.alive_nodes()
                if nodes is not None and ready(nodes):
                    return
            time.sleep(1.0)
        logs = "\n".join(f"--- {log_path}\n{self.tail(log_path)}" for log_path in self.logs)
        raise TimeoutError(f"timed out after {self.startup_timeout:.0f}s waiting for {what}\n{logs}")

    def alive_nodes(self) -> list[dict[str, Any]] | None:
        """Alive nodes as the state API lists them (None while the dashboard does not answer)."""
        if not self._dashboard_up():
            return None
        result = subprocess.run([RAY_BIN, "list", "nodes", f"--address={self.dashboard_url}", "--format=json",
                                 "--filter", "state=ALIVE"], env=self.env, capture_output=True, text=True, check=False,
                                timeout=60)
        if result.returncode != 0:
            return None
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError:
            return None

    def actors(self, class_name: str) -> list[dict[str, Any]]:
        """Actors of one class the state API knows of, dead ones included (a finished job's)."""
        result = subprocess.run([RAY_BIN, "list", "actors", f"--address={self.dashboard_url}", "--format=json",
                                 "--filter", f"class_name={class_name}", "--limit=1000"], env=self.env,
                                capture_output=True, text=True, check=False, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"`ray list actors` failed with code {result.returncode}: {result.stderr[-2000:]}")
        return json.loads(result.stdout)

    def stop(self) -> None:
        """End every process this cluster started: politely, then its process group, then stragglers."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            self._end(process)
        for pid in self._own_stragglers(self.root):
            with contextlib.suppress(ProcessLookupError):  # it exited since the scan
                os.kill(pid, signal.SIGKILL)
        self.processes.clear()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _end(process: subprocess.Popen) -> None:
        """SIGTERM lets `ray start --block` stop its node; then SIGKILL whatever is left of its group."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log.warning("`ray start` (pid %d) ignored SIGTERM for 30 s; killing its process group", process.pid)
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(process.pid, signal.SIGKILL)  # the group is this node's: see start_new_session
        process.wait(timeout=30)

    @staticmethod
    def _own_stragglers(root: Path) -> list[int]:
        """Pids of live processes whose command line names this cluster's temp folder."""
        marker = str(root).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    @staticmethod
    def tail(path: Path, chars: int | None = 4000) -> str:
        try:
            text = path.read_text(errors="replace")
            return text if chars is None else text[-chars:]
        except OSError as exc:
            return f"(unreadable: {exc})"

    # -- clients ---------------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"}

    def job_client(self):
        """A JobSubmissionClient on the dashboard, authenticated with this cluster's token."""
        from ray.job_submission import JobSubmissionClient

        # An explicit header, not os.environ: the test process may run other Ray sessions.
        return JobSubmissionClient(self.dashboard_url, headers=self.auth_headers())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
