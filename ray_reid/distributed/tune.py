"""Ray Tune sweeps in which every trial is a whole distributed training, through the same path as ``train``.

A trial is a Tune *function* trainable that builds its own TrainConfig (the sweep's base config
plus the trial's sampled values as dotted overrides) and calls
:func:`ray_reid.distributed.trainer.fit`, the function ``ray_reid.run.train`` calls: so every run
option (``save_embeddings``, ``s3_endpoint``, a teacher, ...) works in trials too. The trial only
adds a report callback (Train reports reach Tune, one epoch = one Tune iteration, so ASHA can stop
a poor λ/μ after a few epochs) and puts its ClusteringActor in its own placement-group bundle.
The search space and the resource arithmetic are plain data (:mod:`ray_reid.tuning.space`); the
table, best config and pictures come from the ResultGrid (:mod:`ray_reid.tuning.results`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ray_reid import locations
from ray_reid.atomic import atomic_write
from ray_reid.config import TrainConfig, absolute_paths, config_from_dict
from ray_reid.logs import quiet_console
from ray_reid.tuning.results import (
    METRIC, MODE, MU_KEY, TIME_ATTR, SweepOutcome, best_trial, trial_table, tune_row, write_sweep_outputs,
)
from ray_reid.tuning.space import (
    FUNCTION_CPUS, SearchDim, SweepConfig, check_searchable, parse_search_space, per_trial_resources, space_to_dict,
    trials_that_fit,
)

log = logging.getLogger(__name__)

BASE_CONFIG_FILE = "base_config.yaml"


def to_param_space(space: Mapping[str, SearchDim], search: str) -> dict[str, Any]:
    """Tune's param_space for the chosen searcher (grid: every list is crossed; optuna: no grid entries)."""
    from ray import tune

    check_searchable(space, search)
    out: dict[str, Any] = {}
    for key, dim in space.items():
        if search == "grid" or dim.type == "grid":
            out[key] = tune.grid_search(list(dim.values))
        elif dim.type == "choice":
            out[key] = tune.choice(list(dim.values))
        elif dim.type == "loguniform":
            out[key] = tune.loguniform(dim.low, dim.high)
        else:
            out[key] = tune.uniform(dim.low, dim.high)
    return out


def trial_resources(sweep: SweepConfig):
    """Tune's reservation: bundle 0 runs the trial function, bundle 1 holds the trial's ClusteringActor."""
    from ray.tune import PlacementGroupFactory

    actor_bundle: dict[str, float] = {"CPU": sweep.clusterer_cpus}
    if sweep.clusterer_gpus > 0:
        actor_bundle["GPU"] = sweep.clusterer_gpus
    return PlacementGroupFactory([{"CPU": FUNCTION_CPUS}, actor_bundle])


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


def trial_folder(sweep_storage: str, sweep_name: str, trial_dir: str) -> str:
    """The trial's own folder in the sweep's storage (local path or URI), where its Train run lives."""
    return locations.join(sweep_storage, sweep_name, Path(trial_dir).name)


def run_trial(config: dict[str, Any], *, base: dict[str, Any], sweep: SweepConfig, sweep_storage: str) -> None:
    """One Tune trial = one whole distributed training (resumes its own Train checkpoint if restarted)."""
    from ray import tune
    from ray.util.placement_group import get_current_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from ray_reid.distributed.actor import ACTOR_NAME_PREFIX
    from ray_reid.distributed.trainer import fit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_console()
    context = tune.get_context()
    trial_id = context.get_trial_id()
    folder = trial_folder(sweep_storage, sweep.name, context.get_trial_dir())
    cfg = config_from_dict(base, {**config, "run.name": "train", "run.storage_path": folder})
    log.info("trial %s: %s -> %s", trial_id, config, folder)
    options: dict[str, Any] = {"num_cpus": sweep.clusterer_cpus, "num_gpus": sweep.clusterer_gpus}
    pg = get_current_placement_group()
    if pg is not None:
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=1)
    # A restored trial resumes its Train run from the latest checkpoint; first hand Tune the epochs that run
    # already finished, so its table, curves and ASHA's clock cover the whole run (no epoch is trained twice).
    last: dict[str, float] = {}
    done = locations.read_history(locations.run_dir(cfg))
    if done:
        log.info("trial %s: %d epoch(s) already trained, reporting them again and resuming", trial_id, len(done))
    for row in done:
        tune.report(tune_row(row, last))
    fit(cfg, callbacks=[_make_report_callback(last)], actor_name=f"{ACTOR_NAME_PREFIX}_{sweep.name}_{trial_id}",
        actor_options=options)


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
    text = yaml.safe_dump({"base": base, "space": space_to_dict(space)}, sort_keys=False)
    with locations.writable_dir(experiment_path) as folder:
        atomic_write(folder / BASE_CONFIG_FILE, lambda tmp: Path(tmp).write_text(text))


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
    outcome = SweepOutcome(experiment_path=experiment_path, rows=rows, curves=curves, best=best_trial(grid, rows))
    outcome.files = write_sweep_outputs(local_out, rows, curves, outcome.best, config_from_dict(base), space, sweep)
    return outcome


def _replace(sweep: SweepConfig, **changes: Any) -> SweepConfig:
    return dataclasses.replace(sweep, **changes)
