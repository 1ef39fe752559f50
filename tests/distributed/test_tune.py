"""Tune sweeps of whole distributed trainings: grid → table/best config/pictures, ASHA stops, restore."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest

from ray_reid.config import config_from_dict, load_config
from ray_reid.distributed.tune import to_param_space
from ray_reid.tuning.space import (
    SearchDim, SweepConfig, parse_param_flag, parse_search_space, per_trial_resources, trials_that_fit,
)


@pytest.fixture
def tiny_base(tiny_synthetic_root, tmp_path):
    def make(**extra):
        overrides = {
            "data.dataset": "synthetic", "data.root": str(tiny_synthetic_root), "data.height": 32,
            "data.width": 16, "model.backbone": "resnet18", "cluster.merge_percent": 0.5, "optim.epochs": 1,
            "optim.iters": 1, "optim.p": 4, "optim.k": 2, "run.num_workers": 1, "run.cpus_per_worker": 1,
            "run.storage_path": str(tmp_path / "runs"), "run.eval_every": 1,
        }
        overrides.update(extra)
        return config_from_dict({}, overrides)

    return make


# ---------------------------------------------------------------------------------------------- search space

def test_space_parses_every_type_and_maps_to_tune():
    from ray.tune.search.sample import Categorical, Float

    space = parse_search_space({
        "cluster.lam": {"type": "loguniform", "low": 0.01, "high": 10},
        "optim.distill_weight": {"type": "uniform", "low": 0, "high": 2},
        "cluster.merge_percent": {"type": "choice", "values": [0.1, 0.3]},
        "optim.lr": {"type": "grid", "values": [1e-4, 3e-4]},
    })
    random = to_param_space(space, "random")
    assert isinstance(random["cluster.lam"], Float) and random["cluster.lam"].lower == 0.01
    assert isinstance(random["cluster.merge_percent"], Categorical)
    assert random["optim.lr"] == {"grid_search": [1e-4, 3e-4]}
    with pytest.raises(ValueError, match="cluster.lam.*continuous"):
        to_param_space(space, "grid")
    with pytest.raises(ValueError, match="optim.lr.*Optuna"):
        to_param_space(space, "optuna")
    grid = to_param_space({k: v for k, v in space.items() if v.type in ("choice", "grid")}, "grid")
    assert grid["cluster.merge_percent"] == {"grid_search": [0.1, 0.3]}


@pytest.mark.parametrize("raw, match", [
    ({"cluster.lam": {"type": "normal", "low": 0, "high": 1}}, "'cluster.lam'.*unknown type 'normal'.*loguniform"),
    ({"cluster.lambda": {"type": "uniform", "low": 0, "high": 1}}, "unknown config key 'cluster.lambda'.*lam"),
    ({"clusters.lam": {"type": "uniform", "low": 0, "high": 1}}, "'clusters.lam' must look like section.key"),
    ({"cluster.lam": {"type": "loguniform", "low": 0, "high": 1}}, "'cluster.lam'.*low > 0"),
    ({"cluster.lam": {"type": "uniform", "low": 2, "high": 1}}, "'cluster.lam'.*low < high"),
    ({"cluster.lam": {"type": "grid", "values": []}}, "'cluster.lam'.*non-empty list"),
    ({"cluster.lam": {"type": "grid", "vals": [1]}}, "'cluster.lam' has unknown field 'vals'"),
    ({"run.name": {"type": "grid", "values": ["a"]}}, "'run.name' cannot be searched"),
    ({"cluster.lam": 0.5}, "'cluster.lam' must be a mapping with a 'type'"),
])
def test_space_errors_name_the_entry(raw, match):
    with pytest.raises(ValueError, match=match):
        parse_search_space(raw, source="space.yaml")


def test_param_flag_and_default_space_file():
    from ray_reid.cli.tune import DEFAULT_SPACE, parse

    assert parse_param_flag("cluster.lam=loguniform:0.01:10") == (
        "cluster.lam", {"type": "loguniform", "low": "0.01", "high": "10"})
    assert parse_param_flag("optim.distill_weight=grid:0,1")[1] == {"type": "grid", "values": [0, 1]}
    with pytest.raises(ValueError, match="KEY=TYPE"):
        parse_param_flag("cluster.lam")
    cfg, space, sweep, _ = parse(["--space", str(DEFAULT_SPACE), "--set", "optim.iters=3", "--workers", "1",
                                  "--search", "optuna", "--sampler-seed", "3"])
    assert space["cluster.lam"] == SearchDim("cluster.lam", "loguniform", 0.01, 10.0)
    assert space["optim.distill_weight"].type == "uniform"
    assert cfg.optim.iters == 3 and cfg.run.num_workers == 1 and cfg.run.eval_every == 1
    assert sweep.search == "optuna" and sweep.seed == 3
    with pytest.raises(SystemExit, match="unknown type 'normal'"):
        parse(["--param", "cluster.lam=normal:0:1"])
    with pytest.raises(SystemExit, match="'cluster.lam' is type grid, which Optuna cannot sample"):
        parse(["--param", "cluster.lam=grid:0.1,1", "--search", "optuna"])


def test_cpu_arithmetic_limits_concurrency(tiny_base):
    cfg = tiny_base(**{"run.num_workers": 2})
    sweep = SweepConfig(clusterer_cpus=0.5)
    assert per_trial_resources(cfg, sweep) == {"CPU": 0.5 + 0.5 + 2 * 1.0, "GPU": 0.0}
    assert trials_that_fit({"CPU": 4.0}, cfg, sweep) == 1
    assert trials_that_fit({"CPU": 4.0}, tiny_base(), sweep) == 2
    gpu = tiny_base(**{"run.gpus_per_worker": 1})
    assert trials_that_fit({"CPU": 64.0, "GPU": 3.0}, gpu, SweepConfig(clusterer_gpus=0.5)) == 2


def test_sweep_refuses_in_process_trials(tiny_base, tmp_path):
    from ray_reid.distributed.tune import run_sweep

    space = parse_search_space({"cluster.lam": {"type": "grid", "values": [0.1]}})
    with pytest.raises(ValueError, match="run.num_workers=0.*--workers 1"):
        run_sweep(tiny_base(**{"run.num_workers": 0}), space, SweepConfig(storage_path=str(tmp_path)))
    elastic = tiny_base(**{"run.num_workers": 4, "run.min_workers": 2})
    with pytest.raises(ValueError, match=r"run.min_workers=2 \(--workers 2-4\) is elastic.*fixed --workers N"):
        run_sweep(elastic, space, SweepConfig(storage_path=str(tmp_path)))
    assert not any(tmp_path.iterdir()), "refused before anything was written"


def test_tune_rows_carry_the_last_map_between_evaluations():
    from ray_reid.tuning.results import tune_row

    last: dict[str, float] = {}
    rows = [tune_row(r, last) for r in ({"epoch": 0, "loss": 3.0}, {"epoch": 1, "mAP": 0.2, "rank1": 0.5},
                                         {"epoch": 2, "loss": 1.0}, {"epoch": 3, "mAP": 0.3, "rank1": 0.6})]
    assert "mAP" not in rows[0] and rows[0]["epochs_done"] == 1 and rows[0]["mAP_evaluated"] is False
    assert rows[2]["mAP"] == 0.2 and rows[2]["rank1"] == 0.5 and rows[2]["mAP_evaluated"] is False
    assert rows[3]["mAP"] == 0.3 and rows[3]["mAP_evaluated"] is True and rows[3]["epochs_done"] == 4


# ---------------------------------------------------------------------------------------------- real sweeps

@pytest.fixture
def release_killed_trials(ray_session):
    """Remove the worker placement groups of trials that Tune killed (ASHA stop, interrupted sweep).

    Ray Train V2 frees a killed controller's placement group from a PlacementGroupCleaner actor that asks the
    state API (the dashboard) whether the controller is alive; the shared test session runs without a dashboard,
    so that never happens here and each killed trial would keep its workers' CPUs for the rest of the session.
    Only groups created during the test are removed, after every trial of the test has ended.
    """
    from ray.util import placement_group_table, remove_placement_group
    from ray.util.placement_group import PlacementGroup
    from ray._raylet import PlacementGroupID

    before = set(placement_group_table())

    def release() -> int:
        leaked = [pg_id for pg_id, info in placement_group_table().items()
                  if pg_id not in before and info["state"] in ("CREATED", "PENDING", "RESCHEDULING")]
        for pg_id in leaked:
            remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg_id))))
        return len(leaked)

    yield release
    release()


def _check_grid_outcome(outcome, grid, tmp_path, tiny_base):
    """Every grid point ran one epoch through the training path; table, pictures and best config agree."""
    keys = list(grid)
    assert sorted(tuple(r[k] for k in keys) for r in outcome.rows) == sorted(itertools.product(*grid.values()))
    for row in outcome.rows:
        assert row["status"] == "TERMINATED" and row["epochs_run"] == 1 and row["stopped_early"] is False
        assert 0.0 <= row["final_mAP"] <= 1.0 and row["best_mAP"] == row["final_mAP"]
        # the trial's TorchTrainer ran inside the trial's own folder, and its actor wrote the embeddings there
        train_run = (tmp_path / "tune" / "grid").joinpath(row["path"].split("/")[-1], "train")
        assert (train_run / "embeddings" / "epoch_0000.parquet").is_file()
    with open(outcome.files["table"]) as fh:
        table = list(csv.DictReader(fh))
    assert {r["trial_id"] for r in table} == {r["trial_id"] for r in outcome.rows}
    assert {*keys, "final_mAP", "best_rank1", "stopped_early"} <= set(table[0])
    for kind in ("scatter", "curves"):
        assert outcome.files[kind].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    best = load_config(outcome.files["best_config"])
    top = max(outcome.rows, key=lambda r: r["final_mAP"])
    assert outcome.best["final_mAP"] == top["final_mAP"]
    for key in keys:
        section, name = key.split(".")
        assert getattr(getattr(best, section), name) == pytest.approx(outcome.best[key])
    assert best.run.name == "grid-best" and best.data.root == tiny_base().data.root
    return best


def test_grid_sweep_of_two_trials_writes_table_best_config_and_pictures(ray_session, tiny_base, tmp_path):
    """The fast suite's sweep: two trials (one after the other on 2 CPUs), a run option honoured in each."""
    from ray_reid.cli.flags import config_from_args
    from ray_reid.cli.train import build_parser
    from ray_reid.distributed.tune import run_sweep

    grid = {"cluster.lam": [0.1, 1.0]}
    space = parse_search_space({k: {"type": "grid", "values": v} for k, v in grid.items()})
    sweep = SweepConfig(name="grid", storage_path=str(tmp_path / "tune"), search="grid", scheduler="fifo",
                        max_concurrent_trials=2)
    # a run option the trials must honour: they train through the same path as `train`
    outcome = run_sweep(tiny_base(**{"run.save_embeddings": True}), space, sweep)
    _check_grid_outcome(outcome, grid, tmp_path, tiny_base)
    # the best config is a training config: jobs/train.py's parser accepts it as is
    cfg = config_from_args(build_parser().parse_args(["--config", str(outcome.files["best_config"])]))
    assert cfg.cluster.lam == pytest.approx(outcome.best["cluster.lam"])


