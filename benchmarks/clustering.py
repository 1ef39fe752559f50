"""Benchmark: HierarchicalSSE vs a port of the BUC/HCT per-step merge and scipy single linkage.

Every method clusters the same synthetic sphere-mixture features (751 identities, d = 2048,
see ``benchmarks/_sphere_mixture.py``) down to 751 clusters. Each (method, N) runs in a fresh
process so that peak memory is its own: peak RSS above the process's resident size before the
call, and, in a second run, the tracemalloc peak (NumPy registers its buffers with tracemalloc).
Timings come from the run without tracemalloc, which slows pure-Python loops.

The BUC/HCT port is written from the description in DESIGN.md §3: per step, a full N×N
float32 distance matrix, the diversity term λ·(n_A + n_B) from cluster sizes at the start of
the step, one full argsort of all N² pairs, then a Python loop over the sorted pairs merging
clusters until the step's merge budget is spent (costs go stale within the step).

    python -m benchmarks.clustering                       # N = 2000, 5000, 12936
    python -m benchmarks.clustering --sizes 2000 --buc-max-size 2000 --quality-size 2000
    python -m benchmarks.clustering --sizes 12936,32621 --buc-max-size 12936

Targets (CPU, 2 cores): HierarchicalSSE at N = 12,936 in <= 30 s and <= 2 GB peak, >= 20×
faster than the BUC-style port. Then the Jaccard/DBSCAN benchmark runs if
``benchmarks/clustering_jaccard.py`` provides ``run(sizes)``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gc
import importlib
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from sklearn.metrics import adjusted_rand_score
from tqdm import tqdm

from benchmarks._sphere_mixture import sphere_mixture
from ray_reid.clustering.hierarchical import HierarchicalSSE

N_IDS = 751
DIM = 2048
METHODS = ("hierarchical_sse", "buc_port", "scipy_single")


# --------------------------------------------------------------------------- the BUC/HCT port
def buc_step_port(x: np.ndarray, n_clusters: int, *, lam: float, steps: int = 1) -> np.ndarray:
    """BUC/HCT-style merging down to ``n_clusters`` in ``steps`` steps; labels 0..K-1.

    Deliberately the public algorithm's shape, not an optimised one: dense N×N float32
    distances, the stale size term, an N² int64 argsort per step and a Python pair loop.
    """
    n = x.shape[0]
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    budgets = np.diff(np.linspace(n, n_clusters, steps + 1).round().astype(int)) * -1
    for budget in budgets:
        roots = np.array([find(i) for i in range(n)])
        size = np.bincount(roots, minlength=n).astype(np.float32)
        sq = np.einsum("ij,ij->i", x, x).astype(np.float32)
        dist = (x @ x.T).astype(np.float32)
        dist *= -2
        dist += sq[:, None]
        dist += sq[None, :]
        # sample-pair cost = distance + λ (n_A + n_B) with the sizes frozen for the whole step
        cluster_size = size[roots]
        dist += lam * (cluster_size[:, None] + cluster_size[None, :])
        dist[roots[:, None] == roots[None, :]] = np.inf
        order = np.argsort(dist, axis=None)
        del dist
        merged = 0
        for idx in order:
            if merged == budget:
                break
            i, j = divmod(int(idx), n)
            ri, rj = find(i), find(j)
            if ri == rj:
                continue
            parent[max(ri, rj)] = min(ri, rj)
            merged += 1
        del order
    roots = np.array([find(i) for i in range(n)])
    return np.unique(roots, return_inverse=True)[1].reshape(-1)


def scipy_single(x: np.ndarray, n_clusters: int) -> np.ndarray:
    """scipy single linkage on squared distances (computed with BLAS, condensed) + fcluster maxclust."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 2.0 - 2.0 * (x.astype(np.float64) @ x.T.astype(np.float64))
    np.maximum(dist, 0, out=dist)
    np.fill_diagonal(dist, 0.0)
    condensed = squareform(dist, checks=False)
    del dist
    tree = linkage(condensed, method="single")
    return fcluster(tree, n_clusters, criterion="maxclust") - 1


# --------------------------------------------------------------------------- measurement
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _run_method(method: str, x: np.ndarray, params: dict) -> np.ndarray:
    if method == "hierarchical_sse":
        model = HierarchicalSSE(
            N_IDS, lam=params["lam"], regularizer=params["regularizer"], linkage="single", device="cpu"
        )
        return model.fit_predict(x)
    if method == "buc_port":
        return buc_step_port(x, N_IDS, lam=params["buc_lam"], steps=params["buc_steps"])
    if method == "scipy_single":
        return scipy_single(x, N_IDS)
    raise ValueError(f"unknown method {method!r}; valid: {METHODS}")


