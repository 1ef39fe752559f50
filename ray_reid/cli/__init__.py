"""Command lines: `ray-reid train|evaluate|purify|tune|export|embed|search ...`, and the same parsers behind `jobs/*.py`.

Each command is a parser around one function of :mod:`ray_reid.run`; the config flags they
share live in :mod:`ray_reid.cli.flags`. Commands are imported on use, so `ray-reid train`
never loads Ray Tune.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "train": "train a model (resumes a run of the same name)",
    "evaluate": "metrics, rank list and t-SNE of a run or checkpoint",
    "purify": "Learning to Purification: teacher, then a student distilling from it",
    "tune": "Ray Tune sweep; every trial a whole training",
    "export": "a trained run's inference graph as ONNX or TorchScript, checked against PyTorch",
    "embed": "embed a folder or S3 prefix of crops into Parquet shards (Ray Data)",
    "search": "top-k gallery crops for query crops (faiss), CSV/JSON and a rank-list PNG",
}


def main(argv: Sequence[str] | None = None) -> int:
    """``ray-reid COMMAND [args]``: dispatch to ``ray_reid.cli.<command>.main``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        usage = "\n".join(f"  {name:9} {text}" for name, text in COMMANDS.items())
        print(f"usage: ray-reid COMMAND [--help | args]\n\ncommands:\n{usage}",
              file=sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr)
        if argv and argv[0] in ("-h", "--help"):
            return 0
        return 2 if not argv else _unknown(argv[0])
    return importlib.import_module(f"ray_reid.cli.{argv[0]}").main(argv[1:])


def _unknown(command: str) -> int:
    print(f"ray-reid: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
    return 2
