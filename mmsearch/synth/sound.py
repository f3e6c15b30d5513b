"""Sounds: tones, beats, noise and chords of the synthetic audio classes."""

from __future__ import annotations

import math

import numpy as np

from ..errors import UsageError
from . import families as fam
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


def _synth(
    rng: np.random.Generator, cls: str, sr: int, n: int, amplitude: float, family: str = "default"
) -> np.ndarray:
    if family != "default":
        return _synth_varied(rng, cls, sr, n, amplitude, family)
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
    family: fam.Family = "default",
) -> np.ndarray:
    """Synthesize one audio event as float32 mono of ``round(seconds*sample_rate)`` samples.

    ``caption`` is an audio caption (``"a high tone"``) or class (``"high tone"``);
    the peak amplitude is ``amplitude`` or uniform in 0.1..0.5. ``family`` picks the
    variation family (:mod:`mmsearch.synth.families`): ``"default"`` is the original
    generator, ``"train"`` the wide one the tiny models learn from, ``"heldout"``
    variants they never see.
    """
    family = fam.check_family(family)  # type: ignore[assignment]
    cls = _audio_class(caption)
    _check_count("sample_rate", sample_rate, lo=1000)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0 or not math.isfinite(seconds):
        raise UsageError(f"seconds must be a positive number, got {seconds!r}")
    if amplitude is None:
        amplitude = float(rng.uniform(0.1, 0.5))
    elif not 0 < amplitude <= 1:
        raise UsageError(f"amplitude must be in (0, 1], got {amplitude!r}")
    n = max(1, int(round(seconds * sample_rate)))
    return _synth(rng, cls, int(sample_rate), n, float(amplitude), family)


# --------------------------------------------------------------------------- variation families
def _partials(rng: np.random.Generator, f0: float, timbre: str, sr: int) -> list[tuple[float, float]]:
    """(frequency, weight) of a pitched note's partials, those under 0.45 * sr."""
    if timbre == "sine":
        parts = [(1.0, 1.0)]
    elif timbre == "square":  # odd partials, 1/k
        parts = [(float(k), 1.0 / k) for k in (1, 3, 5, 7)]
    elif timbre == "triangle":  # odd partials, 1/k^2
        parts = [(float(k), 1.0 / k**2) for k in (1, 3, 5)]
    elif timbre == "octave":
        parts = [(1.0, 1.0), (2.0, float(rng.uniform(0.2, 0.5)))]
    elif timbre == "saw":  # all partials, 1/k
        parts = [(float(k), 1.0 / k) for k in range(1, 7)]
    elif timbre == "vibrato":  # held out: 2nd and 3rd partials (with vibrato, see _note)
        parts = [(1.0, 1.0), (2.0, float(rng.uniform(0.2, 0.35))), (3.0, float(rng.uniform(0.1, 0.2)))]
    else:  # pragma: no cover - the families' tables list the timbres
        raise UsageError(f"unknown timbre {timbre!r}")
    return [(f0 * k, w) for k, w in parts if f0 * k < 0.45 * sr] or [(f0, 1.0)]


def _note(rng: np.random.Generator, f0: float, timbre: str, t: np.ndarray, sr: int) -> np.ndarray:
    phase_mod = 0.0
    if timbre == "vibrato":
        rate, depth = rng.uniform(4.0, 7.0), rng.uniform(0.005, 0.015)
        # instantaneous frequency f * (1 + depth * sin(2 pi rate t)) -> phase offset per partial factor
        phase_mod = depth / (2 * np.pi * rate) * (1.0 - np.cos(2 * np.pi * rate * t))  # seconds, times f = cycles
    x = np.zeros_like(t)
    for f, w in _partials(rng, f0, timbre, sr):
        x += w * np.sin(2 * np.pi * f * (t + phase_mod) + rng.uniform(0, 2 * np.pi))
    return x


