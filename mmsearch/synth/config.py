"""``SynthConfig``: the knobs of a generated corpus, validated at the boundary."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .families import Family, check_family
from .vocabulary import (
    _AUDIO_CONTAINERS,
    _COMMON_SAMPLE_RATES,
    _OPUS_SAMPLE_RATES,
    AUDIO_CAPTIONS,
    MAX_GAP_NOISE,
    VISUAL_CAPTIONS,
    normalize_audio_caption,
    parse_visual_caption,
)


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
    Opus rate (16/24/48 kHz); when there is none, every video is mp4. ``family``
    (``"default"``, ``"train"`` or ``"heldout"``, see :mod:`mmsearch.synth.families`)
    sets how sounds, shapes and backgrounds are synthesised.
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
    family: Family = "default"  # variation family of sounds, shapes and backgrounds (synth.families)
    # issue #19's harder setting: with this probability a visual event shares the screen with a second
    # shape of another caption (its own ground-truth row); the two keep to the frame's two halves
    companion_probability: float = 0.0

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
        _check_prob("companion_probability", self.companion_probability)
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

        check_family(self.family)

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
