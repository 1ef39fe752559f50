"""fetch_prefix / fetch_file against a real S3 endpoint on loopback."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
from botocore.response import StreamingBody
from s3_server import RequestCounter, put_tree

from ray_reid.data import load_dataset
from ray_reid.storage import fetch_file, fetch_prefix, is_bookkeeping_name, s3_client
from ray_reid.storage.cache import INDEX_NAME, MARKER_NAME, RemoteObject, _download, safe_relative_path


def _counted_client(endpoint: str):
    client = s3_client(endpoint)
    return client, RequestCounter(client)


def _put_small_tree(s3, prefix: str = "small") -> dict[str, bytes]:
    files = {f"{prefix}/a.txt": b"alpha", f"{prefix}/sub/b.bin": os.urandom(3000), f"{prefix}/sub/deep/c": b"c" * 7}
    for key, body in files.items():
        s3.client.put_object(Bucket=s3.bucket, Key=key, Body=body)
    return files


def _stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and not is_bookkeeping_name(p.name)}


def test_fetched_prefix_loads_as_the_dataset_and_second_call_downloads_nothing(s3, market_tree, tmp_path):
    keys = put_tree(s3.client, market_tree, s3.bucket, "datasets/market")
    client, counter = _counted_client(s3.endpoint)

    folder = fetch_prefix(f"s3://{s3.bucket}/datasets/market/", tmp_path / "cache", workers=4, client=client)

    assert folder == tmp_path / "cache" / s3.bucket / "datasets" / "market"
    assert counter["GetObject"] == len(keys)
    for key in keys:
        rel = key.removeprefix("datasets/market/")
        assert (folder / rel).read_bytes() == (market_tree / rel).read_bytes()
    local, original = load_dataset("market1501", folder), load_dataset("market1501", market_tree)
    for split in ("train", "query", "gallery"):
        got = sorted((Path(r.path).name, r.pid, r.camid) for r in getattr(local, split))
        want = sorted((Path(r.path).name, r.pid, r.camid) for r in getattr(original, split))
        assert got == want and got
    assert json.loads((folder / MARKER_NAME).read_text())["objects"] == len(keys)

    before = _stats(folder)
    counter.reset()
    assert fetch_prefix(f"s3://{s3.bucket}/datasets/market", tmp_path / "cache", client=client) == folder
    assert counter["GetObject"] == 0 and counter["HeadObject"] == 0
    assert counter["ListObjectsV2"] >= 1
    assert _stats(folder) == before


def test_changed_object_is_downloaded_again_and_only_it(s3, tmp_path):
    files = _put_small_tree(s3)
    client, counter = _counted_client(s3.endpoint)
    folder = fetch_prefix(f"s3://{s3.bucket}/small", tmp_path, client=client)
    s3.client.put_object(Bucket=s3.bucket, Key="small/sub/b.bin", Body=b"new content")  # same key, new ETag
    counter.reset()

    fetch_prefix(f"s3://{s3.bucket}/small", tmp_path, client=client)

    assert counter["GetObject"] == 1
    assert (folder / "sub/b.bin").read_bytes() == b"new content"
    assert (folder / "a.txt").read_bytes() == files["small/a.txt"]


def test_truncated_file_and_leftover_temp_file_are_detected_and_replaced(s3, tmp_path):
    files = _put_small_tree(s3)
    client, counter = _counted_client(s3.endpoint)
    folder = fetch_prefix(f"s3://{s3.bucket}/small", tmp_path, client=client)
    with open(folder / "sub/b.bin", "r+b") as fh:
        fh.truncate(100)  # a copy cut short, e.g. by a full disk in another tool
    leftover = folder / "sub" / ".b.bin.x1y2z3.ray_reid.part"
    leftover.write_bytes(b"partial")
    counter.reset()

    fetch_prefix(f"s3://{s3.bucket}/small", tmp_path, client=client)

    assert counter["GetObject"] == 1
    assert (folder / "sub/b.bin").read_bytes() == files["small/sub/b.bin"]
    assert not leftover.exists()


def test_interrupted_fetch_resumes_with_only_the_missing_objects(s3, tmp_path):
    _put_small_tree(s3)
    client, counter = _counted_client(s3.endpoint)
    counter.fail["GetObject"] = {2}  # the second download dies; the others finish
    with pytest.raises(OSError, match="1 of 3 downloads"):
        fetch_prefix(f"s3://{s3.bucket}/small", tmp_path, workers=1, client=client)
    folder = tmp_path / s3.bucket / "small"
    assert not (folder / MARKER_NAME).exists()
    assert len(json.loads((folder / INDEX_NAME).read_text())["objects"]) == 2
    assert not [p for p in folder.rglob("*.part")]
    counter.fail.clear()
    counter.reset()

    fetch_prefix(f"s3://{s3.bucket}/small", tmp_path, client=client)

    assert counter["GetObject"] == 1
    assert (folder / MARKER_NAME).exists()


def test_files_without_index_entries_are_adopted_only_when_their_md5_matches(s3, tmp_path):
    files = _put_small_tree(s3)
    client, counter = _counted_client(s3.endpoint)
    folder = fetch_prefix(f"s3://{s3.bucket}/small", tmp_path, client=client)
    # a crash after the renames but before the index and marker were written
    (folder / INDEX_NAME).unlink()
    (folder / MARKER_NAME).unlink()
    (folder / "a.txt").write_bytes(b"ALPHA")  # right size, wrong content
    counter.reset()

    fetch_prefix(f"s3://{s3.bucket}/small", tmp_path, client=client)

    assert counter["GetObject"] == 1
    assert (folder / "a.txt").read_bytes() == files["small/a.txt"]


def test_objects_deleted_at_the_source_are_removed_from_the_cache(s3, tmp_path):
    _put_small_tree(s3)
    folder = fetch_prefix(f"s3://{s3.bucket}/small", tmp_path)
    s3.client.delete_object(Bucket=s3.bucket, Key="small/a.txt")
    fetch_prefix(f"s3://{s3.bucket}/small", tmp_path)
    assert not (folder / "a.txt").exists() and (folder / "sub/b.bin").exists()


def test_prefix_matches_whole_folder_names_only(s3, tmp_path):
    _put_small_tree(s3, "small")
    _put_small_tree(s3, "small2")
    folder = fetch_prefix(f"s3://{s3.bucket}/small", tmp_path)
    assert sorted(_stats(folder)) == ["a.txt", "sub/b.bin", "sub/deep/c"]


@pytest.mark.parametrize("key", ["data/../escape.jpg", "data/a//b.jpg", "data/a\\..\\b.jpg", "data/./x.jpg",
                                 f"data/sub/{INDEX_NAME}"])
def test_keys_that_would_escape_or_corrupt_the_cache_are_refused(s3, tmp_path, key):
    s3.client.put_object(Bucket=s3.bucket, Key="data/ok.jpg", Body=b"ok")
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"evil")
    listed = [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]]
    assert key in listed, f"server normalised the key: {listed}"
    with pytest.raises(ValueError, match="refusing S3 key") as err:
        fetch_prefix(f"s3://{s3.bucket}/data", tmp_path / "cache")
    assert repr(key) in str(err.value)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not is_bookkeeping_name(p.name)]


@pytest.mark.parametrize("rel", ["/etc/passwd", "", "a/../../b", "..", "a\\b", "a/", "x/.ray_reid_fetch_complete.json"])
def test_safe_relative_path_refuses_unsafe_keys(rel):
    with pytest.raises(ValueError, match="refusing S3 key"):
        safe_relative_path(rel, key="k", uri="s3://b/p")


def test_unsafe_prefix_in_the_uri_is_refused(tmp_path):
    with pytest.raises(ValueError, match="refusing S3 key"):
        fetch_prefix("s3://bucket/a/../../outside", tmp_path)


def test_missing_prefix_and_bucket_raise_file_not_found(s3, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"s3://{s3.bucket}/nothing-here"):
        fetch_prefix(f"s3://{s3.bucket}/nothing-here", tmp_path)
    with pytest.raises(FileNotFoundError, match="no-such-bucket"):
        fetch_prefix("s3://no-such-bucket/x", tmp_path)


def test_fetch_file_downloads_once_and_follows_changes(s3, tmp_path):
    s3.client.put_object(Bucket=s3.bucket, Key="weights/r50.pth", Body=b"w" * 5000)
    client, counter = _counted_client(s3.endpoint)
    uri = f"s3://{s3.bucket}/weights/r50.pth"

    path = fetch_file(uri, tmp_path, client=client)
    assert path == tmp_path / s3.bucket / "weights" / "r50.pth" and path.read_bytes() == b"w" * 5000
    assert fetch_file(uri, tmp_path, client=client) == path
    assert counter["GetObject"] == 1 and counter["HeadObject"] == 2

    s3.client.put_object(Bucket=s3.bucket, Key="weights/r50.pth", Body=b"v" * 5000)
    assert fetch_file(uri, tmp_path, client=client).read_bytes() == b"v" * 5000
    assert counter["GetObject"] == 2
    path.write_bytes(b"v" * 10)  # truncated behind our back
    assert fetch_file(uri, tmp_path, client=client).read_bytes() == b"v" * 5000


def test_fetch_file_errors_name_the_uri(s3, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"s3://{s3.bucket}/missing.pth"):
        fetch_file(f"s3://{s3.bucket}/missing.pth", tmp_path)
    with pytest.raises(ValueError, match="one object"):
        fetch_file(f"s3://{s3.bucket}/weights/", tmp_path)
    with pytest.raises(ValueError, match="not an S3 URI"):
        fetch_file("/local/file.pth", tmp_path)


class _FakeClient:
    """Serves a fixed body whatever is asked, to exercise verification without a server."""

    def __init__(self, body: bytes) -> None:
        self.body, self.calls = body, 0

    def get_object(self, **_):
        self.calls += 1
        return {"Body": StreamingBody(io.BytesIO(self.body), len(self.body))}


@pytest.mark.parametrize("body, problem", [(b"short", "expected 10"), (b"0123456789", "MD5")])
def test_download_that_fails_verification_is_retried_then_never_renamed(tmp_path, body, problem):
    good = b"abcdefghij"
    obj = RemoteObject("k/file.bin", Path("file.bin"), len(good), hashlib.md5(good).hexdigest())
    client = _FakeClient(body)
    with pytest.raises(OSError, match=problem):
        _download(client, "bkt", obj, tmp_path / "file.bin")
    assert client.calls == 3
    assert list(tmp_path.iterdir()) == []


def test_multipart_etag_is_checked_by_size_only(tmp_path):
    body = b"x" * 10
    obj = RemoteObject("k", Path("f"), len(body), "0123456789abcdef0123456789abcdef-2")
    _download(_FakeClient(body), "bkt", obj, tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == body


def test_concurrent_fetches_on_one_node_download_each_object_once(s3, tmp_path):
    """DDP ranks on one node all resolve the dataset: the lock lets one download, the rest reuse."""
    from concurrent.futures import ThreadPoolExecutor

    files = _put_small_tree(s3)
    client, counter = _counted_client(s3.endpoint)
    with ThreadPoolExecutor(max_workers=3) as pool:
        folders = list(pool.map(lambda _: fetch_prefix(f"s3://{s3.bucket}/small", tmp_path, workers=2,
                                                       client=client), range(3)))
    assert len(set(folders)) == 1
    assert counter["GetObject"] == len(files)


def test_whole_bucket_fetch(s3, tmp_path):
    files = _put_small_tree(s3, "top")
    folder = fetch_prefix(f"s3://{s3.bucket}", tmp_path)
    assert folder == tmp_path / s3.bucket
    assert {f"top/{rel}" for rel in _stats(folder / "top")} == set(files)
