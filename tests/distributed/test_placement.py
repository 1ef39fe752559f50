"""Placement against the cluster the user described, not the nodes up at submission."""

from __future__ import annotations

import logging

import pytest

from ray_reid.distributed.placement import (
    NodeType,
    check_storage_shared,
    clusterer_placement,
    declared_node_types,
    node_types_from_config,
)

HEAD = {"node_id": "aa", "address": "10.0.0.1", "resources": {"CPU": 0.0, "GPU": 0.0}}
GPU_NODE = {"node_id": "bb", "address": "10.0.0.2", "resources": {"CPU": 8.0, "GPU": 1.0}}
CLUSTERER_NODE = {"node_id": "cc", "address": "10.0.0.3", "resources": {"CPU": 8.0, "GPU": 1.0, "clusterer": 1.0}}
AUTOSCALER = {
    "max_workers": 9, "head_node_type": "head",
    "available_node_types": {
        "head": {"resources": {"CPU": 0, "GPU": 0}, "max_workers": 0},
        "gpu_worker": {"resources": {"CPU": 8, "GPU": 1}, "min_workers": 0, "max_workers": 8},
        "clusterer": {"resources": {"CPU": 8, "GPU": 1, "clusterer": 1}, "min_workers": 1, "max_workers": 1},
    },
}


def place(nodes, declared=None, requested=False):
    return clusterer_placement(requested=requested, nodes=nodes, declared=declared or {}, num_workers=2,
                               gpus_per_worker=1, cpus_per_worker=4)


def test_declared_node_types_come_from_the_autoscaler_config_without_the_head(tmp_path, monkeypatch):
    import yaml

    path = tmp_path / "bootstrap.yaml"
    path.write_text(yaml.safe_dump(AUTOSCALER))
    monkeypatch.setenv("RAY_REID_AUTOSCALING_CONFIG", str(path))
    types = declared_node_types()
    assert set(types) == {"gpu_worker", "clusterer"}
    assert types["clusterer"] == NodeType("clusterer", {"CPU": 8, "GPU": 1, "clusterer": 1}, 1)
    monkeypatch.setenv("RAY_REID_AUTOSCALING_CONFIG", str(tmp_path / "absent.yaml"))
    assert declared_node_types() == {}


def test_a_declared_clusterer_type_is_waited_for_even_when_only_the_head_is_up():
    placement = place([HEAD], node_types_from_config(AUTOSCALER))
    assert placement.options == {"resources": {"clusterer": 1}, "num_cpus": 1, "num_gpus": 1}
    assert placement.waits_for == {"clusterer": 1} and not placement.fallback
    assert "'clusterer' of the autoscaler config" in placement.reason


def test_asked_for_with_the_flag_it_waits_without_claiming_a_gpu_it_cannot_know_of():
    placement = place([HEAD, GPU_NODE], requested=True)
    assert placement.options == {"resources": {"clusterer": 1}, "num_cpus": 1}
    assert placement.waits_for == {"clusterer": 1} and "--clusterer-resource" in placement.reason


def test_a_present_clusterer_node_without_gpu_is_not_asked_for_one():
    cpu_clusterer = {**CLUSTERER_NODE, "resources": {"CPU": 2.0, "clusterer": 1.0}}
    placement = place([HEAD, GPU_NODE, cpu_clusterer])
    assert placement.options == {"resources": {"clusterer": 1}, "num_cpus": 1}  # else it could never be placed


def test_without_any_declaration_the_fallback_is_deliberate_and_says_so():
    spare = place([HEAD, GPU_NODE, GPU_NODE, GPU_NODE])
    assert spare.fallback and spare.options == {"num_gpus": 1, "num_cpus": 1} and "spare GPU" in spare.reason
    cpu = place([HEAD, GPU_NODE, GPU_NODE])
    assert cpu.fallback and "num_gpus" not in cpu.options and cpu.waits_for is None


def test_a_local_storage_path_on_several_nodes_is_refused_naming_path_and_nodes():
    check = check_storage_shared("/home/u/runs", shared=False, nodes=[HEAD, GPU_NODE], declared={})
    assert not check.ok and "/home/u/runs" in check.message and "10.0.0.2" in check.message
    assert "--shared-storage" in check.message
    growing = check_storage_shared("/home/u/runs", shared=False, nodes=[HEAD],
                                   declared=node_types_from_config(AUTOSCALER))
    assert not growing.ok and "gpu_worker" in growing.message  # one node now, more to come
    assert check_storage_shared("/nfs/runs", shared=True, nodes=[HEAD, GPU_NODE], declared={}).ok
    assert check_storage_shared("s3://b/runs", shared=False, nodes=[HEAD, GPU_NODE], declared={}).ok
    assert check_storage_shared("runs", shared=False, nodes=[HEAD], declared={}).ok  # a laptop


