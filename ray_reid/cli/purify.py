"""Learning to Purification end to end: `python jobs/purify.py [train flags] [--teacher-epochs N] [--student-epochs N]`.

Stage 1 trains the teacher `<name>-teacher` (multi-view unless --views says otherwise); stage 2
trains a freshly initialised student `<name>-student` of the same architecture that distils from
it. Both runs' summaries are printed side by side and written to `<storage>/<name>-purify.json`.
Every flag of train applies to both stages, and --storage-path may be local or s3://; an already
finished teacher run with the same name is reused (resume semantics).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ray_reid.cli.flags import add_config_arguments, config_from_args, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ray-reid purify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, exclude=("teacher",))
    parser.add_argument("--teacher-epochs", type=int, default=None, help="epochs of the teacher (default: --epochs)")
    parser.add_argument("--student-epochs", type=int, default=None, help="epochs of the student (default: --epochs)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args, defaults={"model.views": "global+parts"})
    setup_logging(args.verbose)
    from ray_reid import run

    result = run.purify(cfg, teacher_epochs=args.teacher_epochs, student_epochs=args.student_epochs)
    print(f"\n{result.table()}\ncomparison: {result.comparison}")
    return 0
