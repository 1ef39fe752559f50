"""Decisions a job takes about the cluster it runs on, made against the cluster the user described.

An autoscaling cluster grows after the job starts: on the shipped ``cluster.yaml`` the
``clusterer`` node boots minutes after the head and GPU workers appear only when asked for.
What ``ray.cluster_resources()`` says at submission is therefore the wrong basis for where the
ClusteringActor goes or whether a local storage path is safe. The cluster's own description is
the autoscaler's config (``available_node_types``), which the launcher leaves on the head at
``~/ray_bootstrap_config.yaml``; the user can also state things with flags
(``--clusterer-resource``, ``--shared-storage``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import ray
import yaml

log = logging.getLogger(__name__)

CLUSTERER_RESOURCE = "clusterer"
#: Where ``ray up`` puts the autoscaler's config on the head (cluster.yaml's ``--autoscaling-config``).
DEFAULT_AUTOSCALING_CONFIG = "~/ray_bootstrap_config.yaml"
#: Point this at another autoscaler config (e.g. a fake autoscaler's in tests).
AUTOSCALING_CONFIG_ENV = "RAY_REID_AUTOSCALING_CONFIG"


@dataclass(frozen=True)
class NodeType:
    """One ``available_node_types`` entry: what each node of the type offers and how many may exist."""

    name: str
    resources: Mapping[str, float]
    max_workers: int


def node_types_from_config(raw: Mapping[str, Any]) -> dict[str, NodeType]:
    """The worker node types of an autoscaler config (the head type is left out: it never grows)."""
    head = raw.get("head_node_type")
    types = {}
    for name, spec in (raw.get("available_node_types") or {}).items():
        if name == head:
            continue
        types[name] = NodeType(name=name, resources=dict(spec.get("resources") or {}),
                               max_workers=int(spec.get("max_workers", raw.get("max_workers", 0)) or 0))
    return types


def head_resources_from_config(raw: Mapping[str, Any]) -> dict[str, float] | None:
    """What the head node type offers (it never grows), or None when the config names no head type."""
    head = (raw.get("available_node_types") or {}).get(raw.get("head_node_type"))
    return dict(head.get("resources") or {}) if isinstance(head, Mapping) else None


def worker_cap_from_config(raw: Mapping[str, Any]) -> int | None:
    """The autoscaler's cluster-wide ``max_workers`` (worker nodes of all types together), or None if unset."""
    cap = raw.get("max_workers")
    return None if cap is None else int(cap)


