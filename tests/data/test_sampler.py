import logging

import numpy as np
import pytest

from ray_reid.data.sampler import PseudoIdentitySampler


def make(labels, cams, **kw):
    args = dict(num_instances=4, batch_size=8, num_iterations=5)
    args.update(kw)
    return PseudoIdentitySampler(labels, cams, **args)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(12), 6)
    cams = rng.integers(0, 3, size=labels.size)
    labels[rng.choice(labels.size, 10, replace=False)] = -1
    return labels, cams


def test_batch_structure_length_and_no_outliers(data):
    labels, cams = data
    s = make(labels, cams)
    idx = np.array(list(s))
    assert len(s) == len(idx) == 5 * 8
    assert (labels[idx] >= 0).all()
    for batch in idx.reshape(5, 2, 4):
        ids = labels[batch]
        assert (ids == ids[:, :1]).all()  # each group of K is one identity
        assert len(set(ids[:, 0])) == 2  # P different identities
        for group in batch:
            # enough images everywhere here: no image repeated inside a group
            assert len(set(group)) == 4


def test_partners_prefer_other_cameras():
    # identity 0: anchor camera decides; 2 images in cam 0, 3 in cam 1, 3 in cam 2
    labels = np.array([0] * 8 + [1] * 8)
    cams = np.array([0, 0, 1, 1, 1, 2, 2, 2] * 2)
    s = make(labels, cams, num_instances=4, batch_size=8, num_iterations=50)
    for group in s.indices().reshape(-1, 4):
        anchor_cam = cams[group[0]]
        others = sum(1 for c in cams[group[1:]] if c != anchor_cam)
        available = sum(1 for i in np.flatnonzero(labels == labels[group[0]]) if cams[i] != anchor_cam)
        assert others == min(3, available)


def test_replacement_only_when_too_few_images():
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    cams = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    s = make(labels, cams, num_instances=4, batch_size=12, num_iterations=10)
    for group in s.indices().reshape(-1, 4):
        members = np.flatnonzero(labels == labels[group[0]])
        assert set(group) <= set(members)
        if len(members) >= 4:
            assert len(set(group)) == 4
        else:
            assert set(group) == set(members)  # every image used before any repeats


def test_ranks_draw_disjoint_identities_per_iteration(data):
    labels, cams = data
    per_rank = [make(labels, cams, rank=r, world_size=3, batch_size=8).indices().reshape(5, 8) for r in range(3)]
    for it in range(5):
        seen = [set(labels[p[it]]) for p in per_rank]
        assert sum(len(s) for s in seen) == len(set().union(*seen)) == 6


def test_deterministic_per_seed_epoch_rank(data):
    labels, cams = data
    a = make(labels, cams, seed=3, epoch=2).indices()
    np.testing.assert_array_equal(a, make(labels, cams, seed=3, epoch=2).indices())
    assert not np.array_equal(a, make(labels, cams, seed=3, epoch=3).indices())
    assert not np.array_equal(a, make(labels, cams, seed=4, epoch=2).indices())
    s = make(labels, cams, seed=3, epoch=0)
    s.set_epoch(2)
    np.testing.assert_array_equal(a, s.indices())


def test_visits_all_identities_before_repeating(data):
    labels, cams = data
    s = make(labels, cams, num_iterations=6, batch_size=8)  # 6 iterations x 2 ids = 12 identities
    assert set(labels[s.indices()]) == set(range(12))


def test_too_few_identities_reuses_with_one_warning(caplog):
    labels = np.array([0, 0, 1, 1, 2, 2])
    cams = np.array([0, 1, 0, 1, 0, 1])
    with caplog.at_level(logging.WARNING):
        s0 = make(labels, cams, num_instances=2, batch_size=4, world_size=2, rank=0)
        s1 = make(labels, cams, num_instances=2, batch_size=4, world_size=2, rank=1)
    assert sum("identities will repeat" in r.message for r in caplog.records) == 1
    for s in (s0, s1):
        idx = s.indices()
        assert len(idx) == 5 * 4
        for batch in idx.reshape(5, 2, 2):
            assert len(set(labels[batch[:, 0]])) == 2  # distinct within a rank's batch when possible


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(num_instances=0), "num_instances"),
        (dict(batch_size=6), "multiple of num_instances"),
        (dict(num_iterations=0), "num_iterations"),
        (dict(rank=2, world_size=2), "rank"),
    ],
)
def test_validation(kw, match, data):
    labels, cams = data
    with pytest.raises(ValueError, match=match):
        make(labels, cams, **kw)


