"""A node-local copy of S3 objects that is fetched once, resumed after a crash, and never half-read.

Every training node needs the dataset on local disk (100k small JPEGs read at random each
epoch). The cache is ``cache_root/<bucket>/<key>``. Guarantees, and why:

* **atomic** — each object is streamed to a hidden temp file in its final folder, verified,
  then renamed, so a reader sees either nothing or the whole file;
* **verified** — the byte count must equal the listed size; for single-part ETags (plain
  MD5 unless the object is KMS/SSE-C encrypted) the MD5 must match too;
* **resumable** — ETags and sizes of finished files go to a small JSON index written
  atomically every few seconds; after a crash, files with matching size and ETag are kept
  (unindexed ones are kept when their MD5 proves them), the rest fetched again;
* **cheap when warm** — a completion marker holding a digest of the listing is written
  last, so a second call is one listing, one digest and a ``stat`` per file;
* **contained** — keys are mapped to paths only when every segment is a plain name: ``..``,
  ``.``, empty segments, backslashes and absolute keys raise ``ValueError`` instead of
  writing outside the cache.

Processes on one node (several DDP workers) serialise on a lock file next to the folder;
the first downloads, the others find the marker.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from ray_reid.storage.bookkeeping import INDEX_NAME, LOCK_SUFFIX as _LOCK_SUFFIX, MARKER_NAME
from ray_reid.storage.bookkeeping import SIDECAR_SUFFIX as _SIDECAR_SUFFIX, TEMP_SUFFIX as _TEMP_SUFFIX
from ray_reid.storage.bookkeeping import is_bookkeeping_name
from ray_reid.storage.s3 import parse_s3_uri, s3_client
from ray_reid.validation import check_count

log = logging.getLogger(__name__)

_INDEX_VERSION = 1
_ATTEMPTS = 3
_INDEX_SAVE_SECONDS = 2.0
_CHUNK = 1 << 20
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
# With these encryptions the ETag is not the MD5 of the content.
_NON_MD5_SSE = {"aws:kms", "aws:kms:dsse"}


@dataclass(frozen=True)
class RemoteObject:
    key: str
    rel: PurePosixPath
    size: int
    etag: str


def safe_relative_path(rel: str, *, key: str, uri: str) -> PurePosixPath:
    """``rel`` as a relative path that cannot leave its folder, else ValueError naming the key."""
    why = None
    if not rel:
        why = "it maps to the folder itself"
    elif "\\" in rel or "\x00" in rel:
        why = "it contains a backslash or NUL"
    elif rel.startswith("/"):
        why = "it is absolute"
    else:
        segments = rel.split("/")
        if any(s in ("", ".", "..") for s in segments):
            why = "it has an empty, '.' or '..' segment"
        elif is_bookkeeping_name(segments[-1]):
            why = "its name is reserved for the cache's bookkeeping files"
    if why:
        raise ValueError(f"refusing S3 key {key!r} from {uri}: {why}; keys must be relative paths of plain "
                         "names (no '..', '.', empty segments, backslashes or leading '/')")
    return PurePosixPath(rel)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock between processes of one node (ranks fetching or generating the same tree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_json(path: Path) -> dict | None:
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable cache file %s (%s); affected objects are checked again", path, exc)
        return None
    return obj if isinstance(obj, dict) else None


def _md5_of(path: Path) -> str:
    md5 = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            md5.update(chunk)
    return md5.hexdigest()


def _etag_is_md5(etag: str, sse: str | None = None) -> bool:
    return bool(_MD5_ETAG.match(etag)) and sse not in _NON_MD5_SSE


def _local_copy_is_good(path: Path, obj: RemoteObject, recorded: dict | None) -> bool:
    """Whether the file at ``path`` is ``obj``: size always, then the recorded ETag or the MD5."""
    try:
        if path.stat().st_size != obj.size:
            return False
    except FileNotFoundError:
        return False
    if recorded is not None:
        return recorded.get("etag") == obj.etag and recorded.get("size") == obj.size
    # Written by a run that crashed before recording it: adopt it only when the content proves it.
    return _etag_is_md5(obj.etag) and _md5_of(path) == obj.etag


def _client_error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _download(client: Any, bucket: str, obj: RemoteObject, dest: Path) -> None:
    """Stream one object to a temp file beside ``dest``, verify, rename; retry short or corrupt reads."""
    from botocore.exceptions import BotoCoreError, ClientError

    uri = f"s3://{bucket}/{obj.key}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    problem = ""
    for attempt in range(1, _ATTEMPTS + 1):
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=_TEMP_SUFFIX)
        try:
            md5, size = hashlib.md5(), 0
            with os.fdopen(fd, "wb") as fh:
                # IfMatch pins the version that was listed: a concurrent overwrite fails loudly
                # instead of mixing two versions of the dataset.
                response = client.get_object(Bucket=bucket, Key=obj.key, IfMatch=f'"{obj.etag}"')
                for chunk in response["Body"].iter_chunks(_CHUNK):
                    fh.write(chunk)
                    md5.update(chunk)
                    size += len(chunk)
            sse = response.get("ServerSideEncryption")
            if size != obj.size:
                problem = f"got {size} bytes, expected {obj.size}"
            elif _etag_is_md5(obj.etag, sse) and "SSECustomerAlgorithm" not in response \
                    and md5.hexdigest() != obj.etag:
                problem = f"MD5 {md5.hexdigest()} does not match ETag {obj.etag}"
            else:
                os.replace(tmp, dest)
                return
        except ClientError as exc:
            code = _client_error_code(exc)
            if code in ("PreconditionFailed", "412"):
                raise RuntimeError(f"{uri} changed while it was being fetched (its ETag is no longer {obj.etag}); "
                                   "fetch again once the upload is finished") from exc
            if code in ("NoSuchKey", "404", "NoSuchBucket"):
                raise FileNotFoundError(f"{uri} disappeared while it was being fetched") from exc
            raise OSError(f"cannot download {uri}: {exc}") from exc
        except BotoCoreError as exc:  # connection dropped mid-body, read timeout: the SDK does not retry those
            problem = f"{type(exc).__name__}: {exc}"
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        log.warning("download of %s failed (attempt %d/%d): %s", uri, attempt, _ATTEMPTS, problem)
    raise OSError(f"download of {uri} failed after {_ATTEMPTS} attempts: {problem}")


def _list_objects(client: Any, bucket: str, prefix: str, uri: str) -> list[RemoteObject]:
    from botocore.exceptions import ClientError

    list_prefix = f"{prefix}/" if prefix else ""
    objects: list[RemoteObject] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=list_prefix):
            for item in page.get("Contents", []):
                key, size = item["Key"], int(item["Size"])
                rel = key[len(list_prefix):]
                if rel.endswith("/") and size == 0:
                    continue  # a "folder" placeholder made by consoles: no content to fetch
                objects.append(RemoteObject(key, safe_relative_path(rel, key=key, uri=uri), size,
                                            item["ETag"].strip('"')))
    except ClientError as exc:
        if _client_error_code(exc) in ("NoSuchBucket", "404"):
            raise FileNotFoundError(f"cannot list {uri}: bucket {bucket!r} does not exist") from exc
        raise OSError(f"cannot list {uri}: {exc}") from exc
    if not objects:
        raise FileNotFoundError(f"no objects under {uri}")
    files = {o.rel for o in objects}
    for obj in objects:
        for parent in obj.rel.parents:
            if parent in files:
                raise ValueError(f"S3 keys under {uri} cannot all be files: {parent} is both an object and the "
                                 f"folder of {obj.key!r}")
    return objects


def _listing_digest(objects: list[RemoteObject]) -> str:
    h = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: o.key):
        h.update(f"{obj.key}\0{obj.size}\0{obj.etag}\n".encode())
    return h.hexdigest()


def _remove_stale_temp_files(folder: Path) -> int:
    removed = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            if name.endswith(_TEMP_SUFFIX):
                os.unlink(os.path.join(dirpath, name))
                removed += 1
    return removed


def _check_workers(workers: int) -> None:
    check_count("workers", workers)


def fetch_prefix(uri: str, cache_root: str | os.PathLike, *, workers: int = 16, endpoint_url: str | None = None,
                 client: Any = None) -> Path:
    """Mirror every object under ``s3://bucket/prefix`` into ``cache_root/bucket/prefix`` and return that folder.

    The folder then holds the tree in its normal layout (``load_dataset(name, folder)``
    works). Objects removed from S3 since the last fetch are removed from the cache too, so
    the local tree never holds images the source no longer has.
    """
    _check_workers(workers)
    bucket, prefix = parse_s3_uri(uri)
    prefix = prefix.rstrip("/")
    rel_prefix = safe_relative_path(prefix, key=prefix, uri=uri) if prefix else PurePosixPath()
    cache_root = Path(cache_root).expanduser()
    dest = cache_root / bucket / rel_prefix
    with file_lock(dest.parent / f".{dest.name}{_LOCK_SUFFIX}"):
        client = client or s3_client(endpoint_url, max_pool_connections=workers)
        objects = _list_objects(client, bucket, prefix, uri)
        digest = _listing_digest(objects)
        marker = _read_json(dest / MARKER_NAME)
        if marker and marker.get("listing") == digest and all(
                _size_matches(dest / o.rel, o.size) for o in objects):
            log.info("%s is up to date in %s (%d files)", uri, dest, len(objects))
            return dest
        return _sync(client, bucket, uri, objects, digest, dest, workers)


def _size_matches(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _sync(client: Any, bucket: str, uri: str, objects: list[RemoteObject], digest: str, dest: Path,
          workers: int) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MARKER_NAME).unlink(missing_ok=True)  # from here until the end the folder is "in progress"
    stale_temps = _remove_stale_temp_files(dest)
    if stale_temps:
        log.info("removed %d partial downloads left in %s by an interrupted fetch", stale_temps, dest)
    old = (_read_json(dest / INDEX_NAME) or {}).get("objects", {})
    listed = {o.rel.as_posix() for o in objects}
    for rel in sorted(set(old) - listed):
        (dest / rel).unlink(missing_ok=True)
        log.info("removed %s: no longer under %s", dest / rel, uri)

    index: dict[str, dict] = {}
    todo: list[RemoteObject] = []
    for obj in objects:
        rel = obj.rel.as_posix()
        if _local_copy_is_good(dest / obj.rel, obj, old.get(rel)):
            index[rel] = {"size": obj.size, "etag": obj.etag}
        else:
            todo.append(obj)
    log.info("fetching %d of %d objects (%d bytes) from %s into %s", len(todo), len(objects),
             sum(o.size for o in todo), uri, dest)

    def save_index() -> None:
        _write_json_atomic(dest / INDEX_NAME, {"version": _INDEX_VERSION, "source": uri, "objects": index})

    failures: list[str] = []
    last_save = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=sum(o.size for o in todo), unit="B", unit_scale=True, desc=f"fetch {uri}",
                 mininterval=1.0, disable=not todo) as bar:
        futures = {pool.submit(_download, client, bucket, obj, dest / obj.rel): obj for obj in todo}
        try:
            for future in as_completed(futures):
                obj = futures[future]
                try:
                    future.result()
                except (OSError, RuntimeError) as exc:
                    failures.append(str(exc))
                    continue
                index[obj.rel.as_posix()] = {"size": obj.size, "etag": obj.etag}
                bar.update(obj.size)
                if time.monotonic() - last_save > _INDEX_SAVE_SECONDS:
                    save_index()
                    last_save = time.monotonic()
        finally:
            for future in futures:
                future.cancel()
            save_index()  # keep what finished, even on Ctrl-C, so the next call resumes
    if failures:
        raise OSError(f"{len(failures)} of {len(todo)} downloads from {uri} failed; a new call resumes. "
                      "First errors: " + "; ".join(failures[:5]))
    _write_json_atomic(dest / MARKER_NAME, {"version": _INDEX_VERSION, "source": uri, "listing": digest,
                                            "objects": len(objects), "bytes": sum(o.size for o in objects)})
    log.info("fetched %s into %s", uri, dest)
    return dest


def fetch_file(uri: str, cache_root: str | os.PathLike, *, endpoint_url: str | None = None,
               client: Any = None) -> Path:
    """Fetch one object (teacher checkpoint, pretrained weights) to ``cache_root/bucket/key`` once.

    Same guarantees as :func:`fetch_prefix`; the ETag is recorded in a hidden sidecar file,
    so a warm call costs one HEAD request and a ``stat``.
    """
    from botocore.exceptions import ClientError

    bucket, key = parse_s3_uri(uri)
    if not key or key.endswith("/"):
        raise ValueError(f"fetch_file needs the URI of one object (s3://bucket/key), got {uri!r}")
    rel = safe_relative_path(key, key=key, uri=uri)
    dest = Path(cache_root).expanduser() / bucket / rel
    sidecar = dest.parent / f".{dest.name}{_SIDECAR_SUFFIX}"
    with file_lock(dest.parent / f".{dest.name}{_LOCK_SUFFIX}"):
        client = client or s3_client(endpoint_url)
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _client_error_code(exc) in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
                raise FileNotFoundError(f"no such S3 object: {uri}") from exc
            raise OSError(f"cannot read {uri}: {exc}") from exc
        obj = RemoteObject(key, rel, int(head["ContentLength"]), head["ETag"].strip('"'))
        recorded = _read_json(sidecar)
        if _local_copy_is_good(dest, obj, recorded):
            if recorded is None:
                _write_json_atomic(sidecar, {"size": obj.size, "etag": obj.etag, "source": uri})
            log.info("using cached %s for %s", dest, uri)
            return dest
        sidecar.unlink(missing_ok=True)
        log.info("downloading %s (%d bytes) to %s", uri, obj.size, dest)
        _download(client, bucket, obj, dest)
        _write_json_atomic(sidecar, {"size": obj.size, "etag": obj.etag, "source": uri})
        return dest