def read_autoscaler_config(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The autoscaler's cluster config as a dict; ``{}`` on a cluster without one (a laptop, a hand-made cluster)."""
    path = path or os.environ.get(AUTOSCALING_CONFIG_ENV) or DEFAULT_AUTOSCALING_CONFIG
    file = Path(path).expanduser()
    if not file.is_file():
        return {}
    try:
        raw = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        log.warning("cannot read the autoscaler config %s (%s): planning with the nodes present now", file, exc)
        return {}
    return raw if isinstance(raw, dict) else {}


def declared_node_types(path: str | os.PathLike | None = None) -> dict[str, NodeType]:
    """Node types the cluster's autoscaler may start; ``{}`` on a cluster without an autoscaler config."""
    return node_types_from_config(read_autoscaler_config(path))


def live_nodes() -> list[dict[str, Any]]:
    """Alive nodes as ``{"node_id", "address", "resources"}``."""
    return [{"node_id": n["NodeID"], "address": n.get("NodeManagerAddress", "?"), "resources": dict(n["Resources"])}
            for n in ray.nodes() if n.get("Alive")]


@dataclass(frozen=True)
class ActorPlacement:
    """Ray options for the ClusteringActor, why, and the resource the driver must wait for (if any)."""

    options: dict[str, Any]
    reason: str
    waits_for: dict[str, float] | None = None
    fallback: bool = False


def clusterer_placement(*, requested: bool, nodes: Sequence[Mapping[str, Any]], declared: Mapping[str, NodeType],
                        num_workers: int, gpus_per_worker: float, cpus_per_worker: float) -> ActorPlacement:
    """Where the actor goes: on the ``clusterer`` node whenever one is declared, asked for or present.

    A node type that declares the resource (or ``requested``, i.e. ``--clusterer-resource``)
    means the actor asks for ``{"clusterer": 1}`` even when no such node has joined yet: the
    request stays pending, which is how the autoscaler learns to start that node. The actor
    takes the node's GPU too when the node has one, so no DDP rank lands on it. Only when
    nothing declares the resource does it fall back to a spare GPU or a CPU of the nodes
    present now.
    """
    carriers = [t for t in declared.values() if t.resources.get(CLUSTERER_RESOURCE, 0) >= 1]
    live_carriers = [n for n in nodes if n["resources"].get(CLUSTERER_RESOURCE, 0) >= 1]
    if carriers or live_carriers or requested:
        options: dict[str, Any] = {"resources": {CLUSTERER_RESOURCE: 1}, "num_cpus": 1}
        if carriers:
            source = f"node type {', '.join(repr(t.name) for t in carriers)} of the autoscaler config"
            has_gpu = all(t.resources.get("GPU", 0) >= 1 for t in carriers)
        elif live_carriers:
            source = f"{len(live_carriers)} node(s) present"
            has_gpu = all(n["resources"].get("GPU", 0) >= 1 for n in live_carriers)
        else:
            source = "--clusterer-resource (no node has it yet)"
            has_gpu = False
        if has_gpu:
            options["num_gpus"] = 1  # reserve the clusterer node's GPU so no DDP worker takes it
        return ActorPlacement(options, f"on the node with the {CLUSTERER_RESOURCE!r} resource ({source})",
                              waits_for={CLUSTERER_RESOURCE: 1})
    total = _sum_resources(nodes)
    if total.get("GPU", 0) - num_workers * gpus_per_worker >= 1:
        return ActorPlacement({"num_gpus": 1, "num_cpus": 1}, "on a spare GPU (no node declares a "
                              f"{CLUSTERER_RESOURCE!r} resource)", fallback=True)
    spare_cpus = total.get("CPU", 0) - num_workers * cpus_per_worker
    return ActorPlacement({"num_cpus": 1 if spare_cpus >= 1 else 0},
                          f"on CPU (no node declares a {CLUSTERER_RESOURCE!r} resource and no GPU is spare)",
                          fallback=True)


def _wait_visibly(ref, *, what: str | None, why: str, timeout_s: float, report_every_s: float, clock) -> Any:
    """``ray.get(ref)`` once it is ready, logging what it waits for every ``report_every_s``; TimeoutError after
    ``timeout_s`` (the caller cancels what it started). ``what`` None: no particular node is needed (a fallback
    placement), so a wait is the process starting on a busy node, and the messages say that, not "a node"."""
    start = clock()
    while True:
        left = timeout_s - (clock() - start)
        ready, _ = ray.wait([ref], timeout=max(0.0, min(report_every_s, left)))
        if ready:
            return ray.get(ref)
        waited = clock() - start
        if what is None:
            if waited >= timeout_s:
                raise TimeoutError(
                    f"the {why} did not start within {waited:.0f}s although it needs no particular node: the nodes "
                    "may be too busy to start its worker process; raise run.placement_timeout_s (--placement-timeout)")
            log.info("waiting for the %s to start (%.0fs of %.0fs): it needs no particular node, its worker process "
                     "is starting", why, waited, timeout_s)
            continue
        if waited >= timeout_s:
            raise TimeoutError(
                f"the {why} waited {waited:.0f}s for a node with {what} and none joined; start such a node "
                f"(autoscaler node type, or `ray start --resources='{{\"{CLUSTERER_RESOURCE}\": 1}}'`), or raise "
                "run.placement_timeout_s (--placement-timeout)")
        log.info("waiting for a node with %s for the %s (%.0fs of %.0fs): the autoscaler starts one when the "
                 "cluster declares it; nodes now: %d", what, why, waited, timeout_s, len(live_nodes()))


def wait_until_placed(handle, placement: ActorPlacement, *, timeout_s: float, report_every_s: float = 30.0,
                      clock=time.monotonic) -> dict[str, str]:
    """Block until the actor runs (returns its ``where()``), saying what it waits for while it waits.

    Raises TimeoutError naming the resource after ``timeout_s``; the pending actor is killed so
    the autoscaler stops asking for a node nobody will use.
    """
    try:
        return _wait_visibly(handle.where.remote(), what=str(placement.waits_for) if placement.waits_for else None,
                             why=f"ClusteringActor (placement: {placement.reason})", timeout_s=timeout_s,
                             report_every_s=report_every_s, clock=clock)
    except TimeoutError:
        ray.kill(handle, no_restart=True)
        raise


@ray.remote(num_cpus=0)
def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def wait_for_resources(resources: Mapping[str, float], *, why: str, timeout_s: float, report_every_s: float = 30.0,
                       clock=time.monotonic) -> str:
    """Block until a node offering ``resources`` is up (returns its node id), saying what it waits for.

    The probe is a zero-CPU task that asks for ``resources``: while it pends, the autoscaler sees the
    demand and starts a node of a type that has them (the same signal a pending actor gives). On a
    timeout the probe is cancelled and TimeoutError names the resources.
    """
    custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU")}
    ref = _node_id.options(num_cpus=resources.get("CPU", 0), num_gpus=resources.get("GPU", 0),
                           resources=custom).remote()  # Ray takes CPU/GPU only as num_cpus/num_gpus
    try:
        return _wait_visibly(ref, what=str(dict(resources)), why=why, timeout_s=timeout_s,
                             report_every_s=report_every_s, clock=clock)
    except TimeoutError:
        ray.cancel(ref, force=True)
        raise


@dataclass(frozen=True)
class ClusterCapacity:
    """The cluster's resources now, and the most it can scale to (with where that figure comes from)."""

    now: dict[str, float]
    most: dict[str, float]
    source: str


def _sum_resources(nodes: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for node in nodes:
        for key, value in node["resources"].items():
            if not key.startswith("node:") and not key.startswith("accelerator_type:"):
                total[key] = total.get(key, 0.0) + float(value)
    return total


def cluster_capacity(*, nodes: Sequence[Mapping[str, Any]], declared: Mapping[str, NodeType],
                     head: Mapping[str, float] | None = None, max_cluster_gpus: float | None = None,
                     max_workers: int | None = None) -> ClusterCapacity:
    """What the cluster holds now and what it *can* hold: the head plus every declared node type at its
    ``max_workers`` (nodes added by hand count too), with the GPUs the user states (``--max-cluster-gpus``)
    replacing the GPU figure. ``max_workers`` is the config's cluster-wide cap on worker nodes: a cluster
    whose node types add up to more cannot have them all at once. Without an autoscaler config the most
    is what is present now.
    """
    now = _sum_resources(nodes)
    if declared:
        most = {k: float(v) for k, v in (head or {}).items()}
        keys = {key for node_type in declared.values() for key in node_type.resources}
        for key in keys:
            # per resource, the richest nodes first while the cluster-wide cap allows (an upper bound for each)
            left = max_workers
            for node_type in sorted(declared.values(), key=lambda t: -float(t.resources.get(key, 0.0))):
                count = node_type.max_workers if left is None else min(node_type.max_workers, left)
                most[key] = most.get(key, 0.0) + float(node_type.resources.get(key, 0.0)) * count
                if left is not None:
                    left -= count
        for key, value in now.items():
            most[key] = max(most.get(key, 0.0), value)
        source = "the autoscaler config (head + " + ", ".join(
            f"{t.max_workers} × {t.name}" for t in declared.values()) + ")"
        if max_workers is not None and max_workers < sum(t.max_workers for t in declared.values()):
            source += f", at most {max_workers} worker nodes in all (its max_workers)"
    else:
        most, source = dict(now), "the nodes present now (no autoscaler config)"
    if max_cluster_gpus is not None:
        most["GPU"] = float(max_cluster_gpus)
        source += f", GPUs from --max-cluster-gpus {max_cluster_gpus:g}"
    return ClusterCapacity(now=now, most=most, source=source)


def capacity_from_config(raw: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]], *,
                         max_cluster_gpus: float | None = None) -> ClusterCapacity:
    """:func:`cluster_capacity` of an autoscaler config as read (node types, head, cluster-wide cap), so every
    caller plans with all of the config and none forgets a part of it."""
    return cluster_capacity(nodes=nodes, declared=node_types_from_config(raw), head=head_resources_from_config(raw),
                            max_cluster_gpus=max_cluster_gpus, max_workers=worker_cap_from_config(raw))