def test_the_driver_waits_visibly_and_times_out_naming_the_resource(ray_session, caplog):
    import ray

    from ray_reid.distributed.actor import ClusteringActor
    from ray_reid.distributed.placement import ActorPlacement, wait_until_placed

    placement = ActorPlacement({"resources": {"clusterer_absent": 1}, "num_cpus": 0}, "on a test node",
                               waits_for={"clusterer_absent": 1})
    handle = ClusteringActor.options(**placement.options).remote({"method": "hc_sse"})
    with caplog.at_level(logging.INFO, logger="ray_reid.distributed.placement"):
        with pytest.raises(TimeoutError, match=r"waited \d+s for a node with \{'clusterer_absent': 1\}"):
            wait_until_placed(handle, placement, timeout_s=3.0, report_every_s=1.0)
    assert any("waiting for a node with {'clusterer_absent': 1}" in r.getMessage() for r in caplog.records)
    with pytest.raises(ray.exceptions.RayActorError):  # killed, so the autoscaler stops asking for the node
        ray.get(handle.where.remote(), timeout=60)


def test_a_fallback_placement_waits_for_the_process_not_for_a_node(ray_session, caplog):
    # a fallback actor needs no particular node: a slow start is a busy node, and the console must not send the
    # user looking for an autoscaler node type
    import ray

    from ray_reid.distributed.placement import ActorPlacement, wait_until_placed

    @ray.remote(num_cpus=0)
    class SlowStart:
        def where(self):
            import time

            time.sleep(30)

    placement = ActorPlacement({"num_cpus": 0}, "on CPU (fallback)", fallback=True)
    handle = SlowStart.remote()
    with caplog.at_level(logging.INFO, logger="ray_reid.distributed.placement"):
        with pytest.raises(TimeoutError, match="did not start within \\d+s although it needs no particular node"):
            wait_until_placed(handle, placement, timeout_s=2.0, report_every_s=1.0)
    messages = [r.getMessage() for r in caplog.records]
    assert any("it needs no particular node" in m for m in messages)
    assert not any("waiting for a node" in m for m in messages)


# ---------------------------------------------------------------------------------------------- sweeps

def test_capacity_is_the_head_plus_every_declared_type_at_its_max_workers():
    from ray_reid.distributed.placement import cluster_capacity, head_resources_from_config

    capacity = cluster_capacity(nodes=[HEAD], declared=node_types_from_config(AUTOSCALER),
                                head=head_resources_from_config(AUTOSCALER))
    assert capacity.now == {"CPU": 0.0, "GPU": 0.0}
    assert capacity.most == {"CPU": 8 * 8 + 8.0, "GPU": 8 + 1.0, "clusterer": 1.0}
    assert "8 × gpu_worker" in capacity.source and "1 × clusterer" in capacity.source
    # without an autoscaler config the most is today's nodes, unless the user states the GPUs
    bare = cluster_capacity(nodes=[HEAD, GPU_NODE], declared={})
    assert bare.most == bare.now == {"CPU": 8.0, "GPU": 1.0}
    stated = cluster_capacity(nodes=[HEAD, GPU_NODE], declared={}, max_cluster_gpus=6)
    assert stated.most["GPU"] == 6.0 and "--max-cluster-gpus 6" in stated.source
    # a node started by hand on top of the declared ones counts too
    extra = cluster_capacity(nodes=[HEAD, {**GPU_NODE, "resources": {"CPU": 100.0}}],
                             declared=node_types_from_config(AUTOSCALER), head={"CPU": 0})
    assert extra.most["CPU"] == 100.0

def test_the_autoscaler_cluster_wide_max_workers_caps_what_the_cluster_can_hold():
    from ray_reid.distributed.placement import cluster_capacity, head_resources_from_config, worker_cap_from_config

    assert worker_cap_from_config(AUTOSCALER) == 9 and worker_cap_from_config({}) is None
    # 8 GPU workers + 1 clusterer could be 9 nodes, but the cluster allows 4 worker nodes in all
    capped = cluster_capacity(nodes=[HEAD], declared=node_types_from_config(AUTOSCALER),
                              head=head_resources_from_config(AUTOSCALER), max_workers=4)
    assert capped.most == {"CPU": 4 * 8.0, "GPU": 4.0, "clusterer": 1.0}
    assert "at most 4 worker nodes in all" in capped.source
    # read from the config as a whole: the same figures, cap included
    from ray_reid.distributed.placement import capacity_from_config

    assert capacity_from_config({**AUTOSCALER, "max_workers": 4}, [HEAD]) == capped
    # a cap above the node types' sum changes nothing
    loose = cluster_capacity(nodes=[HEAD], declared=node_types_from_config(AUTOSCALER),
                             head=head_resources_from_config(AUTOSCALER), max_workers=9)
    assert loose.most == {"CPU": 8 * 8 + 8.0, "GPU": 8 + 1.0, "clusterer": 1.0} and "in all" not in loose.source