def _envelope(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float64) / sr
    if kind == "flat":
        env = np.ones(n)
    elif kind == "adsr":
        attack = rng.uniform(0.005, 0.3)
        decay = rng.uniform(0.05, 0.3)
        sustain = rng.uniform(0.5, 1.0)
        release = rng.uniform(0.02, 0.5)
        dur = n / sr
        env = np.interp(t, [0.0, attack, attack + decay, max(attack + decay, dur - release), dur],
                        [0.0, 1.0, sustain, sustain, 0.0])
    elif kind == "tremolo":
        rate, depth = rng.uniform(3.0, 8.0), rng.uniform(0.1, 0.3)
        env = 1.0 - depth * (0.5 + 0.5 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    elif kind == "decay":  # held out: struck, decaying to 30-50 % by the end
        end_level = rng.uniform(0.3, 0.5)
        env = np.exp(np.log(end_level) * t / max(t[-1], 1e-6)) if n > 1 else np.ones(n)
        env *= np.minimum(1.0, t / rng.uniform(0.005, 0.02))
    else:  # pragma: no cover
        raise UsageError(f"unknown envelope {kind!r}")
    return env


def _band_limit(x: np.ndarray, sr: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Zero the spectrum outside ``[low_hz, high_hz]`` (an ideal filter: cheap and exact)."""
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1.0 / sr)
    spec[(freqs < low_hz) | (freqs > high_hz)] = 0
    return np.fft.irfft(spec, n=len(x))


def _noise(rng: np.random.Generator, colour: str, sr: int, n: int) -> np.ndarray:
    if colour == "uniform":
        return rng.uniform(-1.0, 1.0, n)
    white = rng.standard_normal(n)
    if colour == "gaussian":
        return white
    if colour == "pink":  # 1/f power: scale the spectrum by 1/sqrt(f)
        spec = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n, 1.0 / sr)
        spec[1:] /= np.sqrt(freqs[1:] / 100.0)
        spec[0] = 0
        return np.fft.irfft(spec, n=n)
    if colour == "lowpass":
        return _band_limit(white, sr, 0.0, rng.uniform(1500.0, 6000.0))
    if colour == "hiss":  # white noise high-passed at 700-2000 Hz (tape hiss, steam, a kettle)
        return _band_limit(white, sr, min(fam.draw_band(rng, fam.NOISE_LOW_CUT_HZ["train"], log=True), 0.3 * sr), 0.5 * sr)
    if colour == "band":  # held out: band-pass noise
        ((lo, hi),) = fam.NOISE_LOW_CUT_HZ["heldout"]
        return _band_limit(white, sr, rng.uniform(lo, hi), min(rng.uniform(4000.0, 5500.0), 0.45 * sr))
    raise UsageError(f"unknown noise colour {colour!r}")  # pragma: no cover


def _varied_beats(rng: np.random.Generator, rate_hz: float, body: str, sr: int, n: int) -> np.ndarray:
    period = sr / rate_hz
    if body == "none":  # held out: a bare noise burst, (1 - t/L)^2 envelope, no click or body
        hit_len = max(1, min(int(rng.uniform(0.03, 0.09) * sr), int(period * 0.9)))
        env = (1.0 - np.arange(hit_len) / hit_len) ** 2
        noise_share = 1.0
    else:
        tau = rng.uniform(0.008, 0.06) * sr
        hit_len = max(1, min(int(6 * tau), int(period * 0.9)))
        env = np.exp(-np.arange(hit_len) / tau)
        noise_share = rng.uniform(0.2, 0.95)
    th = np.arange(hit_len) / sr
    if body == "click":
        tone = np.sin(2 * np.pi * rng.uniform(150.0, 400.0) * th)
    elif body == "kick":  # a sine whose pitch drops from 150-300 Hz to 50-80 Hz
        f_start, f_end = rng.uniform(150.0, 300.0), rng.uniform(50.0, 80.0)
        drop = rng.uniform(0.02, 0.06)
        freq = f_end + (f_start - f_end) * np.exp(-th / drop)
        tone = np.sin(2 * np.pi * np.cumsum(freq) / sr)
    elif body == "tick":
        tone = np.sin(2 * np.pi * min(rng.uniform(1000.0, 3000.0), 0.45 * sr) * th)
    else:
        tone = np.zeros(hit_len)
    jitter = rng.uniform(0.0, 0.03)
    out = np.zeros(n, dtype=np.float64)
    s_pos = rng.uniform(0.0, 0.3) * period  # the first hit need not start the event
    while True:
        s = round(s_pos)
        if s >= n:
            break
        hit = (noise_share * rng.standard_normal(hit_len) + (1.0 - noise_share) * tone) * env
        e = min(n, s + hit_len)
        out[s:e] += hit[: e - s]
        s_pos += period * (1.0 + rng.uniform(-jitter, jitter))
    return out


def _synth_varied(rng: np.random.Generator, cls: str, sr: int, n: int, amplitude: float, family: str) -> np.ndarray:
    """One event of ``cls`` drawn from the ``"train"`` or ``"heldout"`` family (see :mod:`.families`)."""
    t = np.arange(n, dtype=np.float64) / sr
    percussive = cls in ("fast beat", "slow beat")
    if cls in ("high tone", "low tone"):
        f0 = fam.draw_band(rng, fam.PITCH_HZ[family][cls], log=True)
        x = _note(rng, f0, fam.pick(rng, fam.TONE_TIMBRES[family]), t, sr)
    elif cls == "chord":
        root = fam.draw_band(rng, fam.CHORD_ROOT_BANDS[family], log=True)
        timbre = fam.pick(rng, fam.TONE_TIMBRES[family])
        if timbre in ("square", "saw"):  # a chord of those is a wall of partials; keep chords' notes clean
            timbre = "triangle"
        if family == "heldout":
            ratios = fam.CHORD_RATIOS[int(rng.integers(len(fam.CHORD_RATIOS)))]
            notes = [root * r / ratios[0] for r in ratios]
        else:
            semis = fam.CHORD_SEMITONES[int(rng.integers(len(fam.CHORD_SEMITONES)))]
            notes = [root * 2.0 ** (s / 12.0) for s in semis]
        x = sum(_note(rng, f, timbre, t, sr) for f in notes)
    elif cls == "noise":
        x = _noise(rng, fam.pick(rng, fam.NOISE_COLOURS[family]), sr, n)
    elif percussive:
        rate = fam.draw_band(rng, fam.BEATS_PER_S[family][cls])
        x = _varied_beats(rng, rate, fam.pick(rng, fam.BEAT_BODIES[family]), sr, n)
    else:  # pragma: no cover - guarded by _audio_class
        raise UsageError(f"unknown audio class {cls!r}")
    x = np.asarray(x, dtype=np.float64)
    if not percussive:
        x = x * _envelope(rng, fam.pick(rng, fam.ENVELOPES[family]), n, sr)
    peak = float(np.max(np.abs(x))) if n else 0.0
    if peak > 0:
        x *= amplitude / peak
    if rng.random() < 0.5:  # a noise floor 20-45 dB under the event's peak
        x += amplitude * 10 ** (-rng.uniform(20.0, 45.0) / 20.0) * rng.standard_normal(n)
    x = x.astype(np.float32)
    if not percussive:
        _fade(x, sr)
    return x


def degrade_audio(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """What recording chains do to a sound, as the training family draws it (float32 in, float32 out).

    Band limits of lower sample rates and lossy codecs (a low-pass at 3.4-7.5 kHz, 40 %),
    a DC-blocking high-pass of cheap microphones (60-250 Hz, 15 %), and 8-bit or mu-law
    quantisation (15 %).
    """
    y = np.asarray(x, dtype=np.float64)
    if rng.random() < 0.4:
        y = _band_limit(y, sr, 0.0, min(rng.uniform(3400.0, 7500.0), 0.5 * sr))
    if rng.random() < 0.15:
        y = _band_limit(y, sr, rng.uniform(60.0, 250.0), 0.5 * sr)
    if rng.random() < 0.15:
        if rng.random() < 0.5:
            y = np.round(y * 127.0) / 127.0
        else:
            mu = 255.0
            c = np.sign(y) * np.log1p(mu * np.minimum(np.abs(y), 1.0)) / np.log1p(mu)
            c = np.round(c * 127.0) / 127.0
            y = np.sign(c) * np.expm1(np.abs(c) * np.log1p(mu)) / mu
    return y.astype(np.float32)
