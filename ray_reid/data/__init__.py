"""Datasets: readers behind a name registry, record types, Parquet manifests."""

from ray_reid.data import cuhk03, market, msmt17  # noqa: F401  (importing registers the readers)
from ray_reid.data.manifest import read_manifest, verify_manifest, write_manifest
from ray_reid.data.records import ImageRecord, ReidDataset
from ray_reid.data.registry import available_datasets, load_dataset, register_dataset

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