def test_all_outliers_and_mismatched_lengths():
    with pytest.raises(ValueError, match="outlier"):
        make(np.full(4, -1), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="same length"):
        make(np.zeros(4, dtype=int), np.zeros(3, dtype=int))


def test_split_identities_tiles_the_global_batch():
    from ray_reid.data.sampler import split_identities

    assert split_identities(16, 3) == [6, 5, 5]
    assert split_identities(16, 4) == [4, 4, 4, 4]
    assert split_identities(5, 1) == [5]
    for p in range(1, 20):
        for world in range(1, p + 1):
            shares = split_identities(p, world)
            assert sum(shares) == p and max(shares) - min(shares) <= 1 and min(shares) >= 1
    with pytest.raises(ValueError, match="cannot feed 5 ranks"):
        split_identities(4, 5)


def test_loss_weights_make_the_ddp_average_the_global_batch_mean():
    # DDP averages the ranks' gradients; with the weights that average must be the mean over all P*K images.
    import torch

    from ray_reid.data.sampler import rank_loss_weight, split_identities

    torch.manual_seed(0)
    p, k = 7, 3
    w = torch.randn(5, requires_grad=True)
    x = torch.randn(p * k, 5)
    full = (x @ w).pow(2).mean()
    (want,) = torch.autograd.grad(full, w)
    for world in (1, 2, 3, 7):
        shares, start, grads = split_identities(p, world), 0, []
        for rank, share in enumerate(shares):
            rows = x[start * k:(start + share) * k]
            start += share
            loss = (rows @ w).pow(2).mean() * rank_loss_weight(p, world, rank)
            grads.append(torch.autograd.grad(loss, w)[0])
        torch.testing.assert_close(torch.stack(grads).mean(0), want)
    assert rank_loss_weight(16, 4, 2) == 1.0  # equal shares: nothing changes


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_uneven_ranks_draw_the_whole_global_batch_once(data, world):
    from ray_reid.data.sampler import split_identities

    labels, cams = data
    p, k = 5, 2
    shares = split_identities(p, world)
    per_rank = [make(labels, cams, num_instances=k, batch_size=share * k, global_batch_size=p * k, rank=r,
                     world_size=world).indices().reshape(5, share * k) for r, share in enumerate(shares)]
    for it in range(5):
        seen = [set(labels[b[it]]) for b in per_rank]
        assert [len(s) for s in seen] == shares
        assert len(set().union(*seen)) == p  # disjoint, together the P identities of one global step


def test_global_batch_is_the_same_draw_whatever_the_world_size(data):
    # the identities of each global step do not depend on how many ranks share them
    from ray_reid.data.sampler import split_identities

    labels, cams = data
    p, k = 6, 2

    def step_ids(world):
        parts = [make(labels, cams, num_instances=k, batch_size=s * k, global_batch_size=p * k, rank=r,
                      world_size=world, seed=1).indices().reshape(5, s * k) for r, s in enumerate(split_identities(p, world))]
        return [set().union(*(set(labels[b[it]]) for b in parts)) for it in range(5)]

    assert step_ids(1) == step_ids(2) == step_ids(4)


def test_a_rank_batch_that_is_not_its_share_is_refused(data):
    labels, cams = data
    with pytest.raises(ValueError, match="rank 1 of 3 holds 2 of the global batch's 7 identities"):
        make(labels, cams, num_instances=2, batch_size=6, global_batch_size=14, rank=1, world_size=3)
