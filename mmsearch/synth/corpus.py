"""Corpora on disk: planning videos and audio files, writing them with PyAV, and their ground truth."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import av
import numpy as np

from ..errors import UsageError
from ..fileio import atomic_write
from .config import SynthConfig, _even_ceil, _sample_rates
from .sound import _synth
from .visual import (
    _check_count,
    _draw_yuv,
    _noise_frames,
    _plan_shape,
    _rgb_frame_to_yuv420p,
    _rgb_to_yuv,
    _ShapeTrack,
    _to_u8,
    random_background_colour,
    random_halves,
    render_family_background,
)
from .vocabulary import (
    _AUDIO_CONTAINERS,
    _KIND_AUDIO,
    _KIND_VIDEO,
    _NOISE_BANK,
    _VIDEO_CONTAINERS,
    AUDIO_CAPTIONS,
    GROUND_TRUTH_JSON,
    GROUND_TRUTH_PARQUET,
    VISUAL_CAPTIONS,
    _audio_class,
)


# --------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class _Segment:
    start: int  # in units (frames or samples)
    end: int
    caption: str


def _pick_caption(rng: np.random.Generator, captions: Sequence[str], previous: str | None) -> str:
    """A random caption, never the same as the previous event's (when there is a choice)."""
    pool = [c for c in captions if c != previous] or list(captions)
    return pool[int(rng.integers(len(pool)))]


def _plan_sequence(
    rng: np.random.Generator,
    units_per_s: float,
    n_events: int,
    captions: Sequence[str],
    cfg: SynthConfig,
) -> tuple[list[_Segment], int]:
    """(gap, event, gap, ..., event, gap) in integer units; returns events and total length."""
    pos = int(round(rng.uniform(*cfg.gap_seconds) * units_per_s))
    events: list[_Segment] = []
    for k in range(n_events):
        if k:
            pos += int(round(rng.uniform(*cfg.gap_seconds) * units_per_s))
        length = max(1, int(round(rng.uniform(*cfg.event_seconds) * units_per_s)))
        cap = _pick_caption(rng, captions, events[-1].caption if events else None)
        events.append(_Segment(pos, pos + length, cap))
        pos += length
    pos += int(round(rng.uniform(*cfg.gap_seconds) * units_per_s))
    return events, pos


def _plan_fill(
    rng: np.random.Generator, units_per_s: float, total: int, captions: Sequence[str], cfg: SynthConfig
) -> list[_Segment]:
    """Independent events and gaps filling ``total`` units (events may be cut at the end)."""
    min_len = max(1, int(round(cfg.event_seconds[0] * units_per_s)))
    pos = 0
    events: list[_Segment] = []
    while True:
        pos += int(round(rng.uniform(*cfg.gap_seconds) * units_per_s))
        length = max(1, int(round(rng.uniform(*cfg.event_seconds) * units_per_s)))
        cap = _pick_caption(rng, captions, events[-1].caption if events else None)
        end = min(pos + length, total)
        if end - pos < min_len:
            break
        events.append(_Segment(pos, end, cap))
        pos = end
    return events


def _render_track(
    rng: np.random.Generator, sr: int, total: int, events: Sequence[_Segment], cfg: SynthConfig
) -> np.ndarray:
    if cfg.gap_noise_amplitude > 0:
        track = rng.uniform(-cfg.gap_noise_amplitude, cfg.gap_noise_amplitude, total).astype(np.float32)
    else:
        track = np.zeros(total, dtype=np.float32)
    for ev in events:
        s, e = max(0, ev.start), min(total, ev.end)
        if e > s:
            amp = float(rng.uniform(*cfg.amplitude_range))
            track[s:e] = _synth(rng, _audio_class(ev.caption), sr, e - s, amp, cfg.family)
    return track


