"""Embeddings on disk or S3: a manifest, then one Parquet shard per fixed slice of the sorted image list.

Why shards of a fixed plan: a job over millions of crops will be interrupted. The plan
(sorted paths cut into ``shard_size`` slices) is a pure function of the listing, so a rerun
knows which shard holds which images; a shard appears whole or not at all (temp file then
rename locally, a single PUT on S3), so "the file exists and its row counts add up" means
done. A rerun only embeds what is missing.

Layout of an embedding folder::

    _embed.json          what was embedded, with which model, cut how (written first)
    part-000000.parquet  path (string), camera (int32, -1 = unknown), one float32 list per view;
    part-000001.parquet  undecodable files of the slice in the key-value metadata
    _summary.json        totals and the list of undecodable files (written last)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_reid.inference.model import InferenceSpec
from ray_reid.storage.s3 import is_s3_uri, pyarrow_filesystem
from ray_reid.validation import check_count

log = logging.getLogger(__name__)

MANIFEST = "_embed.json"
SUMMARY = "_summary.json"
FORMAT_VERSION = 1
BAD_KEY = b"ray_reid.bad_images"
SHARD_KEY = b"ray_reid.shard"
RESERVED = ("path", "camera")


@dataclass(frozen=True)
class ShardPlan:
    """Sorted image paths cut into consecutive slices of ``shard_size``."""

    paths: tuple[str, ...]
    shard_size: int

    def __post_init__(self) -> None:
        check_count("shard_size", self.shard_size)
        if not self.paths:
            raise ValueError("nothing to embed: the image list is empty")
        object.__setattr__(self, "paths", tuple(sorted(self.paths)))

    @property
    def num_shards(self) -> int:
        return -(-len(self.paths) // self.shard_size)

    def bounds(self, shard: int) -> tuple[int, int]:
        start = shard * self.shard_size
        return start, min(start + self.shard_size, len(self.paths))

    def shard_of(self, index: int) -> int:
        return index // self.shard_size

    @property
    def listing_sha256(self) -> str:
        return hashlib.sha256("\n".join(self.paths).encode()).hexdigest()


def shard_name(shard: int) -> str:
    return f"part-{shard:06d}.parquet"


class EmbeddingFolder:
    """A local folder or ``s3://`` prefix holding a manifest and shards, through one pyarrow filesystem."""

    def __init__(self, location: str | os.PathLike, *, endpoint_url: str | None = None) -> None:
        from pyarrow import fs as pafs

        self.location = os.fspath(location).rstrip("/") or "/"
        self.endpoint_url = endpoint_url
        filesystem, self.root = pyarrow_filesystem(self.location, endpoint_url)
        self.fs = filesystem or pafs.LocalFileSystem()
        self.is_s3 = is_s3_uri(self.location)

    def uri(self, name: str) -> str:
        return f"{self.location}/{name}"

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def exists(self, name: str) -> bool:
        from pyarrow import fs as pafs

        return self.fs.get_file_info(self._path(name)).type == pafs.FileType.File

    def names(self) -> list[str]:
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self.root, allow_not_found=True, recursive=False)
        return sorted(i.base_name for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File)

    def read_json(self, name: str) -> Any:
        with self.fs.open_input_stream(self._path(name)) as fh:
            return json.loads(fh.read().decode())

    def write_json(self, name: str, obj: Any) -> str:
        """Whole or not at all: temp then rename locally, one PUT on S3."""
        blob = json.dumps(obj, indent=2, default=float).encode()
        if self.is_s3:
            with self.fs.open_output_stream(self._path(name)) as fh:
                fh.write(blob)
        else:
            from ray_reid.atomic import atomic_write

            def _write(tmp: str) -> None:
                with open(tmp, "wb") as fh:
                    fh.write(blob)

            atomic_write(self._path(name), _write)
        return self.uri(name)

    def write_table(self, name: str, table: pa.Table) -> str:
        from ray_reid.storage import write_parquet_table

        return write_parquet_table(table, self.uri(name), endpoint_url=self.endpoint_url)

    def shard_rows(self, name: str) -> tuple[int, int] | None:
        """``(embedded rows, undecodable files)`` of a shard, or None when it is absent or unreadable."""
        try:
            meta = pq.read_metadata(self._path(name), filesystem=self.fs)
        except (OSError, pa.ArrowInvalid) as exc:
            if self.exists(name):
                log.warning("shard %s is unreadable (%s): it will be written again", self.uri(name), exc)
            return None
        kv = meta.metadata or {}
        bad = json.loads(kv.get(BAD_KEY, b"[]"))
        return meta.num_rows, len(bad)


