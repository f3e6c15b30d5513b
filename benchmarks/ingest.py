#!/usr/bin/env python
"""Ingest throughput: decode-only, encode-only and end-to-end, side by side on the same files.

    python benchmarks/ingest.py --videos 4 --seconds 30 --json benchmarks/results/ingest.json \
        [--models vit-b-32,synth-clip] [--backends pyav,decord] [--settings before,default,all] \
        [--footage busy,static,talking,slides]

For every ingest setting x decoder backend x model it measures, on one set of files in one run
(settings, ``_common.SETTINGS``: ``before`` embeds every sampled frame, decodes every frame and
runs torch fp32; ``default`` is mmsearch's default, repeats skipped and non-reference frames
left undecoded; ``all`` adds the ONNX Runtime int8 image tower; the others one option each):

* decode-only: ``backend.iter_frames(path, fps, short_side=model.input_size)`` in this process;
* encode-only: ``encoder.encode_images`` on the very frames the decoder produced, chunk by chunk
  as the ingest runner sees them;
* end-to-end: ``mmsearch.ingest.index_paths`` into a fresh temporary index (decoder worker
  process, pipe, encode, commit: everything a user's ``mmsearch index`` pays for);

as sampled frames per second and video-seconds per second, the serial bound
``1 / (1/decode_fps + 1/encode_fps)`` (the throughput of doing one after the other with no
overlap) and ``end_to_end / serial_bound`` (target >= 0.9). Each measurement runs once after a
warm-up; model loading is timed separately and never counted.

``--prototype benchmarks/ingest_prefetch.py`` adds end-to-end rows for a patched copy of
``mmsearch/ingest.py`` (see the README), so a proposed fix is measured beside the original.

Test media: for each ``--footage`` kind, N 1280x720 30 fps H.264 mp4 files of ``--seconds``
each, written with PyAV (``busy``: a panning textured background with grain, colour gradients
and moving shapes, so the bitstream has real motion vectors and residuals; ``static``,
``talking`` and ``slides``: a tripod shot, a talking head, slides; see :func:`write_test_video`),
cached under ``--media-dir``; plus the real clip
/work/shared/media/decord/flipping_a_pancake.mkv when present. The share of sampled frames
skipped as repeats is reported by footage.

Heavy imports live inside functions: the ingest runner starts its decoder with ``spawn``, which
re-imports this file in the child, and a child that imported torch would be a benchmark artefact.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import DECODER_FIELDS, SETTINGS, decoder_settings, setting_options  # noqa: E402  (benchmarks/ on sys.path as the script's folder)

REAL_CLIP = Path("/work/shared/media/decord/flipping_a_pancake.mkv")
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit-b-32": ("ViT-B-32", {}),
    "synth-clip": ("synth-clip", {"image_resize_mode": "squash"}),
}
BACKGROUND_LIMIT = 0.15  # cores of CPU used by other processes above which a measurement is flagged
MEDIA_VERSION = 1  # bump when the generator changes, so cached media is rebuilt


# -- test media ---------------------------------------------------------------------------------
def write_test_video(
    path: Path, *, seconds: float, fps: int = 30, size: tuple[int, int] = (1280, 720), seed: int = 0,
    preset: str = "veryfast", crf: int = 23, kind: str = "busy",
) -> None:
    """A ``seconds`` long H.264 mp4 that is not trivially compressible.

    Built in YUV 4:2:0 directly (no RGB conversion): a textured luma plane (sinusoid pattern,
    16x16 blobs, fine grain) larger than the frame, temporal grain from a small bank (sensor
    noise) and smooth chroma gradients. ``kind`` (see :data:`FOOTAGE`) says what moves:
    ``busy``: the plane panned along a Lissajous path (camera motion) and five flat shapes moving
    independently; ``static``: a tripod shot, nothing moves but the grain; ``talking``: a tripod
    shot of a head (an ellipse) that sways a few pixels and a mouth that opens and closes;
    ``slides``: a light slide with dark lines of "text", a new slide every 8 s and one more line
    every 2 s. libx264 defaults otherwise (B-frames, keyint 250).
    """
    from fractions import Fraction

    import av
    import numpy as np

    w, h = size
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    pad_x, pad_y = 512, 256
    yy, xx = np.mgrid[0 : h + pad_y, 0 : w + pad_x].astype(np.float32)
    base = 100 + 45 * np.sin(xx / 97.0 + rng.random() * 6) * np.cos(yy / 61.0 + rng.random() * 6)
    blobs = np.kron(rng.standard_normal(((h + pad_y) // 16 + 1, (w + pad_x) // 16 + 1)).astype(np.float32),
                    np.ones((16, 16), np.float32))[: h + pad_y, : w + pad_x]
    grain = rng.standard_normal((h + pad_y, w + pad_x)).astype(np.float32) * 6
    luma = np.clip(base + 25 * blobs + grain, 16, 235).astype(np.uint8)
    cu = np.clip(128 + 40 * np.sin(xx[::2, ::2] / 150.0 + rng.random() * 6), 16, 240).astype(np.uint8)
    cv = np.clip(128 + 40 * np.cos(yy[::2, ::2] / 90.0 + xx[::2, ::2] / 200.0), 16, 240).astype(np.uint8)
    del yy, xx, base, blobs, grain
    temporal = [rng.integers(-3, 4, size=(h, w), dtype=np.int16) for _ in range(6)]
    shapes = [
        (int(rng.integers(40, 200)), rng.random() * 6.28, rng.random() * 2 + 0.5,
         int(rng.integers(16, 235)), int(rng.integers(16, 240)), int(rng.integers(16, 240)))
        for _ in range(5)
    ]
    buf = np.empty((h * 3 // 2, w), np.uint8)
    u = buf[h : h + h // 4].reshape(h // 2, w // 2)
    v = buf[h + h // 4 :].reshape(h // 2, w // 2)
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps, options={"preset": preset, "crf": str(crf)})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            t = i / fps
            still = kind in ("static", "talking", "slides")
            ox = (pad_x // 2 if still else int((np.sin(t * 0.4) * 0.5 + 0.5) * (pad_x - 1))) & ~1
            oy = (pad_y // 2 if still else int((np.cos(t * 0.3) * 0.5 + 0.5) * (pad_y - 1))) & ~1
            y = buf[:h]
            y[:] = np.clip(luma[oy : oy + h, ox : ox + w].astype(np.int16) + temporal[i % len(temporal)], 16, 235)
            u[:] = cu[oy // 2 : oy // 2 + h // 2, ox // 2 : ox // 2 + w // 2]
            v[:] = cv[oy // 2 : oy // 2 + h // 2, ox // 2 : ox // 2 + w // 2]
            if kind == "talking":
                _draw_head(y, u, v, t)
            elif kind == "slides":
                _draw_slide(y, u, v, t, seed)
            for sz, ph, sp, sy, su, sv in (shapes if kind == "busy" else ()):
                x0 = int((np.sin(t * sp * 0.5 + ph) * 0.5 + 0.5) * (w - sz)) & ~1
                y0 = int((np.cos(t * sp * 0.37 + 2 * ph) * 0.5 + 0.5) * (h - sz)) & ~1
                y[y0 : y0 + sz, x0 : x0 + sz] = sy
                u[y0 // 2 : (y0 + sz) // 2, x0 // 2 : (x0 + sz) // 2] = su
                v[y0 // 2 : (y0 + sz) // 2, x0 // 2 : (x0 + sz) // 2] = sv
            frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
    tmp.replace(path)


FOOTAGE = ("busy", "static", "talking", "slides")  # what write_test_video can make


def _draw_head(y: Any, u: Any, v: Any, t: float) -> None:
    """A head (an ellipse, a third of the frame high) that sways by a few pixels, and a mouth that opens and closes."""
    import numpy as np

    h, w = y.shape
    cx, cy = w // 2 + int(4 * np.sin(t * 0.7)), h // 2 + int(2 * np.sin(t * 0.5))
    ry, rx = h // 6, h // 8
    yy, xx = np.ogrid[0:h, 0:w]
    face = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    y[face] = 170
    u[face[::2, ::2]], v[face[::2, ::2]] = 110, 150
    mouth = int(6 + 6 * abs(np.sin(t * 9)))  # opens and closes several times a second
    y[cy + ry // 2 - mouth // 2 : cy + ry // 2 + mouth // 2, cx - rx // 3 : cx + rx // 3] = 60


def _draw_slide(y: Any, u: Any, v: Any, t: float, seed: int) -> None:
    """A light slide with a title and lines of "text" (dark bars): a new slide every 8 s, a new line every 2 s."""
    import numpy as np

    h, w = y.shape
    slide, step = int(t // 8), int(t % 8 // 2)
    rng = np.random.default_rng(seed * 100 + slide)
    y[:] = 235
    u[:], v[:] = 128, 128
    y[h // 12 : h // 12 + h // 14, w // 10 : w // 10 + int(w * rng.uniform(0.4, 0.8))] = 30  # the title
    for line in range(step + 1):
        top = h // 4 + line * h // 8
        for word in range(int(rng.integers(3, 7))):  # words: bars with gaps
            left = w // 8 + word * w // 9
            y[top : top + h // 28, left : left + int(w * rng.uniform(0.05, 0.09))] = 40


def prepare_media(args: argparse.Namespace) -> tuple[list[Path], Path]:
    """The benchmark files (generated once, then reused from the cache) and a short warm-up clip."""
    key = f"v{MEDIA_VERSION}-1280x720-30fps-{args.seconds:g}s-seed{args.seed}"
    root = Path(args.media_dir or Path(tempfile.gettempdir()) / "mmsearch-bench" / "ingest") / key
    if args.regenerate and root.exists():
        shutil.rmtree(root)
    (root / "corpus").mkdir(parents=True, exist_ok=True)
    files = []
    for kind in args.footage:
        for i in range(args.videos):
            path = root / "corpus" / (f"bench_{i:03d}.mp4" if kind == "busy" else f"{kind}_{i:03d}.mp4")
            if not path.exists():
                t0 = time.perf_counter()
                write_test_video(path, seconds=args.seconds, seed=args.seed * 1000 + i, kind=kind)
                log(f"  wrote {path.name} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
            files.append(path)
    if args.real_clip and REAL_CLIP.is_file():
        files.append(REAL_CLIP)
    warm = root / "warmup" / "warmup.mp4"
    warm.parent.mkdir(exist_ok=True)
    if not warm.exists():
        write_test_video(warm, seconds=2, seed=args.seed * 1000 + 999)
    return files, warm


def video_info(path: Path) -> dict[str, Any]:
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        dur = float(vs.duration * vs.time_base) if vs.duration else (c.duration or 0) / 1e6
        return {
            "path": str(path), "bytes": path.stat().st_size, "codec": vs.codec_context.name,
            "width": vs.codec_context.width, "height": vs.codec_context.height,
            "fps": float(vs.average_rate or 0), "frames": vs.frames, "duration": dur,
        }


# -- encoders ---------------------------------------------------------------------------------
def load_encoder(key: str, ckpt_dir: Path, device: str = "cpu", image_runtime: str = "torch") -> tuple[Any, float, str]:
    """(encoder, load seconds, weights description); checkpoint creation is not counted as load."""
    import logging

    from _common import random_clip_checkpoint

    from mmsearch.encoders import EncoderSpec, create_encoder, resolve_spec
    from mmsearch.encoders.base import packaged_asset

    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "no pretrained weights" chatter
    model, options = MODELS[key]
    spec, weights = None, "random"
    if key == "synth-clip":
        try:
            packaged_asset("synth-clip.pt")
            spec, weights = resolve_spec("synth-clip"), "packaged mmsearch/assets/synth-clip.pt"
        except Exception:
            spec = None
    if spec is None:
        spec = EncoderSpec("clip", model, str(random_clip_checkpoint(model, ckpt_dir)), dict(options))
    t0 = time.perf_counter()
    enc = create_encoder(spec, device=device, **({"image_runtime": image_runtime} if image_runtime != "torch" else {}))
    return enc, time.perf_counter() - t0, weights


# -- measurements -------------------------------------------------------------------------------
class CpuMonitor:
    """CPU time the whole machine spent busy vs. this process and its (joined) children, over a block.

    Other people's jobs on the same cores make every number here meaningless; ``background``
    is the busy CPU time (in CPU-seconds) that was not ours, so a contaminated row can be spotted.
    """

    def __enter__(self) -> "CpuMonitor":
        self.t0, self.sys0, self.own0 = time.perf_counter(), _system_busy(), _own_cpu()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.t0
        self.system = _system_busy() - self.sys0
        self.own = _own_cpu() - self.own0
        self.background = max(0.0, self.system - self.own)

    def as_dict(self) -> dict[str, float]:
        return {"wall_s": self.wall, "own_cpu_s": self.own, "system_busy_cpu_s": self.system,
                "background_cpu_s": self.background,
                "background_cores": self.background / self.wall if self.wall else 0.0}


def _system_busy() -> float:
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    import resource

    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def wait_for_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Wait (up to ``max_wait`` s) until other processes use under ``threshold`` cores; returns that load."""
    deadline = time.monotonic() + max_wait
    while True:
        with CpuMonitor() as mon:
            time.sleep(1.0)
        load = mon.background / mon.wall
        if load < threshold or time.monotonic() >= deadline:
            return load
        log(f"  other processes are using {load:.1f} cores; waiting for a quiet machine ...")
        time.sleep(4.0)