def check_workers_fit(*, workers: int, cpus_per_worker: float, gpus_per_worker: float,
                      capacity: ClusterCapacity, declared: Mapping[str, NodeType]) -> str | None:
    """Refuse a run whose workers no cluster the autoscaler can make would hold; a warning if only today's cannot.

    Without this a run asking for more GPUs than the cluster's node types add up to waits for ever: Ray
    Train V2 keeps retrying a worker group that cannot be scheduled. Without an autoscaler config
    (``ray start`` nodes) more nodes may still be added by hand, so that case only warns.
    Returns the warning, if any; raises ValueError for a run that can never start.
    """
    need = {"CPU": workers * cpus_per_worker, "GPU": workers * gpus_per_worker}
    short_most = {k: v for k, v in need.items() if v > capacity.most.get(k, 0.0) + 1e-9}
    what = f"{workers} worker(s) × (CPU={cpus_per_worker:g}, GPU={gpus_per_worker:g})"
    if short_most and declared:
        raise ValueError(
            f"{what} need " + ", ".join(f"{k}={v:g}" for k, v in need.items()) + " but the cluster can scale to at "
            "most " + ", ".join(f"{k}={capacity.most.get(k, 0.0):g}" for k in need) + f" ({capacity.source}): "
            "lower --workers / --cpus-per-worker / --gpus-per-worker or raise the node types' max_workers")
    short_now = {k: v for k, v in need.items() if v > capacity.now.get(k, 0.0) + 1e-9}
    if short_now:
        held = ", ".join(f"{k}={capacity.now.get(k, 0.0):g}" for k in need)
        if declared:
            return f"{what} do not fit today's nodes ({held}): the pending workers make the autoscaler add nodes"
        return (f"{what} do not fit the nodes present ({held}) and no autoscaler config says more will come: "
                "the run waits until nodes with these resources join the cluster")
    return None


