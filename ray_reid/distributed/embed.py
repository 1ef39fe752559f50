"""Embed a folder or S3 prefix of crops with a trained model: a streaming Ray Data pipeline.

``read_binary_files`` → decode + resize (CPU tasks) → the model in an actor pool (one actor
per GPU, or per CPU slot) → the driver, which cuts the stream into the shards of a fixed
:class:`~ray_reid.inference.shards.ShardPlan` and writes each one whole as soon as its last
row arrives. Ray Data streams with bounded blocks in flight and the driver holds at most the
shards that are still open, so memory does not grow with the number of images. A rerun reads
the manifest, skips every complete shard and embeds only the images of the missing ones.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import ray

from ray_reid.data.image_folder import BadImageError
from ray_reid.inference.images import decode_crop, list_images
from ray_reid.inference.model import Embedder, InferenceSpec, load_trained
from ray_reid.inference.shards import (
    MANIFEST,
    SUMMARY,
    EmbeddingFolder,
    ShardPlan,
    check_manifest,
    manifest_for,
    shard_name,
    shard_table,
)
from ray_reid.storage.s3 import is_s3_uri, pyarrow_filesystem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedConfig:
    """How to run the pipeline; none of it changes the embeddings (the shard size names the files)."""

    shard_size: int = 1024
    batch_size: int = 64
    actors: int | None = None  # None: one per GPU in the cluster, else one per CPU slot but one (for decoding)
    cpus_per_actor: float = 1.0
    strict: bool = False
    amp: bool | None = None  # None: on for GPUs

    def __post_init__(self) -> None:
        for name in ("shard_size", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EmbedConfig.{name} must be an integer >= 1, got {value!r}")
        if self.actors is not None and (isinstance(self.actors, bool) or not isinstance(self.actors, int)
                                        or self.actors < 1):
            raise ValueError(f"EmbedConfig.actors must be None or an integer >= 1, got {self.actors!r}")
        if not self.cpus_per_actor > 0:
            raise ValueError(f"EmbedConfig.cpus_per_actor must be > 0, got {self.cpus_per_actor!r}")


@dataclass(frozen=True)
class EmbedSummary:
    out: str
    num_images: int
    num_shards: int
    shards_written: int
    shards_skipped: int
    embedded: int
    bad: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "num_images": self.num_images, "num_shards": self.num_shards,
                "shards_written": self.shards_written, "shards_skipped": self.shards_skipped,
                "embedded_this_run": self.embedded, "undecodable": len(self.bad), "bad_images": self.bad,
                "seconds": round(self.seconds, 3), "images_per_s": round(self.images_per_s, 2)}


def _decode_batch(batch: dict[str, np.ndarray], height: int, width: int) -> dict[str, np.ndarray]:
    """Ray Data task: bytes → uint8 crops; an undecodable file keeps its row, with the reason and black pixels."""
    n = len(batch["path"])
    pixels = np.zeros((n, height, width, 3), np.uint8)
    errors = np.empty(n, dtype=object)
    for i, data in enumerate(batch["bytes"]):
        crop, errors[i] = decode_crop(data, height, width)
        if crop is not None:
            pixels[i] = crop
    return {"path": batch["path"], "pixels": pixels, "error": errors}


class _EmbedActor:
    """One model per actor, built once; Ray Data feeds it batches of crops."""

    def __init__(self, weights_ref: list, spec: dict[str, Any], amp: bool | None, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.embedder = Embedder(ray.get(weights_ref[0]), InferenceSpec.from_dict(spec), amp=amp)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {"path": batch["path"], "error": batch["error"]}
        out.update(self.embedder(batch["pixels"]))
        return out


def default_actors(cpus_per_actor: float) -> tuple[int, float]:
    """``(actors, GPUs per actor)``: one per GPU when the cluster has any, else the CPU slots minus one."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return gpus, 1.0
    return max(1, int((resources.get("CPU", 1) - 1) // cpus_per_actor)), 0.0


class _ShardWriter:
    """Collects rows as they stream in and writes each shard whole once its last image has arrived."""

    def __init__(self, plan: ShardPlan, folder: EmbeddingFolder, strict: bool,
                 on_shard: Callable[[int], None] | None) -> None:
        self.plan, self.folder, self.strict, self.on_shard = plan, folder, strict, on_shard
        self.open: dict[int, dict[str, Any]] = {}
        self.written = 0
        self.bad: list[dict[str, str]] = []

    def add(self, index: int, path: str, error: str, features: dict[str, np.ndarray]) -> None:
        if error and self.strict:
            raise BadImageError(f"cannot decode image {path}: {error} (without --strict it would be skipped "
                                f"and listed)")
        shard = self.plan.shard_of(index)
        state = self.open.setdefault(shard, {"rows": [], "bad": [], "seen": 0})
        state["seen"] += 1
        if error:
            state["bad"].append({"path": path, "error": error})
        else:
            state["rows"].append((index, features))
        start, stop = self.plan.bounds(shard)
        if state["seen"] == stop - start:
            self._write(shard, self.open.pop(shard))

    def _write(self, shard: int, state: dict[str, Any]) -> None:
        rows = sorted(state["rows"], key=lambda r: r[0])
        paths = [self.plan.paths[i] for i, _ in rows]
        views = list(rows[0][1]) if rows else []
        features = {v: np.stack([f[v] for _, f in rows]) for v in views}
        bad = sorted(state["bad"], key=lambda b: b["path"])
        if not rows:
            log.warning("shard %s: none of its %d images could be decoded", shard_name(shard), len(bad))
        self.folder.write_table(shard_name(shard), shard_table(paths, features, bad, shard))
        self.written += 1
        self.bad += bad
        if self.on_shard is not None:
            self.on_shard(shard)


def embed_images(run_or_checkpoint: str | os.PathLike, images: str | os.PathLike, out: str | os.PathLike,
                 cfg: EmbedConfig = EmbedConfig(), *, endpoint_url: str | None = None, progress: bool = True,
                 on_shard: Callable[[int], None] | None = None) -> EmbedSummary:
    """Embed every crop under ``images`` into Parquet shards under ``out`` (local folders or ``s3://``).

    Resumable: complete shards already in ``out`` are kept and their images not read again.
    Undecodable files are counted, listed in each shard's metadata and in ``_summary.json``,
    and logged; with ``cfg.strict`` the first one stops the job with a ``BadImageError``
    naming it (shards written before stay). ``on_shard(i)`` is called after shard ``i`` is
    written (progress hooks, fault tests).
    """
    from ray_reid.distributed.session import connect

    started = time.perf_counter()
    weights, spec = load_trained(run_or_checkpoint)
    paths = list_images(images, endpoint_url=endpoint_url)
    plan = ShardPlan(tuple(paths), cfg.shard_size)
    folder = EmbeddingFolder(out, endpoint_url=endpoint_url)
    manifest = manifest_for(plan, spec, os.fspath(images))
    if folder.exists(MANIFEST):
        check_manifest(folder.read_json(MANIFEST), manifest, folder.location)
    else:
        folder.write_json(MANIFEST, manifest)
    todo, skipped, old_bad = [], 0, []
    present = set(folder.names())
    for shard in range(plan.num_shards):
        start, stop = plan.bounds(shard)
        rows = folder.shard_rows(shard_name(shard)) if shard_name(shard) in present else None
        if rows is not None and sum(rows) == stop - start:
            skipped += 1
        else:
            todo.append(shard)
    log.info("embedding %d crops from %s into %s: %d shards of %d, %d already complete", len(paths), images,
             folder.location, plan.num_shards, plan.shard_size, skipped)
    writer = _ShardWriter(plan, folder, cfg.strict, on_shard)
    pending = [i for shard in todo for i in range(*plan.bounds(shard))]
    if pending:
        connect()
        _run_pipeline(plan, pending, spec, weights, writer, cfg, images, endpoint_url, progress)
    if skipped:
        from ray_reid.inference.shards import read_bad_images

        old_bad = read_bad_images(folder, [s for s in range(plan.num_shards) if s not in set(todo)])
    seconds = time.perf_counter() - started
    summary = EmbedSummary(out=folder.location, num_images=len(paths), num_shards=plan.num_shards,
                           shards_written=writer.written, shards_skipped=skipped, embedded=len(pending),
                           bad=sorted(old_bad + writer.bad, key=lambda b: b["path"]), seconds=seconds)
    folder.write_json(SUMMARY, summary.to_dict())
    if summary.bad:
        shown = ", ".join(b["path"] for b in summary.bad[:3])
        log.warning("%d of %d files could not be decoded and were left out (%s%s); all listed in %s",
                    len(summary.bad), len(paths), shown, ", ..." if len(summary.bad) > 3 else "", folder.uri(SUMMARY))
    log.info("embedded %d crops in %.1f s (%.1f images/s): %d shards written, %d kept from before -> %s",
             summary.embedded, seconds, summary.images_per_s, summary.shards_written, skipped, folder.location)
    return summary


def _run_pipeline(plan: ShardPlan, pending: list[int], spec: InferenceSpec, weights: dict, writer: _ShardWriter,
                  cfg: EmbedConfig, images: str | os.PathLike, endpoint_url: str | None, progress: bool) -> None:
    from tqdm.auto import tqdm

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # shards then complete one after another: few open at once
    ctx.enable_progress_bars = False  # ours below counts images and shards; Ray's adds one bar per stage
    source = os.fspath(images)
    filesystem = pyarrow_filesystem(source, endpoint_url)[0] if is_s3_uri(source) else None
    read_paths = [plan.paths[i][len("s3://"):] if filesystem is not None else plan.paths[i] for i in pending]
    index_of = {p: i for p, i in zip(read_paths, pending)}
    actors, gpus = (cfg.actors, 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0) if cfg.actors \
        else default_actors(cfg.cpus_per_actor)
    log.info("pipeline: decode on CPU tasks, %d model actor(s) on %s, batches of %d", actors,
             "GPU" if gpus else f"{cfg.cpus_per_actor:g} CPU each", cfg.batch_size)
    ds = ray.data.read_binary_files(read_paths, include_paths=True, filesystem=filesystem,
                                    override_num_blocks=max(1, math.ceil(len(read_paths) / cfg.batch_size / 4)))
    ds = ds.map_batches(_decode_batch, fn_kwargs={"height": spec.height, "width": spec.width},
                        batch_size=cfg.batch_size, batch_format="numpy")
    ds = ds.map_batches(_EmbedActor, batch_size=cfg.batch_size, batch_format="numpy", concurrency=actors,
                        num_gpus=gpus, num_cpus=cfg.cpus_per_actor,
                        fn_constructor_kwargs={"weights_ref": [ray.put(weights)], "spec": spec.to_dict(),
                                               "amp": cfg.amp, "threads": int(max(1, cfg.cpus_per_actor))})
    bar = tqdm(total=len(pending), unit="img", desc="embed", disable=not progress, mininterval=2.0)
    views = list(spec.views)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for row, path in enumerate(batch["path"]):
                index = index_of[str(path)]
                writer.add(index, plan.paths[index], str(batch["error"][row] or ""),
                           {v: batch[v][row] for v in views})
            bar.update(len(batch["path"]))
            bar.set_postfix(shards=writer.written, bad=len(writer.bad), refresh=False)
    finally:
        bar.close()
    if writer.open:
        raise RuntimeError(f"the pipeline ended with {len(writer.open)} shard(s) incomplete "
                           f"({[shard_name(s) for s in sorted(writer.open)][:3]}): Ray Data dropped rows")
