"""HierarchicalSSE against a brute-force greedy reference, scipy, and its own validation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.metrics import adjusted_rand_score

from ray_reid.clustering import _agglomerate
from ray_reid.clustering._backend import cupy_available
from ray_reid.clustering.hierarchical import HierarchicalSSE

LINKAGES = ("single", "average")
REGULARIZERS = ("sse", "size", "delta_sse", "none")


def brute_force(x: np.ndarray, n_clusters: int, lam: float, link: str, reg: str):
    """O(N³)-per-merge greedy reference: every pair cost recomputed from member lists each merge."""
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    clusters = [[i] for i in range(len(x))]
    merges = []

    def cost(a: list[int], b: list[int]) -> float:
        block = sq[np.ix_(a, b)]
        d = block.min() if link == "single" else block.mean()
        union = x[a + b]
        if reg == "sse":
            r = ((union - union.mean(0)) ** 2).sum()
        elif reg == "size":
            r = len(a) + len(b)
        elif reg == "delta_sse":
            r = len(a) * len(b) / (len(a) + len(b)) * ((x[a].mean(0) - x[b].mean(0)) ** 2).sum()
        else:
            r = 0.0
        return d + lam * r

    while len(clusters) > n_clusters:
        best = None
        for ca, cb in itertools.combinations(clusters, 2):
            key = (cost(ca, cb), min(ca[0], cb[0]), max(ca[0], cb[0]))
            if best is None or key < best[0]:
                best = (key, ca, cb)
        _, ca, cb = best
        clusters.remove(ca)
        clusters.remove(cb)
        clusters.append(sorted(ca + cb))
        merges.append((min(ca[0], cb[0]), max(ca[0], cb[0])))
    labels = np.empty(len(x), dtype=np.int64)
    for label, members in enumerate(sorted(clusters)):
        labels[members] = label
    return labels, np.array(merges, dtype=np.int64).reshape(-1, 2)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("reg", REGULARIZERS)
@pytest.mark.parametrize("link", LINKAGES)
@pytest.mark.parametrize("lam", [0.0, 0.1, 1.0, 10.0])
def test_matches_brute_force(link, reg, lam):
    rng = np.random.default_rng([LINKAGES.index(link), REGULARIZERS.index(reg), int(lam * 10)])
    sizes = ((9, 3), (24, 5), (40, 6)) if lam == 1.0 else ((9, 3), (24, 5))
    for n, k in sizes:
        x = rng.standard_normal((n, 6))
        model = HierarchicalSSE(k, lam=lam, linkage=link, regularizer=reg, device="cpu").fit(x)
        want_labels, want_merges = brute_force(_unit(x), k, lam, link, reg)
        np.testing.assert_array_equal(model.labels_, want_labels)
        np.testing.assert_array_equal(model.merges_, want_merges)
        assert model.n_clusters_ == k
        assert model.labels_.dtype == np.int64


@pytest.mark.parametrize("reg", ["none", "size"])
def test_ties_go_to_lowest_pair(reg):
    """Integer grid points give exactly tied costs; the merge order must follow the (min id, max id) rule."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, size=(30, 2)).astype(np.float64)
    x = x[np.unique(x, axis=0, return_index=True)[1]]  # distinct points, still many tied distances
    x = np.vstack([x, x[:3]])  # plus exact duplicates (distance 0 ties)
    model = HierarchicalSSE(2, lam=0.5, regularizer=reg, normalize=False, device="cpu").fit(x)
    want_labels, want_merges = brute_force(x, 2, 0.5, "single", reg)
    np.testing.assert_array_equal(model.merges_, want_merges)
    np.testing.assert_array_equal(model.labels_, want_labels)


def test_tie_rule_on_a_line():
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = HierarchicalSSE(1, lam=0.0, regularizer="none", normalize=False, device="cpu").fit(x)
    np.testing.assert_array_equal(model.merges_, [[0, 1], [0, 2], [0, 3]])
    np.testing.assert_allclose(model.merge_costs_, [1.0, 1.0, 1.0])