@dataclass(frozen=True)
class TrialClusterer:
    """What each trial's ClusteringActor asks for on top of its CPUs/GPUs, and how many trials fit that node."""

    resources: dict[str, float]
    gpus: float
    slots: int | None
    reason: str


def _floor4(value: float) -> float:
    """Round down to Ray's resource granularity (1e-4), so ``slots`` shares never exceed the whole."""
    return math.floor(value * 10_000) / 10_000


#: A trial's share of the ``clusterer`` resource when the node's size is unknown (``--clusterer-resource`` alone).
UNKNOWN_NODE_SHARE = 0.01


def trial_clusterer(*, requested: bool, nodes: Sequence[Mapping[str, Any]], declared: Mapping[str, NodeType],
                    clusterer_cpus: float, clusterer_gpus: float) -> TrialClusterer | None:
    """Pin every trial's ClusteringActor to the ``clusterer`` node when the cluster declares (or the user asks
    for) one; None when nothing does (trials' actors go wherever their CPUs fit, as before).

    Each actor takes ``1/slots`` of the resource, ``slots`` being how many actors the node's CPUs (and GPUs, when
    ``clusterer_gpus`` is set) hold, so the trials share the node instead of queueing for one unit. When the node
    has a GPU and no ``--clusterer-gpus`` is given, each actor takes the same share of that GPU: the clustering
    then runs on it (CuPy) rather than leaving the paid GPU idle during the sweep.
    """
    carriers = [dict(t.resources) for t in declared.values() if t.resources.get(CLUSTERER_RESOURCE, 0) >= 1]
    source = "node type of the autoscaler config"
    if not carriers:
        carriers = [dict(n["resources"]) for n in nodes if n["resources"].get(CLUSTERER_RESOURCE, 0) >= 1]
        source = "node present"
    if not carriers:
        if not requested:
            return None
        return TrialClusterer({CLUSTERER_RESOURCE: UNKNOWN_NODE_SHARE}, clusterer_gpus, None,
                              f"on the {CLUSTERER_RESOURCE!r} node (--clusterer-resource; its size is unknown "
                              f"until it joins, so each trial takes {UNKNOWN_NODE_SHARE} of it)")
    node = min(carriers, key=lambda r: r.get("CPU", 0))  # several declarations: plan for the smallest
    limits = [math.floor(node.get("CPU", 0) / clusterer_cpus + 1e-9)] if clusterer_cpus > 0 else []
    if clusterer_gpus > 0:
        limits.append(math.floor(node.get("GPU", 0) / clusterer_gpus + 1e-9))
    slots = min(limits) if limits else 1
    if slots < 1:
        raise ValueError(f"each trial's ClusteringActor asks for {clusterer_cpus:g} CPU / {clusterer_gpus:g} GPU but "
                         f"the {CLUSTERER_RESOURCE!r} node offers {node}: lower --clusterer-cpus / --clusterer-gpus")
    gpus = clusterer_gpus
    if gpus == 0 and node.get("GPU", 0) >= 1:
        gpus = _floor4(min(node["GPU"], 1.0) / slots)
    return TrialClusterer({CLUSTERER_RESOURCE: _floor4(1.0 / slots)}, gpus, slots,
                          f"on the {CLUSTERER_RESOURCE!r} node ({source} {node}: {slots} trial actor(s) at once)")


