#!/usr/bin/env python
"""Exact search on a CUDA GPU with torch against FAISS's flat search on the CPU, side by side.

    python benchmarks/gpu_search.py --sizes 1000000,10000000 --batches 1,64,1024 \
        --json benchmarks/results/gpu_search.json            # on a GPU machine (benchmarks/gpu.sh runs it)
    python benchmarks/gpu_search.py --sizes 100000 --device cpu   # the same code on the CPU, to try it

For each size ``n`` (x ``--dim`` float32 vectors, L2-normalised) and query batch size it reports
queries per second of :class:`mmsearch.indexes.torch_exact.TorchFlat` (fp16 on CUDA, fp32 on
the CPU) and of FAISS ``IndexFlatIP`` on the CPU (``--cpu-max`` rows at most: 10M x 512 float32 is
20 GB, and one batch of 1 over it takes seconds on a CPU), the recall@10 of the torch path against
FAISS's exact answer, and the ratio to the memory-bandwidth limit: a batch must read every vector
once, so ``n * dim * bytes`` over the device's copy bandwidth (measured here with a large
``clone``) is the least time a batch can take; ``ratio = that bound / measured time`` (1.0: as
fast as the memory allows).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, write_json  # noqa: E402


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for a in range(0, n, 1 << 20):  # in blocks: 10M x 512 at once would need 40 GB of float64 noise
        block = rng.standard_normal((min(1 << 20, n - a), dim), dtype=np.float32)
        out[a : a + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def copy_bandwidth(torch: object, device: str) -> float:
    """Bytes per second a large device-to-device copy moves (read + write)."""
    x = torch.empty(1 << 28, dtype=torch.float16, device=device)  # 512 MiB
    for _ in range(2):
        x.clone()
    sync(torch, device)
    t0 = time.perf_counter()
    for _ in range(5):
        x.clone()
    sync(torch, device)
    return 5 * 2 * x.numel() * 2 / (time.perf_counter() - t0)


def sync(torch: object, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: object, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batches", default="1,64,1024")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cpu-max", type=int, default=1_000_000, help="largest n FAISS on the CPU is timed at")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/gpu_search.json"))
    args = parser.parse_args(argv)
    import faiss
    import torch

    from mmsearch.indexes.torch_exact import TorchFlat

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU here: use --device cpu to try the script", file=sys.stderr)
        return 2
    bandwidth = copy_bandwidth(torch, args.device)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        vectors = unit(n, args.dim, 0)
        flat = TorchFlat(vectors, device=args.device)
        bytes_per_row = flat.blocks[0].element_size() * args.dim
        cpu = None
        if n <= args.cpu_max:
            cpu = faiss.IndexFlatIP(args.dim)
            cpu.add(vectors)
        for batch in (int(b) for b in args.batches.split(",")):
            queries = unit(batch, args.dim, 1 + batch)
            seconds = timed(lambda: flat.search(queries, 10), args.repeat)
            row = {"n": n, "dim": args.dim, "batch": batch, "device": args.device, "dtype": str(flat.dtype).replace("torch.", ""),
                   "torch_qps": batch / seconds, "torch_ms_per_batch": seconds * 1e3,
                   "bandwidth_bound_ms": n * bytes_per_row / bandwidth * 1e3}
            row["ratio_to_bandwidth_bound"] = row["bandwidth_bound_ms"] / row["torch_ms_per_batch"]
            if cpu is not None:
                cpu_seconds = timed(lambda: cpu.search(queries, 10), max(1, args.repeat // 2))
                _, truth = cpu.search(queries, 10)
                _, got = flat.search(queries, 10)
                row.update({"faiss_cpu_qps": batch / cpu_seconds, "speedup": cpu_seconds / seconds,
                            "recall_at_10": float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got)]))})
            rows.append(row)
            print(json.dumps(row), flush=True)
        flat = cpu = vectors = None  # free the device and host copies before the next size
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    info = machine_info()
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    print(f"\n{describe(info)}; copy bandwidth {bandwidth / 1e9:.0f} GB/s on {args.device}")
    print(f"{'n':>10} {'batch':>6} {'torch q/s':>11} {'ms/batch':>9} {'bound ms':>9} {'ratio':>6} {'FAISS CPU q/s':>14} {'speed-up':>9} {'R@10':>5}")
    for r in rows:
        cpu_part = (f"{r['faiss_cpu_qps']:>14.1f} {r['speedup']:>9.1f} {r['recall_at_10']:>5.3f}" if "faiss_cpu_qps" in r
                    else f"{'-':>14} {'-':>9} {'-':>5}")
        print(f"{r['n']:>10} {r['batch']:>6} {r['torch_qps']:>11.1f} {r['torch_ms_per_batch']:>9.2f} {r['bandwidth_bound_ms']:>9.2f} "
              f"{r['ratio_to_bandwidth_bound']:>6.2f} {cpu_part}")
    write_json(args.json, {"machine": info, "copy_bandwidth_bytes_per_s": bandwidth, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
