"""clustering_scores on hand-made cases and against brute-force pair counting."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, pair_confusion_matrix

from ray_reid.eval.cluster_metrics import ClusteringScores, clustering_scores


def brute_force_pairwise(pred, true):
    tp = pp = ap = 0
    for i, j in itertools.combinations(range(len(pred)), 2):
        same_pred = pred[i] == pred[j] and pred[i] != -1
        same_true = true[i] == true[j]
        tp += same_pred and same_true
        pp += same_pred
        ap += same_true
    return (tp / pp if pp else 1.0), (tp / ap if ap else 1.0)


def test_perfect_clustering_scores_one_with_any_label_names():
    true = np.array([3, 3, 3, 7, 7, 9])
    s = clustering_scores(np.array([2, 2, 2, 0, 0, 5]), true)
    assert (s.ari, s.nmi, s.pairwise_precision, s.pairwise_recall, s.pairwise_f) == pytest.approx((1, 1, 1, 1, 1))
    assert (s.n_clusters, s.n_outliers, s.n_samples) == (3, 0, 6)


def test_all_in_one_cluster():
    true = np.array([0, 0, 1, 1, 1, 2])
    s = clustering_scores(np.zeros(6, dtype=int), true)
    # predicted pairs C(6,2)=15; true pairs 1 + 3 = 4, all inside the one cluster.
    assert s.pairwise_precision == pytest.approx(4 / 15)
    assert s.pairwise_recall == pytest.approx(1.0)
    assert s.pairwise_f == pytest.approx(2 * (4 / 15) / (4 / 15 + 1))
    assert s.ari == pytest.approx(0.0)
    assert s.n_clusters == 1


def test_all_singletons():
    true = np.array([0, 0, 1, 1, 1, 2])
    s = clustering_scores(np.arange(6), true)
    assert s.pairwise_precision == 1.0  # no predicted pairs: vacuously precise
    assert s.pairwise_recall == 0.0
    assert s.pairwise_f == 0.0
    assert s.n_clusters == 6


def test_outliers_are_counted_and_scored_as_singletons():
    true = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([4, 4, -1, 6, -1, -1])
    s = clustering_scores(pred, true)
    assert (s.n_clusters, s.n_outliers, s.n_samples) == (2, 3, 6)
    # predicted pairs: (0,1) right; (3,?) none else -> 1 predicted pair, 1 TP; true pairs 3 + 1 = 4.
    assert s.pairwise_precision == pytest.approx(1.0)
    assert s.pairwise_recall == pytest.approx(1 / 4)
    as_singletons = np.array([4, 4, 100, 6, 101, 102])
    assert s.ari == pytest.approx(adjusted_rand_score(true, as_singletons))
    assert s.nmi == pytest.approx(normalized_mutual_info_score(true, as_singletons))


def test_hand_computed_pairwise_precision_and_recall():
    true = ["a", "a", "a", "b", "b"]
    pred = [0, 0, 1, 1, 1]
    # predicted pairs (0,1) TP, (2,3) FP, (2,4) FP, (3,4) TP -> precision 2/4; true pairs 3 + 1 = 4 -> recall 2/4.
    s = clustering_scores(pred, true)
    assert s.pairwise_precision == pytest.approx(0.5)
    assert s.pairwise_recall == pytest.approx(0.5)
    assert s.pairwise_f == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(5))
def test_random_labels_match_brute_force_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 8, 60)
    pred = rng.integers(-1, 10, 60)
    s = clustering_scores(pred, true)
    precision, recall = brute_force_pairwise(pred, true)
    assert s.pairwise_precision == pytest.approx(precision)
    assert s.pairwise_recall == pytest.approx(recall)
    assert s.n_outliers == int((pred == -1).sum())
    assert s.n_clusters == len(set(pred.tolist()) - {-1})
    # Without outliers the pair counts agree with sklearn's pair confusion matrix.
    inlier_pred = np.where(pred == -1, 99, pred)
    (_, fp), (fn, tp) = pair_confusion_matrix(true, inlier_pred) // 2
    s2 = clustering_scores(inlier_pred, true)
    assert s2.pairwise_precision == pytest.approx(tp / (tp + fp))
    assert s2.pairwise_recall == pytest.approx(tp / (tp + fn))


def test_as_dict_and_frozen():
    s = clustering_scores([0, 0, 1], [0, 0, 1])
    d = s.as_dict()
    assert set(d) == {
        "ari", "nmi", "pairwise_precision", "pairwise_recall", "pairwise_f", "n_clusters", "n_outliers", "n_samples"
    }
    assert isinstance(s, ClusteringScores)
    with pytest.raises(AttributeError):
        s.ari = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("pred", "true", "message"),
    [
        ([0, 1], [0, 1, 2], "pred has 2 labels but true has 3"),
        ([], [], "empty"),
        ([[0, 1]], [[0, 1]], "pred must be a 1-D"),
        ([0.5, 1.0], [0, 1], "pred must hold integer"),
        ([0, -2], [0, 1], "below -1"),
    ],
)
def test_bad_input(pred, true, message):
    with pytest.raises(ValueError, match=message):
        clustering_scores(np.asarray(pred), np.asarray(true))
