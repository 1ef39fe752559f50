"""The Ray Data embed pipeline on the shared Ray session: equal to the in-process job, resumable, S3 in and out."""

from __future__ import annotations

import numpy as np
import pytest
from embed_helpers import BAD_NAME, crops_folder
from s3_server import put_tree

from ray_reid.inference.embedding import EmbedConfig, embed_in_process
from ray_reid.inference.shards import read_embeddings, shard_name

# slow: each test starts a Ray Data actor pool (model load in a fresh worker); not yet run on a quiet machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CFG = EmbedConfig(shard_size=16, batch_size=8, actors=1)


class StopAfter(Exception):
    pass


@pytest.fixture(scope="module")
def crops(tiny_synthetic_root, tmp_path_factory):
    return crops_folder(tiny_synthetic_root, tmp_path_factory.mktemp("crops"))


@pytest.fixture(scope="module")
def reference(crops, reid_checkpoint, tmp_path_factory):
    """The same job run in this process, without Ray."""
    out = tmp_path_factory.mktemp("reference")
    embed_in_process(reid_checkpoint, crops, out, CFG, progress=False)
    return read_embeddings(out)


def _assert_same(got, want):
    assert list(got.paths) == list(want.paths)
    assert got.cameras.tolist() == want.cameras.tolist()
    np.testing.assert_allclose(got.features["global"], want.features["global"], atol=1e-5)
    assert [b["path"] for b in got.bad] == [b["path"] for b in want.bad]


def test_pipeline_equals_the_in_process_job_and_lists_the_bad_file(ray_session, crops, reid_checkpoint, reference,
                                                                   tmp_path):
    from ray_reid.distributed.embed import embed_images

    summary = embed_images(reid_checkpoint, crops, tmp_path / "emb", CFG, progress=False)
    assert (summary.num_images, summary.shards_written, summary.shards_skipped) == (89, 6, 0)
    assert [b["path"].rsplit("/", 1)[-1] for b in summary.bad] == [BAD_NAME]
    _assert_same(read_embeddings(tmp_path / "emb"), reference)


def test_pipeline_stopped_after_two_shards_then_rerun_writes_only_the_rest(ray_session, crops, reid_checkpoint,
                                                                           reference, tmp_path):
    from ray_reid.distributed.embed import embed_images

    def stop(shard: int) -> None:
        stop.written.append(shard)
        if len(stop.written) == 2:
            raise StopAfter("fault hook: the job dies after two shards")

    stop.written = []
    with pytest.raises(StopAfter):
        embed_images(reid_checkpoint, crops, tmp_path / "emb", CFG, progress=False, on_shard=stop)
    kept = sorted(p.name for p in (tmp_path / "emb").glob("part-*.parquet"))
    assert kept == [shard_name(0), shard_name(1)]
    stamps = {name: (tmp_path / "emb" / name).stat().st_mtime_ns for name in kept}

    rerun = embed_images(reid_checkpoint, crops, tmp_path / "emb", CFG, progress=False)
    assert (rerun.shards_skipped, rerun.shards_written, rerun.embedded) == (2, 4, 89 - 32)
    assert {name: (tmp_path / "emb" / name).stat().st_mtime_ns for name in kept} == stamps
    _assert_same(read_embeddings(tmp_path / "emb"), reference)


def test_pipeline_reads_and_writes_s3(ray_session, s3, crops, reid_checkpoint, reference):
    from ray_reid.distributed.embed import embed_images

    put_tree(s3.client, crops, s3.bucket, "crops")
    out = f"s3://{s3.bucket}/embeddings/gallery"
    summary = embed_images(reid_checkpoint, f"s3://{s3.bucket}/crops", out, CFG, progress=False,
                           endpoint_url=s3.endpoint)
    assert summary.shards_written == 6 and len(summary.bad) == 1
    got = read_embeddings(out, endpoint_url=s3.endpoint)
    assert all(p.startswith(f"s3://{s3.bucket}/crops/") for p in got.paths)
    assert [p.rsplit("/", 1)[-1] for p in got.paths] == [p.rsplit("/", 1)[-1] for p in reference.paths]
    np.testing.assert_allclose(got.features["global"], reference.features["global"], atol=1e-5)
    keys = {o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="embeddings/")["Contents"]}
    assert {f"embeddings/gallery/{shard_name(i)}" for i in range(6)} <= keys
    assert {"embeddings/gallery/_embed.json", "embeddings/gallery/_summary.json"} <= keys
