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


def declared_node_types(path: str | os.PathLike | None = None) -> dict[str, NodeType]:
    """Node types the cluster's autoscaler may start; ``{}`` on a cluster without an autoscaler config."""
    path = path or os.environ.get(AUTOSCALING_CONFIG_ENV) or DEFAULT_AUTOSCALING_CONFIG
    file = Path(path).expanduser()
    if not file.is_file():
        return {}
    try:
        raw = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        log.warning("cannot read the autoscaler config %s (%s): planning with the nodes present now", file, exc)
        return {}
    return node_types_from_config(raw if isinstance(raw, dict) else {})


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
    total: dict[str, float] = {}
    for node in nodes:
        for key, value in node["resources"].items():
            total[key] = total.get(key, 0.0) + value
    if total.get("GPU", 0) - num_workers * gpus_per_worker >= 1:
        return ActorPlacement({"num_gpus": 1, "num_cpus": 1}, "on a spare GPU (no node declares a "
                              f"{CLUSTERER_RESOURCE!r} resource)", fallback=True)
    spare_cpus = total.get("CPU", 0) - num_workers * cpus_per_worker
    return ActorPlacement({"num_cpus": 1 if spare_cpus >= 1 else 0},
                          f"on CPU (no node declares a {CLUSTERER_RESOURCE!r} resource and no GPU is spare)",
                          fallback=True)


def wait_until_placed(handle, placement: ActorPlacement, *, timeout_s: float, report_every_s: float = 30.0,
                      clock=time.monotonic) -> dict[str, str]:
    """Block until the actor runs (returns its ``where()``), saying what it waits for while it waits.

    Raises TimeoutError naming the resource after ``timeout_s``; the pending actor is killed so
    the autoscaler stops asking for a node nobody will use.
    """
    start = clock()
    ref = handle.where.remote()
    while True:
        left = timeout_s - (clock() - start)
        ready, _ = ray.wait([ref], timeout=max(0.0, min(report_every_s, left)))
        if ready:
            return ray.get(ref)
        waited = clock() - start
        if waited >= timeout_s:
            ray.kill(handle, no_restart=True)
            what = placement.waits_for or placement.options
            raise TimeoutError(
                f"the ClusteringActor waited {waited:.0f}s for a node with {what} and none joined "
                f"(placement: {placement.reason}); start such a node (autoscaler node type, or "
                f"`ray start --resources='{{\"{CLUSTERER_RESOURCE}\": 1}}'`), or raise run.placement_timeout_s")
        log.info("waiting for a node with %s for the ClusteringActor (%.0fs of %.0fs): the autoscaler starts one "
                 "when the cluster declares it; nodes now: %d", placement.waits_for or placement.options, waited,
                 timeout_s, len(live_nodes()))


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
