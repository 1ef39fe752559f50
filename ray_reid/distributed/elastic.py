"""Keep Ray Train's elastic capacity estimate honest about the node the ClusteringActor holds.

An elastic run (``ScalingConfig(num_workers=(min, max))``) sizes each (re)start from what Ray's
AutoscalingCoordinator reserves for it, and the coordinator counts every node's *total*
resources, not what is free. On the shipped cluster the ``clusterer`` node has a GPU like a
``gpu_worker``: counted as a worker slot, it makes Train ask for one worker more than can be
placed, the group's placement group stays pending, start-up times out and is retried with the
same count, again and again. With the autoscaler able to add a node, that only delays; when no
spot capacity is left, the run would never start again. Registering the actor's resources with
the coordinator as a request of its own, before Train's (requests are served by priority, then
age), takes that node's share out of what Train is offered.

The coordinator is Ray Train's own (``ray.data._internal.cluster_autoscaler``), private API of
Ray 2.60: the one place this module touches it, checked against the 2.60 wheel.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping

import ray

log = logging.getLogger(__name__)

#: Our request lives this long without a refresh (Ray Train's own: 180 s, refreshed every 20 s).
EXPIRE_S = 180.0
REFRESH_S = 30.0
CALL_TIMEOUT_S = 10.0
#: The first request may have to wait for the coordinator actor to start (a new process importing
#: ray.data: a minute on a loaded 2-core host). It must land before Ray Train's own request, which
#: goes first otherwise (same priority, earlier request) and may take the clusterer node's share.
FIRST_CALL_TIMEOUT_S = 300.0


def actor_bundle(options: Mapping[str, Any]) -> dict[str, float]:
    """The resources an actor with these Ray options holds, as one bundle (zeros dropped)."""
    bundle = {"CPU": float(options.get("num_cpus", 1) or 0), "GPU": float(options.get("num_gpus", 0) or 0)}
    bundle.update({k: float(v) for k, v in (options.get("resources") or {}).items()})
    return {k: v for k, v in bundle.items() if v > 0}


class CapacityClaim:
    """A context manager that keeps the actor's bundle registered with the coordinator while a run goes.

    ``with CapacityClaim(name, bundle): trainer.fit()``. Refreshed in a daemon thread before it
    expires; cancelled on exit. A coordinator that cannot be reached only costs the accuracy of
    Ray Train's estimate (logged), never the run.
    """

    def __init__(self, requester_id: str, bundle: Mapping[str, float]):
        self.requester_id = requester_id
        self.bundle = dict(bundle)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._coordinator = None

    def __enter__(self) -> "CapacityClaim":
        if not self.bundle:
            return self  # an actor holding nothing takes nothing from the workers
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )

        self._coordinator = get_or_create_autoscaling_coordinator()
        if self._request(FIRST_CALL_TIMEOUT_S):
            log.info("elastic run: the ClusteringActor's %s is set aside from Ray Train's worker capacity",
                     self.bundle)
        self._thread = threading.Thread(target=self._refresh, daemon=True, name="ray-reid-capacity-claim")
        self._thread.start()
        return self

    def _request(self, timeout_s: float = CALL_TIMEOUT_S) -> bool:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import ResourceRequestPriority

        try:
            ray.get(self._coordinator.request_resources.remote(
                requester_id=self.requester_id, resources=[self.bundle], expire_after_s=EXPIRE_S,
                priority=ResourceRequestPriority.HIGH), timeout=timeout_s)
            return True
        except (ray.exceptions.RayError, TimeoutError) as exc:
            log.warning("could not register the ClusteringActor's %s with Ray's autoscaling coordinator (%s): "
                        "Ray Train may count that node as room for a worker", self.bundle, exc)
            return False

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self._request()

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=CALL_TIMEOUT_S)
        if self._coordinator is None:
            return
        try:
            ray.get(self._coordinator.cancel_request.remote(requester_id=self.requester_id), timeout=CALL_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError) as exc:  # it expires by itself after EXPIRE_S
            log.warning("could not cancel the ClusteringActor's capacity claim (%s); it expires in %.0fs",
                        exc, EXPIRE_S)
