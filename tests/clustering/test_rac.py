"""The graph path of HierarchicalSSE: equal to the dense path on a complete graph, constrained on a sparse one."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from ray_reid.clustering import _rac
from ray_reid.clustering import graph as graph_module
from ray_reid.clustering._backend import cupy_available
from ray_reid.clustering.graph import (
    balanced_cells,
    cell_knn,
    edges_from_matrix,
    edges_from_neighbours,
    knn_graph,
    pca_project,
    refine_neighbours,
)
from ray_reid.clustering.knn import knn_search
from ray_reid.clustering.hierarchical import HierarchicalSSE

# every linkage × regulariser whose cost is reducible (the _rac module docstring proves it);
# delta_sse only with lam = 0, where it drops out
REDUCIBLE = [(link, reg) for link in ("single", "average") for reg in ("sse", "size", "none")]


def _both(x, k, **kw):
    dense = HierarchicalSSE(k, device="cpu", **kw).fit(x)
    graph = HierarchicalSSE(k, device="cpu", connectivity="knn", n_neighbors=len(x), **kw).fit(x)
    return dense, graph


@pytest.mark.parametrize(("link", "reg"), REDUCIBLE)
@pytest.mark.parametrize("lam", [0.0, 0.05, 1.0, 10.0])
def test_complete_graph_equals_dense_labels_and_merge_order(link, reg, lam):
    rng = np.random.default_rng([len(link), len(reg), int(lam * 100)])
    for n, k in ((40, 4), (150, 12), (400, 25)):
        x = rng.standard_normal((n, 8))
        dense, graph = _both(x, k, lam=lam, linkage=link, regularizer=reg)
        np.testing.assert_array_equal(graph.merges_, dense.merges_)
        np.testing.assert_array_equal(graph.labels_, dense.labels_)
        np.testing.assert_allclose(graph.merge_costs_, dense.merge_costs_, rtol=1e-9, atol=1e-12)
        assert graph.n_edges_ == n * (n - 1) // 2
        assert len(graph.rounds_) < n - k  # rounds merge many pairs at once


@pytest.mark.parametrize("link", ["single", "average"])
def test_delta_sse_with_zero_lambda_runs_on_the_graph(link):
    x = np.random.default_rng(4).standard_normal((60, 5))
    dense, graph = _both(x, 6, lam=0.0, linkage=link, regularizer="delta_sse")
    np.testing.assert_array_equal(graph.merges_, dense.merges_)


@pytest.mark.parametrize(("link", "reg"), REDUCIBLE)
def test_constructed_ties_resolve_as_in_the_dense_loop(link, reg):
    """Integer grid points and duplicates: many exactly equal costs, computed bit for bit alike."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 3, size=(60, 2)).astype(np.float64)
        for lam, k in itertools.product((0.0, 0.5), (1, 5, 20)):
            dense, graph = _both(x, k, lam=lam, linkage=link, regularizer=reg, normalize=False)
            np.testing.assert_array_equal(graph.merges_, dense.merges_)
            np.testing.assert_array_equal(graph.labels_, dense.labels_)


def test_tie_on_a_line_follows_the_lowest_pair_rule():
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = HierarchicalSSE(1, lam=0.0, regularizer="none", normalize=False, device="cpu",
                            connectivity="knn", n_neighbors=3).fit(x)
    np.testing.assert_array_equal(model.merges_, [[0, 1], [0, 2], [0, 3]])


def _constrained_greedy(x, edges, n_clusters, lam):
    """Sequential reference: always merge the cheapest pair of clusters joined by an edge (single + sse)."""
    sq = ((x[:, None] - x[None]) ** 2).sum(-1)
    adjacent = np.zeros_like(sq, dtype=bool)
    adjacent[edges[0], edges[1]] = adjacent[edges[1], edges[0]] = True
    clusters = [[i] for i in range(len(x))]
    merges = []
    while len(clusters) > n_clusters:
        best = None
        for ca, cb in itertools.combinations(clusters, 2):
            block = np.ix_(ca, cb)
            if not adjacent[block].any():
                continue
            union = x[ca + cb]
            cost = sq[block][adjacent[block]].min() + lam * ((union - union.mean(0)) ** 2).sum()
            key = (cost, min(ca[0], cb[0]), max(ca[0], cb[0]))
            if best is None or key < best[0]:
                best = (key, ca, cb)
        if best is None:
            break
        _, ca, cb = best
        clusters.remove(ca)
        clusters.remove(cb)
        clusters.append(sorted(ca + cb))
        merges.append((min(ca[0], cb[0]), max(ca[0], cb[0])))
    return np.array(merges).reshape(-1, 2)


