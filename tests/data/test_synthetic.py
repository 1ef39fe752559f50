"""The synthetic Market-1501-layout generator: determinism, layout, protocol guarantees, looks."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ray_reid.data import synthetic
from ray_reid.data.synthetic import (
    DEFAULT_CONFIG,
    GALLERY_DIR,
    QUERY_DIR,
    SPLIT_DIRS,
    TRAIN_DIR,
    SyntheticConfig,
    generate_dataset,
)

NAME_RE = re.compile(r"^(-?\d+)_c(\d+)")
FULL_NAME_RE = re.compile(r"^(\d{4})_c(\d)s(\d+)_(\d{6})_(\d{2})\.jpg$")
TINY = SyntheticConfig(ids=10, cams=3, seed=7, height=32, width=16, distractors=8)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def records(root: Path, split: str) -> list[tuple[int, int, str]]:
    out = []
    for p in sorted((root / split).iterdir()):
        m = NAME_RE.match(p.name)
        assert m is not None, p.name
        out.append((int(m.group(1)), int(m.group(2)), p.name))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "tiny"
    generate_dataset(root, TINY, progress=False)
    return root


def test_same_seed_gives_identical_bytes(tiny, tmp_path):
    again = tmp_path / "again"
    generate_dataset(again, TINY, progress=False)
    assert tree_bytes(tiny) == tree_bytes(again)


def test_different_seed_gives_different_images(tiny, tmp_path):
    other = tmp_path / "other"
    generate_dataset(other, dataclasses.replace(TINY, seed=8), progress=False)
    a, b = tree_bytes(tiny), tree_bytes(other)
    common = [k for k in a if k in b and k.endswith(".jpg")]
    assert a != b
    # Files that happen to share a name must still show different pictures.
    assert sum(a[k] != b[k] for k in common) == len(common)


def test_layout_names_and_image_sizes(tiny):
    assert sorted(p.name for p in tiny.iterdir()) == sorted([*SPLIT_DIRS, "summary.json"])
    names = []
    for split in SPLIT_DIRS:
        for p in (tiny / split).iterdir():
            m = FULL_NAME_RE.match(p.name)
            assert m is not None, f"{p.name} is not a Market-1501 name"
            assert 1 <= int(m.group(2)) <= TINY.cams
            with Image.open(p) as im:
                assert im.format == "JPEG"
                assert im.mode == "RGB"
                assert im.size == (TINY.width, TINY.height)
            names.append(p.name)
    assert len(names) == len(set(names)), "file names must be unique across splits"
    assert not [p for p in tiny.parent.iterdir() if ".tmp-" in p.name], "temporary folder left behind"


def test_train_and_test_identities_are_disjoint_halves(tiny):
    train = {pid for pid, _, _ in records(tiny, TRAIN_DIR)}
    query = {pid for pid, _, _ in records(tiny, QUERY_DIR)}
    gallery = {pid for pid, _, _ in records(tiny, GALLERY_DIR)} - {0}
    assert len(train) == TINY.ids // 2
    assert query == gallery
    assert len(query) == TINY.ids - TINY.ids // 2
    assert not train & query
    assert train | query == set(range(1, TINY.ids + 1)), "pids start at 1 and cover all ids"


def test_identities_span_cameras_with_uneven_counts(tiny):
    per_id_cam = Counter((pid, cam) for split in SPLIT_DIRS for pid, cam, _ in records(tiny, split) if pid != 0)
    cams_of = defaultdict(set)
    for pid, cam in per_id_cam:
        cams_of[pid].add(cam)
    assert all(len(c) >= TINY.min_cams_per_id for c in cams_of.values())
    assert max(per_id_cam.values()) <= TINY.max_images_per_cam
    assert len(set(per_id_cam.values())) >= 3, "images per camera should vary like Market's"


def test_one_query_per_test_identity_and_camera(tiny):
    query = Counter((pid, cam) for pid, cam, _ in records(tiny, QUERY_DIR))
    assert set(query.values()) == {1}
    seen = {(pid, cam) for pid, cam, _ in records(tiny, GALLERY_DIR) if pid != 0} | set(query)
    assert set(query) == seen, "every (test identity, camera) pair has exactly one query"


def test_every_query_has_a_gallery_match_under_another_camera(tiny):
    gallery = records(tiny, GALLERY_DIR)
    for pid, cam, name in records(tiny, QUERY_DIR):
        assert any(g_pid == pid and g_cam != cam for g_pid, g_cam, _ in gallery), name


def test_distractors_only_in_gallery(tiny):
    gallery = records(tiny, GALLERY_DIR)
    assert sum(pid == 0 for pid, _, _ in gallery) == TINY.distractors
    assert len({cam for pid, cam, _ in gallery if pid == 0}) > 1
    for split in (TRAIN_DIR, QUERY_DIR):
        assert all(pid != 0 for pid, _, _ in records(tiny, split))


def test_summary_matches_files(tiny):
    summary = json.loads((tiny / "summary.json").read_text())
    assert summary["version"] == synthetic.GENERATOR_VERSION
    assert summary["config"] == dataclasses.asdict(TINY)
    for split in SPLIT_DIRS:
        recs = records(tiny, split)
        assert summary["splits"][split]["images"] == len(recs)
        assert summary["splits"][split]["ids"] == len({pid for pid, _, _ in recs if pid != 0})
    assert summary["splits"][GALLERY_DIR]["distractors"] == TINY.distractors


def test_default_config_is_the_small_embedded_set():
    d = DEFAULT_CONFIG
    assert (d.height, d.width, d.cams, d.ids) == (64, 32, 6, 200)
    shots = synthetic._plan(d)
    n_train = sum(s.split == TRAIN_DIR for s in shots)
    assert 1000 <= n_train <= 1500
    assert sum(s.pid == 0 for s in shots) == d.distractors == 50


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ids", 1), ("ids", 10_000), ("ids", "10"), ("ids", True), ("cams", 1), ("cams", 10),
        ("seed", -1), ("height", 8), ("width", 4), ("distractors", -1), ("max_images_per_cam", 0),
        ("min_cams_per_id", 1), ("min_cams_per_id", 4), ("jpeg_quality", 100), ("supersample", 0),
        ("near_duplicate_fraction", 1.5), ("near_duplicate_fraction", "a lot"), ("camera_strength", -0.1),
    ],
)
def test_config_validation_names_the_field(field, value):
    base = {"ids": 10, "cams": 3}
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**{**base, field: value})


def test_config_accepts_numpy_numbers_and_stores_plain_python():
    config = SyntheticConfig(ids=np.int64(10), cams=np.int32(3), camera_strength=np.float32(0.5))
    assert type(config.ids) is int and type(config.cams) is int and type(config.camera_strength) is float
    json.dumps(dataclasses.asdict(config))  # summary.json must be writable


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_dataset(out, TINY, progress=False)
    assert (out / "precious.txt").read_text() == "keep me"
    generate_dataset(out, TINY, overwrite=True, progress=False)
    assert not (out / "precious.txt").exists()
    assert (out / QUERY_DIR).is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "no temp or backup folders left"


def test_empty_existing_directory_is_fine(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    generate_dataset(out, TINY, progress=False)
    assert (out / TRAIN_DIR).is_dir()


def test_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    real = synthetic._render
    monkeypatch.setattr(synthetic, "_render", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_dataset(tmp_path / "data", TINY, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_near_duplicates_differ_from_their_original_in_one_detail():
    config = dataclasses.replace(TINY, near_duplicate_fraction=1.0)
    people = synthetic._identities(config, list(range(1, 30)))
    first = people[1]  # with fraction 1 every later identity copies the first one
    for pid in range(2, 30):
        diffs = [f.name for f in dataclasses.fields(first) if getattr(first, f.name) != getattr(people[pid], f.name)]
        assert len(diffs) == 1, (pid, diffs)


def test_view_decides_what_is_visible():
    """A logo shows only from the front; a backpack is a big block from behind, straps from the front."""
    mark = (255.0, 0.0, 255.0)
    who = dataclasses.replace(
        synthetic._random_identity(np.random.default_rng(0)),
        top=(10.0, 10.0, 10.0), top_pattern="logo", top_second=mark, backpack=None, bag=None, hat=None,
    )

    def count(person, view: str, colour) -> int:
        img = np.zeros((128, 64, 3), np.float32)
        synthetic._draw_person(synthetic._Painter(img), person, view, 4.0, 32.0, 120.0, phase=0.5, facing=1)
        return int(np.all(img == np.asarray(colour, np.float32), axis=-1).sum())

    assert count(who, "front", mark) > 20
    assert count(who, "back", mark) == 0
    assert count(who, "side", mark) == 0
    pack = (0.0, 255.0, 0.0)
    hiker = dataclasses.replace(who, top_pattern="solid", backpack=pack)
    back, side, front = (count(hiker, v, pack) for v in ("back", "side", "front"))
    assert back > side > 0 and back > front > 0
    assert count(hiker, "side", hiker.top) < count(hiker, "front", hiker.top), "side view is narrower"


def test_raw_pixels_group_by_camera_and_still_carry_identity(tmp_path):
    """The re-ID problem in miniature: cameras dominate raw appearance, identity is still there."""
    config = SyntheticConfig(ids=24, cams=3, seed=1, height=32, width=16, distractors=0)
    generate_dataset(tmp_path / "d", config, progress=False)
    recs = records(tmp_path / "d", TRAIN_DIR)
    feats = np.stack([np.asarray(Image.open(tmp_path / "d" / TRAIN_DIR / n), np.float32).ravel() for *_, n in recs])
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    pids = np.array([r[0] for r in recs])
    cams = np.array([r[1] for r in recs])
    dist = ((feats[:, None, :] - feats[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    nn = dist.argmin(axis=1)
    same_cam = (cams[nn] == cams).mean()
    assert same_cam > 1.0 / config.cams + 0.2, f"cameras should shape raw appearance (NN same camera {same_cam:.2f})"
    # Within one camera, the same person is closer than another person on average.
    both = (cams[:, None] == cams[None, :]) & np.isfinite(dist)
    same_id = pids[:, None] == pids[None, :]
    assert dist[both & same_id].mean() < dist[both & ~same_id].mean()
    # Across cameras, identity still helps: nearest cross-camera neighbour is right far above chance.
    cross = np.where(cams[:, None] != cams[None, :], dist, np.inf)
    hit = (pids[cross.argmin(axis=1)] == pids).mean()
    assert hit > 3.0 / len(set(pids.tolist()))


def test_camera_strength_zero_makes_photometrics_neutral():
    config = dataclasses.replace(TINY, camera_strength=0.0)
    for cam in range(config.cams):
        c = synthetic._camera(config, cam)
        assert (c.gain, c.cast, c.contrast, c.blur) == (1.0, (1.0, 1.0, 1.0), 1.0, 0.0)


def test_cli_writes_dataset_and_rejects_bad_input(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--out", str(out), "--ids", "6", "--cams", "2", "--height", "32", "--width", "16", "--quiet"]
    assert synthetic.main(args) == 0
    assert (out / "summary.json").is_file()
    assert synthetic.main(args) == 2  # non-empty output refused
    assert "overwrite" in capsys.readouterr().err
    assert synthetic.main([*args, "--overwrite"]) == 0
    assert synthetic.main(["--out", str(tmp_path / "x"), "--cams", "12"]) == 2
    assert "cams" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
    out = tmp_path / "m"
    proc = subprocess.run(
        [sys.executable, "-m", "ray_reid.data.synthetic", "--out", str(out), "--ids", "4", "--cams", "2",
         "--seed", "3", "--height", "32", "--width", "16", "--distractors", "2", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(list((out / QUERY_DIR).glob("*.jpg"))) >= 2
