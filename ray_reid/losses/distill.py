"""Feature distillation from an offline teacher (Learning to Purification, DESIGN.md §5)."""

from __future__ import annotations

import torch


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``‖student - teacher‖²``; the teacher gets no gradient.

    Detaching here, not at the call site, means a teacher accidentally run with grad enabled
    still cannot be trained by the student's loss.
    """
    if student.shape != teacher.shape or student.ndim != 2:
        raise ValueError(
            f"student and teacher features must both be [B, D], got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    return (student - teacher.detach().to(student.dtype)).pow(2).sum(dim=1).mean()
