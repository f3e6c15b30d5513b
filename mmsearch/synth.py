"""Deterministic synthetic "ground-truth world" of media files with known events.

Visual events are single coloured shapes (circle/square/triangle) drifting slowly
on a dark, mildly noisy background; audio events are tones, beats, noise and
chords.  :func:`generate_corpus` writes videos (H.264/mp4 or VP9/webm, optionally
with a soundtrack) and audio-only files (wav/flac/mp3) plus a ground-truth table
of ``(file, modality, start, end, caption)`` rows.

Timing conventions (exact, by construction):

* video frame ``k`` has pts ``k`` in time base ``1/fps``; a visual row
  ``(start, end)`` satisfies ``start = K0 / fps`` and ``end = K1 / fps`` and frame
  ``k`` shows the shape iff ``K0 <= k < K1`` (equivalently ``start <= t < end``
  with ``t = k / fps``; webm files only use fps values dividing 1000, so their
  millisecond timestamps are exact too);
* an audio row has ``start = n0 / sr`` and ``end = n1 / sr`` (samples
  ``n0 <= n < n1`` contain the event), except in pairing mode where it copies
  the visual row's times and samples ``round(start*sr) <= n < round(end*sr)``
  contain the sound.

Everything is a pure function of the seed (per-file generators are derived from
``(seed, kind, index)``), so the same seed gives identical ground truth and
identical pixel/sample content.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import av
import numpy as np

from .errors import UsageError
from .fileio import atomic_write

__all__ = [
    "VISUAL_COLOURS",
    "SHAPES",
    "VISUAL_CAPTIONS",
    "AUDIO_CLASSES",
    "AUDIO_CAPTIONS",
    "GROUND_TRUTH_JSON",
    "GROUND_TRUTH_PARQUET",
    "SynthConfig",
    "parse_visual_caption",
    "normalize_audio_caption",
    "random_background_colour",
    "render_background",
    "render_visual_event",
    "synth_audio_event",
    "sample_image_caption_pairs",
    "sample_audio_caption_pairs",
    "generate_corpus",
    "load_ground_truth",
    "paired_config",
    "write_wav",
]

# --------------------------------------------------------------------------- world
VISUAL_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 200, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 220, 40),
    "white": (240, 240, 240),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
VISUAL_CAPTIONS: tuple[str, ...] = tuple(f"a {c} {s}" for c in VISUAL_COLOURS for s in SHAPES)
AUDIO_CLASSES: tuple[str, ...] = ("high tone", "low tone", "fast beat", "slow beat", "noise", "chord")
AUDIO_CAPTIONS: tuple[str, ...] = tuple(c if c == "noise" else f"a {c}" for c in AUDIO_CLASSES)

GROUND_TRUTH_JSON = "ground_truth.json"
GROUND_TRUTH_PARQUET = "ground_truth.parquet"

COLOUR_JITTER = 25
BACKGROUND_MAX = 70
SHAPE_SIZE_FRACTION = (0.2, 0.6)  # of the frame height
HIGH_TONE_HZ = (1000.0, 2000.0)
LOW_TONE_HZ = (100.0, 250.0)
FAST_BEAT_PER_S = (4.0, 6.0)
SLOW_BEAT_PER_S = (1.0, 2.0)
CHORD_ROOT_HZ = (200.0, 400.0)
MAX_GAP_NOISE = 0.02

_VIDEO_CONTAINERS = {"mp4": ("mp4", "libx264", "aac"), "webm": ("webm", "libvpx-vp9", "libopus")}
_AUDIO_CONTAINERS = {"wav": ("wav", "pcm_s16le"), "flac": ("flac", "flac"), "mp3": ("mp3", "libmp3lame")}
_COMMON_SAMPLE_RATES = (16000, 22050, 24000, 32000, 44100, 48000)
_OPUS_SAMPLE_RATES = (16000, 24000, 48000)
_AUDIO_CAPTION_OF_CLASS = dict(zip(AUDIO_CLASSES, AUDIO_CAPTIONS))
_KIND_VIDEO, _KIND_AUDIO = 0, 1
_NOISE_BANK = 4  # distinct background-noise frames cycled through per video


def parse_visual_caption(caption: str) -> tuple[str, str]:
    """Split ``"a red circle"`` into ``("red", "circle")``; UsageError (a ValueError) if unknown."""
    if not isinstance(caption, str) or caption not in VISUAL_CAPTIONS:
        raise UsageError(f"unknown visual caption {caption!r}; expected one of {list(VISUAL_CAPTIONS)}")
    _, colour, shape = caption.split(" ")
    return colour, shape


def normalize_audio_caption(caption: str) -> str:
    """Return the canonical audio caption for a caption or class name (``"high tone"``)."""
    if isinstance(caption, str):
        if caption in AUDIO_CAPTIONS:
            return caption
        if caption in _AUDIO_CAPTION_OF_CLASS:
            return _AUDIO_CAPTION_OF_CLASS[caption]
    raise UsageError(f"unknown audio caption {caption!r}; expected one of {list(AUDIO_CAPTIONS)}")


def _audio_class(caption: str) -> str:
    cap = normalize_audio_caption(caption)
    return AUDIO_CLASSES[AUDIO_CAPTIONS.index(cap)]


# --------------------------------------------------------------------------- config
def _check_range(name: str, value: Any, *, lo: float | None = None, integer: bool = False) -> None:
    ok_types = (int,) if integer else (int, float)
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, ok_types) for v in value)
    ):
        kind = "ints" if integer else "numbers"
        raise UsageError(f"{name} must be a (lo, hi) tuple of {kind}, got {value!r}")
    if not all(math.isfinite(v) for v in value):
        raise UsageError(f"{name} must be finite, got {value!r}")
    if value[0] > value[1]:
        raise UsageError(f"{name} must satisfy lo <= hi, got {value!r}")
    if lo is not None and value[0] < lo:
        raise UsageError(f"{name} must be >= {lo}, got {value!r}")


def _check_prob(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise UsageError(f"{name} must be a probability in [0, 1], got {value!r}")


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of the synthetic world; ranges are inclusive ``(lo, hi)`` tuples.

    Sizes are ``(width, height)`` and are rounded to even numbers.  When
    ``audio_pairing`` (visual caption -> audio caption) is set, every video gets
    a soundtrack in which the paired sound plays exactly while its shape is on
    screen; ``visual_captions`` then defaults to the pairing's keys.  webm files
    use an fps in ``fps_range`` that divides 1000 (10, 20, 25 by default) and an
    Opus rate (16/24/48 kHz); when there is none, every video is mp4.
    """

    min_size: tuple[int, int] = (160, 120)
    max_size: tuple[int, int] = (1280, 720)
    fps_range: tuple[int, int] = (10, 30)
    event_seconds: tuple[float, float] = (2.0, 15.0)
    gap_seconds: tuple[float, float] = (0.0, 5.0)
    events_per_video: tuple[int, int] = (2, 4)
    events_per_audio: tuple[int, int] = (2, 4)
    audio_in_video_probability: float = 0.7
    webm_probability: float = 0.3
    visual_captions: tuple[str, ...] | None = None
    audio_pairing: dict[str, str] | None = None
    audio_captions: tuple[str, ...] | None = None  # subset for unpaired audio (default all 6)
    sample_rate_range: tuple[int, int] = (16000, 48000)
    audio_formats: tuple[str, ...] = ("wav", "flac", "mp3")  # for audio-only files
    amplitude_range: tuple[float, float] = (0.1, 0.5)
    gap_noise_amplitude: float = 0.0  # 0 = silent gaps, else quiet white noise (<= 0.02)
    noise_sigma: float = 4.0  # gaussian background noise, in 8-bit RGB units
    max_drift: float = 0.15  # max shape displacement over an event, fraction of frame size

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:  # accept lists (e.g. from JSON/CLI) but store tuples
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("min_size", "max_size"):
            v = getattr(self, name)
            if (
                not isinstance(v, tuple)
                or len(v) != 2
                or any(isinstance(x, bool) or not isinstance(x, int) or x < 16 for x in v)
            ):
                raise UsageError(f"{name} must be a (width, height) pair of ints >= 16, got {v!r}")
        (wlo, hlo), (whi, hhi) = self.min_size, self.max_size
        if wlo > whi or hlo > hhi:
            raise UsageError(f"min_size {self.min_size} must not exceed max_size {self.max_size}")
        if _even_ceil(wlo) > whi or _even_ceil(hlo) > hhi:
            raise UsageError(f"size range {self.min_size}..{self.max_size} contains no even dimensions")
        _check_range("fps_range", self.fps_range, lo=1, integer=True)
        _check_range("event_seconds", self.event_seconds, lo=0)
        if self.event_seconds[0] <= 0:
            raise UsageError(f"event_seconds must be > 0, got {self.event_seconds!r}")
        _check_range("gap_seconds", self.gap_seconds, lo=0)
        _check_range("events_per_video", self.events_per_video, lo=1, integer=True)
        _check_range("events_per_audio", self.events_per_audio, lo=1, integer=True)
        _check_prob("audio_in_video_probability", self.audio_in_video_probability)
        _check_prob("webm_probability", self.webm_probability)
        _check_range("sample_rate_range", self.sample_rate_range, lo=1, integer=True)
        if not _sample_rates("mp4", self.sample_rate_range):
            raise UsageError(
                f"sample_rate_range {self.sample_rate_range} contains none of the supported rates "
                f"{_COMMON_SAMPLE_RATES}"
            )
        _check_range("amplitude_range", self.amplitude_range)
        if self.amplitude_range[0] <= 0 or self.amplitude_range[1] > 1:
            raise UsageError(f"amplitude_range must lie in (0, 1], got {self.amplitude_range!r}")
        g = self.gap_noise_amplitude
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0.0 <= g <= MAX_GAP_NOISE:
            raise UsageError(f"gap_noise_amplitude must be in [0, {MAX_GAP_NOISE}], got {g!r}")
        s = self.noise_sigma
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s <= 32.0:
            raise UsageError(f"noise_sigma must be in [0, 32], got {s!r}")
        d = self.max_drift
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= d <= 1.0:
            raise UsageError(f"max_drift must be in [0, 1], got {d!r}")

        fmts = self.audio_formats
        if isinstance(fmts, str) or not isinstance(fmts, tuple) or not fmts:
            raise UsageError(f"audio_formats must be a non-empty tuple, got {fmts!r}")
        for f in fmts:
            if f not in _AUDIO_CONTAINERS:
                raise UsageError(f"unknown audio format {f!r}; expected some of {list(_AUDIO_CONTAINERS)}")

        pairing = self.audio_pairing
        if pairing is not None:
            if not isinstance(pairing, dict) or not pairing:
                raise UsageError(f"audio_pairing must be a non-empty dict, got {pairing!r}")
            norm: dict[str, str] = {}
            for k, v in pairing.items():
                parse_visual_caption(k)
                norm[k] = normalize_audio_caption(v)
            object.__setattr__(self, "audio_pairing", norm)

        vis = self.visual_captions
        if vis is not None:
            if isinstance(vis, str) or not isinstance(vis, (tuple, list)) or not vis:
                raise UsageError(f"visual_captions must be a non-empty tuple, got {vis!r}")
            for c in vis:
                parse_visual_caption(c)
            object.__setattr__(self, "visual_captions", tuple(vis))
            if pairing is not None:
                missing = [c for c in vis if c not in self.audio_pairing]  # type: ignore[operator]
                if missing:
                    raise UsageError(f"audio_pairing has no audio caption for {missing}")

        aud = self.audio_captions
        if aud is not None:
            if isinstance(aud, str) or not isinstance(aud, (tuple, list)) or not aud:
                raise UsageError(f"audio_captions must be a non-empty tuple, got {aud!r}")
            object.__setattr__(self, "audio_captions", tuple(normalize_audio_caption(c) for c in aud))

    @property
    def used_visual_captions(self) -> tuple[str, ...]:
        """Visual captions events are drawn from."""
        if self.visual_captions is not None:
            return self.visual_captions
        if self.audio_pairing is not None:
            return tuple(c for c in VISUAL_CAPTIONS if c in self.audio_pairing)
        return VISUAL_CAPTIONS

    @property
    def used_audio_captions(self) -> tuple[str, ...]:
        """Audio captions unpaired audio events are drawn from."""
        return self.audio_captions if self.audio_captions is not None else AUDIO_CAPTIONS


