"""URIs, clients and whole-object uploads against a real S3 endpoint on loopback."""

from __future__ import annotations

import os

import pytest
from s3_server import RequestCounter

from ray_reid.storage import (
    fetch_prefix,
    parse_s3_uri,
    resolve_endpoint,
    s3_client,
    upload_dir,
    upload_file,
)
from ray_reid.storage import s3 as s3_module


@pytest.mark.parametrize("uri, expected", [
    ("s3://bkt/a/b.jpg", ("bkt", "a/b.jpg")),
    ("s3://bkt", ("bkt", "")),
    ("s3://bkt/", ("bkt", "")),
    ("s3://bkt/dir/", ("bkt", "dir/")),
])
def test_parse_s3_uri(uri, expected):
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize("uri", ["/local/path", "S3://bkt/x", "s3:/bkt/x", "s3:///key", "gs://bkt/x", "s3://../x"])
def test_parse_s3_uri_rejects_and_names_the_uri(uri):
    with pytest.raises(ValueError, match="S3 URI|s3://bucket/key") as err:
        parse_s3_uri(uri)
    assert repr(uri) in str(err.value)


def test_endpoint_from_argument_then_environment(monkeypatch):
    monkeypatch.delenv("RAY_REID_S3_ENDPOINT", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert resolve_endpoint() is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws-env:9000")
    assert resolve_endpoint() == "http://aws-env:9000"
    monkeypatch.setenv("RAY_REID_S3_ENDPOINT", "https://ours:9000")
    assert resolve_endpoint() == "https://ours:9000"
    assert resolve_endpoint("http://arg:1") == "http://arg:1"
    monkeypatch.setenv("RAY_REID_S3_ENDPOINT", "minio:9000")
    with pytest.raises(ValueError, match="RAY_REID_S3_ENDPOINT.*'minio:9000'"):
        resolve_endpoint()


def test_client_retries_adaptively_and_uses_the_endpoint(monkeypatch):
    monkeypatch.setenv("RAY_REID_S3_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    client = s3_client()
    assert client.meta.endpoint_url == "http://127.0.0.1:1"
    assert client.meta.region_name == "eu-west-1"
    # botocore stores "max_attempts: 10 retries" as 11 attempts in total
    assert client.meta.config.retries == {"total_max_attempts": 11, "mode": "adaptive"}
    assert s3_client(region="ap-south-1").meta.region_name == "ap-south-1"


def test_upload_file_round_trip_and_folder_uri(s3, tmp_path):
    path = tmp_path / "teacher.pth"
    path.write_bytes(os.urandom(2048))
    assert upload_file(path, f"s3://{s3.bucket}/runs/t/model.pth") == f"s3://{s3.bucket}/runs/t/model.pth"
    assert upload_file(path, f"s3://{s3.bucket}/runs/t/") == f"s3://{s3.bucket}/runs/t/teacher.pth"
    for key in ("runs/t/model.pth", "runs/t/teacher.pth"):
        assert s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == path.read_bytes()
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        upload_file(tmp_path / "missing.pth", f"s3://{s3.bucket}/x.pth")


def test_failed_multipart_upload_leaves_the_previous_object_intact(s3, tmp_path, monkeypatch):
    uri, key = f"s3://{s3.bucket}/runs/big.bin", "runs/big.bin"
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"previous version")
    monkeypatch.setattr(s3_module, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    monkeypatch.setattr(s3_module, "MULTIPART_CHUNKSIZE", 5 * 1024 * 1024)
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(11 * 1024 * 1024))  # three parts
    client = s3_client(s3.endpoint)
    counter = RequestCounter(client)
    counter.fail["UploadPart"] = {2}

    with pytest.raises(Exception, match="injected failure"):
        upload_file(path, uri, client=client)

    assert counter["CreateMultipartUpload"] == 1 and counter["AbortMultipartUpload"] == 1
    assert s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == b"previous version"
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")
    counter.fail.clear()
    upload_file(path, uri, client=client)  # the retry publishes the new object whole
    assert s3.client.head_object(Bucket=s3.bucket, Key=key)["ContentLength"] == path.stat().st_size


def test_upload_dir_round_trip_through_fetch_prefix(s3, market_tree, tmp_path):
    uris = upload_dir(market_tree, f"s3://{s3.bucket}/datasets/market/", workers=4)
    files = sorted(p.relative_to(market_tree).as_posix() for p in market_tree.rglob("*") if p.is_file())
    assert sorted(uris) == sorted(f"s3://{s3.bucket}/datasets/market/{rel}" for rel in files)
    folder = fetch_prefix(f"s3://{s3.bucket}/datasets/market", tmp_path / "cache", workers=4)
    for rel in files:
        assert (folder / rel).read_bytes() == (market_tree / rel).read_bytes()
    # uploading a cache folder does not publish the cache's own bookkeeping
    again = upload_dir(folder, f"s3://{s3.bucket}/copy", workers=2)
    assert len(again) == len(files)


def test_upload_dir_errors(s3, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        upload_dir(tmp_path / "nowhere", f"s3://{s3.bucket}/x")
    with pytest.raises(ValueError, match="workers"):
        upload_dir(tmp_path, f"s3://{s3.bucket}/x", workers=0)
