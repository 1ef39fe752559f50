"""A tiny real dataset to put on the loopback S3 server (fixtures `s3_server`/`s3` live in tests/conftest.py)."""

from __future__ import annotations

import pytest

@pytest.fixture(scope="session")
def market_tree(tmp_path_factory):
    from ray_reid.data.synthetic import SyntheticConfig, generate_dataset

    root = tmp_path_factory.mktemp("storage_synthetic") / "market"
    generate_dataset(root, SyntheticConfig(ids=8, cams=2, seed=0, height=32, width=16))
    return root
