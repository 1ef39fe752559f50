"""The GPU figures in one run: clustering (dense vs k-NN graph) and a ReidNet train step (fp32 vs bf16).

Needs torch and CuPy on a CUDA machine; Ray and faiss are not needed (the graph path's k-NN
search falls back to a CuPy brute force). Called by ``benchmarks/gpu_suite.sh``; every figure
is printed and written to ``--json``.

    python -m benchmarks.gpu_figures --json gpu_figures.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

from benchmarks._sphere_mixture import sphere_mixture

IDS_PER_IMAGE = 751 / 12936


def clustering_figures(sizes: list[int], dim: int, n_neighbors: int) -> list[dict]:
    import cupy
    from sklearn.metrics import adjusted_rand_score

    from ray_reid.clustering.hierarchical import HierarchicalSSE

    rows = []
    for n in sizes:
        ids = round(n * IDS_PER_IMAGE)
        x, y = sphere_mixture(n, ids, dim)
        xd = cupy.asarray(x)
        row: dict = {"n": n, "d": dim, "ids": ids}
        labels = {}
        for connectivity in ("dense", "knn"):
            cupy.get_default_memory_pool().free_all_blocks()
            cupy.cuda.Device().synchronize()
            start = time.perf_counter()
            model = HierarchicalSSE(ids, lam=0.05, linkage="average", regularizer="sse", device="cuda",
                                    connectivity=connectivity, n_neighbors=n_neighbors).fit(xd)
            cupy.cuda.Device().synchronize()
            seconds = time.perf_counter() - start
            labels[connectivity] = model.labels_
            row[connectivity] = {"seconds": seconds, "ari_truth": float(adjusted_rand_score(y, model.labels_)),
                                 "gpu_peak_gb": cupy.get_default_memory_pool().total_bytes() / 1e9}
            if model.rounds_ is not None:
                row[connectivity] |= {"graph_seconds": model.graph_seconds_, "rounds": len(model.rounds_),
                                      "rac_seconds": float(sum(r.seconds for r in model.rounds_))}
            print(f"  clustering N={n} d={dim} {connectivity:5s} {seconds:7.2f} s  ARI {row[connectivity]['ari_truth']:.4f}",
                  flush=True)
        row["ari_graph_to_dense"] = float(adjusted_rand_score(labels["dense"], labels["knn"]))
        row["dense_over_graph"] = row["dense"]["seconds"] / row["knn"]["seconds"]
        print(f"  clustering N={n}: dense / graph {row['dense_over_graph']:.2f}x, ARI graph to dense "
              f"{row['ari_graph_to_dense']:.4f}", flush=True)
        rows.append(row)
        del xd
    return rows


def train_step_figures(backbone: str, height: int, width: int, batch: int, steps: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train_throughput

    args = types.SimpleNamespace(backbone=backbone, views="global", height=height, width=width, batch=batch,
                                 clusters=500, steps=steps, warmup=3, threads=1, device="cuda")
    out = {}
    for mode in ({"name": "fp32", "amp": False, "channels_last": False},
                 {"name": "bf16+channels_last", "amp": True, "channels_last": True}):
        r = train_throughput.measure(1, args, mode)
        out[mode["name"]] = {"train_images_per_s": r["train_total"], "extract_images_per_s": r["extract_total"]}
        print(f"  {backbone} {height}x{width} batch {batch} {mode['name']:20s} train {r['train_total']:8.1f} img/s  "
              f"extract {r['extract_total']:8.1f} img/s", flush=True)
    out["bf16_over_fp32_train"] = out["bf16+channels_last"]["train_images_per_s"] / out["fp32"]["train_images_per_s"]
    print(f"  bf16 / fp32 train step: {out['bf16_over_fp32_train']:.2f}x", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[12936, 32621])
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--n-neighbors", type=int, default=20)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: the GPU figures need one", file=sys.stderr)
        return 2
    figures = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    print(f"GPU figures on {figures['device']}")
    figures["clustering"] = clustering_figures(args.sizes, args.dim, args.n_neighbors)
    figures["train_step"] = train_step_figures(args.backbone, args.height, args.width, args.batch, args.steps)
    from ray_reid.atomic import atomic_write

    text = json.dumps(figures, indent=2)
    atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
