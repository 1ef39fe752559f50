"""A whole distributed run against S3 (a real moto server on loopback), then a resume from S3.

Everything a cluster run keeps off local disk goes through the bucket here: the dataset is
read from ``s3://…/datasets/…`` into the node cache, checkpoints and the run summary go to
``s3://…/runs/<name>``, the ClusteringActor writes each epoch's embeddings there as Parquet,
and a second run with the same name picks the latest checkpoint up from the bucket.

Credentials reach Ray's workers through the shared ``ray_session`` fixture (its runtime_env
carries the dummy ``AWS_*`` variables); the endpoint reaches them through ``run.s3_endpoint``.
"""

from __future__ import annotations

import json
import shutil
import uuid

import numpy as np
import pytest
from s3_server import keys_under, put_tree

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def read_latest_history(s3, objects: dict[str, dict]) -> list[dict]:
    """The history stored in the newest checkpoint folder (Ray names them by time, so they sort)."""
    from ray_reid.engine.checkpoint import HISTORY_FILE

    key = max(k for k in objects if "/checkpoint_" in k and k.endswith("/" + HISTORY_FILE))
    return json.loads(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())


@pytest.fixture
def s3_dataset(s3, tiny_synthetic_root):
    """The tiny dataset under a prefix of its own, so the node cache cannot already hold it."""
    from ray_reid.data.resolve import cache_dir

    name = f"tiny-{uuid.uuid4().hex[:8]}"
    keys = put_tree(s3.client, tiny_synthetic_root, s3.bucket, f"datasets/{name}")
    cached = cache_dir() / "s3" / s3.bucket / "datasets" / name
    yield f"s3://{s3.bucket}/datasets/{name}", keys, cached
    shutil.rmtree(cached, ignore_errors=True)


def test_training_reads_from_and_writes_to_s3_then_resumes_from_s3(ray_session, s3, s3_dataset):
    from ray_reid.run import train

    from ray_reid.config import config_from_dict
    from ray_reid.storage import read_parquet_table, view_array

    data_uri, dataset_keys, cached = s3_dataset
    assert not cached.exists()

    def cfg(epochs: int):
        return config_from_dict({}, {
            "data.dataset": "synthetic", "data.root": data_uri, "data.height": 32, "data.width": 16,
            "model.backbone": "resnet18", "cluster.merge_percent": 0.5, "optim.epochs": epochs, "optim.iters": 2,
            "optim.p": 4, "optim.k": 2, "run.num_workers": 2, "run.cpus_per_worker": 1,
            "run.storage_path": f"s3://{s3.bucket}/runs", "run.name": "s3run", "run.s3_endpoint": s3.endpoint,
            "run.save_embeddings": True, "run.eval_every": 1,
        })

    summary = train(cfg(2)).summary
    assert summary["epochs"] == 2

    # the dataset went through the node cache, whole
    cached_files = sorted(p.relative_to(cached).as_posix() for p in cached.rglob("*")
                          if p.is_file() and not p.name.startswith("."))
    assert cached_files == sorted(k.split("/", 2)[2] for k in dataset_keys)

    run_prefix = "runs/s3run/"
    objects = keys_under(s3.client, s3.bucket, run_prefix)
    names = sorted(k[len(run_prefix):] for k in objects)
    checkpoints = sorted({n.split("/")[0] for n in names if n.startswith("checkpoint_") and n.endswith("/state.pt")})
    assert len(checkpoints) == 2, names
    assert "summary.json" in names, names
    stored_summary = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=run_prefix + "summary.json")["Body"].read())
    assert stored_summary["epochs"] == 2 and stored_summary["run"] == "s3run"
    history = read_latest_history(s3, objects)
    assert [row["epoch"] for row in history] == [0, 1]

    n_images = None
    for row in history:
        uri = f"s3://{s3.bucket}/{run_prefix}embeddings/epoch_{row['epoch']:04d}.parquet"
        table = read_parquet_table(uri, endpoint_url=s3.endpoint)
        features = view_array(table, "global")
        n_images = n_images or len(features)
        assert features.shape[0] == table.num_rows == n_images and features.shape[1] > 0
        assert np.isfinite(features).all()
        assert sorted(table.column("index").to_numpy()) == list(range(n_images))
        labels = table.column("label").to_numpy()
        assert set(table.column("epoch").to_numpy()) == {row["epoch"]}
        assert int(labels.max()) + 1 == row["n_clusters"]
        assert int((labels < 0).sum()) == row["n_outliers"]
    embeddings_before = {k: v["LastModified"] for k, v in objects.items() if "/embeddings/" in k}

    # Same name, one more epoch: picks the checkpoint up from the bucket and runs epoch 2 only.
    resumed = train(cfg(3)).summary
    assert resumed["epochs"] == 3
    objects = keys_under(s3.client, s3.bucket, run_prefix)
    history3 = read_latest_history(s3, objects)
    assert [row["epoch"] for row in history3] == [0, 1, 2]
    assert history3[:2] == history
    # epochs 0 and 1 were not clustered again: their embeddings objects are untouched
    assert {k: objects[k]["LastModified"] for k in embeddings_before} == embeddings_before
    assert f"{run_prefix}embeddings/epoch_0002.parquet" in objects