def _video_size(rng: np.random.Generator, cfg: SynthConfig) -> tuple[int, int]:
    (wlo, hlo), (whi, hhi) = cfg.min_size, cfg.max_size
    h = 2 * int(rng.integers(_even_ceil(hlo) // 2, hhi // 2 + 1))
    aspect = float(rng.choice([4 / 3, 16 / 9, 3 / 2, 1.0, rng.uniform(1.0, 1.9)]))
    w = int(round(h * aspect))
    w = min(max(w, _even_ceil(wlo)), whi)
    return w - (w % 2), h


def _rng_for(seed: int, kind: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, kind, index]))


# --------------------------------------------------------------------------- writing
def _atomic_write(final: Path, write: Callable[[Path], None]) -> None:
    """Generated files appear whole or not at all (no fsync: a corpus is cheap to regenerate)."""
    atomic_write(final, write, fsync=False)


def _audio_frames(samples: np.ndarray, sr: int, start: int, stop: int, chunk: int = 4096) -> Iterator[av.AudioFrame]:
    for s in range(start, stop, chunk):
        e = min(stop, s + chunk)
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, s:e]), format="flt", layout="mono")
        fr.sample_rate = sr
        fr.pts = s
        fr.time_base = Fraction(1, sr)
        yield fr


def _write_audio_file(path: Path, container_fmt: str, codec: str, samples: np.ndarray, sr: int) -> None:
    with av.open(str(path), "w", format=container_fmt) as out:
        stream = out.add_stream(codec, rate=sr)
        stream.layout = "mono"
        for fr in _audio_frames(samples, sr, 0, len(samples)):
            out.mux(stream.encode(fr))
        out.mux(stream.encode(None))


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> Path:
    """Mono float samples as a 16-bit WAV file (query clips for tests and benchmarks)."""
    final = Path(path)
    _atomic_write(final, lambda tmp: _write_audio_file(tmp, "wav", "pcm_s16le", np.asarray(samples, np.float32), sample_rate))
    return final


@dataclass(frozen=True)
class _VideoPlan:
    width: int
    height: int
    fps: int
    n_frames: int
    container: str  # "mp4" | "webm"
    background: tuple[int, int, int]
    events: tuple[_Segment, ...]
    tracks: tuple[_ShapeTrack, ...]
    sample_rate: int | None
    audio_events: tuple[_Segment, ...]  # in samples (pairing: rounded from frame times)
    audio_rows: tuple[tuple[float, float, str], ...]
    companions: tuple[tuple[str, _ShapeTrack] | None, ...] = ()  # per event: a second shape on screen with it


def _plan_video(rng: np.random.Generator, cfg: SynthConfig, webm_ok: bool) -> _VideoPlan:
    width, height = _video_size(rng, cfg)
    u = rng.random()  # always drawn, so codec availability does not shift later draws
    container = "webm" if webm_ok and u < cfg.webm_probability else "mp4"
    if container == "webm":
        fps_choices = [f for f in range(cfg.fps_range[0], cfg.fps_range[1] + 1) if 1000 % f == 0]
        fps = int(fps_choices[int(rng.integers(len(fps_choices)))])
    else:
        fps = int(rng.integers(cfg.fps_range[0], cfg.fps_range[1] + 1))
    background = random_background_colour(rng)
    n_events = int(rng.integers(cfg.events_per_video[0], cfg.events_per_video[1] + 1))
    events, n_frames = _plan_sequence(rng, fps, n_events, cfg.used_visual_captions, cfg)
    n_frames = max(n_frames, 1)
    tracks = tuple(_plan_shape(rng, ev.caption, width, height, cfg.max_drift, cfg.family) for ev in events)

    sample_rate = None
    audio_events: list[_Segment] = []
    audio_rows: list[tuple[float, float, str]] = []
    has_audio = cfg.audio_pairing is not None or rng.random() < cfg.audio_in_video_probability
    if has_audio:
        rates = _sample_rates(container, cfg.sample_rate_range)  # non-empty (see _webm_possible)
        sample_rate = int(rates[int(rng.integers(len(rates)))])
        total = int(round(n_frames / fps * sample_rate))
        if cfg.audio_pairing is not None:
            for ev in events:
                start, end = ev.start / fps, ev.end / fps
                cap = cfg.audio_pairing[ev.caption]
                audio_events.append(_Segment(int(round(start * sample_rate)), int(round(end * sample_rate)), cap))
                audio_rows.append((start, end, cap))
        else:
            audio_events = _plan_fill(rng, sample_rate, total, cfg.used_audio_captions, cfg)
            audio_rows = [(ev.start / sample_rate, ev.end / sample_rate, ev.caption) for ev in audio_events]
    companions: list[tuple[str, _ShapeTrack] | None] = []
    if cfg.companion_probability > 0:  # drawn last, so corpora without companions stay as they were
        pool = cfg.used_visual_captions
        new_tracks = list(tracks)
        for k, ev in enumerate(events):
            others = [c for c in pool if c != ev.caption]
            if not others or rng.random() >= cfg.companion_probability:
                companions.append(None)
                continue
            caption = others[int(rng.integers(len(others)))]
            halves = random_halves(rng)
            new_tracks[k] = _plan_shape(rng, ev.caption, width, height, cfg.max_drift, cfg.family, halves[0])
            companions.append((caption, _plan_shape(rng, caption, width, height, cfg.max_drift, cfg.family, halves[1])))
        tracks = tuple(new_tracks)
    return _VideoPlan(
        width, height, fps, n_frames, container, background, tuple(events), tracks,
        sample_rate, tuple(audio_events), tuple(audio_rows), tuple(companions),
    )


