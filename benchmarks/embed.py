"""embed at scale on this machine: images/s, peak RSS flat in the number of images, kill-and-rerun.

Generates N Market-named JPEG crops (``0001_c1s1_000001_01.jpg`` …), a small random-init
checkpoint, then, each case in a fresh process (so every peak is its own):

1. the Ray Data pipeline on the first 5,000 and on all 20,000 crops: wall time, images/s and
   the peak RSS of the driver plus every Ray process it started (sampled every 0.2 s);
   target: RSS(20,000) / RSS(5,000) within 1.2;
2. the same job in-process (no Ray) on the 5,000: the baseline the pipeline's images/s is
   compared with;
3. the pipeline on the 20,000 killed (SIGKILL) once a third of the shards exist, then rerun:
   it must write only the missing shards and equal the uninterrupted run exactly.

    python benchmarks/embed.py [--sizes 5000 20000] [--height 64 --width 32] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def generate_crops(folder: Path, n: int, height: int, width: int, seed: int = 0) -> None:
    """``n`` small JPEG crops: a smooth random colour field per identity plus noise (decode cost of real crops)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.jpg")))
    if have >= n:
        return
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (max(1, n // 20), 4, 2, 3), dtype=np.uint8)
    for i in range(have, n):
        pid, cam = i // 20, 1 + i % 6
        img = Image.fromarray(base[pid]).resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(img, dtype=np.int16) + rng.integers(-20, 21, (height, width, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            folder / f"{pid:04d}_c{cam}s1_{i:06d}_01.jpg", quality=90)


def write_checkpoint(folder: Path, height: int, width: int) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from reid_checkpoint import write_reid_checkpoint

    if not (folder / "state.pt").exists():
        write_reid_checkpoint(folder, height=height, width=width)
    return folder


def _pss(pid: int) -> int | None:
    """Proportional set size (bytes) of ``pid``: shared pages split between their users, so a sum is the true total."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _tree_sample() -> tuple[int, int, dict[int, float]]:
    """(RSS, PSS) in bytes summed over this process and all its descendants, and each one's CPU seconds, from /proc.

    The RSS sum counts every shared page (libraries, the object store's shared memory) once per
    process that maps it, so it overstates a pipeline of a dozen Ray processes; the PSS sum splits
    shared pages among their users and is what the machine actually holds (RSS where PSS is unreadable).
    """
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    cpu: dict[int, float] = {}
    page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as fh:
                rss[int(entry)] = int(fh.read().split()[1]) * page
            cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    total_rss = total_pss = 0
    todo, tree_cpu = [os.getpid()], {}
    while todo:
        pid = todo.pop()
        total_rss += rss.get(pid, 0)
        tree_cpu[pid] = cpu.get(pid, 0.0)
        pss = _pss(pid)
        total_pss += rss.get(pid, 0) if pss is None else pss
        todo += children.get(pid, [])
    return total_rss, total_pss, tree_cpu


def case(args: argparse.Namespace) -> None:
    """One measured run (a child process): prints one JSON line."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from ray_reid.inference.embedding import EmbedConfig

    peak = [0, 0]
    cpu: dict[int, float] = {}  # last CPU seconds seen per process (Ray workers come and go)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss, pss, seen = _tree_sample()
            peak[:] = max(peak[0], rss), max(peak[1], pss)
            cpu.update(seen)
            stop.wait(0.25)

    threading.Thread(target=sample, daemon=True).start()
    cfg = EmbedConfig(shard_size=args.shard_size, batch_size=args.batch_size)
    t0 = time.perf_counter()
    if args.mode == "inprocess":
        from ray_reid.inference.embedding import embed_in_process

        summary = embed_in_process(args.checkpoint, args.images, args.out, cfg, progress=False)
    else:
        import ray

        from ray_reid.distributed.embed import embed_images

        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        summary = embed_images(args.checkpoint, args.images, args.out, cfg, progress=False)
        ray.shutdown()
    seconds = time.perf_counter() - t0
    stop.set()
    own = resource.getrusage(resource.RUSAGE_SELF)
    cpu[os.getpid()] = own.ru_utime + own.ru_stime
    print(json.dumps({"images": summary.num_images, "embedded": summary.embedded, "seconds": seconds,
                      "images_per_s": summary.embedded / seconds, "peak_rss_gb": peak[0] / 2**30,
                      "peak_pss_gb": peak[1] / 2**30, "cpu_seconds": sum(cpu.values()),
                      "shards_written": summary.shards_written, "shards_skipped": summary.shards_skipped,
                      "load": os.getloadavg()[0]}), flush=True)


def _child(mode: str, images: Path, out: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, __file__, "--case", mode, "--images", str(images), "--out", str(out),
            "--checkpoint", str(args.checkpoint), "--shard-size", str(args.shard_size),
            "--batch-size", str(args.batch_size), "--cpus", str(args.cpus)]


def run_child(mode: str, images: Path, out: Path, args: argparse.Namespace) -> dict:
    done = subprocess.run(_child(mode, images, out, args), capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"{mode} on {images} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def kill_and_rerun(images: Path, work: Path, whole: Path, args: argparse.Namespace) -> dict:
    """SIGKILL the pipeline once a third of its shards exist, rerun, compare with the uninterrupted output."""
    from ray_reid.inference.shards import read_embeddings

    out = work / "killed"
    n_shards = -(-len(list(images.glob("*.jpg"))) // args.shard_size)
    proc = subprocess.Popen(_child("ray", images, out, args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while proc.poll() is None and len(list(out.glob("part-*.parquet"))) < max(1, n_shards // 3):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started (its own session)
    proc.wait()
    at_kill = sorted(p.name for p in out.glob("part-*.parquet"))
    rerun = run_child("ray", images, out, args)
    a, b = read_embeddings(whole), read_embeddings(out)
    # Ray Data cuts batches where its blocks fall, so a shard may be embedded in other batch sizes
    # than before: equal within float32 rounding of the CPU kernels, not necessarily bit for bit.
    diff = float(np.abs(a.features["global"] - b.features["global"]).max()) if len(a) == len(b) else float("inf")
    equal = list(a.paths) == list(b.paths) and diff <= 1e-5
    return {"shards": n_shards, "at_kill": len(at_kill), "rerun_written": rerun["shards_written"],
            "rerun_skipped": rerun["shards_skipped"], "equal": equal, "max_abs_diff": diff}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--shard-size", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    ap.add_argument("--work", default=None, help="folder for crops and outputs (default: a temp folder)")
    ap.add_argument("--no-kill", action="store_true", help="skip the kill-and-rerun check")
    ap.add_argument("--case", choices=("ray", "inprocess"), help=argparse.SUPPRESS)
    ap.add_argument("--images", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.case:
        args.mode = args.case
        case(args)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="embed_bench_"))
    print(f"embed benchmark in {work}: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"crops {args.height}x{args.width}, ResNet-18 random init, shards of {args.shard_size}", flush=True)
    args.checkpoint = write_checkpoint(work / "run" / "checkpoint_000000", args.height, args.width)
    folders = {}
    for n in sorted(args.sizes):
        folders[n] = work / f"crops_{n}"
        generate_crops(folders[n], n, args.height, args.width)
    small, large = min(args.sizes), max(args.sizes)
    results = {}
    for n in sorted(args.sizes):
        results[n] = run_child("ray", folders[n], work / f"out_{n}", args)
        r = results[n]
        print(f"Ray Data pipeline, {n:>6} crops: {r['seconds']:7.1f} s, {r['images_per_s']:6.1f} images/s, "
              f"peak memory {r['peak_pss_gb']:.2f} GB PSS / {r['peak_rss_gb']:.2f} GB RSS summed (driver + Ray processes), "
              f"CPU {r['cpu_seconds']:.0f} s, load {r['load']:.1f}", flush=True)
    base = run_child("inprocess", folders[small], work / f"inproc_{small}", args)
    print(f"in-process baseline, {small:>6} crops: {base['seconds']:7.1f} s, {base['images_per_s']:6.1f} images/s, "
          f"peak memory {base['peak_pss_gb']:.2f} GB PSS / {base['peak_rss_gb']:.2f} GB RSS, CPU {base['cpu_seconds']:.0f} s", flush=True)
    ratio = results[large]["peak_rss_gb"] / results[small]["peak_rss_gb"]
    ratio_pss = results[large]["peak_pss_gb"] / results[small]["peak_pss_gb"]
    print(f"peak memory ratio {large} / {small} crops: RSS {ratio:.2f}, PSS {ratio_pss:.2f} "
          f"(target <= 1.20: {'met' if max(ratio, ratio_pss) <= 1.2 else 'NOT met'})")
    print(f"images/s ratio pipeline / in-process at {small}: "
          f"{results[small]['images_per_s'] / base['images_per_s']:.2f}")
    if not args.no_kill:
        k = kill_and_rerun(folders[large], work, work / f"out_{large}", args)
        ok = k["rerun_written"] == k["shards"] - k["at_kill"] and k["rerun_skipped"] == k["at_kill"] and k["equal"]
        print(f"killed at {k['at_kill']}/{k['shards']} shards; rerun wrote {k['rerun_written']}, kept "
              f"{k['rerun_skipped']}; equal to the uninterrupted run: {k['equal']} (max abs diff {k['max_abs_diff']:.1e}; "
              f"{'met' if ok else 'NOT met'})")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