@pytest.mark.parametrize("link", LINKAGES)
def test_zero_lambda_matches_scipy(link):
    rng = np.random.default_rng(3)
    x = _unit(rng.standard_normal((120, 8)))
    tree = linkage(x, method=link, metric="sqeuclidean")
    for k in (1, 2, 7, 30, 119):
        ours = HierarchicalSSE(k, lam=0.0, linkage=link, device="cpu").fit_predict(x)
        theirs = fcluster(tree, k, criterion="maxclust")
        assert len(np.unique(ours)) == k
        assert adjusted_rand_score(theirs, ours) == 1.0 or len(np.unique(theirs)) == 1 == k


@pytest.mark.parametrize("reg", REGULARIZERS)
@pytest.mark.parametrize("link", LINKAGES)
def test_compaction_does_not_change_result(monkeypatch, link, reg):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((60, 5))
    expected = HierarchicalSSE(4, lam=0.3, linkage=link, regularizer=reg, device="cpu").fit(x)
    monkeypatch.setattr(_agglomerate, "_COMPACT_MIN_SLOTS", 4)
    monkeypatch.setattr(_agglomerate, "_COMPACT_CHUNK", 3)  # several chunks per in-place move
    compacted = HierarchicalSSE(4, lam=0.3, linkage=link, regularizer=reg, device="cpu").fit(x)
    np.testing.assert_array_equal(compacted.merges_, expected.merges_)
    np.testing.assert_array_equal(compacted.labels_, expected.labels_)


@pytest.mark.parametrize("reg", REGULARIZERS)
def test_float32_state_agrees_on_separated_data(reg):
    rng = np.random.default_rng(5)
    centres = _unit(rng.standard_normal((6, 16)))
    truth = rng.integers(0, 6, 80)
    x = centres[truth] + 0.05 * rng.standard_normal((80, 16))
    lo = HierarchicalSSE(6, lam=0.2, regularizer=reg, precision="float32", device="cpu").fit_predict(x)
    hi = HierarchicalSSE(6, lam=0.2, regularizer=reg, precision="float64", device="cpu").fit_predict(x)
    np.testing.assert_array_equal(lo, hi)
    assert adjusted_rand_score(truth, hi) == 1.0


def test_sse_regulariser_splits_what_single_linkage_chains():
    """Two blobs joined by a thin bridge: plain single linkage chains them, SSE keeps them apart."""
    rng = np.random.default_rng(0)
    blob_a = rng.normal([0.0, 0.0], 0.3, size=(40, 2))
    blob_b = rng.normal([6.0, 0.0], 0.3, size=(40, 2))
    bridge = np.column_stack([np.linspace(0.7, 5.3, 30), np.zeros(30)])
    x = np.vstack([blob_a, blob_b, bridge])
    truth = np.r_[np.zeros(40), np.ones(40)]

    def blobs_ari(reg: str, lam: float) -> float:
        labels = HierarchicalSSE(2, lam=lam, regularizer=reg, normalize=False, device="cpu").fit_predict(x)
        return adjusted_rand_score(truth, labels[:80])

    assert blobs_ari("none", 0.0) == 0.0  # one chained cluster plus a stray point
    assert blobs_ari("sse", 0.1) == 1.0
    assert blobs_ari("delta_sse", 1.0) == 1.0


def test_labels_numbered_by_first_appearance_and_trivial_cuts():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((15, 3))
    labels = HierarchicalSSE(4, lam=1.0, device="cpu").fit_predict(x)
    _, first = np.unique(labels, return_index=True)
    assert np.all(np.diff(first) > 0) and first[0] == 0
    np.testing.assert_array_equal(HierarchicalSSE(15, lam=1.0, device="cpu").fit_predict(x), np.arange(15))
    np.testing.assert_array_equal(HierarchicalSSE(1, lam=1.0, device="cpu").fit_predict(x), np.zeros(15))
    single = HierarchicalSSE(1, lam=1.0, device="cpu").fit(x[:1])
    assert single.labels_.tolist() == [0] and single.merges_.shape == (0, 2)