@pytest.mark.slow
def test_grid_sweep_writes_table_best_config_and_pictures(ray_session, tiny_base, tmp_path):
    """Two dimensions (four trials), and the best config retrained in-process by jobs/train.py's path."""
    from ray_reid.cli.flags import config_from_args
    from ray_reid.cli.train import build_parser
    from ray_reid.distributed.tune import run_sweep
    from ray_reid.run import train

    grid = {"cluster.lam": [0.1, 1.0], "optim.distill_weight": [0.0, 1.0]}
    space = parse_search_space({k: {"type": "grid", "values": v} for k, v in grid.items()})
    sweep = SweepConfig(name="grid", storage_path=str(tmp_path / "tune"), search="grid", scheduler="fifo",
                        max_concurrent_trials=2)
    outcome = run_sweep(tiny_base(**{"run.save_embeddings": True}), space, sweep)
    _check_grid_outcome(outcome, grid, tmp_path, tiny_base)

    # the best config is a training config: jobs/train.py accepts it as is and trains it in-process
    cfg = config_from_args(build_parser().parse_args([
        "--config", str(outcome.files["best_config"]), "--set", "run.num_workers=0",
        "--set", f"run.storage_path={tmp_path / 'retrain'}"]))
    summary = train(cfg).summary
    assert summary["epochs"] == 1 and 0.0 <= summary["mAP"] <= 1.0


