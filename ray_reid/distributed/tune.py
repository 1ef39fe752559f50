"""Ray Tune sweeps in which every trial is a whole distributed training run.

A trial is a Tune *function* trainable that builds its own TrainConfig (the sweep's base config
plus the trial's sampled values as dotted overrides), its own ClusteringActor and its own
TorchTrainer (Ray Train V2). Train reports reach Tune through a callback, so one epoch is one
Tune iteration and ASHA can stop a poor λ/μ after a few epochs instead of a full run.

Resource arithmetic (why a trial asks Tune for so little): Tune reserves, per trial, one
placement group of two bundles — ``FUNCTION_CPUS`` for the trial function (it only waits on
``fit()``) and ``clusterer_cpus``/``clusterer_gpus`` for the trial's ClusteringActor, which is
placed *in* that bundle so Tune's accounting covers it. The TorchTrainer's workers are then
requested from the cluster by Ray Train itself (``workers × cpus_per_worker`` CPUs and
``workers × gpus_per_worker`` GPUs), outside Tune's view. A trial therefore needs
``FUNCTION_CPUS + clusterer_cpus + workers × cpus_per_worker`` CPUs; the sweep runs at most
``floor(cluster CPUs / that)`` trials at once (likewise for GPUs), otherwise trials would hold
their Tune bundles while their workers wait forever for CPUs another trial holds.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from ray_reid import locations
from ray_reid.atomic import atomic_write
from ray_reid.config import SECTIONS, TrainConfig, absolute_paths, config_from_dict, save_config

log = logging.getLogger(__name__)

METRIC = "mAP"
MODE = "max"
#: ASHA's clock: epochs completed. Equal to Tune's ``training_iteration`` on a trial that ran in one go, but it
#: stays right when an interrupted sweep is restored (Tune then restarts its iteration count at 1 while the
#: trial's TorchTrainer resumes at the epoch after its last checkpoint).
TIME_ATTR = "epochs_done"
FUNCTION_CPUS = 0.5
SPACE_TYPES = ("loguniform", "uniform", "choice", "grid")
SEARCHERS = ("grid", "random", "optuna")
SCHEDULERS = ("asha", "fifo")
LAM_KEY = "cluster.lam"
MU_KEY = "optim.distill_weight"
#: Keys a trial must not take from the search space: the sweep owns where and under what name a trial runs.
RESERVED_KEYS = ("run.name", "run.storage_path")
BASE_CONFIG_FILE = "base_config.yaml"
TABLE_FILE = "trials.csv"
BEST_CONFIG_FILE = "best_config.yaml"
SCATTER_FILE = "map_lambda_mu.png"
CURVES_FILE = "learning_curves.png"


# ----------------------------------------------------------------------------------------------------------------
# search space
# ----------------------------------------------------------------------------------------------------------------

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


def to_param_space(space: Mapping[str, SearchDim], search: str) -> dict[str, Any]:
    """Tune's param_space for the chosen searcher (grid: every list is crossed; optuna: no grid entries)."""
    from ray import tune

    if search not in SEARCHERS:
        raise ValueError(f"unknown search {search!r}; valid options: {', '.join(SEARCHERS)}")
    out: dict[str, Any] = {}
    for key, dim in space.items():
        if search == "grid":
            if dim.type in ("loguniform", "uniform"):
                raise ValueError(f"search space entry {key!r} is a continuous {dim.type} range: --search grid needs "
                                 "'grid' or 'choice' entries (a list of values); use --search random or optuna")
            out[key] = tune.grid_search(list(dim.values))
        elif dim.type == "grid":
            if search == "optuna":
                raise ValueError(f"search space entry {key!r} is type grid, which Optuna cannot sample: use "
                                 "type choice, or --search grid / random")
            out[key] = tune.grid_search(list(dim.values))
        elif dim.type == "choice":
            out[key] = tune.choice(list(dim.values))
        elif dim.type == "loguniform":
            out[key] = tune.loguniform(dim.low, dim.high)
        else:
            out[key] = tune.uniform(dim.low, dim.high)
    return out


