"""The library face: train, evaluate, purify and sweep, from a notebook or a job, local or S3 alike.

Every command line of ``jobs/`` (and ``ray-reid train|evaluate|purify|tune``) is a thin parser
around one of these functions::

    from ray_reid.config import load_config
    from ray_reid import run

    result = run.train(load_config("jobs/configs/synthetic.yaml", {"optim.epochs": 3}))
    result.summary["mAP"], result.location, result.checkpoint
    run.evaluate(result.location)                       # or "s3://bucket/runs/name"
    run.embed(result.location, "crops/", "index/")      # Ray Data: Parquet shards of embeddings
    run.search("index/", "queries/", "hits/", k=10)     # faiss top-k as CSV/JSON + rank-list PNG

``run.num_workers=0`` trains in this process without Ray; otherwise the run joins the cluster
at ``RAY_ADDRESS`` or starts a private local Ray (``ray_reid.distributed.session.connect``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_reid import locations
from ray_reid.config import TrainConfig, absolute_paths, config_from_dict

log = logging.getLogger(__name__)

PURIFY_COMPARED = ("mAP", "rank1", "rank5", "rank10", "n_clusters", "ari", "nmi", "epochs", "wall_seconds")


@dataclass(frozen=True)
class RunResult:
    """A finished (or resumed and finished) training run."""

    location: str  # the run folder: absolute path or s3:// URI
    summary: dict[str, Any]  # what summary.json holds
    history: list[dict[str, Any]] = field(repr=False)  # one row per epoch, as metrics.csv
    checkpoint: str | None  # the newest complete checkpoint (path or URI)
    config: TrainConfig = field(repr=False)


def _prepared(cfg: TrainConfig) -> TrainConfig:
    """Local paths made absolute (workers run elsewhere) and the S3 endpoint made the process default."""
    cfg = config_from_dict(absolute_paths(cfg.to_dict()))
    if cfg.run.s3_endpoint:
        from ray_reid.storage import use_endpoint

        use_endpoint(cfg.run.s3_endpoint)
    return cfg


def train(cfg: TrainConfig) -> RunResult:
    """Train (or resume: same storage path and name) and write the run folder's summary, table, plot, config."""
    from ray_reid.engine.outputs import write_run_outputs

    start = time.perf_counter()
    cfg = _prepared(cfg)
    location = locations.run_dir(cfg)
    if cfg.run.teacher:
        from ray_reid.engine.teacher import check_teacher

        log.info("distilling from teacher %s", check_teacher(cfg.run.teacher, cfg.model))
    if cfg.run.num_workers == 0:
        from ray_reid.engine.context import LocalContext
        from ray_reid.engine.loop import train_worker

        history = train_worker(cfg, LocalContext(cfg.cluster, location))
    else:
        from ray_reid.distributed.session import connect
        from ray_reid.distributed.trainer import fit

        connect()
        history = fit(cfg).history
    wall = time.perf_counter() - start
    projector = _projector_sample(cfg, location)
    with locations.writable_dir(location) as folder:
        summary = write_run_outputs(folder, history, cfg, wall)
        if projector is not None:
            from ray_reid.engine.tracking import write_projector

            write_projector(folder, *projector, step=int(history[-1]["epoch"]))
    if summary.get("skipped_images"):
        log.warning("%d undecodable images were skipped (data.on_bad_image=skip); see the warnings above",
                    summary["skipped_images"])
    ari = summary["ari"]
    log.info("finished: mAP %.1f%% rank-1 %.1f%% (%d clusters, ARI %s) in %.0fs; results in %s",
             100 * (summary["mAP"] or 0), 100 * (summary["rank1"] or 0), summary["n_clusters"] or 0,
             "n/a" if ari is None else f"{ari:.3f}", summary["wall_seconds"], location)
    return RunResult(location=location, summary=summary, history=history,
                     checkpoint=locations.latest_checkpoint(location), config=cfg)


