"""The cluster stage: clusterer choice, multi-view fusion, compact labels, centroids, bad embeddings."""

import numpy as np
import pytest

from ray_reid.clustering import HierarchicalSSE, JaccardDBSCAN, fuse_views
from ray_reid.config import ClusterConfig
from ray_reid.clustering.hierarchical import mean_sq_distance
from ray_reid.clustering.schedule import scheduled_target
from ray_reid.engine.pseudo_labels import assign_pseudo_labels


def views(seed=0, n_per=8, centres=5, dim=24):
    rng = np.random.default_rng(seed)
    out = {}
    for view in ("global", "up", "down"):
        c = rng.standard_normal((centres, dim)) * 3
        x = np.repeat(c, n_per, axis=0) + rng.standard_normal((centres * n_per, dim))
        out[view] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def same_partition(a, b):
    from sklearn.metrics import adjusted_rand_score

    return adjusted_rand_score(a, b) == 1.0


def test_hc_sse_on_several_views_clusters_their_exact_fusion():
    feats = views()
    cfg = ClusterConfig(method="hc_sse", lam=0.5, merge_percent=0.5)
    result = assign_pseudo_labels(feats, cfg, epoch=0)
    target = scheduled_target(40, 0, merge_percent=0.5, min_clusters_ratio=cfg.min_clusters_ratio)
    fused = fuse_views([feats["global"], feats["up"], feats["down"]], cfg.view_weights)
    expected = HierarchicalSSE(target, lam=0.5, linkage=cfg.linkage, normalize=False).fit_predict(fused)
    assert result.n_clusters == target == 20
    assert same_partition(result.labels, expected)
    assert set(result.centroids) == {"global", "up", "down"}
    assert result.centroids["up"].shape == (20, 24)


def test_dbscan_single_view_matches_jaccard_dbscan_and_identical_views_fuse_to_the_same():
    feats = views()
    cfg = ClusterConfig(method="dbscan_jaccard", k1=6, k2=3, min_samples=3)
    single = assign_pseudo_labels({"global": feats["global"]}, cfg, epoch=0)
    direct = JaccardDBSCAN(eps=cfg.eps, min_samples=3, k1=6, k2=3).fit_predict(feats["global"])
    assert same_partition(single.labels, direct)
    same = {v: feats["global"] for v in ("global", "up", "down")}
    fused = assign_pseudo_labels(same, cfg, epoch=0)
    np.testing.assert_array_equal(fused.labels, single.labels)


def test_labels_are_renumbered_compactly_and_outliers_stay_minus_one():
    from ray_reid.engine.pseudo_labels import _relabel_compact

    out = _relabel_compact(np.array([5, -1, 5, 2, -1, 7, 2]))
    np.testing.assert_array_equal(out, [0, -1, 0, 1, -1, 2, 1])


