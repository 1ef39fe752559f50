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
from ray_reid.distributed.placement import TrialClusterer
from ray_reid.logs import quiet_console
from ray_reid.storage import pyarrow_filesystem, use_endpoint
from ray_reid.tuning.results import (
    METRIC, MODE, MU_KEY, TIME_ATTR, SweepOutcome, best_trial, trial_table, tune_row, write_sweep_outputs,
)
from ray_reid.tuning.space import (
    FUNCTION_CPUS, SearchDim, SweepConfig, admit, check_searchable, check_trial_workers, parse_search_space,
    per_trial_resources, space_to_dict,
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


def actor_bundle(sweep: SweepConfig, clusterer: TrialClusterer | None = None) -> dict[str, float]:
    """What each trial's ClusteringActor holds: its CPUs, its GPUs (a share of the clusterer node's GPU when that
    node has one), and its share of the ``clusterer`` resource, which pins it to that node."""
    bundle: dict[str, float] = {"CPU": sweep.clusterer_cpus}
    gpus = clusterer.gpus if clusterer is not None else sweep.clusterer_gpus
    if gpus > 0:
        bundle["GPU"] = gpus
    if clusterer is not None:
        bundle.update(clusterer.resources)
    return bundle


def trial_resources(sweep: SweepConfig, clusterer: TrialClusterer | None = None):
    """Tune's reservation: bundle 0 runs the trial function, bundle 1 holds the trial's ClusteringActor.

    A bundle that asks for the ``clusterer`` resource stays pending until that node has joined: Tune
    keeps the trial PENDING meanwhile, and the pending placement group is the autoscaler's demand.
    """
    from ray.tune import PlacementGroupFactory

    return PlacementGroupFactory([{"CPU": FUNCTION_CPUS}, actor_bundle(sweep, clusterer)])


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


def run_trial(config: dict[str, Any], *, base: dict[str, Any], sweep: SweepConfig, sweep_storage: str,
              actor: dict[str, float] | None = None) -> None:
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
    use_endpoint(cfg.run.s3_endpoint)  # before the first look at the trial's folder, which may be in the bucket
    bundle = dict(actor or actor_bundle(sweep))
    options: dict[str, Any] = {"num_cpus": bundle.pop("CPU"), "num_gpus": bundle.pop("GPU", 0.0)}
    if bundle:
        options["resources"] = bundle  # the clusterer share: the actor takes what its bundle reserved
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
                callbacks: Sequence[Any] | None = None, clusterer: TrialClusterer | None = None):
    """A new Tuner, or the restored one when this sweep's folder already holds Tune state.

    Returns the tuner, the experiment path, and the base config and space the trials train with (on restore,
    the ones saved when the sweep started).

    ``callbacks`` (``ray.tune.Callback``) apply to a new sweep only: a restored one keeps its saved run config.
    On ``s3://`` Tune keeps its state in the bucket through a pyarrow S3 filesystem pointed at
    ``run.s3_endpoint`` (MinIO, Ceph, ...), so a restore works from any machine that can reach the store.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    storage = locations.absolute(sweep.storage_path)
    experiment_path = f"{storage.rstrip('/')}/{sweep.name}"
    filesystem, storage_in_fs = pyarrow_filesystem(storage, base_cfg.run.s3_endpoint)
    experiment_in_fs = f"{storage_in_fs.rstrip('/')}/{sweep.name}"
    base = _normalise(absolute_paths(base_cfg.to_dict()))
    if tune.Tuner.can_restore(experiment_in_fs, storage_filesystem=filesystem):
        saved = _read_saved_base(experiment_path)
        if saved is not None:
            if _normalise(saved["base"]) != base:
                log.warning("sweep %s was started with a different base config: restoring it with the saved one "
                            "(%s); start a new --sweep-name to train another", sweep.name, BASE_CONFIG_FILE)
            base = _normalise(saved["base"])
            space = parse_search_space(saved["space"], source=f"{experiment_path}/{BASE_CONFIG_FILE}")
        trainable = _trainable(base, sweep, storage, clusterer)
        log.info("restoring sweep %s from %s (unfinished trials continue, finished ones are kept)", sweep.name,
                 experiment_path)
        return tune.Tuner.restore(experiment_in_fs, trainable=trainable, resume_unfinished=True,
                                  resume_errored=sweep.resume_errored, storage_filesystem=filesystem
                                  ), experiment_path, base, dict(space)

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
        _trainable(base, sweep, storage, clusterer),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, scheduler=scheduler, search_alg=search_alg,
                                    num_samples=sweep.num_samples,
                                    max_concurrent_trials=sweep.max_concurrent_trials),
        run_config=tune.RunConfig(name=sweep.name, storage_path=storage_in_fs, storage_filesystem=filesystem,
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


def _trainable(base: dict[str, Any], sweep: SweepConfig, storage: str, clusterer: TrialClusterer | None = None):
    from ray import tune

    fn = tune.with_parameters(run_trial, base=base, sweep=sweep, sweep_storage=storage,
                              actor=actor_bundle(sweep, clusterer))
    return tune.with_resources(fn, trial_resources(sweep, clusterer))


def admit_sweep(base_cfg: TrainConfig, sweep: SweepConfig) -> tuple[SweepConfig, TrialClusterer | None]:
    """Place the trials' actors and admit the sweep against what the cluster can scale to (see
    :func:`ray_reid.tuning.space.admit`); returns the sweep with its concurrency set, and the clusterer pinning."""
    from ray_reid.distributed.placement import (
        capacity_from_config, live_nodes, node_types_from_config, read_autoscaler_config, trial_clusterer,
    )

    raw = read_autoscaler_config()
    declared = node_types_from_config(raw)
    nodes = live_nodes()
    clusterer = trial_clusterer(requested=base_cfg.run.clusterer_resource, nodes=nodes, declared=declared,
                                clusterer_cpus=sweep.clusterer_cpus, clusterer_gpus=sweep.clusterer_gpus)
    capacity = capacity_from_config(raw, nodes, max_cluster_gpus=sweep.max_cluster_gpus)
    admission = admit(capacity.now, capacity.most, base_cfg, sweep, source=capacity.source,
                      actor_gpus=clusterer.gpus if clusterer else None,
                      clusterer_slots=clusterer.slots if clusterer else None)
    for warning in admission.warnings:
        log.warning("%s", warning)
    need = per_trial_resources(base_cfg, sweep, clusterer.gpus if clusterer else None)
    log.info("each trial holds %s; running up to %d at once (%d fit today's nodes, %d the largest cluster: %s)",
             need, admission.max_concurrent, admission.fits_now, admission.fits_most, capacity.source)
    if clusterer is not None:
        log.info("trial ClusteringActors placed %s: %s", clusterer.reason, actor_bundle(sweep, clusterer))
    else:
        log.info("trial ClusteringActors go wherever their CPUs fit: no node declares a %r resource "
                 "(--clusterer-resource to ask for one)", "clusterer")
    return _replace(sweep, max_concurrent_trials=admission.max_concurrent), clusterer


def run_sweep(base_cfg: TrainConfig, space: Mapping[str, SearchDim], sweep: SweepConfig,
              out_dir: str | os.PathLike | None = None, callbacks: Sequence[Any] | None = None) -> SweepOutcome:
    """Run or resume the sweep, then write the trial table, the best config and the pictures.

    ``out_dir`` (a folder or ``s3://`` prefix) defaults to the sweep's own folder, in the bucket too when the
    sweep's storage is on S3 (never the job's temporary working directory on the head).
    """
    import ray

    check_trial_workers(base_cfg)
    use_endpoint(base_cfg.run.s3_endpoint)
    clusterer = None
    if ray.is_initialized():
        sweep, clusterer = admit_sweep(base_cfg, sweep)
        if clusterer is not None:
            from ray_reid.distributed.placement import wait_for_resources

            node = wait_for_resources(clusterer.resources, why="sweep's trial ClusteringActors",
                                      timeout_s=base_cfg.run.placement_timeout_s)
            log.info("the %r node %s is up: trials start", "clusterer", node[:8])
    tuner, experiment_path, base, space = build_tuner(base_cfg, space, sweep, callbacks, clusterer)
    grid = tuner.fit()
    rows, curves = trial_table(grid, space, config_from_dict(base).optim.epochs)
    out = locations.absolute(out_dir if out_dir is not None else experiment_path)
    outcome = SweepOutcome(experiment_path=experiment_path, rows=rows, curves=curves, best=best_trial(grid, rows))
    with locations.writable_dir(out) as folder:
        written = write_sweep_outputs(folder, rows, curves, outcome.best, config_from_dict(base), space, sweep)
    outcome.files = {kind: (path if not locations.is_uri(out) else locations.join(out, path.name))
                     for kind, path in written.items()}
    return outcome


def _replace(sweep: SweepConfig, **changes: Any) -> SweepConfig:
    return dataclasses.replace(sweep, **changes)
