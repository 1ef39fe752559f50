"""evaluate_rank at Market-1501 and MSMT17 scale: counting vs sorting vs a per-query NumPy loop.

``evaluate_rank(method="count")`` (the default: one compiled pass per row counts the kept
entries before every true match) is timed against ``method="sort"`` (the previous
implementation, kept as the reference: sort each row's values, binary-search the matches)
on the same distance matrix, and the two results must be bit-identical.

The baseline is the straightforward protocol (torchreid style): for each query, argsort
its whole distance row, drop same-pid-same-camera and junk entries, cumsum the matches.
Both run in this process on the same distance matrix; the script checks they give the
same CMC and mAP and prints the time and peak-memory ratios. On MSMT17 the loop runs on
a random subset of queries and its time is extrapolated (the output says so); the
agreement check uses the fast path on that same subset.

Distances come from synthetic embeddings (identity centre + camera offset + noise, on the
unit sphere) with Market-like junk (-1) and distractor (0) fractions, so the rankings,
and hence the work per query, look like a real evaluation rather than uniform noise.

    python benchmarks/eval.py                     # Market + MSMT17, full size
    python benchmarks/eval.py --skip-msmt         # Market only
    python benchmarks/eval.py --scale 0.25        # every size scaled down
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np

from ray_reid.eval.rank import DEFAULT_MEMORY_BUDGET, compute_distmat, evaluate_rank


@dataclass(frozen=True)
class Scale:
    name: str
    num_query: int
    num_gallery: int
    num_ids: int
    num_cams: int


MARKET = Scale("Market-1501", 3_368, 15_913, 750, 6)
MSMT = Scale("MSMT17", 11_659, 82_161, 3_060, 15)


def synthetic_split(s: Scale, dim: int, seed: int, noise: float = 1.6):
    """Query/gallery features and labels; ~24% gallery junk and ~18% distractors as in Market."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((s.num_ids + 1, dim)).astype(np.float32)
    cam_offsets = 0.5 * rng.standard_normal((s.num_cams, dim)).astype(np.float32)
    q_pids = rng.integers(1, s.num_ids + 1, s.num_query)
    g_pids = rng.integers(1, s.num_ids + 1, s.num_gallery)
    kind = rng.random(s.num_gallery)
    g_pids[kind < 0.24] = -1
    g_pids[(kind >= 0.24) & (kind < 0.42)] = 0
    q_cams = rng.integers(0, s.num_cams, s.num_query)
    g_cams = rng.integers(0, s.num_cams, s.num_gallery)

    def feats(pids, cams):
        base = centres[np.clip(pids, 0, None)]
        # junk and distractors: each its own random person
        stray = pids <= 0
        base[stray] = rng.standard_normal((int(stray.sum()), dim)).astype(np.float32)
        f = base + cam_offsets[cams] + noise * rng.standard_normal((len(pids), dim)).astype(np.float32)
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    return feats(q_pids, q_cams), feats(g_pids, g_cams), q_pids, g_pids, q_cams, g_cams


def loop_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, kind="quicksort"):
    """The per-query reference: argsort the whole row of each query.

    torchreid uses NumPy's default (unstable) argsort, so equal distances come out in an
    arbitrary order; ``kind="stable"`` orders them by gallery index, as evaluate_rank does.
    """
    all_cmc, all_ap = [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind=kind)
        pids, cams = g_pids[order], g_camids[order]
        remove = ((pids == q_pids[i]) & (cams == q_camids[i])) | (pids == -1)
        raw = (pids[~remove] == q_pids[i]).astype(np.int32)
        if not raw.any():
            continue
        cmc = raw.cumsum()
        cmc[cmc > 1] = 1
        cmc = np.concatenate([cmc, np.full(max(0, max_rank - len(cmc)), cmc[-1])])[:max_rank]
        all_cmc.append(cmc.copy())  # a copy, not a view that would keep the whole row alive
        hits = raw.cumsum() / np.arange(1, len(raw) + 1)
        all_ap.append((hits * raw).sum() / raw.sum())
    return np.mean(np.asarray(all_cmc, dtype=np.float64), axis=0), float(np.mean(all_ap))


