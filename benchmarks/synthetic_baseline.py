"""How hard is the synthetic re-ID set? Untrained baselines on the embedded default.

A fair miniature of re-ID must defeat raw appearance: if raw pixels already found the
same person under another camera, training on it would prove nothing. This script
generates (or reuses) the default set and reports, with the Market-1501 protocol:

* mAP / rank-1 of raw downsampled pixels (16x8 RGB, L2-normalised, Euclidean);
* mAP / rank-1 of a randomly initialised torchvision ResNet-18 (global average pool);
* how raw pixels cluster: NMI of KMeans(k = #train ids) against camera labels and
  against identity labels, and how often an image's nearest neighbour shares its camera
  versus its identity — the gap re-ID has to close;
* that the gap can be closed: a linear metric learnt with the train labels (shrinkage LDA
  on the same raw pixels, the classical KISSME/XQDA idea) ranked on the unseen test ids,
  and optionally (``--cnn-epochs N``) a small CNN trained with identity labels.

    python benchmarks/synthetic_baseline.py [--root DIR] [--sheet /tmp/sheet.png]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ray_reid.data.synthetic import DEFAULT_CONFIG, GALLERY_DIR, QUERY_DIR, TRAIN_DIR, generate_dataset

NAME_RE = re.compile(r"^(-?\d+)_c(\d+)")

try:
    from ray_reid.eval.rank import evaluate_rank
except ImportError:  # the evaluation module is written in parallel; keep a small local one

    def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
        """Market protocol: drop same pid + same camera, skip queries without a valid match."""
        cmc_hits, aps = [], []
        for i in range(len(q_pids)):
            order = np.argsort(distmat[i], kind="stable")
            keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
            match = (g_pids[order] == q_pids[i])[keep]
            if not match.any():
                continue
            hits = np.flatnonzero(match) + 1
            cmc_hits.append(hits[0])
            aps.append(np.mean(np.arange(1, len(hits) + 1) / hits))
        first = np.asarray(cmc_hits)
        cmc = np.array([(first <= r).mean() for r in range(1, max_rank + 1)])
        return cmc, float(np.mean(aps))


def read_split(folder: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    paths = sorted(folder.glob("*.jpg"))
    pids, cams = [], []
    for p in paths:
        m = NAME_RE.match(p.name)
        if m is None:
            raise ValueError(f"{p} does not match {NAME_RE.pattern}")
        pids.append(int(m.group(1)))
        cams.append(int(m.group(2)) - 1)
    return paths, np.asarray(pids), np.asarray(cams)


def raw_pixels(paths: list[Path], size: tuple[int, int] = (8, 16)) -> np.ndarray:
    feats = np.stack([np.asarray(Image.open(p).convert("RGB").resize(size, Image.BOX), np.float32).ravel()
                      for p in paths])
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


def resnet18_random(paths: list[Path], seed: int = 0) -> np.ndarray:
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None)
    model.fc = torch.nn.Identity()
    model.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), 256):
            batch = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0
                              for p in paths[start:start + 256]])
            x = (torch.from_numpy(batch).permute(0, 3, 1, 2) - mean) / std
            out.append(model(x).numpy())
    feats = np.concatenate(out)
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


def rank_scores(q: np.ndarray, g: np.ndarray, qp, gp, qc, gc) -> tuple[float, float]:
    dist = (q ** 2).sum(1)[:, None] + (g ** 2).sum(1)[None, :] - 2 * q @ g.T
    cmc, mAP = evaluate_rank(dist, qp, gp, qc, gc, max_rank=10)
    return float(mAP), float(cmc[0])


def cluster_nmi(feats: np.ndarray, pids: np.ndarray, cams: np.ndarray, seed: int = 0) -> tuple[float, float]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    labels = KMeans(n_clusters=len(np.unique(pids)), n_init=3, random_state=seed).fit_predict(feats)
    return normalized_mutual_info_score(cams, labels), normalized_mutual_info_score(pids, labels)


def lda_metric(train: np.ndarray, train_pids: np.ndarray):
    """A supervised linear projection fitted on train identities, returned as a feature map."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(train, train_pids)

    def project(x: np.ndarray) -> np.ndarray:
        z = lda.transform(x)
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    return project


