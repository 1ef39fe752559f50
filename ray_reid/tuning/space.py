"""What a sweep searches and how it runs, as plain data: no Ray here.

A search space maps dotted config keys to ranges or lists (``jobs/configs/tune_space.yaml``, or
``--param KEY=TYPE:SPEC``), checked against the config's own sections so a typo is refused with
the valid keys before Ray starts. :class:`SweepConfig` holds the sweep's own settings, and the
resource arithmetic says how many trials fit at once.

Why a trial asks Tune for so little: Tune reserves, per trial, one placement group of two
bundles — ``FUNCTION_CPUS`` for the trial function (it only waits on ``fit()``) and
``clusterer_cpus``/``clusterer_gpus`` for the trial's ClusteringActor, which is placed *in* that
bundle so Tune's accounting covers it. The TorchTrainer's workers are then requested from the
cluster by Ray Train itself (``workers × cpus_per_worker`` CPUs and ``workers × gpus_per_worker``
GPUs), outside Tune's view. A trial therefore needs ``FUNCTION_CPUS + clusterer_cpus + workers ×
cpus_per_worker`` CPUs; the sweep runs at most ``floor(cluster CPUs / that)`` trials at once
(likewise for GPUs), otherwise trials would hold their Tune bundles while their workers wait
forever for CPUs another trial holds.

"Cluster" here means the largest cluster it can scale to (:func:`admit`): on an autoscaling cluster
the worker pool may be empty when the sweep is submitted, and it is the trials' pending requests
that make the autoscaler start nodes, so admitting against today's nodes would refuse a sweep the
cluster is about to hold.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from ray_reid.config import SECTIONS, TrainConfig

FUNCTION_CPUS = 0.5
SPACE_TYPES = ("loguniform", "uniform", "choice", "grid")
SEARCHERS = ("grid", "random", "optuna")
SCHEDULERS = ("asha", "fifo")
#: Keys a trial must not take from the search space: the sweep owns where and under what name a trial runs.
RESERVED_KEYS = ("run.name", "run.storage_path")


@dataclass(frozen=True)
class SearchDim:
    """One searched config value: a range (``loguniform``/``uniform``) or a list of values (``choice``/``grid``)."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        where = f"search space entry {self.key!r}"
        if self.type not in SPACE_TYPES:
            raise ValueError(f"{where}: unknown type {self.type!r}; valid types: {', '.join(SPACE_TYPES)}")
        if self.type in ("loguniform", "uniform"):
            if self.low is None or self.high is None or self.values:
                raise ValueError(f"{where}: type {self.type} needs 'low' and 'high' (and no 'values')")
            if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
                raise ValueError(f"{where}: expected finite low < high, got low={self.low}, high={self.high}")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError(f"{where}: loguniform needs low > 0, got {self.low}")
        else:
            if not self.values or self.low is not None or self.high is not None:
                raise ValueError(f"{where}: type {self.type} needs a non-empty list 'values' (and no low/high)")


def _check_key(key: str, source: str) -> None:
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise ValueError(f"{source}: search space key {key!r} must look like section.key with section in "
                         f"{', '.join(SECTIONS)}")
    valid = [f.name for f in fields(SECTIONS[section])]
    if name not in valid:
        raise ValueError(f"{source}: unknown config key {key!r}; valid keys of '{section}': {', '.join(valid)}")
    if key in RESERVED_KEYS:
        raise ValueError(f"{source}: {key!r} cannot be searched: the sweep sets it for every trial")


def parse_search_space(raw: Mapping[str, Any], source: str = "search space") -> dict[str, SearchDim]:
    """Validate ``{section.key: {type: ..., low/high | values}}``; errors name the entry and the valid options."""
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"{source}: expected a non-empty mapping of section.key -> {{type: ...}}")
    space: dict[str, SearchDim] = {}
    for key, spec in raw.items():
        key = str(key)
        _check_key(key, source)
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ValueError(f"{source}: entry {key!r} must be a mapping with a 'type' ({', '.join(SPACE_TYPES)})")
        unknown = sorted(set(spec) - {"type", "low", "high", "values"})
        if unknown:
            raise ValueError(f"{source}: entry {key!r} has unknown field {unknown[0]!r}; "
                             "valid fields: type, low, high, values")
        values = spec.get("values", ())
        if not isinstance(values, (list, tuple)):
            raise ValueError(f"{source}: entry {key!r}: 'values' must be a list, got {values!r}")
        try:
            low = None if spec.get("low") is None else float(spec["low"])
            high = None if spec.get("high") is None else float(spec["high"])
        except (TypeError, ValueError):
            raise ValueError(f"{source}: entry {key!r}: low/high must be numbers, got "
                             f"{spec.get('low')!r}, {spec.get('high')!r}") from None
        try:
            space[key] = SearchDim(key=key, type=str(spec["type"]), low=low, high=high, values=tuple(values))
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
    return space


