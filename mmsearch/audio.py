"""Audio ingestion: probe, decode, mix to mono, resample, cut into windows.

Any file FFmpeg reads works: audio files (wav, flac, mp3, ogg/vorbis, opus,
m4a/aac) and the first audio track of videos (mp4, mkv, webm, mov). Decoding
goes through PyAV by default (``backend="pyav"``), streamed chunk by chunk, so
an hour of audio never sits in memory whole when :func:`iter_audio_windows` is
used; decord's ``AudioReader`` is a second backend (``backend="decord"``) that
decodes the whole track at once.

Conventions
-----------
* Samples are float32 mono in [-1, 1]: the mono mix is the **mean** of the
  channels (so a full-scale tone on one channel of a stereo file becomes a
  half-scale tone), resampled with FFmpeg's resampler (libswresample) to the
  ``sample_rate`` asked for (the encoder's rate).
* Times are seconds from the start of the media as a player shows it (the
  stream's pts minus the container's start time, as for frames in
  :mod:`mmsearch.media`): ``offset`` is the time of the first decoded sample
  (usually 0; a video whose audio starts late has offset > 0) and sample ``i``
  is at ``offset + i / sample_rate``. Samples with negative timestamps (codec
  priming that the decoder did not drop) are discarded so the offset is never
  negative. The track is assumed continuous after its first sample.
* Windows start at ``k * hop`` seconds after the first sample and last
  ``window`` seconds; the last window is the first one that reaches the end of
  the file and is **kept shorter** (not padded: the CLAP feature extractor
  repeat-pads short clips itself). So windows cover the whole file, and a file
  shorter than ``window`` gives one window as long as the file.
* A window is *silent* when no 1024-sample frame of it has an RMS level above
  ``threshold_db`` dBFS (-60 by default). Silent windows are still returned,
  marked ``silent=True``, so the caller can skip embedding them and report
  them; :func:`check_audible` (or :func:`iter_audio_windows` at the end of the
  file) turns a wholly silent file into :class:`NoAudioError`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .errors import DecodeError, NoAudioError, UsageError
from .avutil import container_start, demux_damage, error_text, ffmpeg_errors, stream_end, stream_origin, unwrap

__all__ = [
    "AUDIO_BACKENDS",
    "DEFAULT_AUDIO_BACKEND",
    "DEFAULT_HOP",
    "DEFAULT_WINDOW",
    "SILENCE_DB",
    "AudioDamage",
    "AudioInfo",
    "AudioWindow",
    "audio_windows",
    "check_audible",
    "is_silent",
    "iter_audio_chunks",
    "iter_audio_windows",
    "level_db",
    "load_audio",
    "probe_audio",
    "window_bounds",
]

DEFAULT_WINDOW = 10.0
DEFAULT_HOP = 5.0
SILENCE_DB = -60.0
LEVEL_FRAME = 1024  # samples per frame when measuring the loudest part of a clip
MAX_DAMAGED_PACKETS = 1000
AUDIO_BACKENDS = ("pyav", "decord")
DEFAULT_AUDIO_BACKEND = "pyav"


@dataclass(frozen=True)
class AudioInfo:
    """What a probe learns about the first audio stream of a file (its native rate and channels)."""

    path: str
    duration: float
    sample_rate: int
    channels: int


@dataclass(frozen=True, eq=False)
class AudioWindow:
    """A stretch of mono samples and its [start, end) seconds on the file's timeline."""

    start: float
    end: float
    samples: np.ndarray = field(repr=False)
    silent: bool = False

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class AudioDamage:
    """What decoding a damaged sound stream cost, filled in by the decoders when passed as ``damage``.

    ``damaged_packets``: packets that failed or were flagged corrupt, and errors FFmpeg logged;
    ``lost_seconds``: stretches the stream skipped (filled with silence, so later samples keep
    their times) and the tail missing before the stream's stated end.
    """

    damaged_packets: int = 0
    lost_seconds: float = 0.0


# --------------------------------------------------------------------------- checks
def _check_rate(sample_rate: object) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate < 1000:
        raise UsageError(f"sample_rate must be an int >= 1000 Hz, got {sample_rate!r}")
    return int(sample_rate)


