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

from ray_reid.cli.flags import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ray-reid evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT", help="run or checkpoint folder, or s3:// URI")
    parser.add_argument("--dataset", default=None, help="evaluate on another dataset than the run's")
    parser.add_argument("--data-root", default=None, help="its folder or s3:// prefix")
    parser.add_argument("--out", default=None, help="output folder or s3:// prefix (default: <checkpoint>/eval)")
    parser.add_argument("--max-tsne-points", type=int, default=2000)
    parser.add_argument("--rerank", action="store_true", help="also report k-reciprocal re-ranked mAP/CMC")
    parser.add_argument("--rerank-k1", type=int, default=20, help="re-ranking k1 (default 20)")
    parser.add_argument("--rerank-k2", type=int, default=6, help="re-ranking k2 (default 6)")
    parser.add_argument("--rerank-lambda", type=float, default=0.3, help="re-ranking lambda (default 0.3)")
    parser.add_argument("--s3-endpoint", default=None, help="custom S3 endpoint (MinIO, Ceph, ...)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, "evaluate")
    from ray_reid import run
    from ray_reid.eval.rerank import RerankConfig

    rerank = None
    if args.rerank:
        try:
            rerank = RerankConfig(k1=args.rerank_k1, k2=args.rerank_k2, lambda_value=args.rerank_lambda)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
    try:
        run.evaluate(args.checkpoint, out=args.out, dataset=args.dataset, data_root=args.data_root,
                     max_tsne_points=args.max_tsne_points, s3_endpoint=args.s3_endpoint, rerank=rerank)
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None
    return 0
