"""Why do hierarchical pseudo-labels hurt a good init? Clustering diagnostics without training.

Extracts (once, cached as ``.npz`` next to the run outputs) the features of a proxy domain's
training images from the source-pretrained init, or with the trunk of a run's last checkpoint as the
init (``--checkpoint``: e.g. the pretraining's before it has finished), and reports for each regulariser and relative threshold what the trainer would
receive: clusters, outliers, ARI, pairwise precision / recall, how many true identities are split
over several clusters, and how camera-pure the clusters are (a clusterer that groups by camera
teaches the camera, not the person). ``--calibrate K`` finds, per regulariser, the threshold that
gives K clusters from these features: the fair-ablation thresholds are chosen that way on ``val``
(``--calibrate-input camera_centred``: every regulariser and the raw features on camera-centred input, as
the ``*_cam`` rows of ``reproduce.py`` cluster).

    python benchmarks/hc_diagnose.py --domain val [--regularizers sse size none] [--thresholds 0.8 1.0]
    python benchmarks/hc_diagnose.py --domain val --calibrate 100
    python benchmarks/hc_diagnose.py --domain val --calibrate-to 1.0 --calibrate-input camera_centred
    python benchmarks/hc_diagnose.py --domain val --recipe hc_sse_market1501   # a recipe's clustering, plain vs centred
    python benchmarks/hc_diagnose.py --domain val --checkpoint runs/reproduce-val/runs/hc_sse-s0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from reproduce import HC, base_config  # noqa: E402

from ray_reid.atomic import atomic_write  # noqa: E402
from ray_reid.config import ClusterConfig, config_from_dict  # noqa: E402

# the regulariser weights of the proxy's rows (reproduce.py): SSE at the base config's 0.05, size at 0.005
LAMS = {"sse": 0.05, "size": 0.005, "none": 0.0, "delta_sse": 0.05}


def features(domain: str, checkpoint: Path | None, cache_dir: Path, sphere: bool = True) -> dict[str, np.ndarray]:
    """Training-image features (``feats``), true ids (``pids``) and cameras (``camids``), cached."""
    tag = checkpoint.name if checkpoint else "init"
    cache = cache_dir / f"{domain}-{tag}{'' if sphere else '-raw'}.npz"
    if cache.is_file():
        return dict(np.load(cache))
    import torch

    from ray_reid.data.resolve import load_configured_dataset
    from ray_reid.data.transforms import test_transform
    from ray_reid.engine.extract import extract_features
    from ray_reid.engine.neck_init import init_neck_statistics
    from ray_reid.models import build_model

    raw = base_config(domain, epochs=1, iters=1, seed=0, storage=cache_dir, name="diagnose")
    if checkpoint is not None:  # its trunk becomes the init, exactly as pretrain_proxy.py exports the final one
        from ray_reid.engine.supervised import export_backbone

        raw["model"]["pretrained"] = str(export_backbone(checkpoint, cache_dir / f"{tag}-trunk.pth"))
    cfg = config_from_dict(raw)
    ds = load_configured_dataset(cfg.data.dataset, cfg.data.root)
    train = list(ds.train)
    tf = test_transform(cfg.data)
    model = build_model(cfg.model)
    init_neck_statistics(model, train, tf)  # as the trainer does before its first extraction
    with torch.no_grad():
        feats = extract_features(model, train, tf, normalize=sphere)["global"]
    out = {"feats": feats, "pids": np.array([r.pid for r in train]), "camids": np.array([r.camid for r in train])}
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(cache, lambda tmp: np.savez(open(tmp, "wb"), **out))
    return out


def camera_purity(labels: np.ndarray, camids: np.ndarray) -> float:
    """Size-weighted mean share of each cluster's most common camera (clusters of >= 2 images)."""
    keep = labels >= 0
    lab, cam = labels[keep], camids[keep]
    sizes = np.bincount(lab)
    table = np.zeros((len(sizes), int(cam.max()) + 1), dtype=np.int64)
    np.add.at(table, (lab, cam), 1)
    big = sizes >= 2
    return float(table[big].max(axis=1).sum() / max(sizes[big].sum(), 1))


def split_ids(labels: np.ndarray, pids: np.ndarray) -> float:
    """Mean number of clusters a true identity's kept images are spread over."""
    keep = labels >= 0
    return float(np.mean([len(np.unique(labels[keep & (pids == p)])) for p in np.unique(pids[keep])]))


def cluster(feats: np.ndarray, reg: str, thr: float, *, sphere: bool = True, lam: float | None = None,
            linkage: str = "average", min_agreement: float = 0.0, camids: np.ndarray | None = None) -> np.ndarray:
    """The training loop's labels for these features (camera-centred when ``camids`` are given)."""
    from ray_reid.engine.pseudo_labels import assign_pseudo_labels

    base = {k.split(".", 1)[1]: v for k, v in HC.items()}
    ccfg = ClusterConfig(**{**base, "lam": LAMS[reg] if lam is None else lam, "linkage": linkage,
                            "regularizer": reg, "distance_threshold": thr, "sphere": sphere,
                            "min_agreement": min_agreement, "camera_centred": camids is not None, "device": "cpu"})
    return assign_pseudo_labels({"global": feats}, ccfg, epoch=0, camids=camids).labels


