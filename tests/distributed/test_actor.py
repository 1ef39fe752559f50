"""The clustering rendezvous: shards from every rank in, one clustering, the same labels out."""

import threading

import numpy as np
import pytest

from ray_reid.config import ClusterConfig
from ray_reid.distributed.actor import ClusteringService
from ray_reid.engine.loop import shard_indices


def blobs(n_per=6, centres=4, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)) * 5
    x = np.repeat(c, n_per, axis=0) + 0.1 * rng.standard_normal((centres * n_per, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def submit_all(service, x, world, epoch=0):
    results, errors = [None] * world, []

    def rank_call(rank):
        idx = shard_indices(len(x), rank, world)
        try:
            results[rank] = service.submit(epoch, len(x), world, rank, idx, {"global": x[idx]}, timeout=60)
        except Exception as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=rank_call, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_every_rank_gets_the_same_labels_as_a_single_process():
    x = blobs()
    cfg = ClusterConfig(method="hc_sse", min_clusters_ratio=4 / 24, merge_percent=0.9)
    service = ClusteringService(cfg.__dict__)
    results, errors = submit_all(service, x, world=3)
    assert not errors
    single = ClusteringService(cfg.__dict__).submit(0, len(x), 1, 0, np.arange(len(x)), {"global": x})
    for res in results:
        np.testing.assert_array_equal(res.labels, single.labels)
    assert results[0].n_clusters == 4
    assert results[0].centroids["global"].shape == (4, 16)


def test_overlapping_shards_are_refused():
    x = blobs()
    service = ClusteringService(ClusterConfig().__dict__)
    errors = []

    def call(rank, idx):
        try:
            service.submit(0, len(x), 2, rank, idx, {"global": x[idx]}, timeout=30)
        except ValueError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=call, args=(0, np.arange(0, 14))),
               threading.Thread(target=call, args=(1, np.arange(10, 24)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 2 and "duplicates or gaps" in errors[0]


def test_missing_rank_times_out_with_a_clear_error():
    x = blobs()
    service = ClusteringService(ClusterConfig().__dict__)
    with pytest.raises(TimeoutError, match="only 1 of 2 embedding shards"):
        service.submit(0, len(x), 2, 0, np.arange(12), {"global": x[:12]}, timeout=0.5)


def test_nan_embeddings_are_refused_naming_the_view():
    x = blobs()
    x[3, 2] = np.nan
    service = ClusteringService(ClusterConfig().__dict__)
    with pytest.raises(ValueError, match="view 'global' hold NaN or inf in 1 of 24 rows"):
        service.submit(0, len(x), 1, 0, np.arange(len(x)), {"global": x}, timeout=30)


def test_a_restarted_group_of_another_size_completes_the_epoch_left_half_sent():
    # A 3-worker group dies after rank 0 sent its shard of epoch 0; the elastic restart has 2 workers.
    x = blobs()
    cfg = ClusterConfig(method="hc_sse", min_clusters_ratio=4 / 24, merge_percent=0.9)
    service = ClusteringService(cfg.__dict__)
    stale = shard_indices(len(x), 0, 3)
    with pytest.raises(TimeoutError, match="only 1 of 3"):
        service.submit(0, len(x), 3, 0, stale, {"global": x[stale]}, timeout=0.2)
    results, errors = submit_all(service, x, world=2)
    assert not errors
    single = ClusteringService(cfg.__dict__).submit(0, len(x), 1, 0, np.arange(len(x)), {"global": x})
    for res in results:
        np.testing.assert_array_equal(res.labels, single.labels)
    # and growing back: a 3-worker group after a 1-worker one left a shard of epoch 1
    half = shard_indices(len(x), 1, 2)
    with pytest.raises(TimeoutError, match="only 1 of 2"):
        service.submit(1, len(x), 2, 1, half, {"global": x[half]}, timeout=0.2)
    results, errors = submit_all(service, x, world=3, epoch=1)
    assert not errors and all(r is not None and r.n_clusters >= 1 for r in results)


def test_camera_ids_from_every_rank_reach_the_clusterer_in_image_order():
    rng = np.random.default_rng(5)
    person, camera = rng.standard_normal((4, 16)), 4.0 * rng.standard_normal((3, 16))
    pids, camids = np.repeat(np.arange(4), 6), np.tile(np.arange(3), 8)
    x = (person[pids] + camera[camids] + 0.1 * rng.standard_normal((24, 16))).astype(np.float32)
    cfg = ClusterConfig(method="hc_sse", schedule="threshold", distance_threshold=0.6, linkage="average",
                        regularizer="none", camera_centred=True, device="cpu")
    service, results, errors = ClusteringService(cfg.__dict__), [None] * 3, []

    def rank_call(rank):
        idx = shard_indices(len(x), rank, 3)[::-1]  # a rank's rows in any order, its camids in the same order
        try:
            results[rank] = service.submit(0, len(x), 3, rank, idx, {"global": x[idx]}, camids=camids[idx], timeout=60)
        except Exception as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=rank_call, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(pids, results[0].labels) == 1.0
    with pytest.raises(ValueError, match="2 camera ids for 24 images"):
        ClusteringService(cfg.__dict__).submit(1, 24, 1, 0, np.arange(24), {"global": x}, camids=camids[:2])
