"""The ImageNet stand-in: a backbone pretrained with identity labels on a *source* synthetic domain.

Every published unsupervised re-ID number starts from ImageNet weights, where clustering has
useful features from epoch 0; none of the methods was made for random init. No download
reaches these machines, so the proxy pretrains ResNet-18 with the true identities of a source
domain whose identities, cameras and generator settings differ from the target's (disjoint
people, 8 harsher cameras instead of 6), through the same loop as everything else
(:mod:`ray_reid.engine.supervised`), and writes the trunk as a torchvision ``state_dict``
that ``--pretrained`` loads like ImageNet weights.

    python benchmarks/pretrain_proxy.py [--out ~/.cache/ray_reid/proxy/resnet18_source.pth] [--eval-every N]

The source's query/gallery is evaluated once, after the last epoch (``--eval-every N`` asks for every
N-th epoch too; evaluation does not touch the weights). The pass over all source training images at the
start of every epoch is not evaluation: it is how each epoch's cluster memory starts (the centroids of
the model's own features under the true ids, as cluster-contrast re-initialises its memory every epoch),
so it is part of the training and skipping it would train other weights.

The datasets are generated into ``~/.cache/ray_reid/proxy/`` on first use (the domains are
defined in :data:`DOMAINS`); the script prints the source run's figures and the weights' path.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ray_reid.config import config_from_dict  # noqa: E402
from ray_reid.data.resolve import cache_dir  # noqa: E402
from ray_reid.data.synthetic import SyntheticConfig, generate_dataset  # noqa: E402

log = logging.getLogger("pretrain_proxy")

#: The three domains of the proxy. Source: pretraining only. val: where choices (λ, schedule)
#: are tuned. target: where results are reported, never tuned on. Disjoint identities (other
#: seeds), and the source has more, harsher cameras than the two targets.
DOMAINS: dict[str, SyntheticConfig] = {
    "source": SyntheticConfig(ids=500, cams=8, seed=1001, camera_strength=1.4, near_duplicate_fraction=0.15),
    "val": SyntheticConfig(ids=200, cams=6, seed=3003),
    "target": SyntheticConfig(ids=200, cams=6, seed=2002),
}


def proxy_root() -> Path:
    return cache_dir() / "proxy"


def ensure_domain(name: str) -> Path:
    """Folder of domain ``name``, generated on first use (the generator writes atomically)."""
    if name not in DOMAINS:
        raise ValueError(f"unknown proxy domain {name!r}; valid: {sorted(DOMAINS)}")
    root = proxy_root() / name
    if not (root / "summary.json").is_file():
        log.info("generating proxy domain %r into %s", name, root)
        generate_dataset(root, DOMAINS[name], overwrite=True, progress=False)
    return root


def pretrain_config(*, epochs: int, iters: int, seed: int, storage: Path, name: str,
                    eval_every: int | None = None) -> dict:
    return {
        "data": {"dataset": "synthetic", "root": str(ensure_domain("source")), "height": 64, "width": 32, "pad": 4,
                 "color_jitter": 0.4, "grayscale_p": 0.1, "blur_p": 0.3},
        "model": {"backbone": "resnet18", "views": "global"},
        "optim": {"epochs": epochs, "iters": iters, "p": 16, "k": 4, "lr": 3.5e-4, "step_size": max(1, epochs * 2 // 3)},
        "run": {"name": name, "storage_path": str(storage), "num_workers": 0, "seed": seed,
                "eval_every": eval_every or epochs},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="weights file (default: <cache>/proxy/resnet18_source.pth)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storage", type=Path, default=Path("runs/proxy"))
    ap.add_argument("--eval-every", type=int, default=None, metavar="N",
                    help="also evaluate on the source's query/gallery every N epochs (default: only after the last)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ray_reid.engine.supervised import export_backbone, train_supervised

    out = args.out or proxy_root() / "resnet18_source.pth"
    name = f"pretrain-source-s{args.seed}"
    cfg = config_from_dict(pretrain_config(epochs=args.epochs, iters=args.iters, seed=args.seed,
                                           storage=args.storage.resolve(), name=name, eval_every=args.eval_every))
    start = time.perf_counter()
    history, run_dir = train_supervised(cfg)
    last = history[-1]
    export_backbone(run_dir, out)
    print(f"source domain, supervised ResNet-18, {args.epochs} epochs x {args.iters} iterations: "
          f"mAP {last['mAP']:.1%} rank-1 {last['rank1']:.1%} on the source's own test ids "
          f"({time.perf_counter() - start:.0f} s)")
    print(f"weights: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