def _check_window(window: float, hop: float) -> None:
    for name, v in (("window", window), ("hop", hop)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise UsageError(f"audio {name} must be a positive number of seconds, got {v!r}")
    if hop > window:
        raise UsageError(f"audio hop ({hop} s) must not exceed the window ({window} s), or windows would leave gaps")


def _check_backend(backend: str) -> str:
    if backend not in AUDIO_BACKENDS:
        raise UsageError(f"unknown audio backend {backend!r}; choose one of {list(AUDIO_BACKENDS)}")
    return backend


def _max_samples(max_seconds: float | None, sample_rate: int) -> int | None:
    if max_seconds is None:
        return None
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) or not max_seconds > 0:
        raise UsageError(f"max_seconds must be a positive number or None, got {max_seconds!r}")
    return max(1, int(round(max_seconds * sample_rate)))


# --------------------------------------------------------------------------- levels
def level_db(samples: np.ndarray, *, frame: int = LEVEL_FRAME) -> float:
    """Level of the loudest ``frame``-sample stretch, as RMS in dBFS (``-inf`` for empty or all-zero audio)."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if x.size == 0:
        return float("-inf")
    n = x.size // frame
    if n == 0:
        peak_power = float(np.mean(np.square(x, dtype=np.float64)))
    else:
        body = x[: n * frame].reshape(n, frame).astype(np.float64)
        peak_power = float(np.max(np.mean(np.square(body), axis=1)))
        tail = x[n * frame :]
        if tail.size >= frame // 4:  # a short tail counts too, unless it is a handful of samples
            peak_power = max(peak_power, float(np.mean(np.square(tail, dtype=np.float64))))
    if peak_power <= 0.0:
        return float("-inf")
    return 10.0 * math.log10(peak_power)


def is_silent(samples: np.ndarray, threshold_db: float = SILENCE_DB) -> bool:
    """True when no 1024-sample frame of ``samples`` is louder than ``threshold_db`` dBFS (RMS)."""
    return level_db(samples) <= threshold_db


def check_audible(
    path: str | os.PathLike,
    audio: np.ndarray | Iterable[AudioWindow],
    *,
    threshold_db: float = SILENCE_DB,
) -> None:
    """Raise :class:`NoAudioError` when a whole file is silent (samples, or all of its windows)."""
    if isinstance(audio, np.ndarray):
        silent = audio.size == 0 or is_silent(audio, threshold_db)
    else:
        windows = list(audio)
        silent = all(w.silent for w in windows)
    if silent:
        raise NoAudioError(path, f"the audio is silent (nothing louder than {threshold_db:g} dBFS)", stage="audio")


# --------------------------------------------------------------------------- probing
def _open(path: str):  # noqa: ANN202 - av types are untyped
    import av

    try:
        return av.open(path)
    except Exception as exc:  # av raises many error types, all mean "cannot read"
        raise DecodeError(path, f"cannot open container ({error_text(exc)})") from None


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """Duration, native sample rate and channel count of the first audio stream.

    Raises :class:`DecodeError` when the container cannot be read and
    :class:`NoAudioError` when it has no audio stream.
    """
    path = os.fspath(path)
    container = _open(path)
    with container:
        if not container.streams.audio:
            raise NoAudioError(path, "the file has no audio stream", stage="audio")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        rate = int(ctx.sample_rate or stream.rate or 0)
        channels = int(getattr(ctx, "channels", 0) or 0)
        if not channels and ctx.layout is not None:
            channels = len(ctx.layout.channels)
        duration = stream_end(container, stream)
    if not math.isfinite(duration) or duration <= 0:
        # Some containers (raw streams) do not say: count the samples.
        total = 0
        for chunk_start, chunk in iter_audio_chunks(path, sample_rate=max(rate, 1000)):
            total += len(chunk)
        duration = total / max(rate, 1000)
    return AudioInfo(path, duration, rate, channels)


# --------------------------------------------------------------------------- decoding
def iter_audio_chunks(
    path: str | os.PathLike,
    *,
    sample_rate: int,
    max_seconds: float | None = None,
    backend: str = DEFAULT_AUDIO_BACKEND,
    damage: AudioDamage | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Decode the first audio stream as consecutive mono float32 chunks at ``sample_rate``.

    Yields ``(time, chunk)``: ``time`` is the timestamp (seconds) of the
    chunk's first sample; chunks are contiguous (a stretch a damaged stream
    skipped comes back as silence), so only the first time is informative.
    ``damage``, when given, is filled in once decoding ends (:class:`AudioDamage`).
    Raises :class:`DecodeError` for unreadable files and :class:`NoAudioError`
    when there is no audio stream or no sample decodes.
    """
    path = os.fspath(path)
    sample_rate = _check_rate(sample_rate)
    limit = _max_samples(max_seconds, sample_rate)
    damage = damage if damage is not None else AudioDamage()
    if _check_backend(backend) == "decord":
        samples, offset = _decord_load(path, sample_rate)
        if limit is not None:
            samples = samples[:limit]
        # decord does not say what it skipped: PyAV's scan of the packets, and the stream's stated end, do
        errors, _ = demux_damage(path, "audio")
        stated = _stated_end(path)
        missing = stated - offset - samples.size / sample_rate if math.isfinite(stated) and limit is None else 0.0
        if errors or missing > max(1.0, 0.02 * stated):  # (a stated length is an estimate for some formats)
            damage.damaged_packets = max(errors, 1)
            damage.lost_seconds = round(max(0.0, missing), 3)
        if samples.size:
            yield offset, samples
        return
    yield from _pyav_chunks(path, sample_rate, limit, damage)