@dataclass
class DecodeResult:
    frames: int = 0
    seconds: float = 0.0
    probe_seconds: float = 0.0
    per_file: list[dict[str, Any]] = field(default_factory=list)
    batches: list[Any] = field(default_factory=list)  # the FrameBatch objects, for encode-only


def make_backend(backend_name: str, decoder: tuple[Any, ...]) -> Any:
    """The video decoder a lone decoder process gets for ``decoder`` (:func:`decoder_settings`)."""
    from mmsearch.ingest import decoder_threads
    from mmsearch.media import get_backend

    opts = dict(zip(DECODER_FIELDS, decoder))
    threads = decoder_threads(1) if opts["decoder_threads"] is None else opts["decoder_threads"]
    return get_backend(backend_name, skip_nonref=opts["skip_nonref"], skip_loop_filter=opts["skip_loop_filter"], threads=threads)


def measure_decode(backend_name: str, files: list[Path], fps: float, short_side: int, chunk: int, keep: bool,
                   decoder: tuple[Any, ...]) -> DecodeResult:
    """Decode as a lone decoder worker does with ``decoder`` (:func:`decoder_settings`): skip_similar (the
    frame-skip filter, its cost counted) on what the decoder gives; ``frames`` counts the frames kept."""
    from mmsearch.frameskip import FrameSkipper
    from mmsearch.media import FrameBatch

    res = DecodeResult()
    for path in files:
        backend = make_backend(backend_name, decoder)
        skipper = FrameSkipper() if dict(zip(DECODER_FIELDS, decoder))["skip_similar"] else None
        t0 = time.perf_counter()
        backend.probe(str(path))
        t1 = time.perf_counter()
        n = sampled = 0
        for batch in backend.iter_frames(str(path), fps=fps, short_side=short_side, chunk_size=chunk):
            sampled += len(batch)
            if skipper is not None:
                mask = skipper.filter(batch.timestamps, batch.frames)
                batch = FrameBatch(batch.frames[mask], batch.timestamps[mask])
            n += len(batch)
            if keep and len(batch):
                res.batches.append(batch)
        t2 = time.perf_counter()
        res.frames += n
        res.seconds += t2 - t1
        res.probe_seconds += t1 - t0
        res.per_file.append({"file": path.name, "frames": n, "sampled": sampled, "decode_s": t2 - t1, "probe_s": t1 - t0})
    return res


