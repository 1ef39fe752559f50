"""Embedding a folder of crops into resumable Parquet shards, whatever runs the model. No Ray here.

A job is prepared (:func:`prepare`: listing, shard plan, manifest checked or written, complete
shards found), then fed rows in any order by whatever runs the model — the Ray Data pipeline
of :mod:`ray_reid.distributed.embed` on a cluster, or :func:`embed_in_process` for a notebook
or a test — through a :class:`ShardWriter`, which writes each shard whole as soon as its last
image has arrived, and finished (:func:`finish`: ``_summary.json``, the story in the log).
The writer holds only the shards still open, so memory does not grow with the number of images.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ray_reid.data.image_folder import BadImageError
from ray_reid.inference.images import decode_crop, list_images, read_bytes
from ray_reid.inference.model import Embedder, InferenceSpec, load_trained
from ray_reid.inference.shards import (
    MANIFEST,
    SUMMARY,
    EmbeddingFolder,
    ShardPlan,
    check_manifest,
    manifest_for,
    read_bad_images,
    shard_name,
    shard_table,
)
from ray_reid.validation import check_count

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedConfig:
    """How to run an embedding job; only ``shard_size`` shapes the output (it names the files)."""

    shard_size: int = 1024
    batch_size: int = 64
    actors: int | None = None  #: model actors; None: one per GPU, else one per CPU slot but one (for decoding)
    cpus_per_actor: float = 1.0
    strict: bool = False  #: the first undecodable file stops the job (else it is counted, listed and skipped)
    amp: bool | None = None  #: autocast on GPU; None: on where there is a GPU

    def __post_init__(self) -> None:
        for name in ("shard_size", "batch_size"):
            check_count(f"EmbedConfig.{name}", getattr(self, name))
        check_count("EmbedConfig.actors", self.actors, optional=True)
        if isinstance(self.cpus_per_actor, bool) or not isinstance(self.cpus_per_actor, (int, float)) \
                or not self.cpus_per_actor > 0:
            raise ValueError(f"EmbedConfig.cpus_per_actor must be a number > 0, got {self.cpus_per_actor!r}")


@dataclass(frozen=True)
class EmbedSummary:
    """What a run of ``embed`` did; ``_summary.json`` holds :meth:`to_dict`."""

    out: str
    num_images: int
    num_shards: int
    shards_written: int
    shards_skipped: int
    embedded: int  #: images read and embedded by this run (those of the shards it wrote)
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


@dataclass
class EmbedJob:
    """A prepared job: the model, the plan, the output folder and which shards are still to write."""

    weights: dict
    spec: InferenceSpec
    plan: ShardPlan
    folder: EmbeddingFolder
    todo: list[int]
    skipped: int
    source: str
    endpoint_url: str | None
    started: float

    @property
    def pending(self) -> list[int]:
        """Indices (into ``plan.paths``) of the images of the shards still to write, in order."""
        return [i for shard in self.todo for i in range(*self.plan.bounds(shard))]


def prepare(run_or_checkpoint: str | os.PathLike, images: str | os.PathLike, out: str | os.PathLike,
            cfg: EmbedConfig = EmbedConfig(), *, endpoint_url: str | None = None) -> EmbedJob:
    """Load the model, list the crops, check or write the manifest and find the complete shards.

    Everything a bad argument can break (no checkpoint, no images, an ``out`` holding another
    model's or another listing's shards) fails here, before any pipeline starts.
    """
    started = time.perf_counter()
    weights, spec = load_trained(run_or_checkpoint)
    source = os.fspath(images)
    paths = list_images(source, endpoint_url=endpoint_url)
    plan = ShardPlan(tuple(paths), cfg.shard_size)
    folder = EmbeddingFolder(out, endpoint_url=endpoint_url)
    manifest = manifest_for(plan, spec, source)
    if folder.exists(MANIFEST):
        check_manifest(folder.read_json(MANIFEST), manifest, folder.location)
    else:
        folder.write_json(MANIFEST, manifest)
    present = set(folder.names())
    todo, skipped = [], 0
    for shard in range(plan.num_shards):
        start, stop = plan.bounds(shard)
        rows = folder.shard_rows(shard_name(shard)) if shard_name(shard) in present else None
        if rows is not None and sum(rows) == stop - start:
            skipped += 1
        else:
            todo.append(shard)
    log.info("embedding %d crops from %s into %s: %d shards of %d, %d already complete", len(paths), source,
             folder.location, plan.num_shards, plan.shard_size, skipped)
    return EmbedJob(weights, spec, plan, folder, todo, skipped, source, endpoint_url, started)


class ShardWriter:
    """Collects rows as they stream in (any order) and writes each shard whole once its last image arrived.

    ``on_shard(i)`` is called after shard ``i`` is written (progress hooks; fault tests stop a
    job there).
    """

    def __init__(self, job: EmbedJob, strict: bool = False, on_shard: Callable[[int], None] | None = None) -> None:
        self.plan, self.folder, self.strict, self.on_shard = job.plan, job.folder, strict, on_shard
        self.open: dict[int, dict[str, Any]] = {}
        self.written = 0
        self.rows = 0
        self.bad: list[dict[str, str]] = []

    def add(self, index: int, error: str, features: dict[str, np.ndarray]) -> None:
        """Image ``index`` of the plan: its embeddings by view, or ``error`` (non-empty) when it did not decode."""
        path = self.plan.paths[index]
        if error and self.strict:
            raise BadImageError(f"cannot decode image {path}: {error} (without --strict it would be skipped "
                                f"and listed)")
        shard = self.plan.shard_of(index)
        state = self.open.setdefault(shard, {"rows": [], "bad": [], "seen": 0})
        state["seen"] += 1
        self.rows += 1
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

    def check_done(self) -> None:
        if self.open:
            names = [shard_name(s) for s in sorted(self.open)]
            raise RuntimeError(f"the pipeline ended with {len(self.open)} shard(s) incomplete ({names[:3]}): "
                               "rows were lost on the way; rerun to write them")


def finish(job: EmbedJob, writer: ShardWriter) -> EmbedSummary:
    """Write ``_summary.json`` (totals, every undecodable file of the whole folder) and tell the story."""
    writer.check_done()
    done_before = sorted(set(range(job.plan.num_shards)) - set(job.todo))
    old_bad = read_bad_images(job.folder, done_before) if done_before else []
    seconds = time.perf_counter() - job.started
    summary = EmbedSummary(out=job.folder.location, num_images=len(job.plan.paths), num_shards=job.plan.num_shards,
                           shards_written=writer.written, shards_skipped=job.skipped, embedded=len(job.pending),
                           bad=sorted(old_bad + writer.bad, key=lambda b: b["path"]), seconds=seconds)
    job.folder.write_json(SUMMARY, summary.to_dict())
    if summary.bad:
        shown = ", ".join(b["path"] for b in summary.bad[:3])
        log.warning("%d of %d files could not be decoded and were left out (%s%s); all listed in %s",
                    len(summary.bad), summary.num_images, shown, ", ..." if len(summary.bad) > 3 else "",
                    job.folder.uri(SUMMARY))
    log.info("embedded %d crops in %.1f s (%.1f images/s): %d shards written, %d kept from before -> %s",
             summary.embedded, seconds, summary.images_per_s, summary.shards_written, job.skipped,
             job.folder.location)
    return summary


def decode_batch(batch: dict[str, np.ndarray], height: int, width: int) -> dict[str, np.ndarray]:
    """``{"bytes": [...]}`` → ``{"pixels": uint8 [B, H, W, 3], "error": [...]}``, other columns kept.

    An undecodable file keeps its row (black pixels, the reason in ``error``) so the writer
    can count and list it; the model's output for it is dropped.
    """
    n = len(batch["bytes"])
    pixels = np.zeros((n, height, width, 3), np.uint8)
    errors = np.empty(n, dtype=object)
    for i, data in enumerate(batch["bytes"]):
        crop, errors[i] = decode_crop(bytes(data), height, width)
        if crop is not None:
            pixels[i] = crop
    out = {k: v for k, v in batch.items() if k != "bytes"}
    out.update(pixels=pixels, error=errors)
    return out


def add_batch(writer: ShardWriter, indices: Iterable[int], errors: Iterable[Any],
              features: dict[str, np.ndarray]) -> int:
    """Hand one embedded batch to the writer row by row; returns the number of rows."""
    n = 0
    for row, (index, error) in enumerate(zip(indices, errors)):
        writer.add(int(index), str(error or ""), {v: f[row] for v, f in features.items()})
        n += 1
    return n


def _local_batches(job: EmbedJob, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches cut from each shard's start, so a shard's batches (and so its bits) do not depend on what ran before."""
    chunks = [list(range(s, min(s + batch_size, stop))) for shard in job.todo
              for start, stop in [job.plan.bounds(shard)] for s in range(start, stop, batch_size)]
    for chunk in chunks:
        data = [read_bytes(job.plan.paths[i], endpoint_url=job.endpoint_url) for i in chunk]
        yield decode_batch({"index": np.asarray(chunk), "bytes": data}, job.spec.height, job.spec.width)


def embed_in_process(run_or_checkpoint: str | os.PathLike, images: str | os.PathLike, out: str | os.PathLike,
                     cfg: EmbedConfig = EmbedConfig(), *, endpoint_url: str | None = None, progress: bool = True,
                     on_shard: Callable[[int], None] | None = None, device: str | None = None) -> EmbedSummary:
    """The same job as the Ray Data pipeline, in this process: same shards, same resume, same bad-file list.

    For a few thousand crops, a notebook without a cluster, and as the reference the
    pipeline is tested against.
    """
    from tqdm.auto import tqdm

    job = prepare(run_or_checkpoint, images, out, cfg, endpoint_url=endpoint_url)
    writer = ShardWriter(job, cfg.strict, on_shard)
    if job.todo:
        embedder = Embedder(job.weights, job.spec, device=device, amp=cfg.amp)
        with tqdm(total=len(job.pending), unit="img", desc="embed", disable=not progress, mininterval=2.0) as bar:
            for batch in _local_batches(job, cfg.batch_size):
                features = embedder(batch["pixels"])
                bar.update(add_batch(writer, batch["index"], batch["error"], features))
                bar.set_postfix(shards=writer.written, bad=len(writer.bad), refresh=False)
    return finish(job, writer)
