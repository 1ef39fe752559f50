"""Images/s per worker for a training step and for feature extraction, 1 vs N DDP workers.

Runs without Ray (torch.distributed + gloo on CPU, NCCL on GPU) so it also runs on a GPU box
that has no Ray; the training step is the real one (ReidNet, cluster-memory loss with its
rank-synchronised momentum update). On a GPU it also compares fp32 with bf16 autocast +
channels_last. Inputs are random tensors: this measures the model step, not JPEG decoding.

    python benchmarks/train_throughput.py --workers 1 2
    python benchmarks/train_throughput.py --backbone resnet50 --height 256 --width 128 --batch 64 --amp
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray_reid.losses.cluster_memory import ClusterMemory  # noqa: E402
from ray_reid.models import ModelConfig, build_model  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _worker(rank: int, world: int, port: int, args, mode: dict, out) -> None:
    use_cuda = args.device == "cuda"
    device = torch.device(f"cuda:{rank}" if use_cuda else "cpu")
    if not use_cuda:
        torch.set_num_threads(max(1, args.threads // world))
    if world > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=world)
    torch.manual_seed(rank)
    model = build_model(ModelConfig(backbone=args.backbone, views=args.views)).to(device)
    fmt = torch.channels_last if mode["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=fmt)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.Adam(model.parameters(), lr=3.5e-4)
    memories = None  # built at the first step, from the width of each view's features
    x = torch.randn(args.batch, 3, args.height, args.width, device=device).to(memory_format=fmt)
    y = torch.randint(0, args.clusters, (args.batch,), device=device)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=mode["amp"])

    def train_step():
        nonlocal memories
        with torch.autocast(**amp):
            out = ddp(x)
        if memories is None:
            memories = {v: ClusterMemory.from_centroids(
                torch.nn.functional.normalize(torch.randn(args.clusters, f.shape[1], device=device), dim=1))
                for v, f in out.items()}
        loss = sum(memories[v](f.float(), y) for v, f in out.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for v, f in out.items():
            memories[v].update(f.detach().float(), y)

    @torch.no_grad()
    def extract_step():
        model.eval()
        with torch.autocast(**amp):
            model(x)
        model.train()

    results = {}
    for name, step in (("train", train_step), ("extract", extract_step)):
        for _ in range(args.warmup):
            step()
        _sync(device)
        if world > 1:
            dist.barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        results[name] = args.batch * args.steps / (time.perf_counter() - start)
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, results)
        dist.destroy_process_group()
    else:
        gathered = [results]
    if rank == 0:
        out.put(gathered)


def measure(world: int, args, mode: dict) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, args, mode, queue)) for r in range(world)]
    for p in procs:
        p.start()
    gathered = queue.get(timeout=3600)
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"benchmark worker exited with {p.exitcode}")
    per_worker = {k: sum(g[k] for g in gathered) / world for k in ("train", "extract")}
    return {"train_per_worker": per_worker["train"], "extract_per_worker": per_worker["extract"],
            "train_total": per_worker["train"] * world, "extract_total": per_worker["extract"] * world}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--views", default="global")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32, help="images per worker per step")
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads shared by workers")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--amp", action="store_true", help="also measure bf16 autocast + channels_last (GPU)")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda":
        args.workers = [w for w in args.workers if w <= torch.cuda.device_count()]
    modes = [{"name": "fp32", "amp": False, "channels_last": False}]
    if args.amp:
        modes.append({"name": "bf16+channels_last", "amp": True, "channels_last": True})
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU ({args.threads} threads)"
    print(f"{args.backbone} {args.views} {args.height}x{args.width}, batch {args.batch}/worker on {where}")
    print(f"{'mode':20}{'workers':>8}{'train img/s/wkr':>17}{'extract img/s/wkr':>19}{'train total':>13}"
          f"{'vs 1 wkr':>10}")
    for mode in modes:
        base = None
        for world in args.workers:
            r = measure(world, args, mode)
            base = base or r["train_total"]
            print(f"{mode['name']:20}{world:>8}{r['train_per_worker']:>17.1f}{r['extract_per_worker']:>19.1f}"
                  f"{r['train_total']:>13.1f}{r['train_total'] / base:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
