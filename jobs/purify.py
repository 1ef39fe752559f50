"""Learning to Purification end to end: `python jobs/purify.py [train.py flags]`.

Stage 1 trains the teacher (multi-view by default); stage 2 trains a freshly initialised
student of the same architecture that distils from it. Both runs' summaries are printed side
by side and written to `<storage>/<name>-purify.json`. Every flag of jobs/train.py applies to
both stages; `--teacher-epochs` / `--student-epochs` override the epochs per stage, and an
already finished teacher run with the same name is reused (resume semantics).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import train as train_job  # noqa: E402  (jobs/train.py)

from ray_reid.config import config_from_dict  # noqa: E402

COMPARED = ("mAP", "rank1", "rank5", "rank10", "n_clusters", "ari", "nmi", "epochs", "wall_seconds")


def stage_config(cfg, *, name: str, epochs: int | None, teacher: str | None):
    raw = cfg.to_dict()
    raw["run"]["name"] = name
    raw["run"]["teacher"] = teacher
    if epochs is not None:
        raw["optim"]["epochs"] = epochs
    return config_from_dict(raw)


def main(argv: list[str] | None = None) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--teacher-epochs", type=int, default=None)
    extra.add_argument("--student-epochs", type=int, default=None)
    ours, rest = extra.parse_known_args(argv)
    if "--views" not in rest and not any(a.startswith("--views=") for a in rest):
        rest = ["--views", "global+parts", *rest]
    cfg, args = train_job.parse_config(rest)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base = cfg.run.name
    storage = Path(cfg.run.storage_path).expanduser().resolve()
    teacher_cfg = stage_config(cfg, name=f"{base}-teacher", epochs=ours.teacher_epochs, teacher=None)
    teacher_summary = train_job.run_training(teacher_cfg)
    student_cfg = stage_config(cfg, name=f"{base}-student", epochs=ours.student_epochs,
                               teacher=str(storage / teacher_cfg.run.name))
    student_summary = train_job.run_training(student_cfg)

    from ray_reid.engine.checkpoint import write_json

    comparison = {"teacher": teacher_summary, "student": student_summary}
    write_json(storage / f"{base}-purify.json", comparison)
    print(f"\n{'':14}{'teacher':>12}{'student':>12}")
    for key in COMPARED:
        t, s = teacher_summary.get(key), student_summary.get(key)
        fmt = (lambda v: f"{100 * v:11.1f}%") if key in ("mAP", "rank1", "rank5", "rank10") else (
            lambda v: f"{v:12.3f}" if isinstance(v, float) else f"{v!s:>12}")
        print(f"{key:14}{fmt(t) if t is not None else '-':>12}{fmt(s) if s is not None else '-':>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
