"""A finished sweep in numbers: one row per trial from Ray Tune's ResultGrid, the best trial, its config.

The rows come from ``ResultGrid.get_dataframe()`` (each trial's last report: final mAP, epochs run)
and ``get_dataframe(filter_metric="mAP", filter_mode="max")`` (each trial's best report), the best
trial from ``get_best_result``; only the learning curves read each trial's own metrics table. No Ray
import here: the grid is passed in.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ray_reid.atomic import atomic_write
from ray_reid.config import TrainConfig, config_from_dict, save_config
from ray_reid.eval.plots import plot_sweep_curves, plot_sweep_scatter
from ray_reid.tuning.space import SearchDim, SweepConfig

log = logging.getLogger(__name__)

METRIC = "mAP"
MODE = "max"
#: ASHA's clock: epochs completed. Equal to Tune's ``training_iteration`` on a trial that ran in one go, but it
#: stays right when an interrupted sweep is restored (Tune then restarts its iteration count at 1 while the
#: trial's TorchTrainer resumes at the epoch after its last checkpoint).
TIME_ATTR = "epochs_done"
TABLE_FILE = "trials.csv"
BEST_CONFIG_FILE = "best_config.yaml"
SCATTER_FILE = "map_lambda_mu.png"
CURVES_FILE = "learning_curves.png"
LAM_KEY = "cluster.lam"
MU_KEY = "optim.distill_weight"


@dataclass
class SweepOutcome:
    experiment_path: str
    rows: list[dict[str, Any]]
    curves: dict[str, list[tuple[int, float]]]
    best: dict[str, Any] | None
    files: dict[str, Path | str] = field(default_factory=dict)  # local paths, or URIs on s3://


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


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _by_trial(frame) -> dict[str, dict[str, Any]]:
    """Rows keyed by trial id: Ray 2.60's ``get_dataframe`` fills ``logdir`` with the trial id, not a path."""
    rows = frame.to_dict("records") if len(frame) else []
    return {str(r.get("trial_id") or r.get("logdir")): r for r in rows}


def trial_table(grid, space: Mapping[str, SearchDim], configured_epochs: int
                ) -> tuple[list[dict[str, Any]], dict[str, list[tuple[int, float]]]]:
    """One row per trial (config values, final/best mAP and rank-1, epochs, early stop) and its mAP curve.

    Final figures are each trial's last report (``get_dataframe()``; mAP is carried forward between
    evaluations, see :func:`tune_row`), best figures its best report (``filter_metric="mAP"``).
    """
    last = _by_trial(grid.get_dataframe())
    best = _by_trial(grid.get_dataframe(filter_metric=METRIC, filter_mode=MODE))
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[tuple[int, float]]] = {}
    for result in grid:
        key = str((result.metrics or {}).get("trial_id") or "")
        final, top = last.get(key, {}), best.get(key, {})
        trial_id = str(final.get("trial_id") or key or Path(result.path).name)
        errored = result.error is not None
        epochs_run = int(_finite(final.get(TIME_ATTR)) or 0)
        row: dict[str, Any] = {"trial_id": trial_id}
        row.update({key: result.config.get(key) for key in space})
        has_best = _finite(top.get(METRIC)) is not None
        row.update({
            "final_mAP": _finite(final.get(METRIC)), "final_rank1": _finite(final.get("rank1")),
            "best_mAP": _finite(top.get(METRIC)), "best_rank1": _finite(top.get("rank1")),
            "best_epoch": int(top["epoch"]) if has_best else None,
            "epochs_run": epochs_run, "epochs_configured": configured_epochs,
            "stopped_early": (not errored) and epochs_run < configured_epochs,
            "status": "ERROR" if errored else "TERMINATED",
            "error": error_summary(result.error) if errored else "",
            "path": result.path,
        })
        rows.append(row)
        curves[trial_id] = [(int(r["epoch"]), float(r[METRIC])) for r in _history(result)
                            if r.get("mAP_evaluated", True) and _finite(r.get(METRIC)) is not None]
    rows.sort(key=lambda r: r["trial_id"])
    return rows, curves


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_summary(error: BaseException) -> str:
    """The line of a trial's error that says what went wrong: the last line of the traceback Ray wraps it in
    (``RuntimeError: ...``), not the ``ray::ImplicitFunc.train() (pid=..., ...)`` header that comes first."""
    lines = [line.strip() for line in _ANSI.sub("", str(error)).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:200]


def best_trial(grid, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The row of ``grid.get_best_result(mAP, max, scope="last")``: the highest final mAP, what rerunning
    that config gives. None when no trial reported an mAP."""
    if not any(r["final_mAP"] is not None for r in rows):
        return None
    path = str(grid.get_best_result(metric=METRIC, mode=MODE, scope="last").path)
    found = [r for r in rows if str(r["path"]) == path and r["final_mAP"] is not None]
    return dict(found[0]) if found else None


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
                        best: Mapping[str, Any] | None, base_cfg: TrainConfig, space: Mapping[str, SearchDim],
                        sweep: SweepConfig) -> dict[str, Path]:
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
    if best is not None:
        files["best_config"] = save_config(best_config(base_cfg, best, space, sweep.name), out_dir / BEST_CONFIG_FILE)
    else:
        log.warning("no trial reported an mAP: no best config written")
    lam = [_value(r, LAM_KEY, base_cfg.cluster.lam) for r in rows]
    mu = [_value(r, MU_KEY, base_cfg.optim.distill_weight) for r in rows]
    files["scatter"] = plot_sweep_scatter(lam, mu, [r["best_mAP"] for r in rows], out_dir / SCATTER_FILE,
                                          x_label="λ  (cluster.lam, SSE weight)", y_label="μ  (optim.distill_weight)")
    files["curves"] = plot_sweep_curves(
        [(", ".join(_short(k, r.get(k)) for k in space), curves.get(r["trial_id"], []), r["stopped_early"])
         for r in rows], out_dir / CURVES_FILE)
    return files


def _write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _value(row: Mapping[str, Any], key: str, default: float) -> float:
    """A searched key's value in ``row``; keys not searched take the base config's value."""
    return float(row[key]) if row.get(key) is not None else float(default)


def _short(key: str, value: Any) -> str:
    name = key.split(".")[-1]
    return f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