# ----------------------------------------------------------------------------------------------------------------
# sweep settings and the trial function
# ----------------------------------------------------------------------------------------------------------------

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
        if self.clusterer_cpus < 0 or self.clusterer_gpus < 0 or self.clusterer_cpus + self.clusterer_gpus <= 0:
            raise ValueError(f"clusterer resources cpus={self.clusterer_cpus}, gpus={self.clusterer_gpus} are "
                             "invalid: expected non-negative numbers, not both zero")


def per_trial_resources(cfg: TrainConfig, sweep: SweepConfig) -> dict[str, float]:
    """What one trial holds while it runs: its Tune bundles plus the TorchTrainer's workers."""
    workers = max(1, cfg.run.num_workers)
    return {"CPU": FUNCTION_CPUS + sweep.clusterer_cpus + workers * cfg.run.cpus_per_worker,
            "GPU": sweep.clusterer_gpus + workers * cfg.run.gpus_per_worker}


def trials_that_fit(cluster: Mapping[str, float], cfg: TrainConfig, sweep: SweepConfig) -> int:
    need = per_trial_resources(cfg, sweep)
    fits = [math.floor(cluster.get(kind, 0.0) / amount + 1e-9) for kind, amount in need.items() if amount > 0]
    return max(0, min(fits))


def trial_resources(sweep: SweepConfig):
    """Tune's reservation: bundle 0 runs the trial function, bundle 1 holds the trial's ClusteringActor."""
    from ray.tune import PlacementGroupFactory

    actor_bundle: dict[str, float] = {"CPU": sweep.clusterer_cpus}
    if sweep.clusterer_gpus > 0:
        actor_bundle["GPU"] = sweep.clusterer_gpus
    return PlacementGroupFactory([{"CPU": FUNCTION_CPUS}, actor_bundle])


def tune_row(row: Mapping[str, Any], last: dict[str, float]) -> dict[str, Any]:
    """One epoch's Train metrics as a Tune result with a usable ``mAP`` (``last`` carries the latest evaluation).

    mAP is computed only on eval epochs; between them the last evaluated mAP/rank-1 are carried forward
    (``mAP_evaluated`` says which rows are fresh), so ASHA's rung comparison never meets a missing metric.
    ``epochs_done`` is ASHA's clock (see TIME_ATTR).
    """
    out = dict(row)
    evaluated = out.get(METRIC) is not None
    if evaluated:
        last.clear()
        last.update({k: out[k] for k in (METRIC, "rank1") if out.get(k) is not None})
    else:
        for key, value in last.items():
            out.setdefault(key, value)
    out["mAP_evaluated"] = evaluated
    out[TIME_ATTR] = int(out["epoch"]) + 1
    return out


def _make_report_callback(last: dict[str, float]):
    from ray.tune.integration.ray_train import TuneReportCallback

    class CarryMAPCallback(TuneReportCallback):
        """Forward each Train report (rank 0's metrics) to Tune through :func:`tune_row`."""

        def __init__(self, seen: dict[str, float]):
            super().__init__()
            self._last = dict(seen)

        def after_report(self, run_context, metrics, checkpoint):
            super().after_report(run_context, [tune_row(metrics[0], self._last), *metrics[1:]], checkpoint)

    return CarryMAPCallback(last)


def finished_epochs(train_run: str) -> list[dict[str, Any]]:
    """Metric history in the latest registered checkpoint of a Train run folder (empty when it has none yet)."""
    return locations.read_history(train_run)


def trial_folder(sweep_storage: str, sweep_name: str, trial_dir: str) -> str:
    """The trial's own folder in the sweep's storage (local path or URI), where its Train run lives."""
    return f"{sweep_storage.rstrip('/')}/{sweep_name}/{Path(trial_dir).name}"