def measure(fn, *, memory: bool, cpu: list | None = None):
    """(result, seconds, peak traced bytes or None): time without tracing, then trace a second run."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    seconds = time.perf_counter() - t0
    if cpu is not None:
        cpu.append(time.process_time() - c0)
    peak = None
    if memory:
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, seconds, peak


def run_scale(s: Scale, args, rows):
    q_n, g_n = max(2, int(s.num_query * args.scale)), max(2, int(s.num_gallery * args.scale))
    s = Scale(s.name, q_n, g_n, max(2, int(s.num_ids * args.scale)), s.num_cams)
    print(f"\n== {s.name}: {s.num_query:,} queries x {s.num_gallery:,} gallery, {s.num_ids} ids, {s.num_cams} cams")
    qf, gf, q_pids, g_pids, q_cams, g_cams = synthetic_split(s, args.dim, args.seed)
    t0 = time.perf_counter()
    distmat = compute_distmat(qf, gf)
    print(f"compute_distmat ({args.dim}-d): {time.perf_counter() - t0:.2f} s, "
          f"distmat {distmat.nbytes / 2**30:.2f} GiB float32")

    def fast(d=distmat, qp=q_pids, qc=q_cams, method="count"):
        return evaluate_rank(d, qp, g_pids, qc, g_cams, max_rank=50, memory_budget=args.memory_budget, n_jobs=args.jobs,
                             progress=args.progress, method=method)

    fast(distmat[:2], q_pids[:2], q_cams[:2])  # compile the kernel (cached on disk after the first run)
    cpu: list = []
    load = os.getloadavg()[0]
    (cmc, m_ap), t_fast, mem_fast = measure(fast, memory=not args.no_memory, cpu=cpu)
    (s_cmc, s_map), t_sort, mem_sort = measure(lambda: fast(method="sort"), memory=False, cpu=cpu)
    same_as_sort = np.array_equal(cmc, s_cmc) and m_ap == s_map
    print(f"count: {t_fast:.2f} s wall, {cpu[0]:.2f} s CPU | sort (reference): {t_sort:.2f} s wall, {cpu[1]:.2f} s CPU"
          f" -> {t_sort / t_fast:.1f}x wall, {cpu[1] / cpu[0]:.1f}x CPU; bit-identical CMC and mAP: "
          f"{'yes' if same_as_sort else 'NO'} (load average {load:.1f} on {os.cpu_count()} CPUs)")

    n_loop = s.num_query if args.loop_queries is None else min(args.loop_queries, s.num_query)
    rng = np.random.default_rng(args.seed)
    subset = np.sort(rng.choice(s.num_query, n_loop, replace=False))
    d_sub = distmat[subset] if n_loop < s.num_query else distmat
    qp_sub, qc_sub = q_pids[subset], q_cams[subset]
    (loop_cmc, loop_map), t_loop_sub, mem_loop = measure(
        lambda: loop_evaluate(d_sub, qp_sub, g_pids, qc_sub, g_cams), memory=not args.no_memory
    )
    t_loop = t_loop_sub * s.num_query / n_loop
    note = "loop on all queries" if n_loop == s.num_query else (
        f"loop timed on {n_loop:,} random queries, extrapolated x{s.num_query / n_loop:.1f}")

    # Exact check: float32 distances do tie, and the default argsort orders ties
    # arbitrarily, so the exact comparison uses a stable loop on (a subset of) the queries.
    n_check = min(args.check_queries, s.num_query)
    check = np.sort(rng.choice(s.num_query, n_check, replace=False))
    ref_cmc, ref_map = loop_evaluate(distmat[check], q_pids[check], g_pids, q_cams[check], g_cams, kind="stable")
    sub_cmc, sub_map = evaluate_rank(distmat[check], q_pids[check], g_pids, q_cams[check], g_cams, max_rank=50)
    cmc_diff = float(np.abs(sub_cmc - ref_cmc).max())
    map_diff = abs(sub_map - ref_map)
    agree = cmc_diff < 1e-12 and map_diff < 1e-12
    if n_loop == s.num_query:
        note += f"; quicksort loop vs fast: |dmAP| {abs(loop_map - m_ap):.1e} (tie order)"
    print(f"fast : mAP {m_ap:.4f}  rank-1 {cmc[0]:.4f}  rank-5 {cmc[4]:.4f}  rank-10 {cmc[9]:.4f}")
    print(f"time : {note}")
    print(f"check: stable loop vs evaluate_rank on {n_check:,} queries: max |dCMC| {cmc_diff:.1e}, "
          f"|dmAP| {map_diff:.1e} -> {'SAME' if agree else 'DIFFERENT'}")
    torchreid_argsort_gib = s.num_query * s.num_gallery * 8 / 2**30
    print(f"(torchreid's up-front argsort of the whole matrix would hold {torchreid_argsort_gib:.2f} GiB of int64)")
    rows.append((s.name, t_fast, t_sort, t_loop, mem_fast, mem_loop, agree and same_as_sort, n_loop < s.num_query))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every size by this (default 1.0)")
    p.add_argument("--skip-msmt", action="store_true", help="Market-1501 scale only")
    p.add_argument("--dim", type=int, default=128, help="synthetic feature dimension (default 128)")
    p.add_argument("--msmt-loop-queries", type=int, default=1000,
                   help="queries the per-query loop runs on at MSMT17 scale (time extrapolated)")
    p.add_argument("--check-queries", type=int, default=500,
                   help="queries on which the stable loop checks evaluate_rank exactly (default 500)")
    p.add_argument("--memory-budget", type=int, default=DEFAULT_MEMORY_BUDGET, help="working bytes per chunk")
    p.add_argument("--jobs", type=int, default=1, help="threads for evaluate_rank (default 1)")
    p.add_argument("--no-memory", action="store_true", help="skip the traced (second) runs for peak memory")
    p.add_argument("--progress", action="store_true", help="tqdm bar for the fast path")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.scale <= 0:
        p.error(f"--scale must be > 0, got {args.scale}")

    rows = []
    args.loop_queries = None
    run_scale(MARKET, args, rows)
    if not args.skip_msmt:
        args.loop_queries = args.msmt_loop_queries
        run_scale(MSMT, args, rows)

    def mib(b):
        return "-" if b is None else f"{b / 2**20:,.0f} MiB"

    print(f"\n| scale | evaluate_rank (count) | sort (reference) | speed-up | per-query loop | speed-up | "
          f"peak mem (count) | peak mem (loop) | same result |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, t_fast, t_sort, t_loop, m_fast, m_loop, agree, extrap in rows:
        loop = f"{t_loop:.2f} s" + (" (extrap.)" if extrap else "")
        print(f"| {name} | {t_fast:.2f} s | {t_sort:.2f} s | {t_sort / t_fast:.1f}x | {loop} | {t_loop / t_fast:.1f}x | "
              f"{mib(m_fast)} | {mib(m_loop)} | {'yes' if agree else 'NO'} |")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("peak mem = tracemalloc peak of NumPy allocations during the call (distance matrix excluded).")
    if not all(r[6] for r in rows):
        raise SystemExit("evaluate_rank and the per-query loop disagree")


if __name__ == "__main__":
    main()
