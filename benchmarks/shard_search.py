"""Search latency and recall of a sharded index against the same vectors in one index.

    python benchmarks/shard_search.py --json benchmarks/results/shard_search.json \
        [--media 4000] [--dim 512] [--shards 2,4] [--queries 300]

The same synthetic corpus is written four ways through the ingest path's own store and derive
stage (``IndexWriter.put_path`` + ``Deriver.add_segments``, one final ``commit(wait=True)``):

* ``exact``: one index whose moment and media indexes are forced to ``Flat`` (the reference);
* ``1 shard``: one index, each vector index the recipe mmsearch chooses for its size
  (``mmsearch.ingest._recipe_chooser(IngestConfig())``, what ``mmsearch index`` uses:
  ``choose_recipe`` with the default 10 ms latency target and half the available memory);
* ``2 shards``, ``4 shards``: a sharded index (``mmsearch.ingest.open_writer(..., shards=N)``),
  each shard's indexes chosen the same way for that shard's size, with ``1/N`` of the latency
  target and memory budget each (``_recipe_chooser(config, N)``, as ``mmsearch index --shards N``).

Each index is opened with ``mmsearch.api.open_index`` (a sharded one answers through
``ShardedRowIndex``: every shard searched, the top-k lists merged) and asked the same queries with
``Index.search_hits(q, k=10, videos=20)`` in two modes: ``two-stage`` (the default query: the media
index gives the top 20 media, their segments are localized) and ``exhaustive`` (``--exhaustive``:
the moment index is searched over the whole corpus). Every query is timed alone
(``time.perf_counter`` around one call with one query vector), after a warm-up, the four indexes
taking turns query by query in a new random order each time, so drifting machine load and cache
effects hit them alike. p50/p99 are over the
timed queries. Recall@10 is the share of the exact index's top-10 moments (media id and start
second), in the same mode, that a configuration's top-10 holds. A second table gives the recall
of the vector indexes alone (batched, untimed) at the depths the two modes ask for: the moment
index's top 10 and top ``max(50, 20 k)`` (``mmsearch.retrieval.moment_candidates``), the media
index's top ``--videos``, with each shard's tuned search parameters.

Corpus and queries: ``benchmarks/_corpus.py`` (media of varied length with shots, shared themes and
a drift along the seconds; text-like queries across the modality gap, cosine ~0.4 with their
source). The mean cosine of each query with the segment it was made from is reported.

Memory: each media item's vectors are made when written; they go to four indexes (about 0.6 GB each on disk, under a temporary folder removed afterwards unless
``--keep``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, write_json  # noqa: E402
from _corpus import Corpus, add_corpus_args, build_index, index_state  # noqa: E402

MODES = ("two-stage", "exhaustive")


def short_recipe(parts: list[dict[str, Any]]) -> str:
    names = sorted({p["factory"] for p in parts})
    return "/".join(names)


def index_recall(idx: Any, ref: Any, queries: np.ndarray, depths: dict[str, tuple[str, int]]) -> dict[str, float]:
    """Recall of the vector indexes themselves (no localization) against ``ref``'s exact ones, batched and untimed:
    per name, (``moment`` or ``media``, k); moments compared by (media id, start), media by id."""
    out = {}
    for name, (table, k) in depths.items():
        found = []
        for space, role in ((idx.snapshot.spaces["visual"], "got"), (ref.snapshot.spaces["visual"], "truth")):
            if table == "moment":
                _, rows = space.moment_index.search(queries, k)
                media = space.moments.column("media_id").to_numpy()
                start = space.moments.column("start").to_numpy()
                found.append([{(int(media[r]), float(start[r])) for r in row if r >= 0} for row in rows])
            else:
                _, rows = space.media_index.search(queries, k)
                found.append([{int(space.media_ids[r]) for r in row if r >= 0} for row in rows])
        got, truth = found
        out[name] = round(float(np.mean([len(g & t) / max(1, len(t)) for g, t in zip(got, truth)])), 4)
    return out


def search(idx: Any, q: np.ndarray, mode: str, k: int, videos: int) -> list[Any]:
    return idx.search_hits(q[None], k=k, videos=videos, exhaustive=mode == "exhaustive")[0]


def exhaustive_depth(k: int) -> int:
    """How many moment windows an exhaustive search asks the moment index for (``mmsearch.retrieval.moment_candidates``)."""
    return max(50, 20 * k)


def moments_of(hits: list[Any]) -> set[tuple[int, float]]:
    return {(int(h.media_id), round(float(h.start), 3)) for h in hits}


# -- main -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpus_args(p, media=4000)
    p.add_argument("--shards", default="2,4", help="comma-separated shard counts besides the unsharded index")
    p.add_argument("--queries", type=int, default=300, help="timed queries (each config, each mode)")
    p.add_argument("--warmup", type=int, default=20, help="untimed queries first, each config and mode")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--videos", type=int, default=20, help="media ranked by stage 1 of a two-stage search")
    p.add_argument("--work", type=Path, default=None, help="where the indexes go [default: a temporary folder, removed]")
    p.add_argument("--keep", action="store_true", help="keep the indexes under --work")
    p.add_argument("--json", type=lambda s: Path(s) if s else None, default=Path(__file__).resolve().parent / "results" / "shard_search.json",
                   help="write the results here (\"\": nowhere)")
    args = p.parse_args(argv)
    args.shards = sorted({int(s) for s in str(args.shards).split(",") if s.strip()} - {1})
    if any(s < 1 for s in args.shards):
        p.error("--shards must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import faiss

    from mmsearch.api import open_index

    started = time.perf_counter()
    info = machine_info()
    info["faiss_threads"] = faiss.omp_get_max_threads()
    print(f"machine: {describe(info)}", flush=True)
    t0 = time.perf_counter()
    corpus = Corpus(args.media, args.dim, themes=args.themes, seed=args.seed)
    queries, target_cos, _ = corpus.queries(args.warmup + args.queries, seed=args.seed + 1)
    gen_s = time.perf_counter() - t0
    print(f"corpus: {corpus.media} media, {corpus.segment_count} segments of {args.dim} "
          f"(length median {np.median(corpus.lengths):.0f} s, min {corpus.lengths.min()}, max {corpus.lengths.max()}) "
          f"in {gen_s:.1f} s; query cosine with its source segment: mean {target_cos.mean():.3f}", flush=True)

    configs = [("exact", 1, True), ("1 shard", 1, False)] + [(f"{s} shards", s, False) for s in args.shards]
    work = args.work or Path(tempfile.mkdtemp(prefix="mmsearch-shard-search-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        indexes = []
        for name, shards, exact in configs:
            root = work / name.replace(" ", "-")
            if root.exists():
                shutil.rmtree(root)
            timing = build_index(root, corpus, shards=shards, exact=exact)
            idx = open_index(root, device="cpu")
            state = index_state(idx)
            if state["segments"] != corpus.segment_count:
                raise SystemExit(f"{name}: the index holds {state['segments']} segments, not {corpus.segment_count}")
            indexes.append(idx)
            rows.append({"config": name, "shards": shards, "exact": exact, **timing, **state})
            parts = ", ".join(f"{p['factory']} ({p['rows']} rows)" for p in state["moment_index"])
            print(f"built {name}: {timing['build_s']:.1f} s (commit {timing['commit_s']:.1f} s); moment index {parts}; "
                  f"media index {short_recipe(state['media_index'])}", flush=True)
        for row in rows[1:]:
            if row["moments"] != rows[0]["moments"]:
                raise SystemExit(f"{row['config']}: {row['moments']} moments, the exact index {rows[0]['moments']}")

        for q in queries[: args.warmup]:  # warm-up: page in the maps, first-call costs
            for idx in indexes:
                for mode in MODES:
                    search(idx, q, mode, args.k, args.videos)
        latency = {(i, mode): [] for i in range(len(indexes)) for mode in MODES}
        found = {(i, mode): [] for i in range(len(indexes)) for mode in MODES}
        returned = {(i, mode): [] for i in range(len(indexes)) for mode in MODES}
        order_rng = np.random.default_rng(args.seed + 2)
        for q in queries[args.warmup :]:
            for mode in MODES:
                answers: dict[int, set] = {}
                for i in order_rng.permutation(len(indexes)):  # a new order each time: no index always follows another
                    t = time.perf_counter()
                    hits = search(indexes[i], q, mode, args.k, args.videos)
                    latency[(i, mode)].append((time.perf_counter() - t) * 1000)
                    answers[i] = moments_of(hits)
                    returned[(i, mode)].append(len(hits))
                reference = answers[0]
                for i, got in answers.items():
                    found[(i, mode)].append(len(reference & got) / max(1, len(reference)))
        depths = {"moment@10": ("moment", args.k), f"moment@{exhaustive_depth(args.k)}": ("moment", exhaustive_depth(args.k)),
                  f"media@{args.videos}": ("media", args.videos)}
        for idx, row in zip(indexes, rows):
            row["index_recall"] = index_recall(idx, indexes[0], queries[args.warmup :], depths)
        for i, row in enumerate(rows):
            for mode in MODES:
                lat = np.asarray(latency[(i, mode)])
                key = mode.replace("-", "_")
                row[key] = {
                    "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
                    "mean_ms": round(float(lat.mean()), 3), "recall_at_10": round(float(np.mean(found[(i, mode)])), 4),
                    "min_recall": round(float(np.min(found[(i, mode)])), 4),
                    "mean_hits": round(float(np.mean(returned[(i, mode)])), 2),
                    "short_answers": int(np.sum(np.asarray(returned[(i, mode)]) < args.k)),  # queries given fewer than k moments
                }
    finally:
        if not (args.keep and args.work):
            shutil.rmtree(work, ignore_errors=True)

    elapsed = time.perf_counter() - started
    title = (f"sharded search: {corpus.media} media, {corpus.segment_count} segments, {rows[0]['moments']} moments, d={args.dim}; "
             f"{args.queries} text-like queries, each timed alone, k={args.k}, two-stage over {args.videos} media; "
             f"recall@10 against the exact index")
    print(title)
    header = (f"{'index':<10}{'moment index (per shard)':<34}{'media idx':<10}{'build s':>8}  "
              f"{'two-stage p50':>13}{'p99':>8}{'recall':>8}  {'exhaustive p50':>14}{'p99':>8}{'recall':>8}")
    print(header)
    for row in rows:
        moment = ", ".join(p["factory"] for p in row["moment_index"])
        if len(moment) > 33:
            moment = short_recipe(row["moment_index"]) + f" x{len(row['moment_index'])}"
        ts, ex = row["two_stage"], row["exhaustive"]
        rec = (lambda r: "ref" if row["exact"] else f"{r:.3f}")
        print(f"{row['config']:<10}{moment:<34}{short_recipe(row['media_index']):<10}{row['build_s']:>8.1f}  "
              f"{ts['p50_ms']:>13.2f}{ts['p99_ms']:>8.2f}{rec(ts['recall_at_10']):>8}  "
              f"{ex['p50_ms']:>14.2f}{ex['p99_ms']:>8.2f}{rec(ex['recall_at_10']):>8}")
    print(f"(latency in ms; faiss threads {info['faiss_threads']}; benchmark wall time {elapsed:.0f} s)")
    for mode in MODES:
        key = mode.replace("-", "_")
        for row in rows:
            m, ref = row[key], rows[0][key]
            if m["short_answers"] > ref["short_answers"]:
                print(f"{row['config']}, {mode}: {m['short_answers']} of {args.queries} queries got fewer than {args.k} moments "
                      f"(mean {m['mean_hits']:.2f}; the exact index: {ref['short_answers']} such queries, mean {ref['mean_hits']:.2f})")
    names = list(rows[0]["index_recall"])
    print("recall of the vector indexes alone (same queries, batched, against the exact index; the moment index is asked "
          f"for {names[1].split('@')[1]} by an exhaustive search, the media index for {args.videos} by a two-stage one):")
    print(f"{'index':<10}" + "".join(f"{n:>12}" for n in names) + "  tuned (per shard)")
    for row in rows:
        tuned = [", ".join(f"{k} {v}" for k, v in r["params"].items() if k in ("nprobe", "k_factor_rf", "recall_at_10"))
                 for r in row["moment_index"]]
        shown = "-" if not any(tuned) else (tuned[0] + (" (each)" if len(tuned) > 1 else "") if len(set(tuned)) == 1 else "; ".join(tuned))
        print(f"{row['config']:<10}" + "".join(f"{row['index_recall'][n]:>12.3f}" for n in names) + f"  {shown}")
    if args.json:
        write_json(args.json, {
            "benchmark": "shard_search", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": info,
            "args": {k: str(v) for k, v in vars(args).items()},
            "corpus": {
                "media": corpus.media, "segments": int(corpus.segment_count), "moments": rows[0]["moments"], "dim": args.dim,
                "themes": args.themes, "length_s": {"min": int(corpus.lengths.min()), "median": float(np.median(corpus.lengths)),
                                                    "mean": round(float(corpus.lengths.mean()), 2), "max": int(corpus.lengths.max())},
                "generate_s": round(gen_s, 2),
                "query_source_cosine": {"mean": round(float(target_cos.mean()), 4), "min": round(float(target_cos.min()), 4),
                                        "max": round(float(target_cos.max()), 4)},
            },
            "queries": args.queries, "warmup": args.warmup, "k": args.k, "videos": args.videos,
            "configs": rows, "wall_seconds": round(elapsed, 1),
        })
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