def run_trial(config: dict[str, Any], *, base: dict[str, Any], sweep: SweepConfig, sweep_storage: str) -> None:
    """One Tune trial = one whole distributed training (resumes its own Train checkpoint if restarted)."""
    import ray
    from ray import tune
    from ray.util.placement_group import get_current_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from ray_reid.distributed.actor import ACTOR_NAME_PREFIX, ClusteringActor
    from ray_reid.distributed.trainer import build_trainer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    context = tune.get_context()
    trial_id = context.get_trial_id()
    folder = trial_folder(sweep_storage, sweep.name, context.get_trial_dir())
    cfg = config_from_dict(base, {**config, "run.name": "train", "run.storage_path": folder})
    log.info("trial %s: %s -> %s", trial_id, config, folder)
    strategy = None
    pg = get_current_placement_group()
    if pg is not None:
        strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=1)
    actor = ClusteringActor.options(
        name=f"{ACTOR_NAME_PREFIX}_{sweep.name}_{trial_id}", get_if_exists=True,
        max_concurrency=max(4, cfg.run.num_workers + 2), num_cpus=sweep.clusterer_cpus,
        num_gpus=sweep.clusterer_gpus, scheduling_strategy=strategy,
    ).remote(cfg.to_dict()["cluster"])
    # A restored trial resumes its Train run from the latest checkpoint; first hand Tune the epochs that run
    # already finished, so its table, curves and ASHA's clock cover the whole run (no epoch is trained twice).
    last: dict[str, float] = {}
    done = finished_epochs(f"{folder}/{cfg.run.name}")
    if done:
        log.info("trial %s: %d epoch(s) already trained, reporting them again and resuming", trial_id, len(done))
    for row in done:
        tune.report(tune_row(row, last))
    try:
        build_trainer(cfg, actor, callbacks=[_make_report_callback(last)]).fit()
    finally:
        ray.kill(actor, no_restart=True)


# ----------------------------------------------------------------------------------------------------------------
# running (or resuming) a sweep
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class SweepOutcome:
    experiment_path: str
    rows: list[dict[str, Any]]
    curves: dict[str, list[tuple[int, float]]]
    best: dict[str, Any] | None
    files: dict[str, Path] = field(default_factory=dict)


def _write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _read_saved_base(experiment_path: str) -> dict[str, Any] | None:
    import pyarrow.fs as pafs

    fs, root = locations.filesystem(experiment_path)
    target = f"{root}/{BASE_CONFIG_FILE}"
    if fs.get_file_info(target).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(target) as fh:
        return yaml.safe_load(fh.read().decode())


def _save_base(experiment_path: str, base: dict[str, Any], space: Mapping[str, SearchDim]) -> None:
    """Keep the sweep's base config and space beside Tune's state, so a restore trains exactly the same trials."""
    doc = {"base": base, "space": {k: {"type": d.type, **({"values": list(d.values)} if d.values else
                                                          {"low": d.low, "high": d.high})} for k, d in space.items()}}
    with locations.writable_dir(experiment_path) as folder:
        _write_text_atomic(folder / BASE_CONFIG_FILE, yaml.safe_dump(doc, sort_keys=False))


def _normalise(base: Mapping[str, Any]) -> dict[str, Any]:
    """Plain-YAML form of a config dict (tuples as lists) so a saved and a fresh base compare equal."""
    return yaml.safe_load(yaml.safe_dump(config_from_dict(base).to_dict()))