def test_single_linkage_on_a_knn_graph_is_the_exact_constrained_greedy():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((70, 4))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    model = HierarchicalSSE(5, lam=0.3, linkage="single", regularizer="sse", device="cpu",
                            connectivity="knn", n_neighbors=4).fit(x)
    edges = knn_graph(x, 4, device="cpu", index="flat")
    want = _constrained_greedy(x, edges, 5, 0.3)
    np.testing.assert_array_equal(model.merges_, want)


@pytest.mark.parametrize("link", ["single", "average"])
def test_merges_follow_graph_edges_and_never_join_components(link):
    """Two groups with no edge between them stay apart whatever the costs say."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 3))
    adjacency = np.zeros((40, 40))
    for i in range(19):  # a path over 0..19 and another over 20..39
        adjacency[i, i + 1] = adjacency[20 + i, 21 + i] = 1
    model = HierarchicalSSE(1, lam=0.1, linkage=link, device="cpu", connectivity=sp.csr_matrix(adjacency)).fit(x)
    assert model.n_clusters_ == 2  # stopped at the component count, not at 1
    np.testing.assert_array_equal(model.labels_, np.repeat([0, 1], 20))
    # every merge joins clusters that were adjacent along the path: contiguous runs only
    for k in (2, 5, 11):
        labels = HierarchicalSSE(k, lam=0.1, linkage=link, device="cpu", connectivity=adjacency).fit_predict(x)
        assert (np.diff(labels) != 0).sum() == k - 1


def test_knn_graph_recovers_separated_clusters_and_approaches_dense():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((12, 32))
    truth = rng.integers(0, 12, 600)
    x = centres[truth] + 0.15 * rng.standard_normal((600, 32))
    dense = HierarchicalSSE(12, lam=0.05, linkage="average", device="cpu").fit_predict(x)
    graph = HierarchicalSSE(12, lam=0.05, linkage="average", device="cpu", connectivity="knn",
                            n_neighbors=10).fit_predict(x)
    assert adjusted_rand_score(truth, graph) == 1.0
    assert adjusted_rand_score(dense, graph) == 1.0


def test_ivf_index_gives_a_usable_graph():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((20, 16))
    truth = rng.integers(0, 20, 3000)
    x = (centres[truth] + 0.1 * rng.standard_normal((3000, 16))).astype(np.float32)
    labels = HierarchicalSSE(20, lam=0.05, linkage="average", device="cpu", connectivity="knn",
                             n_neighbors=10, knn_index="ivf").fit_predict(x)
    assert adjusted_rand_score(truth, labels) > 0.99


def test_pca_index_gives_the_exact_graph_when_the_data_lie_in_a_subspace():
    # clusters in a 16-d subspace of 256 dimensions: the projection keeps every distance (up
    # to the 1e-4 noise), so the candidates re-ranked exactly are the flat search's neighbours
    rng = np.random.default_rng(2)
    basis = np.linalg.qr(rng.standard_normal((256, 16)))[0]
    truth = rng.integers(0, 12, 1500)
    latent = 3 * rng.standard_normal((12, 16))[truth] + 0.5 * rng.standard_normal((1500, 16))
    x = (latent @ basis.T + 1e-4 * rng.standard_normal((1500, 256))).astype(np.float32)
    u_flat, v_flat = knn_graph(x, 8, device="cpu", index="flat")
    u_pca, v_pca = knn_graph(x, 8, device="cpu", index="pca", pca_dims=16)
    shared = set(zip(u_flat.tolist(), v_flat.tolist())) & set(zip(u_pca.tolist(), v_pca.tolist()))
    assert len(shared) >= 0.99 * len(u_flat)
    labels = HierarchicalSSE(12, lam=0.05, linkage="average", device="cpu", connectivity="knn",
                             n_neighbors=8, knn_index="pca").fit_predict(x)
    assert adjusted_rand_score(truth, labels) == 1.0


def test_pca_projection_keeps_the_leading_subspace_and_its_distances():
    rng = np.random.default_rng(4)
    basis = np.linalg.qr(rng.standard_normal((64, 5)))[0]
    x = (rng.standard_normal((3000, 5)) * [9, 7, 5, 3, 2]) @ basis.T + 1e-3 * rng.standard_normal((3000, 64))
    y = pca_project(x.astype(np.float32), 5)
    assert y.shape == (3000, 5) and y.dtype == np.float32
    d_full = ((x[:50, None] - x[None, :50]) ** 2).sum(-1)
    d_red = ((y[:50, None] - y[None, :50]) ** 2).sum(-1)
    np.testing.assert_allclose(d_red, d_full, rtol=1e-3, atol=1e-2)
    with pytest.raises(ValueError, match="dims must be a positive integer, got 0"):
        pca_project(x, 0)


def test_refine_keeps_the_exact_nearest_of_the_candidates():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 7)).astype(np.float32)
    cand = np.stack([rng.permutation(40)[:10] for _ in range(40)])
    got = refine_neighbours(x, cand, 3)
    d = ((x[:, None] - x[cand]) ** 2).sum(-1)
    want = np.take_along_axis(cand, np.argsort(d, axis=1, kind="stable")[:, :3], axis=1)
    np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(want, axis=1))


def test_fp16_input_is_accepted():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 16))
    want = HierarchicalSSE(10, lam=0.1, linkage="average", device="cpu", connectivity="knn",
                           n_neighbors=15).fit_predict(x.astype(np.float16).astype(np.float32))
    got = HierarchicalSSE(10, lam=0.1, linkage="average", device="cpu", connectivity="knn",
                          n_neighbors=15).fit_predict(x.astype(np.float16))
    np.testing.assert_array_equal(got, want)


def test_edge_builders_symmetrise_and_drop_self_loops():
    u, v = edges_from_neighbours(np.array([[0, 1, 2], [1, 0, -1], [2, 2, 0]]))
    assert list(zip(u.tolist(), v.tolist())) == [(0, 1), (0, 2)]
    u, v = edges_from_matrix(sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0]])), 3)
    assert list(zip(u.tolist(), v.tolist())) == [(0, 2), (1, 2)]
    with pytest.raises(ValueError, match=r"N×N adjacency matrix with N = 3"):
        edges_from_matrix(np.ones((3, 4)), 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"connectivity": "sparse"}, r"connectivity must be one of \('dense', 'knn'\) or an N×N adjacency"),
        ({"connectivity": None}, r"connectivity must be one of"),
        ({"connectivity": "knn", "n_neighbors": 0}, r"n_neighbors must be an integer >= 1, got 0"),
        ({"connectivity": "knn", "n_neighbors": 2.5}, r"n_neighbors must be an integer >= 1"),
        ({"connectivity": "knn", "knn_index": "hnsw"}, r"knn_index must be one of \('auto', 'flat', 'ivf', 'pca', 'cells'\)"),
        ({"connectivity": "knn", "regularizer": "delta_sse", "lam": 0.1},
         r"delta_sse' with lam > 0 cannot run on a graph.*not reducible.*connectivity='dense'"),
        ({"connectivity": np.ones((4, 4))}, r"N×N adjacency matrix with N = 10"),
    ],
)
def test_bad_graph_parameters_are_refused_by_name(kwargs, match):
    x = np.random.default_rng(0).standard_normal((10, 3))
    params = {"lam": 1.0, "device": "cpu"} | kwargs
    with pytest.raises(ValueError, match=match):
        HierarchicalSSE(3, **params).fit(x)


def test_round_statistics_add_up():
    x = np.random.default_rng(5).standard_normal((300, 8))
    model = HierarchicalSSE(30, lam=0.05, linkage="average", device="cpu", connectivity="knn", n_neighbors=8).fit(x)
    assert sum(r.merges for r in model.rounds_) >= 270  # the last round may go past the cut
    assert model.rounds_[0].recosted == model.rounds_[0].edges == model.n_edges_
    assert all(r.seconds >= 0 for r in model.rounds_)


def test_scatter_min_takes_the_minimum_over_repeated_indices():
    target = np.full(3, np.inf)
    _rac.scatter_min(target, np.array([0, 0, 2, 2, 2]), np.array([3.0, 1.0, 5.0, 4.0, 6.0]))
    np.testing.assert_array_equal(target, [1.0, np.inf, 4.0])


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_available(), reason="needs a CUDA device with CuPy")
@pytest.mark.parametrize(("link", "reg"), REDUCIBLE)
def test_cupy_graph_path_matches_numpy(link, reg):
    import cupy

    rng = np.random.default_rng(9)
    x = rng.standard_normal((300, 16))
    cpu = HierarchicalSSE(20, lam=0.1, linkage=link, regularizer=reg, device="cpu", connectivity="knn",
                          n_neighbors=12).fit(x)
    gpu = HierarchicalSSE(20, lam=0.1, linkage=link, regularizer=reg, device="cuda", connectivity="knn",
                          n_neighbors=12).fit(cupy.asarray(x))
    np.testing.assert_array_equal(gpu.labels_, cpu.labels_)
    np.testing.assert_array_equal(gpu.merges_, cpu.merges_)


@pytest.mark.parametrize("link", ["single", "average"])
def test_distance_threshold_on_a_complete_graph_equals_dense(link):
    x = np.random.default_rng(6).standard_normal((120, 6))
    for threshold in (0.1, 0.5, 2.0):
        dense, graph = _both(x, None, distance_threshold=threshold, lam=0.2, linkage=link)
        np.testing.assert_array_equal(graph.merges_, dense.merges_)
        np.testing.assert_array_equal(graph.labels_, dense.labels_)
        assert (graph.merge_costs_ <= threshold).all()


def _members_cost(x, members_a, members_b, lam, link, adjacent):
    """Linkage + λ·SSE(A∪B) straight from the members (brute force, float64): average over all
    member pairs, single over the member pairs joined by a graph edge."""
    xa, xb = x[members_a], x[members_b]
    sq = ((xa[:, None] - xb[None]) ** 2).sum(-1)
    d = sq.mean() if link == "average" else sq[adjacent[np.ix_(members_a, members_b)]].min()
    union = np.concatenate([xa, xb])
    return d + lam * ((union - union.mean(0)) ** 2).sum()


@pytest.mark.parametrize("link", ["average", "single"])
def test_cached_edge_dots_give_the_members_costs_on_a_knn_graph(link):
    """Summed cached dots (no gather) and gathered ones both give every merge its exact cost."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((250, 6))
    u, v = knn_graph(x, 6, device="cpu", index="flat")
    res = _rac.rac_agglomerate(x.copy(), u, v, 10, lam=0.3, linkage=link, regularizer="sse", xp=np)
    assert sum(r.gathered for r in res.rounds) < sum(r.recosted for r in res.rounds)  # some were summed
    adjacent = np.zeros((len(x), len(x)), dtype=bool)
    adjacent[u, v] = adjacent[v, u] = True
    members = {i: [i] for i in range(len(x))}
    for (a, b), cost in zip(res.merges, res.costs):
        want = _members_cost(x, members[a], members[b], 0.3, link, adjacent)
        assert cost == pytest.approx(want, rel=1e-9, abs=1e-12)
        members[a] = members[a] + members.pop(b)