def warm_decode(backend_name: str, path: Path, fps: float, short_side: int, chunk: int, decoder: tuple[Any, ...]) -> None:
    backend = make_backend(backend_name, decoder)
    backend.probe(str(path))
    for _ in backend.iter_frames(str(path), fps=fps, short_side=short_side, chunk_size=chunk):
        pass


def measure_encode(enc: Any, batches: list[Any]) -> tuple[int, float]:
    """Encode the decoded chunks one by one, as the ingest runner does; (frames, seconds)."""
    t0 = time.perf_counter()
    n = 0
    for b in batches:
        enc.encode_images(b.frames)
        n += len(b)
    return n, time.perf_counter() - t0


def load_ingest_module(prototype: str | None) -> Any:
    if not prototype:
        import mmsearch.ingest

        return mmsearch.ingest
    # Registered under a real importable name so the spawned decoder can import its worker function.
    spec = importlib.util.spec_from_file_location("mmsearch._bench_ingest_prototype", prototype)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def call_index_paths(ingest: Any, files: list[Path], index_dir: str, enc: Any, cfg: Any, progress: Any = None) -> Any:
    """``index_paths`` for the visual space only, whichever signature this mmsearch has."""
    import inspect

    if "encoders" in inspect.signature(ingest.index_paths).parameters:  # {space: factory}
        return ingest.index_paths(files, index_dir, encoders={"visual": lambda: enc}, config=cfg, progress=progress)
    return ingest.index_paths(files, index_dir, encoder=enc, config=cfg, progress=progress)


