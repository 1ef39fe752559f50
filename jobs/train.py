"""Train an unsupervised re-ID model on Ray: `python jobs/train.py [--config FILE] [flags] [--set k=v ...]`.

With no arguments it trains on the embedded synthetic dataset (generated into the cache on first
use) with settings sized for a 2-core machine. With RAY_ADDRESS set (as `ray job submit` does) it
joins that cluster; otherwise it starts a private local Ray.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from ray_reid.config import TrainConfig, absolute_paths, config_from_dict, load_config  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "synthetic.yaml"

# flag -> dotted config key; every flag is optional and overrides the YAML.
FLAGS: dict[str, tuple[str, type, str]] = {
    "dataset": ("data.dataset", str, "dataset name (market1501, dukemtmc, msmt17, cuhk03, synthetic)"),
    "data-root": ("data.root", str, "dataset folder or s3://bucket/prefix"),
    "height": ("data.height", int, "input height"),
    "width": ("data.width", int, "input width"),
    "on-bad-image": ("data.on_bad_image", str, "raise (default) or skip undecodable images"),
    "backbone": ("model.backbone", str, "resnet18/34/50/101"),
    "views": ("model.views", str, "global or global+parts"),
    "pretrained": ("model.pretrained", str, "ImageNet weights: local path or s3:// URI"),
    "clusterer": ("cluster.method", str, "hc_sse or dbscan_jaccard"),
    "lam": ("cluster.lam", float, "SSE regularisation weight lambda"),
    "linkage": ("cluster.linkage", str, "single or average"),
    "regularizer": ("cluster.regularizer", str, "sse, size, delta_sse or none"),
    "merge-percent": ("cluster.merge_percent", float, "HCT merge percent per epoch"),
    "eps": ("cluster.eps", float, "DBSCAN eps on the Jaccard distance"),
    "epochs": ("optim.epochs", int, "epochs"),
    "iters": ("optim.iters", int, "iterations per epoch"),
    "p": ("optim.p", int, "identities per global batch"),
    "k": ("optim.k", int, "images per identity"),
    "lr": ("optim.lr", float, "learning rate"),
    "mu": ("optim.distill_weight", float, "distillation weight mu (with --teacher)"),
    "workers": ("run.num_workers", int, "Ray Train workers (0 = in-process, no Ray)"),
    "gpus-per-worker": ("run.gpus_per_worker", float, "GPUs per worker"),
    "cpus-per-worker": ("run.cpus_per_worker", float, "CPUs per worker"),
    "storage-path": ("run.storage_path", str, "where runs and checkpoints go (folder or s3://)"),
    "name": ("run.name", str, "run name; rerunning the same name resumes"),
    "seed": ("run.seed", int, "random seed"),
    "eval-every": ("run.eval_every", int, "evaluate every N epochs (and at the end)"),
    "max-failures": ("run.max_failures", int, "worker-group restarts allowed"),
    "teacher": ("run.teacher", str, "finished run's checkpoint (path or s3://) to distil from"),
    "s3-endpoint": ("run.s3_endpoint", str, "custom S3 endpoint (MinIO, Ceph, ...); credentials from the AWS chain"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None,
                        help=f"YAML config (default: {DEFAULT_CONFIG.relative_to(DEFAULT_CONFIG.parents[2])})")
    for flag, (key, typ, helptext) in FLAGS.items():
        parser.add_argument(f"--{flag}", type=typ, default=None, help=f"{helptext} [{key}]")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any config value, e.g. --set optim.triplet_weight=0.5")
    parser.add_argument("--batch", default=None, metavar="PxK", help="global batch as identities x images, e.g. 16x4")
    parser.add_argument("--save-embeddings", action="store_true", default=None,
                        help="write per-epoch embeddings and pseudo-labels as Parquet")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for flag, (key, _, _) in FLAGS.items():
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            overrides[key] = value
    if args.batch:
        try:
            p, k = (int(x) for x in args.batch.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--batch {args.batch!r}: expected PxK, e.g. 16x4") from None
        overrides["optim.p"], overrides["optim.k"] = p, k
    if args.save_embeddings:
        overrides["run.save_embeddings"] = True
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected SECTION.KEY=VALUE")
        overrides[key.strip()] = value.strip()
    return overrides


def parse_config(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config or DEFAULT_CONFIG, overrides_from_args(args))
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    return cfg, args


def run_training(cfg: TrainConfig) -> dict[str, Any]:
    """Train (in-process when run.num_workers == 0, else on Ray) and write the run folder."""
    from ray_reid.engine.outputs import write_run_outputs

    log = logging.getLogger("train")
    start = time.perf_counter()
    cfg = config_from_dict(absolute_paths(cfg.to_dict()))  # workers run in other working directories
    if cfg.run.s3_endpoint:
        from ray_reid.storage import use_endpoint

        use_endpoint(cfg.run.s3_endpoint)
    if cfg.run.teacher:
        from ray_reid.engine.loop import model_config
        from ray_reid.engine.teacher import check_teacher

        log.info("distilling from teacher %s", check_teacher(cfg.run.teacher, model_config(cfg)))
    if cfg.run.num_workers == 0:
        from ray_reid.engine.context import LocalContext
        from ray_reid.engine.loop import train_worker

        if "://" in cfg.run.storage_path:
            raise ValueError(f"run.num_workers=0 trains in-process and needs a local run.storage_path, "
                             f"got {cfg.run.storage_path!r}")
        run_dir = Path(cfg.run.storage_path).expanduser().resolve() / cfg.run.name
        history = train_worker(cfg, LocalContext(cfg.cluster, run_dir))
        run_path = str(run_dir)
    else:
        from ray_reid.distributed.session import connect
        from ray_reid.distributed.trainer import fit

        connect()
        outcome = fit(cfg)
        history, run_path = outcome.history, outcome.run_path
    wall = time.perf_counter() - start
    if run_path.startswith("s3://"):
        import tempfile

        from ray_reid.storage import upload_dir

        with tempfile.TemporaryDirectory(prefix="ray_reid_outputs_") as staging:
            summary = write_run_outputs(staging, history, cfg, wall)
            upload_dir(staging, run_path + "/")
    else:
        summary = write_run_outputs(run_path, history, cfg, wall)
    if summary.get("skipped_images"):
        log.warning("%d undecodable images were skipped (data.on_bad_image=skip); see the warnings above",
                    summary["skipped_images"])
    log.info("finished: mAP %.1f%% rank-1 %.1f%% (%d clusters, ARI %s) in %.0fs; results in %s",
             100 * (summary["mAP"] or 0), 100 * (summary["rank1"] or 0), summary["n_clusters"] or 0,
             summary["ari"], summary["wall_seconds"], run_path)
    return summary


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_config(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_training(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