@dataclass(frozen=True)
class StorageCheck:
    ok: bool
    message: str = ""
    nodes: list[str] = field(default_factory=list)


def check_storage_shared(storage_path: str, *, shared: bool, nodes: Sequence[Mapping[str, Any]],
                         declared: Mapping[str, NodeType]) -> StorageCheck:
    """Refuse a local storage path on a cluster of several nodes, unless the user says it is shared.

    Each rank writes checkpoints on the node it runs on: with a local path they scatter over
    the nodes' disks and a restart on another node finds none. S3 and declared shared mounts
    (NFS, EFS, one host) are fine; so is a single-node cluster that cannot grow.
    """
    if "://" in storage_path or shared:
        return StorageCheck(True)
    growing = [t.name for t in declared.values() if t.max_workers > 0]
    if len(nodes) < 2 and not growing:
        return StorageCheck(True)
    # the address alone is ambiguous when several nodes share a host (containers, a test cluster)
    names = [f"{n.get('address', '?')} (node {str(n.get('node_id', '?'))[:8]})" for n in nodes]
    more = f" and the autoscaler may add nodes of type {', '.join(growing)}" if growing else ""
    return StorageCheck(False, (
        f"run.storage_path {storage_path!r} is a local folder, but the cluster has {len(nodes)} node(s) "
        f"({', '.join(names)}){more}: each rank would write its checkpoints on its own node's disk. Use "
        "s3://bucket/prefix, or a folder every node mounts and say so with --shared-storage "
        "(run.shared_storage=true)"), names)
