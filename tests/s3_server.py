"""A real S3 endpoint on loopback for tests: ``moto`` in server mode, in its own process.

A subprocess speaks real HTTP, so boto3, pyarrow's C++ S3 client and Ray all go through
their normal network paths (signing, retries, path-style addressing), unlike in-process
mocks that patch boto3 only. The server is stopped by its own pid, never by name.

Usage::

    with S3Server() as server:
        with server.environment():       # dummy credentials + endpoint, for the test only
            ...
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ports import free_port

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Keep a developer's real profile or EC2 metadata out of the picture.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


class S3Server:
    """``python -m moto.server`` on 127.0.0.1 at a free port."""

    def __init__(self, *, startup_timeout: float = 120.0) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None

    def start(self) -> S3Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **DUMMY_ENV},
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"moto server exited with code {self.process.returncode}: {err[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1).close()
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint_url} within {self.startup_timeout} s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def reset(self) -> None:
        """Forget every bucket and object, so tests sharing one server start clean."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    @contextlib.contextmanager
    def environment(self) -> Iterator[dict[str, str]]:
        """Dummy credentials and this endpoint in ``os.environ``, restored afterwards."""
        env = {**DUMMY_ENV, "RAY_REID_S3_ENDPOINT": self.endpoint_url}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def put_tree(client, folder: Path, bucket: str, prefix: str) -> list[str]:
    """Upload with plain boto3 (not the code under test) and return the keys."""
    keys = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(folder).as_posix()}"
        client.upload_file(str(path), bucket, key)
        keys.append(key)
    return keys


def keys_under(client, bucket: str, prefix: str) -> dict[str, dict]:
    """Every object under ``prefix`` (all pages), by key, listed with plain boto3."""
    objects: dict[str, dict] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            objects[obj["Key"]] = obj
    return objects


class RequestCounter:
    """Counts S3 operations a client sends (through botocore's event hooks) and can fail some."""

    def __init__(self, client) -> None:
        self.counts: dict[str, int] = {}
        self.fail: dict[str, set[int]] = {}
        self._lock = threading.Lock()
        client.meta.events.register("before-call.s3.*", self._before_call)

    def _before_call(self, model, **_):
        name = model.name
        with self._lock:
            self.counts[name] = n = self.counts.get(name, 0) + 1
        if n in self.fail.get(name, ()):
            raise ConnectionResetError(f"injected failure of {name} #{n}")

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)

    def reset(self) -> None:
        self.counts.clear()
