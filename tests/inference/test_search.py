"""search: faiss top-k equals the exact ranking, the camera filter holds, and metrics equal evaluate's."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ray_reid.eval.rerank import RerankConfig, k_reciprocal_rerank
from ray_reid.eval.topk import FeatureDistances, exact_topk
from ray_reid.inference.search import CameraMasked, EmbeddingIndex, IndexConfig, reranked_topk, search_topk


def _unit(rng, n, d=32):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_index_is_exact_and_the_camera_filter_drops_same_camera_hits_only():
    rng = np.random.default_rng(0)
    gallery, queries = _unit(rng, 300), _unit(rng, 40)
    g_cams, q_cams = rng.integers(0, 4, 300), rng.integers(0, 4, 40)
    g_cams[:10] = -1  # unknown cameras are never filtered
    index = EmbeddingIndex(gallery, IndexConfig(kind="flat"))
    dist, idx = index.search(queries, 15)
    ref_d, ref_i = exact_topk(FeatureDistances(queries, gallery), 15)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, atol=1e-5)

    dist, idx = search_topk(index, queries, 15, query_cameras=q_cams, gallery_cameras=g_cams)
    ref_d, ref_i = exact_topk(CameraMasked(FeatureDistances(queries, gallery), q_cams, g_cams), 15)
    np.testing.assert_array_equal(idx, ref_i)
    assert not ((g_cams[idx] == q_cams[:, None]) & (g_cams[idx] != -1)).any()


def test_camera_filter_pads_when_the_gallery_runs_out():
    rng = np.random.default_rng(1)
    gallery = _unit(rng, 6)
    index = EmbeddingIndex(gallery, IndexConfig(kind="flat"))
    dist, idx = search_topk(index, gallery[:2], 5, query_cameras=np.array([0, 1]),
                            gallery_cameras=np.array([0, 0, 0, 0, 1, 1]))
    assert (idx[0, :2] >= 4).all() and (idx[0, 2:] == -1).all() and np.isinf(dist[0, 2:]).all()
    assert (idx[1, :4] < 4).all() and idx[1, 4] == -1


def test_ivfpq_finds_near_duplicates_with_a_fraction_of_the_memory():
    rng = np.random.default_rng(2)
    gallery = _unit(rng, 2000, 64)
    queries = gallery[:200] + 0.02 * rng.standard_normal((200, 64)).astype(np.float32)
    index = EmbeddingIndex(gallery, IndexConfig(kind="ivfpq", nlist=16, pq_m=16, nprobe=4))
    assert index.kind == "ivfpq"
    _, idx = index.search(queries, 1)
    assert (idx[:, 0] == np.arange(200)).mean() >= 0.9
    with pytest.raises(ValueError, match="pq_m=7 must divide"):
        EmbeddingIndex(gallery, IndexConfig(kind="ivfpq", nlist=16, pq_m=7))
    with pytest.raises(ValueError, match="needs at least"):
        EmbeddingIndex(gallery[:100], IndexConfig(kind="ivfpq", nlist=16, pq_m=16))
    with pytest.raises(ValueError, match="kind must be one of"):
        IndexConfig(kind="hnsw")


def test_reranked_topk_equals_the_head_of_the_dense_reranked_ranking():
    rng = np.random.default_rng(3)
    gallery, queries = _unit(rng, 120), _unit(rng, 20)
    g_cams, q_cams = rng.integers(0, 3, 120), rng.integers(0, 3, 20)
    cfg = RerankConfig(k1=10, k2=4)
    dense = k_reciprocal_rerank(queries, gallery, cfg).to_dense()
    dense[q_cams[:, None] == g_cams[None, :]] = np.inf
    ref = np.argsort(dense, axis=1, kind="stable")[:, :8]
    _, idx, _ = reranked_topk(queries, gallery, 8, cfg, query_cameras=q_cams, gallery_cameras=g_cams)
    np.testing.assert_array_equal(idx, ref)


@pytest.fixture(scope="module")
def embedded_split(tiny_synthetic_root, reid_checkpoint, tmp_path_factory):
    """The synthetic test split embedded by the embed job (in-process): gallery and queries."""
    from ray_reid.inference.embedding import EmbedConfig, embed_in_process

    out = tmp_path_factory.mktemp("split")
    for split, name in (("bounding_box_test", "gallery"), ("query", "queries")):
        embed_in_process(reid_checkpoint, tiny_synthetic_root / split, out / name, EmbedConfig(shard_size=32),
                         progress=False)
    return out


@pytest.mark.parametrize("rerank", [None, RerankConfig()], ids=["plain", "rerank"])
def test_search_gives_evaluates_rank1_and_map(embedded_split, tiny_synthetic_root, reid_checkpoint, tmp_path,
                                              rerank):
    from ray_reid import run
    from ray_reid.inference.query import search_images

    result = search_images(str(embedded_split / "gallery"), str(embedded_split / "queries"), str(tmp_path / "s"),
                           k=5, evaluate=True, rerank=rerank, plot_queries=3)
    expected = run.evaluate(reid_checkpoint, out=tmp_path / "eval", dataset="synthetic",
                            data_root=str(tiny_synthetic_root), rerank=rerank, max_tsne_points=50)
    expected = expected["rerank"] if rerank is not None else expected
    assert result.metrics["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert result.metrics["rank1"] == pytest.approx(expected["rank1"], abs=1e-9)
    assert result.metrics["rank5"] == pytest.approx(expected["rank5"], abs=1e-9)

    rows = json.loads((tmp_path / "s" / "results.json").read_text())
    assert len(rows) == len(result.query_paths) and all(len(r["hits"]) == 5 for r in rows)
    assert all(h["camera"] != r["camera"] for r in rows for h in r["hits"])  # other cameras only
    with open(tmp_path / "s" / "results.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 5 * len(rows) and table[0]["rank"] == "1"
    assert (tmp_path / "s" / "rank_list.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert saved["mAP"] == pytest.approx(result.metrics["mAP"])


def test_search_with_rerank_and_evaluate_reranks_once(embedded_split, tmp_path, monkeypatch):
    """The hits and the metrics come from one re-ranked distance, not two computations of it."""
    import ray_reid.eval.rerank as rerank_module
    from ray_reid.inference.query import search_images

    calls = []
    real = rerank_module.k_reciprocal_rerank

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rerank_module, "k_reciprocal_rerank", counting)
    result = search_images(str(embedded_split / "gallery"), str(embedded_split / "queries"), str(tmp_path / "s"),
                           k=5, evaluate=True, rerank=RerankConfig(), plot_queries=0)
    assert len(calls) == 1
    assert result.metrics["rerank"] is True and 0 < result.metrics["mAP"] <= 1


def test_queries_from_another_model_are_refused(embedded_split, tiny_synthetic_root, tmp_path):
    from reid_checkpoint import write_reid_checkpoint

    from ray_reid.inference.query import search_images

    other = write_reid_checkpoint(tmp_path / "other" / "checkpoint_000000", seed=1)
    with pytest.raises(ValueError, match="not the one that embedded the index"):
        search_images(str(embedded_split / "gallery"), str(tiny_synthetic_root / "query"), str(tmp_path / "s"),
                      model=str(other))
