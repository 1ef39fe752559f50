"""S3 addresses, clients and whole-object uploads.

Credentials come only from the standard AWS chain (environment, shared config, instance
profile): on the cluster that is the IAM instance profile named in ``cluster.yaml``, so no
key is ever written into code, configs or checkpoints. A custom endpoint (MinIO, Ceph,
a local test server) is taken from an argument or the environment, never guessed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from tqdm import tqdm

from ray_reid.storage.bookkeeping import is_bookkeeping_name

log = logging.getLogger(__name__)

ENDPOINT_ENV_VARS = ("RAY_REID_S3_ENDPOINT", "AWS_ENDPOINT_URL")
REGION_ENV_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")
#: Used only with a custom endpoint and no configured region: such servers ignore it, but
#: the SDKs refuse to sign without one.
FALLBACK_REGION = "us-east-1"

# Single PUTs up to 64 MiB; bigger files go multipart, which S3 also publishes atomically on
# CompleteMultipartUpload (and s3transfer aborts the upload on any failure).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNKSIZE = 16 * 1024 * 1024
#: Seconds for pyarrow's S3 client (Ray Train checkpoints, Parquet): to connect, and for a
#: request to make progress.
PYARROW_CONNECT_TIMEOUT = 10.0
PYARROW_REQUEST_TIMEOUT = 60.0


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; the key may be empty (whole bucket)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI (expected s3://bucket/key): {uri!r}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI has no bucket (expected s3://bucket/key): {uri!r}")
    if bucket in (".", "..") or "\\" in bucket or any(c.isspace() for c in bucket):
        raise ValueError(f"S3 URI has an invalid bucket name {bucket!r}: {uri!r}")
    return bucket, key


def is_s3_uri(path_or_uri: object) -> bool:
    return isinstance(path_or_uri, str) and path_or_uri.startswith("s3://")


def resolve_endpoint(endpoint_url: str | None = None) -> str | None:
    """The endpoint to talk to: the argument, else ``RAY_REID_S3_ENDPOINT``, else ``AWS_ENDPOINT_URL``.

    None means AWS itself. A value without ``http(s)://`` and a host is refused up front,
    because botocore would otherwise fail later with a much less helpful message.
    """
    source = "endpoint_url"
    if endpoint_url is None:
        for var in ENDPOINT_ENV_VARS:
            if os.environ.get(var):
                endpoint_url, source = os.environ[var], var
                break
    if endpoint_url is None:
        return None
    parts = urlsplit(endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{source} must look like http(s)://host[:port], got {endpoint_url!r}")
    return endpoint_url


def use_endpoint(endpoint_url: str | None) -> None:
    """Make a configured endpoint (``run.s3_endpoint``) the process default for every S3 call.

    Set on the driver, in each Train worker and in the ClusteringActor, so dataset fetches,
    checkpoint storage and embeddings all talk to the same store without threading the value
    through every function.
    """
    if endpoint_url:
        resolve_endpoint(endpoint_url)  # validate before it becomes the default
        os.environ["RAY_REID_S3_ENDPOINT"] = endpoint_url


def resolve_region(region: str | None = None) -> str | None:
    if region:
        return region
    for var in REGION_ENV_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


def s3_client(endpoint_url: str | None = None, region: str | None = None, *, max_pool_connections: int = 16) -> Any:
    """A boto3 S3 client that retries throttling and transient errors with adaptive backoff.

    boto3 clients are thread-safe, so one client serves a whole thread pool; the connection
    pool is sized to the pool so threads do not queue for sockets.
    """
    import boto3
    from botocore.config import Config

    endpoint = resolve_endpoint(endpoint_url)
    region = resolve_region(region) or (FALLBACK_REGION if endpoint else None)
    config = Config(
        retries={"max_attempts": 10, "mode": "adaptive"},
        max_pool_connections=max(10, max_pool_connections),
        # Self-hosted S3 servers are addressed by IP or a single host name: path style works
        # everywhere, virtual-host style only with wildcard DNS.
        s3={"addressing_style": "path"} if endpoint else None,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


def transfer_config(workers: int = 4) -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNKSIZE,
                          max_concurrency=workers)


def _object_key_for(path: Path, uri: str) -> tuple[str, str]:
    """Bucket and key an upload of ``path`` lands at; a URI ending in '/' means "into that folder"."""
    bucket, key = parse_s3_uri(uri)
    if not key or key.endswith("/"):
        key = f"{key}{path.name}"
    return bucket, key


def upload_file(path: str | os.PathLike, uri: str, *, endpoint_url: str | None = None, client: Any = None) -> str:
    """Put ``path`` at ``uri`` as one complete object and return the object's URI.

    S3 never shows a half-written object: a single PUT lands whole, a multipart upload only
    becomes visible on completion and is aborted on failure, so the previous object at the
    key stays readable until the new one is complete.
    """
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot upload {path}: no such file")
    bucket, key = _object_key_for(path, uri)
    client = client or s3_client(endpoint_url)
    try:
        client.upload_file(str(path), bucket, key, Config=transfer_config())
    except (ClientError, S3UploadFailedError) as exc:  # boto3 wraps a refused PUT in S3UploadFailedError
        raise OSError(f"upload of {path} to s3://{bucket}/{key} failed: {exc}") from exc
    log.debug("uploaded %s to s3://%s/%s", path, bucket, key)
    return f"s3://{bucket}/{key}"


def _walk_files(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def upload_dir(folder: str | os.PathLike, uri: str, *, workers: int = 16, endpoint_url: str | None = None,
               client: Any = None) -> list[str]:
    """Upload every file under ``folder`` to ``uri``/<relative path>, concurrently; return their URIs.

    Each object lands whole or not at all (see :func:`upload_file`); a failed file is
    reported by name after the others finished, so a retry uploads again only what is needed
    to be consistent. The node cache's bookkeeping files are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot upload {folder}: no such folder")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    bucket, prefix = parse_s3_uri(uri)
    prefix = prefix.rstrip("/")
    files = [p for p in _walk_files(folder) if not is_bookkeeping_name(p.name)]
    client = client or s3_client(endpoint_url, max_pool_connections=workers)
    targets = {}
    for path in files:
        rel = PurePosixPath(*path.relative_to(folder).parts).as_posix()
        targets[path] = f"s3://{bucket}/{prefix}/{rel}" if prefix else f"s3://{bucket}/{rel}"
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(files), unit="file", desc=f"upload {uri}", mininterval=1.0) as bar:
        futures = {pool.submit(upload_file, path, target, client=client): path for path, target in targets.items()}
        for future in as_completed(futures):
            try:
                future.result()
            except OSError as exc:
                failures.append(f"{futures[future]}: {exc}")
            bar.update(1)
    if failures:
        raise OSError(f"{len(failures)} of {len(files)} uploads to {uri} failed: " + "; ".join(failures[:5]))
    log.info("uploaded %d files from %s to %s", len(files), folder, uri)
    return list(targets.values())


