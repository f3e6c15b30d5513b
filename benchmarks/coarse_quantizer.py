#!/usr/bin/env python
"""Flat versus HNSW coarse quantizer: does each vector land in its nearest list?

    python benchmarks/coarse_quantizer.py --n 2000000 --nlist 4096 \
        --json benchmarks/results/coarse-quantizer-2m.json

On the data of ``benchmarks/search.py`` (``EmbeddingModel``: n/500 clusters around a shared 32-d
subspace; ``--clusters`` to change), it trains the IVF centroids as mmsearch does (FAISS k-means
for inner product, ``TRAIN_POINTS_PER_LIST`` points per list, ``KMEANS_ITERATIONS`` rounds),
then assigns every vector to a list twice over: exactly (a flat quantizer, as ``IVF4096``) and
by an HNSW graph over the same centroids (as ``IVF4096_HNSW32``) at several efSearch. For each
assignment it reports the share of vectors placed in their nearest list, the time taken, and
the share of every query's exact top-10 inside the query's ``nprobe`` best lists (found
exactly): the recall ceiling of an IVF index whose vectors were added with that quantizer.
One process, one data set: the columns compare side by side.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, write_json  # noqa: E402
from search import CHUNK, EmbeddingModel  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import faiss

    from mmsearch.indexes import KMEANS_ITERATIONS, TRAIN_POINTS_PER_LIST, exact_top_k

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--clusters", type=int, default=None, help="clusters of the data [default: n/500, as search.py]")
    p.add_argument("--nlist", type=int, default=2048)
    p.add_argument("--ef", default="16,128", help="efSearch values of the HNSW quantizer")
    p.add_argument("--nprobes", default="1,4,16,64")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    model = EmbeddingModel(args.dim, clusters=args.clusters or max(100, args.n // 500))
    x = np.concatenate([model.sample(min(CHUNK, args.n - s), np.random.default_rng((0, i)))
                        for i, s in enumerate(range(0, args.n, CHUNK))])
    q = model.sample(args.queries, np.random.default_rng(12345))
    truth = exact_top_k(q, x, 10)

    t0 = time.perf_counter()
    ivf = faiss.index_factory(args.dim, f"IVF{args.nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = KMEANS_ITERATIONS
    m = min(args.n, TRAIN_POINTS_PER_LIST * args.nlist)
    ivf.train(x[np.sort(np.random.default_rng(0).choice(args.n, m, replace=False))])
    train_s = time.perf_counter() - t0
    centroids = ivf.quantizer.reconstruct_n(0, args.nlist)
    print(f"data {args.n} x {args.dim} ({len(model.centres)} clusters); {args.nlist} lists trained on {m} points in {train_s:.0f} s", flush=True)

    flat = faiss.IndexFlatIP(args.dim)
    flat.add(centroids)
    nprobes = [int(v) for v in args.nprobes.split(",")]
    _, probes = flat.search(q, max(nprobes))  # queries find their lists exactly in every column
    quantizers = [("flat", flat, None)]
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(centroids)
    hnsw_build_s = time.perf_counter() - t0
    quantizers += [(f"HNSW32 efSearch={ef}", hnsw, int(ef)) for ef in args.ef.split(",")]

    rows, exact = [], None
    for name, quantizer, ef in quantizers:
        if ef is not None:
            quantizer.hnsw.efSearch = ef
        t0 = time.perf_counter()
        lists = np.concatenate([quantizer.search(x[s:s + CHUNK], 1)[1][:, 0] for s in range(0, args.n, CHUNK)])
        seconds = time.perf_counter() - t0
        exact = lists if exact is None else exact
        truth_lists = lists[truth]  # (queries, 10)
        row = {"quantizer": name, "efSearch": ef, "n": args.n, "dim": args.dim, "nlist": args.nlist,
               "nearest_list_share": float(np.mean(lists == exact)), "assign_s": round(seconds, 1),
               "ivf_recall_ceiling": {str(k): round(float(np.mean([np.isin(truth_lists[i], probes[i, :k]).mean()
                                                                  for i in range(len(q))])), 4) for k in nprobes}}
        rows.append(row)
        print(f"{name:<22} nearest list {row['nearest_list_share']:.3f}  assign {seconds:6.1f} s  "
              + "  ".join(f"nprobe {k}: {v:.3f}" for k, v in row["ivf_recall_ceiling"].items()), flush=True)
    info = machine_info()
    print(f"machine: {describe(info)}")
    if args.json:
        write_json(args.json, {"machine": info, "train_s": round(train_s, 1), "hnsw_build_s": round(hnsw_build_s, 1),
                               "clusters": len(model.centres), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