def _write_video(path: Path, plan: _VideoPlan, rng: np.random.Generator, cfg: SynthConfig) -> None:
    w, h, fps = plan.width, plan.height, plan.fps
    fmt, vcodec, acodec = _VIDEO_CONTAINERS[plan.container]
    if cfg.family == "default":
        bank = _noise_frames(rng, plan.background, w, h, _NOISE_BANK, float(cfg.noise_sigma))
    else:  # the family's own backgrounds (gradients); plan.background is drawn but unused
        bank = render_family_background(rng, w, h, _NOISE_BANK, family=cfg.family)
    yuv_bank = [_rgb_frame_to_yuv420p(f) for f in bank]
    del bank
    def yuv_of(tr: _ShapeTrack) -> tuple[int, int, int]:
        y, u, v = _rgb_to_yuv(np.asarray(tr.rgb, dtype=np.float32))
        return int(_to_u8(y)), int(_to_u8(u)), int(_to_u8(v))

    shape_yuv = [yuv_of(tr) for tr in plan.tracks]
    companion_yuv = [yuv_of(c[1]) if c else None for c in plan.companions]
    audio = None
    if plan.sample_rate is not None:
        total = int(round(plan.n_frames / fps * plan.sample_rate))
        audio = _render_track(rng, plan.sample_rate, total, plan.audio_events, cfg)

    if plan.container == "mp4":
        opts = {"preset": "ultrafast"}
    else:
        opts = {"deadline": "realtime", "cpu-used": "8"}
    # frame index -> active event index
    active = np.full(plan.n_frames, -1, dtype=np.int64)
    for k, ev in enumerate(plan.events):
        active[ev.start : ev.end] = k
    tb = Fraction(1, fps)

    with av.open(str(path), "w", format=fmt) as out:
        vs = out.add_stream(vcodec, rate=fps, options=opts)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.gop_size = 2 * fps
        ast = None
        if audio is not None:
            ast = out.add_stream(acodec, rate=plan.sample_rate)
            ast.layout = "mono"
        a_pos = 0
        for i in range(plan.n_frames):
            k = int(active[i])
            if k >= 0:
                buf = yuv_bank[i % _NOISE_BANK].copy()
                ev = plan.events[k]
                n = ev.end - ev.start
                progress = (i - ev.start) / (n - 1) if n > 1 else 0.0
                _draw_yuv(buf, h, w, plan.tracks[k], shape_yuv[k], progress)
                if k < len(plan.companions) and plan.companions[k] is not None:
                    _draw_yuv(buf, h, w, plan.companions[k][1], companion_yuv[k], progress)
            else:
                buf = yuv_bank[i % _NOISE_BANK]
            frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
            frame.pts = i
            frame.time_base = tb
            out.mux(vs.encode(frame))
            if ast is not None and audio is not None:
                a_end = min(len(audio), int(round((i + 1) * plan.sample_rate / fps)))
                for fr in _audio_frames(audio, plan.sample_rate, a_pos, a_end):  # type: ignore[arg-type]
                    out.mux(ast.encode(fr))
                a_pos = max(a_pos, a_end)
        out.mux(vs.encode(None))
        if ast is not None and audio is not None:
            for fr in _audio_frames(audio, plan.sample_rate, a_pos, len(audio)):  # type: ignore[arg-type]
                out.mux(ast.encode(fr))
            out.mux(ast.encode(None))


