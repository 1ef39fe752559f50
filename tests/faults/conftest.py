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


@pytest.fixture(scope="session")
def s3_server():
    """The shared loopback S3 server, with its stderr drained.

    ``tests/s3_server.py`` pipes moto's stderr and never reads it; moto logs every request there, so
    after ~64 KiB of log (a few hundred requests) the server blocks on the full pipe and every client
    hangs. These tests send thousands of requests, so a thread keeps the pipe empty.
    """
    import threading

    pytest.importorskip("moto.server")
    from s3_server import S3Server

    with S3Server() as server:
        drain = threading.Thread(target=lambda: server.process.stderr.read(), daemon=True,
                                 name="moto-stderr-drain")
        drain.start()
        yield server
