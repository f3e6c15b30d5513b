"""What a commit costs as the index grows: B batches of M media x F frames, each committed.

    python benchmarks/commit_scale.py --batches 50 --media 1000 --frames 60 --dim 512 \
        --json benchmarks/results/commit-scale.json

Drives the store through the same path ``mmsearch index`` takes: each media item's path row
(``IndexWriter.put_path``) and its frame segments (``Deriver.add_segments``, which also cuts
its moment windows and media vector), then one ``Deriver.commit(wait=False)`` per batch, as
the ingest runner's periodic commits do; a last ``commit(wait=True)`` adopts index builds
still under way, as the end of an ``mmsearch index`` run does (``finish_s``). Frames are
1 s apart; each media item is 1 to 4 shots, each shot a cluster of the clustered embedding
model of ``search.py`` (unrelated vectors at cosine ~0.3, as CLIP image embeddings).

One JSON object per commit: ``total_frames``, ``added_frames``, ``commit_s`` (the commit),
``add_s`` (``add_segments`` for the batch: moment windows, media vectors), ``peak_rss_mb``
(the process's peak resident memory so far, data generation included), the moment and media
indexes after the commit (recipe, rows in the index, rows searched exactly), and with
``--probe-queries`` the p50 of exhaustive moment searches on a freshly opened snapshot.

Run against an mmsearch whose ``IndexWriter`` still has ``add_frames`` (before the derive
stage existed), the same loop calls ``add_frames`` and ``commit(moment_config=...,
recipe_for=...)``: that is how the "before" column of the README was measured.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, write_json  # noqa: E402
from search import EmbeddingModel  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def rss_parts_mb() -> dict[str, float]:
    """Resident memory now: anonymous (heap, arrays) and file-backed (mapped shards, libraries), from /proc."""
    out = {}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                key = line.split(":")[0]
                if key in ("RssAnon", "RssFile"):
                    out[f"{key[3:].lower()}_rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def batch_vectors(model: EmbeddingModel, media: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """``(media, frames, dim)`` float32: each media item 1 to 4 shots of consecutive frames, a cluster each."""
    labels = np.empty((media, frames), np.int64)
    for m in range(media):
        shots = rng.integers(1, 5)
        cuts = np.sort(rng.choice(np.arange(1, frames), size=shots - 1, replace=False)) if shots > 1 else []
        for part, cluster in zip(np.split(np.arange(frames), cuts), rng.integers(0, len(model.centres), shots)):
            labels[m, part] = cluster
    return model.sample(media * frames, rng, labels=labels.reshape(-1)).reshape(media, frames, -1)


class MemorySampler:
    """The largest anonymous and file-backed resident memory seen, sampled every ``interval`` seconds on a thread
    (the peaks happen inside commits and background index builds, between the per-commit readings)."""

    def __init__(self, interval: float = 0.05) -> None:
        import threading

        self.peak = {"anon_rss_mb": 0.0, "file_rss_mb": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            for key, value in rss_parts_mb().items():
                self.peak[key] = max(self.peak[key], value)

    def take(self) -> dict[str, float]:
        """The peaks since the last call."""
        out = {f"peak_{k}": v for k, v in self.peak.items()}
        self.peak = {k: 0.0 for k in self.peak}
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--media", type=int, default=1000, help="media items per batch")
    p.add_argument("--frames", type=int, default=60, help="frames per media item (1 s apart)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--clusters", type=int, default=2000)
    p.add_argument("--probe-queries", type=int, default=0, help="after each commit, time this many searches (0: none)")
    p.add_argument("--index", type=Path, default=None, help="index directory [default: a temporary one, removed]")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cadence", type=float, default=0.0,
                   help="seconds from one batch's start to the next, as decoding and encoding would space them "
                        "(0: back to back; the background index jobs keep running in the gap)")
    args = p.parse_args(argv)

    import faiss

    import mmsearch.store as store
    from mmsearch.ingest import IngestConfig, _recipe_chooser  # (mmsearch.config since the derive stage; re-exported)

    faiss.omp_set_num_threads(faiss.omp_get_max_threads())
    info = machine_info()
    print(f"machine: {describe(info)}", flush=True)
    legacy = hasattr(store.IndexWriter, "add_frames")
    config = IngestConfig()
    moments = (config.window, config.stride)
    root = args.index or Path(tempfile.mkdtemp(prefix="commit-scale-"))
    model = EmbeddingModel(args.dim, clusters=args.clusters, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    results = []
    from mmsearch.moments import MomentConfig

    if legacy:
        writer = store.IndexWriter(root, config={"fps": 1.0, "window": config.window, "stride": config.stride})
        deriver = None
    else:
        from mmsearch.derive import Deriver, frame_segments
        from mmsearch.ingest import open_writer

        writer = open_writer(root, config)
        deriver = Deriver(writer, moments=MomentConfig(*moments), recipe_for=_recipe_chooser(config))
    encoder = {"spec": {"family": "bench", "model": "random", "pretrained": None, "options": {}}, "identity": {"model": "random", "dim": args.dim}}
    if legacy:
        writer.ensure_space("visual", encoder, args.dim)
    else:
        writer.ensure_space("visual", encoder, args.dim, anchor="start")
    pts = np.arange(args.frames, dtype=np.float64)
    sampler = MemorySampler()
    total, media_id = 0, 0
    header = f"{'commit':>6} {'total frames':>12} {'added':>7} {'add s':>7} {'commit s':>9} {'peak MB':>8} {'anon':>6} {'file':>6}  moment index"
    print("(peak MB: the process's peak resident memory so far; anon / file: the peaks of its anonymous and "
          "file-backed parts since the previous commit, sampled every 50 ms)", flush=True)
    print(header, flush=True)
    try:
        for batch in range(args.batches):
            batch_t0 = time.perf_counter()
            vectors = batch_vectors(model, args.media, args.frames, rng)
            t0 = time.perf_counter()
            for m in range(args.media):
                writer.put_path({
                    "media_id": media_id, "path": f"/bench/{media_id:08d}.mp4", "size": 1, "mtime": 0.0,
                    "content_hash": f"{media_id:040x}", "kind": "video", "duration": float(args.frames),
                    "width": 640, "height": 360, "spaces": "visual",
                })
                if legacy:
                    writer.add_frames("visual", media_id, pts, vectors[m])
                else:
                    starts, ends = frame_segments(pts, duration=float(args.frames))
                    deriver.add_segments("visual", media_id, starts, ends, vectors[m], duration=float(args.frames))
                media_id += 1
            add_s = time.perf_counter() - t0
            del vectors
            before = dict(deriver.timings) if deriver is not None else {}
            t0 = time.perf_counter()
            if legacy:
                writer.commit(moment_config=MomentConfig(*moments), recipe_for=_recipe_chooser(config))
            else:
                deriver.commit(wait=False)
            commit_s = time.perf_counter() - t0
            parts = {f"{k}_s": round(deriver.timings[k] - before[k], 3) for k in ("flush", "indexes", "publish")} if deriver else {}
            total += args.media * args.frames
            row = {
                "commit": batch + 1, "total_frames": total, "added_frames": args.media * args.frames,
                "add_s": round(add_s, 3), "commit_s": round(commit_s, 3), "peak_rss_mb": round(peak_rss_mb(), 1),
                **parts, **rss_parts_mb(), **sampler.take(),
            }
            row.update(_index_state(writer.manifest["spaces"]["visual"], legacy))
            if args.probe_queries:
                row["query_p50_ms"] = _probe(root, model, args.probe_queries, rng)
            results.append(row)
            time.sleep(max(0.0, args.cadence - (time.perf_counter() - batch_t0)))
            print(f"{row['commit']:>6} {total:>12} {row['added_frames']:>7} {add_s:>7.2f} {commit_s:>9.2f} {row['peak_rss_mb']:>8.0f} "
                  f"{row['peak_anon_rss_mb']:>6.0f} {row['peak_file_rss_mb']:>6.0f}  "
                  f"{row['moment_index']} ({row['moment_rows_indexed']} indexed, {row['moment_rows_exact']} exact)", flush=True)
        finish_s, final_query = None, None
        if not legacy:
            t0 = time.perf_counter()
            deriver.commit(wait=True)
            finish_s = round(time.perf_counter() - t0, 3)
            state = _index_state(writer.manifest["spaces"]["visual"], legacy)
            print(f"finish (adopt builds under way): {finish_s:.2f} s; moment index {state['moment_index']} "
                  f"({state['moment_rows_indexed']} indexed, {state['moment_rows_exact']} exact)", flush=True)
            final_query = _probe(root, model, 200, rng, p99=True)
            print(f"exhaustive moment search on the final index, 200 queries: p50 {final_query['p50_ms']} ms, "
                  f"p99 {final_query['p99_ms']} ms", flush=True)
    finally:
        sampler.stop()
        if deriver is not None:
            deriver.close()
        writer.close()
        if args.index is None:
            shutil.rmtree(root, ignore_errors=True)
    first = results[0]["commit_s"]
    worst = max(r["commit_s"] for r in results)
    print(f"first commit {first:.2f} s; slowest {worst:.2f} s ({worst / first:.2f}x); peak memory {max(r['peak_rss_mb'] for r in results):.0f} MB")
    if args.json:
        write_json(args.json, {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "implementation": "legacy" if legacy else "derive",
                               "finish_s": finish_s, "final_query": final_query, "commits": results})
    return 0


def _index_state(entry: dict, legacy: bool) -> dict:
    """Which index each table has after a commit and how many of its rows it covers."""
    if legacy:
        derived = entry.get("derived", {})
        return {"moment_index": entry.get("recipe", {}).get("factory"), "moment_rows_indexed": derived.get("n_moments", 0), "moment_rows_exact": 0,
                "media_index": entry.get("media_recipe", {}).get("factory")}
    rows = sum(s["n"] for s in entry["tables"]["moments"])
    moment = entry.get("indexes", {}).get("moments", {})
    indexed = int(moment.get("rows", 0)) if moment.get("file") else 0
    return {"moment_index": entry.get("recipe", {}).get("factory"), "moment_rows_indexed": indexed, "moment_rows_exact": rows - indexed,
            "media_index": entry.get("media_recipe", {}).get("factory")}


def _probe(root: Path, model: EmbeddingModel, n: int, rng: np.random.Generator, *, p99: bool = False):  # noqa: ANN201
    """Single-query latency of the moment index (ms), as ``mmsearch query --exhaustive`` uses it, on a fresh snapshot."""
    from mmsearch.store import open_snapshot

    space = open_snapshot(root).spaces["visual"]
    queries = model.sample(n, rng)
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        space.moment_index.search(q[None], 10)
        lat.append((time.perf_counter() - t0) * 1000)
    p50 = round(float(np.percentile(lat, 50)), 3)
    return {"p50_ms": p50, "p99_ms": round(float(np.percentile(lat, 99)), 3)} if p99 else p50


if __name__ == "__main__":
    raise SystemExit(main())
