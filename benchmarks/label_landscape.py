"""How good can hierarchical pseudo-labels from the pretrained init be? Threshold × outlier rule, no training.

Extracts the proxy init's features of a domain's training images (BN neck statistics set, as the
engine does before epoch 0), clusters them with ``hc_sse`` at several relative distance thresholds
and ``cluster.min_agreement`` values, and prints clusters, outliers, ARI over all images (outliers
count as singletons) and ARI / pairwise precision / recall over the kept images only. Tune on
``val``; the target is for reporting.

    python benchmarks/label_landscape.py [--domain val] [--thresholds 0.6 0.8 1.0] [--agreements 0 0.5 0.75]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from reproduce import HC, base_config  # noqa: E402

from ray_reid.config import ClusterConfig, config_from_dict  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domain", choices=("val", "target"), default="val")
    ap.add_argument("--thresholds", nargs="+", type=float, default=[0.6, 0.8, 1.0])
    ap.add_argument("--agreements", nargs="+", type=float, default=[0.0, 0.5, 0.75])
    args = ap.parse_args(argv)

    from ray_reid.data.resolve import load_configured_dataset
    from ray_reid.data.transforms import test_transform
    from ray_reid.engine.extract import extract_features
    from ray_reid.engine.neck_init import init_neck_statistics
    from ray_reid.engine.pseudo_labels import assign_pseudo_labels
    from ray_reid.eval.cluster_metrics import clustering_scores
    from ray_reid.models import build_model

    cfg = config_from_dict(base_config(args.domain, epochs=1, iters=1, seed=0, storage=Path("runs/landscape"),
                                       name="landscape"))
    ds = load_configured_dataset(cfg.data.dataset, cfg.data.root)
    train = list(ds.train)
    tf = test_transform(cfg.data)
    model = build_model(cfg.model)
    init_neck_statistics(model, train, tf)
    feats = extract_features(model, train, tf)
    ids = np.array([r.pid for r in train])
    base = {k.split(".", 1)[1]: v for k, v in HC.items()}
    print(f"domain {args.domain}: {len(train)} training images, {len(set(ids))} identities; hc_sse, lam {cfg.cluster.lam}")
    print("| threshold | min_agreement | clusters | outliers | ARI (all) | ARI (kept) | precision | recall |")
    print("|---|---|---|---|---|---|---|---|")
    for thr in args.thresholds:
        for agree in args.agreements:
            ccfg = ClusterConfig(**{**base, "lam": cfg.cluster.lam, "distance_threshold": thr, "min_agreement": agree})
            labels = assign_pseudo_labels(feats, ccfg, epoch=0).labels
            keep = labels >= 0
            everything = clustering_scores(labels, ids).as_dict()
            kept = clustering_scores(labels[keep], ids[keep]).as_dict()
            print(f"| {thr} | {agree} | {labels.max() + 1} | {int((~keep).sum())} | {everything['ari']:.3f} | "
                  f"{kept['ari']:.3f} | {kept['pairwise_precision']:.3f} | {kept['pairwise_recall']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
