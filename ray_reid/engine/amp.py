"""Mixed precision on GPUs only: which dtype autocast uses, and the loss scaler fp16 needs.

``optim.amp`` speeds up the GPU nodes (tensor cores, half the activation memory). On a CPU it
changes nothing: bf16 autocast there is slower than float32 on most CPUs and would make a CPU
run's numbers differ from the same run without the flag, so a laptop or CI run stays exact.
bf16 keeps float32's exponent range and needs no loss scaling; GPUs without it (V100, T4) get
fp16 with a ``GradScaler`` so small gradients do not flush to zero.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch


def amp_dtype(device: torch.device | str, enabled: bool) -> torch.dtype | None:
    """The autocast dtype for ``device``: None (float32) off a GPU or when AMP is off."""
    device = torch.device(device)
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device | str, enabled: bool) -> ContextManager:
    """``torch.autocast`` with :func:`amp_dtype`, or a no-op where that is None."""
    dtype = amp_dtype(device, enabled)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def grad_scaler(device: torch.device | str, enabled: bool) -> torch.amp.GradScaler:
    """A loss scaler that is active only for fp16 autocast (bf16 and float32 need none)."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device, enabled) == torch.float16)
