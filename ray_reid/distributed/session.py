"""Connect to the user's Ray cluster, or start a private local one bound to loopback."""

from __future__ import annotations

import logging
import os

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
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                 log_to_driver=True)
        where = "a local Ray (loopback only)"
    log.info("connected to %s: %s", where, {k: v for k, v in ray.cluster_resources().items()
                                           if not k.startswith("node:")})
    return where
