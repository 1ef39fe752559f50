"""The plots are written as valid PNGs from tiny inputs, and bad input is refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from ray_reid.eval.plots import plot_embedding, plot_rank_list, plot_training_curves


def assert_png(path, min_size=(100, 100)):
    assert path.exists()
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.verify()
    with Image.open(path) as img:
        assert img.size[0] >= min_size[0] and img.size[1] >= min_size[1]
    assert not list(path.parent.glob("*.tmp")), "temp file left behind"


def test_training_curves_with_sparse_and_nan_metrics(tmp_path):
    rows = []
    for epoch in range(6):
        row = {"epoch": epoch, "loss": 3.0 / (epoch + 1), "n_clusters": 700 - 20 * epoch, "ari": 0.1 * epoch}
        if epoch % 2 == 0:
            row.update(mAP=0.1 * epoch, rank1=0.15 * epoch, nmi=0.5)
        else:
            row["mAP"] = math.nan
        rows.append(row)
    out = plot_training_curves(rows, tmp_path / "sub" / "curves.png")
    assert out == tmp_path / "sub" / "curves.png"
    assert_png(out, (600, 400))


def test_training_curves_with_missing_panels(tmp_path):
    out = plot_training_curves([{"loss": 1.0}, {"loss": 0.5}], tmp_path / "c.png")
    assert_png(out)
    with pytest.raises(ValueError, match="out_png must end in .png"):
        plot_training_curves([{"loss": 1.0}], tmp_path / "c.jpg")
    with pytest.raises(ValueError, match="rows must be a list of dicts"):
        plot_training_curves([1, 2], tmp_path / "c.png")


@pytest.fixture()
def crops(tmp_path):
    rng = np.random.default_rng(0)
    query, gallery = [], []
    for i, (pid, cam) in enumerate([(1, 0), (2, 0), (3, 1)]):
        p = tmp_path / f"q{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)).save(p)
        query.append((str(p), pid, cam))
    for i, (pid, cam) in enumerate([(1, 1), (1, 0), (2, 2), (0, 1), (-1, 1), (3, 0), (2, 1), (4, 2)]):
        p = tmp_path / f"g{i}.png"
        Image.fromarray(rng.integers(0, 255, (50, 25, 3), dtype=np.uint8)).save(p)
        gallery.append((str(p), pid, cam))
    return query, gallery, rng.random((3, 8)).astype(np.float32)


def test_rank_list(tmp_path, crops):
    query, gallery, distmat = crops
    out = plot_rank_list(query, gallery, distmat, tmp_path / "ranks.png", n_queries=5, topk=4)
    assert_png(out, (300, 300))


def test_rank_list_bad_input(tmp_path, crops):
    query, gallery, distmat = crops
    with pytest.raises(ValueError, match="distmat has shape"):
        plot_rank_list(query, gallery, distmat[:, :5], tmp_path / "r.png")
    with pytest.raises(ValueError, match="topk must be a positive integer"):
        plot_rank_list(query, gallery, distmat, tmp_path / "r.png", topk=0)
    with pytest.raises(ValueError, match=r"\(path, pid, camid\)"):
        plot_rank_list([("a.jpg", 1)], gallery, distmat[:1], tmp_path / "r.png")
    missing = [(str(tmp_path / "nope.jpg"), 1, 0)]
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        plot_rank_list(missing, gallery, distmat[:1], tmp_path / "r.png")


def test_embedding(tmp_path):
    rng = np.random.default_rng(1)
    true = np.repeat(np.arange(3), 10)
    feats = rng.standard_normal((3, 16))[true] + 0.2 * rng.standard_normal((30, 16))
    pseudo = true.copy()
    pseudo[::7] = -1
    out = plot_embedding(feats, true, pseudo, tmp_path / "tsne.png", max_points=25)
    assert_png(out, (600, 300))


def test_embedding_bad_input(tmp_path):
    with pytest.raises(ValueError, match="must both be 1-D of length 30"):
        plot_embedding(np.zeros((30, 4)), np.zeros(29), np.zeros(30), tmp_path / "t.png")
    with pytest.raises(ValueError, match="features must be 2-D"):
        plot_embedding(np.zeros(30), np.zeros(30), np.zeros(30), tmp_path / "t.png")
