"""Why did the first epoch on *true* labels lose mAP from a pretrained init? One epoch, several variants.

Each case builds the proxy model from the source-pretrained weights, trains 15 iterations on the
domain's true identities (the memory and the step are the engine's own: ``train_one_epoch``,
``ClusterMemory``, ``PseudoIdentitySampler``) or none, and evaluates query/gallery. The cases
isolate the BatchNorm statistics, which is where the loss came from (README, "The proxy benchmark"):

    frozen            the init, no training
    neck_stats        the init with the BN neck's running statistics set from the training images
    bn_only           15 iterations at lr 0: only the BN running statistics move
    fresh_neck        15 iterations as the engine did before the fix (neck statistics 0 / 1)
    frozen_bn         15 iterations with every BN layer kept in eval mode
    neck_init         15 iterations after ``init_neck_statistics`` (what the engine does now)

    python benchmarks/first_epoch_probe.py [--domain val|target] [--cases ...] [--iters 15]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from reproduce import base_config  # noqa: E402

from ray_reid.config import config_from_dict  # noqa: E402

CASES = ("frozen", "neck_stats", "bn_only", "fresh_neck", "frozen_bn", "neck_init")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domain", choices=("val", "target"), default="val")
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    ap.add_argument("--iters", type=int, default=15)
    args = ap.parse_args(argv)

    from ray_reid.data.image_folder import RecordImageDataset
    from ray_reid.data.resolve import load_configured_dataset
    from ray_reid.data.sampler import PseudoIdentitySampler
    from ray_reid.data.transforms import test_transform, train_transform
    from ray_reid.engine.extract import extract_features
    from ray_reid.engine.loop import seed_everything
    from ray_reid.engine.neck_init import init_neck_statistics
    from ray_reid.engine.pseudo_labels import _relabel_compact
    from ray_reid.engine.train_epoch import train_one_epoch
    from ray_reid.eval.features import query_gallery_metrics
    from ray_reid.losses.cluster_memory import ClusterMemory, cluster_centroids
    from ray_reid.models import build_model

    cfg = config_from_dict(base_config(args.domain, epochs=1, iters=args.iters, seed=0,
                                       storage=Path("runs/first_epoch_probe"), name="probe"))
    ds = load_configured_dataset(cfg.data.dataset, cfg.data.root)
    tcfg = cfg.data
    tf_test, tf_train = test_transform(tcfg), train_transform(tcfg)
    train = list(ds.train)
    labels = _relabel_compact(np.array([r.pid for r in train]))
    cams = np.array([r.camid for r in train])

    def evaluate(model) -> float:
        feats = extract_features(model, list(ds.query) + list(ds.gallery), tf_test)["global"]
        return query_gallery_metrics(feats, ds.query, ds.gallery)["mAP"]

    def fresh():
        seed_everything(0)
        return build_model(cfg.model)

    def train_epoch(model, *, lr: float, bn_eval: bool = False) -> float:
        feats = extract_features(model, train, tf_test)["global"]
        memory = ClusterMemory.from_centroids(cluster_centroids(torch.from_numpy(feats), torch.from_numpy(labels)),
                                              temp=cfg.optim.temp, momentum=cfg.optim.momentum)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr,
                                     weight_decay=cfg.optim.weight_decay)
        sampler = PseudoIdentitySampler(labels, cams, num_instances=cfg.optim.k, batch_size=cfg.optim.p * cfg.optim.k,
                                        num_iterations=args.iters, seed=0, epoch=0)
        loader = DataLoader(RecordImageDataset(train, tf_train), batch_size=cfg.optim.p * cfg.optim.k,
                            sampler=sampler, drop_last=True)
        if bn_eval:  # train() as usual, then every BN layer back to eval: running statistics used, never updated
            train_mode = model.train

            def keep_bn_eval(mode: bool = True):
                train_mode(mode)
                for m in model.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.eval()
                return model

            model.train = keep_bn_eval
        torch.manual_seed(0)
        return train_one_epoch(model, loader, labels, {"global": memory}, optimizer, cfg.optim, epoch=0)["loss"]

    lr = cfg.optim.lr
    print(f"domain {args.domain}, true labels, {args.iters} iterations, batch {cfg.optim.p}x{cfg.optim.k}, lr {lr}")
    for case in args.cases:
        start = time.perf_counter()
        model = fresh()
        loss = None
        if case == "neck_stats":
            init_neck_statistics(model, train, tf_test)
        elif case == "bn_only":
            loss = train_epoch(model, lr=0.0)
        elif case == "fresh_neck":
            loss = train_epoch(model, lr=lr)
        elif case == "frozen_bn":
            loss = train_epoch(model, lr=lr, bn_eval=True)
        elif case == "neck_init":
            init_neck_statistics(model, train, tf_test)
            loss = train_epoch(model, lr=lr)
        mAP = evaluate(model)
        print(f"{case:>11}: mAP {100 * mAP:.1f}%" + (f", mean loss {loss:.2f}" if loss is not None else "")
              + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