def _stated_end(path: str) -> float:
    """Where the audio stream itself says it ends, seconds from the media's start (nan when it does not say)."""
    try:
        with _open(path) as container:
            return stream_end(container, container.streams.audio[0], stated_only=True) if container.streams.audio else float("nan")
    except DecodeError:
        return float("nan")


GAP_SECONDS = 0.1  # a jump in the stream's times longer than this is a stretch it skipped (damage)


def _pyav_chunks(path: str, sample_rate: int, limit: int | None, damage: AudioDamage) -> Iterator[tuple[float, np.ndarray]]:
    import av

    container = _open(path)
    with container, ffmpeg_errors() as logs:
        if not container.streams.audio:
            raise NoAudioError(path, "the file has no audio stream", stage="audio")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        origin = container_start(container)
        damaged = 0
        resampler = None
        resampler_key = None
        offset: float | None = None
        to_skip = 0  # samples before time 0, dropped
        produced = 0

        def frames() -> Iterator:
            nonlocal damaged
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    return
                except av.error.FFmpegError:  # truncated or broken container: keep what decoded
                    damaged += 1
                    return
                damaged += bool(packet.is_corrupt)
                try:
                    yield from packet.decode()
                except av.error.FFmpegError:
                    damaged += 1
                    if damaged > MAX_DAMAGED_PACKETS:
                        raise DecodeError(path, f"more than {MAX_DAMAGED_PACKETS} damaged audio packets") from None

        def convert(out_frames: list) -> np.ndarray | None:
            parts = []
            for of in out_frames:
                arr = of.to_ndarray()  # planar float: (channels, n)
                if arr.ndim == 2 and arr.shape[0] > 1:
                    arr = arr.mean(axis=0, dtype=np.float32)
                parts.append(np.asarray(arr, dtype=np.float32).reshape(-1))
            if not parts:
                return None
            return np.concatenate(parts) if len(parts) > 1 else parts[0]

        def emit(chunk: np.ndarray | None) -> Iterator[tuple[float, np.ndarray]]:
            nonlocal to_skip, produced
            if chunk is None or chunk.size == 0:
                return
            if to_skip:
                cut = min(to_skip, chunk.size)
                chunk = chunk[cut:]
                to_skip -= cut
            if limit is not None:
                chunk = chunk[: max(0, limit - produced)]
            if chunk.size:
                t = (offset or 0.0) + produced / sample_rate
                produced += chunk.size
                yield t, chunk

        skipped = 0.0  # seconds of silence put in for stretches the stream skipped
        for frame in frames():
            t0 = frame.time
            if t0 is not None and math.isfinite(t0):
                t0 = unwrap(container, stream, float(t0), origin)
            if offset is None:
                offset = float(t0) - origin if t0 is not None and math.isfinite(t0) else 0.0
                if offset < 0:
                    to_skip = int(round(-offset * sample_rate))
                    offset = 0.0
            elif t0 is not None and math.isfinite(t0) and not to_skip:
                gap = float(t0) - origin - (offset + produced / sample_rate)
                if gap > GAP_SECONDS:  # keep later samples at their times: the hole becomes silence
                    skipped += gap
                    yield from emit(np.zeros(int(round(gap * sample_rate)), np.float32))
            key = (frame.format.name, frame.layout.name, frame.sample_rate)
            if resampler is None or key != resampler_key:
                if resampler is not None:  # the stream changed layout or rate: flush and start over
                    yield from emit(convert(resampler.resample(None)))
                resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=sample_rate)
                resampler_key = key
            frame.pts = None  # the resampler would otherwise insist on monotonic pts; we keep our own clock
            yield from emit(convert(resampler.resample(frame)))
            if limit is not None and produced >= limit:
                break
        if resampler is not None and (limit is None or produced < limit):
            yield from emit(convert(resampler.resample(None)))
        damaged += sum(1 for level, _, _ in logs if level <= av.logging.ERROR)
        stated = stream_end(container, stream, stated_only=True)
        tail = stated - ((offset or 0.0) + produced / sample_rate) if limit is None and math.isfinite(stated) else 0.0
        truncated = tail > max(1.0, 0.02 * stated)  # (a stated length is an estimate for some formats)
        if damaged or skipped or truncated:
            damage.damaged_packets = max(damaged, 1)
            damage.lost_seconds = round(skipped + (tail if tail > GAP_SECONDS else 0.0), 3)
        if produced == 0:
            if damaged:
                raise DecodeError(path, "the audio stream could not be decoded")
            raise NoAudioError(path, "the audio stream holds no samples", stage="audio")