ROWS_SEEN: list[tuple[str, dict[str, float]]] = []  # every printed row, for the PNG


def row(name: str, labels: np.ndarray, data: dict[str, np.ndarray]) -> str:
    from ray_reid.eval.cluster_metrics import clustering_scores

    pids, camids = data["pids"], data["camids"]
    s = clustering_scores(labels, pids).as_dict()
    sizes = np.bincount(labels[labels >= 0])
    ROWS_SEEN.append((name, {"ARI": s["ari"], "precision": s["pairwise_precision"], "recall": s["pairwise_recall"],
                             "camera share": camera_purity(labels, camids)}))
    return (f"| {name} | {labels.max() + 1} | {int((labels < 0).sum())} | {np.median(sizes):.0f}/{sizes.max()} | "
            f"{s['ari']:.3f} | {s['pairwise_precision']:.3f} | {s['pairwise_recall']:.3f} | "
            f"{split_ids(labels, pids):.2f} | {camera_purity(labels, camids):.2f} |")


HEADER = ("| labels | clusters | outliers | median/max size | ARI | precision | recall | clusters per id | "
          "camera purity |\n|---|---|---|---|---|---|---|---|---|")


def repelled_own_person(feats: np.ndarray, labels: np.ndarray, pids: np.ndarray, *, temp: float = 0.05,
                        p: int = 16, k: int = 4, batches: int = 200, seed: int = 0) -> tuple[float, float]:
    """How much of each loss's push-away lands on the anchor's *own* person (a split identity), at these labels.

    Memory (cluster-contrast): per image, the softmax weight (temperature ``temp``) on the other clusters'
    centroids, each weighted by the share of that cluster holding the image's true person, as a fraction of
    all the weight on other clusters: the part of the repulsion aimed at the same person.
    Batch-hard triplet (HCT): over ``batches`` random P x K batches of the pseudo-labels, the fraction of
    anchors whose hardest negative is in fact the same person.
    """
    keep = labels >= 0
    x = feats[keep] / np.linalg.norm(feats[keep], axis=1, keepdims=True)
    lab, pid = labels[keep], pids[keep]
    n_cl = int(lab.max()) + 1
    cent = np.zeros((n_cl, x.shape[1]))
    np.add.at(cent, lab, x)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    _, pid_idx = np.unique(pid, return_inverse=True)
    share = np.zeros((n_cl, pid_idx.max() + 1))
    np.add.at(share, (lab, pid_idx), 1.0)
    share /= share.sum(axis=1, keepdims=True)
    logits = x @ cent.T / temp
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w[np.arange(len(lab)), lab] = 0.0  # the own cluster is the positive
    memory = float(np.mean((w * share[:, pid_idx].T).sum(axis=1) / w.sum(axis=1)))

    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(lab == c) for c in range(n_cl)]
    big = [c for c in range(n_cl) if len(members[c]) >= 2]
    same = total = 0
    for _ in range(batches):
        chosen = rng.choice(big, size=min(p, len(big)), replace=False)
        idx = np.concatenate([rng.choice(members[c], size=k, replace=len(members[c]) < k) for c in chosen])
        d = ((x[idx, None, :] - x[None, idx, :]) ** 2).sum(-1)
        neg = lab[idx][:, None] != lab[idx][None, :]
        hardest = np.where(neg, d, np.inf).argmin(axis=1)
        same += int((pid[idx][hardest] == pid[idx]).sum())
        total += len(idx)
    return memory, same / total


