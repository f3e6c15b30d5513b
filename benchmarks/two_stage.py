"""Two-stage retrieval (rank videos, then moments inside the top V) against exhaustive moment search.

    python benchmarks/two_stage.py --videos 100000 --moments 60 --json benchmarks/results/two_stage-100k.json

Synthetic embeddings with the structure of real video: each video is a cluster
of correlated moment vectors (a video-level topic plus a drift along its
moments, one moment per second), and each query is a noisy copy of one moment.

* exhaustive: exact inner product over every moment vector (FAISS, no index to
  train: the reference);
* two-stage: mmsearch's own path, ``mmsearch.retrieval.search_space`` over a
  ``SpaceData`` holding the same vectors: the media-level index (chosen and
  tuned by ``choose_recipe`` as a commit would; the mean of each video's moments)
  gives the top V videos, then each one's similarity curve is localized.

Reported: p50/p99 latency of both, the speed-up, ``top1_agreement`` (the top
two-stage moment lies in the same video as the exhaustive top-1 moment and
contains its second), ``stage1_recall`` (that video is among the top V),
``argmax_agreement`` (the best single moment among the top V videos is the
exhaustive top-1, no localization) and the mean length of the returned moment.
One process, same data, same queries. Memory: videos x moments x dim x 4 bytes
(12 GB at 100k x 60 x 512) plus the media index.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, write_json  # noqa: E402


def corpus_chunks(videos: int, moments: int, dim: int, seed: int = 0, chunk: int = 5000):  # noqa: ANN201
    """Yield (chunk_videos, moments, dim) unit vectors: a topic per video plus a drift along its moments."""
    rng = np.random.default_rng(seed)
    for start in range(0, videos, chunk):
        stop = min(videos, start + chunk)
        topic = rng.standard_normal((stop - start, 1, dim)).astype(np.float32)
        drift = np.cumsum(0.25 * rng.standard_normal((stop - start, moments, dim)).astype(np.float32), axis=1)
        x = topic + 0.6 * drift / np.sqrt(np.arange(1, moments + 1, dtype=np.float32))[None, :, None]
        yield x / np.linalg.norm(x, axis=2, keepdims=True)


def build_space(videos: int, moments: int, dim: int):  # noqa: ANN201
    """The corpus as mmsearch holds it: frame vectors + rows sorted by media, and a media-level index."""
    import pyarrow as pa

    from mmsearch.indexes import RowIndex, RowVectors, VectorIndex
    from mmsearch.moments import media_vector
    from mmsearch.store import MOMENT_SCHEMA, SpaceData

    flat = np.empty((videos * moments, dim), np.float32)  # the only copy of the moments
    video_vecs = np.empty((videos, dim), np.float32)
    done = 0
    for chunk in corpus_chunks(videos, moments, dim):
        n = len(chunk)
        flat[done * moments:(done + n) * moments] = chunk.reshape(-1, dim)
        for i in range(n):
            video_vecs[done + i] = media_vector(chunk[i])
        done += n
    t0 = time.perf_counter()
    media_index = VectorIndex.build(video_vecs)  # auto recipe, as a commit would choose it
    media_build_s = time.perf_counter() - t0
    starts = np.tile(np.arange(moments, dtype=np.float64), videos)
    rows = pa.table({"media_id": np.repeat(np.arange(videos, dtype=np.int64), moments), "start": starts, "end": starts + 1.0})
    space = SpaceData(
        name="visual", encoder={}, dim=dim, segment_vectors=RowVectors([flat], dim), segment_rows=rows,
        media_ids=np.arange(videos, dtype=np.int64), media_index=RowIndex(RowVectors([video_vecs], dim), media_index),
        moments=MOMENT_SCHEMA.empty_table(), moment_index=None,
    )
    return space, flat, media_build_s


def main() -> None:
    import faiss

    from mmsearch.retrieval import search_space

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--moments", type=int, default=60)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--top-videos", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    info = machine_info()
    t0 = time.perf_counter()
    space, flat, media_build_s = build_space(args.videos, args.moments, args.dim)
    rng = np.random.default_rng(1)
    picks = rng.integers(0, len(flat), args.queries)
    queries = flat[picks] + 0.5 * rng.standard_normal((args.queries, args.dim)).astype(np.float32) / np.sqrt(args.dim)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    print(f"data: {args.videos} videos x {args.moments} moments x {args.dim} in {time.perf_counter() - t0:.1f}s "
          f"(media index {space.media_index.recipe.factory}, built in {media_build_s:.1f}s)", flush=True)
    search_space(space, queries[:3], k=1, videos=args.top_videos)  # warm up

    ex_lat, two_lat = [], []
    agree = same_video = stage1 = argmax_same = 0
    lengths = []
    for q in queries:
        t0 = time.perf_counter()
        _, ex = faiss.knn(q[None], flat, 1, metric=faiss.METRIC_INNER_PRODUCT)
        ex_lat.append((time.perf_counter() - t0) * 1000)
        ex_video, ex_t = divmod(int(ex[0][0]), args.moments)

        t0 = time.perf_counter()
        hits = search_space(space, q[None], k=1, videos=args.top_videos)[0]
        two_lat.append((time.perf_counter() - t0) * 1000)
        top = hits[0]
        lengths.append(top.end - top.start)
        same_video += top.media_id == ex_video
        agree += top.media_id == ex_video and top.start <= ex_t <= top.end

        _, cand = space.media_index.search(q[None], args.top_videos)  # diagnostics, not timed
        cand = [int(c) for c in cand[0] if c >= 0]
        stage1 += ex_video in cand
        scores = flat.reshape(args.videos, args.moments, args.dim)[cand] @ q
        v, m = np.unravel_index(int(np.argmax(scores)), scores.shape)
        argmax_same += cand[v] * args.moments + int(m) == int(ex[0][0])
    n = args.queries
    result = {
        "videos": args.videos, "moments": args.moments, "dim": args.dim, "top_videos": args.top_videos, "queries": n,
        "media_index": space.media_index.recipe.to_dict(),
        "exhaustive_p50_ms": float(np.percentile(ex_lat, 50)), "exhaustive_p99_ms": float(np.percentile(ex_lat, 99)),
        "two_stage_p50_ms": float(np.percentile(two_lat, 50)), "two_stage_p99_ms": float(np.percentile(two_lat, 99)),
        "speedup": float(np.percentile(ex_lat, 50) / np.percentile(two_lat, 50)),
        "top1_agreement": agree / n, "same_video": same_video / n, "stage1_recall": stage1 / n,
        "argmax_agreement": argmax_same / n, "mean_moment_seconds": float(np.mean(lengths)),
        "machine": info,
    }
    print(f"machine: {describe(info)}")
    print(f"{'':<12}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{'exhaustive':<12}{result['exhaustive_p50_ms']:>9.1f}{result['exhaustive_p99_ms']:>9.1f}")
    print(f"{'two-stage':<12}{result['two_stage_p50_ms']:>9.1f}{result['two_stage_p99_ms']:>9.1f}")
    print(f"speed-up {result['speedup']:.1f}x; top-1 agreement {result['top1_agreement']:.3f} (same video "
          f"{result['same_video']:.3f}, stage-1 recall@{args.top_videos} {result['stage1_recall']:.3f}, "
          f"argmax {result['argmax_agreement']:.3f}); mean moment {result['mean_moment_seconds']:.1f}s")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
