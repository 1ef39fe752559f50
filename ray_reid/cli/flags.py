"""The config flags every command shares: ``--config``, one flag per common key, ``--set``, ``--batch``.

One table maps each flag to its dotted config key, so ``train``, ``purify`` and ``tune`` accept the
same spelling, apply it the same way (flags override the YAML, ``--set`` overrides flags) and refuse
a bad value with the same message, before Ray or any data is touched.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ray_reid import logs
from ray_reid.config import TrainConfig, load_config

#: The embedded default of `python jobs/train.py` (a checkout's jobs/configs/synthetic.yaml).
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "synthetic.yaml"

# flag -> (dotted config key, type, help); every flag is optional and overrides the YAML.
CONFIG_FLAGS: dict[str, tuple[str, type, str]] = {
    "dataset": ("data.dataset", str, "dataset name (market1501, dukemtmc, msmt17, cuhk03, synthetic)"),
    "data-root": ("data.root", str, "dataset folder or s3://bucket/prefix"),
    "height": ("data.height", int, "input height"),
    "width": ("data.width", int, "input width"),
    "on-bad-image": ("data.on_bad_image", str, "raise (default) or skip undecodable images"),
    "loader-workers": ("data.loader_workers", int, "DataLoader processes decoding JPEGs per rank (0 = in the "
                       "training process; ~cpus-per-worker - 1 on a GPU node)"),
    "backbone": ("model.backbone", str, "resnet18/34/50/101"),
    "views": ("model.views", str, "global or global+parts"),
    "pretrained": ("model.pretrained", str, "ImageNet weights: 'imagenet' (torchvision's, via its "
                   "download cache; 'imagenet:IMAGENET1K_V2' for another variant), a local path or s3:// URI"),
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
    "workers": ("run.num_workers", str, "Ray Train workers: N, or MIN-MAX for elastic training on nodes that come "
                "and go (e.g. 2-8; the global batch stays fixed); 0 = in-process, no Ray"),
    "gpus-per-worker": ("run.gpus_per_worker", float, "GPUs per worker"),
    "cpus-per-worker": ("run.cpus_per_worker", float, "CPUs per worker"),
    "storage-path": ("run.storage_path", str, "where runs and checkpoints go (folder or s3://)"),
    "name": ("run.name", str, "run name; rerunning the same name resumes"),
    "seed": ("run.seed", int, "random seed"),
    "eval-every": ("run.eval_every", int, "evaluate every N epochs (and at the end)"),
    "max-failures": ("run.max_failures", int, "worker-group restarts allowed"),
    "teacher": ("run.teacher", str, "finished run or checkpoint (path or s3://) to distil from"),
    "mlflow": ("run.mlflow_uri", str, "also log the run to this MLflow tracking URI (pip install 'ray-reid[mlflow]')"),
    "s3-endpoint": ("run.s3_endpoint", str, "custom S3 endpoint (MinIO, Ceph, ...); credentials from the AWS chain"),
}


def add_config_arguments(parser: argparse.ArgumentParser, *, exclude: Iterable[str] = ()) -> argparse.ArgumentParser:
    """Add ``--config``, the config flags (minus ``exclude``), ``--set``, ``--batch``, ``--amp``, ``--save-embeddings``,
    ``--clusterer-resource``, ``--placement-timeout``, ``-v``."""
    excluded = set(exclude)
    unknown = excluded - set(CONFIG_FLAGS)
    assert not unknown, f"cannot exclude unknown flags {sorted(unknown)}"
    parser.add_argument("--config", type=Path, default=None,
                        help=f"YAML config (default: {DEFAULT_CONFIG.relative_to(DEFAULT_CONFIG.parents[2])})")
    for flag, (key, typ, helptext) in CONFIG_FLAGS.items():
        if flag not in excluded:
            parser.add_argument(f"--{flag}", type=typ, default=None, help=f"{helptext} [{key}]")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any config value, e.g. --set optim.triplet_weight=0.5")
    parser.add_argument("--batch", default=None, metavar="PxK", help="global batch as identities x images, e.g. 16x4")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16/fp16 autocast in training and feature extraction, on GPUs only (a CPU run is "
                             "unchanged) [optim.amp]")
    parser.add_argument("--save-embeddings", action="store_true", default=None,
                        help="write per-epoch embeddings and pseudo-labels as Parquet")
    # --- elastic / storage flags (issue 13) ---
    parser.add_argument("--shared-storage", action="store_true", default=None,
                        help="the local --storage-path is mounted on every node (NFS, EFS): allow it on a "
                             "multi-node cluster [run.shared_storage]")
    # placement on an autoscaling cluster (README "Running on a cluster")
    parser.add_argument("--clusterer-resource", action="store_true", default=None,
                        help="put the ClusteringActor (every trial's, in a sweep) on a node with the 'clusterer' "
                             "resource and wait for one to join, even when no autoscaler config declares it "
                             "[run.clusterer_resource]")
    parser.add_argument("--placement-timeout", type=float, default=None, metavar="SECONDS",
                        help="how long to wait for the clusterer node before failing with what was waited for "
                             "[run.placement_timeout_s, default 1800]")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted overrides the parsed flags ask for; ``--set`` comes last and wins."""
    # -v also lets Ray Train's own INFO lines onto the console
    overrides: dict[str, Any] = {"run.ray_log_level": "INFO"} if getattr(args, "verbose", False) else {}
    for flag, (key, _, _) in CONFIG_FLAGS.items():
        value = getattr(args, flag.replace("-", "_"), None)
        if value is not None:
            overrides[key] = value
    if "run.num_workers" in overrides:
        overrides.update(parse_workers(overrides.pop("run.num_workers")))
    if getattr(args, "shared_storage", None):
        overrides["run.shared_storage"] = True
    if args.batch:
        try:
            p, k = (int(x) for x in args.batch.lower().split("x"))
        except ValueError:
            raise ValueError(f"--batch {args.batch!r}: expected PxK, e.g. 16x4") from None
        overrides["optim.p"], overrides["optim.k"] = p, k
    if args.amp is not None:
        overrides["optim.amp"] = args.amp
    if args.save_embeddings:
        overrides["run.save_embeddings"] = True
    if getattr(args, "clusterer_resource", None):
        overrides["run.clusterer_resource"] = True
    if getattr(args, "placement_timeout", None) is not None:
        overrides["run.placement_timeout_s"] = args.placement_timeout
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        overrides[key.strip()] = value.strip()
    return overrides


