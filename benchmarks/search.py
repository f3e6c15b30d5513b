"""Vector search side by side: every candidate FAISS index against exact search, plus a peer library.

    python benchmarks/search.py --n 100000 --dim 512 --json benchmarks/results/search-100k.json [--plot OUT.png]

Vectors have the structure of real embeddings (clusters of correlated,
L2-normalised vectors); queries are perturbed database vectors. For each index:
recall@10 against exact search, p50/p99 single-query latency, batch throughput,
build time and bytes per vector. `auto` marks the index mmsearch would choose
for this size (``mmsearch.indexes.choose_recipe``). One process, one data set,
so the ratios hold on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def clustered_vectors(n: int, dim: int, *, clusters: int = 1000, spread: float = 0.35, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        labels = rng.integers(0, clusters, stop - start)
        out[start:stop] = centres[labels] + spread * rng.standard_normal((stop - start, dim)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def queries_from(base: np.ndarray, n: int, *, noise: float = 0.1, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = base[rng.integers(0, len(base), n)] + noise * rng.standard_normal((n, base.shape[1])).astype(np.float32) / np.sqrt(base.shape[1])
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def index_bytes(index) -> int:  # noqa: ANN001
    import faiss

    with tempfile.NamedTemporaryFile(suffix=".faiss") as fh:
        faiss.write_index(index, fh.name)
        return os.path.getsize(fh.name)


def time_queries(search, queries: np.ndarray, k: int) -> tuple[np.ndarray, float, float, float]:  # noqa: ANN001
    lat = []
    ids = []
    for q in queries:
        t0 = time.perf_counter()
        _, i = search(q[None], k)
        lat.append((time.perf_counter() - t0) * 1000)
        ids.append(i[0])
    t0 = time.perf_counter()
    search(queries, k)
    qps = len(queries) / (time.perf_counter() - t0)
    return np.stack(ids), float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), qps


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids.tolist(), truth.tolist())]))


def main() -> None:
    import faiss

    from mmsearch.indexes import IndexRecipe, VectorIndex, choose_recipe

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--max-memory-mb", type=int, default=None)
    parser.add_argument("--opq", action="store_true", help="also try OPQ-rotated IVF-PQ (slow to train on 2 cores)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    base = clustered_vectors(args.n, args.dim)
    queries = queries_from(base, args.queries)
    print(f"data: {args.n} x {args.dim} clustered unit vectors in {time.perf_counter() - t0:.1f}s; {args.queries} queries")
    budget = None if args.max_memory_mb is None else args.max_memory_mb << 20
    auto = choose_recipe(args.n, args.dim, max_memory_bytes=budget)
    nlist = int(2 ** round(np.log2(max(64.0, 4 * np.sqrt(args.n)))))
    m = 64
    candidates = [
        IndexRecipe("Flat"),
        IndexRecipe("HNSW32,Flat", {"efSearch": 128, "efConstruction": 80}),
        IndexRecipe(f"IVF{nlist},Flat", {"nprobe": 32}),
        IndexRecipe(f"IVF{nlist},PQ{m}", {"nprobe": 32}),
    ]
    if args.opq:
        candidates.append(IndexRecipe(f"OPQ{m},IVF{nlist},PQ{m}", {"nprobe": 32}))
    if auto.factory not in {c.factory for c in candidates}:
        candidates.append(auto)
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(base)
    _, truth = exact.search(queries, args.k)

    rows = []
    for recipe in candidates:
        t0 = time.perf_counter()
        built = VectorIndex.build(base, recipe=recipe)
        build_s = time.perf_counter() - t0
        ids, p50, p99, qps = time_queries(built.search, queries, args.k)
        rows.append(
            {
                "index": recipe.factory,
                "auto": recipe.factory == auto.factory,
                "n": args.n,
                "dim": args.dim,
                "recall_at_10": recall(ids, truth),
                "p50_ms": p50,
                "p99_ms": p99,
                "batch_qps": qps,
                "build_s": build_s,
                "bytes_per_vector": index_bytes(built.index) / args.n,
            }
        )
        print(f"  {recipe.factory:<28} done")
        del built
    try:  # a peer library on the same data
        import hnswlib

        t0 = time.perf_counter()
        peer = hnswlib.Index(space="ip", dim=args.dim)
        peer.init_index(max_elements=args.n, ef_construction=80, M=32)
        peer.add_items(base, num_threads=os.cpu_count())
        peer.set_ef(128)
        build_s = time.perf_counter() - t0

        def peer_search(q: np.ndarray, k: int):  # noqa: ANN202
            labels, dist = peer.knn_query(q, k=k)
            return 1 - dist, labels

        ids, p50, p99, qps = time_queries(peer_search, queries, args.k)
        with tempfile.NamedTemporaryFile(suffix=".bin") as fh:
            peer.save_index(fh.name)
            size = os.path.getsize(fh.name)
        rows.append(
            {"index": "hnswlib M=32 ef=128", "auto": False, "n": args.n, "dim": args.dim, "recall_at_10": recall(ids, truth),
             "p50_ms": p50, "p99_ms": p99, "batch_qps": qps, "build_s": build_s, "bytes_per_vector": size / args.n}
        )
    except ImportError:
        print("  hnswlib not installed (pip install -e '.[bench]'): peer skipped")

    machine = f"{platform.platform()}, {os.cpu_count()} CPUs, faiss {faiss.__version__}"
    print(f"\nmachine: {machine}")
    print(f"{'index':<30}{'auto':>5}{'recall@10':>10}{'p50 ms':>9}{'p99 ms':>9}{'batch q/s':>11}{'build s':>9}{'B/vec':>8}")
    for r in rows:
        print(
            f"{r['index']:<30}{'*' if r['auto'] else '':>5}{r['recall_at_10']:>10.3f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['batch_qps']:>11.0f}{r['build_s']:>9.1f}{r['bytes_per_vector']:>8.0f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for r in rows:
            ax.scatter(r["p50_ms"], r["recall_at_10"], label=r["index"] + (" (auto)" if r["auto"] else ""))
        ax.set_xscale("log")
        ax.set_xlabel("p50 single-query latency (ms)")
        ax.set_ylabel("recall@10 vs exact")
        ax.set_title(f"{args.n} x {args.dim}, {os.cpu_count()} CPUs")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
