"""P×K identity-balanced sampling over pseudo-labels, split across DDP ranks.

Contrastive learning against a cluster memory needs every batch to hold several images of
each identity (K) for several identities (P). Partners of an anchor are drawn preferably
from *other cameras*, so the positives the network pulls together differ by viewpoint and
lighting rather than being near-duplicates from one camera (cluster-contrast's
RandomMultipleGallerySampler idea). Ranks share one seeded identity order per epoch and take
disjoint slices of it, so one global step sees the P identities of the global batch, as in the
4-GPU × (16 ids × 16 instances) setting the published results used.

The global batch is what an elastic run keeps fixed while its world size changes: P identities
are split over however many ranks this (re)start has (:func:`split_identities`), so ranks may
hold one identity more than others when P is not a multiple of the world size, and each rank
weights its loss by its share (:func:`rank_loss_weight`) so the averaged gradient is the
fixed-size batch's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)
_warned: set[tuple[int, int]] = set()


def split_identities(p: int, world_size: int) -> list[int]:
    """Identities per rank of a global batch of ``p``: as equal as possible, the larger shares first.

    ``split_identities(16, 3) == [6, 5, 5]``. Every rank needs at least one identity (a rank with
    an empty batch would have nothing to back-propagate), hence ``p >= world_size``.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if p < world_size:
        raise ValueError(f"a global batch of {p} identities (optim.p) cannot feed {world_size} ranks: each rank needs "
                         f"at least one identity; use optim.p >= {world_size} or fewer workers")
    base, extra = divmod(p, world_size)
    return [base + (1 if rank < extra else 0) for rank in range(world_size)]


def rank_loss_weight(p: int, world_size: int, rank: int) -> float:
    """Factor on rank ``rank``'s mean loss so DDP's gradient average equals the global batch's mean gradient.

    DDP averages gradients over ranks: (1/W) Σ_r ∇L_r, with L_r the mean over rank r's p_r·K images.
    The fixed-size batch's gradient is Σ_r (p_r/P) ∇L_r, so rank r scales its loss by W·p_r/P
    (exactly 1 when P is a multiple of W).
    """
    shares = split_identities(p, world_size)
    return world_size * shares[rank] / p


