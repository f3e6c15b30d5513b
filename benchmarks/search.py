"""Vector search side by side: candidate FAISS indexes and a peer library against exact search.

    python benchmarks/search.py --n 1000000 --dim 512 --json benchmarks/results/search-1m.json \
        --plot benchmarks/results/search-1m.png

Data with the structure of real embeddings: L2-normalised vectors around many
cluster centres, varying along a shared low-dimensional subspace (real CLIP
vectors have an intrinsic dimension far below 512), plus a little isotropic
noise. Two query sets, neither copies of indexed vectors: ``in-distribution``,
fresh draws from the same model (an image query); ``text-like``, across the
modality gap as CLIP's text vectors lie apart from its image vectors: ``0.8 t +
0.6 c + 0.7 n`` normalised, with ``t`` a text direction shared by all queries
and orthogonal to the shared image direction (the shift), ``c`` the content of
a fresh draw (cluster centre and variation, without the shared direction,
normalised) and ``n`` isotropic noise (the spread): cosine ~0.4 with the draw it
was made from, as a caption with its picture. The vectors are generated in chunks into a memory-mapped file, so
sizes beyond memory (10M x 512 is 20 GB of float32) work: exact ground truth
is computed by streaming, and indexes are built by adding chunks.

For each index: recall@10 against exact search, p50/p99 single-query latency
(both query sets), batch throughput, build time and bytes per vector. ``auto``
marks the index mmsearch selects (``choose_recipe`` plus the tuning in
``VectorIndex.build``) for this size and ``--max-memory-mb``, tuned as
``mmsearch index`` tunes it: on indexed vectors and on 200 query probes (here
text-like vectors drawn apart from the measured ones; in mmsearch the encoder's
text vectors of generic captions, ``mmsearch.probes``); the same index tuned on
indexed vectors only, as before issue #18, is the row after it. IVF and HNSW candidates are also swept
over nprobe / efSearch for the recall-versus-latency plot. One process, one
data set, one query set: the ratios hold on a noisy machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, write_json  # noqa: E402

CHUNK = 1 << 18
PROBES = 200  # query probes the auto index is tuned on, as mmsearch.probes gives an index


class EmbeddingModel:
    """Clustered, low-intrinsic-dimension unit vectors, generated reproducibly in chunks.

    x = shared direction (0.8) + cluster centre (1.0) + variation along a shared
    32-d subspace (0.5 to 1.0, per cluster) + isotropic noise (0.3), then
    L2-normalised: vectors of different clusters have a cosine near 0.3, as unrelated
    CLIP image embeddings do, and those of one cluster 0.6 to 0.8.
    """

    def __init__(self, dim: int, *, clusters: int, rank: int = 32, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.seed = dim, seed
        unit = lambda a: (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
        self.shared = 0.8 * unit(rng.standard_normal(dim))
        self.centres = unit(rng.standard_normal((clusters, dim)))
        self.basis = unit(rng.standard_normal((rank, dim)))
        self.spread = (rng.uniform(0.5, 1.0, clusters) / np.sqrt(rank)).astype(np.float32)
        text = rng.standard_normal(dim)
        g = unit(self.shared)
        self.text_dir = unit(text - (text @ g) * g)  # the text side of the modality gap, orthogonal to the shared direction

    def content(self, n: int, rng: np.random.Generator, labels: np.ndarray | None = None) -> np.ndarray:
        """``n`` draws without the shared direction, not normalised: cluster centre, variation, noise."""
        labels = rng.integers(0, len(self.centres), n) if labels is None else np.asarray(labels)
        z = rng.standard_normal((n, self.basis.shape[0])).astype(np.float32) * self.spread[labels, None]
        return self.centres[labels] + z @ self.basis + 0.3 * rng.standard_normal((n, self.dim)).astype(np.float32) / np.sqrt(self.dim)

    def sample(self, n: int, rng: np.random.Generator, labels: np.ndarray | None = None) -> np.ndarray:
        """``n`` vectors; ``labels`` (n cluster numbers) fixes their clusters, else they are drawn."""
        x = self.shared + self.content(n, rng, labels)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def text_like(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` text-like queries (see the module): ``0.8 t + 0.6 c + 0.7 n`` normalised around fresh
        draws; and the cosine of each with the draw it was made from."""
        unit = lambda a: (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
        content = self.content(n, rng)
        q = unit(0.8 * self.text_dir + 0.6 * unit(content) + 0.7 * unit(rng.standard_normal((n, self.dim))))
        return q, np.einsum("ij,ij->i", q, unit(self.shared + content))

    def chunks(self, n: int):  # noqa: ANN201
        """The ``n`` base vectors as (start, array) pieces of ``CHUNK`` rows, each piece seeded by its number."""
        for i, start in enumerate(range(0, n, CHUNK)):
            yield start, self.sample(min(CHUNK, n - start), np.random.default_rng((self.seed, i)))

    def write(self, n: int, path: Path) -> np.memmap:
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, self.dim))
        for start, piece in self.chunks(n):
            out[start:start + len(piece)] = piece
        out.flush()
        return np.load(path, mmap_mode="r")


