"""Clusterers by name: what make_clusterer builds from the cluster config, and extending the registry."""

import numpy as np
import pytest

from ray_reid.clustering import HierarchicalSSE, JaccardDBSCAN, fuse_views
from ray_reid.clustering.registry import _CLUSTERERS, available_clusterers, make_clusterer, register_clusterer
from ray_reid.config import ClusterConfig, config_from_dict


def test_hc_sse_follows_the_hct_schedule_floored_at_the_minimum_ratio():
    cfg = ClusterConfig(method="hc_sse", lam=0.3, linkage="average", merge_percent=0.25, min_clusters_ratio=0.3)
    built = [make_clusterer(cfg, n_samples=100, epoch=e) for e in range(4)]
    assert all(isinstance(c, HierarchicalSSE) for c in built)
    assert [c.n_clusters for c in built] == [75, 50, 30, 30]  # 25 would be below ceil(0.3 * 100)
    assert (built[0].lam, built[0].linkage, built[0].view_weights) == (0.3, "average", cfg.view_weights)


def test_dbscan_gets_its_parameters():
    est = make_clusterer(ClusterConfig(method="dbscan_jaccard", eps=0.5, k1=10, k2=3, min_samples=2), n_samples=50)
    assert isinstance(est, JaccardDBSCAN) and (est.eps, est.k1, est.k2, est.min_samples) == (0.5, 10, 3, 2)


def test_both_clusterers_fuse_views_themselves():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 12)) * 3
    views = {v: np.repeat(centres, 6, axis=0) + rng.standard_normal((24, 12)) for v in ("global", "up", "down")}
    hc = HierarchicalSSE(4, lam=0.1).fit_predict(views)
    fused = fuse_views(list(views.values()), (0.7, 0.15, 0.15))
    np.testing.assert_array_equal(hc, HierarchicalSSE(4, lam=0.1, normalize=False).fit_predict(fused))
    same = {v: views["global"] for v in views}
    np.testing.assert_array_equal(JaccardDBSCAN(k1=5, k2=2, min_samples=2).fit_predict(same),
                                  JaccardDBSCAN(k1=5, k2=2, min_samples=2).fit_predict(views["global"]))


def test_a_registered_clusterer_is_accepted_by_the_config_and_built():
    class Everyone:
        def __init__(self, threshold):
            self.threshold = threshold

        def fit_predict(self, X, y=None):
            return np.zeros(len(next(iter(X.values()))), dtype=np.int64)

    with pytest.raises(ValueError, match=r"cluster\.method='one_cluster'.*dbscan_jaccard, hc_sse"):
        config_from_dict({}, {"cluster.method": "one_cluster"})
    register_clusterer("one_cluster")(lambda cfg, *, n_samples, epoch: Everyone(cfg.eps))
    try:
        cfg = config_from_dict({}, {"cluster.method": "one_cluster"})
        assert "one_cluster" in available_clusterers()
        assert make_clusterer(cfg.cluster, n_samples=3).threshold == cfg.cluster.eps
        with pytest.raises(ValueError, match="already registered"):
            register_clusterer("one_cluster")(lambda cfg, *, n_samples, epoch: None)
    finally:
        del _CLUSTERERS["one_cluster"]
