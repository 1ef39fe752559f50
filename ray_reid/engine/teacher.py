"""The offline teacher of Learning to Purification: a finished run's checkpoint, frozen.

The student must have the same backbone and views as its teacher (distillation compares the
features view by view), so a mismatch is refused before any training starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ray_reid import locations
from ray_reid.engine.checkpoint import META_FILE, _read_json, load_checkpoint
from ray_reid.models import ModelConfig, build_model

log = logging.getLogger(__name__)


class TeacherMismatchError(ValueError):
    """The teacher checkpoint's architecture cannot teach this student."""


def teacher_checkpoint(path_or_uri: str) -> Path:
    """Local folder of the teacher's checkpoint; a run folder (local or S3) means its latest registered one."""
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
