"""Datasets: readers behind a name registry, record types, Parquet manifests.

The manifest functions are re-exported lazily: they pull in pyarrow, which most consumers
of the readers never need, and ``python -m ray_reid.data.manifest`` must not find its own
module already imported by this package.
"""

from typing import Any

from ray_reid.data import cuhk03, market, msmt17  # noqa: F401  (importing registers the readers)
from ray_reid.data.records import ImageRecord, ReidDataset
from ray_reid.data.registry import available_datasets, load_dataset, register_dataset

_MANIFEST_EXPORTS = ("read_manifest", "verify_manifest", "write_manifest")

__all__ = [
    "ImageRecord",
    "ReidDataset",
    "available_datasets",
    "load_dataset",
    "read_manifest",
    "register_dataset",
    "verify_manifest",
    "write_manifest",
]


def __getattr__(name: str) -> Any:
    if name in _MANIFEST_EXPORTS:
        from ray_reid.data import manifest

        return getattr(manifest, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
