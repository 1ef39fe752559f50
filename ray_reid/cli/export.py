"""Export a trained run's inference graph: `python jobs/export.py RUN_OR_CHECKPOINT --format onnx|torchscript [--out DIR]`.

The graph takes RGB pixels in [0, 1] (NCHW, the run's input size, any batch size) and returns
the L2-normalised global embedding; it is checked against the PyTorch model on a batch and
written only if the largest absolute difference is within 1e-4 (printed). RUN and --out may be
local paths or s3:// URIs; a run folder means its newest complete checkpoint.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ray_reid.cli.flags import command_parser, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("ray-reid export", __doc__)
    parser.add_argument("run", help="run folder, checkpoint folder, or s3:// prefix of either")
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    parser.add_argument("--out", default=None, help="folder, file (model.onnx / model.pt) or s3:// prefix "
                                                     "(default: <run>/export)")
    parser.add_argument("--check-batch", type=int, default=5, help="images in the PyTorch comparison batch")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, "export")
    from ray_reid.inference.export import export_model

    out = args.out or f"{args.run.rstrip('/')}/export"
    try:
        result = export_model(args.run, out, args.format, check_batch=args.check_batch,
                              endpoint_url=args.s3_endpoint)
    except (FileNotFoundError, ValueError, RuntimeError, ImportError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{result.format} written to {result.path}; max abs diff vs PyTorch on a batch of "
          f"{result.check_batch}: {result.max_abs_diff:.2e}")
    return 0
