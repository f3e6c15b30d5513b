#!/usr/bin/env python
"""Flat versus HNSW coarse quantizer: does each vector land in its nearest list?

    python benchmarks/coarse_quantizer.py --n 2000000 --nlist 4096 \
        --json benchmarks/results/coarse-quantizer-2m.json

On the data of ``benchmarks/search.py`` (``EmbeddingModel``: n/500 clusters around a shared 32-d
subspace; ``--clusters`` to change), it trains the IVF centroids with FAISS's k-means on
``TRAIN_POINTS_PER_LIST`` points per list for ``KMEANS_ITERATIONS`` rounds, twice: as mmsearch
does (maximum inner product: centroids are plain means) and with FAISS's default for inner
product (spherical: unit centroids). It assigns every vector to a list exactly (a flat quantizer,
as ``IVF4096``) for both, and by an HNSW graph over the spherical centroids (as
FAISS builds ``IVF4096_HNSW32`` for inner product) at several efSearch. For each
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
    x = np.concatenate([piece for _, piece in model.chunks(args.n)])  # the vectors search.py writes
    q = model.sample(args.queries, np.random.default_rng(12345))
    truth = exact_top_k(q, x, 10)

    m = min(args.n, TRAIN_POINTS_PER_LIST * args.nlist)
    sample = x[np.sort(np.random.default_rng(0).choice(args.n, m, replace=False))]
    centroids, train_s = {}, {}
    for kind, spherical in (("mips", False), ("spherical", True)):  # mmsearch's k-means, FAISS's default for IP
        t0 = time.perf_counter()
        ivf = faiss.index_factory(args.dim, f"IVF{args.nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter, ivf.cp.spherical = KMEANS_ITERATIONS, spherical
        ivf.train(sample)
        train_s[kind] = round(time.perf_counter() - t0, 1)
        centroids[kind] = ivf.quantizer.reconstruct_n(0, args.nlist)
    print(f"data {args.n} x {args.dim} ({len(model.centres)} clusters); {args.nlist} lists trained on {m} points in {train_s} s", flush=True)

    nprobes = [int(v) for v in args.nprobes.split(",")]
    quantizers = []
    for kind in ("mips", "spherical"):
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(centroids[kind])
        quantizers.append((f"flat, {kind} k-means", kind, flat, None))
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(centroids["spherical"])  # as FAISS trains an IVF_HNSW index for inner product
    hnsw_build_s = time.perf_counter() - t0
    quantizers += [(f"HNSW32 efSearch={ef}, spherical k-means", "spherical", hnsw, int(ef)) for ef in args.ef.split(",")]

    rows, exact, probes = [], {}, {}
    for name, kind, quantizer, ef in quantizers:
        if ef is not None:
            quantizer.hnsw.efSearch = ef
        else:  # a flat quantizer: the exact assignment, and the lists each query probes (found exactly) in every row
            probes[kind] = quantizer.search(q, max(nprobes))[1]
        t0 = time.perf_counter()
        lists = np.concatenate([quantizer.search(x[s:s + CHUNK], 1)[1][:, 0] for s in range(0, args.n, CHUNK)])
        seconds = time.perf_counter() - t0
        exact.setdefault(kind, lists)
        truth_lists = lists[truth]  # (queries, 10)
        row = {"quantizer": name, "kmeans": kind, "efSearch": ef, "n": args.n, "dim": args.dim, "nlist": args.nlist,
               "nearest_list_share": float(np.mean(lists == exact[kind])), "assign_s": round(seconds, 1),
               "ivf_recall_ceiling": {str(k): round(float(np.mean([np.isin(truth_lists[i], probes[kind][i, :k]).mean()
                                                                  for i in range(len(q))])), 4) for k in nprobes}}
        rows.append(row)
        print(f"{name:<36} nearest list {row['nearest_list_share']:.3f}  assign {seconds:6.1f} s  "
              + "  ".join(f"nprobe {k}: {v:.3f}" for k, v in row["ivf_recall_ceiling"].items()), flush=True)
    info = machine_info()
    print(f"machine: {describe(info)}")
    if args.json:
        write_json(args.json, {"machine": info, "train_s": train_s, "hnsw_build_s": round(hnsw_build_s, 1),
                               "clusters": len(model.centres), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