def index_bytes(index) -> int:  # noqa: ANN001
    import faiss

    with tempfile.NamedTemporaryFile(suffix=".faiss") as fh:
        faiss.write_index(index, fh.name)
        return os.path.getsize(fh.name)


def time_queries(search, queries: np.ndarray, k: int) -> dict:  # noqa: ANN001
    lat, ids = [], []
    search(queries[:5], k)  # warm up
    for q in queries:
        t0 = time.perf_counter()
        _, i = search(q[None], k)
        lat.append((time.perf_counter() - t0) * 1000)
        ids.append(i[0])
    t0 = time.perf_counter()
    search(queries, k)
    qps = len(queries) / (time.perf_counter() - t0)
    return {"ids": np.stack(ids), "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)), "batch_qps": qps}


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids.tolist(), truth.tolist())]))


def sweep(vindex, key: str, values: list[int], queries: np.ndarray, truth: np.ndarray, k: int) -> list[dict]:  # noqa: ANN001
    import faiss

    points = []
    ps = faiss.ParameterSpace()
    for value in values:
        ps.set_index_parameter(vindex.index, key, value)
        t = time_queries(vindex.search, queries[:200], k)
        points.append({key: value, "recall_at_10": recall(t["ids"], truth[:200]), "p50_ms": t["p50_ms"]})
    vindex._apply_params()  # back to the recipe's own setting
    return points


def candidates(n: int, dim: int, *, opq: bool, hnsw: bool) -> list:
    from mmsearch.indexes import IndexRecipe, nlist_for

    quantizer = f"IVF{nlist_for(n)}"  # as choose_recipe does
    raw_fits = n * dim * 4 <= 0.6 * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    out = []
    if raw_fits:
        out += [IndexRecipe("Flat"), IndexRecipe(f"{quantizer},Flat", {"nprobe": 16})]
        if hnsw:
            out.append(IndexRecipe("HNSW32,Flat", {"efSearch": 64, "efConstruction": 40}))
    out += [
        IndexRecipe(f"{quantizer},SQ8", {"nprobe": 16}),
        IndexRecipe(f"{quantizer},PQ{dim // 4}x4fs,Refine(SQ8)", {"nprobe": 16, "k_factor_rf": 8}),
        IndexRecipe(f"{quantizer},PQ{dim // 8}", {"nprobe": 16}),
    ]
    if opq:
        out.append(IndexRecipe(f"OPQ{dim // 8},{quantizer},PQ{dim // 8}", {"nprobe": 16}))
    return out


