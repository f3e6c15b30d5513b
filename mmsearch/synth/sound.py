"""Sounds: tones, beats, noise and chords of the synthetic audio classes."""

from __future__ import annotations

import math

import numpy as np

from ..errors import UsageError
from .visual import _check_count
from .vocabulary import (
    CHORD_ROOT_HZ,
    FAST_BEAT_PER_S,
    HIGH_TONE_HZ,
    LOW_TONE_HZ,
    SLOW_BEAT_PER_S,
    _audio_class,
)


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
