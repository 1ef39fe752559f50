import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from ports import free_port

from ray_reid.losses import ClusterMemory, cluster_centroids


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def manual_update(memory, feats, targets, momentum):
    memory = memory.clone()
    for f, y in zip(feats, targets.tolist()):
        memory[y] = F.normalize(momentum * memory[y] + (1 - momentum) * f, dim=0)
    return memory


def test_centroids_match_per_cluster_mean():
    feats = unit(12, 5, 0)
    labels = torch.tensor([0, 1, 2, -1, 0, 1, 2, 2, -1, 0, 1, 1])
    cents = cluster_centroids(feats, labels)
    assert cents.shape == (3, 5)
    for c in range(3):
        torch.testing.assert_close(cents[c], F.normalize(feats[labels == c].mean(0), dim=0))


def test_centroids_reject_gaps_and_all_outliers():
    feats = unit(4, 3, 0)
    with pytest.raises(ValueError, match="empty clusters: \\[1\\]"):
        cluster_centroids(feats, torch.tensor([0, 2, 2, -1]))
    with pytest.raises(ValueError, match="outlier"):
        cluster_centroids(feats, torch.full((4,), -1))


def test_loss_matches_manual_cross_entropy_and_memory_is_constant():
    cents = unit(6, 8, 1)
    memory = ClusterMemory.from_centroids(cents * 3.0, temp=0.05)  # normalised on the way in
    torch.testing.assert_close(memory.features, cents)
    feats = unit(5, 8, 2).requires_grad_(True)
    targets = torch.tensor([0, 3, 5, 3, 1])
    loss = memory(feats, targets)
    logits = feats.detach() @ cents.t() / 0.05
    manual = -(logits.log_softmax(1)[torch.arange(5), targets]).mean()
    torch.testing.assert_close(loss, manual)
    loss.backward()
    assert feats.grad is not None and not memory.features.requires_grad
    assert [name for name, _ in memory.named_parameters()] == []


def test_update_matches_manual_loop_with_repeats():
    cents = unit(4, 6, 3)
    memory = ClusterMemory.from_centroids(cents, momentum=0.2)
    feats = unit(10, 6, 4)
    targets = torch.tensor([2, 0, 2, 2, 1, 0, 3, 2, 1, 0])
    memory.update(feats, targets)
    torch.testing.assert_close(memory.features, manual_update(cents, feats, targets, 0.2))
    torch.testing.assert_close(memory.features.norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="\\[0, 4\\)"):
        memory.update(feats[:1], torch.tensor([4]))


def test_set_centroids_resizes_and_state_dict_round_trips():
    memory = ClusterMemory(6, 3)
    memory.set_centroids(unit(7, 6, 5))
    assert memory.num_clusters == 7
    fresh = ClusterMemory(6, 2)
    fresh.load_state_dict(memory.state_dict())
    torch.testing.assert_close(fresh.features, memory.features)
    with pytest.raises(ValueError, match="\\[C >= 1, 6\\]"):
        memory.set_centroids(unit(3, 5, 0))


def _rank_batch(rank):
    # rank 1 sends a smaller batch to exercise the padding path; clusters overlap across ranks
    n = 6 if rank == 0 else 4
    return unit(n, 8, 100 + rank), torch.tensor([0, 1, 2, 1, 0, 3][:n]) if rank == 0 else torch.tensor([1, 3, 1, 0])


def _worker(rank, world, port, cents, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        memory = ClusterMemory.from_centroids(cents, momentum=0.1)
        for step in range(2):
            feats, targets = _rank_batch(rank)
            memory.update(feats * (step + 1), targets)
        out[rank].copy_(memory.features)
    finally:
        dist.destroy_process_group()


def test_update_identical_across_two_ranks():
    cents = unit(4, 8, 7)
    out = torch.zeros(2, 4, 8).share_memory_()
    mp.spawn(_worker, args=(2, free_port(), cents, out), nprocs=2, join=True)
    expected = cents
    for step in range(2):
        batches = [_rank_batch(r) for r in range(2)]
        feats = torch.cat([b[0] for b in batches]) * (step + 1)
        targets = torch.cat([b[1] for b in batches])
        expected = manual_update(expected, feats, targets, 0.1)
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)
    torch.testing.assert_close(out[0], expected)


def _gpu_available():
    from ray_reid.clustering._backend import cupy_available

    return cupy_available() and torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_available(), reason="needs a CUDA device")
def test_update_on_cuda_matches_cpu():
    cents = unit(50, 32, 8)
    feats = unit(256, 32, 9)
    targets = torch.randint(0, 50, (256,), generator=torch.Generator().manual_seed(0))
    cpu = ClusterMemory.from_centroids(cents)
    gpu = ClusterMemory.from_centroids(cents).cuda()
    cpu.update(feats, targets)
    gpu.update(feats.cuda(), targets.cuda())
    torch.testing.assert_close(gpu.features.cpu(), cpu.features, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gpu(feats.cuda(), targets.cuda()).cpu(), cpu(feats, targets), rtol=1e-5, atol=1e-6)
