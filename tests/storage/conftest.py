"""A loopback S3 server shared by the storage tests, and a tiny real dataset to put on it."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from s3_server import S3Server  # noqa: E402

BUCKET = "reid-data"


@pytest.fixture(scope="session")
def s3_server():
    pytest.importorskip("moto.server")
    with S3Server() as server:
        yield server


@pytest.fixture()
def s3(s3_server):
    """A clean server, dummy credentials in the environment, one empty bucket and a client."""
    from ray_reid.storage import s3_client

    s3_server.reset()
    with s3_server.environment():
        client = s3_client()
        client.create_bucket(Bucket=BUCKET)
        yield types.SimpleNamespace(client=client, bucket=BUCKET, endpoint=s3_server.endpoint_url)


@pytest.fixture(scope="session")
def market_tree(tmp_path_factory):
    from ray_reid.data.synthetic import SyntheticConfig, generate_dataset

    root = tmp_path_factory.mktemp("storage_synthetic") / "market"
    generate_dataset(root, SyntheticConfig(ids=8, cams=2, seed=0, height=32, width=16))
    return root
