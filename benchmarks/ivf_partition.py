#!/usr/bin/env python
"""How well an IVF partition keeps each query's true neighbours together, by number of lists.

    python benchmarks/ivf_partition.py --n 10000000 --nlists 4096,16384,65536 --device cuda \
        --json benchmarks/results/ivf-partition-10m.json

On the data of ``benchmarks/search.py`` (same ``EmbeddingModel``: n/500 clusters around a shared
32-d subspace), it trains inner-product k-means (as FAISS's IVF with METRIC_INNER_PRODUCT does:
assign by the largest inner product, centroid = mean; ``--train-per-list`` points per list,
``--iterations`` rounds), assigns every vector, and reports for each nprobe the share of every
query's exact top-10 that lies in its ``nprobe`` best lists. That share is the recall an IVF
index with exact vectors (IVF-Flat) reaches; compressed codes only lose more. Written with torch
so it runs on a GPU in seconds where FAISS's CPU k-means over 65536 lists takes hours on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, write_json  # noqa: E402
from search import EmbeddingModel  # noqa: E402


def generate(model: EmbeddingModel, n: int, seed: int, device, chunk: int = 1 << 20):  # noqa: ANN001, ANN201
    """``model.sample`` in torch, on ``device``: the same distribution, drawn by torch's generator."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    shared = torch.as_tensor(model.shared, device=device)
    centres = torch.as_tensor(model.centres, device=device)
    basis = torch.as_tensor(model.basis, device=device)
    spread = torch.as_tensor(model.spread, device=device)
    out = torch.empty((n, model.dim), device=device)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        labels = torch.randint(0, len(centres), (m,), generator=g, device=device)
        z = torch.randn((m, basis.shape[0]), generator=g, device=device) * spread[labels, None]
        x = shared + centres[labels] + z @ basis
        x += 0.3 * torch.randn((m, model.dim), generator=g, device=device) / model.dim ** 0.5
        out[start : start + m] = x / x.norm(dim=1, keepdim=True)
    return out


def assign(x, centroids, chunk: int = 1 << 15):  # noqa: ANN001, ANN201
    import torch

    out = torch.empty(len(x), dtype=torch.long, device=x.device)
    for start in range(0, len(x), chunk):
        out[start : start + chunk] = (x[start : start + chunk] @ centroids.T).argmax(1)
    return out


def kmeans_ip(sample, nlist: int, iterations: int, seed: int):  # noqa: ANN001, ANN201
    import torch

    g = torch.Generator(device=sample.device).manual_seed(seed)
    centroids = sample[torch.randperm(len(sample), generator=g, device=sample.device)[:nlist]].clone()
    for _ in range(iterations):
        labels = assign(sample, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, sample)
        counts = torch.bincount(labels, minlength=nlist).float()
        empty = counts == 0
        centroids = sums / counts.clamp(min=1)[:, None]
        if empty.any():  # FAISS splits big clusters; a random point is enough here
            centroids[empty] = sample[torch.randint(0, len(sample), (int(empty.sum()),), generator=g, device=sample.device)]
    return centroids


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--nlists", default="1024,4096,16384")
    p.add_argument("--nprobes", default="1,4,16,64,256")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--train-per-list", type=int, default=48)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # exact enough to rank neighbours
    device = torch.device(args.device)
    model = EmbeddingModel(args.dim, clusters=max(1, args.n // 500))
    t0 = time.perf_counter()
    x = generate(model, args.n, seed=1, device=device)
    q = generate(model, args.queries, seed=2, device=device)
    top = torch.full((args.queries, 10), -1e9, device=device), torch.zeros((args.queries, 10), dtype=torch.long, device=device)
    for start in range(0, args.n, 1 << 20):
        s = q @ x[start : start + (1 << 20)].T
        vals, ids = torch.cat([top[0], s], 1), torch.cat([top[1], torch.arange(start, start + s.shape[1], device=device).expand(len(q), -1)], 1)
        best = vals.topk(10, dim=1)
        top = best.values, ids.gather(1, best.indices)
    truth = top[1]
    print(f"data {args.n} x {args.dim} ({model.centres.shape[0]} clusters) and exact top-10 in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    nprobes = [int(v) for v in args.nprobes.split(",")]
    for nlist in [int(v) for v in args.nlists.split(",")]:
        t0 = time.perf_counter()
        g = torch.Generator(device=device).manual_seed(0)
        m = min(args.n, nlist * args.train_per_list)
        sample = x[torch.randperm(args.n, generator=g, device=device)[:m]]
        centroids = kmeans_ip(sample, nlist, args.iterations, seed=0)
        del sample
        lists = assign(x, centroids)
        order = (q @ centroids.T).argsort(1, descending=True)
        truth_lists = lists[truth]  # (queries, 10)
        sizes = torch.bincount(lists, minlength=nlist)
        row = {"n": args.n, "nlist": nlist, "train_points": m, "iterations": args.iterations,
               "largest_list": int(sizes.max()), "empty_lists": int((sizes == 0).sum()),
               "seconds": round(time.perf_counter() - t0, 1), "recall": {}}
        for nprobe in nprobes:
            if nprobe > nlist:
                continue
            probed = order[:, :nprobe]
            hit = (truth_lists[:, :, None] == probed[:, None, :]).any(-1).float().mean().item()
            row["recall"][str(nprobe)] = round(hit, 4)
            # share of the data an IVF search touches at this nprobe (list sizes vary)
            row.setdefault("scanned_share", {})[str(nprobe)] = round(float(sizes[probed].sum(1).float().mean() / args.n), 5)
        rows.append(row)
        print(f"nlist {nlist:6d}: " + ", ".join(f"nprobe {k} -> {v:.3f} (scans {row['scanned_share'][k]:.4f})" for k, v in row["recall"].items())
              + f"  [{row['seconds']} s]", flush=True)
    info = machine_info()
    print(f"machine: {describe(info)}")
    if args.json:
        write_json(args.json, {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