_TUPLE_FIELDS = (
    "min_size", "max_size", "fps_range", "event_seconds", "gap_seconds", "events_per_video",
    "events_per_audio", "visual_captions", "audio_captions", "sample_rate_range", "audio_formats",
    "amplitude_range",
)


def _even_ceil(x: int) -> int:
    return x + (x % 2)


def _sample_rates(container: str, rate_range: tuple[int, int]) -> list[int]:
    rates = _OPUS_SAMPLE_RATES if container == "webm" else _COMMON_SAMPLE_RATES
    return [r for r in rates if rate_range[0] <= r <= rate_range[1]]


# --------------------------------------------------------------------------- drawing
def random_background_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random dark RGB colour (each channel 0..70)."""
    c = rng.integers(0, BACKGROUND_MAX + 1, size=3)
    return (int(c[0]), int(c[1]), int(c[2]))


def _jitter_colour(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    base = np.array(VISUAL_COLOURS[colour], dtype=np.int64)
    c = np.clip(base + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def _check_dims(width: Any, height: Any) -> None:
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 8:
            raise UsageError(f"{name} must be an int >= 8, got {v!r}")


def _check_count(name: str, v: Any, lo: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise UsageError(f"{name} must be an int >= {lo}, got {v!r}")


def _noise_frames(
    rng: np.random.Generator, colour: tuple[int, int, int], width: int, height: int, n: int, sigma: float
) -> np.ndarray:
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    base = np.asarray(colour, dtype=np.float32)
    for i in range(n):
        if sigma > 0:
            f = rng.standard_normal((height, width, 3), dtype=np.float32)
            f *= sigma
            f += base
            np.rint(f, out=f)
            np.clip(f, 0, 255, out=f)
            out[i] = f
        else:
            out[i] = colour
    return out


def render_background(
    rng: np.random.Generator,
    width: int,
    height: int,
    n_frames: int = 1,
    colour: tuple[int, int, int] | None = None,
    noise_sigma: float = 4.0,
) -> np.ndarray:
    """Dark background frames, uint8 ``(n_frames, H, W, 3)``: a flat colour plus gaussian noise.

    ``colour`` defaults to :func:`random_background_colour`; each frame gets fresh noise.
    """
    _check_dims(width, height)
    _check_count("n_frames", n_frames)
    if noise_sigma < 0:
        raise UsageError(f"noise_sigma must be >= 0, got {noise_sigma!r}")
    if colour is None:
        colour = random_background_colour(rng)
    colour = _as_rgb(colour)
    return _noise_frames(rng, colour, width, height, n_frames, float(noise_sigma))


def _as_rgb(colour: Any) -> tuple[int, int, int]:
    try:
        c = tuple(int(v) for v in colour)
    except TypeError as e:
        raise UsageError(f"colour must be an (r, g, b) triple, got {colour!r}") from e
    if len(c) != 3 or not all(0 <= v <= 255 for v in c):
        raise UsageError(f"colour must be an (r, g, b) triple of 0..255, got {colour!r}")
    return c  # type: ignore[return-value]


def _shape_mask(
    shape: str, size: float, x: float, y: float, plane_w: int, plane_h: int, scale: int = 1
) -> tuple[int, int, int, int, np.ndarray]:
    """Mask of ``shape`` with bounding box ``[x, x+size) x [y, y+size)`` (full-res pixels).

    Evaluated on a plane whose pixels are ``scale`` full-res pixels wide (2 for
    yuv420p chroma).  Returns ``(i0, i1, j0, j1, mask)`` for ``plane[i0:i1, j0:j1]``.
    """
    j0 = max(0, int(math.floor(x / scale)))
    j1 = min(plane_w, int(math.ceil((x + size) / scale)))
    i0 = max(0, int(math.floor(y / scale)))
    i1 = min(plane_h, int(math.ceil((y + size) / scale)))
    u = (np.arange(j0, j1, dtype=np.float32) + 0.5) * scale - x  # horizontal offset in bbox
    v = (np.arange(i0, i1, dtype=np.float32) + 0.5) * scale - y
    u = u[None, :]
    v = v[:, None]
    half = size / 2.0
    if shape == "circle":
        mask = (u - half) ** 2 + (v - half) ** 2 <= half * half
    elif shape == "square":
        mask = (u >= 0) & (u < size) & (v >= 0) & (v < size)
    elif shape == "triangle":  # apex at top centre, base along the bottom edge
        mask = (v >= 0) & (v < size) & (np.abs(u - half) <= v / 2.0)
    else:
        raise UsageError(f"unknown shape {shape!r}")
    return i0, i1, j0, j1, mask


@dataclass(frozen=True)
class _ShapeTrack:
    """One visual event: a shape of fixed size and colour moving linearly."""

    shape: str
    rgb: tuple[int, int, int]
    size: float
    start_xy: tuple[float, float]
    end_xy: tuple[float, float]

    def xy(self, progress: float) -> tuple[float, float]:
        (x0, y0), (x1, y1) = self.start_xy, self.end_xy
        return x0 + (x1 - x0) * progress, y0 + (y1 - y0) * progress


def _plan_shape(
    rng: np.random.Generator, caption: str, width: int, height: int, max_drift: float = 0.15
) -> _ShapeTrack:
    colour, shape = parse_visual_caption(caption)
    rgb = _jitter_colour(rng, colour)
    frac = rng.uniform(*SHAPE_SIZE_FRACTION)
    size = float(min(frac * height, width - 2, height - 2))
    xmax, ymax = width - size, height - size
    x0, y0 = rng.uniform(0, xmax), rng.uniform(0, ymax)
    dx, dy = rng.uniform(-max_drift, max_drift) * width, rng.uniform(-max_drift, max_drift) * height
    x1, y1 = float(np.clip(x0 + dx, 0, xmax)), float(np.clip(y0 + dy, 0, ymax))
    return _ShapeTrack(shape, rgb, size, (float(x0), float(y0)), (x1, y1))


def _draw_rgb(frame: np.ndarray, track: _ShapeTrack, progress: float) -> None:
    h, w = frame.shape[:2]
    x, y = track.xy(progress)
    i0, i1, j0, j1, mask = _shape_mask(track.shape, track.size, x, y, w, h)
    frame[i0:i1, j0:j1][mask] = track.rgb


def render_visual_event(
    rng: np.random.Generator,
    caption: str,
    width: int,
    height: int,
    n_frames: int = 1,
    background: np.ndarray | tuple[int, int, int] | None = None,
    *,
    max_drift: float = 0.15,
) -> np.ndarray:
    """Render a visual event as uint8 ``(n_frames, H, W, 3)`` with the shape drifting slowly.

    ``background``: None (random dark colour + noise), an RGB colour (plus noise), or
    an array ``(H, W, 3)`` / ``(n_frames, H, W, 3)`` used as is.
    """
    parse_visual_caption(caption)
    _check_dims(width, height)
    _check_count("n_frames", n_frames)
    if isinstance(background, np.ndarray):
        bg = background
        if bg.ndim == 3:
            bg = np.broadcast_to(bg, (n_frames, *bg.shape))
        if bg.shape != (n_frames, height, width, 3):
            raise UsageError(
                f"background array has shape {background.shape}, expected ({height}, {width}, 3) "
                f"or ({n_frames}, {height}, {width}, 3)"
            )
        frames = np.array(bg, dtype=np.uint8)
    else:
        colour = random_background_colour(rng) if background is None else _as_rgb(background)
        frames = _noise_frames(rng, colour, width, height, n_frames, 4.0)
    track = _plan_shape(rng, caption, width, height, max_drift)
    for i in range(n_frames):
        _draw_rgb(frames[i], track, i / (n_frames - 1) if n_frames > 1 else 0.0)
    return frames


# --------------------------------------------------------------------------- yuv420p
def _rgb_to_yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 limited-range conversion (what swscale assumes for untagged streams)."""
    r, g, b = (rgb[..., k].astype(np.float32) for k in range(3))
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    return y, u, v


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _rgb_frame_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """RGB ``(H, W, 3)`` -> PyAV yuv420p layout ``(H*3//2, W)`` (Y, then U, then V planes)."""
    h, w = rgb.shape[:2]
    y, u, v = _rgb_to_yuv(rgb)
    out = np.empty((h * 3 // 2, w), dtype=np.uint8)
    out[:h] = _to_u8(y)
    pu, pv = _chroma_planes(out, h, w)
    pu[:] = _to_u8(u.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)))
    pv[:] = _to_u8(v.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)))
    return out