def load_search_space(path: str | os.PathLike) -> dict[str, SearchDim]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"search space file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"search space file {path} is not valid YAML: {exc}") from exc
    return parse_search_space(raw, source=str(path))


def parse_param_flag(text: str) -> tuple[str, dict[str, Any]]:
    """``KEY=TYPE:LOW:HIGH`` or ``KEY=TYPE:V1,V2,...`` (the command-line form of one search space entry)."""
    key, sep, spec = text.partition("=")
    kind, sep2, rest = spec.partition(":")
    if not sep or not sep2 or not rest:
        raise ValueError(f"--param {text!r}: expected KEY=TYPE:LOW:HIGH or KEY=TYPE:V1,V2 with TYPE in "
                         f"{', '.join(SPACE_TYPES)}")
    key, kind = key.strip(), kind.strip()
    if kind in ("loguniform", "uniform"):
        low, sep3, high = rest.partition(":")
        if not sep3:
            raise ValueError(f"--param {text!r}: {kind} needs LOW:HIGH")
        return key, {"type": kind, "low": low, "high": high}
    return key, {"type": kind, "values": [yaml.safe_load(v) for v in rest.split(",") if v.strip()]}


@dataclass(frozen=True)
class SweepConfig:
    """How the sweep runs (not what a trial trains: that is the base TrainConfig plus the trial's values)."""

    name: str = "tune"
    storage_path: str = "runs/tune"
    num_samples: int = 1
    max_concurrent_trials: int | None = None  # None: as many as the cluster has room for
    search: str = "random"
    scheduler: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 2.0
    clusterer_cpus: float = 0.5
    clusterer_gpus: float = 0.0
    resume_errored: bool = False
    seed: int | None = None
    max_cluster_gpus: float | None = None  # the most GPUs the cluster can scale to, when no autoscaler config says

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"sweep name {self.name!r} is invalid: expected a non-empty name without '/'")
        if self.search not in SEARCHERS:
            raise ValueError(f"--search {self.search!r} is invalid; valid options: {', '.join(SEARCHERS)}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"--scheduler {self.scheduler!r} is invalid; valid options: {', '.join(SCHEDULERS)}")
        if self.num_samples < 1:
            raise ValueError(f"--num-samples {self.num_samples} is invalid: expected an integer >= 1")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError(f"--max-concurrent-trials {self.max_concurrent_trials} is invalid: expected >= 1")
        if self.grace_period < 1:
            raise ValueError(f"--grace-period {self.grace_period} is invalid: expected an integer >= 1")
        if self.reduction_factor <= 1:
            raise ValueError(f"--reduction-factor {self.reduction_factor} is invalid: expected a number > 1")
        if self.max_cluster_gpus is not None and self.max_cluster_gpus < 0:
            raise ValueError(f"--max-cluster-gpus {self.max_cluster_gpus} is invalid: expected a number >= 0")
        if self.clusterer_cpus < 0 or self.clusterer_gpus < 0 or self.clusterer_cpus + self.clusterer_gpus <= 0:
            raise ValueError(f"clusterer resources cpus={self.clusterer_cpus}, gpus={self.clusterer_gpus} are "
                             "invalid: expected non-negative numbers, not both zero")


def per_trial_resources(cfg: TrainConfig, sweep: SweepConfig, actor_gpus: float | None = None) -> dict[str, float]:
    """What one trial holds while it runs: its Tune bundles plus the TorchTrainer's workers (``actor_gpus``
    replaces ``sweep.clusterer_gpus`` when the actor takes a share of the clusterer node's GPU)."""
    workers = max(1, cfg.run.num_workers)
    gpus = sweep.clusterer_gpus if actor_gpus is None else actor_gpus
    return {"CPU": FUNCTION_CPUS + sweep.clusterer_cpus + workers * cfg.run.cpus_per_worker,
            "GPU": gpus + workers * cfg.run.gpus_per_worker}


def trials_that_fit(cluster: Mapping[str, float], cfg: TrainConfig, sweep: SweepConfig,
                    actor_gpus: float | None = None) -> int:
    need = per_trial_resources(cfg, sweep, actor_gpus)
    fits = [math.floor(cluster.get(kind, 0.0) / amount + 1e-9) for kind, amount in need.items() if amount > 0]
    return max(0, min(fits))


@dataclass(frozen=True)
class Admission:
    """How many trials run at once, and what the user is told about it."""

    max_concurrent: int
    fits_now: int
    fits_most: int
    warnings: tuple[str, ...] = ()


def admit(now: Mapping[str, float], most: Mapping[str, float], cfg: TrainConfig, sweep: SweepConfig, *,
          source: str, actor_gpus: float | None = None, clusterer_slots: int | None = None) -> Admission:
    """Admit a sweep against what the cluster *can* scale to (``most``), not what is up today (``now``).

    Refused (ValueError) only when one trial does not fit even the largest cluster; a cluster that is
    smaller today is a warning, since the trials' pending requests are what make the autoscaler grow it.
    By default as many trials run at once as the largest cluster holds (and the clusterer node's
    ``clusterer_slots``), so a sweep submitted to an empty worker pool asks for all its nodes at once.
    """
    need = per_trial_resources(cfg, sweep, actor_gpus)
    fits_most = trials_that_fit(most, cfg, sweep, actor_gpus)
    fits_now = trials_that_fit(now, cfg, sweep, actor_gpus)
    if fits_most < 1:
        raise ValueError(
            f"one trial needs CPU={need['CPU']:g}, GPU={need['GPU']:g} (function {FUNCTION_CPUS} CPU + its "
            f"ClusteringActor + {max(1, cfg.run.num_workers)} worker(s)) but the cluster can scale to at most "
            f"CPU={most.get('CPU', 0):g}, GPU={most.get('GPU', 0):g} ({source}): lower --workers / "
            "--cpus-per-worker / --gpus-per-worker / --clusterer-cpus, or state the GPUs the cluster can scale to "
            "with --max-cluster-gpus")
    limit = fits_most if clusterer_slots is None else min(fits_most, clusterer_slots)
    warnings = []
    if fits_now < limit:
        warnings.append(
            f"today's nodes hold {fits_now} trial(s) of CPU={need['CPU']:g}, GPU={need['GPU']:g}; the cluster can "
            f"scale to {fits_most} ({source}): the trials' pending requests make the autoscaler add nodes")
    max_concurrent = limit if sweep.max_concurrent_trials is None else sweep.max_concurrent_trials
    if sweep.max_concurrent_trials is not None and sweep.max_concurrent_trials > limit:
        warnings.append(f"--max-concurrent-trials {sweep.max_concurrent_trials} > {limit} trials the cluster can "
                        f"hold at once (each needs CPU={need['CPU']:g}, GPU={need['GPU']:g}): trials past {limit} "
                        "wait for resources held by the others")
    return Admission(max_concurrent=max_concurrent, fits_now=fits_now, fits_most=fits_most, warnings=tuple(warnings))


def check_trial_workers(cfg: TrainConfig) -> None:
    """Refuse worker settings a trial cannot run, before Ray starts: every trial is a fixed-size Ray Train run."""
    run = cfg.run
    if run.num_workers < 1:
        raise ValueError("run.num_workers=0 trains in-process without Ray; every trial is a Ray Train run: "
                         "use --workers 1 or more")
    if run.min_workers is not None:
        raise ValueError(f"run.min_workers={run.min_workers} (--workers {run.min_workers}-{run.num_workers}) is "
                         "elastic training, which a sweep's trials cannot do: each trial reserves a fixed placement "
                         "group of worker bundles. Use a fixed --workers N")


def check_searchable(space: Mapping[str, SearchDim], search: str) -> None:
    """Refuse, before Ray starts, a space the searcher cannot use (grid: only lists; optuna: no grid entries)."""
    if search not in SEARCHERS:
        raise ValueError(f"unknown search {search!r}; valid options: {', '.join(SEARCHERS)}")
    for key, dim in space.items():
        if search == "grid" and dim.type in ("loguniform", "uniform"):
            raise ValueError(f"search space entry {key!r} is a continuous {dim.type} range: --search grid needs "
                             "'grid' or 'choice' entries (a list of values); use --search random or optuna")
        if search == "optuna" and dim.type == "grid":
            raise ValueError(f"search space entry {key!r} is type grid, which Optuna cannot sample: use "
                             "type choice, or --search grid / random")


def space_to_dict(space: Mapping[str, SearchDim]) -> dict[str, dict[str, Any]]:
    """The YAML form :func:`parse_search_space` reads back."""
    return {k: {"type": d.type, **({"values": list(d.values)} if d.values else {"low": d.low, "high": d.high})}
            for k, d in space.items()}
