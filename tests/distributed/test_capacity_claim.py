"""The ClusteringActor's resources are set aside from what Ray Train's elastic sizing is offered."""

from __future__ import annotations

from ray_reid.distributed.elastic import CapacityClaim, actor_bundle


def test_actor_bundle_is_what_the_actor_options_hold():
    assert actor_bundle({"resources": {"clusterer": 1}, "num_cpus": 1, "num_gpus": 1}) == {
        "CPU": 1.0, "GPU": 1.0, "clusterer": 1.0}
    assert actor_bundle({"num_cpus": 0}) == {}  # holds nothing: nothing to set aside
    assert actor_bundle({}) == {"CPU": 1.0}  # Ray's default for an actor is one CPU to schedule
    assert actor_bundle({"num_gpus": 1, "num_cpus": 1, "resources": {"x": 0}}) == {"CPU": 1.0, "GPU": 1.0}


def test_the_claim_reserves_the_actors_share_before_a_later_request_and_is_cancelled_on_exit(ray_session):
    import ray
    from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
        ResourceRequestPriority,
        get_or_create_autoscaling_coordinator,
    )

    coordinator = get_or_create_autoscaling_coordinator()
    total = ray.cluster_resources()["CPU"]

    def reserved_cpus(requester: str) -> float:
        got = ray.get(coordinator.get_reserved_resources.remote(requester, recompute=True), timeout=60)
        return sum(node.get("CPU", 0.0) for node in got.values())

    with CapacityClaim("ray_reid_test_claim", {"CPU": 1.0}):
        assert reserved_cpus("ray_reid_test_claim") == 1.0
        # what Ray Train does for an elastic group: ask (at the same priority, later) for up to 8 one-CPU workers
        ray.get(coordinator.request_resources.remote(
            requester_id="ray_reid_test_train", resources=[{"CPU": 1.0}] * 8, expire_after_s=60,
            priority=ResourceRequestPriority.HIGH), timeout=60)
        try:
            assert reserved_cpus("ray_reid_test_train") == total - 1.0
        finally:
            ray.get(coordinator.cancel_request.remote(requester_id="ray_reid_test_train"), timeout=60)
    assert reserved_cpus("ray_reid_test_claim") == 0.0