def pyarrow_filesystem(uri_or_path: str | os.PathLike, endpoint_url: str | None = None,
                       region: str | None = None) -> tuple[Any, str]:
    """``(filesystem, path)`` as Ray Train's ``storage_filesystem`` / ``storage_path`` want them.

    Local paths give ``(None, absolute path)`` so Ray uses its default. ``s3://`` gives a
    ``pyarrow.fs.S3FileSystem`` pointed at the resolved endpoint and the path *without* the
    scheme, which is what Ray needs once a filesystem object is passed explicitly.
    """
    text = os.fspath(uri_or_path)
    if not is_s3_uri(text):
        if "://" in text:
            raise ValueError(f"unsupported storage URI {text!r}: use a local path or s3://bucket/prefix")
        return None, str(Path(text).expanduser().resolve())
    from pyarrow import fs

    bucket, key = parse_s3_uri(text)
    endpoint = resolve_endpoint(endpoint_url)
    region = resolve_region(region)
    kwargs: dict[str, Any] = {}
    if endpoint:
        parts = urlsplit(endpoint)
        kwargs.update(endpoint_override=parts.netloc, scheme=parts.scheme, region=region or FALLBACK_REGION)
    else:
        kwargs["region"] = region or fs.resolve_s3_region(bucket)
    path = f"{bucket}/{key.strip('/')}" if key.strip("/") else bucket
    # The AWS C++ SDK's defaults (3 s per request, 3 attempts) fail checkpoint restores on a
    # busy node or a slow self-hosted store; match the boto3 side's patience instead.
    kwargs.update(connect_timeout=PYARROW_CONNECT_TIMEOUT, request_timeout=PYARROW_REQUEST_TIMEOUT,
                  retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=10))
    return fs.S3FileSystem(**kwargs), path
