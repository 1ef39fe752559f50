"""Fault 4: S3 answers 500/503/SlowDown, truncates a body, or refuses an upload (loopback moto server).

Faults are injected at botocore's ``before-send`` hook: the client under test builds, signs and
"sends" each request, and gets back a real HTTP error response, so its own retry policy (the one
``ray_reid.storage.s3_client`` configures) is what has to cope. Requests not picked for a fault go
to the server.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import Counter
from pathlib import Path

import pytest
from botocore.awsrequest import AWSResponse
from fault_helpers import checkpoint_dirs, tree_digest
from s3_server import put_tree

from ray_reid.storage import fetch_file, fetch_prefix, s3_client, upload_dir

ERRORS = {
    "SlowDown": (503, b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"),
    "ServiceUnavailable": (503, b"<Error><Code>ServiceUnavailable</Code><Message>busy</Message></Error>"),
    "InternalError": (500, b"<Error><Code>InternalError</Code><Message>We encountered an internal error."
                           b"</Message></Error>"),
    "AccessDenied": (403, b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"),
}


class _Raw(io.BytesIO):
    """The raw HTTP body botocore reads: whole (``stream``) for errors, in chunks (``read``) for objects."""

    def stream(self, **_):
        yield self.getvalue()


class FaultyS3:
    """Answers chosen requests of a boto3 client with an error or a truncated body; counts every send."""

    def __init__(self, client) -> None:
        self.sent: Counter = Counter()
        self.injected: Counter = Counter()
        self._plan: dict[str, list] = {}
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3", self._before_send)

    def fail(self, operation: str, *faults, key_contains: str = "") -> None:
        """Queue faults for ``operation`` (an error name, or ``("truncate", n_bytes)``); ``None`` passes one."""
        self._plan.setdefault(operation, []).extend((f, key_contains) for f in faults)

    def _before_send(self, request, event_name: str, **_):
        op = event_name.rsplit(".", 1)[-1]
        with self._lock:
            self.sent[op] += 1
            queue = self._plan.get(op, [])
            pick = next((i for i, (_, key) in enumerate(queue) if key in request.url), None)
            if pick is None:
                return None
            fault, _ = queue.pop(pick)
            if fault is None:
                return None
            self.injected[op] += 1
        if isinstance(fault, tuple):  # a 200 whose body stops early, as a dropped connection leaves it
            return AWSResponse(request.url, 200, {"Content-Length": str(fault[1])}, _Raw(b"\xff\xd8partial"))
        status, body = ERRORS[fault]
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Raw(body))


def _digest_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def dataset_on_s3(s3, tiny_synthetic_root):
    keys = put_tree(s3.client, tiny_synthetic_root, s3.bucket, "tiny")
    return f"s3://{s3.bucket}/tiny", keys


def test_throttling_and_transient_errors_are_retried_and_the_fetch_is_exact(dataset_on_s3, tiny_synthetic_root,
                                                                            tmp_path):
    uri, keys = dataset_on_s3
    client = s3_client(max_pool_connections=4)
    faults = FaultyS3(client)
    faults.fail("ListObjectsV2", "SlowDown", "ServiceUnavailable")
    faults.fail("GetObject", "SlowDown", "InternalError", "ServiceUnavailable", "SlowDown")
    local = fetch_prefix(uri, tmp_path / "cache", workers=4, client=client)
    assert faults.injected["ListObjectsV2"] == 2 and faults.injected["GetObject"] == 4
    # every fault cost one resend and nothing else: the SDK retried, not a second pass of the cache
    assert faults.sent["GetObject"] == len(keys) + 4
    assert {k: v for k, v in tree_digest(local).items() if not k.startswith(".ray_reid")} == \
        tree_digest(tiny_synthetic_root)


def test_upload_retries_throttling_and_the_object_lands_whole(s3, tmp_path):
    path = tmp_path / "state.pt"
    path.write_bytes(bytes(range(256)) * 400)
    client = s3_client()
    faults = FaultyS3(client)
    faults.fail("PutObject", "SlowDown", "InternalError")
    upload_dir(tmp_path, f"s3://{s3.bucket}/run/checkpoint_000000", client=client)
    assert faults.injected["PutObject"] == 2
    body = s3.client.get_object(Bucket=s3.bucket, Key="run/checkpoint_000000/state.pt")["Body"].read()
    assert body == path.read_bytes()


def test_truncated_body_is_retried_and_a_partial_file_is_never_used(s3, tmp_path):
    blob = tmp_path / "weights.pt"
    blob.write_bytes(b"w" * 50_000)
    s3.client.upload_file(str(blob), s3.bucket, "w/weights.pt")
    uri = f"s3://{s3.bucket}/w/weights.pt"
    cache = tmp_path / "cache"

    client = s3_client()
    faults = FaultyS3(client)
    faults.fail("GetObject", ("truncate", 50_000))  # once: the next attempt completes
    got = fetch_file(uri, cache, client=client)
    assert faults.injected["GetObject"] == 1 and got.read_bytes() == blob.read_bytes()

    cache2 = tmp_path / "cache2"
    client = s3_client()
    faults = FaultyS3(client)
    faults.fail("GetObject", *[("truncate", 50_000)] * 10)  # every attempt: the fetch must give up
    with pytest.raises(OSError, match=f"download of {uri} failed after"):
        fetch_file(uri, cache2, client=client)
    leftovers = [p for p in cache2.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert leftovers == [], f"a partial download was left where it could be used: {leftovers}"


def test_failed_checkpoint_upload_leaves_the_previous_checkpoint_intact_and_loadable(s3, tmp_path, monkeypatch):
    import torch

    from ray_reid.engine.checkpoint import save_checkpoint
    from ray_reid.locations import local_checkpoint

    run_uri = f"s3://{s3.bucket}/runs/r1"
    old = save_checkpoint(tmp_path / "c0", {"epoch": 0, "w": torch.arange(5.0)}, {"epoch": 0}, [{"epoch": 0}])
    new = save_checkpoint(tmp_path / "c1", {"epoch": 1, "w": torch.arange(5.0) + 1}, {"epoch": 1},
                          [{"epoch": 0}, {"epoch": 1}])
    upload_dir(old, f"{run_uri}/checkpoint_000000")
    before = {o["Key"]: o["ETag"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]}

    client = s3_client()
    faults = FaultyS3(client)
    faults.fail("PutObject", "AccessDenied", key_contains="state.pt")
    with pytest.raises(OSError, match=r"1 of 3 uploads to .*checkpoint_000001 failed"):
        upload_dir(new, f"{run_uri}/checkpoint_000001", client=client)
    after = {o["Key"]: o["ETag"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]}
    assert {k: v for k, v in after.items() if "checkpoint_000000" in k} == before
    assert not any(k.endswith("checkpoint_000001/state.pt") for k in after)

    # Whoever picks "the latest checkpoint" of the run skips the half-uploaded one.
    monkeypatch.setenv("RAY_REID_CACHE", str(tmp_path / "cache"))
    folder = local_checkpoint(run_uri)
    assert folder.name == "checkpoint_000000" and checkpoint_dirs(folder.parent) == [folder]
    assert _digest_of(folder / "state.pt") == _digest_of(old / "state.pt")
