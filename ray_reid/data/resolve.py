"""Turn a data config into a dataset on local disk, generating the embedded synthetic set on first use.

Several workers on one node may ask at once: a file lock (the S3 cache's) makes exactly one
of them generate, and the generator itself writes into a temp folder and renames, so no worker ever reads a
half-written tree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

from ray_reid.data.records import ReidDataset

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Root of ray-reid's local cache (``RAY_REID_CACHE`` or ``~/.cache/ray_reid``)."""
    return Path(os.environ.get("RAY_REID_CACHE", Path.home() / ".cache" / "ray_reid")).expanduser()


def default_synthetic_root() -> Path:
    """Folder of the embedded synthetic set, named by a hash of its generator config."""
    from ray_reid.data.synthetic import DEFAULT_CONFIG, GENERATOR_VERSION

    blob = json.dumps({"config": dataclasses.asdict(DEFAULT_CONFIG), "generator": GENERATOR_VERSION},
                      sort_keys=True, default=str).encode()
    return cache_dir() / "datasets" / f"synthetic-default-{hashlib.sha256(blob).hexdigest()[:10]}"


def ensure_default_synthetic() -> Path:
    """Generate the embedded synthetic set into the cache unless it is already there."""
    from ray_reid.data.synthetic import DEFAULT_CONFIG, generate_dataset

    root = default_synthetic_root()
    from ray_reid.storage.cache import file_lock

    with file_lock(root.with_name(root.name + ".lock")):
        if not (root / "summary.json").is_file():
            log.info("generating the embedded synthetic dataset into %s", root)
            generate_dataset(root, DEFAULT_CONFIG)
    return root


def resolve_root(dataset: str, root: str | None) -> Path:
    """Local folder holding ``dataset`` (S3 prefixes are fetched into the cache by ray_reid.storage)."""
    if root is None:
        if dataset != "synthetic":
            raise ValueError(f"data.root is required for dataset {dataset!r}")
        return ensure_default_synthetic()
    if root.startswith("s3://"):
        from ray_reid.storage import fetch_prefix

        return fetch_prefix(root, cache_dir() / "s3")
    return Path(root).expanduser()


def load_configured_dataset(dataset: str, root: str | None) -> ReidDataset:
    from ray_reid.data import load_dataset

    return load_dataset(dataset, resolve_root(dataset, root))
