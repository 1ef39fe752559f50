"""Choose NumPy or CuPy at run time, so one array code path serves CPU and GPU.

``cupy-cuda*`` imports fine on a machine without a GPU and only fails at first use, so
availability is probed by actually touching the device once.
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

VALID_DEVICES = ("auto", "cpu", "cuda")


@functools.cache
def cupy_available() -> bool:
    """True when CuPy imports *and* can allocate on a CUDA device."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False
        cupy.zeros(1).sum().item()
    except Exception as exc:  # any CUDA/driver error means "no usable GPU"
        log.debug("CuPy present but unusable (%s); using NumPy", exc)
        return False
    return True


def get_xp(device: str = "auto") -> ModuleType:
    """The array module for ``device`` ('auto' = CuPy when a GPU is usable, else NumPy)."""
    if device not in VALID_DEVICES:
        raise ValueError(f"device must be one of {VALID_DEVICES}, got {device!r}")
    if device == "cpu":
        return np
    if cupy_available():
        import cupy

        return cupy
    if device == "cuda":
        raise ValueError("device='cuda' was requested but no usable CuPy/CUDA device was found")
    return np


def array_module(x: Any) -> ModuleType:
    """The module (numpy or cupy) that owns array ``x``."""
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def to_numpy(x: Any) -> np.ndarray:
    """Host copy of a NumPy or CuPy array."""
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(x)
