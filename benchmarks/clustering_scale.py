"""Benchmark: HierarchicalSSE past the dense limit — dense K×K state vs the k-NN graph path.

Features are synthetic sphere mixtures (``benchmarks/_sphere_mixture.py``) with Market-1501's
ratio of images to identities (12,936 : 751), clustered down to the true number of identities
with average linkage + SSE (the training default). Each (case, path) runs in a fresh process,
so wall time, CPU time and peak RSS (the process's whole high-water mark, features included)
are its own (after an untimed warm-up fit on 500 rows: imports and thread pools); the load average of the machine is printed beside every figure. Quality: ARI
against the true mixture, and graph against dense where dense ran.

Then a model of one clustering of 1,000,000 images on one GPU from the measured rounds: the
number of edges re-costed per sample by gathering two cluster sums (an O(d) dot product; the
others sum cached dots), scaled to 1M, at an assumed memory bandwidth, plus the exact k-NN search at an assumed matrix-product rate.

    python -m benchmarks.clustering_scale                              # 12,936×2048 dense+graph, 32,621 and 100,000 ×512 graph
    python -m benchmarks.clustering_scale --cases 300000x512           # the biggest case alone
    python -m benchmarks.clustering_scale --cases 12936x2048 --knn-index cells --json a.json --png a.png
    python -m benchmarks.clustering_scale --plot-from a.json b.json --png both.png   # redraw saved runs

Targets (2-core CPU): N = 100,000 × 512 with peak RSS <= 4 GB and wall <= 10 min; N = 12,936 ×
2048 graph >= 3x faster than dense with ARI >= 0.95 to it.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._sphere_mixture import sphere_mixture
from ray_reid.clustering.graph import KNN_INDEXES

IDS_PER_IMAGE = 751 / 12936
LAM = 0.05


def _case(text: str) -> tuple[int, int]:
    try:
        n, d = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a case is NxD, e.g. 100000x512; got {text!r}") from None
    if n < 100 or d < 1:
        raise argparse.ArgumentTypeError(f"need N >= 100 and D >= 1, got {text!r}")
    return n, d


def _measure(path: str, connectivity: str, n_clusters: int, n_neighbors: int, knn_index: str) -> dict:
    """In a fresh process: one clustering of the saved features; time, CPU, peak RSS, rounds."""
    from ray_reid.clustering.hierarchical import HierarchicalSSE

    x = np.load(path)

    def model(k: int) -> HierarchicalSSE:
        return HierarchicalSSE(k, lam=LAM, linkage="average", regularizer="sse", device="auto",
                               connectivity=connectivity, n_neighbors=n_neighbors, knn_index=knn_index)

    # warm-up on 500 rows, untimed: imports (CuPy's probe alone is ~1.4 s on a machine without a
    # GPU), BLAS thread pools; a long-lived ClusteringActor pays these once, not per clustering
    model(10).fit(x[:500])
    start, cpu = time.perf_counter(), time.process_time()
    model = model(n_clusters).fit(x)
    out = {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "labels": model.labels_,
        "load_after": os.getloadavg()[0],
    }
    if model.rounds_ is not None:
        out |= {
            "graph_seconds": model.graph_seconds_,
            "edges": model.n_edges_,
            "rounds": len(model.rounds_),
            "recosted": int(sum(r.recosted for r in model.rounds_)),
            "gathered": int(sum(r.gathered for r in model.rounds_)),
            "rac_seconds": float(sum(r.seconds for r in model.rounds_)),
        }
    return out


def _fresh(fn, *args, timeout: float):
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result(timeout=timeout)


def run_case(n: int, d: int, args: argparse.Namespace, tmp: Path) -> dict:
    from sklearn.metrics import adjusted_rand_score

    ids = max(2, round(n * IDS_PER_IMAGE))
    x, y = sphere_mixture(n, ids, d)
    path = str(tmp / f"x_{n}_{d}.npy")
    np.save(path, x)
    del x
    result: dict = {"n": n, "d": d, "ids": ids, "k": args.n_neighbors, "knn_index": args.knn_index}
    paths = (["dense"] if n <= args.dense_max else []) + ["knn"]
    for connectivity in paths:
        load = os.getloadavg()[0]
        try:
            res = _fresh(_measure, path, connectivity, ids, args.n_neighbors, args.knn_index, timeout=args.timeout)
        except cf.TimeoutError:
            print(f"  N={n:7d} d={d:4d} {connectivity:5s} did not finish within {args.timeout:.0f} s", flush=True)
            continue
        labels = res.pop("labels")
        res["ari_truth"] = float(adjusted_rand_score(y, labels))
        res["load_before"] = load
        if connectivity == "knn" and "dense" in result:
            res["ari_to_dense"] = float(adjusted_rand_score(result["dense"].pop("_labels"), labels))
        else:
            res["_labels"] = labels
        result[connectivity] = res
        extra = ""
        if connectivity == "knn":
            extra = (f"  [k-NN {res['graph_seconds']:.1f} s, {res['edges']:,} edges; {res['rounds']} rounds "
                     f"{res['rac_seconds']:.1f} s, {res['recosted']:,} edges re-costed, {res['gathered']:,} by a gather]")
            if "ari_to_dense" in res:
                extra += f"  ARI to dense {res['ari_to_dense']:.4f}"
        print(f"  N={n:7d} d={d:4d} {connectivity:5s} {res['seconds']:8.1f} s wall (cpu {res['cpu_seconds']:7.1f} s)  "
              f"peak RSS {res['peak_rss_gb']:5.2f} GB  ARI {res['ari_truth']:.4f}  load {load:.1f}->"
              f"{res['load_after']:.1f}{extra}", flush=True)
    for res in (result.get("dense"), result.get("knn")):
        if res:
            res.pop("_labels", None)
    if "dense" in result and "knn" in result:
        dense, graph = result["dense"], result["knn"]
        print(f"  N={n:7d} dense / graph: wall {dense['seconds'] / graph['seconds']:.2f}x, "
              f"cpu {dense['cpu_seconds'] / graph['cpu_seconds']:.2f}x, memory "
              f"{dense['peak_rss_gb'] / graph['peak_rss_gb']:.2f}x", flush=True)
    os.remove(path)
    return result


def million_model(results: list[dict], args: argparse.Namespace) -> dict | None:
    """Seconds for 1M images on one GPU, scaled from the largest measured graph run."""
    runs = [r for r in results if "knn" in r]
    if not runs:
        return None
    big = max(runs, key=lambda r: r["n"])
    n_target, d = 1_000_000, big["d"]
    recost_per_sample = big["knn"]["recosted"] / big["n"]
    gather_per_sample = big["knn"]["gathered"] / big["n"]
    rounds = big["knn"]["rounds"]
    # two float32 rows gathered per edge whose dot product is not a sum of cached ones
    bytes_moved = gather_per_sample * n_target * 2 * d * 4
    rac = bytes_moved / (args.gpu_bandwidth_tbs * 1e12) + rounds * args.gpu_round_overhead_s
    knn_flops = n_target * n_target * d * 2  # exact flat search
    knn = knn_flops / (args.gpu_tflops * 1e12)
    model = {
        "from_case": f"{big['n']}x{d}", "recosted_per_sample": recost_per_sample,
        "gathered_per_sample": gather_per_sample, "rounds": rounds,
        "rac_seconds": rac, "knn_seconds": knn, "total_seconds": rac + knn,
        "state_gb": n_target * d * 4 / 1e9, "edges_gb": big["knn"]["edges"] / big["n"] * n_target * 8 * 5 / 1e9,
        "assumptions": {"bandwidth_tb_s": args.gpu_bandwidth_tbs, "matmul_tflops": args.gpu_tflops,
                        "round_overhead_s": args.gpu_round_overhead_s},
    }
    print(f"\n== model: 1,000,000 images x {d} on one GPU (from the {model['from_case']} run: "
          f"{recost_per_sample:.1f} edge re-costs per image, {gather_per_sample:.1f} of them gathering two rows, "
          f"{rounds} rounds)")
    print(f"  exact k-NN: {knn_flops:.2e} flops at {args.gpu_tflops} TFLOP/s = {knn:.0f} s")
    print(f"  RAC rounds: {bytes_moved / 1e12:.2f} TB gathered at {args.gpu_bandwidth_tbs} TB/s + {rounds} rounds x "
          f"{args.gpu_round_overhead_s} s = {rac:.1f} s")
    print(f"  total ~{rac + knn:.0f} s; memory: sums {model['state_gb']:.1f} GB + edges ~{model['edges_gb']:.1f} GB "
          "(the dense K×K state would be 4,000 GB)")
    return model


def plot_cases(runs: list[tuple[str, list[dict]]], path: Path) -> None:
    """Wall seconds per (run, case): dense as one bar, the graph path split into k-NN search, RAC rounds and
    the rest (normalising, labels); ARI to dense and load average written beside each graph bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ray_reid.atomic import atomic_write

    rows = []  # (label, dense seconds or None, (knn, rac, rest) or None, note)
    for name, cases in runs:
        for case in cases:
            label = f"{name} {case['n']:,}×{case['d']}".strip()
            dense, graph = case.get("dense"), case.get("knn")
            parts = None
            note = ""
            if graph:
                knn, rac = graph["graph_seconds"], graph["rac_seconds"]
                parts = (knn, rac, max(0.0, graph["seconds"] - knn - rac))
                note = f"ARI truth {graph['ari_truth']:.3f}"
                if "ari_to_dense" in graph:
                    note += f", to dense {graph['ari_to_dense']:.3f}, {dense['seconds'] / graph['seconds']:.1f}× faster"
                note += f" (load {graph['load_before']:.1f})"
            rows.append((label, dense["seconds"] if dense else None, parts, note))
    fig = Figure(figsize=(10, 0.9 + 0.8 * len(rows)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ticks, labels = [], []
    for i, (label, dense, parts, note) in enumerate(rows):
        y = 2.2 * i
        if dense is not None:
            ax.barh(y, dense, height=0.7, color="#999999", label="dense K×K" if i == 0 else None)
            ticks.append(y)
            labels.append(f"{label} dense")
        if parts is not None:
            left = 0.0
            for value, colour, name in zip(parts, ("#4477aa", "#ee6677", "#cccccc"),
                                           ("k-NN search", "RAC rounds", "rest (normalise, labels)")):
                ax.barh(y + 0.8, value, left=left, height=0.7, color=colour, label=name if i == 0 else None)
                left += value
            ax.text(left, y + 0.8, "  " + note, va="center", fontsize=8)
            ticks.append(y + 0.8)
            labels.append(f"{label} graph ({case.get('knn_index', 'k-NN')})")
    ax.set_yticks(ticks, labels)
    ax.invert_yaxis()
    ax.set_xlabel("wall seconds (2-core shared machine)")
    ax.set_title("HierarchicalSSE, average linkage + SSE: dense K×K state vs k-NN graph")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=_case, nargs="+", default=[(12936, 2048), (32621, 512), (100000, 512)],
                   help="NxD cases (add 300000x512 for the biggest)")
    p.add_argument("--dense-max", type=int, default=12936, help="run the dense path only up to this N")
    p.add_argument("--n-neighbors", type=int, default=20)
    p.add_argument("--knn-index", default="auto", choices=KNN_INDEXES)
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per clustering")
    p.add_argument("--gpu-bandwidth-tbs", type=float, default=3.0, help="model: effective gather bandwidth")
    p.add_argument("--gpu-tflops", type=float, default=50.0, help="model: fp32/tf32 matrix-product rate")
    p.add_argument("--gpu-round-overhead-s", type=float, default=0.05, help="model: launches and syncs per round")
    p.add_argument("--json", type=Path, default=None, help="write every figure here")
    p.add_argument("--png", type=Path, default=None, help="draw the wall times per case here")
    p.add_argument("--plot-from", type=Path, nargs="+", default=None, metavar="JSON",
                   help="draw --png from these saved --json files instead of running anything")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.plot_from:
        if args.png is None:
            raise SystemExit("--plot-from needs --png (where to draw)")
        runs = []
        for path in args.plot_from:
            try:
                runs.append((path.stem, json.loads(path.read_text())["cases"]))
            except (OSError, ValueError, KeyError) as exc:
                raise SystemExit(f"cannot read benchmark figures from {path}: {exc}") from None
        plot_cases(runs, args.png)
        print(f"wall times drawn in {args.png}")
        return
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} (shared machine)")
    print(f"== average linkage + SSE (lam={LAM}) down to the true number of identities; "
          f"graph path k={args.n_neighbors}, index {args.knn_index}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        for n, d in args.cases:
            results.append(run_case(n, d, args, Path(tmp)))
    model = million_model(results, args)
    if args.json:
        from ray_reid.atomic import atomic_write

        text = json.dumps({"cases": results, "million_model": model}, indent=2)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
        print(f"figures written to {args.json}")
    if args.png:
        plot_cases([("", results)], args.png)
        print(f"wall times drawn in {args.png}")


if __name__ == "__main__":
    main()