@pytest.mark.slow
def test_asha_stops_poor_trials_early(ray_session, release_killed_trials, tiny_base, tmp_path):
    """Seeds 3, 4, 5 run one at a time (start order = trial id order): seed 4 learns a worse first epoch than
    seed 3 (mAP ~0.10 vs ~0.12 on the tiny set), so ASHA stops it at the rung after epoch 1. Every decision is
    also checked against ASHA's rule replayed by hand: stop when the rung value is below the
    (1 - 1/reduction_factor) percentile of the earlier trials' values at that rung."""
    from ray_reid.distributed.tune import run_sweep

    space = parse_search_space({"run.seed": {"type": "grid", "values": [3, 4, 5]}})
    sweep = SweepConfig(name="asha", storage_path=str(tmp_path / "tune"), search="grid", scheduler="asha",
                        grace_period=1, reduction_factor=2, max_concurrent_trials=1)
    outcome = run_sweep(tiny_base(**{"optim.epochs": 2}), space, sweep)
    rows = sorted(outcome.rows, key=lambda r: r["trial_id"])
    assert [r["run.seed"] for r in rows] == [3, 4, 5]
    assert all(r["status"] == "TERMINATED" for r in rows)
    rung: list[float] = []
    for row in rows:
        first = dict(outcome.curves[row["trial_id"]])[0]
        should_stop = bool(rung) and first < np.percentile(rung, 50)
        assert row["stopped_early"] == should_stop == (row["epochs_run"] == 1), (row, rung)
        rung.append(first)
    assert any(r["stopped_early"] for r in rows), rows
    assert not rows[0]["stopped_early"] and rows[0]["epochs_run"] == 2


