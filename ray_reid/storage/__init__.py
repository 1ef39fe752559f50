"""Datasets, weights and run outputs on S3 (or any S3-compatible endpoint) and local disk.

No Ray here: the orchestration layer passes :func:`pyarrow_filesystem`'s result to Ray
Train, and everything else is plain boto3 / pyarrow, testable against a loopback server.
"""

from ray_reid.storage.bookkeeping import is_bookkeeping_name
from ray_reid.storage.cache import fetch_file, fetch_prefix
from ray_reid.storage.s3 import (
    is_s3_uri,
    parse_s3_uri,
    pyarrow_filesystem,
    resolve_endpoint,
    resolve_region,
    s3_client,
    upload_dir,
    upload_file,
    use_endpoint,
)
from ray_reid.storage.tables import embeddings_table, read_parquet_table, view_array, write_parquet_table

__all__ = [
    "embeddings_table",
    "fetch_file",
    "fetch_prefix",
    "is_bookkeeping_name",
    "is_s3_uri",
    "parse_s3_uri",
    "pyarrow_filesystem",
    "read_parquet_table",
    "resolve_endpoint",
    "resolve_region",
    "s3_client",
    "upload_dir",
    "upload_file",
    "use_endpoint",
    "view_array",
    "write_parquet_table",
]