def test_complete_graph_gathers_only_in_the_first_round():
    x = np.random.default_rng(13).standard_normal((120, 5))
    model = HierarchicalSSE(6, lam=0.1, linkage="average", device="cpu", connectivity="knn",
                            n_neighbors=len(x)).fit(x)
    assert model.rounds_[0].gathered == model.n_edges_
    assert all(r.gathered == 0 for r in model.rounds_[1:])  # every merged edge's parts all had edges


def test_supplied_edge_dots_replace_the_first_gather():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((200, 8))
    u, v = knn_graph(x, 8, device="cpu", index="flat")
    plain = _rac.rac_agglomerate(x.copy(), u, v, 12, lam=0.1, linkage="average", regularizer="sse", xp=np)
    given = _rac.rac_agglomerate(x.copy(), u, v, 12, lam=0.1, linkage="average", regularizer="sse", xp=np,
                                 gab=np.einsum("ij,ij->i", x[u], x[v]))
    assert given.rounds[0].gathered == 0 and plain.rounds[0].gathered == len(u)
    np.testing.assert_array_equal(given.merges, plain.merges)
    np.testing.assert_allclose(given.costs, plain.costs, rtol=1e-12)


def test_cell_search_probing_every_cell_is_the_exact_search():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((300, 24)).astype(np.float32)
    indices, dots = cell_knn(x, 7, dims=8, cell_size=20, probes=10_000)
    dist, want = knn_search(x, 7, device="cpu")
    got_dist = ((x[:, None] - x[indices]) ** 2).sum(-1)
    np.testing.assert_allclose(got_dist, dist, rtol=1e-4, atol=1e-4)  # same neighbours up to float32 near-ties
    assert (indices == want).mean() > 0.99
    np.testing.assert_allclose(dots, np.einsum("nj,nkj->nk", x, x[indices]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flat_kmeans_max", [1024, 4])
def test_cell_search_finds_the_neighbours_inside_separated_groups(monkeypatch, flat_kmeans_max):
    """Groups far apart in a low-dimensional subspace: every row's k nearest lie in its own cells.

    With the flat k-means capped at 4 cells, the two-level cells and shortlisted probes run too."""
    monkeypatch.setattr(graph_module, "_CELL_FLAT_KMEANS_MAX", flat_kmeans_max)
    rng = np.random.default_rng(16)
    centres = 10 * rng.standard_normal((50, 4)) @ np.linalg.qr(rng.standard_normal((64, 4)))[0].T
    truth = np.repeat(np.arange(50), 12)
    x = (centres[truth] + 0.3 * rng.standard_normal((600, 64))).astype(np.float32)
    indices, _ = cell_knn(x, 10, dims=8, cell_size=24, probes=3)  # a group may be cut in up to 3 cells
    _, want = knn_search(x, 10, device="cpu")
    assert (np.sort(indices, axis=1) == np.sort(want, axis=1)).all()


def test_balanced_cells_cut_oversized_cells():
    rng = np.random.default_rng(17)
    # one dense blob of 900 rows beside 100 scattered ones: plain k-means gives it few centroids
    z = np.concatenate([0.01 * rng.standard_normal((900, 6)), 5 * rng.standard_normal((100, 6))]).astype(np.float32)
    cell, centroids = balanced_cells(z, 25)
    sizes = np.bincount(cell)
    assert cell.shape == (1000,) and sizes.min() >= 1 and sizes.max() <= 50
    assert centroids.shape == (sizes.size, 6)
    np.testing.assert_allclose(centroids[3], z[cell == 3].mean(0), rtol=1e-4, atol=1e-5)
    # 2,000 identical rows: k-means cannot cut them, halving does
    cell, _ = balanced_cells(np.ones((2000, 4), dtype=np.float32), 25)
    assert np.bincount(cell).max() <= 50


def test_cells_index_clusters_like_the_exact_graph_and_starts_from_the_search_dots():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((20, 64))
    truth = rng.integers(0, 20, 2000)
    x = (centres[truth] + 0.1 * rng.standard_normal((2000, 64))).astype(np.float32)
    model = HierarchicalSSE(20, lam=0.05, linkage="average", device="cpu", connectivity="knn", n_neighbors=10,
                            knn_index="cells").fit(x)
    assert adjusted_rand_score(truth, model.labels_) == 1.0
    assert model.rounds_[0].gathered == 0 and model.rounds_[0].recosted == model.n_edges_


def test_neighbour_edges_carry_a_value_per_edge():
    ind = np.array([[0, 1, 2], [1, 0, -1], [2, 0, 1]])
    val = np.array([[9.0, 1.0, 2.0], [9.0, 1.0, 7.0], [9.0, 2.0, 3.0]])
    u, v, w = edges_from_neighbours(ind, val)
    assert list(zip(u.tolist(), v.tolist(), w.tolist())) == [(0, 1, 1.0), (0, 2, 2.0), (1, 2, 3.0)]