@pytest.mark.parametrize(
    ("kwargs", "x", "match"),
    [
        ({"linkage": "ward"}, None, r"linkage must be one of \('single', 'average'\)"),
        ({"regularizer": "l2"}, None, r"regularizer must be one of \('sse', 'size', 'delta_sse', 'none'\)"),
        ({"device": "tpu"}, None, r"device must be one of"),
        ({"precision": "half"}, None, r"precision must be one of"),
        ({"lam": -0.1}, None, r"lam must be >= 0"),
        ({"lam": float("nan")}, None, r"lam must be a finite"),
        ({"lam": float("inf")}, None, r"lam must be a finite"),
        ({"n_clusters": 0}, None, r"n_clusters must be in \[1, 10\]"),
        ({"n_clusters": 11}, None, r"n_clusters must be in \[1, 10\]"),
        ({"n_clusters": 2.5}, None, r"n_clusters must be an integer"),
        ({}, np.ones(10), r"2-D array"),
        ({}, np.ones((10, 2, 2)), r"2-D array"),
        ({}, np.where(np.eye(10, 3) > 0, np.nan, 1.0), r"NaN or inf.*\[0, 1, 2\]"),
        ({}, np.where(np.eye(10, 3) > 0, np.inf, 1.0), r"NaN or inf"),
        ({}, np.vstack([np.ones((9, 3)), np.zeros((1, 3))]), r"all-zero rows of X \(first: \[9\]\)"),
        ({}, np.ones((10, 3), dtype=bool), r"real numbers"),
    ],
)
def test_bad_input_raises(kwargs, x, match):
    params = {"n_clusters": 3, "lam": 1.0, "device": "cpu"} | kwargs
    n_clusters = params.pop("n_clusters")
    if x is None:
        x = np.random.default_rng(0).standard_normal((10, 3))
    with pytest.raises(ValueError, match=match):
        HierarchicalSSE(n_clusters, **params).fit(x)


@pytest.mark.skipif(cupy_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no usable CuPy/CUDA device"):
        HierarchicalSSE(2, lam=1.0, device="cuda").fit(np.random.default_rng(0).standard_normal((5, 3)))


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_available(), reason="needs a CUDA device with CuPy")
@pytest.mark.parametrize("reg", REGULARIZERS)
@pytest.mark.parametrize("link", LINKAGES)
def test_cupy_matches_numpy(monkeypatch, link, reg):
    import cupy

    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 12))
    cpu = HierarchicalSSE(10, lam=0.3, linkage=link, regularizer=reg, device="cpu").fit(x)
    monkeypatch.setattr(_agglomerate, "_COMPACT_MIN_SLOTS", 16)
    gpu = HierarchicalSSE(10, lam=0.3, linkage=link, regularizer=reg, device="cuda").fit(cupy.asarray(x))
    np.testing.assert_array_equal(gpu.merges_, cpu.merges_)
    np.testing.assert_array_equal(gpu.labels_, cpu.labels_)
    assert isinstance(gpu.labels_, np.ndarray)


def test_score_against_truth_reports_a_recovered_mixture():
    from ray_reid.clustering.report import score_against_truth

    rng = np.random.default_rng(4)
    centres = _unit(rng.standard_normal((5, 12)))
    truth = np.repeat(np.arange(5), 8)
    x = centres[truth] + 0.02 * rng.standard_normal((40, 12))
    scores = score_against_truth(HierarchicalSSE(5, lam=0.1, device="cpu").fit_predict(x), truth)
    assert scores["ari"] == pytest.approx(1.0) and scores["nmi"] == pytest.approx(1.0)
    assert scores["n_clusters"] == 5 and scores["n_outliers"] == 0 and scores["n_samples"] == 40
    merged = score_against_truth(np.where(truth == 4, 3, truth), truth)
    assert merged["ari"] < 1.0 and merged["pairwise_precision"] < 1.0 and merged["pairwise_recall"] == 1.0