def test_centroids_are_normalised_cluster_means():
    feats = {"global": views()["global"]}
    result = assign_pseudo_labels(feats, ClusterConfig(method="hc_sse", merge_percent=0.5), epoch=0)
    for c in range(result.n_clusters):
        mean = feats["global"][result.labels == c].mean(axis=0)
        np.testing.assert_allclose(result.centroids["global"][c], mean / np.linalg.norm(mean), atol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_embeddings_are_refused(bad):
    feats = views()
    feats["up"][5, 0] = bad
    with pytest.raises(ValueError, match=r"view 'up' hold NaN or inf in 1 of 40 rows"):
        assign_pseudo_labels(feats, ClusterConfig(), epoch=0)


def test_threshold_schedule_lets_the_features_decide_and_small_clusters_become_outliers():
    feats = {"global": views(n_per=8, centres=5)["global"]}
    feats["global"] = np.concatenate([feats["global"], np.eye(24, dtype=np.float32)[:3]])  # 3 loners
    cfg = ClusterConfig(method="hc_sse", schedule="threshold", distance_threshold=0.4, lam=0.0,
                        regularizer="none")
    result = assign_pseudo_labels(feats, cfg, epoch=0)
    scale = mean_sq_distance(feats["global"], unit=True)
    direct = HierarchicalSSE(None, distance_threshold=0.4 * scale, lam=0.0, regularizer="none").fit_predict(
        feats["global"])
    assert same_partition(result.labels, direct)
    assert result.target is None
    assert result.n_clusters == 8 and result.n_outliers == 0  # 5 groups + 3 singletons, wherever N puts HCT
    pruned = assign_pseudo_labels(feats, ClusterConfig(**{**cfg.__dict__, "min_cluster_size": 2}), epoch=0)
    assert pruned.n_clusters == 5 and pruned.n_outliers == 3
    assert (pruned.labels[-3:] == -1).all()
    assert pruned.centroids["global"].shape == (5, 24)


def test_raw_features_are_clustered_unnormalised_but_memories_get_sphere_centroids():
    x = views(n_per=6, centres=4)["global"]
    scale = np.where(np.arange(len(x)) % 2 == 0, 1.0, 5.0).astype(np.float32)[:, None]  # a "camera gain"
    raw = {"global": x * scale}
    sphere = assign_pseudo_labels(raw, ClusterConfig(method="hc_sse", schedule="threshold",
                                                     distance_threshold=0.4, lam=0.0, regularizer="none"), epoch=0)
    unnorm = assign_pseudo_labels(raw, ClusterConfig(method="hc_sse", schedule="threshold", distance_threshold=0.4,
                                                     lam=0.0, regularizer="none", sphere=False), epoch=0)
    assert sphere.n_clusters == 4  # the gain is dropped with the length
    assert unnorm.n_clusters > 4  # the gain splits every identity
    np.testing.assert_allclose(np.linalg.norm(unnorm.centroids["global"], axis=1), 1.0, atol=1e-5)


def test_mean_sq_distance_is_the_mean_over_all_pairs():
    x = np.random.default_rng(2).standard_normal((30, 5))
    brute = ((x[:, None] - x[None]) ** 2).sum(-1).mean()
    assert abs(mean_sq_distance(x, unit=False) - brute) < 1e-9
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert abs(mean_sq_distance(x, unit=True) - ((u[:, None] - u[None]) ** 2).sum(-1).mean()) < 1e-9


def test_a_threshold_that_leaves_only_outliers_is_refused_naming_the_keys():
    feats = {"global": views()["global"]}
    cfg = ClusterConfig(method="hc_sse", schedule="threshold", distance_threshold=0.0, min_cluster_size=2)
    with pytest.raises(ValueError, match="min_cluster_size=2.*distance_threshold"):
        assign_pseudo_labels(feats, cfg, epoch=3)


def test_connectivity_follows_the_size_threshold_and_is_logged(caplog):
    from ray_reid.clustering.registry import hierarchy_connectivity

    caplog.set_level("INFO", logger="ray_reid.clustering.registry")
    cfg = ClusterConfig(graph_above=100)
    assert hierarchy_connectivity(100, cfg) == "dense"
    assert hierarchy_connectivity(101, cfg) == "knn"
    assert "k-NN graph path (k=20, index auto): 101 images > cluster.graph_above=100" in caplog.text
    assert hierarchy_connectivity(5, ClusterConfig(connectivity="knn")) == "knn"
    assert hierarchy_connectivity(10**6, ClusterConfig(connectivity="dense")) == "dense"
    # Ward's increase is exact on the dense path only, whatever the size
    assert hierarchy_connectivity(10**6, ClusterConfig(regularizer="delta_sse", graph_above=100)) == "dense"


def test_graph_path_on_a_complete_graph_gives_the_dense_labels():
    feats = views(seed=3)
    dense = assign_pseudo_labels(feats, ClusterConfig(merge_percent=0.5, connectivity="dense"), epoch=1)
    graph = assign_pseudo_labels(feats, ClusterConfig(merge_percent=0.5, connectivity="knn", n_neighbors=39),
                                 epoch=1)
    np.testing.assert_array_equal(graph.labels, dense.labels)
    np.testing.assert_allclose(graph.centroids["global"], dense.centroids["global"])


def test_fp16_shards_past_the_threshold_and_clustering_accepts_them():
    from ray_reid.engine.pseudo_labels import shard_for_clustering

    feats = views(seed=4)
    small = shard_for_clustering(feats, 40, ClusterConfig())
    assert all(v.dtype == np.float32 for v in small.values())
    half = shard_for_clustering(feats, 40, ClusterConfig(fp16_shards_above_gb=0))
    assert all(v.dtype == np.float16 for v in half.values())
    cfg = ClusterConfig(merge_percent=0.5, connectivity="knn", n_neighbors=10)
    result = assign_pseudo_labels(half, cfg, epoch=0)
    assert result.n_clusters == 20 and result.centroids["global"].dtype == np.float32
    assert same_partition(result.labels, assign_pseudo_labels(feats, cfg, epoch=0).labels)


@pytest.mark.parametrize(("override", "key"), [
    ({"connectivity": "sparse"}, "cluster.connectivity"),
    ({"graph_above": 0}, "cluster.graph_above"),
    ({"n_neighbors": 0}, "cluster.n_neighbors"),
    ({"knn_index": "hnsw"}, "cluster.knn_index"),
    ({"fp16_shards_above_gb": -1.0}, "cluster.fp16_shards_above_gb"),
    ({"connectivity": "knn", "regularizer": "delta_sse", "lam": 0.1}, "cluster.connectivity"),
])
def test_bad_graph_settings_are_refused_naming_the_key(override, key):
    with pytest.raises(ValueError, match=key):
        ClusterConfig(**override)


def test_min_agreement_leaves_out_the_members_whose_neighbours_sit_elsewhere():
    from ray_reid.clustering.outliers import drop_uncertain

    feats = {"global": views(n_per=8, centres=5)["global"]}
    feats["global"] = np.concatenate([feats["global"], np.eye(24, dtype=np.float32)[:3]])  # 3 loners
    cfg = ClusterConfig(method="hc_sse", schedule="threshold", distance_threshold=0.4, lam=0.0, regularizer="none")
    plain = assign_pseudo_labels(feats, cfg, epoch=0)
    strict = assign_pseudo_labels(feats, ClusterConfig(**{**cfg.__dict__, "min_agreement": 0.5,
                                                          "agreement_neighbors": 7}), epoch=0)
    expected = drop_uncertain(feats["global"], plain.labels, n_neighbors=7, min_agreement=0.5, device="cpu")
    assert strict.n_outliers == 3 and strict.n_clusters == 5 and (strict.labels[-3:] == -1).all()
    assert same_partition(strict.labels[expected >= 0], plain.labels[expected >= 0])
    assert ((strict.labels < 0) == (expected < 0)).all()
    with pytest.raises(ValueError, match="cluster.min_agreement"):
        ClusterConfig(min_agreement=1.2)


def test_camera_centred_clusters_people_but_builds_centroids_from_the_models_features():
    import torch

    from ray_reid.losses.cluster_memory import cluster_centroids

    rng = np.random.default_rng(3)
    person, camera = rng.standard_normal((5, 24)), 4.0 * rng.standard_normal((2, 24))
    pids, camids = np.repeat(np.arange(5), 8), np.tile(np.repeat([0, 1], 4), 5)
    x = (person[pids] + camera[camids] + 0.1 * rng.standard_normal((40, 24))).astype(np.float32)
    base = dict(method="hc_sse", schedule="threshold", distance_threshold=0.6, linkage="average",
                regularizer="none", device="cpu")
    plain = assign_pseudo_labels({"global": x}, ClusterConfig(**base), epoch=0)
    centred = assign_pseudo_labels({"global": x}, ClusterConfig(**base, camera_centred=True), epoch=0, camids=camids)
    assert not same_partition(plain.labels, pids)  # the cameras split every person
    assert same_partition(centred.labels, pids)
    expected = cluster_centroids(torch.nn.functional.normalize(torch.from_numpy(x), dim=1),
                                 torch.from_numpy(centred.labels)).numpy()
    np.testing.assert_allclose(centred.centroids["global"], expected, atol=1e-6)
    with pytest.raises(ValueError, match="camera_centred=True needs the camera id"):
        assign_pseudo_labels({"global": x}, ClusterConfig(**base, camera_centred=True), epoch=0)
