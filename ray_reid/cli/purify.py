"""Learning to Purification end to end: `python jobs/purify.py [train flags] [--teacher-epochs N] [--student-epochs N]`.

Stage 1 trains the teacher `<name>-teacher` (multi-view unless --views says otherwise); stage 2
trains a freshly initialised student `<name>-student` of the same architecture that distils from
it; as in the public code, the student first trains one epoch on the teacher's labels at
`optim.teacher_epoch_iters` (2) x iterations, then its --student-epochs of its own. Both runs' summaries are printed side by side and written to `<storage>/<name>-purify.json`.
Every flag of train applies to both stages, and --storage-path may be local or s3://; an already
finished teacher run with the same name is reused (resume semantics).

`--recipe market1501` (or msmt17) runs LP as published: the teacher recipe
jobs/configs/purification_teacher_<dataset>.yaml, then the student recipe
jobs/configs/purification_student_<dataset>.yaml; the flags apply on top of both.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ray_reid.cli.flags import add_config_arguments, config_from_args, config_overrides, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ray-reid purify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, exclude=("teacher",))
    parser.add_argument("--recipe", default=None, metavar="DATASET",
                        help="run Learning to Purification as published for DATASET (market1501 or msmt17): "
                             "teacher recipe, then student recipe, instead of --config")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="epochs of the teacher (default: --epochs)")
    parser.add_argument("--student-epochs", type=int, default=None, help="epochs of the student (default: --epochs)")
    return parser


def recipe_configs(args: argparse.Namespace):
    """(teacher, student) configs of the published LP recipe for ``args.recipe``, flags on top of both."""
    from ray_reid.recipes import load_recipe, purification_recipes

    try:
        teacher_name, student_name = purification_recipes(args.recipe)
        overrides = config_overrides(args)
        return load_recipe(teacher_name, overrides), load_recipe(student_name, overrides)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    student_cfg = None
    if args.recipe:
        if args.config:
            raise SystemExit("error: give --recipe or --config, not both")
        cfg, student_cfg = recipe_configs(args)
    else:
        cfg = config_from_args(args, defaults={"model.views": "global+parts"})
    setup_logging(args.verbose, "purify")
    from ray_reid import run

    result = run.purify(cfg, teacher_epochs=args.teacher_epochs, student_epochs=args.student_epochs,
                        student_cfg=student_cfg)
    print(f"\n{result.table()}\ncomparison: {result.comparison}")
    return 0
