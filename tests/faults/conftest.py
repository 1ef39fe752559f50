"""Fixtures of the fault-injection tests (helpers live in fault_helpers.py, importable by tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from fault_helpers import tiny_overrides

from ray_reid.config import TrainConfig, config_from_dict


@pytest.fixture
def make_cfg(tiny_synthetic_root, tmp_path) -> Callable[..., TrainConfig]:
    """``make_cfg(name, **dotted_overrides)``: a tiny config writing under ``tmp_path/runs``."""

    def make(name: str = "fault", root: Path | None = None, **extra) -> TrainConfig:
        return config_from_dict({}, tiny_overrides(root or tiny_synthetic_root, tmp_path / "runs", name, **extra))

    return make
