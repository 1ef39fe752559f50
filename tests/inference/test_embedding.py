"""The embed job in-process: equal to evaluate's extraction, resumable shard by shard, bad files listed."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from embed_helpers import BAD_NAME, crops_folder, reference_embeddings

from ray_reid.data.image_folder import BadImageError
from ray_reid.inference.embedding import EmbedConfig, embed_in_process
from ray_reid.inference.images import list_images, parse_ids
from ray_reid.inference.shards import MANIFEST, SUMMARY, read_embeddings, shard_name

CFG = EmbedConfig(shard_size=16, batch_size=7)


class StopAfter(Exception):
    pass


def _stop_after(k: int):
    written = []

    def hook(shard: int) -> None:
        written.append(shard)
        if len(written) == k:
            raise StopAfter(f"stopped after {k} shards")

    return hook


def test_shards_equal_evaluates_extraction_and_list_the_bad_file(tiny_synthetic_root, reid_checkpoint, tmp_path):
    images = crops_folder(tiny_synthetic_root, tmp_path / "crops")
    summary = embed_in_process(reid_checkpoint, images, tmp_path / "emb", CFG, progress=False)
    listed = list_images(images)
    good = [p for p in listed if not p.endswith(BAD_NAME)]
    assert summary.num_images == len(listed) == 89 and summary.num_shards == 6
    assert summary.shards_written == 6 and summary.shards_skipped == 0 and summary.embedded == 89
    assert [b["path"] for b in summary.bad] == [str(images / "cam_a" / BAD_NAME)]

    emb = read_embeddings(tmp_path / "emb")
    assert list(emb.paths) == good
    assert emb.cameras.tolist() == [parse_ids(p)[1] for p in good]
    assert set(emb.cameras.tolist()) == {1, 2, 3}
    np.testing.assert_allclose(emb.features["global"], reference_embeddings(reid_checkpoint, good), atol=2e-5)
    assert [b["path"] for b in emb.bad] == [str(images / "cam_a" / BAD_NAME)]
    saved = json.loads((tmp_path / "emb" / SUMMARY).read_text())
    assert saved["undecodable"] == 1
    assert saved["bad_images"][0]["error"].split(":")[0] in ("UnidentifiedImageError", "OSError", "SyntaxError")


def test_an_interrupted_job_rerun_writes_only_the_missing_shards(tiny_synthetic_root, reid_checkpoint, tmp_path):
    images = crops_folder(tiny_synthetic_root, tmp_path / "crops")
    whole = embed_in_process(reid_checkpoint, images, tmp_path / "whole", CFG, progress=False)
    with pytest.raises(StopAfter):
        embed_in_process(reid_checkpoint, images, tmp_path / "cut", CFG, progress=False, on_shard=_stop_after(2))
    first = sorted(p.name for p in (tmp_path / "cut").glob("part-*.parquet"))
    assert first == [shard_name(0), shard_name(1)]
    stamps = {name: os.stat(tmp_path / "cut" / name).st_mtime_ns for name in first}
    assert not list((tmp_path / "cut").glob(".*tmp"))  # nothing half-written left behind

    rerun = embed_in_process(reid_checkpoint, images, tmp_path / "cut", CFG, progress=False)
    assert (rerun.shards_skipped, rerun.shards_written, rerun.embedded) == (2, 4, 89 - 32)
    assert {name: os.stat(tmp_path / "cut" / name).st_mtime_ns for name in first} == stamps
    a, b = read_embeddings(tmp_path / "whole"), read_embeddings(tmp_path / "cut")
    assert list(a.paths) == list(b.paths)
    # same batches per shard now; 1e-6 still tells a wrong or shifted row (~0.1 apart) from kernel rounding
    np.testing.assert_allclose(a.features["global"], b.features["global"], atol=1e-6)
    assert rerun.bad == whole.bad  # the bad file of a kept shard is still listed

    again = embed_in_process(reid_checkpoint, images, tmp_path / "cut", CFG, progress=False)
    assert (again.shards_skipped, again.shards_written, again.embedded) == (6, 0, 0)


def test_strict_stops_at_the_bad_file_and_names_it(tiny_synthetic_root, reid_checkpoint, tmp_path):
    images = crops_folder(tiny_synthetic_root, tmp_path / "crops")
    strict = EmbedConfig(shard_size=16, batch_size=7, strict=True)
    with pytest.raises(BadImageError, match=BAD_NAME):
        embed_in_process(reid_checkpoint, images, tmp_path / "emb", strict, progress=False)


def test_another_cut_or_listing_into_the_same_folder_is_refused(tiny_synthetic_root, reid_checkpoint, tmp_path):
    images = crops_folder(tiny_synthetic_root, tmp_path / "crops", bad=False)
    embed_in_process(reid_checkpoint, images, tmp_path / "emb", CFG, progress=False)
    with pytest.raises(ValueError, match="shard size"):
        embed_in_process(reid_checkpoint, images, tmp_path / "emb", EmbedConfig(shard_size=8), progress=False)
    (images / "cam_a" / "0001_c1s9_000001_01.jpg").write_bytes((images / "cam_a" / os.listdir(images / "cam_a")[0])
                                                              .read_bytes())
    with pytest.raises(ValueError, match="image list"):
        embed_in_process(reid_checkpoint, images, tmp_path / "emb", CFG, progress=False)
    assert json.loads((tmp_path / "emb" / MANIFEST).read_text())["num_images"] == 88


def test_bad_arguments_fail_before_any_work(reid_checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        embed_in_process(reid_checkpoint, tmp_path / "nowhere", tmp_path / "emb", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        embed_in_process(reid_checkpoint, tmp_path / "empty", tmp_path / "emb", progress=False)
    with pytest.raises(ValueError, match="shard_size"):
        EmbedConfig(shard_size=0)
    assert not (tmp_path / "emb").exists()