def _chroma_planes(buf: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    flat = buf.reshape(-1)  # planes are stored back to back: Y (h*w), U and V (h/2 * w/2 each)
    q = (h // 2) * (w // 2)
    return flat[h * w : h * w + q].reshape(h // 2, w // 2), flat[h * w + q : h * w + 2 * q].reshape(h // 2, w // 2)


def _draw_yuv(buf: np.ndarray, h: int, w: int, track: _ShapeTrack, yuv: tuple[int, int, int], progress: float) -> None:
    x, y = track.xy(progress)
    i0, i1, j0, j1, mask = _shape_mask(track.shape, track.size, x, y, w, h)
    buf[:h][i0:i1, j0:j1][mask] = yuv[0]
    pu, pv = _chroma_planes(buf, h, w)
    i0, i1, j0, j1, mask = _shape_mask(track.shape, track.size, x, y, w // 2, h // 2, scale=2)
    pu[i0:i1, j0:j1][mask] = yuv[1]
    pv[i0:i1, j0:j1][mask] = yuv[2]


# --------------------------------------------------------------------------- audio
def _fade(x: np.ndarray, sample_rate: int, seconds: float = 0.005) -> np.ndarray:
    n = min(int(sample_rate * seconds), len(x) // 2)
    if n > 1:
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n, dtype=np.float64))).astype(np.float32)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _beats(rng: np.random.Generator, rate_range: tuple[float, float], sr: int, n: int) -> np.ndarray:
    rate = rng.uniform(*rate_range)
    period = sr / rate
    tau = rng.uniform(0.015, 0.035) * sr  # decay constant in samples
    hit_len = max(1, min(int(6 * tau), int(period * 0.9)))
    env = np.exp(-np.arange(hit_len, dtype=np.float32) / np.float32(tau))
    click_hz = rng.uniform(150.0, 400.0)
    click = np.sin(2 * np.pi * click_hz * np.arange(hit_len, dtype=np.float32) / sr).astype(np.float32)
    out = np.zeros(n, dtype=np.float32)
    k = 0
    while True:
        s = int(round(k * period))
        if s >= n:
            break
        noise = rng.uniform(-1.0, 1.0, hit_len).astype(np.float32)
        hit = (0.7 * noise + 0.3 * click) * env
        e = min(n, s + hit_len)
        out[s:e] = hit[: e - s]
        k += 1
    return out


def _synth(rng: np.random.Generator, cls: str, sr: int, n: int, amplitude: float) -> np.ndarray:
    t = np.arange(n, dtype=np.float64) / sr
    if cls in ("high tone", "low tone"):
        f = rng.uniform(*(HIGH_TONE_HZ if cls == "high tone" else LOW_TONE_HZ))
        x = np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    elif cls == "chord":
        root = rng.uniform(*CHORD_ROOT_HZ)
        x = sum(
            np.sin(2 * np.pi * root * 2.0 ** (semi / 12.0) * t + rng.uniform(0, 2 * np.pi))
            for semi in (0, 4, 7)
        )
    elif cls == "noise":
        x = rng.uniform(-1.0, 1.0, n)
    elif cls == "fast beat":
        x = _beats(rng, FAST_BEAT_PER_S, sr, n)
    elif cls == "slow beat":
        x = _beats(rng, SLOW_BEAT_PER_S, sr, n)
    else:  # pragma: no cover - guarded by _audio_class
        raise UsageError(f"unknown audio class {cls!r}")
    x = np.asarray(x, dtype=np.float32)
    peak = float(np.max(np.abs(x))) if n else 0.0
    if peak > 0:
        x *= np.float32(amplitude / peak)
    if cls not in ("fast beat", "slow beat"):
        _fade(x, sr)
    return x


def synth_audio_event(
    rng: np.random.Generator,
    caption: str,
    sample_rate: int,
    seconds: float,
    *,
    amplitude: float | None = None,
) -> np.ndarray:
    """Synthesize one audio event as float32 mono of ``round(seconds*sample_rate)`` samples.

    ``caption`` is an audio caption (``"a high tone"``) or class (``"high tone"``);
    the peak amplitude is ``amplitude`` or uniform in 0.1..0.5.
    """
    cls = _audio_class(caption)
    _check_count("sample_rate", sample_rate, lo=1000)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0 or not math.isfinite(seconds):
        raise UsageError(f"seconds must be a positive number, got {seconds!r}")
    if amplitude is None:
        amplitude = float(rng.uniform(0.1, 0.5))
    elif not 0 < amplitude <= 1:
        raise UsageError(f"amplitude must be in (0, 1], got {amplitude!r}")
    n = max(1, int(round(seconds * sample_rate)))
    return _synth(rng, cls, int(sample_rate), n, float(amplitude))


# --------------------------------------------------------------------------- training pairs
def _check_size(size: Any) -> tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise UsageError(f"size must be a (width, height) pair, got {size!r}")
    _check_dims(size[0], size[1])
    return int(size[0]), int(size[1])


def sample_image_caption_pairs(
    rng: np.random.Generator,
    n: int,
    size: tuple[int, int] = (64, 64),
    *,
    captions: Sequence[str] | None = None,
    vary_aspect: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """``n`` random single frames of random visual events: uint8 ``(n, H, W, 3)`` and captions.

    ``size`` is ``(width, height)``.  Each image has its own background, shape
    size and position; with ``vary_aspect`` about half are rendered at another
    resolution (0.5-1.5x, aspect within +-10%) and resized to ``size``, which adds
    resampling blur and slight stretching as seen on downscaled video frames.
    """
    from PIL import Image

    _check_count("n", n, lo=0)
    w, h = _check_size(size)
    pool = tuple(captions) if captions is not None else VISUAL_CAPTIONS
    if not pool:
        raise UsageError("captions must not be empty")
    for c in pool:
        parse_visual_caption(c)
    images = np.empty((n, h, w, 3), dtype=np.uint8)
    labels: list[str] = []
    for i in range(n):
        cap = pool[int(rng.integers(len(pool)))]
        if vary_aspect and rng.random() < 0.5:
            scale = rng.uniform(0.5, 1.5)
            rh = int(max(16, round(h * scale)))
            rw = int(max(16, round(w * scale * rng.uniform(0.9, 1.1))))
            img = render_visual_event(rng, cap, rw, rh)[0]
            img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
        else:
            img = render_visual_event(rng, cap, w, h)[0]
        images[i] = img
        labels.append(cap)
    return images, labels


def sample_audio_caption_pairs(
    rng: np.random.Generator,
    n: int,
    sample_rate: int,
    seconds: float,
    *,
    captions: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """``n`` random audio events: float32 ``(n, round(seconds*sample_rate))`` and captions."""
    _check_count("n", n, lo=0)
    _check_count("sample_rate", sample_rate, lo=1000)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise UsageError(f"seconds must be a positive number, got {seconds!r}")
    pool = tuple(normalize_audio_caption(c) for c in captions) if captions is not None else AUDIO_CAPTIONS
    if not pool:
        raise UsageError("captions must not be empty")
    length = max(1, int(round(seconds * sample_rate)))
    out = np.empty((n, length), dtype=np.float32)
    labels: list[str] = []
    for i in range(n):
        cap = pool[int(rng.integers(len(pool)))]
        out[i] = synth_audio_event(rng, cap, sample_rate, seconds)
        labels.append(cap)
    return out, labels


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
            track[s:e] = _synth(rng, _audio_class(ev.caption), sr, e - s, amp)
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
    tracks = tuple(_plan_shape(rng, ev.caption, width, height, cfg.max_drift) for ev in events)

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
    return _VideoPlan(
        width, height, fps, n_frames, container, background, tuple(events), tracks,
        sample_rate, tuple(audio_events), tuple(audio_rows),
    )


def _write_video(path: Path, plan: _VideoPlan, rng: np.random.Generator, cfg: SynthConfig) -> None:
    w, h, fps = plan.width, plan.height, plan.fps
    fmt, vcodec, acodec = _VIDEO_CONTAINERS[plan.container]
    bank = _noise_frames(rng, plan.background, w, h, _NOISE_BANK, float(cfg.noise_sigma))
    yuv_bank = [_rgb_frame_to_yuv420p(f) for f in bank]
    del bank
    shape_yuv = []
    for tr in plan.tracks:
        y, u, v = _rgb_to_yuv(np.asarray(tr.rgb, dtype=np.float32))
        shape_yuv.append((int(_to_u8(y)), int(_to_u8(u)), int(_to_u8(v))))
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
    out.mkdir(parents=True, exist_ok=True)
    width_v = max(3, len(str(max(videos - 1, 0))))
    width_a = max(3, len(str(max(audio - 1, 0))))
    rows: list[dict] = []

    for i in range(videos):
        rng = _rng_for(seed, _KIND_VIDEO, i)
        plan = _plan_video(rng, config, webm_ok)
        final = out / f"video_{i:0{width_v}d}.{plan.container}"
        _atomic_write(final, lambda tmp: _write_video(tmp, plan, rng, config))
        _remove_stale_siblings(final, _VIDEO_CONTAINERS)
        for ev in plan.events:
            rows.append(dict(file=final.name, modality="video", start=ev.start / plan.fps,
                             end=ev.end / plan.fps, caption=ev.caption))
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
