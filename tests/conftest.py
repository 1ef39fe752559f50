"""Fixtures shared across the suite: one Ray session, one tiny synthetic dataset on disk."""

from __future__ import annotations

import os
import sys
import threading
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/s3_server.py, tests/reid_checkpoint.py

from ports import free_port  # noqa: E402
from reid_checkpoint import write_reid_checkpoint  # noqa: E402

S3_BUCKET = "reid-data"


@pytest.fixture(scope="session")
def ray_session():
    """A private local Ray for the whole session (startup costs ~7 s on 2 cores: pay it once)."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from s3_server import DUMMY_ENV

    # Workers and actors see the environment of ray.init time only: the loopback S3 tests need
    # the dummy credentials there (the endpoint travels in the config, run.s3_endpoint).
    # The dashboard (loopback only) is what lets Ray Train free a stopped trial's placement group.
    ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=free_port(), log_to_driver=True,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", **DUMMY_ENV}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_synthetic_root(tmp_path_factory):
    """A real JPEG dataset in the Market-1501 layout, small enough for a training test."""
    from ray_reid.data.synthetic import SyntheticConfig, generate_dataset

    root = tmp_path_factory.mktemp("synthetic") / "tiny"
    generate_dataset(root, SyntheticConfig(ids=16, cams=3, seed=0, height=32, width=16))
    return root


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint on loopback (moto's server, as a subprocess stopped by its own pid)."""
    pytest.importorskip("moto.server")
    from s3_server import S3Server

    with S3Server() as server:
        # moto logs every request to the stderr pipe S3Server keeps for its startup error; unread,
        # the pipe fills after a few hundred requests (a training run) and the server blocks.
        threading.Thread(target=server.process.stderr.read, daemon=True, name="moto-stderr-drain").start()
        yield server


@pytest.fixture()
def s3(s3_server):
    """A clean server, dummy credentials in the environment, one empty bucket and a client."""
    from ray_reid.storage import s3_client

    s3_server.reset()
    with s3_server.environment():
        client = s3_client()
        client.create_bucket(Bucket=S3_BUCKET)
        yield types.SimpleNamespace(client=client, bucket=S3_BUCKET, endpoint=s3_server.endpoint_url)


@pytest.fixture(scope="session")
def reid_checkpoint(tmp_path_factory):
    """A ResNet-18 checkpoint (global view, 32×16 input) to embed, search and export with."""
    return write_reid_checkpoint(tmp_path_factory.mktemp("ckpt") / "run" / "checkpoint_000000")
