"""Two-stage retrieval (rank videos, then moments inside the top V) against exhaustive moment search.

    python benchmarks/two_stage.py --videos 100000 --moments 60 --json benchmarks/results/two_stage.json

Synthetic embeddings with the structure of real video: each video is a cluster
of correlated moment vectors (a video-level topic plus per-moment drift), and
each query is a noisy copy of one moment. Exhaustive search scans every moment
(exact inner product, FAISS Flat); two-stage searches the video-level index for
the top V videos (mean of their moments) and scores only their moments. Reports
p50 latency of both, the speed-up, and how often both return the same top-1
moment. One process, same data, same queries.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def corpus_chunks(videos: int, moments: int, dim: int, seed: int = 0, chunk: int = 5000):  # noqa: ANN201
    """Yield (chunk_videos, moments, dim) unit vectors: a topic per video plus a drift along its moments."""
    rng = np.random.default_rng(seed)
    for start in range(0, videos, chunk):
        stop = min(videos, start + chunk)
        topic = rng.standard_normal((stop - start, 1, dim)).astype(np.float32)
        drift = np.cumsum(0.25 * rng.standard_normal((stop - start, moments, dim)).astype(np.float32), axis=1)
        x = topic + 0.6 * drift / np.sqrt(np.arange(1, moments + 1, dtype=np.float32))[None, :, None]
        yield x / np.linalg.norm(x, axis=2, keepdims=True)


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--moments", type=int, default=60)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--top-videos", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    t0 = time.perf_counter()
    moment_index = faiss.IndexFlatIP(args.dim)  # holds the only copy of the moments (12 GB at 100k x 60 x 512)
    video_vecs = []
    for chunk in corpus_chunks(args.videos, args.moments, args.dim):
        moment_index.add(chunk.reshape(-1, args.dim))
        mean = chunk.mean(axis=1)
        video_vecs.append(mean / np.linalg.norm(mean, axis=1, keepdims=True))
    flat = faiss.rev_swig_ptr(moment_index.get_xb(), moment_index.ntotal * args.dim).reshape(-1, args.dim)
    corpus = flat.reshape(args.videos, args.moments, args.dim)
    video_index = faiss.IndexFlatIP(args.dim)
    video_index.add(np.concatenate(video_vecs))
    rng = np.random.default_rng(1)
    picks = rng.integers(0, len(flat), args.queries)
    queries = flat[picks] + 0.5 * rng.standard_normal((args.queries, args.dim)).astype(np.float32) / np.sqrt(args.dim)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    print(f"data: {args.videos} videos x {args.moments} moments x {args.dim} in {time.perf_counter() - t0:.1f}s")

    ex_lat, two_lat, same = [], [], 0
    for q in queries:
        t0 = time.perf_counter()
        _, ex = moment_index.search(q[None], 1)
        ex_lat.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        _, top_videos = video_index.search(q[None], args.top_videos)
        cand = corpus[top_videos[0]]  # (V, M, d): only these videos' moments are scored
        scores = cand @ q
        v, m = np.unravel_index(int(np.argmax(scores)), scores.shape)
        two = int(top_videos[0][v]) * args.moments + int(m)
        two_lat.append((time.perf_counter() - t0) * 1000)
        same += two == int(ex[0][0])
    result = {
        "videos": args.videos,
        "moments": args.moments,
        "dim": args.dim,
        "top_videos": args.top_videos,
        "queries": args.queries,
        "exhaustive_p50_ms": float(np.percentile(ex_lat, 50)),
        "two_stage_p50_ms": float(np.percentile(two_lat, 50)),
        "speedup": float(np.percentile(ex_lat, 50) / np.percentile(two_lat, 50)),
        "top1_agreement": same / args.queries,
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
