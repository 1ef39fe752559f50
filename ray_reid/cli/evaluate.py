"""Evaluate a checkpoint: `python jobs/evaluate.py RUN_OR_CHECKPOINT [--dataset D --data-root R] [--out DIR]`.

RUN_OR_CHECKPOINT is a run folder (its newest complete checkpoint is used) or one
`checkpoint_*` folder, local or `s3://bucket/prefix`. Writes metrics.json (mAP, rank-1/5/10,
clustering scores of the checkpoint's pseudo-labels), rank_list.png (queries with their top-10
gallery images, right/wrong marked) and embedding.png (t-SNE of training features coloured by
true id and by pseudo-label) into --out, by default `<checkpoint>/eval` (on S3 when the
checkpoint is). `--rerank` adds the k-reciprocal re-ranked figures (Zhong et al., CVPR'17;
k1 = 20, k2 = 6, lambda = 0.3 unless given) under "rerank" in metrics.json.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ray_reid.cli.flags import add_rerank_arguments, command_parser, rerank_from_args, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("ray-reid evaluate", __doc__)
    parser.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT", help="run or checkpoint folder, or s3:// URI")
    parser.add_argument("--dataset", default=None, help="evaluate on another dataset than the run's")
    parser.add_argument("--data-root", default=None, help="its folder or s3:// prefix")
    parser.add_argument("--out", default=None, help="output folder or s3:// prefix (default: <checkpoint>/eval)")
    parser.add_argument("--max-tsne-points", type=int, default=2000)
    add_rerank_arguments(parser, "also report k-reciprocal re-ranked mAP/CMC")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, "evaluate")
    from ray_reid import run

    rerank = rerank_from_args(args)
    try:
        run.evaluate(args.checkpoint, out=args.out, dataset=args.dataset, data_root=args.data_root,
                     max_tsne_points=args.max_tsne_points, s3_endpoint=args.s3_endpoint, rerank=rerank)
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None
    return 0