def supervised_cnn(train_paths: list[Path], train_pids: np.ndarray, epochs: int, seed: int = 0):
    """A small CNN trained with the true train identities (cross-entropy, flips), as a feature map.

    Not a method we ship: an upper reference showing the identity signal is learnable
    from these pixels and carries over to unseen test identities.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)

    def load(paths: list[Path]) -> torch.Tensor:
        arr = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0 for p in paths])
        return torch.from_numpy(arr).permute(0, 3, 1, 2)

    def block(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.MaxPool2d(2),
        )

    x = load(train_paths)
    mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True)
    labels = torch.from_numpy(np.unique(train_pids, return_inverse=True)[1])
    net = nn.Sequential(block(3, 32), block(32, 64), block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Linear(128, int(labels.max()) + 1)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-3, weight_decay=5e-4)
    for _ in tqdm(range(epochs), desc="supervised CNN", unit="epoch"):
        net.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            idx = order[start:start + 64]
            batch = x[idx]
            flip = torch.rand(len(idx)) < 0.5
            batch[flip] = batch[flip].flip(-1)
            loss = nn.functional.cross_entropy(head(net((batch - mean) / std)), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()

    def extract(paths: list[Path]) -> np.ndarray:
        with torch.inference_mode():
            z = torch.cat([net((load(paths[i:i + 256]) - mean) / std) for i in range(0, len(paths), 256)])
        return torch.nn.functional.normalize(z, dim=1).numpy()

    return extract


def neighbour_agreement(feats: np.ndarray, pids: np.ndarray, cams: np.ndarray) -> tuple[float, float]:
    """How often an image's nearest other image shares its camera, and how often its identity.

    Unlike NMI this compares the two groupings on one scale, whatever their numbers of groups.
    """
    sim = feats @ feats.T
    np.fill_diagonal(sim, -np.inf)
    nn = sim.argmax(axis=1)
    return float((cams[nn] == cams).mean()), float((pids[nn] == pids).mean())


def contact_sheet(root: Path, out: Path, n_ids: int = 16, per_id: int = 16, zoom: int = 3) -> None:
    """Some training identities, one row each, images ordered by camera: for eyeballing."""
    paths, pids, _ = read_split(root / TRAIN_DIR)
    chosen = sorted(set(pids.tolist()))[:n_ids]
    w, h = Image.open(paths[0]).size
    sheet = Image.new("RGB", (w * zoom * per_id, h * zoom * len(chosen)), (255, 255, 255))
    for r, pid in enumerate(chosen):
        mine = sorted((p for p, q in zip(paths, pids) if q == pid), key=lambda p: p.name[5:])
        for c, p in enumerate(mine[:per_id]):
            sheet.paste(Image.open(p).resize((w * zoom, h * zoom), Image.NEAREST), (c * w * zoom, r * h * zoom))
    sheet.save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", help="existing synthetic set (default: generate DEFAULT_CONFIG into a temp dir)")
    ap.add_argument("--sheet", help="also save a contact sheet PNG here")
    ap.add_argument("--no-resnet", action="store_true", help="skip the ResNet-18 baseline")
    ap.add_argument("--cnn-epochs", type=int, default=0,
                    help="also train a small supervised CNN for this many epochs (learnability check)")
    args = ap.parse_args()

    tmp = None
    if args.root and Path(args.root).is_dir() and any(Path(args.root).iterdir()):
        root = Path(args.root)
        print(f"reusing {root}")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="synthetic-baseline-")
        root = Path(args.root) if args.root else Path(tmp.name) / "synthetic"
        t0 = time.perf_counter()
        s = generate_dataset(root, DEFAULT_CONFIG, progress=False)
        print(f"generated default set in {time.perf_counter() - t0:.1f} s: train {s.num_train_images} imgs / "
              f"{s.num_train_ids} ids, query {s.num_query_images}, gallery {s.num_gallery_images} "
              f"({s.num_distractors} distractors)")
    if args.sheet:
        contact_sheet(root, Path(args.sheet))
        print(f"contact sheet: {args.sheet}")

    qpaths, qp, qc = read_split(root / QUERY_DIR)
    gpaths, gp, gc = read_split(root / GALLERY_DIR)
    tpaths, tp, tc = read_split(root / TRAIN_DIR)

    n_g = len(gp)
    chance = np.mean([((gp == p) & (gc != c)).sum() / n_g for p, c in zip(qp, qc)])
    print(f"\n{'features':<30}{'mAP':>7}{'rank-1':>8}{'NMI cam':>9}{'NMI id':>8}{'NN cam':>8}{'NN id':>7}")
    print(f"{'chance':<30}{'':>7}{100 * chance:>7.1f}%{'':>17}{100 / len(np.unique(tc)):>7.1f}%"
          f"{100 * np.mean([(tp == p).sum() - 1 for p in tp]) / (len(tp) - 1):>6.1f}%")
    extractors = [("raw pixels 16x8 RGB", raw_pixels)]
    if not args.no_resnet:
        extractors.append(("ResNet-18 random init", resnet18_random))
    for name, fn in extractors:
        t0 = time.perf_counter()
        q, g, t = fn(qpaths), fn(gpaths), fn(tpaths)
        mAP, r1 = rank_scores(q, g, qp, gp, qc, gc)
        nmi_cam, nmi_id = cluster_nmi(t, tp, tc)
        nn_cam, nn_id = neighbour_agreement(t, tp, tc)
        print(f"{name:<30}{100 * mAP:>6.1f}%{100 * r1:>7.1f}%{nmi_cam:>9.3f}{nmi_id:>8.3f}"
              f"{100 * nn_cam:>7.1f}%{100 * nn_id:>6.1f}%   ({time.perf_counter() - t0:.1f} s)")
        if fn is raw_pixels:
            project = lda_metric(t, tp)
            mAP, r1 = rank_scores(project(q), project(g), qp, gp, qc, gc)
            print(f"{'raw pixels + LDA (supervised)':<30}{100 * mAP:>6.1f}%{100 * r1:>7.1f}%"
                  f"   (a linear metric from train labels, tested on unseen ids)")
    if args.cnn_epochs > 0:
        t0 = time.perf_counter()
        extract = supervised_cnn(tpaths, tp, args.cnn_epochs)
        mAP, r1 = rank_scores(extract(qpaths), extract(gpaths), qp, gp, qc, gc)
        print(f"{f'small CNN, {args.cnn_epochs} ep (supervised)':<30}{100 * mAP:>6.1f}%{100 * r1:>7.1f}%"
              f"   ({time.perf_counter() - t0:.1f} s)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