def _available_audio_formats(cfg: SynthConfig) -> list[str]:
    fmts = [f for f in cfg.audio_formats if _AUDIO_CONTAINERS[f][1] in av.codecs_available]
    if not fmts:
        raise UsageError(f"none of the audio formats {cfg.audio_formats} has an encoder in this PyAV build")
    return fmts


def _remove_stale_siblings(final: Path, extensions: Sequence[str]) -> None:
    for ext in extensions:
        other = final.with_suffix("." + ext)
        if other != final and other.is_file():
            other.unlink()


def _write_ground_truth(out: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write_json(tmp: Path) -> None:
        tmp.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")

    schema = pa.schema(
        [("file", pa.string()), ("modality", pa.string()), ("start", pa.float64()),
         ("end", pa.float64()), ("caption", pa.string())]
    )

    def write_parquet(tmp: Path) -> None:
        table = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table, str(tmp))

    _atomic_write(out / GROUND_TRUTH_PARQUET, write_parquet)
    _atomic_write(out / GROUND_TRUTH_JSON, write_json)


def _webm_possible(cfg: SynthConfig) -> bool:
    """webm needs VP9 + Opus encoders, an fps dividing 1000 (exact ms timestamps) and an Opus rate."""
    return (
        cfg.webm_probability > 0
        and "libvpx-vp9" in av.codecs_available
        and "libopus" in av.codecs_available
        and any(1000 % f == 0 for f in range(cfg.fps_range[0], cfg.fps_range[1] + 1))
        and bool(_sample_rates("webm", cfg.sample_rate_range))
    )


