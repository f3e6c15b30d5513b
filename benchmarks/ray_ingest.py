#!/usr/bin/env python
"""Ingestion on Ray against the local runner: video-seconds per wall-second on the same files.

    python benchmarks/ray_ingest.py --json benchmarks/results/ray_ingest.json \
        [--videos 6] [--seconds 20] [--model vit-b-32|synth-clip] [--ray-workers 1,2]

One run, one set of files, each configuration indexing into a fresh temporary index through
``mmsearch.api.index_paths`` (visual space only: ``audio=False, speech=False, ocr=False``;
``freeze_text=False``, so only ingestion is timed), sampling ``--fps`` frames per second:

* ``local``: ``executor="local"``, ``IngestConfig(workers=1)``: one decoder process, the encoder
  in this process (torch's default threads);
* ``ray``, w decoders: ``executor="ray"`` inside a Ray session started here with
  ``ray.init(num_cpus=w + 1)``: decode tasks of 1 CPU each, at most w at once
  (``IngestConfig(workers=w)``), one embedding actor of 1 CPU (which runs torch on one
  thread), the committer on this driver. ``ray.init`` is timed apart (``ray_init_s``) and not
  counted in the row's wall time; everything inside ``index_paths`` is (Ray Data planning,
  worker and actor start-up, the model loaded in the actor).

Per row: files and frames indexed (checked against the committed index, and equal across rows:
the script fails otherwise), wall seconds, video-seconds and sampled frames per wall-second,
when the first vectors reached the committer, and how many cores the whole machine kept busy
(from ``/proc/stat``: Ray's processes are not this one's children). The JSON adds the run's
``IngestReport.timings`` (``encode``: seconds the encoder spent, in the actor for Ray) and its
progress timeline (``start``/``frames``/``file`` events as the committer saw them).

Ray's fixed costs, measured separately on a small corpus (``--small-videos`` files of
``--small-seconds``): the wall time of local and Ray (1 decoder) ingestion of it, and in a fresh
Ray session of its own, the start-up: ``ray.init``, then the first (empty) task's round trip,
then a first actor's creation and answer.

Media: 1280x720 30 fps H.264 files written by ``benchmarks/ingest.py``'s ``write_test_video``,
cached under ``--media-dir``. Model: ``vit-b-32`` is open_clip ViT-B-32 with random weights
saved as a local checkpoint (``_common.random_clip_checkpoint``; passed as ``model="ViT-B-32",
pretrained=<file>``); ``synth-clip`` is mmsearch's packaged tiny model (a fast run). Before the
measurements a 2 s clip is indexed once locally (imports, first-call costs), untimed.

Heavy imports live inside functions: the local runner starts its decoders with ``spawn``, which
re-imports this file in the child.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = {"vit-b-32": "ViT-B-32", "synth-clip": "synth-clip"}
MEDIA_VERSION = 1  # as benchmarks/ingest.py's: bump when write_test_video changes


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- media and model ----------------------------------------------------------------------------
def media_files(folder: Path, count: int, seconds: float, seed: int) -> list[Path]:
    """``count`` test videos of ``seconds`` in ``folder``, written once and reused."""
    from ingest import write_test_video

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        path = folder / f"bench_{i:03d}.mp4"
        if not path.exists():
            t0 = time.perf_counter()
            write_test_video(path, seconds=seconds, seed=seed * 1000 + i)
            log(f"  wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
        files.append(path)
    return files


def video_seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        return float(vs.duration * vs.time_base) if vs.duration else (c.duration or 0) / 1e6


def model_options(key: str, root: Path) -> dict[str, Any]:
    """The ``index_paths`` arguments naming the model (a random-weight checkpoint for ViT-B-32)."""
    if key == "synth-clip":
        return {"model": "synth-clip", "pretrained": None}
    from _common import random_clip_checkpoint

    return {"model": MODELS[key], "pretrained": str(random_clip_checkpoint(MODELS[key], root))}


def model_load_s(options: dict[str, Any]) -> float:
    """Seconds to build the encoder in this process (for context; part of every row's wall time)."""
    from mmsearch.encoders import create_encoder, resolve_spec

    spec = resolve_spec(options["model"], options["pretrained"], family="clip")
    t0 = time.perf_counter()
    create_encoder(spec, device="cpu")
    return time.perf_counter() - t0


# -- measurements -------------------------------------------------------------------------------
def _system_busy() -> float:
    """CPU-seconds the whole machine has spent busy (all processes, Ray's included)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def ingest_once(files: list[Path], work: Path, options: dict[str, Any], *, executor: str, workers: int,
                fps: float, chunk: int) -> dict[str, Any]:
    """Index ``files`` into a fresh index with ``executor``; wall time, counts and what the index holds."""
    from mmsearch.api import index_paths
    from mmsearch.config import IngestConfig
    from mmsearch.store import read_manifest

    index = Path(tempfile.mkdtemp(dir=work)) / "index"
    config = IngestConfig(fps=fps, workers=workers, chunk_frames=chunk)
    events: list[list[Any]] = []  # [seconds since the call, event, file name, frames]: when the committer saw what
    t0 = time.perf_counter()

    def progress(event: str, data: dict[str, Any]) -> None:
        if event in ("start", "frames", "file"):
            events.append([round(time.perf_counter() - t0, 3), event, Path(data.get("path", "")).name, int(data.get("n", 0))])

    busy0 = _system_busy()
    report = index_paths(files, index, audio=False, speech=False, ocr=False, device="cpu", config=config, executor=executor,
                         freeze_text=False, progress=progress, **options)
    wall = time.perf_counter() - t0
    busy = _system_busy() - busy0
    derived = read_manifest(index)["spaces"]["visual"]["derived"]
    first = [e[0] for e in events if e[1] == "frames"][:1]
    done = [e[0] for e in events if e[1] == "file"]
    out = {
        "executor": executor, "workers": workers, "files": len(files), "indexed": len(report.indexed),
        "failed": [list(f) for f in report.failed], "frames": report.frames, "index_segments": int(derived["n_segments"]),
        "index_media": int(derived["n_media"]), "wall_s": round(wall, 3), "first_vectors_s": round(first[0], 3) if first else None,
        "last_file_s": round(max(done), 3) if done else None, "cores_busy": round(busy / wall, 2),
        "timings": {k: round(v, 3) for k, v in report.timings.items()}, "timeline": events,
    }
    shutil.rmtree(index.parent, ignore_errors=True)
    problems = []
    if out["failed"]:
        problems.append(f"failed: {out['failed']}")
    if out["indexed"] != len(files) or out["index_media"] != len(files):
        problems.append(f"indexed {out['indexed']} files ({out['index_media']} in the index) of {len(files)}")
    if not out["frames"] or out["index_segments"] != out["frames"]:
        problems.append(f"embedded {out['frames']} frames, the index holds {out['index_segments']}")
    if problems:
        raise SystemExit(f"{executor} with {workers} decoder(s): " + "; ".join(problems))
    return out


def ray_init(cpus: int) -> float:
    """Start a local Ray of ``cpus`` CPUs in this process (as a user would before ``index_paths``); its seconds."""
    import logging

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    return time.perf_counter() - t0


def ray_shutdown() -> float:
    import ray

    t0 = time.perf_counter()
    ray.shutdown()
    return time.perf_counter() - t0


def ingest_on_ray(files: list[Path], work: Path, options: dict[str, Any], *, workers: int, fps: float, chunk: int) -> dict[str, Any]:
    """One Ray session of ``workers + 1`` CPUs around one ``index_paths(executor="ray")``."""
    init_s = ray_init(workers + 1)
    try:
        row = ingest_once(files, work, options, executor="ray", workers=workers, fps=fps, chunk=chunk)
    finally:
        row_shutdown = ray_shutdown()
    return {**row, "ray_cpus": workers + 1, "ray_init_s": round(init_s, 3), "ray_shutdown_s": round(row_shutdown, 3)}


def ray_startup(cpus: int) -> dict[str, float]:
    """A fresh session: ``ray.init``, then an empty task's round trip, then an actor's creation and first answer."""
    import ray

    init_s = ray_init(cpus)
    try:
        @ray.remote(num_cpus=1)
        def noop() -> int:
            return 1

        @ray.remote(num_cpus=1)
        class Pong:
            def ping(self) -> int:
                return 1

        t0 = time.perf_counter()
        ray.get(noop.remote())
        task_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        actor = Pong.remote()
        ray.get(actor.ping.remote())
        actor_s = time.perf_counter() - t0
        ray.kill(actor)
    finally:
        shutdown_s = ray_shutdown()
    return {"ray_init_s": round(init_s, 3), "first_task_s": round(task_s, 3), "first_actor_s": round(actor_s, 3),
            "ready_s": round(init_s + task_s, 3), "ray_shutdown_s": round(shutdown_s, 3)}


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=6, help="generated 1280x720 30 fps test videos")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each")
    p.add_argument("--fps", type=float, default=1.0, help="sampled frames per video-second")
    p.add_argument("--chunk", type=int, default=32, help="frames per decoder chunk (IngestConfig.chunk_frames)")
    p.add_argument("--model", default="vit-b-32", choices=sorted(MODELS))
    p.add_argument("--ray-workers", default="1,2", help="comma-separated decode-worker counts of the Ray rows")
    p.add_argument("--small-videos", type=int, default=3, help="files of the small corpus (Ray's overhead); 0: skip")
    p.add_argument("--small-seconds", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--media-dir", type=Path, default=Path(tempfile.gettempdir()) / "mmsearch-bench" / "ray_ingest",
                   help="cache of the generated videos and the random-weight checkpoint")
    p.add_argument("--json", type=lambda s: Path(s) if s else None, default=Path(__file__).resolve().parent / "results" / "ray_ingest.json",
                   help="write the results here (\"\": nowhere)")
    args = p.parse_args(argv)
    args.ray_workers = [int(w) for w in str(args.ray_workers).split(",") if w.strip()]
    if any(w < 1 for w in args.ray_workers):
        p.error("--ray-workers must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # inherited by Ray's workers, started after this
    started = time.perf_counter()
    import ray  # noqa: F401 - fail now, not after the media is written, when Ray is missing
    import torch

    from _common import describe, machine_info, write_json

    root = args.media_dir / f"v{MEDIA_VERSION}-1280x720-30fps-seed{args.seed}"
    log("preparing media ...")
    files = media_files(root / f"corpus-{args.seconds:g}s", args.videos, args.seconds, args.seed)
    small = media_files(root / f"small-{args.small_seconds:g}s", args.small_videos, args.small_seconds, args.seed + 1)
    warm = media_files(root / "warmup-2s", 1, 2.0, args.seed + 2)
    total_s = sum(video_seconds(f) for f in files)
    small_s = sum(video_seconds(f) for f in small)
    options = model_options(args.model, root)
    work = Path(tempfile.mkdtemp(prefix="mmsearch-bench-ray-ingest-"))
    try:
        log("warm-up (local, 2 s clip) ...")
        ingest_once(warm, work, options, executor="local", workers=1, fps=args.fps, chunk=args.chunk)
        load_s = model_load_s(options)

        rows = []
        log(f"local, 1 decoder: {len(files)} files, {total_s:.0f} video-s ...")
        rows.append({"runner": "local", "ray_cpus": None, **ingest_once(files, work, options, executor="local", workers=1,
                                                                         fps=args.fps, chunk=args.chunk)})
        for w in args.ray_workers:
            log(f"ray, {w} decoder(s), {w + 1} CPUs ...")
            rows.append({"runner": "ray", **ingest_on_ray(files, work, options, workers=w, fps=args.fps, chunk=args.chunk)})
        frames = {r["frames"] for r in rows}
        if len(frames) != 1:
            raise SystemExit(f"the runners embedded different numbers of frames: {[(r['runner'], r['workers'], r['frames']) for r in rows]}")
        base = rows[0]["wall_s"]
        for r in rows:
            r["video_seconds"] = round(total_s, 3)
            r["video_s_per_s"] = round(total_s / r["wall_s"], 3)
            r["frames_per_s"] = round(r["frames"] / r["wall_s"], 3)
            r["speed_vs_local"] = round(base / r["wall_s"], 3)

        overhead = None
        if small:
            log(f"small corpus: {len(small)} files, {small_s:.0f} video-s, local then Ray ...")
            local_small = ingest_once(small, work, options, executor="local", workers=1, fps=args.fps, chunk=args.chunk)
            ray_small = ingest_on_ray(small, work, options, workers=1, fps=args.fps, chunk=args.chunk)
            if ray_small["frames"] != local_small["frames"]:
                raise SystemExit(f"small corpus: Ray embedded {ray_small['frames']} frames, local {local_small['frames']}")
            log("Ray start-up, a fresh session ...")
            startup = ray_startup(2)
            overhead = {
                "files": len(small), "video_seconds": round(small_s, 3), "local": local_small, "ray": ray_small,
                "ray_total_s": round(ray_small["ray_init_s"] + ray_small["wall_s"], 3),
                "ray_extra_s": round(ray_small["ray_init_s"] + ray_small["wall_s"] - local_small["wall_s"], 3),
                "startup": startup,
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    info = machine_info()
    elapsed = time.perf_counter() - started
    model_name = f"{MODELS[args.model]}" + (" (random weights)" if args.model == "vit-b-32" else " (packaged)")
    print(f"machine: {describe(info)}")
    print(f"ray ingest: {len(files)} files, {total_s:.0f} video-s (1280x720 30 fps H.264), sampled at {args.fps:g} fps, "
          f"{model_name} on cpu, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()} (Ray's actor: 1)")
    print(f"{'runner':<8}{'decoders':>9}{'Ray CPUs':>9}{'files':>6}{'frames':>7}{'wall s':>8}{'video-s/s':>10}"
          f"{'frames/s':>9}{'1st vec s':>10}{'cores busy':>11}{'vs local':>9}{'ray.init s':>11}")
    for r in rows:
        print(f"{r['runner']:<8}{r['workers']:>9}{r['ray_cpus'] or '-':>9}{r['indexed']:>6}{r['frames']:>7}{r['wall_s']:>8.2f}"
              f"{r['video_s_per_s']:>10.2f}{r['frames_per_s']:>9.2f}{r['first_vectors_s'] or float('nan'):>10.2f}"
              f"{r['cores_busy']:>11.2f}{r['speed_vs_local']:>9.2f}"
              + (f"{r['ray_init_s']:>11.2f}" if r["runner"] == "ray" else f"{'-':>11}"))
    print(f"(wall s: the index_paths call; ray.init is not in it. 1st vec s: when the first vectors reached the committer. "
          f"Model load in one process: {load_s:.2f} s; the Ray rows load it twice, on the driver and in the actor)")
    for r in rows:
        t = r["timings"]
        print(f"  {r['runner']}, {r['workers']} decoder(s): encode {t.get('encode', 0):.2f} s "
              f"({'in the actor' if r['runner'] == 'ray' else 'in this process'}), commit {t.get('commit', 0):.2f} s, "
              f"first vectors at {r['first_vectors_s'] or float('nan'):.2f} s, last file done at {r['last_file_s'] or float('nan'):.2f} s")
    if overhead:
        lo, ra, st = overhead["local"], overhead["ray"], overhead["startup"]
        print(f"small corpus, {overhead['files']} files x {args.small_seconds:g} s ({overhead['video_seconds']:.0f} video-s, "
              f"{lo['frames']} frames): local {lo['wall_s']:.2f} s; Ray (1 decoder) {ra['wall_s']:.2f} s + ray.init "
              f"{ra['ray_init_s']:.2f} s = {overhead['ray_total_s']:.2f} s (+{overhead['ray_extra_s']:.2f} s, "
              f"{overhead['ray_total_s'] / lo['wall_s']:.1f}x)")
        print(f"Ray start-up (fresh session, 2 CPUs): ray.init {st['ray_init_s']:.2f} s, first task ready "
              f"{st['first_task_s']:.2f} s later ({st['ready_s']:.2f} s in all), first actor {st['first_actor_s']:.2f} s; "
              f"ray.shutdown {st['ray_shutdown_s']:.2f} s")
    print(f"benchmark wall time {elapsed:.0f} s")
    if args.json:
        write_json(args.json, {
            "benchmark": "ray_ingest", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": info,
            "ray_version": ray.__version__, "args": {k: str(v) for k, v in vars(args).items()},
            "model": {"key": args.model, "name": MODELS[args.model], "pretrained": options["pretrained"], "load_s": round(load_s, 3)},
            "corpus": {"files": [str(f) for f in files], "video_seconds": round(total_s, 3),
                       "size_mb": round(sum(f.stat().st_size for f in files) / 1e6, 2)},
            "rows": rows, "overhead": overhead, "median_ray_speed_vs_local": statistics.median(
                [r["speed_vs_local"] for r in rows if r["runner"] == "ray"]) if len(rows) > 1 else None,
            "wall_seconds": round(elapsed, 1),
        })
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
