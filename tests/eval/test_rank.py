"""evaluate_rank against a plain per-query loop, hand-computed AP values, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ray_reid.eval.rank import auto_chunk_size, compute_distmat, evaluate_rank


def loop_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """The textbook protocol, one query at a time, written independently of the fast path."""
    cmc_rows, aps = [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        pids, cams = g_pids[order], g_camids[order]
        remove = ((pids == q_pids[i]) & (cams == q_camids[i])) | (pids == -1)
        hits = (pids[~remove] == q_pids[i]).astype(np.float64)
        if not hits.any():
            continue
        cmc = np.minimum(np.cumsum(hits), 1.0)
        cmc = np.concatenate([cmc, np.full(max(0, max_rank - len(cmc)), cmc[-1])])[:max_rank]
        cmc_rows.append(cmc)
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(float((precision * hits).sum() / hits.sum()))
    return np.mean(cmc_rows, axis=0), float(np.mean(aps))


def random_case(seed, num_q=23, num_g=61, n_ids=9, n_cams=3, ties=False):
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(1, n_ids, num_q)
    g_pids = rng.integers(-1, n_ids, num_g)  # includes junk (-1) and distractors (0)
    q_cams = rng.integers(0, n_cams, num_q)
    g_cams = rng.integers(0, n_cams, num_g)
    q_pids[0] = n_ids + 5  # a query whose id is absent from the gallery: skipped
    if ties:
        distmat = rng.integers(0, 6, (num_q, num_g)).astype(np.float32)
    else:
        distmat = rng.random((num_q, num_g)).astype(np.float32)
        distmat -= 0.3 * (q_pids[:, None] == g_pids[None, :])  # make matches likelier near the top
    return distmat, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_matches_loop_reference_and_chunking_is_exact(seed, ties):
    distmat, q_pids, g_pids, q_cams, g_cams = random_case(seed, ties=ties)
    ref_cmc, ref_map = loop_reference(distmat, q_pids, g_pids, q_cams, g_cams, 20)
    results = [
        evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=20, chunk_size=c)
        for c in (1, 7, len(q_pids), None)
    ]
    np.testing.assert_allclose(results[0][0], ref_cmc, rtol=0, atol=1e-12)
    assert results[0][1] == pytest.approx(ref_map, abs=1e-12)
    for cmc, m_ap in results[1:]:
        assert np.array_equal(cmc, results[0][0])
        assert m_ap == results[0][1]


def test_float64_int_and_torch_inputs_agree():
    distmat, q_pids, g_pids, q_cams, g_cams = random_case(11, ties=True)
    base = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    for d in (distmat.astype(np.float64), distmat.astype(np.int32), torch.from_numpy(distmat)):
        cmc, m_ap = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=10)
        np.testing.assert_array_equal(cmc, base[0])
        assert m_ap == base[1]


def test_known_average_precision_for_matches_at_ranks_1_and_3():
    # One query (pid 1, cam 0); gallery sorted by distance: match, wrong, match, wrong.
    distmat = np.array([[0.1, 0.2, 0.3, 0.4]])
    cmc, m_ap = evaluate_rank(distmat, [1], [1, 2, 1, 3], [0], [1, 1, 2, 1], max_rank=4)
    assert m_ap == pytest.approx((1 + 2 / 3) / 2)
    np.testing.assert_allclose(cmc, [1, 1, 1, 1])


def test_same_camera_match_junk_and_distractor_handling():
    # Gallery order by distance: same-pid same-cam (removed), junk (ignored),
    # distractor pid 0 (wrong), true match in another camera.
    distmat = np.array([[0.1, 0.2, 0.3, 0.4]])
    cmc, m_ap = evaluate_rank(distmat, [5], [5, -1, 0, 5], [0], [0, 1, 1, 2], max_rank=3)
    assert m_ap == pytest.approx(0.5)  # the only valid match is 2nd among kept entries
    np.testing.assert_allclose(cmc, [0, 1, 1])


def test_two_queries_average_and_cmc_fractions():
    distmat = np.array([[0.5, 0.1, 0.9], [0.2, 0.3, 0.1]])
    # query 0 (pid 1): order g1 (pid 2), g0 (pid 1) -> AP 1/2; query 1 (pid 2): g2 (pid 3), g0, g1 (pid 2) -> AP 1/3
    cmc, m_ap = evaluate_rank(distmat, [1, 2], [1, 2, 3], [0, 0], [1, 1, 1], max_rank=3)
    assert m_ap == pytest.approx((1 / 2 + 1 / 3) / 2)
    np.testing.assert_allclose(cmc, [0, 0.5, 1.0])


def test_ties_are_broken_by_gallery_index():
    # All distances equal: a stable order puts g0 (wrong) before g1 (match).
    cmc, m_ap = evaluate_rank(np.zeros((1, 3)), [1], [2, 1, 1], [0], [1, 1, 1], max_rank=3)
    assert m_ap == pytest.approx((1 / 2 + 2 / 3) / 2)
    np.testing.assert_allclose(cmc, [0, 1, 1])


def test_cmc_is_padded_when_max_rank_exceeds_gallery():
    cmc, _ = evaluate_rank(np.array([[0.3, 0.1]]), [1], [1, 2], [0], [1, 1], max_rank=5)
    np.testing.assert_allclose(cmc, [0, 1, 1, 1, 1])


def test_inf_distances_are_ranked_last_among_kept():
    distmat = np.array([[np.inf, 0.5, np.inf]])
    cmc, m_ap = evaluate_rank(distmat, [1], [3, 2, 1], [0], [1, 1, 1], max_rank=3)
    assert m_ap == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"distmat": np.zeros(4)}, "distmat must be 2-D"),
        ({"q_pids": [1, 2]}, "q_pids has length 2"),
        ({"g_camids": [0, 1]}, "g_camids has length 2"),
        ({"q_camids": [[0], [1], [2]]}, "q_camids must be 1-D"),
        ({"g_pids": ["a", "b", "c", "d"]}, "g_pids must hold integers"),
        ({"max_rank": 0}, "max_rank must be a positive integer"),
        ({"chunk_size": 0}, "chunk_size must be a positive integer"),
        ({"distmat": np.full((3, 4), np.nan)}, "NaN"),
        ({"g_pids": [-1, -1, -1, -1]}, "no query has a valid match"),
    ],
)
def test_bad_input_raises_naming_the_argument(kwargs, message):
    args = {
        "distmat": np.random.default_rng(0).random((3, 4)),
        "q_pids": [1, 2, 3],
        "g_pids": [1, 2, 3, 1],
        "q_camids": [0, 0, 0],
        "g_camids": [1, 1, 1, 1],
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        evaluate_rank(**args)


def test_all_matches_in_query_camera_raises():
    with pytest.raises(ValueError, match="no query has a valid match"):
        evaluate_rank(np.ones((1, 2)), [1], [1, 2], [0], [0, 0])


def test_auto_chunk_size_respects_budget():
    rows = auto_chunk_size(82_161, np.float32, 256 * 2**20)
    assert 50 <= rows <= 400
    assert rows * 82_161 * 9 <= 256 * 2**20
    assert auto_chunk_size(10**9, np.float64, 1) == 1


def test_compute_distmat_matches_brute_force_and_cosine_identity():
    rng = np.random.default_rng(3)
    q, g = rng.standard_normal((7, 5)), rng.standard_normal((11, 5))
    brute = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    for chunk in (1, 3, 100):
        np.testing.assert_allclose(compute_distmat(q, g, chunk_size=chunk), brute, rtol=1e-5, atol=1e-5)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    d = compute_distmat(torch.from_numpy(qn), gn)
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, 2 - 2 * qn @ gn.T, atol=1e-5)
    assert (compute_distmat(qn, qn) >= 0).all()


def test_compute_distmat_rejects_mismatched_dims():
    with pytest.raises(ValueError, match="dimension 4 but gallery_feats has 5"):
        compute_distmat(np.zeros((2, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="query_feats must be 2-D"):
        compute_distmat(np.zeros(4), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        compute_distmat(np.full((2, 4), np.nan), np.zeros((3, 4)))


def test_reid_metrics_from_features_matches_reference_and_ignores_scale():
    from ray_reid.eval import reid_metrics

    rng = np.random.default_rng(5)
    n_ids, dim = 6, 8
    centres = rng.standard_normal((n_ids, dim))
    q_pids, g_pids = rng.integers(0, n_ids, 15), rng.integers(0, n_ids, 40)
    q_cams, g_cams = rng.integers(0, 3, 15), rng.integers(0, 3, 40)
    qf = centres[q_pids] + 0.8 * rng.standard_normal((15, dim))
    gf = centres[g_pids] + 0.8 * rng.standard_normal((40, dim))
    q_pids, g_pids = q_pids + 1, g_pids + 1  # pid 0 would be a distractor
    out = reid_metrics(qf, gf, q_pids, g_pids, q_cams, g_cams)
    assert set(out) == {"mAP", "rank1", "rank5", "rank10"}
    qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    ref_cmc, ref_map = loop_reference(2 - 2 * qn @ gn.T, q_pids, g_pids, q_cams, g_cams, 10)
    assert out["mAP"] == pytest.approx(ref_map, abs=1e-6)
    assert [out["rank1"], out["rank5"], out["rank10"]] == pytest.approx(ref_cmc[[0, 4, 9]], abs=1e-6)
    assert all(0.0 <= v <= 1.0 for v in out.values())
    scaled = reid_metrics(3 * qf, gf * rng.uniform(0.5, 2, (40, 1)), q_pids, g_pids, q_cams, g_cams, ranks=(1, 3))
    assert set(scaled) == {"mAP", "rank1", "rank3"}
    assert scaled["mAP"] == pytest.approx(out["mAP"], abs=1e-6)
    with pytest.raises(ValueError, match="ranks must be"):
        reid_metrics(qf, gf, q_pids, g_pids, q_cams, g_cams, ranks=(0,))


def test_threads_give_identical_results():
    distmat, q_pids, g_pids, q_cams, g_cams = random_case(4, num_q=40, ties=True)
    serial = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=15, chunk_size=3)
    threaded = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=15, chunk_size=3, n_jobs=3)
    np.testing.assert_array_equal(serial[0], threaded[0])
    assert serial[1] == threaded[1]
    with pytest.raises(ValueError, match="n_jobs must be a positive integer"):
        evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, n_jobs=0)


@pytest.mark.parametrize("ties", [False, True])
def test_counting_and_sorting_methods_give_bit_identical_results(ties):
    distmat, q_pids, g_pids, q_cams, g_cams = random_case(11, num_q=150, num_g=900, n_ids=40, n_cams=5, ties=ties)
    by_count = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=30, method="count", chunk_size=17)
    by_sort = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=30, method="sort")
    assert np.array_equal(by_count[0], by_sort[0]) and by_count[1] == by_sort[1]


def test_distance_blocks_are_ranked_like_the_dense_matrix():
    from ray_reid.eval.topk import FeatureDistances

    rng = np.random.default_rng(3)
    q, g = rng.standard_normal((40, 8)), rng.standard_normal((200, 8))
    q_pids, g_pids = rng.integers(1, 10, 40), rng.integers(-1, 10, 200)
    q_cams, g_cams = rng.integers(0, 3, 40), rng.integers(0, 3, 200)
    blocks = FeatureDistances(q, g)
    dense = blocks.block(0, 40)
    ref = evaluate_rank(dense, q_pids, g_pids, q_cams, g_cams, max_rank=10, method="sort")
    got = evaluate_rank(blocks, q_pids, g_pids, q_cams, g_cams, max_rank=10, chunk_size=40)
    assert np.array_equal(got[0], ref[0]) and got[1] == ref[1]


@pytest.mark.parametrize("method", ["count", "sort"])
def test_nan_in_a_row_without_matches_is_still_reported(method):
    distmat, q_pids, g_pids, q_cams, g_cams = random_case(2)
    distmat[0, 5] = np.nan  # query 0's id is absent from the gallery
    with pytest.raises(ValueError, match="NaN .first in query row 0"):
        evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, method=method)
    with pytest.raises(ValueError, match="method must be one of"):
        evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, method="argsort")