def _decord_load(path: str, sample_rate: int) -> tuple[np.ndarray, float]:
    import decord

    try:
        reader = decord.AudioReader(path, ctx=decord.cpu(0), sample_rate=sample_rate, mono=True)
    except Exception as exc:
        message = str(exc)
        if "audio stream" in message.lower():
            raise NoAudioError(path, "the file has no audio stream", stage="audio") from None
        # decord reads no container PyAV cannot: let PyAV tell a missing stream from garbage
        container = _open(path)
        with container:
            if not container.streams.audio:
                raise NoAudioError(path, "the file has no audio stream", stage="audio") from None
        raise DecodeError(path, f"decord cannot read the audio ({error_text(exc)})") from None
    try:
        samples = reader[:].asnumpy()
    except Exception as exc:
        raise DecodeError(path, f"decord cannot decode the audio ({error_text(exc)})") from None
    samples = np.asarray(samples, dtype=np.float32)
    samples = samples.mean(axis=0) if samples.ndim == 2 else samples.reshape(-1)
    if samples.size == 0:
        raise NoAudioError(path, "the audio stream holds no samples", stage="audio")
    return np.ascontiguousarray(samples, dtype=np.float32), stream_origin(path, "audio")


def load_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int,
    max_seconds: float | None = None,
    backend: str = DEFAULT_AUDIO_BACKEND,
) -> tuple[np.ndarray, float]:
    """The first audio track as float32 mono at ``sample_rate``, and the time (s) of its first sample.

    ``max_seconds`` stops decoding after that much audio. Raises
    :class:`DecodeError` for undecodable files and :class:`NoAudioError` when
    there is no audio stream or it decodes to zero samples. Silence is *not* an
    error here; see :func:`check_audible`.
    """
    offset = 0.0
    parts = []
    for i, (t, chunk) in enumerate(iter_audio_chunks(path, sample_rate=sample_rate, max_seconds=max_seconds, backend=backend)):
        if i == 0:
            offset = t
        parts.append(chunk)
    samples = np.concatenate(parts) if len(parts) != 1 else parts[0]
    return np.ascontiguousarray(samples, dtype=np.float32), float(offset)