def _projector_sample(cfg: TrainConfig, location: str):
    """The end-of-training embedding sample for TensorBoard's projector, or None when it cannot be drawn."""
    from ray_reid.engine.tracking import projector_sample

    checkpoint = locations.latest_checkpoint(location)
    if checkpoint is None:
        return None
    try:
        return projector_sample(cfg, locations.local_checkpoint(checkpoint))
    except (OSError, ValueError) as exc:  # the run itself is done: say why the picture is missing, keep going
        log.warning("no TensorBoard projector sample: %s", exc)
        return None


def evaluate(run_or_checkpoint: str | os.PathLike, *, out: str | os.PathLike | None = None,
             dataset: str | None = None, data_root: str | None = None, max_tsne_points: int = 2000,
             s3_endpoint: str | None = None, rerank: Any = None) -> dict[str, Any]:
    """Evaluate a checkpoint (a run folder means its newest complete one), local or on S3.

    ``rerank`` (a :class:`~ray_reid.eval.rerank.RerankConfig`) adds k-reciprocal re-ranked figures.

    Writes metrics.json, rank_list.png and embedding.png into ``out`` (default: ``<checkpoint>/eval``,
    uploaded there when the checkpoint is on S3) and returns the metrics with ``"out"`` added.
    """
    from ray_reid.engine.evaluate import evaluate_checkpoint

    if s3_endpoint:
        from ray_reid.storage import use_endpoint

        use_endpoint(s3_endpoint)
    checkpoint = locations.checkpoint_of(os.fspath(run_or_checkpoint))
    target = locations.absolute(out) if out is not None else locations.join(checkpoint, "eval")
    with locations.writable_dir(target) as folder:
        metrics = evaluate_checkpoint(locations.local_checkpoint(checkpoint), folder, dataset=dataset,
                                      data_root=data_root, max_tsne_points=max_tsne_points, rerank=rerank)
    metrics["checkpoint"] = checkpoint
    log.info("mAP %.1f%% rank-1 %.1f%% rank-5 %.1f%% rank-10 %.1f%% of %s; written to %s", 100 * metrics["mAP"],
             100 * metrics["rank1"], 100 * metrics["rank5"], 100 * metrics["rank10"], checkpoint, target)
    return {**metrics, "out": target}


def embed(run_or_checkpoint: str | os.PathLike, images: str | os.PathLike, out: str | os.PathLike,
          cfg: Any = None, *, s3_endpoint: str | None = None, in_process: bool = False, progress: bool = True):
    """Embed every crop under ``images`` (folder or ``s3://`` prefix) into Parquet shards under ``out``.

    A Ray Data pipeline (:mod:`ray_reid.distributed.embed`) on the cluster at ``RAY_ADDRESS`` or
    a local Ray; ``in_process=True`` runs the same job without Ray. ``cfg`` is an
    :class:`~ray_reid.inference.embedding.EmbedConfig`. Resumable: rerun the same command after an
    interruption and only the missing shards are written. Returns the
    :class:`~ray_reid.inference.embedding.EmbedSummary`.
    """
    from ray_reid.inference.embedding import EmbedConfig

    if s3_endpoint:
        from ray_reid.storage import use_endpoint

        use_endpoint(s3_endpoint)
    cfg = cfg or EmbedConfig()
    images, out = locations.absolute(images), locations.absolute(out)
    if in_process:
        from ray_reid.inference.embedding import embed_in_process

        return embed_in_process(run_or_checkpoint, images, out, cfg, progress=progress)
    from ray_reid.distributed.embed import embed_images

    return embed_images(run_or_checkpoint, images, out, cfg, progress=progress)


