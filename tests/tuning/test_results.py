"""The sweep table, best trial and outputs from a real Ray Tune ResultGrid (no training: a trainable reports
scripted epochs through :func:`tune_row`, as a trial's Train callback does)."""

from __future__ import annotations

import csv

import pytest
import yaml

from ray_reid.config import config_from_dict, load_config
from ray_reid.tuning.results import best_trial, format_table, trial_table, write_sweep_outputs
from ray_reid.tuning.space import SweepConfig, parse_search_space

EPOCHS = 3
#: per λ: each epoch's mAP (None: not an evaluation epoch); λ=10 fails after its first epoch
SCRIPT = {0.1: [0.20, None, 0.15], 1.0: [0.30, 0.40, 0.35], 10.0: [0.05]}


@pytest.fixture(scope="module")
def grid(ray_session, tmp_path_factory):
    from ray import tune

    script = dict(SCRIPT)

    def scripted_trial(config):  # nested, so Ray pickles it by value (a test module is not importable on workers)
        from ray import tune

        from ray_reid.tuning.results import tune_row

        last: dict[str, float] = {}
        for epoch, value in enumerate(script[config["cluster.lam"]]):
            row = {"epoch": epoch, "loss": 1.0 / (epoch + 1)}
            if value is not None:
                row.update({"mAP": value, "rank1": value + 0.1})
            tune.report(tune_row(row, last))
        if config["cluster.lam"] == 10.0:
            raise RuntimeError("scripted failure of the λ=10 trial")

    space = {"cluster.lam": tune.grid_search(sorted(SCRIPT))}
    tuner = tune.Tuner(tune.with_resources(scripted_trial, {"CPU": 0.5}), param_space=space,
                       tune_config=tune.TuneConfig(metric="mAP", mode="max"),
                       run_config=tune.RunConfig(name="scripted", storage_path=str(tmp_path_factory.mktemp("tune"))))
    return tuner.fit()


@pytest.fixture
def space():
    return parse_search_space({"cluster.lam": {"type": "grid", "values": sorted(SCRIPT)}})


def test_rows_take_final_and_best_figures_per_trial_from_the_dataframes(grid, space):
    # Ray 2.60 puts the trial id, not a path, in get_dataframe()'s 'logdir': rows must still find their trial
    frame = grid.get_dataframe()
    assert set(frame["logdir"]) == set(frame["trial_id"])
    rows, curves = trial_table(grid, space, EPOCHS)
    by_lam = {r["cluster.lam"]: r for r in rows}
    assert set(by_lam) == set(SCRIPT)

    carried = by_lam[0.1]  # epoch 1 carried mAP 0.20 forward; the final report is epoch 2's 0.15
    assert carried["final_mAP"] == pytest.approx(0.15) and carried["best_mAP"] == pytest.approx(0.20)
    assert carried["best_epoch"] == 0 and carried["final_rank1"] == pytest.approx(0.25)
    assert carried["epochs_run"] == EPOCHS and carried["stopped_early"] is False and carried["status"] == "TERMINATED"
    assert curves[carried["trial_id"]] == [(0, pytest.approx(0.20)), (2, pytest.approx(0.15))]  # fresh mAP only

    top = by_lam[1.0]
    assert top["final_mAP"] == pytest.approx(0.35) and top["best_mAP"] == pytest.approx(0.40)
    assert top["best_epoch"] == 1 and len(curves[top["trial_id"]]) == 3

    failed = by_lam[10.0]
    assert failed["status"] == "ERROR" and "scripted failure" in failed["error"]
    assert failed["epochs_run"] == 1 and failed["stopped_early"] is False

    best = best_trial(grid, rows)
    assert best["trial_id"] == top["trial_id"]  # highest *final* mAP (scope="last")
    text = format_table(rows, space)
    assert text.splitlines()[0].split()[:2] == ["trial_id", "cluster.lam"] and "ERROR" in text


def test_outputs_are_a_table_a_best_config_and_two_pngs(grid, space, tmp_path):
    rows, curves = trial_table(grid, space, EPOCHS)
    best = best_trial(grid, rows)
    base = config_from_dict({}, {"optim.epochs": EPOCHS})
    files = write_sweep_outputs(tmp_path / "out", rows, curves, best, base, space, SweepConfig(name="scripted"))
    with open(files["table"]) as fh:
        table = list(csv.DictReader(fh))
    assert sorted(float(r["cluster.lam"]) for r in table) == sorted(SCRIPT)
    assert {r["trial_id"] for r in table} == {r["trial_id"] for r in rows}
    cfg = load_config(files["best_config"])
    assert cfg.cluster.lam == 1.0 and cfg.run.name == "scripted-best" and cfg.optim.epochs == EPOCHS
    assert yaml.safe_load(files["best_config"].read_text())["cluster"]["lam"] == 1.0
    for kind in ("scatter", "curves"):
        assert files[kind].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_map_at_all_gives_no_best_trial(grid, space):
    rows, _ = trial_table(grid, space, EPOCHS)
    blank = [{**r, "final_mAP": None} for r in rows]
    assert best_trial(grid, blank) is None