def manifest_for(plan: ShardPlan, spec: InferenceSpec, source: str) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "images": source, "num_images": len(plan.paths),
            "listing_sha256": plan.listing_sha256, "shard_size": plan.shard_size, "num_shards": plan.num_shards,
            "model": spec.to_dict()}


def check_manifest(existing: Mapping[str, Any], wanted: Mapping[str, Any], where: str) -> None:
    """Refuse to mix shards of another image set, cut or model into ``where``."""
    checks = (("listing_sha256", "the image list (files added, removed or renamed)"),
              ("shard_size", "the shard size"),
              (("model", "weights_sha256"), "the model weights"),
              (("model", "height"), "the input height"), (("model", "width"), "the input width"))
    for key, what in checks:
        old, new = existing, wanted
        for part in (key if isinstance(key, tuple) else (key,)):
            old, new = (old or {}).get(part), (new or {}).get(part)
        if old != new:
            name = ".".join(key) if isinstance(key, tuple) else key
            raise ValueError(f"{where} already holds embeddings of another job: {what} changed ({name}: {old!r} -> "
                             f"{new!r}); pass another --out, or delete {where} to start again")


def shard_table(paths: Sequence[str], features: Mapping[str, np.ndarray], bad: Sequence[Mapping[str, str]],
                shard: int) -> pa.Table:
    """One shard: ``path``, ``camera`` and a fixed-size float32 list per view; bad files in the metadata."""
    from ray_reid.inference.images import cameras_of

    n = len(paths)
    columns: dict[str, pa.Array] = {"path": pa.array(list(paths), pa.string()),
                                    "camera": pa.array(cameras_of(paths), pa.int32())}
    for view, array in features.items():
        if view in RESERVED:
            raise ValueError(f"view name {view!r} clashes with a column name {RESERVED}")
        array = np.ascontiguousarray(array, dtype=np.float32).reshape(n, -1)
        columns[view] = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), array.shape[1])
    table = pa.table(columns)
    return table.replace_schema_metadata({BAD_KEY: json.dumps(list(bad)).encode(), SHARD_KEY: str(shard).encode()})


@dataclass(frozen=True)
class Embeddings:
    """Everything an embedding folder holds, in path order."""

    paths: np.ndarray
    cameras: np.ndarray
    features: dict[str, np.ndarray]
    bad: list[dict[str, str]]
    manifest: dict[str, Any]

    @property
    def spec(self) -> InferenceSpec:
        return InferenceSpec.from_dict(self.manifest["model"])

    def __len__(self) -> int:
        return len(self.paths)


def read_embeddings(location: str | os.PathLike, *, views: Sequence[str] | None = None,
                    endpoint_url: str | None = None) -> Embeddings:
    """Read a complete embedding folder; a missing shard is an error naming it (rerun ``embed`` to finish)."""
    folder = EmbeddingFolder(location, endpoint_url=endpoint_url)
    if not folder.exists(MANIFEST):
        raise FileNotFoundError(f"{folder.location} is not an embedding folder: no {MANIFEST} "
                                f"(make one with jobs/embed.py)")
    manifest = folder.read_json(MANIFEST)
    present = set(folder.names())
    missing = [shard_name(i) for i in range(manifest["num_shards"]) if shard_name(i) not in present]
    if missing:
        raise FileNotFoundError(f"{folder.location} is incomplete: {len(missing)} of {manifest['num_shards']} shards "
                                f"missing (first: {missing[0]}); rerun the same embed command to finish it")
    tables, bad = [], []
    for i in range(manifest["num_shards"]):
        table = pq.read_table(folder._path(shard_name(i)), filesystem=folder.fs)
        bad += json.loads((table.schema.metadata or {}).get(BAD_KEY, b"[]"))
        tables.append(table)
    table = pa.concat_tables(tables)
    all_views = [c for c in table.column_names if c not in RESERVED]
    chosen = list(views) if views is not None else all_views
    for view in chosen:
        if view not in all_views:
            raise ValueError(f"no view {view!r} in {folder.location}; it holds {all_views}")
    features = {}
    for view in chosen:
        column = table.column(view).combine_chunks()
        features[view] = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    return Embeddings(paths=np.asarray(table.column("path").to_pylist(), dtype=object),
                      cameras=table.column("camera").to_numpy().astype(np.int32), features=features, bad=bad,
                      manifest=manifest)


def read_bad_images(folder: EmbeddingFolder, shards: Sequence[int]) -> list[dict[str, str]]:
    """The undecodable files recorded in the metadata of ``shards`` (kept from an earlier run)."""
    bad: list[dict[str, str]] = []
    for shard in shards:
        meta = pq.read_metadata(folder._path(shard_name(shard)), filesystem=folder.fs)
        bad += json.loads((meta.metadata or {}).get(BAD_KEY, b"[]"))
    return bad