class TimedEncoder:
    """Delegates to an encoder and logs when each ``encode_images`` call starts and ends (for the timeline)."""

    def __init__(self, inner: Any, events: list, clock: Any) -> None:
        self._inner, self._events, self._clock = inner, events, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode_images(self, frames: Any) -> Any:
        self._events.append((self._clock(), "encode_start", "", len(frames)))
        try:
            return self._inner.encode_images(frames)
        finally:
            self._events.append((self._clock(), "encode_end", "", len(frames)))


def measure_end_to_end(ingest: Any, enc: Any, backend: str, files: list[Path], args: argparse.Namespace,
                       work: Path, workers: int = 1, setting: str = "default") -> dict[str, Any]:
    index_dir = tempfile.mkdtemp(dir=work)  # fresh each time: a rerun into a filled index would embed nothing
    cfg = ingest.IngestConfig(fps=args.fps, backend=backend, chunk_frames=args.chunk, workers=workers, **setting_options(setting))
    events: list[tuple[float, str, str, int]] = []
    t0 = time.perf_counter()
    enc = TimedEncoder(enc, events, lambda: round(time.perf_counter() - t0, 4))

    def progress(event: str, data: dict[str, Any]) -> None:
        events.append((round(time.perf_counter() - t0, 4), event, Path(data.get("path", "")).name, int(data.get("n", 0))))

    report = call_index_paths(ingest, files, index_dir, enc, cfg, progress)
    wall = time.perf_counter() - t0
    events.sort(key=lambda e: e[0])
    if report.failed or not report.frames:
        raise SystemExit(f"end-to-end run embedded {report.frames} frames; failed: {report.failed}")
    timings = dict(report.timings)
    starts = [e[0] for e in events if e[1] == "encode_start"]
    ends = [e[0] for e in events if e[1] == "encode_end"]
    summary = {
        "first_encode_s": starts[0] if starts else None,  # worker start + probe + decode of the first chunk
        "after_last_encode_s": wall - ends[-1] if ends else None,  # final commit, worker shutdown
        "encoder_busy_s": sum(b - a for a, b in zip(starts, ends)),
    }
    return {"frames": report.frames, "repeated_frames": getattr(report, "repeated_frames", 0), "wall_s": wall, "timings": timings,
            "unaccounted_s": wall - sum(timings.values()), "timeline_summary": summary, "timeline": events}


