"""Per-epoch embeddings and pseudo-labels as Parquet, on local disk or S3.

One row per training image, so an epoch's clustering can be inspected or replayed offline
(t-SNE, purity against true ids, re-running a clusterer) without the model. Each view is a
fixed-size-list float32 column: readers get an (N, d) array back without guessing shapes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_reid.storage.s3 import is_s3_uri, pyarrow_filesystem

log = logging.getLogger(__name__)

RESERVED_COLUMNS = ("index", "label", "epoch")


def embeddings_table(indices, features: Mapping[str, np.ndarray], labels, epoch: int) -> pa.Table:
    """A table with ``index`` (int64), ``label`` (int64, -1 = outlier), ``epoch`` (int32) and one
    ``fixed_size_list<float32>[d]`` column per view, in the order ``features`` gives them."""
    indices = np.asarray(indices)
    labels = np.asarray(labels)
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be a 1-D integer array, got shape {indices.shape} dtype {indices.dtype}")
    n = len(indices)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array of length {n} (one per index), "
                         f"got shape {labels.shape} dtype {labels.dtype}")
    if not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
    if not features:
        raise ValueError("features must hold at least one view, e.g. {'global': array of shape (N, d)}")
    columns: dict[str, pa.Array] = {
        "index": pa.array(indices.astype(np.int64, copy=False)),
        "label": pa.array(labels.astype(np.int64, copy=False)),
        "epoch": pa.array(np.full(n, int(epoch), dtype=np.int32)),
    }
    for view, array in features.items():
        if not isinstance(view, str) or not view or view in RESERVED_COLUMNS:
            raise ValueError(f"view name {view!r} is invalid: use a non-empty string other than {RESERVED_COLUMNS}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] != n or array.shape[1] < 1:
            raise ValueError(f"features[{view!r}] must have shape ({n}, d) with d >= 1, got {array.shape}")
        columns[view] = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), array.shape[1])
    return pa.table(columns)


def write_parquet_table(table: pa.Table, uri_or_path: str | os.PathLike, *, endpoint_url: str | None = None,
                        compression: str = "zstd") -> str:
    """Write ``table`` as one Parquet file that appears whole or not at all; return where it went.

    The file is always encoded into a local temp file first, so an encoding error never
    touches the destination. Locally it is then renamed into place; on S3 it is copied
    through the pyarrow filesystem Ray Train uses, whose upload only becomes visible as a
    complete object when it is finished.
    """
    if not isinstance(table, pa.Table):
        raise ValueError(f"table must be a pyarrow.Table, got {type(table).__name__}")
    text = os.fspath(uri_or_path)
    if is_s3_uri(text):
        from pyarrow import fs as pafs

        filesystem, path = pyarrow_filesystem(text, endpoint_url)
        if path.count("/") < 1 or text.endswith("/"):
            raise ValueError(f"S3 destination must name an object (s3://bucket/key.parquet), got {text!r}")
        with tempfile.TemporaryDirectory(prefix="ray_reid_parquet_") as tmpdir:
            local = os.path.join(tmpdir, "table.parquet")
            pq.write_table(table, local, compression=compression)
            pafs.copy_files(local, path, destination_filesystem=filesystem)
        log.info("wrote %d rows to %s", table.num_rows, text)
        return text
    if "://" in text:
        raise ValueError(f"unsupported destination {text!r}: use a local path or s3://bucket/key")
    dest = Path(text).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression=compression)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("wrote %d rows to %s", table.num_rows, dest)
    return str(dest)


def read_parquet_table(uri_or_path: str | os.PathLike, *, endpoint_url: str | None = None) -> pa.Table:
    """Read back what :func:`write_parquet_table` wrote, from a local path or S3."""
    text = os.fspath(uri_or_path)
    if is_s3_uri(text):
        filesystem, path = pyarrow_filesystem(text, endpoint_url)
        return pq.read_table(path, filesystem=filesystem)
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no Parquet file at {path}")
    return pq.read_table(path)


def view_array(table: pa.Table, view: str) -> np.ndarray:
    """The (N, d) float32 array of one view column of an :func:`embeddings_table`."""
    if view not in table.column_names or view in RESERVED_COLUMNS:
        valid = [c for c in table.column_names if c not in RESERVED_COLUMNS]
        raise ValueError(f"no view {view!r} in the table; valid views: {valid}")
    column = table.column(view).combine_chunks()
    if not pa.types.is_fixed_size_list(column.type):
        raise ValueError(f"column {view!r} is {column.type}, not a fixed-size list of floats")
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
