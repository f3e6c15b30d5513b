"""One time origin for every decoder: seconds from the start of the media as a player shows it.

A stream's presentation times (pts) count from wherever its muxer started the clock: an
MPEG-TS file typically starts at 1.4 s, an edited MKV or MP4 can start at any second. Every
time mmsearch reports (frames, audio windows, durations, later subtitles and speech) is the
stream's pts minus the container's start time, whichever backend decoded it.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["container_start", "stream_origin"]


def container_start(container) -> float:  # noqa: ANN001 - av types are untyped
    """The container's start time in seconds (0 when it does not say).

    Every time mmsearch reports is a stream's pts minus this, "seconds from the start of the
    media as a player shows it": an MPEG-TS file starting at 1.4 s, or an edited MKV whose
    first frame has pts 5 s, both begin at 0.
    """
    start = container.start_time
    return float(start) / 1_000_000 if start is not None else 0.0  # AV_TIME_BASE units


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
            return max(0.0, float(streams[0].start_time * streams[0].time_base) - container_start(container))
    except Exception:  # noqa: BLE001 - a file PyAV cannot open has no origin to correct
        return 0.0
