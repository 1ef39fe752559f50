"""Embed a folder or S3 prefix of crops with a trained model: a streaming Ray Data pipeline.

``read_binary_files`` → decode + resize to the model's input (CPU) → the model in an actor
pool (``map_batches`` with an :class:`~ray.data.ActorPoolStrategy`: one actor per GPU, AMP
there, or one per CPU slot) → the driver, whose :class:`~ray_reid.inference.embedding.ShardWriter`
writes each shard of the fixed plan whole as soon as its last row arrives. Ray Data streams
with a bounded number of blocks in flight and the driver holds only the shards still open, so
memory does not grow with the number of images. Preparation, resume and the summary are the
Ray-free :mod:`ray_reid.inference.embedding`; only the batch source lives here.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import ray

from ray_reid.inference.embedding import (
    EmbedConfig,
    EmbedJob,
    EmbedSummary,
    ShardWriter,
    add_batch,
    decode_batch,
    finish,
    prepare,
)
from ray_reid.inference.model import Embedder, InferenceSpec
from ray_reid.storage.s3 import is_s3_uri, pyarrow_filesystem

log = logging.getLogger(__name__)


class _EmbedActor:
    """One model per actor, built once; Ray Data feeds it batches of decoded crops."""

    def __init__(self, weights: dict, spec: dict[str, Any], amp: bool | None, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.embedder = Embedder(weights, InferenceSpec.from_dict(spec), amp=amp)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {"path": batch["path"], "error": batch["error"]}
        out.update(self.embedder(batch["pixels"]))
        return out


def actor_layout(cfg: EmbedConfig) -> tuple[int, float]:
    """``(actors, GPUs per actor)``: one per GPU when the cluster has any, else the CPU slots but one."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if cfg.actors:
        return cfg.actors, 1.0 if gpus else 0.0
    if gpus:
        return gpus, 1.0
    return max(1, int((resources.get("CPU", 1) - 1) // cfg.cpus_per_actor)), 0.0


def _read_key(path: str) -> str:
    """A path as ``read_binary_files`` reports it back (S3 paths come without the scheme)."""
    return path[len("s3://"):] if is_s3_uri(path) else os.path.abspath(path)


def embed_images(run_or_checkpoint: str | os.PathLike, images: str | os.PathLike, out: str | os.PathLike,
                 cfg: EmbedConfig = EmbedConfig(), *, endpoint_url: str | None = None, progress: bool = True,
                 on_shard: Callable[[int], None] | None = None) -> EmbedSummary:
    """Embed every crop under ``images`` into Parquet shards under ``out`` (local folders or ``s3://``).

    Resumable: complete shards already in ``out`` are kept and their images not read again.
    Undecodable files are counted, listed in their shard's metadata and in ``_summary.json``,
    and logged; with ``cfg.strict`` the first one stops the job with a ``BadImageError``
    naming it (shards written before stay). Joins ``RAY_ADDRESS`` or starts a local Ray.
    """
    from ray_reid.distributed.session import connect

    job = prepare(run_or_checkpoint, images, out, cfg, endpoint_url=endpoint_url)
    writer = ShardWriter(job, cfg.strict, on_shard)
    if job.todo:
        connect()
        _run_pipeline(job, writer, cfg, progress)
    return finish(job, writer)


def _run_pipeline(job: EmbedJob, writer: ShardWriter, cfg: EmbedConfig, progress: bool) -> None:
    from tqdm.auto import tqdm

    pending = job.pending
    filesystem = pyarrow_filesystem(job.source, job.endpoint_url)[0] if is_s3_uri(job.source) else None
    read_paths = [_read_key(job.plan.paths[i]) for i in pending]
    index_of = dict(zip(read_paths, pending))
    actors, gpus = actor_layout(cfg)
    log.info("pipeline: read + decode on CPU, %d model actor(s) on %s, batches of %d", actors,
             "1 GPU each" if gpus else f"{cfg.cpus_per_actor:g} CPU each", cfg.batch_size)
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    # In order, shards complete one after another: the writer holds one or two open at a time.
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # ours counts images and shards; Ray's adds a bar per stage
    try:
        ds = ray.data.read_binary_files(read_paths, include_paths=True, filesystem=filesystem,
                                        override_num_blocks=max(1, math.ceil(len(read_paths) / (4 * cfg.batch_size))))
        ds = ds.map_batches(decode_batch, fn_kwargs={"height": job.spec.height, "width": job.spec.width},
                            batch_size=cfg.batch_size, batch_format="numpy")
        ds = ds.map_batches(_EmbedActor, batch_size=cfg.batch_size, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus,
                            num_cpus=cfg.cpus_per_actor,
                            fn_constructor_kwargs={"weights": job.weights, "spec": job.spec.to_dict(),
                                                   "amp": cfg.amp, "threads": int(max(1, cfg.cpus_per_actor))})
        views = list(job.spec.views)
        with tqdm(total=len(pending), unit="img", desc="embed", disable=not progress, mininterval=2.0) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                try:
                    indices = [index_of[str(p)] for p in batch["path"]]
                except KeyError as exc:
                    raise RuntimeError(f"Ray Data returned a path that was not asked for: {exc}") from None
                bar.update(add_batch(writer, indices, batch["error"], {v: batch[v] for v in views}))
                bar.set_postfix(shards=writer.written, bad=len(writer.bad), refresh=False)
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