def search(index: str | os.PathLike, queries: str | os.PathLike, out: str | os.PathLike, *, k: int = 10,
           skip_same_camera: bool = False, rerank: Any = None, evaluate: bool = False, index_cfg: Any = None,
           model: str | None = None, plot_queries: int = 8, s3_endpoint: str | None = None):
    """Top ``k`` crops of an embedded ``index`` for each crop of ``queries`` (a folder or an embedding folder).

    Writes results.csv, results.json and rank_list.png (plus metrics.json with ``evaluate``)
    into ``out``; see :func:`ray_reid.inference.query.search_images`.
    """
    from ray_reid.inference.query import search_images
    from ray_reid.inference.search import IndexConfig

    if s3_endpoint:
        from ray_reid.storage import use_endpoint

        use_endpoint(s3_endpoint)
    return search_images(locations.absolute(index), locations.absolute(queries), locations.absolute(out), k=k,
                         camera_filter=skip_same_camera, index_cfg=index_cfg or IndexConfig(), evaluate=evaluate,
                         plot_queries=plot_queries, model=model, rerank=rerank)


@dataclass(frozen=True)
class PurifyResult:
    teacher: RunResult
    student: RunResult
    comparison: str  # where the side-by-side JSON went (path or URI)

    def table(self) -> str:
        """Both runs' final figures side by side, as the job prints them."""
        lines = [f"{'':14}{'teacher':>12}{'student':>12}"]
        for key in PURIFY_COMPARED:
            cells = []
            for summary in (self.teacher.summary, self.student.summary):
                value = summary.get(key)
                if value is None:
                    cells.append(f"{'-':>12}")
                elif key in ("mAP", "rank1", "rank5", "rank10"):
                    cells.append(f"{100 * value:11.1f}%")
                elif isinstance(value, float):
                    cells.append(f"{value:12.3f}")
                else:
                    cells.append(f"{value!s:>12}")
            lines.append(f"{key:14}{''.join(cells)}")
        return "\n".join(lines)


def purify(cfg: TrainConfig, *, teacher_epochs: int | None = None, student_epochs: int | None = None,
           student_cfg: TrainConfig | None = None) -> PurifyResult:
    """Learning to Purification: train ``<name>-teacher``, then a fresh ``<name>-student`` distilling from it.

    ``student_cfg`` gives the student its own config (the published recipes differ by stage, e.g.
    in the distillation weight); by default the student uses ``cfg`` as the teacher does.

    Both runs live beside each other under ``run.storage_path`` (local or S3); a finished teacher
    with the same name is reused (resume semantics). The comparison goes to
    ``<storage>/<name>-purify.json``.
    """
    from ray_reid.engine.checkpoint import write_json

    def stage(base_cfg: TrainConfig, name: str, epochs: int | None, teacher: str | None) -> TrainConfig:
        run = dataclasses.replace(base_cfg.run, name=name, teacher=teacher)
        optim = base_cfg.optim if epochs is None else dataclasses.replace(base_cfg.optim, epochs=epochs)
        return dataclasses.replace(base_cfg, run=run, optim=optim)

    base = cfg.run.name
    teacher = train(stage(cfg, f"{base}-teacher", teacher_epochs, None))
    student = train(stage(student_cfg or cfg, f"{base}-student", student_epochs, teacher.location))
    storage = locations.absolute(cfg.run.storage_path)
    with locations.writable_dir(storage) as folder:
        write_json(Path(folder) / f"{base}-purify.json", {"teacher": teacher.summary, "student": student.summary})
    return PurifyResult(teacher=teacher, student=student, comparison=locations.join(storage, f"{base}-purify.json"))


def sweep(base_cfg: TrainConfig, space: dict, sweep_cfg: Any, *, out: str | os.PathLike | None = None,
          callbacks: list | None = None):
    """A Ray Tune sweep over ``space`` (see :mod:`ray_reid.tuning`), each trial a whole training of ``base_cfg``."""
    from ray_reid.distributed.session import connect
    from ray_reid.distributed.tune import run_sweep

    connect()
    return run_sweep(base_cfg, space, sweep_cfg, out_dir=out, callbacks=callbacks)
