"""Two-stage retrieval (rank media, then localize moments inside the top V) against mmsearch's exhaustive search.

    python benchmarks/two_stage.py --media 100000 --videos 20,100 --json benchmarks/results/two_stage.json

The corpus (``benchmarks/_corpus.py``): media of varied length (3-400 s, median 35 s) whose
seconds change inside a video (1-4 shots, a drift along the seconds), topics shared across
media (themes), and text-like queries that are not copies of indexed vectors (across the modality
gap, cosine ~0.4 with the second they were made from). It is written through the ingest path's
store and derive stage, so the moment and media indexes are the ones a commit chooses for their
size (``mmsearch index``'s recipe chooser), and opened with ``mmsearch.api.open_index``.

Compared on the same queries, each timed alone (``Index.search_hits``, one query vector, k=10, one
FAISS thread as ``mmsearch serve`` gives each search),
the configurations taking turns query by query in a new random order:

* ``exhaustive``: mmsearch's own ``--exhaustive`` path on that index (the moment index over every
  moment window of the corpus, then localization): the reference;
* ``two-stage, V videos``: the default query (``--videos V``: the media index gives the top V
  media, their segments are localized), for each V of ``--videos``;
* ``whole media`` (not timed): the two-stage media ranking returning each of the top 10 media as
  one moment from its start to its end: what a benchmark that rewarded containing the right
  second would score highly, and the metrics below must punish.

Quality, against the exhaustive answer of the same query: ``recall@10 at tIoU>=0.5`` (the share
of the exhaustive top-10 moments that a moment of the same media among the configuration's top 10
overlaps with temporal IoU >= 0.5, each matched at most once) and ``top-1 IoU`` (the temporal IoU
of the two top moments; 0 when they are of different media). Also: ``stage-1 recall``, the share
of queries whose exhaustive top-1 media is among the V media stage 1 keeps, and the mean length of
the returned moments. Speed-up: exhaustive p50 over two-stage p50.

Disk: the index holds the segments (segments x dim x 4 bytes: 9.7 GB at 100k media, d=512) and
the moment windows; it is built under a temporary folder and removed afterwards unless ``--keep``.
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

IOU = 0.5


def iou(a: Any, b: Any) -> float:
    """Temporal IoU of two hits (0 for different media)."""
    if a.media_id != b.media_id:
        return 0.0
    inter = max(0.0, min(a.end, b.end) - max(a.start, b.start))
    union = max(a.end, b.end) - min(a.start, b.start)
    return inter / union if union > 0 else float(a.start == b.start)


def recall_at_iou(got: list[Any], truth: list[Any], threshold: float = IOU) -> float:
    """Share of ``truth``'s moments matched by a distinct moment of ``got`` at temporal IoU >= ``threshold``
    (greedy, best pairs first)."""
    if not truth:
        return 1.0
    pairs = sorted(((iou(g, t), i, j) for i, g in enumerate(got) for j, t in enumerate(truth)), reverse=True)
    used_g, used_t = set(), set()
    for value, i, j in pairs:
        if value < threshold:
            break
        if i not in used_g and j not in used_t:
            used_g.add(i)
            used_t.add(j)
    return len(used_t) / len(truth)


def whole_media(idx: Any, q: np.ndarray, k: int, durations: np.ndarray) -> list[Any]:
    """The top ``k`` media of stage 1, each returned whole (0 to its duration)."""
    from mmsearch.retrieval import Hit

    space = idx.snapshot.spaces["visual"]
    scores, rows = space.media_index.search(q[None], k)
    return [Hit(int(space.media_ids[r]), 0.0, float(durations[space.media_ids[r]]), float(s), float(s))
            for s, r in zip(scores[0], rows[0]) if r >= 0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpus_args(p, media=100_000)
    p.add_argument("--videos", default="20,100", help="comma-separated --videos (media kept by stage 1) to compare")
    p.add_argument("--queries", type=int, default=200, help="timed queries (each configuration)")
    p.add_argument("--warmup", type=int, default=10, help="untimed queries first")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--work", type=Path, default=None, help="where the index goes [default: a temporary folder, removed]")
    p.add_argument("--keep", action="store_true", help="keep the index under --work")
    p.add_argument("--json", type=lambda s: Path(s) if s else None, default=Path(__file__).resolve().parent / "results" / "two_stage.json",
                   help="write results here ('' for none)")
    args = p.parse_args(argv)
    args.videos = [int(v) for v in str(args.videos).split(",") if v]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import faiss

    from mmsearch.api import open_index

    args = parse_args(argv)
    faiss.omp_set_num_threads(1)  # one query on one thread, as the server runs each search
    info = machine_info()
    corpus = Corpus(args.media, args.dim, themes=args.themes, seed=args.seed)
    queries, source_cos, _ = corpus.queries(args.warmup + args.queries, seed=args.seed + 1)
    work = args.work or Path(tempfile.mkdtemp(prefix="mmsearch-two-stage-"))
    root = work / "index"
    try:
        if root.exists():
            shutil.rmtree(root)
        timings = build_index(root, corpus)
        idx = open_index(root, device="cpu")
        state = index_state(idx)
        print(f"machine: {describe(info)}", flush=True)
        print(f"corpus: {corpus.media} media, {state['segments']} segments, {state['moments']} moments of d={args.dim} "
              f"(length median {np.median(corpus.lengths):.0f} s, {corpus.lengths.min()}-{corpus.lengths.max()} s); "
              f"built in {timings['build_s']} s; moment index {state['moment_index'][0]['factory']}, "
              f"media index {state['media_index'][0]['factory']}; query cosine with its source {source_cos.mean():.3f}", flush=True)
        configs = [("exhaustive", None)] + [(f"two-stage, {v} videos", v) for v in args.videos]
        rng = np.random.default_rng(args.seed + 2)
        latency: dict[str, list[float]] = {name: [] for name, _ in configs}
        answers: dict[str, list[list[Any]]] = {name: [] for name, _ in configs}
        for i, q in enumerate(queries):
            order = rng.permutation(len(configs))
            got: dict[str, list[Any]] = {}
            for c in order:
                name, videos = configs[c]
                t0 = time.perf_counter()
                got[name] = idx.search_hits(q[None], k=args.k, videos=videos or 20, exhaustive=videos is None)[0]
                if i >= args.warmup:
                    latency[name].append((time.perf_counter() - t0) * 1000)
            if i >= args.warmup:
                for name, _ in configs:
                    answers[name].append(got[name])
        truth = answers["exhaustive"]
        measured = queries[args.warmup:]
        durations = corpus.lengths.astype(np.float64)
        rows = []
        for name, videos in configs + [("whole media", None)]:
            hits = answers[name] if name in answers else [whole_media(idx, q, args.k, durations) for q in measured]
            row: dict[str, Any] = {"config": name, "videos": videos}
            if name in latency:
                row.update(p50_ms=round(float(np.percentile(latency[name], 50)), 3), p99_ms=round(float(np.percentile(latency[name], 99)), 3))
            row["recall_at_10_iou"] = round(float(np.mean([recall_at_iou(h, t) for h, t in zip(hits, truth)])), 4)
            row["top1_iou"] = round(float(np.mean([iou(h[0], t[0]) if h and t else 0.0 for h, t in zip(hits, truth)])), 4)
            row["same_top1_media"] = round(float(np.mean([bool(h and t and h[0].media_id == t[0].media_id) for h, t in zip(hits, truth)])), 4)
            row["mean_moment_s"] = round(float(np.mean([x.end - x.start for h in hits for x in h])), 2)
            if videos:
                space = idx.snapshot.spaces["visual"]
                _, cand = space.media_index.search(measured, videos)
                kept = [set(int(space.media_ids[r]) for r in row_ if r >= 0) for row_ in cand]
                row["stage1_recall"] = round(float(np.mean([bool(t) and t[0].media_id in s for t, s in zip(truth, kept)])), 4)
            rows.append(row)
        ex_p50 = rows[0]["p50_ms"]
        for row in rows[1:]:
            if "p50_ms" in row:
                row["speedup"] = round(ex_p50 / row["p50_ms"], 2)
    finally:
        if not args.keep:
            shutil.rmtree(work if args.work is None else root, ignore_errors=True)

    print(f"two-stage against exhaustive: {args.queries} text-like queries, each timed alone, k={args.k}; "
          f"recall of the exhaustive top-{args.k} at tIoU>={IOU}")
    print(f"{'configuration':<24}{'p50 ms':>9}{'p99 ms':>9}{'speed-up':>9}{'recall@10':>11}{'top-1 IoU':>11}{'same top-1':>11}"
          f"{'stage-1 rec':>12}{'moment s':>10}")
    for r in rows:
        print(f"{r['config']:<24}{r.get('p50_ms', float('nan')):>9.2f}{r.get('p99_ms', float('nan')):>9.2f}{r.get('speedup', float('nan')):>9.2f}"
              f"{r['recall_at_10_iou']:>11.3f}{r['top1_iou']:>11.3f}{r['same_top1_media']:>11.3f}"
              f"{r.get('stage1_recall', float('nan')):>12.3f}{r['mean_moment_s']:>10.1f}")
    result = {
        "benchmark": "two_stage", "args": {k: str(v) for k, v in vars(args).items()}, "machine": info,
        "corpus": {"media": corpus.media, "segments": state["segments"], "moments": state["moments"], "dim": args.dim,
                   "themes": args.themes, "length_s": {"min": int(corpus.lengths.min()), "median": float(np.median(corpus.lengths)),
                                                       "max": int(corpus.lengths.max())},
                   "query_source_cosine": round(float(source_cos.mean()), 4)},
        "index": {**state, **timings}, "queries": args.queries, "k": args.k, "iou_threshold": IOU, "rows": rows,
    }
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
