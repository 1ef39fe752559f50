"""The ClusteringActor: one process (on a GPU when the cluster has one) that clusters each epoch.

Every rank sends its shard of embeddings as an ObjectRef; the actor copies the arrays out of the
object store at once (refs owned by a worker die with it), waits until all shards of the epoch
are in, clusters once, and answers every rank with the same labels. Results are kept per epoch,
so a rank that retries after a hiccup gets the same answer instead of a second clustering.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import ray

from ray_reid.config import ClusterConfig
from ray_reid.distributed.placement import ActorPlacement
from ray_reid.engine.pseudo_labels import PseudoLabels, assign_pseudo_labels
from ray_reid.logs import quiet_console

log = logging.getLogger(__name__)

ACTOR_NAME_PREFIX = "ray_reid_clusterer"


class ClusteringService:
    """Thread-safe rendezvous of embedding shards; the body of the Ray actor, testable without Ray."""

    def __init__(self, cluster_cfg: dict[str, Any], keep_epochs: int = 2, embeddings_uri: str | None = None):
        self.cfg = ClusterConfig(**cluster_cfg)
        self.embeddings_uri = embeddings_uri
        self.keep_epochs = keep_epochs
        self._cond = threading.Condition()
        self._shards: dict[int, dict[int, tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]]] = {}
        self._results: dict[int, PseudoLabels | BaseException] = {}
        self._running: set[int] = set()
        self._world: dict[int, int] = {}  # world size of the group whose shards of an epoch are pending

    def device(self) -> str:
        from ray_reid.clustering._backend import cupy_available

        return "cuda" if cupy_available() and self.cfg.device != "cpu" else "cpu"

    def submit(self, epoch: int, n_total: int, world_size: int, rank: int, indices: np.ndarray,
               features: dict[str, np.ndarray], timeout: float | None = None,
               camids: np.ndarray | None = None) -> PseudoLabels:
        """One rank's shard (rows ``indices`` of the training set; ``camids`` their cameras, needed with
        ``cluster.camera_centred``); blocks until every rank's shard is in, returns the epoch's labels."""
        indices = np.array(indices, dtype=np.int64, copy=True)
        if camids is not None:
            camids = np.array(camids, copy=True)
            if camids.shape != indices.shape:
                raise ValueError(f"epoch {epoch}, rank {rank}: {len(camids)} camera ids for {len(indices)} images")
        # fp16 shards stay fp16 (half the memory at millions of images); anything else becomes float32
        features = {view: np.array(arr, dtype=np.float16 if np.asarray(arr).dtype == np.float16 else np.float32,
                                   copy=True) for view, arr in features.items()}
        with self._cond:
            if epoch not in self._results:
                self._drop_other_world(epoch, world_size)
                self._shards.setdefault(epoch, {})[rank] = (indices, features, camids)
                if len(self._shards[epoch]) == world_size and epoch not in self._running:
                    self._running.add(epoch)
                    shards = self._shards.pop(epoch)
                    self._cond.release()
                    try:
                        result: PseudoLabels | BaseException = self._cluster(epoch, n_total, shards)
                    except Exception as exc:  # handed to every waiting rank below, then re-raised there
                        result = exc
                    finally:
                        self._cond.acquire()
                    self._results[epoch] = result
                    self._running.discard(epoch)
                    for old in [e for e in self._results if e <= epoch - self.keep_epochs]:
                        del self._results[old]
                    self._cond.notify_all()
            if not self._cond.wait_for(lambda: epoch in self._results, timeout=timeout):
                raise TimeoutError(f"epoch {epoch}: only {len(self._shards.get(epoch, {}))} of {world_size} "
                                   f"embedding shards arrived within {timeout}s")
            result = self._results[epoch]
        if isinstance(result, BaseException):
            raise result
        return result

    def _drop_other_world(self, epoch: int, world_size: int) -> None:
        """Forget shards of ``epoch`` sent by a worker group of another size (caller holds the lock).

        A group that dies mid-rendezvous leaves the shards its ranks had sent; an elastic restart
        with fewer or more workers cuts the images into other shards, so those can never complete
        the new group's set (and would mix two shardings). Shards of a same-size restart are kept:
        rank r's shard is the same images, extracted from the same checkpoint, and is overwritten.
        """
        if self._world.get(epoch, world_size) != world_size and epoch in self._shards:
            stale = self._shards.pop(epoch)
            log.info("epoch %d: %d shard(s) of a %d-worker group dropped, a %d-worker group took over",
                     epoch, len(stale), self._world[epoch], world_size)
        self._world[epoch] = world_size
        for old in [e for e in self._world if e <= epoch - self.keep_epochs]:
            del self._world[old]

    def _cluster(self, epoch: int, n_total: int,
                 shards: dict[int, tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]]):
        order = sorted(shards)
        indices = np.concatenate([shards[r][0] for r in order])
        if len(indices) != n_total or not np.array_equal(np.sort(indices), np.arange(n_total)):
            raise ValueError(f"epoch {epoch}: shards cover {len(np.unique(indices))} distinct of {n_total} images "
                             f"with {len(indices)} rows: duplicates or gaps between ranks")
        views = list(shards[order[0]][1])
        features = {}
        for view in views:
            stacked = np.concatenate([shards[r][1][view] for r in order], axis=0)
            full = np.empty_like(stacked)
            full[indices] = stacked
            features[view] = full
        camids = None
        if all(shards[r][2] is not None for r in order):
            camids = np.empty(n_total, dtype=shards[order[0]][2].dtype)
            camids[indices] = np.concatenate([shards[r][2] for r in order])
        result = assign_pseudo_labels(features, self.cfg, epoch=epoch, camids=camids)
        if self.embeddings_uri:
            from ray_reid.storage import embeddings_table, write_parquet_table

            where = write_parquet_table(embeddings_table(np.arange(n_total), features, result.labels, epoch),
                                        f"{self.embeddings_uri}/epoch_{epoch:04d}.parquet")
            log.info("epoch %d: embeddings and pseudo-labels written to %s", epoch, where)
        return result


@ray.remote(max_restarts=-1, max_task_retries=-1)
class ClusteringActor:
    """Ray wrapper of :class:`ClusteringService`; created threaded so all ranks can wait in it at once."""

    def __init__(self, cluster_cfg: dict[str, Any], embeddings_uri: str | None = None, s3_endpoint: str | None = None):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        quiet_console()
        from ray_reid.storage import use_endpoint

        use_endpoint(s3_endpoint)
        self.service = ClusteringService(cluster_cfg, embeddings_uri=embeddings_uri)
        log.info("ClusteringActor up on node %s, clustering on %s", ray.get_runtime_context().get_node_id()[:8],
                 self.service.device())

    def where(self) -> dict[str, str]:
        return {"node_id": ray.get_runtime_context().get_node_id(), "device": self.service.device()}

    def submit(self, epoch: int, n_total: int, world_size: int, rank: int, indices: np.ndarray,
               refs: list, camids: np.ndarray | None = None) -> PseudoLabels:
        features = ray.get(refs[0])  # a list of refs is not resolved by Ray: fetch (and copy) here
        return self.service.submit(epoch, n_total, world_size, rank, indices, features, camids=camids)


def get_or_create_actor(run_name: str, cluster_cfg: dict[str, Any], placement: ActorPlacement, *, num_workers: int,
                        embeddings_uri: str | None = None, s3_endpoint: str | None = None, name: str | None = None):
    """The run's named actor (the existing one after a driver restart) with ``placement``'s options, pending
    until a node can hold it; ``name`` replaces the run's default name (a Tune trial's actor)."""
    log.info("ClusteringActor placed %s: %s", placement.reason, placement.options)
    handle = ClusteringActor.options(
        name=name or f"{ACTOR_NAME_PREFIX}_{run_name}", get_if_exists=True, max_concurrency=max(4, num_workers + 2),
        lifetime=None, **placement.options,
    ).remote(cluster_cfg, embeddings_uri, s3_endpoint)
    return handle