# --------------------------------------------------------------------------- windows
def window_bounds(n_samples: int, sample_rate: int, *, window: float = DEFAULT_WINDOW, hop: float = DEFAULT_HOP) -> list[tuple[int, int]]:
    """Sample ranges ``[a, b)`` of the windows over ``n_samples`` samples (see the module conventions)."""
    _check_window(window, hop)
    sample_rate = _check_rate(sample_rate)
    width = max(1, int(round(window * sample_rate)))
    bounds: list[tuple[int, int]] = []
    k = 0
    while n_samples > 0:
        a = int(round(k * hop * sample_rate))
        b = min(a + width, n_samples)
        bounds.append((a, b))
        if b >= n_samples:
            break
        k += 1
    return bounds


def audio_windows(
    samples: np.ndarray,
    sample_rate: int,
    *,
    window: float = DEFAULT_WINDOW,
    hop: float = DEFAULT_HOP,
    offset: float = 0.0,
    threshold_db: float = SILENCE_DB,
) -> list[AudioWindow]:
    """Cut mono ``samples`` into windows of ``window`` seconds every ``hop`` seconds, silent ones flagged.

    ``offset`` is the time of the first sample (as returned by :func:`load_audio`).
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    sample_rate = _check_rate(sample_rate)
    out = []
    for a, b in window_bounds(x.size, sample_rate, window=window, hop=hop):
        piece = x[a:b]
        out.append(AudioWindow(offset + a / sample_rate, offset + b / sample_rate, piece, is_silent(piece, threshold_db)))
    return out


def iter_audio_windows(
    path: str | os.PathLike,
    *,
    sample_rate: int,
    window: float = DEFAULT_WINDOW,
    hop: float = DEFAULT_HOP,
    max_seconds: float | None = None,
    threshold_db: float = SILENCE_DB,
    allow_silent: bool = False,
    backend: str = DEFAULT_AUDIO_BACKEND,
    damage: AudioDamage | None = None,
) -> Iterator[AudioWindow]:
    """Decode ``path`` and yield its windows as soon as each is complete (constant memory).

    ``damage``, when given, is filled in with what a damaged stream cost (:class:`AudioDamage`).

    Yields exactly what :func:`audio_windows` returns for the whole decoded
    track. Silent windows are yielded with ``silent=True``; when every window
    of the file was silent and ``allow_silent`` is false, :class:`NoAudioError`
    is raised after the last one (the caller, having skipped them, embedded
    nothing and can report the file as silent).
    """
    path = os.fspath(path)
    _check_window(window, hop)
    sample_rate = _check_rate(sample_rate)
    width = max(1, int(round(window * sample_rate)))
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0  # absolute index of buf[0]
    pending: list[np.ndarray] = []  # decoded chunks not yet joined to buf (joining per chunk would be quadratic)
    total = 0
    offset = 0.0
    k = 0
    any_sound = False
    last_end = -1

    def make(a: int, b: int) -> AudioWindow:
        piece = buf[a - buf_start : b - buf_start].copy()
        return AudioWindow(offset + a / sample_rate, offset + b / sample_rate, piece, is_silent(piece, threshold_db))

    chunks = iter_audio_chunks(path, sample_rate=sample_rate, max_seconds=max_seconds, backend=backend, damage=damage)
    for i, (t, chunk) in enumerate(chunks):
        if i == 0:
            offset = t
        pending.append(chunk)
        total += chunk.size
        while True:
            a = int(round(k * hop * sample_rate))
            if a + width > total:
                break
            if pending:
                buf = np.concatenate([buf, *pending])
                pending = []
            w = make(a, a + width)
            any_sound |= not w.silent
            last_end = a + width
            k += 1
            yield w
            nxt = int(round(k * hop * sample_rate))
            if nxt > buf_start:
                drop = min(nxt - buf_start, buf.size)
                buf = buf[drop:]
                buf_start += drop
    if pending:
        buf = np.concatenate([buf, *pending])
        pending = []
    if total == 0:  # iter_audio_chunks raises first; kept for safety
        raise NoAudioError(path, "the audio stream holds no samples", stage="audio")
    # Windows still owed at the end: those reaching past the last sample, kept shorter.
    while last_end < total:
        a = int(round(k * hop * sample_rate))
        b = min(a + width, total)
        w = make(a, b)
        any_sound |= not w.silent
        last_end = b
        k += 1
        yield w
    if not any_sound and not allow_silent:
        raise NoAudioError(path, f"the audio is silent (nothing louder than {threshold_db:g} dBFS)", stage="audio")