@pytest.mark.parametrize("link", LINKAGES)
def test_distance_threshold_matches_scipy_distance_cut(link):
    """With no regulariser the greedy hierarchy is scipy's, so a cost cut is fcluster's 'distance' cut."""
    rng = np.random.default_rng(5)
    centres = _unit(rng.standard_normal((6, 8)))
    x = _unit(np.repeat(centres, 15, axis=0) + 0.25 * rng.standard_normal((90, 8)))
    tree = linkage(x, method=link, metric="sqeuclidean")
    for t in (0.05, 0.3, 0.8, 1.5):
        model = HierarchicalSSE(None, distance_threshold=t, lam=0.0, linkage=link, regularizer="none",
                                device="cpu").fit(x)
        theirs = fcluster(tree, t, criterion="distance")
        assert adjusted_rand_score(theirs, model.labels_) == 1.0, t
        assert model.n_clusters_ == len(np.unique(theirs))
        assert (model.merge_costs_ <= t).all()


def test_distance_threshold_keeps_n_clusters_as_a_floor_and_needs_one_of_the_two():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((40, 4))
    assert HierarchicalSSE(10, distance_threshold=1e9, lam=0.1, device="cpu").fit(x).n_clusters_ == 10
    assert HierarchicalSSE(None, distance_threshold=0.0, lam=0.1, device="cpu").fit(x).n_clusters_ == 40
    with pytest.raises(ValueError, match="n_clusters, distance_threshold or both"):
        HierarchicalSSE(None, lam=0.1).fit(x)
    with pytest.raises(ValueError, match="distance_threshold"):
        HierarchicalSSE(None, distance_threshold=-1.0, lam=0.1).fit(x)


def test_relative_threshold_is_the_absolute_one_times_the_mean_pairwise_squared_distance():
    from ray_reid.clustering.hierarchical import mean_sq_distance

    rng = np.random.default_rng(7)
    x = _unit(np.repeat(_unit(rng.standard_normal((5, 6))), 8, axis=0) + 0.2 * rng.standard_normal((40, 6)))
    scale = ((x[:, None] - x[None]) ** 2).sum(-1).mean()  # brute force over all N² pairs
    assert mean_sq_distance(x) == pytest.approx(scale, rel=1e-12)
    for t in (0.1, 0.4):
        rel = HierarchicalSSE(None, distance_threshold=t, relative_threshold=True, lam=0.0, regularizer="none",
                              device="cpu").fit(x)
        absolute = HierarchicalSSE(None, distance_threshold=t * scale, lam=0.0, regularizer="none",
                                   device="cpu").fit(x)
        np.testing.assert_array_equal(rel.labels_, absolute.labels_)
        assert rel.distance_threshold_ == pytest.approx(t * scale)
    # the same relative threshold on the features scaled by 10 (normalize=False) gives the same partition
    big = HierarchicalSSE(None, distance_threshold=0.4, relative_threshold=True, lam=0.0, regularizer="none",
                          normalize=False, device="cpu").fit(10 * x)
    np.testing.assert_array_equal(big.labels_, rel.labels_)


def test_clusters_under_min_cluster_size_become_outliers_and_the_rest_stay_compact():
    x = np.vstack([np.tile([1.0, 0.0], (4, 1)), [[0.0, 1.0]], np.tile([-1.0, 0.0], (3, 1)), [[0.0, -1.0]]])
    x = x + 1e-3 * np.random.default_rng(8).standard_normal(x.shape)
    full = HierarchicalSSE(4, lam=0.0, regularizer="none", device="cpu").fit(x)
    assert full.n_clusters_ == 4 and (full.labels_ >= 0).all()
    pruned = HierarchicalSSE(4, lam=0.0, regularizer="none", min_cluster_size=2, device="cpu").fit(x)
    np.testing.assert_array_equal(pruned.labels_, [0, 0, 0, 0, -1, 1, 1, 1, -1])
    assert pruned.n_clusters_ == 2
    everything = HierarchicalSSE(4, lam=0.0, regularizer="none", min_cluster_size=5, device="cpu").fit(x)
    assert (everything.labels_ == -1).all() and everything.n_clusters_ == 0
    with pytest.raises(ValueError, match="min_cluster_size must be an integer >= 1"):
        HierarchicalSSE(4, lam=0.0, min_cluster_size=0).fit(x)
