"""Search embedded crops: `python jobs/search.py INDEX QUERY_IMAGES --top-k K [--rerank] [--skip-same-camera]`.

INDEX is an embedding folder written by `embed`; QUERY_IMAGES a folder or s3:// prefix of crops
(embedded here with the index's model) or another embedding folder. Writes results.csv and
results.json (the top K gallery crops of every query: path, camera, distance) and rank_list.png
(the first --plot queries with their hits) into --out. --skip-same-camera drops hits from the
query's own camera (the re-ID question: where *else* was this person). --rerank ranks by the
k-reciprocal re-ranked distance (Zhong et al., CVPR'17). --evaluate adds metrics.json (mAP,
CMC; Market-1501 protocol) when the file names carry person ids and cameras.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ray_reid.cli.flags import add_rerank_arguments, command_parser, rerank_from_args, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("ray-reid search", __doc__)
    parser.add_argument("index", metavar="INDEX", help="embedding folder (or s3:// prefix) written by embed")
    parser.add_argument("queries", metavar="QUERY_IMAGES", help="folder / s3:// prefix of crops, or an embedding folder")
    parser.add_argument("--top-k", type=int, default=10, help="hits per query (default 10)")
    parser.add_argument("--out", default=None, help="output folder or s3:// prefix (default: <INDEX>/search)")
    parser.add_argument("--skip-same-camera", action="store_true", help="drop hits from the query's camera")
    add_rerank_arguments(parser, "rank by k-reciprocal re-ranking")
    parser.add_argument("--index-kind", choices=("auto", "flat", "ivfpq"), default="auto",
                        help="faiss index: flat (exact), ivfpq (millions of rows), auto (flat up to 2M rows)")
    parser.add_argument("--nlist", type=int, default=None, help="IVF cells (default 4*sqrt(N))")
    parser.add_argument("--nprobe", type=int, default=32, help="IVF cells visited per query")
    parser.add_argument("--pq-m", type=int, default=32, help="PQ bytes per row")
    parser.add_argument("--evaluate", action="store_true", help="also write mAP/CMC (ids and cameras from names)")
    parser.add_argument("--model", default=None, help="checkpoint to embed queries with (default: the index's)")
    parser.add_argument("--plot", type=int, default=8, help="queries in rank_list.png (0: none)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from ray_reid import run
    from ray_reid.inference.search import IndexConfig

    out = args.out or f"{args.index.rstrip('/')}/search"
    try:
        rerank = rerank_from_args(args)
        index_cfg = IndexConfig(kind=args.index_kind, nlist=args.nlist, nprobe=args.nprobe, pq_m=args.pq_m)
        result = run.search(args.index, args.queries, out, k=args.top_k, skip_same_camera=args.skip_same_camera,
                            rerank=rerank, evaluate=args.evaluate, index_cfg=index_cfg, model=args.model,
                            plot_queries=args.plot, s3_endpoint=args.s3_endpoint)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{len(result.query_paths)} queries x {len(result.gallery_paths)} gallery crops, top {args.top_k}: "
          f"results.csv, results.json, rank_list.png in {out}")
    if result.metrics:
        m = result.metrics
        print(f"mAP {100 * m['mAP']:.1f}%  rank-1 {100 * m['rank1']:.1f}%  rank-5 {100 * m['rank5']:.1f}%  "
              f"rank-10 {100 * m['rank10']:.1f}%")
    return 0