def generate_corpus(
    out_dir: str | os.PathLike[str],
    *,
    videos: int,
    audio: int,
    seed: int,
    config: SynthConfig = SynthConfig(),
) -> list[dict]:
    """Write ``videos`` videos and ``audio`` audio files plus the ground truth into ``out_dir``.

    Files are ``video_000.mp4|.webm`` and ``audio_000.wav|.flac|.mp3``, each written
    to a temp name and atomically renamed; ``ground_truth.json`` and
    ``ground_truth.parquet`` hold rows ``{"file", "modality", "start", "end",
    "caption"}`` (file relative to ``out_dir``; times in seconds), which are also
    returned.  Output is a deterministic function of ``seed`` and ``config``.
    """
    _check_count("videos", videos, lo=0)
    _check_count("audio", audio, lo=0)
    _check_count("seed", seed, lo=0)
    if not isinstance(config, SynthConfig):
        raise UsageError(f"config must be a SynthConfig, got {type(config).__name__}")
    audio_formats = _available_audio_formats(config) if audio else []
    webm_ok = _webm_possible(config)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file, not a folder: give a folder (new or existing) to write the corpus into")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the folder {exc.filename or out} ({exc.strerror or exc}): give a folder you can write to") from None
    width_v = max(3, len(str(max(videos - 1, 0))))
    width_a = max(3, len(str(max(audio - 1, 0))))
    rows: list[dict] = []

    for i in range(videos):
        rng = _rng_for(seed, _KIND_VIDEO, i)
        plan = _plan_video(rng, config, webm_ok)
        final = out / f"video_{i:0{width_v}d}.{plan.container}"
        _atomic_write(final, lambda tmp: _write_video(tmp, plan, rng, config))
        _remove_stale_siblings(final, _VIDEO_CONTAINERS)
        for k, ev in enumerate(plan.events):
            rows.append(dict(file=final.name, modality="video", start=ev.start / plan.fps,
                             end=ev.end / plan.fps, caption=ev.caption))
            if k < len(plan.companions) and plan.companions[k] is not None:  # a second shape on screen: an event too
                rows.append(dict(file=final.name, modality="video", start=ev.start / plan.fps,
                                 end=ev.end / plan.fps, caption=plan.companions[k][0]))
        for start, end, cap in plan.audio_rows:
            rows.append(dict(file=final.name, modality="audio", start=start, end=end, caption=cap))

    for i in range(audio):
        rng = _rng_for(seed, _KIND_AUDIO, i)
        fmt = audio_formats[int(rng.integers(len(audio_formats)))]
        rates = _sample_rates(fmt, config.sample_rate_range)
        sr = int(rates[int(rng.integers(len(rates)))])
        n_events = int(rng.integers(config.events_per_audio[0], config.events_per_audio[1] + 1))
        events, total = _plan_sequence(rng, sr, n_events, config.used_audio_captions, config)
        samples = _render_track(rng, sr, max(total, 1), events, config)
        container_fmt, codec = _AUDIO_CONTAINERS[fmt]
        final = out / f"audio_{i:0{width_a}d}.{fmt}"
        _atomic_write(final, lambda tmp: _write_audio_file(tmp, container_fmt, codec, samples, sr))
        _remove_stale_siblings(final, _AUDIO_CONTAINERS)
        for ev in events:
            rows.append(dict(file=final.name, modality="audio", start=ev.start / sr,
                             end=ev.end / sr, caption=ev.caption))

    _write_ground_truth(out, rows)
    return rows


def load_ground_truth(out_dir: str | os.PathLike[str]) -> list[dict]:
    """Read the ground-truth rows written by :func:`generate_corpus` (JSON, else parquet)."""
    out = Path(out_dir)
    path = out / GROUND_TRUTH_JSON
    if path.is_file():
        rows = json.loads(path.read_text(encoding="utf-8"))
    elif (out / GROUND_TRUTH_PARQUET).is_file():
        import pyarrow.parquet as pq

        rows = pq.read_table(str(out / GROUND_TRUTH_PARQUET)).to_pylist()
    else:
        raise FileNotFoundError(f"no {GROUND_TRUTH_JSON} or {GROUND_TRUTH_PARQUET} in {out}")
    if not isinstance(rows, list):
        raise UsageError(f"malformed ground truth in {out}: expected a list of rows")
    return [
        {"file": str(r["file"]), "modality": str(r["modality"]), "start": float(r["start"]),
         "end": float(r["end"]), "caption": str(r["caption"])}
        for r in rows
    ]


def paired_config(seed: int, n: int = 6, *, max_size: tuple[int, int] = (1280, 720), **overrides: Any) -> SynthConfig:
    """A corpus where ``n`` visual classes each come with one sound class, a mapping drawn from ``seed``.

    Whenever the shape is on screen its paired sound plays; gaps are silent or
    quiet noise. This is the world of the common-space (VATT) benchmark: the
    mapping is never given to the trainer, it must be learnt from co-occurrence.
    """
    if not 1 <= n <= len(AUDIO_CAPTIONS):
        raise UsageError(f"paired classes must be between 1 and {len(AUDIO_CAPTIONS)}, got {n}")
    rng = np.random.default_rng([seed, 7_777])
    visual = [VISUAL_CAPTIONS[i] for i in rng.choice(len(VISUAL_CAPTIONS), size=n, replace=False)]
    sounds = [AUDIO_CAPTIONS[i] for i in rng.permutation(len(AUDIO_CAPTIONS))[:n]]
    return SynthConfig(
        max_size=max_size,
        visual_captions=tuple(visual),
        audio_pairing=dict(zip(visual, sounds)),
        gap_noise_amplitude=0.01,
        **overrides,
    )
