"""Connect to the user's Ray cluster, or start a private local one bound to loopback."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import ray

log = logging.getLogger(__name__)


def connect(*, num_cpus: int | None = None) -> str:
    """Join ``RAY_ADDRESS`` when set (``ray job submit`` sets it), else start Ray locally.

    A local Ray gets its dashboard on 127.0.0.1 only, so a laptop or CI run never exposes the
    job server to the network. The dashboard is on because Ray Train's placement-group cleaner
    and the state API need it: without it a trial stopped early by ASHA keeps its workers' CPUs.
    """
    if ray.is_initialized():
        return "already connected"
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        where = f"cluster at {address}"
    else:
        with _worker_progress_interval():
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                     log_to_driver=True)
        where = "a local Ray (loopback only)"
    log.info("connected to %s: %s", where, {k: v for k, v in ray.cluster_resources().items()
                                           if not k.startswith("node:")})
    return where


#: Seconds between progress-bar updates in Ray's workers. Their stderr is a pipe that Ray forwards to the
#: driver's console a line per update, so tqdm's default 0.1 s turned one dataset generation into hundreds of
#: console lines; every 10 s still shows the bar moving.
WORKER_PROGRESS_INTERVAL_S = "10"


@contextlib.contextmanager
def _worker_progress_interval() -> Iterator[None]:
    """``TQDM_MININTERVAL`` for the raylet this ``ray.init`` starts (its workers inherit its environment; tqdm reads
    ``TQDM_*`` as defaults), without changing the driver's own bars. A user's own setting wins."""
    if "TQDM_MININTERVAL" in os.environ:
        yield
        return
    os.environ["TQDM_MININTERVAL"] = WORKER_PROGRESS_INTERVAL_S
    try:
        yield
    finally:
        del os.environ["TQDM_MININTERVAL"]