class PseudoIdentitySampler(torch.utils.data.Sampler[int]):
    """Yields flat dataset indices: ``num_iterations`` batches of P identities × K images.

    ``batch_size`` is this rank's batch (its identities × K); ``global_batch_size`` the whole
    step's (default ``batch_size × world_size``, i.e. equal shares). When it is given, this rank's
    share must be the one :func:`split_identities` assigns it, so the ranks' slices tile the global
    batch without gaps or overlaps.

    Deterministic for ``(seed, epoch, rank)``; ``set_epoch`` changes the draw like
    ``DistributedSampler``. Outliers (label -1) are never sampled. When there are fewer
    identities than the global batch holds, identities are reused (across ranks, and within a
    batch if fewer than a rank's share exist) with a warning, since late-training clusterings
    can be that coarse.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        camids: Sequence[int] | np.ndarray | torch.Tensor,
        *,
        num_instances: int,
        batch_size: int,
        num_iterations: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epoch: int = 0,
        global_batch_size: int | None = None,
    ) -> None:
        labels_arr = _as_int_array(labels, "labels")
        cams_arr = _as_int_array(camids, "camids")
        if labels_arr.shape != cams_arr.shape:
            raise ValueError(f"labels and camids must have the same length, got {len(labels_arr)} and {len(cams_arr)}")
        if num_instances < 1:
            raise ValueError(f"num_instances (K) must be >= 1, got {num_instances}")
        if batch_size < num_instances or batch_size % num_instances:
            raise ValueError(f"batch_size must be a positive multiple of num_instances={num_instances}, got {batch_size}")
        if num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if global_batch_size is None:
            global_batch_size = batch_size * world_size
        if global_batch_size < 1 or global_batch_size % num_instances:
            raise ValueError(f"global_batch_size must be a positive multiple of num_instances={num_instances}, "
                             f"got {global_batch_size}")
        self.shares = split_identities(global_batch_size // num_instances, world_size)
        if self.shares[rank] * num_instances != batch_size:
            raise ValueError(f"rank {rank} of {world_size} holds {self.shares[rank]} of the global batch's "
                             f"{global_batch_size // num_instances} identities, i.e. batch_size "
                             f"{self.shares[rank] * num_instances}, got {batch_size}")
        if labels_arr.size and labels_arr.min() < -1:
            raise ValueError(f"labels must be >= -1 (-1 = outlier), got minimum {labels_arr.min()}")
        self.num_instances = num_instances
        self.batch_size = batch_size
        self.num_identities_per_batch = batch_size // num_instances
        self.global_identities = global_batch_size // num_instances
        self.num_iterations = num_iterations
        self.rank, self.world_size = rank, world_size
        self.seed, self.epoch = seed, epoch

        valid = np.flatnonzero(labels_arr >= 0)
        if valid.size == 0:
            raise ValueError("no sample has a label >= 0: every sample is an outlier, nothing to train on")
        order = valid[np.argsort(labels_arr[valid], kind="stable")]
        self.identities, starts = np.unique(labels_arr[order], return_index=True)
        self._members = np.split(order, starts[1:])
        self._cams = [cams_arr[m] for m in self._members]
        needed = self.global_identities
        if len(self.identities) < needed:
            key = (len(self.identities), needed)
            if key not in _warned:
                _warned.add(key)
                log.warning(
                    "only %d pseudo-identities for %d per global batch (shares %s over %d ranks): identities will "
                    "repeat across ranks%s",
                    len(self.identities), needed, self.shares, world_size,
                    " and within batches" if len(self.identities) < self.num_identities_per_batch else "",
                )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_iterations * self.batch_size

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def indices(self) -> np.ndarray:
        """All of this rank's indices for the epoch, [num_iterations * batch_size]."""
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        groups = self._identity_groups()
        out = np.empty((self.num_iterations, self.num_identities_per_batch, self.num_instances), dtype=np.int64)
        for it in range(self.num_iterations):
            for slot, ident in enumerate(groups[it]):
                out[it, slot] = self._draw_instances(ident, rng)
        return out.reshape(-1)

    def _identity_groups(self) -> np.ndarray:
        """[num_iterations, P] positions into ``self.identities`` for this rank.

        Every rank runs the same shared generator and keeps its own slice, so the slices of
        one iteration are disjoint whenever enough identities exist. Identities are consumed
        from a per-epoch permutation, reshuffled when it cannot fill a whole global batch, so
        all identities get visited before any repeats.
        """
        shared = np.random.default_rng([self.seed, self.epoch, 0])
        p, total, n = self.num_identities_per_batch, self.global_identities, len(self.identities)
        lo = sum(self.shares[: self.rank])
        hi = lo + p
        groups = np.empty((self.num_iterations, p), dtype=np.int64)
        if n >= total:
            perm, pos = shared.permutation(n), 0
            for it in range(self.num_iterations):
                if pos + total > n:
                    perm, pos = shared.permutation(n), 0
                groups[it] = perm[pos + lo: pos + hi]
                pos += total
        else:
            for it in range(self.num_iterations):
                draws = [shared.choice(n, size=share, replace=n < share) for share in self.shares]
                groups[it] = draws[self.rank]
        return groups

    def _draw_instances(self, ident: int, rng: np.random.Generator) -> np.ndarray:
        """Anchor plus K-1 partners, other-camera images first; replacement only if fewer than K."""
        members, cams, k = self._members[ident], self._cams[ident], self.num_instances
        a = int(rng.integers(len(members)))
        rest = np.delete(np.arange(len(members)), a)
        other = rest[cams[rest] != cams[a]]
        same = rest[cams[rest] == cams[a]]
        partners = np.concatenate([rng.permutation(other), rng.permutation(same)])[: k - 1]
        if len(partners) < k - 1:
            pool = other if len(other) else np.arange(len(members))
            partners = np.concatenate([partners, rng.choice(pool, size=k - 1 - len(partners), replace=True)])
        return members[np.concatenate([[a], partners]).astype(np.int64)]


def _as_int_array(values: Sequence[int] | np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D integer sequence, got shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)