def build_tuner(base_cfg: TrainConfig, space: Mapping[str, SearchDim], sweep: SweepConfig,
                callbacks: Sequence[Any] | None = None):
    """A new Tuner, or the restored one when this sweep's folder already holds Tune state.

    Returns the tuner, the experiment path, and the base config and space the trials train with (on restore,
    the ones saved when the sweep started).

    ``callbacks`` (``ray.tune.Callback``) apply to a new sweep only: a restored one keeps its saved run config.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    storage = locations.absolute(sweep.storage_path)
    experiment_path = f"{storage.rstrip('/')}/{sweep.name}"
    base = _normalise(absolute_paths(base_cfg.to_dict()))
    if tune.Tuner.can_restore(experiment_path):
        saved = _read_saved_base(experiment_path)
        if saved is not None:
            if _normalise(saved["base"]) != base:
                log.warning("sweep %s was started with a different base config: restoring it with the saved one "
                            "(%s); start a new --sweep-name to train another", sweep.name, BASE_CONFIG_FILE)
            base = _normalise(saved["base"])
            space = parse_search_space(saved["space"], source=f"{experiment_path}/{BASE_CONFIG_FILE}")
        trainable = _trainable(base, sweep, storage)
        log.info("restoring sweep %s from %s (unfinished trials continue, finished ones are kept)", sweep.name,
                 experiment_path)
        return tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                  resume_errored=sweep.resume_errored), experiment_path, base, dict(space)

    if MU_KEY in space and not base_cfg.run.teacher:
        log.warning("%s (mu) is searched but run.teacher is not set: distillation is off, so mu changes nothing "
                    "in these trials; set --set run.teacher=<checkpoint> to tune it", MU_KEY)
    if sweep.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr=TIME_ATTR, max_t=base_cfg.optim.epochs, grace_period=sweep.grace_period,
                                  reduction_factor=sweep.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    search_alg = None
    if sweep.search == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
            import optuna  # noqa: F401  (OptunaSearch imports lazily; fail here with a clear message)
        except ImportError as exc:
            raise ImportError(f"--search optuna needs the 'optuna' package ({exc}); install it or use "
                              "--search random / grid") from exc
        search_alg = OptunaSearch(seed=sweep.seed)
    param_space = to_param_space(space, sweep.search)
    _save_base(experiment_path, base, space)
    tuner = tune.Tuner(
        _trainable(base, sweep, storage),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, scheduler=scheduler, search_alg=search_alg,
                                    num_samples=sweep.num_samples,
                                    max_concurrent_trials=sweep.max_concurrent_trials),
        run_config=tune.RunConfig(name=sweep.name, storage_path=storage,
                                  callbacks=logger_callbacks(base_cfg.run.mlflow_uri, sweep.name) + list(callbacks or [])),
    )
    return tuner, experiment_path, base, dict(space)


def logger_callbacks(mlflow_uri: str | None, experiment: str) -> list:
    """Tune's own loggers: per-trial TensorBoard event files, CSV and JSON (and MLflow when a URI is given)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    out = [TBXLoggerCallback(), CSVLoggerCallback(), JsonLoggerCallback()]
    if mlflow_uri:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        out.append(MLflowLoggerCallback(tracking_uri=mlflow_uri, experiment_name=experiment))
    return out


def _trainable(base: dict[str, Any], sweep: SweepConfig, storage: str):
    from ray import tune

    fn = tune.with_parameters(run_trial, base=base, sweep=sweep, sweep_storage=storage)
    return tune.with_resources(fn, trial_resources(sweep))