def _key(*parts: Any) -> str:
    """A JSON key from a measurement's parts ("decode/pyav/224/True/True/False/None")."""
    return "/".join(map(str, parts))


def _describe(decoder: tuple[Any, ...]) -> str:
    """The decoder settings (:func:`decoder_settings`) in words, for the log."""
    o = dict(zip(DECODER_FIELDS, decoder))
    threads = {None: "shared", 0: "FFmpeg's"}.get(o["decoder_threads"], o["decoder_threads"])
    return (f"skip similar {o['skip_similar']}, skip non-reference {o['skip_nonref']}, "
            f"skip loop filter {o['skip_loop_filter']}, decoder threads {threads}")


def footage_kind(name: str) -> str:
    """Which footage a benchmark file is (:data:`FOOTAGE`), from its name; "real" for the real clip."""
    prefix = name.split("_")[0]
    return "busy" if prefix == "bench" else prefix if prefix in FOOTAGE else "real"


def save_partial(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Raw measurements so far, in ``<json>.partial``, so a late failure loses nothing."""
    if not args.json:
        return
    path = Path(args.json + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(data)
    path.write_text(json.dumps(old, indent=1, default=str) + "\n")


def quiet_run(label: str, fn: Any, args: argparse.Namespace) -> tuple[Any, dict[str, float]]:
    """Run ``fn`` on a quiet machine; rerun it once when other processes took CPU meanwhile."""
    for attempt in range(args.retries + 1):
        if args.wait_quiet > 0:
            wait_for_quiet(args.wait_quiet)
        log(f"{label} ...")
        with CpuMonitor() as mon:
            result = fn()
        cpu = mon.as_dict()
        if cpu["background_cores"] < BACKGROUND_LIMIT:
            break
        log(f"  other processes used {cpu['background_cores']:.2f} cores during it"
            + ("; rerunning" if attempt < args.retries else "; keeping it, flagged"))
    return result, cpu


# -- reporting ----------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine_info() -> dict[str, Any]:
    """``_common.machine_info`` with the decoding and threading details this benchmark depends on."""
    import av
    import numpy
    import open_clip
    import torch

    from _common import machine_info as common_machine_info

    try:
        import decord

        decord_version = decord.__version__
    except Exception as exc:  # noqa: BLE001
        decord_version = f"unavailable ({exc})"
    return {
        **common_machine_info(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_interop_threads": torch.get_num_interop_threads(),
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ},
        "versions": {
            "torch": torch.__version__, "open_clip": open_clip.__version__, "av": av.__version__,
            "ffmpeg": {k: ".".join(map(str, v)) for k, v in getattr(av, "library_versions", {}).items()},
            "decord": decord_version, "numpy": numpy.__version__,
        },
    }


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    headers = ["setting", "backend", "model", "variant", "decoders", "embedded", "decode vs/s", "encode vs/s", "serial vs/s",
               "e2e vs/s", "e2e/serial", "vs before", "other load"]
    body = [
        [r["setting"], r["backend"], r["model"], r["variant"], str(r["workers"]), f"{r['decode_frames']}/{r['sampled_frames']}",
         f"{r['decode_vsps']:.1f}", f"{r['encode_vsps']:.1f}", f"{r['serial_bound_vsps']:.1f}", f"{r['e2e_vsps']:.1f}",
         f"{r['ratio']:.2f}" + (" ok" if r["ratio"] >= 0.9 else " LOW"),
         f"{r['e2e_speedup_vs_before']:.2f}x" if r.get("e2e_speedup_vs_before") else "-",
         f"{r['background_cores_max']:.2f}" + (" !" if r["background_cores_max"] >= BACKGROUND_LIMIT else "")]
        for r in rows
    ]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for h in headers:
            table.add_column(h, justify="left" if h in ("setting", "backend", "model", "variant") else "right")
        for b in body:
            table.add_row(*b)
        Console(width=max(160, shutil.get_terminal_size().columns)).print(table)
    except ImportError:
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(headers)]
        print(title)
        print("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
        for b in body:
            print("  ".join(c.rjust(w) for c, w in zip(b, widths)))


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=4, help="number of generated 720p test videos")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each generated video")
    p.add_argument("--models", default="vit-b-32,synth-clip", help=f"comma-separated, of {sorted(MODELS)}")
    p.add_argument("--backends", default="pyav,decord", help="comma-separated decoder backends")
    p.add_argument("--fps", type=float, default=1.0, help="sampled frames per video-second")
    p.add_argument("--settings", default="before,default",
                   help=f"comma-separated ingest settings measured side by side, of {list(SETTINGS)}")
    p.add_argument("--footage", default="busy", help=f"comma-separated kinds of generated video, of {list(FOOTAGE)} (--videos of each)")
    p.add_argument("--chunk", type=int, default=32, help="frames per decoder chunk (IngestConfig.chunk_frames)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--media-dir", default=None, help="cache folder for the generated videos (default: a temp folder)")
    p.add_argument("--regenerate", action="store_true", help="rewrite the cached test videos")
    p.add_argument("--no-real-clip", dest="real_clip", action="store_false", help=f"leave out {REAL_CLIP}")
    p.add_argument("--prototype", default=None, help="also run end-to-end with this patched copy of mmsearch/ingest.py")
    p.add_argument("--wait-quiet", type=float, default=60.0,
                   help="before each measurement wait up to this many seconds for other processes to go quiet")
    p.add_argument("--retries", type=int, default=1, help="reruns of a measurement disturbed by other processes")
    p.add_argument("--decoder-threads", type=int, default=None,
                   help="pin FFmpeg decoding threads in the prototype's decoder worker (experiment; prototype rows only)")
    p.add_argument("--device", default="cpu", help="where the encoders run: cpu | cuda | auto (fp16 on CUDA)")
    p.add_argument("--workers", default="1",
                   help="comma-separated decoder process counts to run end-to-end with (IngestConfig.workers); "
                        "decode-only stays one process, so with more than one e2e/serial can exceed 1")
    p.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads in the main process")
    args = p.parse_args(argv)
    args.models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    args.backends = [b.strip().lower() for b in args.backends.split(",") if b.strip()]
    args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    args.settings = [x.strip() for x in args.settings.split(",") if x.strip()]
    args.footage = [x.strip() for x in args.footage.split(",") if x.strip()]
    for x in args.settings:
        if x not in SETTINGS:
            p.error(f"unknown setting {x!r}; choose from {list(SETTINGS)}")
    for x in args.footage:
        if x not in FOOTAGE:
            p.error(f"unknown footage {x!r}; choose from {list(FOOTAGE)}")
    for m in args.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {sorted(MODELS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.decoder_threads:
        os.environ["BENCH_DECODER_THREADS"] = str(args.decoder_threads)  # read by ingest_prefetch.py
    from mmsearch.media import get_backend

    for b in args.backends:
        get_backend(b)  # validate names early

    if args.json:
        Path(args.json + ".partial").unlink(missing_ok=True)
    log("preparing media ...")
    files, warm = prepare_media(args)
    infos = [video_info(f) for f in files]
    total_video_s = sum(i["duration"] for i in infos)
    log(f"  {len(files)} files, {total_video_s:.1f} video-seconds, {sum(i['bytes'] for i in infos) / 1e6:.1f} MB")

    variants = [("current", load_ingest_module(None))]
    if args.prototype:
        variants.append(("prototype", load_ingest_module(args.prototype)))
    work = Path(tempfile.mkdtemp(prefix="mmsearch-bench-ingest-"))
    cpu: dict[str, dict[str, float]] = {}
    try:
        # -- models (load time reported, never counted) ---------------------------------------
        runtimes = sorted({SETTINGS[st]["image_runtime"] for st in args.settings})
        encoders: dict[tuple[str, str], Any] = {}
        loads: dict[str, dict[str, Any]] = {}
        for key in args.models:
            for rt in runtimes:
                log(f"loading {key} ({rt}) ...")
                enc, load_s, weights = load_encoder(key, work, args.device, rt)
                encoders[(key, rt)] = enc
                loads[f"{key}/{rt}"] = {"load_s": load_s, "weights": weights, "input_size": enc.input_size, "dim": enc.dim,
                                        "image_runtime": getattr(enc, "image_runtime", "torch")}
        sides = sorted({enc.input_size for enc in encoders.values()})
        # decode-only depends on the decoder settings only (DECODER_FIELDS)
        decoders = list(dict.fromkeys(decoder_settings(st) for st in args.settings))

        # -- decode-only: each backend at each short side the models want ------------------------
        decode: dict[tuple[Any, ...], DecodeResult] = {}  # (backend, short side, *decoder settings)
        for side in sides:
            for b in args.backends:
                for dec in decoders:
                    warm_decode(b, warm, args.fps, side, args.chunk, dec)
                    decode[(b, side, *dec)], cpu[_key("decode", b, side, *dec)] = quiet_run(
                        f"decode-only {b} @ short side {side}, " + _describe(dec),
                        lambda b=b, side=side, dec=dec: measure_decode(b, files, args.fps, side, args.chunk, keep=(b == args.backends[0]), decoder=dec),
                        args,
                    )

        save_partial(args, {"decode": {_key(*k): {"frames": d.frames, "seconds": d.seconds, "probe_seconds": d.probe_seconds}
                                       for k, d in decode.items()}, "cpu": cpu})

        # -- encode-only: on the first backend's frames, chunk by chunk ----------------------------
        encode: dict[tuple[Any, ...], tuple[int, float]] = {}  # (model, runtime, *decoder settings)
        for st in args.settings:
            dec, rt = decoder_settings(st), SETTINGS[st]["image_runtime"]
            for key in args.models:
                enc = encoders[(key, rt)]
                ekey = (key, rt, *dec)
                if ekey in encode:
                    continue
                batches = decode[(args.backends[0], enc.input_size, *dec)].batches
                for b in batches[:2]:  # warm-up: first calls build oneDNN primitives
                    enc.encode_images(b.frames)
                encode[ekey], cpu[_key("encode", *ekey)] = quiet_run(
                    f"encode-only {key} ({rt}) on the frames of " + _describe(dec),
                    lambda enc=enc, batches=batches: measure_encode(enc, batches), args)
        for res in decode.values():
            res.batches = []
        save_partial(args, {"encode": {_key(*k): v for k, v in encode.items()}, "cpu": cpu})

        # -- end-to-end ------------------------------------------------------------------------
        e2e: dict[tuple[str, str, str, str, int], dict[str, Any]] = {}
        for variant, ingest in variants:
            for st in args.settings:
                for key in args.models:
                    enc = encoders[(key, SETTINGS[st]["image_runtime"])]
                    for b in args.backends:
                        cfg = ingest.IngestConfig(fps=args.fps, backend=b, chunk_frames=args.chunk, workers=1, **setting_options(st))
                        # warm-up: a 2 s clip into a throwaway index, same code path
                        call_index_paths(ingest, [warm], tempfile.mkdtemp(dir=work), enc, cfg)
                        for w in args.workers:
                            e2e[(variant, st, b, key, w)], cpu[f"e2e/{variant}/{st}/{b}/{key}/{w}"] = quiet_run(
                                f"end-to-end {variant} {st} {b} x {key}, {w} decoder process(es)",
                                lambda: measure_end_to_end(ingest, enc, b, files, args, work, w, st),
                                args,
                            )
                            save_partial(args, {"e2e": {"/".join(map(str, k)): v for k, v in e2e.items()}, "cpu": cpu})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for (variant, st, b, key, w), r in e2e.items():
        dec, rt = decoder_settings(st), SETTINGS[st]["image_runtime"]
        ecpu = cpu[f"e2e/{variant}/{st}/{b}/{key}/{w}"]
        side = encoders[(key, rt)].input_size
        d = decode[(b, side, *dec)]
        ekey = (key, rt, *dec)
        n_enc, enc_s = encode[ekey]
        dcpu, encpu = cpu[_key("decode", b, side, *dec)], cpu[_key("encode", *ekey)]
        decode_fps = d.frames / d.seconds
        encode_fps = n_enc / enc_s if n_enc else float("inf")
        serial_s = d.seconds + enc_s  # one after the other, no overlap
        e2e_fps = r["frames"] / r["wall_s"]
        bg = max(dcpu["background_cores"], encpu["background_cores"], ecpu["background_cores"])
        rows.append({
            "backend": b, "model": key, "variant": variant, "setting": st, **setting_options(st), "workers": w, "short_side": side,
            "frames": r["frames"], "repeated_frames": r.get("repeated_frames", 0), "decode_frames": d.frames,
            "sampled_frames": sum(p["sampled"] for p in d.per_file),
            "decode_s": d.seconds, "probe_s": d.probe_seconds, "decode_fps": decode_fps,
            "decode_vsps": total_video_s / d.seconds,
            "encode_s": enc_s, "encode_fps": encode_fps, "encode_vsps": total_video_s / enc_s if enc_s else float("inf"),
            "serial_bound_fps": d.frames / serial_s, "serial_bound_vsps": total_video_s / serial_s,
            "e2e_s": r["wall_s"], "e2e_fps": e2e_fps, "e2e_vsps": total_video_s / r["wall_s"],
            "ratio": (total_video_s / r["wall_s"]) / (total_video_s / serial_s), "background_cores_max": bg,
            # CPU-seconds per sampled frame (this process and its decoder children): robust to other load
            "cpu_per_frame": {
                "decode": dcpu["own_cpu_s"] / max(1, d.frames),
                "encode": encpu["own_cpu_s"] / max(1, n_enc),
                "e2e": ecpu["own_cpu_s"] / max(1, r["frames"]),
            },
            "cores_used": {
                "decode": dcpu["own_cpu_s"] / dcpu["wall_s"],
                "encode": encpu["own_cpu_s"] / encpu["wall_s"],
                "e2e": ecpu["own_cpu_s"] / ecpu["wall_s"],
            },
            "e2e_cpu": ecpu, "e2e_timings": r["timings"],
            "e2e_unaccounted_s": r["unaccounted_s"], "timeline_summary": r["timeline_summary"],
            "timeline": r["timeline"],
        })
    # against "before" with one decoder process (mmsearch before issue #18), else with as many as the row
    before = {(r["variant"], r["backend"], r["model"], r["workers"]): r["e2e_vsps"] for r in rows if r["setting"] == "before"}
    for r in rows:
        key = (r["variant"], r["backend"], r["model"])
        base = before.get((*key, 1)) or before.get((*key, r["workers"]))
        r["e2e_speedup_vs_before"] = r["e2e_vsps"] / base if base else None
    # the share of sampled frames skipped as repeats, by footage (the file name's prefix)
    kept_share: dict[str, dict[str, float]] = {}
    for (b, side, *dec), d in decode.items():
        opts = dict(zip(DECODER_FIELDS, dec))
        if opts["skip_similar"] and b == args.backends[0]:
            by_kind: dict[str, list[int]] = {}
            for p in d.per_file:
                kind = footage_kind(p["file"])
                kept, sampled = by_kind.setdefault(kind, [0, 0])
                by_kind[kind] = [kept + p["frames"], sampled + p["sampled"]]
            kept_share[_key(side, *dec)] = {k: 1 - kept / sampled for k, (kept, sampled) in by_kind.items()}

    title = (f"ingest throughput: {len(files)} files, {total_video_s:.0f} video-s, sampling {args.fps:g} fps, "
             f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, encoders on {args.device}"
             + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() and args.device != "cpu" else "")
             + (f", prototype decoder threads {args.decoder_threads}" if args.decoder_threads else "") + "  (f/s = sampled frames per second, "
             "vs/s = video-seconds per second)")
    print_table(rows, title)
    for key, l in loads.items():
        print(f"model load {key}: {l['load_s']:.2f} s ({l['weights']}, input {l['input_size']})")
    for (b, side, *dec), d in decode.items():
        per = ", ".join(f"{p['file']} {p['frames'] / p['decode_s']:.1f} f/s" for p in d.per_file)
        print(f"decode {b} @{side} {_describe(tuple(dec))}: probe {d.probe_seconds:.2f} s total "
              f"(not in decode f/s); per file: {per}")
    for where, shares in kept_share.items():
        print(f"sampled frames skipped as repeats ({where}): " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    for r in rows:
        t = r["e2e_timings"]
        print(f"e2e {r['setting']} {r['variant']} {r['backend']} x {r['model']}, {r['workers']} decoder(s): wall {r['e2e_s']:.2f} s = "
              + ", ".join(f"{k} {v:.2f}" for k, v in t.items()) + f", other {r['e2e_unaccounted_s']:.2f}"
              "; cores used " + ", ".join(f"{k} {v:.2f}" for k, v in r["cores_used"].items())
              + "; CPU ms/frame " + ", ".join(f"{k} {1000 * v:.0f}" for k, v in r["cpu_per_frame"].items())
              + "; first encode at {first_encode_s:.2f} s, encoder busy {encoder_busy_s:.2f} s, "
              "after last encode {after_last_encode_s:.2f} s".format(**r["timeline_summary"]))
    flagged = [k for k, v in cpu.items() if v["background_cores"] >= BACKGROUND_LIMIT]
    if flagged:
        print(f"WARNING: other processes used CPU during {', '.join(flagged)}: those numbers are unreliable")
    elapsed = time.perf_counter() - started
    print(f"benchmark wall time {elapsed:.0f} s")

    if args.json:
        out = {
            "benchmark": "ingest", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "args": {k: v for k, v in vars(args).items()}, "machine": machine_info(), "files": infos,
            "total_video_seconds": total_video_s, "model_load": loads,
            "settings": {st: setting_options(st) for st in args.settings},
            "decode": [{"backend": b, "short_side": s, **dict(zip(DECODER_FIELDS, dec)), "frames": d.frames,
                        "seconds": d.seconds, "probe_seconds": d.probe_seconds, "fps": d.frames / d.seconds, "per_file": d.per_file}
                       for (b, s, *dec), d in decode.items()],
            "encode": [{"model": k, "image_runtime": rt, **dict(zip(DECODER_FIELDS, dec)), "frames": n, "seconds": sec,
                        "fps": n / sec if sec else None} for (k, rt, *dec), (n, sec) in encode.items()],
            "skipped_share": kept_share,
            "rows": rows, "cpu": cpu, "flagged": flagged, "wall_seconds": elapsed,
        }
        from _common import write_json

        write_json(Path(args.json), out)
        Path(args.json + ".partial").unlink(missing_ok=True)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