def parse_workers(text: str | int) -> dict[str, Any]:
    """``--workers N`` (fixed) or ``--workers MIN-MAX`` (elastic) as config overrides."""
    value = str(text).strip()
    low, sep, high = value.partition("-")
    try:
        if not sep:
            return {"run.num_workers": int(value), "run.min_workers": None}
        lo, hi = int(low), int(high)
    except ValueError:
        raise ValueError(f"--workers {text!r}: expected a count (4) or an elastic range MIN-MAX (2-8)") from None
    if not 1 <= lo <= hi:
        raise ValueError(f"--workers {text!r}: an elastic range needs 1 <= MIN <= MAX")
    return {"run.num_workers": hi, "run.min_workers": lo}


def config_from_args(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> TrainConfig:
    """The validated config the flags describe (``defaults`` sit under them); exits naming the bad key."""
    try:
        overrides = {**(defaults or {}), **config_overrides(args)}
        recipe = getattr(args, "recipe", None)
        if recipe:
            from ray_reid.recipes import load_recipe

            return load_recipe(recipe, overrides)
        return load_config(args.config or DEFAULT_CONFIG, overrides)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None


def command_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of a command that is not a training run (embed, search, evaluate, export): its docstring as
    help, and the two flags every one of them takes, ``--s3-endpoint`` and ``-v``."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--s3-endpoint", default=None, help="custom S3 endpoint (MinIO, Ceph, ...)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def add_rerank_arguments(parser: argparse.ArgumentParser, help_flag: str) -> None:
    """``--rerank`` and its k1 / k2 / lambda, spelt and defaulted alike in ``evaluate`` and ``search``."""
    parser.add_argument("--rerank", action="store_true", help=help_flag)
    parser.add_argument("--rerank-k1", type=int, default=20, help="re-ranking k1 (default 20)")
    parser.add_argument("--rerank-k2", type=int, default=6, help="re-ranking k2 (default 6)")
    parser.add_argument("--rerank-lambda", type=float, default=0.3, help="re-ranking lambda (default 0.3)")


def rerank_from_args(args: argparse.Namespace):
    """The ``RerankConfig`` the re-ranking flags ask for (None without ``--rerank``); exits naming a bad value."""
    if not args.rerank:
        return None
    from ray_reid.eval.rerank import RerankConfig

    try:
        return RerankConfig(k1=args.rerank_k1, k2=args.rerank_k2, lambda_value=args.rerank_lambda)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def setup_logging(verbose: bool = False, command: str = "ray-reid") -> None:
    """Our own lines on the console (libraries' chatter filtered, see ray_reid.logs); the whole log in a file."""
    path = logs.setup_logging(verbose, logs.default_log_file(command))
    logging.getLogger("ray_reid").info("full log: %s", path)
