"""Train an unsupervised re-ID model: `python jobs/train.py [--config FILE] [flags] [--set k=v ...]`.

With no arguments it trains on the embedded synthetic dataset (generated into the cache on first
use) with settings sized for a 2-core machine. With RAY_ADDRESS set (as `ray job submit` does) it
joins that cluster; otherwise it starts a private local Ray. Rerunning the same --name and
--storage-path resumes after the latest checkpoint.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ray_reid.cli.flags import add_config_arguments, config_from_args, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ray-reid train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--recipe", default=None, metavar="NAME",
                        help="a published recipe instead of --config (e.g. cluster_contrast_market1501; "
                             "see jobs/configs/ and README 'Reproducing the papers')")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.recipe and args.config:
        raise SystemExit("error: give --recipe or --config, not both")
    cfg = config_from_args(args)
    setup_logging(args.verbose, "train")
    from ray_reid import run

    run.train(cfg)
    return 0
