"""Per-epoch Parquet tables and the pyarrow filesystem Ray Train writes through."""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

from ray_reid.storage import embeddings_table, pyarrow_filesystem, read_parquet_table, view_array, write_parquet_table


def _table(n: int = 6, epoch: int = 3) -> tuple[pa.Table, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    features = {"global": rng.normal(size=(n, 8)).astype(np.float32),
                "up": rng.normal(size=(n, 4)), "down": rng.normal(size=(n, 4))}
    labels = np.array([0, 0, 1, -1, 1, 2][:n])
    return embeddings_table(np.arange(n) * 10, features, labels, epoch), features


def test_embeddings_table_schema_and_round_trip():
    table, features = _table()
    assert table.column_names == ["index", "label", "epoch", "global", "up", "down"]
    assert table.schema.field("index").type == pa.int64() and table.schema.field("epoch").type == pa.int32()
    assert table.schema.field("global").type == pa.list_(pa.float32(), 8)
    assert table.column("label").to_pylist() == [0, 0, 1, -1, 1, 2]
    assert set(table.column("epoch").to_pylist()) == {3}
    for view, array in features.items():
        np.testing.assert_array_equal(view_array(table, view), array.astype(np.float32))
    with pytest.raises(ValueError, match="valid views: \\['global', 'up', 'down'\\]"):
        view_array(table, "label")


@pytest.mark.parametrize("kwargs, match", [
    ({"labels": np.zeros(5, int)}, "labels must be .* length 6"),
    ({"features": {"global": np.zeros((5, 8))}}, "features\\['global'\\] must have shape \\(6, d\\)"),
    ({"features": {"label": np.zeros((6, 8))}}, "view name 'label'"),
    ({"features": {}}, "at least one view"),
    ({"indices": np.arange(6.0)}, "indices must be a 1-D integer"),
    ({"epoch": -1}, "epoch must be"),
])
def test_embeddings_table_rejects_bad_input(kwargs, match):
    args = {"indices": np.arange(6), "features": {"global": np.zeros((6, 8))}, "labels": np.zeros(6, int), "epoch": 0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        embeddings_table(**args)


def test_write_parquet_table_locally_is_atomic(tmp_path):
    table, _ = _table()
    dest = tmp_path / "run" / "epoch_003.parquet"
    assert write_parquet_table(table, dest) == str(dest)
    assert read_parquet_table(dest).equals(table)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["epoch_003.parquet"]
    with pytest.raises(ValueError, match="unsupported destination 'gs://b/x'"):
        write_parquet_table(table, "gs://b/x")
    with pytest.raises(FileNotFoundError, match="nothing.parquet"):
        read_parquet_table(tmp_path / "nothing.parquet")


def test_write_parquet_table_to_s3_and_read_back(s3):
    table, features = _table()
    uri = f"s3://{s3.bucket}/runs/r1/embeddings/epoch_003.parquet"
    assert write_parquet_table(table, uri) == uri
    body = s3.client.get_object(Bucket=s3.bucket, Key="runs/r1/embeddings/epoch_003.parquet")["Body"].read()
    assert pq.read_table(io.BytesIO(body)).equals(table)
    back = read_parquet_table(uri)
    np.testing.assert_array_equal(view_array(back, "up"), features["up"].astype(np.float32))
    with pytest.raises(ValueError, match="must name an object"):
        write_parquet_table(table, f"s3://{s3.bucket}/runs/")


def test_pyarrow_filesystem_local_path_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pyarrow_filesystem("runs") == (None, str(tmp_path / "runs"))
    with pytest.raises(ValueError, match="unsupported storage URI 'hdfs://x/y'"):
        pyarrow_filesystem("hdfs://x/y")


def test_pyarrow_filesystem_with_custom_endpoint_writes_and_lists(s3):
    filesystem, path = pyarrow_filesystem(f"s3://{s3.bucket}/runs/exp1", endpoint_url=s3.endpoint)
    assert isinstance(filesystem, pafs.S3FileSystem) and path == f"{s3.bucket}/runs/exp1"
    with filesystem.open_output_stream(f"{path}/checkpoint_000001/model.pt") as out:
        out.write(b"weights")
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File)
    assert files == [f"{path}/checkpoint_000001/model.pt"]
    assert s3.client.get_object(Bucket=s3.bucket, Key="runs/exp1/checkpoint_000001/model.pt")["Body"].read() == b"weights"
    # the endpoint also comes from the environment the fixture set (RAY_REID_S3_ENDPOINT)
    assert os.environ["RAY_REID_S3_ENDPOINT"] == s3.endpoint
    env_fs, env_path = pyarrow_filesystem(f"s3://{s3.bucket}")
    assert env_path == s3.bucket
    assert [i.path for i in env_fs.get_file_info(pafs.FileSelector(s3.bucket))] == [f"{s3.bucket}/runs"]