def test_trial_actors_share_the_declared_clusterer_node_and_its_gpu():
    from ray_reid.distributed.placement import trial_clusterer

    declared = node_types_from_config(AUTOSCALER)
    pinned = trial_clusterer(requested=False, nodes=[HEAD], declared=declared, clusterer_cpus=0.5, clusterer_gpus=0)
    assert pinned.slots == 16  # 8 CPUs / 0.5 per actor
    assert pinned.resources == {"clusterer": 0.0625} and pinned.gpus == 0.0625  # the GPU shared, not idle
    assert pinned.slots * pinned.resources["clusterer"] <= 1 and pinned.slots * pinned.gpus <= 1
    gpu_bound = trial_clusterer(requested=False, nodes=[HEAD], declared=declared, clusterer_cpus=0.5,
                                clusterer_gpus=0.5)
    assert gpu_bound.slots == 2 and gpu_bound.gpus == 0.5 and gpu_bound.resources == {"clusterer": 0.5}
    three = trial_clusterer(requested=False, nodes=[{**CLUSTERER_NODE, "resources": {"CPU": 3.0, "clusterer": 1.0}}],
                            declared={}, clusterer_cpus=1, clusterer_gpus=0)
    assert three.slots == 3 and three.resources == {"clusterer": 0.3333} and three.gpus == 0  # no GPU there
    assert trial_clusterer(requested=False, nodes=[HEAD, GPU_NODE], declared={}, clusterer_cpus=0.5,
                           clusterer_gpus=0) is None
    flag = trial_clusterer(requested=True, nodes=[HEAD], declared={}, clusterer_cpus=0.5, clusterer_gpus=0)
    assert flag.slots is None and flag.resources == {"clusterer": 0.01} and "--clusterer-resource" in flag.reason
    with pytest.raises(ValueError, match="--clusterer-cpus"):
        trial_clusterer(requested=False, nodes=[], declared=declared, clusterer_cpus=16, clusterer_gpus=0)


def test_waiting_for_a_resource_probes_visibly_and_times_out_naming_it(ray_session, caplog):
    from ray_reid.distributed.placement import wait_for_resources

    node = wait_for_resources({"CPU": 0.01}, why="probe test", timeout_s=120)
    assert node in {n["NodeID"] for n in ray_session.nodes()}
    with caplog.at_level(logging.INFO, logger="ray_reid.distributed.placement"):
        with pytest.raises(TimeoutError, match=r"probe test waited \d+s for a node with \{'clusterer_absent': 0.5\}"):
            wait_for_resources({"clusterer_absent": 0.5}, why="probe test", timeout_s=2.0, report_every_s=0.5)
    assert any("waiting for a node with {'clusterer_absent': 0.5} for the probe test" in r.getMessage()
               for r in caplog.records)


def test_a_run_no_cluster_could_hold_is_refused_and_a_small_today_only_warned():
    from ray_reid.distributed.placement import check_workers_fit, cluster_capacity, head_resources_from_config

    declared = node_types_from_config(AUTOSCALER)
    capacity = cluster_capacity(nodes=[HEAD], declared=declared, head=head_resources_from_config(AUTOSCALER))
    # 16 one-GPU workers on a cluster of at most 9 GPUs would wait for ever: refused, naming what limits it
    with pytest.raises(ValueError, match=r"16 worker\(s\) × \(CPU=4, GPU=1\) need CPU=64, GPU=16 .* GPU=9 "
                                         r"\(the autoscaler config \(head \+ 8 × gpu_worker"):
        check_workers_fit(workers=16, cpus_per_worker=4, gpus_per_worker=1, capacity=capacity, declared=declared)
    # 4 fit the cluster it can become, not today's empty one: a warning
    warning = check_workers_fit(workers=4, cpus_per_worker=4, gpus_per_worker=1, capacity=capacity, declared=declared)
    assert "do not fit today's nodes" in warning and "autoscaler add nodes" in warning
    # a hand-made cluster may still get nodes by hand: never refused, the wait is said
    bare = cluster_capacity(nodes=[HEAD, GPU_NODE], declared={})
    warning = check_workers_fit(workers=16, cpus_per_worker=4, gpus_per_worker=1, capacity=bare, declared={})
    assert "no autoscaler config" in warning and "waits until nodes" in warning
    assert check_workers_fit(workers=1, cpus_per_worker=4, gpus_per_worker=1, capacity=bare, declared={}) is None
