"""The offline teacher of Learning to Purification: a finished run's checkpoint, frozen.

The student must have the same backbone and views as its teacher (distillation compares the
features view by view), so a mismatch is refused before any training starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ray_reid import locations
from ray_reid.config import TrainConfig
from ray_reid.engine.checkpoint import META_FILE, _read_json, load_checkpoint
from ray_reid.models import ModelConfig, build_model

log = logging.getLogger(__name__)


class TeacherMismatchError(ValueError):
    """The teacher checkpoint's architecture cannot teach this student."""


def teacher_checkpoint(path_or_uri: str) -> Path:
    """Local folder of the teacher's checkpoint; a run folder (local or S3) means its newest complete one."""
    try:
        return locations.local_checkpoint(path_or_uri)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"teacher checkpoint not found: {exc}") from exc


def check_teacher(path_or_uri: str, student: ModelConfig) -> Path:
    """Fail early (on the driver, before Ray starts anything) if the teacher cannot teach ``student``."""
    folder = teacher_checkpoint(path_or_uri)
    meta = _read_json(folder / META_FILE)
    try:
        teacher_cfg = ModelConfig(**meta["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TeacherMismatchError(f"teacher {folder}/{META_FILE} has no usable model description: {exc}") from exc
    for field in ("backbone", "views"):
        if getattr(teacher_cfg, field) != getattr(student, field):
            raise TeacherMismatchError(
                f"teacher {path_or_uri} has {field}={getattr(teacher_cfg, field)!r} but the student has "
                f"{field}={getattr(student, field)!r}; distillation needs the same architecture and views"
            )
    return folder


def teacher_schedule_offset(cfg: TrainConfig, path_or_uri: str) -> int:
    """How many steps a student's hierarchical schedule is ahead of its own ``cluster.first_step``.

    The HCT schedule asks for fewer clusters at every step; a student restarting it at step 0
    would receive near-singleton clusters (instance discrimination) from a teacher whose own
    last clustering was far coarser. So the student's clusterer continues where the teacher's
    ended: its epoch on the teacher's labels (``optim.teacher_epoch_iters`` > 0) clusters the
    teacher's features at the teacher's last step, its own epochs take the steps after it.
    Zero unless both runs use ``hc_sse`` with the ``hct`` schedule (DBSCAN and the threshold
    schedule carry no state between epochs).
    """
    if cfg.cluster.method != "hc_sse" or cfg.cluster.schedule != "hct":
        return 0
    folder = teacher_checkpoint(path_or_uri)
    meta = _read_json(folder / META_FILE)
    try:
        teacher_cluster = meta["config"]["cluster"]
        last_step = int(teacher_cluster.get("first_step", 0)) + int(meta["epoch"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TeacherMismatchError(f"teacher {folder}/{META_FILE} does not say its clustering schedule "
                                   f"(config.cluster, epoch): {exc}") from exc
    if teacher_cluster.get("method") != "hc_sse" or teacher_cluster.get("schedule", "hct") != "hct":
        return 0
    first_student_step = last_step if cfg.optim.teacher_epoch_iters > 0 else last_step + 1
    return max(0, first_student_step - cfg.cluster.first_step)


def load_teacher(path_or_uri: str, student: ModelConfig, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Build the teacher network from its checkpoint (weights_only), frozen and in eval mode."""
    folder = check_teacher(path_or_uri, student)
    loaded = load_checkpoint(folder, map_location="cpu")
    teacher = build_model(ModelConfig(**{**loaded["meta"]["model"], "pretrained": None}))  # weights come next
    teacher.load_state_dict(loaded["state"]["model"])
    teacher.requires_grad_(False)
    teacher.eval()
    log.info("teacher loaded from %s (epoch %s)", folder, loaded["state"]["epoch"])
    return teacher.to(device)