def run_sweep(base_cfg: TrainConfig, space: Mapping[str, SearchDim], sweep: SweepConfig,
              out_dir: str | os.PathLike | None = None, callbacks: Sequence[Any] | None = None) -> SweepOutcome:
    """Run or resume the sweep, then write the trial table, the best config and the pictures."""
    import ray

    if base_cfg.run.num_workers < 1:
        raise ValueError("run.num_workers=0 trains in-process without Ray; every trial is a Ray Train run: "
                         "use --workers 1 or more")
    if ray.is_initialized():
        cluster = ray.cluster_resources()
        fits = trials_that_fit(cluster, base_cfg, sweep)
        need = per_trial_resources(base_cfg, sweep)
        if fits < 1:
            raise ValueError(f"one trial needs {need} (function {FUNCTION_CPUS} CPU + clusterer + workers) but the "
                             f"cluster has CPU={cluster.get('CPU', 0)}, GPU={cluster.get('GPU', 0)}: lower "
                             "--workers / --cpus-per-worker / --clusterer-cpus")
        if sweep.max_concurrent_trials is None:
            sweep = _replace(sweep, max_concurrent_trials=fits)
        elif sweep.max_concurrent_trials > fits:
            log.warning("--max-concurrent-trials %d > %d trials that fit now (each needs %s): trials past %d wait "
                        "for their workers unless the cluster scales up", sweep.max_concurrent_trials, fits, need,
                        fits)
        log.info("each trial holds %s; running up to %d at once", need, sweep.max_concurrent_trials)
    tuner, experiment_path, base, space = build_tuner(base_cfg, space, sweep, callbacks)
    grid = tuner.fit()
    rows, curves = trial_table(grid, space, config_from_dict(base).optim.epochs)
    local_out = Path(out_dir) if out_dir is not None else (
        Path(experiment_path) if not locations.is_uri(experiment_path) else Path("runs") / sweep.name)
    outcome = SweepOutcome(experiment_path=experiment_path, rows=rows, curves=curves, best=best_row(rows))
    outcome.files = write_sweep_outputs(local_out, rows, curves, config_from_dict(base), space, sweep)
    return outcome


def _replace(sweep: SweepConfig, **changes: Any) -> SweepConfig:
    import dataclasses

    return dataclasses.replace(sweep, **changes)


# ----------------------------------------------------------------------------------------------------------------
# results: table, best config, pictures
# ----------------------------------------------------------------------------------------------------------------

def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def trial_table(grid, space: Mapping[str, SearchDim], configured_epochs: int
                ) -> tuple[list[dict[str, Any]], dict[str, list[tuple[int, float]]]]:
    """One row per trial (config values, final/best mAP and rank-1, epochs, early stop) and its mAP curve."""
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[tuple[int, float]]] = {}
    for result in grid:
        metrics = result.metrics or {}
        trial_id = str(metrics.get("trial_id") or Path(result.path).name)
        history = _history(result)
        evaluated = [r for r in history if r.get("mAP_evaluated", True) and _finite(r.get(METRIC)) is not None]
        epochs_run = int(max((r["epoch"] for r in history), default=-1)) + 1
        errored = result.error is not None
        row: dict[str, Any] = {"trial_id": trial_id}
        row.update({key: result.config.get(key) for key in space})
        final = evaluated[-1] if evaluated else {}
        best = max(evaluated, key=lambda r: r[METRIC]) if evaluated else {}
        row.update({
            "final_mAP": _finite(final.get(METRIC)), "final_rank1": _finite(final.get("rank1")),
            "best_mAP": _finite(best.get(METRIC)), "best_rank1": _finite(best.get("rank1")),
            "best_epoch": int(best["epoch"]) if best else None,
            "epochs_run": epochs_run, "epochs_configured": configured_epochs,
            "stopped_early": (not errored) and epochs_run < configured_epochs,
            "status": "ERROR" if errored else "TERMINATED",
            "error": (str(result.error).splitlines() or [""])[0][:200] if errored else "",
            "path": result.path,
        })
        rows.append(row)
        curves[trial_id] = [(int(r["epoch"]), float(r[METRIC])) for r in evaluated]
    rows.sort(key=lambda r: r["trial_id"])
    return rows, curves


def _history(result) -> list[dict[str, Any]]:
    """Every reported epoch once (a restored trial may report an epoch again; the later report wins)."""
    frame = result.metrics_dataframe
    if frame is None or "epoch" not in getattr(frame, "columns", ()):
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for record in frame.to_dict("records"):
        epoch = _finite(record.get("epoch"))
        if epoch is not None:
            by_epoch[int(epoch)] = {**record, "epoch": int(epoch)}
    return [by_epoch[e] for e in sorted(by_epoch)]