def _interrupt_during_second_trial(marker):
    """Fail the driver from a Tune callback, as Tune's own restore tests do: here once the first trial is done
    and the second has started (its epochs take well under a second on the tiny set, so waiting for one of its
    results would let it finish before the driver reacts).

    Tune saves the run config (callbacks included) with the sweep, so the callback comes back on restore:
    the marker file makes it fire once only.
    """
    from ray.tune import Callback

    class Interrupt(Callback):
        def __init__(self):
            self.completed: set[str] = set()
            self.started: set[str] = set()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.completed.add(trial.trial_id)

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started.add(trial.trial_id)

        def on_step_begin(self, iteration, trials, **info):
            if self.completed and self.started - self.completed and not marker.exists():
                marker.write_text("interrupted")
                raise RuntimeError("interrupting the sweep in its second trial")

    return Interrupt()


def _checkpoints(trial_dir):
    return sorted(p.name for p in (trial_dir / "train").glob("checkpoint_*") if (p / "state.pt").is_file())


@pytest.mark.slow
def test_restore_finishes_interrupted_sweep_without_rerunning(ray_session, release_killed_trials, tiny_base, tmp_path,
                                                              monkeypatch):
    from ray_reid.distributed.tune import run_sweep

    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")  # save the sweep state every step, as on a long sweep
    space = parse_search_space({"cluster.lam": {"type": "grid", "values": [0.1, 1.0]}})
    sweep = SweepConfig(name="resume", storage_path=str(tmp_path / "tune"), search="grid", scheduler="fifo",
                        max_concurrent_trials=1)
    base = tiny_base(**{"optim.epochs": 2})
    with pytest.raises(Exception, match="(?s)interrupting the sweep|Tune run failed"):
        run_sweep(base, space, sweep, callbacks=[_interrupt_during_second_trial(tmp_path / "interrupted")])
    release_killed_trials()  # the interrupted driver's trials are gone: free what their workers held
    experiment = tmp_path / "tune" / "resume"
    before = {p.name: _checkpoints(p) for p in experiment.iterdir() if (p / "train").is_dir()}
    finished = [name for name, ckpts in before.items() if len(ckpts) == 2]
    assert len(finished) == 1 and len(before) <= 2, before
    result_json = (experiment / finished[0] / "result.json").read_bytes()

    outcome = run_sweep(base, space, sweep)  # the same sweep name restores it
    assert len(outcome.rows) == 2
    for row in outcome.rows:
        assert row["status"] == "TERMINATED" and row["epochs_run"] == 2, outcome.rows
        assert [epoch for epoch, _ in outcome.curves[row["trial_id"]]] == [0, 1]
    after = {p.name: _checkpoints(p) for p in experiment.iterdir() if (p / "train").is_dir()}
    assert after[finished[0]] == before[finished[0]]  # the finished trial was not trained again
    assert (experiment / finished[0] / "result.json").read_bytes() == result_json  # nor reported again
    (resumed,) = set(after) - set(finished)
    assert len(after[resumed]) == 2 and set(before.get(resumed, [])) <= set(after[resumed])  # none trained twice
    assert outcome.files["best_config"].is_file()


def test_sweeps_use_tunes_own_logger_callbacks():
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    from ray_reid.distributed.tune import logger_callbacks

    kinds = [type(c) for c in logger_callbacks(None, "s")]
    assert kinds == [TBXLoggerCallback, CSVLoggerCallback, JsonLoggerCallback]
