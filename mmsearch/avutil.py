"""What the picture and sound decoders share about FFmpeg: one time origin, and its error log.

A stream's presentation times (pts) count from wherever its muxer started the clock: an
MPEG-TS file typically starts at 1.4 s, an edited MKV or MP4 can start at any second. Every
time mmsearch reports (frames, audio windows, durations, later subtitles and speech) is the
stream's pts minus the container's start time, whichever backend decoded it.

A damaged stream often decodes "successfully" (the demuxer resynchronises, the decoder conceals
broken blocks) and says so only in FFmpeg's log: :func:`ffmpeg_errors` is how mmsearch hears it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np

__all__ = [
    "container_start", "demux_damage", "error_text", "ffmpeg_errors", "picture_streams", "quiet_ffmpeg", "stream_end",
    "stream_origin",
]


def error_text(exc: BaseException, path: str | os.PathLike | None = None) -> str:
    """What went wrong, in one short line: FFmpeg's own words (``strerror``, "Invalid data found when
    processing input") without PyAV's ``[Errno N]`` and repeated path, else the first line of the message,
    without ``path`` where the message quotes it (Pillow's "cannot identify image file '/the/path'"):
    the error that carries this text names the file already."""
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror.strip():
        return strerror.strip()[:200]
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if path is not None:
        line = line.replace(f" {os.fspath(path)!r}", "").replace(f" {os.fspath(path)}", "")
    return line[:200]


def container_start(container) -> float:  # noqa: ANN001 - av types are untyped
    """The container's start time in seconds (0 when it does not say).

    Every time mmsearch reports is a stream's pts minus this, "seconds from the start of the
    media as a player shows it": an MPEG-TS file starting at 1.4 s, or an edited MKV whose
    first frame has pts 5 s, both begin at 0.
    """
    start = container.start_time
    return float(start) / 1_000_000 if start is not None else 0.0  # AV_TIME_BASE units


WRAP_BITS = {"mpegts": 33, "mpegtsraw": 33}  # formats whose timestamps count modulo 2**bits ticks


def unwrap(container, stream, seconds: float, origin: float) -> float:  # noqa: ANN001
    """``seconds`` (a timestamp of ``stream``) with a wrapped-around clock undone: in MPEG-TS the 33-bit
    clock restarts every 26.5 hours, and a packet stamped just before the start (a damaged file's
    first sound) can come out of the demuxer as ~95 443 s. A time more than half a period after
    ``origin`` is taken as a wrapped one, one period earlier."""
    bits = WRAP_BITS.get(container.format.name)
    if bits is None or stream.time_base is None:
        return seconds
    period = float((1 << bits) * stream.time_base)
    return seconds - period if seconds - origin > period / 2 else seconds


def stream_end(container, stream, *, stated_only: bool = False) -> float:  # noqa: ANN001
    """Where ``stream`` says it ends, in seconds from the media's start (nan when nothing says).

    Without a duration of its own, the container's is the estimate; ``stated_only`` takes it only
    when the container starts at 0 (some muxers count a start time in it, others do not) and holds
    no other picture or sound stream (whose length the container's may be: an MKV's sound may
    rightly end before its pictures), as measuring damage needs.
    """
    origin = container_start(container)
    if stream.duration is not None and stream.time_base is not None:
        begin = float(stream.start_time * stream.time_base) if stream.start_time is not None else origin
        return max(0.0, unwrap(container, stream, begin, origin) - origin) + float(stream.duration * stream.time_base)
    alone = sum(1 for s in container.streams if s.type in ("audio", "video") and s.index != stream.index) == 0
    if container.duration is not None and (not stated_only or (origin == 0.0 and alone)):
        return float(container.duration) / 1_000_000
    return float("nan")


def stream_origin(path: str, kind: Literal["video", "audio"]) -> float:
    """Seconds from the container's start to the start of its first ``kind`` stream (0 when unknown).

    decord counts a stream's times from that stream's own start; adding this puts them on the
    player's timeline, as :class:`PyAVBackend` reports them.
    """
    import av

    try:
        with av.open(path) as container:
            streams = container.streams.video if kind == "video" else container.streams.audio
            if not streams or streams[0].start_time is None or streams[0].time_base is None:
                return 0.0
            origin = container_start(container)
            return max(0.0, unwrap(container, streams[0], float(streams[0].start_time * streams[0].time_base), origin) - origin)
    except Exception:  # noqa: BLE001 - a file PyAV cannot open has no origin to correct
        return 0.0


@contextmanager
def ffmpeg_errors() -> Iterator[list]:
    """Collect the messages FFmpeg logs meanwhile at error level or worse, as ``(level, component, text)``
    (while this runs, FFmpeg's log goes to PyAV's capture instead of the terminal; repeats are kept)."""
    import av.logging

    previous, skip = av.logging.get_level(), av.logging.get_skip_repeated()
    if previous is None or previous < av.logging.ERROR:
        av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)  # the same damage in the next file must be heard again
    try:
        with av.logging.Capture(local=False) as logs:  # decoder threads log too
            yield logs
    finally:
        av.logging.set_level(previous)
        av.logging.set_skip_repeated(skip)


def _is_picture_stream(stream) -> bool:  # noqa: ANN001
    """A video stream that is not a cover picture (mp3 and m4a album art are "attached pictures")."""
    import av

    flag = getattr(getattr(av.stream, "Disposition", None), "attached_pic", None)
    return flag is None or not (stream.disposition & flag)


def picture_streams(container) -> list:  # noqa: ANN001
    """The container's video streams that move: cover art left out."""
    return [vs for vs in container.streams.video if _is_picture_stream(vs)]


def demux_damage(path: str, kind: Literal["video", "audio"] = "video") -> tuple[int, np.ndarray]:
    """Scan the packets of the first picture (or sound) stream without decoding: (errors FFmpeg
    logged or packets flagged corrupt, packet times in seconds from the media's start). For a
    backend that does not report damage itself (decord)."""
    import av

    errors, times = 0, []
    with ffmpeg_errors() as logs, av.open(path) as container:
        streams = picture_streams(container) if kind == "video" else list(container.streams.audio)
        if not streams:
            return 0, np.zeros(0)
        origin = container_start(container)
        try:
            for packet in container.demux(streams[0]):
                errors += bool(packet.is_corrupt)
                if packet.pts is not None and packet.time_base is not None:
                    times.append(float(packet.pts * packet.time_base) - origin)
        except av.error.FFmpegError:
            errors += 1
    errors += sum(1 for level, _, _ in logs if level <= av.logging.ERROR)
    return errors, np.asarray(times, dtype=np.float64)


def quiet_ffmpeg() -> None:
    """Route FFmpeg's log through Python's ``libav`` loggers at error level and drop it there, so a
    damaged file does not print over a progress bar; :func:`ffmpeg_errors` still hears it."""
    import logging

    import av.logging

    av.logging.set_level(av.logging.ERROR)
    libav = logging.getLogger("libav")
    libav.addHandler(logging.NullHandler())
    libav.propagate = False
