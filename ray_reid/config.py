"""Typed, frozen run configuration: YAML file + dotted overrides, validated on construction.

One tree of small dataclasses, one per concept, each the very type its consumer takes:
``data`` is :class:`ray_reid.data.config.DataConfig` (datasets, transforms), ``model`` is
:class:`ray_reid.models.config.ModelConfig` (``build_model``), ``cluster`` goes to
``make_clusterer``, ``optim`` to the epoch loop. Names (dataset, backbone, views, clusterer,
linkage, regulariser) are checked against their registries when the config is built, so a typo
is refused before anything starts, with the valid names. ``to_dict`` is what crosses into Ray
(plain dicts pickle everywhere and can be written back as a YAML file that ``--config`` accepts).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from ray_reid.atomic import atomic_write
from ray_reid.data.config import DataConfig
from ray_reid.models.config import ModelConfig
from ray_reid.validation import check, check_name, check_positive

__all__ = ["ClusterConfig", "DataConfig", "ModelConfig", "OptimConfig", "RunSection", "TrainConfig", "config_from_dict",
           "load_config", "save_config"]

#: cluster.schedule: "hct" shrinks a target count each epoch, "threshold" stops at a relative merge cost.
SCHEDULES = ("hct", "threshold")
#: cluster.connectivity: dense K×K state, the k-NN candidate graph, or chosen by size (graph_above).
CONNECTIVITIES = ("auto", "dense", "knn")
#: optim.teacher_bn: the teacher's BatchNorm mode while distilling.
TEACHER_BN_MODES = ("train", "eval")


@dataclass(frozen=True)
class ClusterConfig:
    """Pseudo-labelling each epoch: which clusterer, its parameters and its target schedule."""

    method: str = "hc_sse"
    # hierarchical (hc_sse); lam and linkage as HierarchicalSSE's defaults
    lam: float = 0.05
    linkage: str = "single"
    regularizer: str = "sse"
    # "hct": a target count shrinking by merge_percent of N per epoch (BUC/HCT); "threshold": merge
    # while the merge cost stays <= distance_threshold x the mean pairwise squared distance of the
    # epoch's features, so the count follows the features (as DBSCAN's eps does) and a pretrained
    # init's structure is kept from epoch 0.
    schedule: str = "hct"
    distance_threshold: float = 1.0
    merge_percent: float = 0.07  # HCT: each epoch's target shrinks by this fraction of N
    first_step: int = 0  # schedule step used at epoch 0
    min_clusters_ratio: float = 0.05  # never merge below this fraction of N
    sphere: bool = True  # cluster L2-normalised features ("Clustering Matters"); False = the raw BN-neck output
    # cluster each view minus its camera's mean feature (ray_reid.clustering.camera), so clusters follow people
    # rather than cameras; the memories still start from the model's own features
    camera_centred: bool = False
    min_cluster_size: int = 1  # smaller clusters become outliers (-1), left out of the epoch as DBSCAN's are
    # members with fewer than this fraction of their agreement_neighbors nearest neighbours in their own
    # cluster are left out of the epoch as outliers (0 = keep every member; ray_reid.clustering.outliers)
    min_agreement: float = 0.0
    agreement_neighbors: int = 4
    # dense K×K state, or a k-NN candidate graph (no K×K state); "auto" = graph above graph_above images
    connectivity: str = "auto"
    graph_above: int = 20_000  # dense float32 state for average linkage is 1.6 GB here, 4.3 GB at 32,621
    n_neighbors: int = 20
    # flat (exact), ivf (faiss, approximate), pca (exact search in a 128-d PCA projection, candidates
    # re-ranked on the full features), cells (exact distances to the images of each image's 8 nearest
    # k-means cells of ~24, cut in a 64-d PCA projection), auto (flat up to 50,000 rows on CPU, ivf beyond)
    knn_index: str = "auto"
    # workers send embeddings as float16 once all views of all images take this many GB in float32
    fp16_shards_above_gb: float = 2.0
    # dbscan_jaccard
    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    # multi-view fusion weights (global, up, down), DESIGN.md §5
    view_weights: tuple[float, ...] = (0.7, 0.15, 0.15)
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "view_weights", tuple(float(w) for w in self.view_weights))
        from ray_reid.clustering._agglomerate import LINKAGES, REGULARIZERS
        from ray_reid.clustering.graph import KNN_INDEXES
        from ray_reid.clustering.registry import available_clusterers

        check_name("cluster.method", self.method, available_clusterers())
        check_name("cluster.linkage", self.linkage, LINKAGES)
        check_name("cluster.regularizer", self.regularizer, REGULARIZERS)
        check(math.isfinite(self.lam) and self.lam >= 0, "cluster.lam", self.lam, "a finite number >= 0")
        check_name("cluster.schedule", self.schedule, SCHEDULES)
        check(math.isfinite(self.distance_threshold) and self.distance_threshold >= 0, "cluster.distance_threshold",
              self.distance_threshold, "a finite number >= 0")
        check(self.min_cluster_size >= 1, "cluster.min_cluster_size", self.min_cluster_size, "an integer >= 1")
        check(0 <= self.min_agreement <= 1, "cluster.min_agreement", self.min_agreement, "a number in [0, 1]")
        check(self.agreement_neighbors >= 1, "cluster.agreement_neighbors", self.agreement_neighbors,
              "an integer >= 1")
        check(0 < self.merge_percent < 1, "cluster.merge_percent", self.merge_percent, "a number in (0, 1)")
        check(self.first_step >= 0, "cluster.first_step", self.first_step, "an integer >= 0")
        check(0 < self.min_clusters_ratio <= 1, "cluster.min_clusters_ratio", self.min_clusters_ratio,
              "a number in (0, 1]")
        check_name("cluster.connectivity", self.connectivity, CONNECTIVITIES)
        check(self.graph_above >= 1, "cluster.graph_above", self.graph_above, "an integer >= 1")
        check(self.n_neighbors >= 1, "cluster.n_neighbors", self.n_neighbors, "an integer >= 1")
        check(self.fp16_shards_above_gb >= 0, "cluster.fp16_shards_above_gb", self.fp16_shards_above_gb,
              "a number >= 0")
        check_name("cluster.knn_index", self.knn_index, KNN_INDEXES)
        check(not (self.connectivity == "knn" and self.regularizer == "delta_sse" and self.lam > 0),
              "cluster.connectivity", self.connectivity,
              "dense with regularizer delta_sse and lam > 0 (Ward's increase is not reducible, so the graph "
              "path cannot compute it exactly)")
        check(0 < self.eps < 1, "cluster.eps", self.eps, "a number in (0, 1)")
        check(self.min_samples >= 1, "cluster.min_samples", self.min_samples, "an integer >= 1")
        check(self.k1 >= 2 and 1 <= self.k2 <= self.k1, "cluster.k1/k2", (self.k1, self.k2),
               "k1 >= 2 and 1 <= k2 <= k1")
        check(all(w >= 0 for w in self.view_weights) and sum(self.view_weights) > 0,
               "cluster.view_weights", self.view_weights, "non-negative weights, not all zero")
        check(self.device in ("auto", "cpu", "cuda"), "cluster.device", self.device, "auto, cpu or cuda")


@dataclass(frozen=True)
class OptimConfig:
    """Schedule of the feature learning (DESIGN.md §5 defaults, scaled by the YAML for small runs)."""

    epochs: int = 50
    iters: int = 200
    p: int = 16  # identities per global batch
    k: int = 16  # instances per identity
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    step_size: int = 20
    gamma: float = 0.1
    temp: float = 0.05
    momentum: float = 0.1
    parts_weight: float = 0.2  # lambda_2 of Purification: weight of the up/down memories
    # weight of the cluster-memory cross-entropy (cluster-contrast, LP); 0 with triplet_weight > 0 is HCT's
    # loss: batch-hard triplet only, so a person split over two clusters is a negative only when both halves
    # share a batch, instead of against every centroid at every step
    memory_weight: float = 1.0
    triplet_weight: float = 0.0
    triplet_margin: float = 0.3
    distill_weight: float = 1.0  # mu, used only with a teacher
    # Learning to Purification's student, used only with run.teacher (tengxiao14/Purification_ReID@de659b8,
    # examples/Purification_train_usl.py): an epoch -1 on the teacher's labels and frozen teacher memories
    # at teacher_epoch_iters x iters (L164, L170-171, L241; cm.py L142-145 momentum 1.0), then its own
    # clustering epochs; 0 = no such epoch. teacher_bn: the teacher's BatchNorm while distilling, "train"
    # (each batch's statistics, as the public trainer: L161, trainers.py L76) or "eval" (running statistics).
    teacher_epoch_iters: float = 2.0
    teacher_bn: str = "train"
    amp: bool = False

    def __post_init__(self) -> None:
        check_positive(self, "optim", "epochs", "iters", "p", "k", "lr", "step_size", "temp")
        check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a number >= 0")
        check(0 < self.gamma <= 1, "optim.gamma", self.gamma, "a number in (0, 1]")
        check(0 <= self.momentum < 1, "optim.momentum", self.momentum, "a number in [0, 1)")
        check(0 <= self.parts_weight < 1, "optim.parts_weight", self.parts_weight, "a number in [0, 1)")
        check(self.triplet_weight >= 0, "optim.triplet_weight", self.triplet_weight, "a number >= 0")
        check(self.memory_weight >= 0, "optim.memory_weight", self.memory_weight, "a number >= 0")
        check(self.memory_weight > 0 or self.triplet_weight > 0, "optim.memory_weight", self.memory_weight,
              "> 0 unless optim.triplet_weight > 0 (with both 0 nothing is learned)")
        check(self.distill_weight >= 0, "optim.distill_weight", self.distill_weight, "a number >= 0")
        check(math.isfinite(self.teacher_epoch_iters) and self.teacher_epoch_iters >= 0, "optim.teacher_epoch_iters",
              self.teacher_epoch_iters, "a finite number >= 0 (0 = no epoch on the teacher's labels)")
        check_name("optim.teacher_bn", self.teacher_bn, TEACHER_BN_MODES)


@dataclass(frozen=True)
class RunSection:
    """Where and how the run executes: scale, storage, naming, evaluation cadence."""

    name: str = "reid"
    storage_path: str = "runs"
    num_workers: int = 2
    # Elastic training (Ray Train's ScalingConfig(num_workers=(min, max))): the run goes on with as few as
    # min_workers when spot nodes go, and grows back to num_workers; None = a fixed num_workers.
    min_workers: int | None = None
    elastic_resize_interval_s: float = 60.0  # how often a running elastic group checks for capacity to grow
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    seed: int = 0
    eval_every: int = 2
    log_every: int = 10
    max_failures: int = 0
    teacher: str | None = None
    save_embeddings: bool = False
    s3_endpoint: str | None = None
    mlflow_uri: str | None = None  # also log the run to this MLflow tracking URI (needs the mlflow extra)
    clusterer_resource: bool = False  # the actor must wait for a node with {"clusterer": 1}, declared or not
    placement_timeout_s: float = 1800.0  # how long the driver waits for that node (an AWS GPU node boots in ~10 min)
    shared_storage: bool = False  # a local storage_path that every node mounts (NFS, EFS, one host)
    # Ray Train's own console logging (ray.train); its system log file in the Ray session keeps every level
    ray_log_level: str = "ERROR"

    def __post_init__(self) -> None:
        check(self.placement_timeout_s > 0, "run.placement_timeout_s", self.placement_timeout_s, "a number > 0")
        check(bool(self.name) and "/" not in self.name, "run.name", self.name, "a non-empty name without '/'")
        check(self.num_workers >= 0, "run.num_workers", self.num_workers, "an integer >= 0 (0 = in-process)")
        if self.min_workers is not None:
            check(1 <= self.min_workers <= self.num_workers, "run.min_workers", self.min_workers,
                  f"an integer in [1, run.num_workers={self.num_workers}] (the elastic lower bound), or none")
        check(self.elastic_resize_interval_s > 0, "run.elastic_resize_interval_s", self.elastic_resize_interval_s,
              "a number > 0")
        check(self.gpus_per_worker >= 0, "run.gpus_per_worker", self.gpus_per_worker, "a number >= 0")
        check(self.cpus_per_worker > 0, "run.cpus_per_worker", self.cpus_per_worker, "a number > 0")
        check_positive(self, "run", "eval_every", "log_every")
        check(self.max_failures >= -1, "run.max_failures", self.max_failures, "an integer >= -1")
        check_name("run.ray_log_level", self.ray_log_level, ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self) -> None:
        # optim.p is the global batch's identities, split over the ranks of each (re)start (data.sampler.
        # split_identities): every rank of the largest group needs one at least.
        world = max(1, self.run.num_workers)
        if self.optim.p < world:
            raise ValueError(
                f"config value optim.p={self.optim.p} is invalid: expected at least run.num_workers={world} "
                "identities per global batch (each rank draws a share of them, one at least)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "cluster": ClusterConfig, "optim": OptimConfig,
            "run": RunSection}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert YAML / command-line values to the field's declared type, with an error naming the key."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], key)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config value {key}={value!r} is invalid: expected a list")
        return tuple(_coerce(v, args[0], key) for v in value)
    try:
        if annotation is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if annotation is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if annotation is float:
            return float(value)
        if annotation is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"config value {key}={value!r} is invalid: expected {getattr(annotation, '__name__', annotation)}"
        ) from None
    return value


def _build_section(cls: type, values: Mapping[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"unknown config key {section}.{unknown[0]}; valid keys of '{section}': {', '.join(valid)}")
    return cls(**{k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()})


def config_from_dict(raw: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Build a validated config from nested dicts plus ``{"section.key": value}`` overrides."""
    merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for section, values in (raw or {}).items():
        if section not in SECTIONS:
            raise ValueError(f"unknown config section {section!r}; valid sections: {', '.join(SECTIONS)}")
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ValueError(f"config section {section!r} must be a mapping, got {type(values).__name__}")
        merged[section].update(values)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise ValueError(f"override {dotted!r} must look like section.key with section in {', '.join(SECTIONS)}")
        merged[section][key] = value
    return TrainConfig(**{name: _build_section(cls, merged[name], name) for name, cls in SECTIONS.items()})