def save_png(path: Path, title: str) -> None:
    """Grouped bars of ARI, pairwise precision / recall and camera share for every printed row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = ["ARI", "precision", "recall", "camera share"]
    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(ROWS_SEEN)
    for i, (name, values) in enumerate(ROWS_SEEN):
        ax.bar(np.arange(len(metrics)) + (i - (len(ROWS_SEEN) - 1) / 2) * width, [values[m] for m in metrics],
               width, label=name)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper right")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))


def calibrate(feats: np.ndarray, reg: str, k: int, *, sphere: bool = True, camids: np.ndarray | None = None,
              lo: float = 0.01, hi: float = 4.0, steps: int = 30) -> tuple[float, int]:
    """Relative threshold whose clustering (singletons out) has the cluster count nearest ``k`` (bisection)."""
    best = (hi, -1)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        n = int(cluster(feats, reg, mid, sphere=sphere, camids=camids).max()) + 1
        if best[1] < 0 or abs(n - k) < abs(best[1] - k):
            best = (mid, n)
        if n == k:
            break
        if n > k:  # too many clusters: merge further
            lo = mid
        else:
            hi = mid
    return round(best[0], 4), best[1]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    code = report(args)
    if args.png is not None:
        where = "init" if args.checkpoint is None else f"init from {args.checkpoint.name}"
        save_png(args.png, f"{args.domain} domain, {where}: pseudo-labels before any training")
        print(f"wrote {args.png}")
    return code


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domain", choices=("val", "target"), default="val")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="a run folder: its last checkpoint's trunk is the init (as pretrain_proxy.py exports it)")
    ap.add_argument("--regularizers", nargs="+", default=["sse", "size", "none"], choices=sorted(LAMS))
    ap.add_argument("--thresholds", nargs="+", type=float, default=[1.0])
    ap.add_argument("--calibrate", type=int, default=None, metavar="K",
                    help="per regulariser (and raw features), the threshold giving K clusters")
    ap.add_argument("--calibrate-to", type=float, default=None, metavar="T",
                    help="as --calibrate, with K = the clusters SSE gives at relative threshold T on these features")
    ap.add_argument("--calibrate-input", choices=("plain", "camera_centred"), default="plain",
                    help="what --calibrate / --calibrate-to cluster: the features as they are, or each camera's "
                         "features minus its mean (the reference K then comes from camera-centred SSE too)")
    ap.add_argument("--camera-centred", action="store_true",
                    help="also cluster camera-centred features (cluster.camera_centred)")
    ap.add_argument("--recipe", default=None, metavar="NAME",
                    help="cluster with a recipe's cluster section (jobs/configs/NAME.yaml, e.g. hc_sse_market1501), "
                         "with and without camera centring")
    ap.add_argument("--negatives", action="store_true",
                    help="also: the share of each loss's push-away aimed at the anchor's own (split) person")
    ap.add_argument("--cache", type=Path, default=Path("runs/hc_diagnose"))
    ap.add_argument("--png", type=Path, default=None, help="also draw the table's rows as grouped bars")
    return ap.parse_args(argv)


def report(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    data = features(args.domain, args.checkpoint, args.cache)
    feats = data["feats"]
    print(f"domain {args.domain}, {'init' if args.checkpoint is None else args.checkpoint}: {len(feats)} images, "
          f"{len(np.unique(data['pids']))} identities, {len(np.unique(data['camids']))} cameras")
    print(HEADER)
    print(row("true identities", data["pids"].astype(np.int64) - data["pids"].min(), data))
    if args.recipe is not None:
        import dataclasses

        from ray_reid.engine.pseudo_labels import assign_pseudo_labels
        from ray_reid.recipes import load_recipe

        ccfg = load_recipe(args.recipe, {"data.root": str(args.cache)}).cluster
        for centred in (False, True):
            labels = assign_pseudo_labels({"global": feats}, dataclasses.replace(ccfg, camera_centred=centred,
                                                                                 device="cpu"),
                                          epoch=0, camids=data["camids"]).labels
            print(row(f"{args.recipe} clustering{', camera-centred' if centred else ', plain input'}", labels, data))
        return 0
    cal_cams = data["camids"] if args.calibrate_input == "camera_centred" else None
    tag = ", camera-centred" if cal_cams is not None else ""
    if args.calibrate_to is not None:
        reference = cluster(feats, "sse", args.calibrate_to, camids=cal_cams)
        args.calibrate = int(reference.max()) + 1
        print(row(f"sse{tag}, threshold {args.calibrate_to} (the reference: K = {args.calibrate})", reference, data))
    if args.calibrate:
        for reg in args.regularizers:
            thr, n = calibrate(feats, reg, args.calibrate, camids=cal_cams)
            print(row(f"{reg}{tag}, threshold {thr} (calibrated to {args.calibrate})",
                      cluster(feats, reg, thr, camids=cal_cams), data), flush=True)
        raw = features(args.domain, args.checkpoint, args.cache, sphere=False)["feats"]
        thr, n = calibrate(raw, "sse", args.calibrate, sphere=False, camids=cal_cams)
        print(row(f"sse, raw features{tag}, threshold {thr} (calibrated to {args.calibrate})",
                  cluster(raw, "sse", thr, sphere=False, camids=cal_cams), data))
        if args.camera_centred and cal_cams is None:
            thr, n = calibrate(feats, "sse", args.calibrate, camids=data["camids"])
            print(row(f"sse, camera-centred, threshold {thr} (calibrated to {args.calibrate})",
                      cluster(feats, "sse", thr, camids=data["camids"]), data))
        return 0
    if args.negatives:
        print("\n| labels | memory: repulsion on the own person | triplet: hardest negatives that are the own person |"
              "\n|---|---|---|")
        for suffix, camids in [("", None)] + ([(", camera-centred", data["camids"])] if args.camera_centred else []):
            for thr in args.thresholds:
                labels = cluster(feats, "sse", thr, camids=camids)
                mem, tri = repelled_own_person(feats, labels, data["pids"])
                print(f"| sse, threshold {thr}{suffix} | {mem:.3f} | {tri:.3f} |", flush=True)
        mem, tri = repelled_own_person(feats, data["pids"].astype(np.int64) - data["pids"].min(), data["pids"])
        print(f"| true identities | {mem:.3f} | {tri:.3f} |")
        return 0
    variants = [("", None)] + ([(", camera-centred", data["camids"])] if args.camera_centred else [])
    for suffix, camids in variants:
        for reg in args.regularizers:
            for thr in args.thresholds:
                print(row(f"{reg}, threshold {thr}{suffix}", cluster(feats, reg, thr, camids=camids), data),
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