def _measure(method: str, data_path: str, params: dict, trace: bool) -> dict:
    """Runs in a fresh process: one method on the saved features, time + memory + ARI."""
    data = np.load(data_path)
    x, y = data["x"], data["y"]
    gc.collect()
    rss_before = _rss_bytes()
    if trace:
        tracemalloc.start()
    start, cpu_start = time.perf_counter(), time.process_time()
    labels = _run_method(method, x, params)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    out = {"seconds": seconds, "cpu": cpu, "ari": float(adjusted_rand_score(y, labels)), "k": int(len(np.unique(labels)))}
    if trace:
        out["traced_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    out["rss_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    return out


def _in_fresh_process(fn, *args):
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def _mb(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**20:8.0f}"


def bench_speed(sizes: list[int], args: argparse.Namespace, tmp: Path) -> None:
    params = {
        "lam": args.lam,
        "regularizer": args.regularizer,
        "buc_lam": args.buc_lam,
        "buc_steps": args.buc_steps,
    }
    print(
        f"\n== speed / memory: down to {N_IDS} clusters, d = {DIM}; HierarchicalSSE(single, "
        f"{args.regularizer}, lam={args.lam}); BUC port lam={args.buc_lam}, steps={args.buc_steps}"
    )
    for n in sizes:
        x, y = sphere_mixture(n, N_IDS, DIM)
        path = str(tmp / f"mixture_{n}.npz")
        np.savez(path, x=x, y=y)
        del x, y
        results = {}
        for method in METHODS:
            if method == "buc_port" and n > args.buc_max_size:
                print(f"  N={n}: BUC port skipped (N > --buc-max-size {args.buc_max_size})")
                continue
            if method == "scipy_single" and n > args.scipy_max_size:
                print(f"  N={n}: scipy skipped (N > --scipy-max-size {args.scipy_max_size})")
                continue
            res = _in_fresh_process(_measure, method, path, params, False)
            if not args.no_tracemalloc:
                res["traced_peak"] = _in_fresh_process(_measure, method, path, params, True)["traced_peak"]
            results[method] = res
            print(
                f"  N={n:6d} {method:17s} {res['seconds']:8.2f} s (cpu {res['cpu']:6.1f} s)  RSS peak +{_mb(res['rss_peak'])} MB  "
                f"traced peak {_mb(res.get('traced_peak'))} MB  ARI {res['ari']:.4f}  K={res['k']}",
                flush=True,
            )
        ours = results["hierarchical_sse"]
        for method in ("buc_port", "scipy_single"):
            if method in results:
                other = results[method]
                mem = ""
                if "traced_peak" in other and "traced_peak" in ours:
                    mem = f", traced memory {other['traced_peak'] / ours['traced_peak']:.2f}x"
                print(
                    f"  N={n:6d} {method} / hierarchical_sse: time {other['seconds'] / ours['seconds']:.2f}x "
                    f"(cpu {other['cpu'] / ours['cpu']:.2f}x){mem}"
                )
        os.remove(path)


def bench_quality(args: argparse.Namespace) -> None:
    """ARI by regulariser at the true K; a noisier mixture too, where plain single linkage starts to chain."""
    n = args.quality_size
    runs = [("none", 0.0)] + [(reg, lam) for reg in ("sse", "size", "delta_sse") for lam in args.quality_lams]
    for noise in args.quality_noise:
        x, y = sphere_mixture(n, N_IDS, DIM, noise=noise)
        print(f"\n== quality: ARI at the true K = {N_IDS}, N = {n}, mixture noise {noise} (single linkage)")
        for reg, lam in tqdm(runs, desc="quality", leave=False, disable=None):
            start = time.perf_counter()
            labels = HierarchicalSSE(N_IDS, lam=lam, regularizer=reg, device="cpu").fit_predict(x)
            sizes = np.bincount(labels)
            tqdm.write(
                f"  {reg:9s} lam={lam:<6g} ARI {adjusted_rand_score(y, labels):.4f}  largest cluster {sizes.max():5d}  "
                f"singletons {(sizes == 1).sum():4d}  ({time.perf_counter() - start:.1f} s)"
            )


def bench_jaccard(sizes: list[int]) -> None:
    try:
        module = importlib.import_module("benchmarks.clustering_jaccard")
    except ModuleNotFoundError as exc:
        if exc.name != "benchmarks.clustering_jaccard":
            raise
        print("\n== Jaccard/DBSCAN: benchmarks/clustering_jaccard.py not found, skipped")
        return
    if not hasattr(module, "run"):
        print("\n== Jaccard/DBSCAN: benchmarks/clustering_jaccard.py has no run(sizes), skipped")
        return
    print("\n== Jaccard/DBSCAN (benchmarks/clustering_jaccard.run)")
    module.run(sizes)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < N_IDS:
        raise argparse.ArgumentTypeError(f"sizes must be integers >= {N_IDS}, got {text!r}")
    return values


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=_int_list, default=[2000, 5000, 12936], help="N values (add 32621 if RAM allows)")
    p.add_argument("--buc-max-size", type=int, default=12936, help="run the BUC port only up to this N")
    p.add_argument("--scipy-max-size", type=int, default=12936, help="run scipy single linkage only up to this N")
    p.add_argument("--buc-steps", type=int, default=1, help="BUC/HCT steps used to reach the target")
    p.add_argument("--lam", type=float, default=0.05, help="HierarchicalSSE lambda for the timing runs")
    p.add_argument("--regularizer", default="sse", help="HierarchicalSSE regulariser for the timing runs")
    p.add_argument("--buc-lam", type=float, default=0.005, help="BUC diversity weight")
    p.add_argument("--no-tracemalloc", action="store_true", help="skip the second (traced) run of each method")
    p.add_argument("--quality-size", type=int, default=5000, help="N for the ARI comparison (0 skips it)")
    p.add_argument("--quality-lams", type=_float_list, default=[0.01, 0.05], help="lambda sweep for quality")
    p.add_argument(
        "--quality-noise", type=_float_list, default=[0.9, 1.5], help="mixture noise levels (0.9 = the timing data)"
    )
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-jaccard", action="store_true")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs (shared machine: noisy)")
    with tempfile.TemporaryDirectory(prefix="bench_clustering_") as tmp:
        if not args.skip_speed:
            bench_speed(args.sizes, args, Path(tmp))
    if args.quality_size:
        bench_quality(args)
    if not args.skip_jaccard:
        bench_jaccard(args.sizes)


if __name__ == "__main__":
    main()
