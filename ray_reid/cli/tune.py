"""Sweep λ (SSE weight) and μ (distillation weight) with Ray Tune; every trial is a whole distributed training.

    python jobs/tune.py [train flags] [--space FILE | --param KEY=TYPE:...] [--search grid|random|optuna]
                        [--scheduler asha|fifo] [--num-samples N] [--sweep-name NAME] [--storage-path DIR]

Every training flag of train applies to the trials (except --name and --storage-path: the sweep
names each trial and keeps it in its folder). Rerunning the same command with the same
--sweep-name and --storage-path resumes the sweep: finished trials are kept, unfinished ones
continue from their last Train checkpoint. Results land in the sweep folder: trials.csv,
best_config.yaml (`python jobs/train.py --config best_config.yaml` trains it), map_lambda_mu.png
and learning_curves.png. With RAY_ADDRESS set it joins that cluster; otherwise it starts a
private local Ray.

Per trial the cluster must hold 0.5 CPU (trial function) + --clusterer-cpus (its ClusteringActor) +
--workers × --cpus-per-worker (its TorchTrainer). The sweep is admitted against what the cluster can
scale to (the autoscaler's node types × max_workers on a `ray up` cluster, or --max-cluster-gpus), and
runs at most as many trials at once as that largest cluster holds; fewer nodes today is a warning, and
the trials' pending requests make the autoscaler add nodes. When the cluster declares a `clusterer`
node type (or --clusterer-resource), every trial's ClusteringActor runs there, the sweep waiting for
that node up to --placement-timeout seconds.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ray_reid.cli.flags import DEFAULT_CONFIG, add_config_arguments, config_from_args, setup_logging
from ray_reid.tuning.results import format_table
from ray_reid.tuning.space import (
    SCHEDULERS, SEARCHERS, SweepConfig, check_searchable, check_trial_workers, load_search_space, parse_param_flag,
    parse_search_space,
)

DEFAULT_SPACE = DEFAULT_CONFIG.parent / "tune_space.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ray-reid tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, exclude=("storage-path", "name"))
    parser.add_argument("--space", type=Path, default=None,
                        help=f"search space YAML (default: {DEFAULT_SPACE.name} beside the default config, "
                             "unless --param)")
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
    parser.add_argument("--out", default=None,
                        help="folder or s3://bucket/prefix for the table, best config and pictures (default: the "
                             "sweep folder, in the bucket when --storage-path is s3://)")
    parser.add_argument("--max-cluster-gpus", type=float, default=None,
                        help="the most GPUs the cluster can scale to, for admitting the sweep when no autoscaler "
                             "config says (a cluster smaller today is a warning, not a refusal)")
    parser.add_argument("--resume-errored", action="store_true", help="on resume, also retry errored trials")
    parser.add_argument("--sampler-seed", type=int, default=None, help="seed of the Optuna sampler")
    return parser


def parse(argv: Sequence[str] | None = None):
    """``(base TrainConfig, search space, SweepConfig, args)``; a bad value exits before Ray starts."""
    args = build_parser().parse_args(argv)
    # ASHA compares fresh mAP at every rung: evaluate every epoch unless told otherwise
    cfg = config_from_args(args, defaults={"run.eval_every": 1})
    try:
        space = {}
        if args.space is not None or not args.param:
            space.update(load_search_space(args.space or DEFAULT_SPACE))
        if args.param:
            space.update(parse_search_space(dict(parse_param_flag(p) for p in args.param), source="--param"))
        sweep = SweepConfig(name=args.sweep_name, storage_path=args.storage_path, num_samples=args.num_samples,
                            max_concurrent_trials=args.max_concurrent_trials, search=args.search,
                            scheduler=args.scheduler, grace_period=args.grace_period,
                            reduction_factor=args.reduction_factor, clusterer_cpus=args.clusterer_cpus,
                            clusterer_gpus=args.clusterer_gpus, resume_errored=args.resume_errored,
                            seed=args.sampler_seed, max_cluster_gpus=args.max_cluster_gpus)
        check_searchable(space, sweep.search)  # a space the searcher cannot use fails before Ray starts
        check_trial_workers(cfg)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    return cfg, space, sweep, args


def main(argv: Sequence[str] | None = None) -> int:
    cfg, space, sweep, args = parse(argv)
    setup_logging(args.verbose, "tune")
    from ray_reid import run

    outcome = run.sweep(cfg, space, sweep, out=args.out)
    print(format_table(outcome.rows, space))
    if outcome.best is not None:
        print(f"\nbest trial {outcome.best['trial_id']}: final mAP {100 * outcome.best['final_mAP']:.1f}% "
              f"({', '.join(f'{k}={outcome.best[k]}' for k in space)})")
    for kind, path in outcome.files.items():
        print(f"{kind}: {path}")
    errored = [r for r in outcome.rows if r["status"] == "ERROR"]
    return 1 if errored and len(errored) == len(outcome.rows) else 0
