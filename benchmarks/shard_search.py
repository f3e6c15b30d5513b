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

Corpus (shaped like the visual space of users' libraries): ``--media`` items of varied length
(log-normal, median 35 s, mean ~48 s, clipped to 3-400 s), one segment per second. A segment's
vector is ``0.55 g + 0.45 theme + 0.5 topic + 0.45 shot + drift``, L2-normalised: ``g`` a
direction every image vector shares (CLIP image vectors of unrelated pictures sit at cosine
~0.3), ``theme`` one of ``--themes`` shared by many media, ``topic`` the media item's own, ``shot``
one of its 1-4 shots (cut at random seconds), ``drift`` an AR(1) walk along the seconds
(coefficient 0.9, stationary length 0.3) so neighbouring seconds are close and distant ones
drift apart. Unrelated segments sit at cosine ~0.3, the same theme ~0.5, the same media ~0.7,
the same shot >0.9.

Queries are text-like, not copies of indexed vectors: CLIP's text vectors lie in a cone apart
from its image vectors (the modality gap), so a query is ``0.8 t + 0.6 c + 0.7 n`` normalised,
with ``t`` a fixed text-modality direction (shared by all queries, orthogonal to ``g``), ``c``
the content of a random second of a random media item without the shared image direction
(its theme + topic + shot + drift, normalised) and ``n`` isotropic noise: its best segment
answers at cosine ~0.4, as a caption matches its picture, and unrelated media at ~0. The mean
cosine of each query with the segment it was made from is reported.

Memory: the vectors (segments x dim x 4 bytes, 400 MB at the default) are held once and written
to four indexes (about 0.6 GB each on disk, under a temporary folder removed afterwards unless
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

MODES = ("two-stage", "exhaustive")


# -- corpus ---------------------------------------------------------------------------------
def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Corpus:
    """The segment vectors of every media item (one flat array, ``offsets`` into it), and what made them."""

    def __init__(self, media: int, dim: int, *, themes: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        lengths = np.exp(rng.normal(np.log(35.0), 0.8, media))
        self.lengths = np.clip(np.round(lengths), 3, 400).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        n = int(self.offsets[-1])
        self.shared = unit(rng.standard_normal(dim))  # g
        theme_vecs = unit(rng.standard_normal((themes, dim)))
        self.vectors = np.empty((n, dim), np.float32)
        self.content = np.empty((n, dim), np.float32)  # the part without g, for queries (unnormalised)
        rho, sigma = 0.9, 0.3
        for m in range(media):
            length = int(self.lengths[m])
            theme = theme_vecs[rng.integers(themes)]
            topic = unit(rng.standard_normal(dim))
            shots = int(rng.integers(1, 5))
            cuts = np.sort(rng.choice(np.arange(1, length), size=min(shots - 1, length - 1), replace=False)) if length > 1 else []
            shot_of = np.zeros(length, np.int64)
            for c in cuts:
                shot_of[c:] += 1
            shot_vecs = unit(rng.standard_normal((shot_of[-1] + 1, dim)))
            noise = rng.standard_normal((length, dim)).astype(np.float32) / np.sqrt(dim)
            drift = np.empty((length, dim), np.float32)
            drift[0] = sigma * noise[0]
            step = sigma * np.sqrt(1 - rho**2)
            for t in range(1, length):
                drift[t] = rho * drift[t - 1] + step * noise[t]
            content = 0.45 * theme + 0.5 * topic + 0.45 * shot_vecs[shot_of] + drift
            lo, hi = self.offsets[m], self.offsets[m + 1]
            self.content[lo:hi] = content
            self.vectors[lo:hi] = unit(0.55 * self.shared + content)

    @property
    def media(self) -> int:
        return len(self.lengths)

    def segments(self, m: int) -> np.ndarray:
        return self.vectors[self.offsets[m] : self.offsets[m + 1]]

    def queries(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` text-like query vectors (see the module) and the cosine of each with the segment it was made from."""
        rng = np.random.default_rng(seed)
        text_dir = rng.standard_normal(self.dim)
        text_dir = unit(text_dir - (text_dir @ self.shared) * self.shared)  # t, orthogonal to g
        rows = rng.integers(0, len(self.vectors), n)
        content = unit(self.content[rows])
        noise = unit(rng.standard_normal((n, self.dim)))
        q = unit(0.8 * text_dir + 0.6 * content + 0.7 * noise)
        return q, np.einsum("ij,ij->i", q, self.vectors[rows])


# -- indexes --------------------------------------------------------------------------------
def build_index(root: Path, corpus: Corpus, *, shards: int, exact: bool) -> dict[str, Any]:
    """Write ``corpus`` to a new index at ``root`` (``shards`` > 1: sharded) as ``mmsearch index`` would; returns timings."""
    from mmsearch.derive import frame_segments
    from mmsearch.indexes import IndexRecipe
    from mmsearch.ingest import IngestConfig, _recipe_chooser, open_writer
    from mmsearch.sharding import open_deriver

    config = IngestConfig()
    recipe_for = (lambda n, dim: IndexRecipe("Flat", {}, n)) if exact else _recipe_chooser(config, shards)
    encoder = {"spec": {"family": "bench", "model": "synthetic", "pretrained": None, "options": {}},
               "identity": {"model": "synthetic", "dim": corpus.dim}}
    t0 = time.perf_counter()
    with open_writer(root, config, shards=shards) as writer, open_deriver(writer, moments=config.moments, recipe_for=recipe_for) as deriver:
        writer.ensure_space("visual", encoder, corpus.dim, anchor="start")
        for m in range(corpus.media):
            duration = float(corpus.lengths[m])
            writer.put_path({
                "media_id": m, "path": f"/bench/{m:08d}.mp4", "size": 1, "mtime": 0.0, "content_hash": f"{m:040x}",
                "kind": "video", "duration": duration, "width": 1280, "height": 720, "spaces": "visual",
            })
            starts, ends = frame_segments(np.arange(corpus.lengths[m], dtype=np.float64), duration=duration)
            deriver.add_segments("visual", m, starts, ends, corpus.segments(m), duration=duration)
        t1 = time.perf_counter()
        deriver.commit(wait=True)
        t2 = time.perf_counter()
    return {"add_s": round(t1 - t0, 2), "commit_s": round(t2 - t1, 2), "build_s": round(t2 - t0, 2)}


def index_state(idx: Any) -> dict[str, Any]:
    """Rows and recipe (factory and tuned search parameters) of each shard's moment and media index."""
    from mmsearch.indexes import ShardedRowIndex

    space = idx.snapshot.spaces["visual"]
    out: dict[str, Any] = {}
    for name, index in (("moment_index", space.moment_index), ("media_index", space.media_index)):
        parts = index.shards if isinstance(index, ShardedRowIndex) else [index]
        out[name] = [{"rows": int(p.ntotal), **p.recipe.to_dict()} for p in parts]
    out["segments"] = int(len(space.segment_rows))
    out["moments"] = int(len(space.moments))
    return out


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
    p.add_argument("--media", type=int, default=4000, help="media items (about 48 one-second segments each)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--themes", type=int, default=200, help="topics shared by many media")
    p.add_argument("--shards", default="2,4", help="comma-separated shard counts besides the unsharded index")
    p.add_argument("--queries", type=int, default=300, help="timed queries (each config, each mode)")
    p.add_argument("--warmup", type=int, default=20, help="untimed queries first, each config and mode")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--videos", type=int, default=20, help="media ranked by stage 1 of a two-stage search")
    p.add_argument("--seed", type=int, default=0)
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
    queries, target_cos = corpus.queries(args.warmup + args.queries, seed=args.seed + 1)
    gen_s = time.perf_counter() - t0
    print(f"corpus: {corpus.media} media, {len(corpus.vectors)} segments of {args.dim} "
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
            if state["segments"] != len(corpus.vectors):
                raise SystemExit(f"{name}: the index holds {state['segments']} segments, not {len(corpus.vectors)}")
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
    title = (f"sharded search: {corpus.media} media, {len(corpus.vectors)} segments, {rows[0]['moments']} moments, d={args.dim}; "
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
                "media": corpus.media, "segments": int(len(corpus.vectors)), "moments": rows[0]["moments"], "dim": args.dim,
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