def load_config(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (optional) and apply dotted overrides; errors name the file and key."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError(f"config file {path} must hold a mapping of sections, got {type(raw).__name__}")
        try:
            return config_from_dict(raw, overrides)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    return config_from_dict(raw, overrides)


LOCAL_PATH_KEYS = (("data", "root"), ("model", "pretrained"), ("run", "teacher"), ("run", "storage_path"))


def _is_named_weights(section: str, key: str, value: str) -> bool:
    """``model.pretrained: imagenet[:VARIANT]`` names torchvision weights, not a file."""
    return (section, key) == ("model", "pretrained") and value.split(":", 1)[0].strip().lower() == "imagenet"


def absolute_paths(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Make a config dict's local paths absolute (URIs pass through).

    Ray workers and Tune trials run in their own working directories, so a relative
    ``runs/teacher`` given on the driver would point nowhere there.
    """
    out = {section: dict(values) for section, values in raw.items()}
    for section, key in LOCAL_PATH_KEYS:
        value = out.get(section, {}).get(key)
        if isinstance(value, str) and value and "://" not in value and not _is_named_weights(section, key, value):
            out[section][key] = str(Path(value).expanduser().resolve())
    return out


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as YAML that ``load_config`` reads back to an equal config (atomic)."""
    data = {section: {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}
            for section, values in cfg.to_dict().items()}

    def _write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            yaml.safe_dump(data, fh, sort_keys=False)

    return atomic_write(path, _write)