def best_row(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Highest final mAP (what rerunning that config gives), ties to the higher best mAP, then trial id."""
    scored = [r for r in rows if r["final_mAP"] is not None]
    if not scored:
        return None
    return dict(max(scored, key=lambda r: (r["final_mAP"], r["best_mAP"] or 0.0, r["trial_id"])))


def best_config(base_cfg: TrainConfig, best: Mapping[str, Any], space: Mapping[str, SearchDim],
                sweep_name: str) -> TrainConfig:
    overrides = {key: best[key] for key in space}
    overrides["run.name"] = f"{sweep_name}-best"
    return config_from_dict(base_cfg.to_dict(), overrides)


def _table_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def format_table(rows: Sequence[Mapping[str, Any]], space: Mapping[str, SearchDim]) -> str:
    columns = ["trial_id", *space, "final_mAP", "final_rank1", "best_mAP", "best_rank1", "epochs_run",
               "stopped_early", "status"]
    return _table_text(rows, columns)


def write_sweep_outputs(out_dir: Path, rows: list[dict[str, Any]], curves: dict[str, list[tuple[int, float]]],
                        base_cfg: TrainConfig, space: Mapping[str, SearchDim], sweep: SweepConfig) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    columns = list(rows[0]) if rows else ["trial_id", *space]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c) for c in columns})
    files["table"] = out_dir / TABLE_FILE
    _write_text_atomic(files["table"], buf.getvalue())
    best = best_row(rows)
    if best is not None:
        files["best_config"] = save_config(best_config(base_cfg, best, space, sweep.name), out_dir / BEST_CONFIG_FILE)
    else:
        log.warning("no trial reported an mAP: no best config written")
    files["scatter"] = plot_lambda_mu(rows, base_cfg, out_dir / SCATTER_FILE)
    files["curves"] = plot_learning_curves(rows, curves, space, out_dir / CURVES_FILE)
    return files


def _save_png(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def plot_lambda_mu(rows: Sequence[Mapping[str, Any]], base_cfg: TrainConfig, path: Path) -> Path:
    """Best mAP of every trial over λ (log axis) × μ; keys not searched take the base config's value."""
    from matplotlib.figure import Figure

    lam = np.array([float(r.get(LAM_KEY) if r.get(LAM_KEY) is not None else base_cfg.cluster.lam) for r in rows])
    mu = np.array([float(r.get(MU_KEY) if r.get(MU_KEY) is not None else base_cfg.optim.distill_weight)
                   for r in rows])
    score = np.array([r["best_mAP"] if r["best_mAP"] is not None else np.nan for r in rows], dtype=float)
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    ok = np.isfinite(score)
    if ok.any():
        points = ax.scatter(lam[ok], mu[ok], c=100 * score[ok], cmap="viridis", s=80, edgecolors="black")
        fig.colorbar(points, ax=ax, label="best mAP (%)")
    if (~ok).any():
        ax.scatter(lam[~ok], mu[~ok], marker="x", color="red", s=60, label="no mAP (errored)")
        ax.legend(loc="best")
    if len(lam) and (lam > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel("λ  (cluster.lam, SSE weight)")
    ax.set_ylabel("μ  (optim.distill_weight)")
    ax.set_title(f"{len(rows)} trials: best mAP over λ × μ")
    ax.grid(True, alpha=0.3)
    return _save_png(fig, path)


def plot_learning_curves(rows: Sequence[Mapping[str, Any]], curves: Mapping[str, list[tuple[int, float]]],
                         space: Mapping[str, SearchDim], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for row in rows:
        points = curves.get(row["trial_id"], [])
        if not points:
            continue
        label = ", ".join(f"{k.split('.')[-1]}={row.get(k):.3g}" if isinstance(row.get(k), float)
                          else f"{k.split('.')[-1]}={row.get(k)}" for k in space)
        style = "--" if row["stopped_early"] else "-"
        ax.plot([e + 1 for e, _ in points], [100 * v for _, v in points], style, marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mAP (%)")
    ax.set_title("learning curves (dashed: stopped early)")
    ax.grid(True, alpha=0.3)
    if len(rows) <= 12 and any(curves.values()):
        ax.legend(fontsize=7, loc="best")
    return _save_png(fig, path)
