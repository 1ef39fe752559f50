"""Embed crops with a trained model: `python jobs/embed.py RUN_OR_CHECKPOINT --images DIR --out DIR`.

A Ray Data pipeline (read, decode and resize on CPU, the model in an actor pool: one actor per
GPU with AMP, or per CPU slot) writes Parquet shards of (path, camera when the file name carries
one, one embedding column per view) into --out, with _embed.json (what was embedded, by which
model) and _summary.json (totals, undecodable files). Every path may be local or s3://.
Interrupted? Run the same command again: complete shards are kept, only the missing ones are
written. Undecodable files are counted and listed, not fatal unless --strict.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ray_reid.cli.flags import command_parser, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("ray-reid embed", __doc__)
    parser.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT", help="run or checkpoint folder, or s3:// URI")
    parser.add_argument("--images", required=True, help="folder (searched recursively) or s3:// prefix of crops")
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix for the shards")
    parser.add_argument("--shard-size", type=int, default=1024, help="images per Parquet shard (default 1024)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per model batch (default 64)")
    parser.add_argument("--actors", type=int, default=None,
                        help="model actors (default: one per GPU, else one per CPU slot but one)")
    parser.add_argument("--strict", action="store_true", help="stop at the first undecodable file")
    parser.add_argument("--in-process", action="store_true", help="run in this process, without Ray")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from ray_reid import run
    from ray_reid.data.image_folder import BadImageError
    from ray_reid.inference.embedding import EmbedConfig

    try:
        cfg = EmbedConfig(shard_size=args.shard_size, batch_size=args.batch_size, actors=args.actors,
                          strict=args.strict)
        summary = run.embed(args.checkpoint, args.images, args.out, cfg, s3_endpoint=args.s3_endpoint,
                            in_process=args.in_process)
    except (FileNotFoundError, ValueError, BadImageError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{summary.num_images} crops in {summary.num_shards} shards at {summary.out}: {summary.shards_written} "
          f"written now, {summary.shards_skipped} kept from before; {len(summary.bad)} undecodable; "
          f"{summary.images_per_s:.1f} images/s")
    return 0
