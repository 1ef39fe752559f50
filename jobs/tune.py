"""Sweep λ (SSE weight) and μ (distillation weight) with Ray Tune; every trial is a whole distributed training.

    python jobs/tune.py [--config FILE] [--space FILE | --param KEY=TYPE:...] [--search grid|random|optuna]
                        [--scheduler asha|fifo] [--num-samples N] [--sweep-name NAME] [--set section.key=value ...]

Rerunning the same command with the same --sweep-name and --storage-path resumes the sweep: finished
trials are kept, unfinished ones continue from their last Train checkpoint. Results land in the sweep
folder: trials.csv, best_config.yaml (`python jobs/train.py --config best_config.yaml` trains it),
map_lambda_mu.png and learning_curves.png. With RAY_ADDRESS set (`ray job submit -- python jobs/tune.py …`)
it joins that cluster; otherwise it starts a private local Ray.

Per trial the cluster must hold 0.5 CPU (trial function) + --clusterer-cpus (its ClusteringActor) +
--workers × --cpus-per-worker (its TorchTrainer); the sweep runs at most as many trials at once as fit.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from ray_reid.config import TrainConfig, load_config  # noqa: E402
from ray_reid.distributed.tune import (  # noqa: E402
    SCHEDULERS, SEARCHERS, SearchDim, SweepConfig, SweepOutcome, format_table, load_search_space, parse_param_flag,
    parse_search_space, to_param_space,
)

JOBS = Path(__file__).resolve().parent
DEFAULT_CONFIG = JOBS / "configs" / "synthetic.yaml"
DEFAULT_SPACE = JOBS / "configs" / "tune_space.yaml"

# flag -> dotted key of the base TrainConfig (every trial trains with it)
CONFIG_FLAGS: dict[str, tuple[str, type, str]] = {
    "workers": ("run.num_workers", int, "Ray Train workers per trial"),
    "gpus-per-worker": ("run.gpus_per_worker", float, "GPUs per Train worker"),
    "cpus-per-worker": ("run.cpus_per_worker", float, "CPUs per Train worker"),
    "epochs": ("optim.epochs", int, "epochs per trial (ASHA's max_t)"),
    "teacher": ("run.teacher", str, "teacher checkpoint; without one mu (optim.distill_weight) changes nothing"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="base training config (YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a base config value, e.g. --set optim.iters=50")
    for flag, (key, typ, helptext) in CONFIG_FLAGS.items():
        parser.add_argument(f"--{flag}", type=typ, default=None, help=f"{helptext} [{key}]")
    parser.add_argument("--eval-every", type=int, default=1,
                        help="evaluate every N epochs (default 1: ASHA compares fresh mAP at every rung; "
                             "between evaluations the last mAP is carried forward) [run.eval_every]")
    parser.add_argument("--space", type=Path, default=None,
                        help=f"search space YAML (default {DEFAULT_SPACE.relative_to(JOBS.parent)} unless --param)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=TYPE:SPEC",
                        help="add or replace one search entry: cluster.lam=loguniform:0.01:10, "
                             "optim.distill_weight=grid:0,1, cluster.merge_percent=choice:0.1,0.3")
    parser.add_argument("--search", choices=SEARCHERS, default="random")
    parser.add_argument("--scheduler", choices=SCHEDULERS, default="asha")
    parser.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial can be stopped")
    parser.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA: keep 1/this at every rung")
    parser.add_argument("--num-samples", type=int, default=1,
                        help="samples (random/optuna), or repeats of the whole grid (grid entries)")
    parser.add_argument("--max-concurrent-trials", type=int, default=None,
                        help="default: as many trials as the cluster's CPUs/GPUs hold at once")
    parser.add_argument("--clusterer-cpus", type=float, default=0.5, help="CPUs of each trial's ClusteringActor")
    parser.add_argument("--clusterer-gpus", type=float, default=0.0, help="GPUs of each trial's ClusteringActor")
    parser.add_argument("--sweep-name", default="tune", help="rerunning the same name resumes the sweep")
    parser.add_argument("--storage-path", default="runs/tune", help="sweep folder root (local or s3://)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the table, best config and pictures go (default: the sweep folder when local)")
    parser.add_argument("--resume-errored", action="store_true", help="on resume, also retry errored trials")
    parser.add_argument("--seed", type=int, default=None, help="seed of the Optuna sampler")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def base_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {"run.eval_every": args.eval_every}
    for flag, (key, _, _) in CONFIG_FLAGS.items():
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            overrides[key] = value
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        overrides[key.strip()] = value.strip()
    return overrides


def search_space(args: argparse.Namespace) -> dict[str, SearchDim]:
    space: dict[str, SearchDim] = {}
    if args.space is not None or not args.param:
        space.update(load_search_space(args.space or DEFAULT_SPACE))
    if args.param:
        space.update(parse_search_space(dict(parse_param_flag(p) for p in args.param), source="--param"))
    return space


def parse(argv: list[str] | None = None) -> tuple[TrainConfig, dict[str, SearchDim], SweepConfig, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, base_overrides(args))
        space = search_space(args)
        sweep = SweepConfig(name=args.sweep_name, storage_path=args.storage_path, num_samples=args.num_samples,
                            max_concurrent_trials=args.max_concurrent_trials, search=args.search,
                            scheduler=args.scheduler, grace_period=args.grace_period,
                            reduction_factor=args.reduction_factor, clusterer_cpus=args.clusterer_cpus,
                            clusterer_gpus=args.clusterer_gpus, resume_errored=args.resume_errored, seed=args.seed)
        to_param_space(space, sweep.search)  # fail on a space the searcher cannot use before Ray starts
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    return cfg, space, sweep, args


def run_tune(cfg: TrainConfig, space: dict[str, SearchDim], sweep: SweepConfig, out: Path | None = None
             ) -> SweepOutcome:
    from ray_reid.distributed.session import connect
    from ray_reid.distributed.tune import run_sweep

    connect()
    return run_sweep(cfg, space, sweep, out_dir=out)


def main(argv: list[str] | None = None) -> int:
    cfg, space, sweep, args = parse(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    outcome = run_tune(cfg, space, sweep, args.out)
    print(format_table(outcome.rows, space))
    if outcome.best is not None:
        print(f"\nbest trial {outcome.best['trial_id']}: final mAP {100 * outcome.best['final_mAP']:.1f}% "
              f"({', '.join(f'{k}={outcome.best[k]}' for k in space)})")
    for kind, path in outcome.files.items():
        print(f"{kind}: {path}")
    errored = [r for r in outcome.rows if r["status"] == "ERROR"]
    return 1 if errored and len(errored) == len(outcome.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