def main() -> None:
    from mmsearch.indexes import SEARCH_PARAMS, IndexRecipe, VectorIndex, choose_recipe, exact_top_k

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="recall-versus-latency PNG")
    parser.add_argument("--max-memory-mb", type=int, default=None, help="budget for the auto index [default: half of free memory]")
    parser.add_argument("--latency-ms", type=float, default=10.0, help="latency target for the auto index")
    parser.add_argument("--opq", action="store_true", help="also try OPQ-rotated IVF-PQ (slow to train on 2 cores)")
    parser.add_argument("--no-hnsw", action="store_true", help="skip FAISS's HNSW (its build takes long on 2 cores at 1M+)")
    parser.add_argument("--no-peer", action="store_true", help="skip the peer library (hnswlib)")
    parser.add_argument("--only-auto", action="store_true", help="measure the auto index (and exact ground truth) only")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the memory-mapped vectors go [default: a temp dir]")
    args = parser.parse_args()

    info = machine_info()
    work = Path(tempfile.mkdtemp(prefix="mmsearch-search-", dir=args.work_dir))
    try:
        t0 = time.perf_counter()
        model = EmbeddingModel(args.dim, clusters=max(100, args.n // 500))
        base = model.write(args.n, work / "base.npy")
        queries = model.sample(args.queries, np.random.default_rng(12345))
        text_queries, source_cos = model.text_like(args.queries, np.random.default_rng(23456))
        probes, _ = model.text_like(PROBES, np.random.default_rng(34567))  # held out from the measured ones
        gen_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        truth = exact_top_k(queries, base, args.k)
        text_truth = exact_top_k(text_queries, base, args.k)
        print(f"data: {args.n} x {args.dim} in {gen_s:.1f}s; exact top-{args.k} of {args.queries} + {args.queries} queries in "
              f"{time.perf_counter() - t0:.1f}s; text-like queries: cosine {source_cos.mean():.3f} with their source")

        budget = None if args.max_memory_mb is None else args.max_memory_mb << 20
        auto = choose_recipe(args.n, args.dim, max_memory_bytes=budget, latency_ms=args.latency_ms)
        todo = [] if args.only_auto else candidates(args.n, args.dim, opq=args.opq, hnsw=not args.no_hnsw)
        todo = [r for r in todo if r.factory != auto.factory] + [auto]
        rows = []

        def measured(built: VectorIndex, label: str, is_auto: bool, build_s: float) -> dict:
            timed = time_queries(built.search, queries, args.k)
            text = time_queries(built.search, text_queries, args.k)
            row = {
                "index": label, "auto": is_auto, "n": args.n, "dim": args.dim,
                "params": {k: v for k, v in built.recipe.params.items() if k in SEARCH_PARAMS},
                "recall_at_10": recall(timed["ids"], truth), "p50_ms": timed["p50_ms"], "p99_ms": timed["p99_ms"],
                "batch_qps": timed["batch_qps"], "build_s": build_s, "bytes_per_vector": index_bytes(built.index) / args.n,
                "text_recall_at_10": recall(text["ids"], text_truth), "text_p50_ms": text["p50_ms"], "text_p99_ms": text["p99_ms"],
            }
            if "recall_at_10" in built.recipe.params:
                row["tuned_recall_at_10"] = built.recipe.params.get("recall_at_10")
                row["tuned_query_recall_at_10"] = built.recipe.params.get("query_recall_at_10")
            if "nprobe" in row["params"]:
                row["sweep"] = sweep(built, "nprobe", [v for v in (1, 2, 4, 8, 16, 32, 64, 128) if v <= built._nlist()], queries, truth, args.k)
            elif "efSearch" in row["params"]:
                row["sweep"] = sweep(built, "efSearch", [16, 32, 64, 128, 256], queries, truth, args.k)
            return row

        for recipe in todo:
            is_auto = recipe is auto
            print(f"  {recipe.factory} ({'auto, tuned' if is_auto else 'fixed parameters'}) ...", flush=True)
            t0 = time.perf_counter()
            # the other candidates keep their textbook parameters (nprobe 16, efSearch 64): no tuning
            built = VectorIndex.build(base, recipe=recipe, tune=is_auto, queries=probes if is_auto else None)
            build_s = time.perf_counter() - t0
            rows.append(measured(built, recipe.factory, is_auto, build_s))
            if is_auto and recipe.factory != "Flat":  # the same trained index, tuned as before issue #18
                params = {k: v for k, v in built.recipe.params.items() if k not in ("query_recall_at_10", "query_probes")}
                built.recipe = IndexRecipe(built.recipe.factory, params, built.recipe.chosen_for)
                built._tune(base)
                rows.append(measured(built, f"{recipe.factory} (tuned on indexed vectors only)", False, build_s))
            del built
        if not args.only_auto and not args.no_peer:
            rows += _peer_hnswlib(base, queries, truth, args.k)

        print(f"\nmachine: {describe(info)}")
        print("recall@10 and single-query latency for in-distribution queries, then for text-like ones (see the module)")
        print(f"{'index':<58}{'auto':>5}{'params':>26}{'recall@10':>10}{'p50 ms':>9}{'p99 ms':>9}{'text r@10':>10}{'p50 ms':>9}"
              f"{'p99 ms':>9}{'batch q/s':>11}{'build s':>9}{'B/vec':>8}")
        for r in rows:
            params = ",".join(f"{k}={v}" for k, v in r["params"].items())
            print(f"{r['index']:<58}{'*' if r['auto'] else '':>5}{params:>26}{r['recall_at_10']:>10.3f}{r['p50_ms']:>9.2f}"
                  f"{r['p99_ms']:>9.2f}{r.get('text_recall_at_10', float('nan')):>10.3f}{r.get('text_p50_ms', float('nan')):>9.2f}"
                  f"{r.get('text_p99_ms', float('nan')):>9.2f}{r['batch_qps']:>11.0f}{r['build_s']:>9.1f}{r['bytes_per_vector']:>8.0f}")
        for r in rows:
            r["machine"] = info
        if args.json:
            write_json(args.json, rows)
        if args.plot:
            plot(rows, args.plot, f"{args.n:,} x {args.dim}, {info.get('processor')}, {info['cpu_count']} CPUs")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _peer_hnswlib(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int) -> list[dict]:
    try:
        import hnswlib
    except ImportError:
        print("  hnswlib not installed (pip install -e '.[bench]'): peer skipped")
        return []
    print("  hnswlib (peer) ...", flush=True)
    n, dim = base.shape
    t0 = time.perf_counter()
    peer = hnswlib.Index(space="ip", dim=dim)
    peer.init_index(max_elements=n, ef_construction=40, M=32)
    for start in range(0, n, CHUNK):
        peer.add_items(np.ascontiguousarray(base[start:start + CHUNK]), np.arange(start, min(n, start + CHUNK)), num_threads=os.cpu_count())
    build_s = time.perf_counter() - t0

    def search(q: np.ndarray, kk: int):  # noqa: ANN202
        labels, dist = peer.knn_query(q, k=kk)
        return 1 - dist, labels

    points = []
    for ef in (16, 32, 64, 128, 256):
        peer.set_ef(ef)
        t = time_queries(search, queries[:200], k)
        points.append({"efSearch": ef, "recall_at_10": recall(t["ids"], truth[:200]), "p50_ms": t["p50_ms"]})
    peer.set_ef(64)
    timed = time_queries(search, queries, k)
    with tempfile.NamedTemporaryFile(suffix=".bin") as fh:
        peer.save_index(fh.name)
        size = os.path.getsize(fh.name)
    return [{
        "index": "hnswlib M=32", "auto": False, "n": n, "dim": dim, "params": {"efSearch": 64},
        "recall_at_10": recall(timed["ids"], truth), "p50_ms": timed["p50_ms"], "p99_ms": timed["p99_ms"],
        "batch_qps": timed["batch_qps"], "build_s": build_s, "bytes_per_vector": size / n, "sweep": points,
    }]


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for r in rows:
        label = r["index"] + (" (auto)" if r["auto"] else "")
        if r.get("sweep"):
            pts = r["sweep"]
            line, = ax.plot([p["p50_ms"] for p in pts], [p["recall_at_10"] for p in pts], marker=".", label=label)
            ax.scatter([r["p50_ms"]], [r["recall_at_10"]], color=line.get_color(), marker="*" if r["auto"] else "o", s=120 if r["auto"] else 30, zorder=3)
        else:
            ax.scatter([r["p50_ms"]], [r["recall_at_10"]], marker="s", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("p50 single-query latency (ms, log scale)")
    ax.set_ylabel("recall@10 against exact search")
    ax.axhline(0.95, color="grey", lw=0.6, ls="--")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
