"""Media discovery and decoding.

Two video backends (PyAV and decord) sit behind one small interface,
:class:`VideoBackend`. Both sample frames *by presentation time*: for every
target time ``k / fps`` the frame on screen at that moment is taken, and its
timestamp is the frame's own presentation time read from the stream (never
``index / fps``). Frames come out downscaled so that their short side is
``short_side`` pixels (the encoder's input size), in chunks, so a long video
never sits in memory whole.
"""

from __future__ import annotations

import math
import re
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, NoReturn, Protocol

import numpy as np

from .errors import DecodeError, NoVideoError, UsageError
from .avutil import container_start, demux_damage, error_text, ffmpeg_errors, picture_streams, stream_end, stream_origin, unwrap

# What people keep in their libraries. Containers FFmpeg reads: phone and camera video, camcorder
# MPEG-TS (.mts/.m2ts/.ts), DVD and broadcast MPEG-PS, Windows Media, Flash, 3GPP, Ogg and MXF.
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mts", ".m2ts", ".ts", ".3gp", ".3g2", ".mpg", ".mpeg",
    ".vob", ".wmv", ".asf", ".flv", ".f4v", ".ogv", ".mxf", ".dv",
})
# Stills Pillow reads (HEIC/HEIF through pillow-heif); an animated GIF or WebP is indexed as a short video.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jp2", ".tga",
})
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".flac", ".mp3", ".ogg", ".oga", ".m4a", ".m4b", ".opus", ".aac", ".aif", ".aiff", ".wma", ".mka", ".ac3",
    ".amr", ".ape", ".wv",
})
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS | AUDIO_EXTENSIONS
MPEG_TS_SYNC = 0x47  # every 188-byte MPEG-TS packet starts with this byte (".ts" is also TypeScript)

MAX_DAMAGED_PACKETS = 1000  # beyond this a stream is garbage, not a damaged video

MediaKind = Literal["video", "image", "audio"]


def media_kind(path: str | os.PathLike) -> MediaKind | None:
    """The kind of a file judged by its extension, or None when mmsearch does not handle it.

    The kind is where a file starts: an animated image is indexed as a video, and a video
    container holding only sound as audio (see :mod:`mmsearch.decode_worker`).
    """
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    return None


def _looks_like_media(path: str) -> bool:
    """False for a ``.ts`` file that is not MPEG-TS (TypeScript source); True for everything else.

    MPEG-TS is recognised by its sync byte repeating every packet: 188 bytes, or 192 for the
    timestamped packets of Blu-ray and camcorder files, from anywhere in the first packet (a
    capture may begin mid-packet).
    """
    if not path.lower().endswith(".ts"):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(4 * 192 + 192)
    except OSError:
        return True  # let the reader report it
    for size in (188, 192):
        for start in range(size):
            if all(start + i * size < len(head) and head[start + i * size] == MPEG_TS_SYNC for i in range(4)):
                return True
    return False


def not_media_key(name: str) -> str:
    """How a skipped file is counted in a summary: its extension in lower case, or "(none)"."""
    return os.path.splitext(name)[1].lower() or "(none)"


@dataclass(frozen=True)
class MediaInfo:
    """What a probe learns about a file before decoding it."""

    path: str
    kind: MediaKind
    duration: float
    width: int
    height: int
    has_audio: bool = False


@dataclass(frozen=True)
class FrameBatch:
    """Decoded RGB frames (N, H, W, 3) uint8 with presentation timestamps (N,) in seconds."""

    frames: np.ndarray
    timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.timestamps)


def discover(
    paths: Iterable[str | os.PathLike],
    *,
    kinds: Iterable[MediaKind] = ("video", "image"),
    skipped: Counter[str] | None = None,
    skip_dir: Callable[[str], bool] | None = None,
) -> list[Path]:
    """Expand files and folders into the media files under them, sorted, without duplicates.

    Folders are walked following symlinks, but each real directory is visited
    once, so a symlink loop ends the walk instead of hanging it. ``skipped``, when
    given, counts the files passed over by extension (see :func:`not_media_key`):
    not media, or media of a kind not asked for. ``skip_dir``, when given, is asked of
    each folder below a root (its path) and a folder it answers True for is not walked
    (mmsearch's own index folders, when one lives among the media).
    """
    wanted = set(kinds)
    found: dict[str, Path] = {}

    def take(path: str) -> bool:
        if media_kind(path) in wanted and _looks_like_media(path):
            return True
        if skipped is not None:
            skipped[not_media_key(path)] += 1
        return False

    for raw in paths:
        root = Path(raw).expanduser()
        if not root.exists():
            raise UsageError(f"{root}: no such file or directory")
        if root.is_file():
            if take(str(root)):
                found.setdefault(str(root.absolute()), root.absolute())
            continue
        seen_dirs: set[tuple[int, int]] = set()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            try:
                st = os.stat(dirpath)
            except OSError:
                dirnames[:] = []
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                dirnames[:] = []
                continue
            seen_dirs.add(key)
            dirnames[:] = sorted(d for d in dirnames if skip_dir is None or not skip_dir(os.path.join(dirpath, d)))
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if take(full):
                    p = Path(os.path.abspath(full))
                    found.setdefault(str(p), p)
    return sorted(found.values(), key=str)


MAX_ASPECT = 16  # a picture longer than this many times its short side is scaled by its long side


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) scaled so the short side is ``short_side`` (even numbers); unchanged when None.

    The long side never passes ``MAX_ASPECT * short_side``: a 100000x1 banner is scaled down by its
    long side (scaling its short side up would make a picture of gigabytes from a file of bytes).
    """
    if not short_side or min(width, height) <= 0:
        return width, height
    scale = min(short_side / min(width, height), MAX_ASPECT * short_side / max(width, height))
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


class FrameSelector:
    """Picks, for each target time k/fps, the frame on screen at that time.

    Fed frames in presentation order, it returns the frames to keep. A frame is
    on screen from its pts until the next frame's pts; when several targets fall
    on one frame (sampling faster than the video's rate) it is kept once.
    """

    def __init__(self, fps: float) -> None:
        if not fps > 0:
            raise UsageError(f"fps must be positive, got {fps}")
        self.step = 1.0 / fps
        self.k = 0  # index of the next target time k * step
        self.pending: tuple[float, object] | None = None
        self.last_delta = 0.0
        self.emitted = 0

    @property
    def next_target(self) -> float:
        return self.k * self.step

    def push(self, pts: float, frame: object) -> list[tuple[float, object]]:
        if self.pending is None:
            # The first frame is on screen from the start, whatever its pts.
            self.pending = (pts, frame)
            return []
        prev_pts, _ = self.pending
        if pts < prev_pts:  # out-of-order pts: a decoder should not emit these; ignore
            return []
        if pts == prev_pts:  # duplicate pts: the newest frame replaces the older one
            self.pending = (pts, frame)
            return []
        out: list[tuple[float, object]] = []
        if pts > self.next_target:
            # the pending frame is on screen over [prev_pts, pts), which holds the next target
            out.append(self.pending)
            self.emitted += 1
            self.k = max(self.k + 1, math.ceil(pts / self.step - 1e-9))
        self.last_delta = pts - prev_pts
        self.pending = (pts, frame)
        return out

    def finish(self, shown: float | None = None) -> list[tuple[float, object]]:
        """The last frame, when a target falls on it (or when nothing was kept yet). ``shown``:
        seconds the last frame counts as on screen, where the gap before the frame pushed last is
        not the stream's (frames left undecoded); default that gap."""
        if self.pending is None:
            return []
        pts, frame = self.pending
        self.pending = None
        # on screen over [pts, pts + last_delta): a target at its very end (to rounding) is not on it
        if self.emitted == 0 or self.next_target < pts + max(shown or self.last_delta, 1e-6) - 1e-6:
            self.emitted += 1
            return [(pts, frame)]
        return []


class VideoBackend(Protocol):
    name: str

    def probe(self, path: str) -> MediaInfo: ...

    def iter_frames(
        self, path: str, *, fps: float, short_side: int | None, chunk_size: int = 32
    ) -> Iterator[FrameBatch]: ...


def _chunks(selected: Iterable[tuple[float, np.ndarray]], chunk_size: int) -> Iterator[FrameBatch]:
    buf_t: list[float] = []
    buf_f: list[np.ndarray] = []
    for pts, frame in selected:
        buf_t.append(pts)
        buf_f.append(frame)
        if len(buf_t) >= chunk_size:
            yield FrameBatch(np.stack(buf_f), np.asarray(buf_t, dtype=np.float64))
            buf_t, buf_f = [], []
    if buf_t:
        yield FrameBatch(np.stack(buf_f), np.asarray(buf_t, dtype=np.float64))


def _skip_unless_sampled(packet, stream, step: float, seconds: Callable[[float], float], seen: list[float]) -> None:  # noqa: ANN001
    """Set ``stream``'s skip_frame for ``packet``: NONREF (a non-reference frame in it is not
    decoded) unless a sampling target ``k * step`` lies in [its pts, the largest pts demuxed so
    far), where its picture may be the one on screen. ``seen``: [where the last picture ends,
    the largest pts so far, the second largest], seconds from the media's start, updated."""
    if packet.pts is None or not packet.time_base:
        stream.codec_context.skip_frame = "DEFAULT"
        return
    pts = seconds(float(packet.pts * packet.time_base))
    seen[0] = max(seen[0], pts + float((packet.duration or 0) * packet.time_base))
    if pts > seen[1]:
        seen[1], seen[2] = pts, seen[1]
    elif seen[2] < pts < seen[1]:
        seen[2] = pts
    target = math.ceil(pts / step - 1e-9) * step
    stream.codec_context.skip_frame = "DEFAULT" if target < seen[1] or pts >= seen[1] else "NONREF"


def _rotate(frame: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate an HxWx3 frame counter-clockwise by ``degrees`` (FFmpeg's display-matrix angle, a multiple of 90)."""
    k = (degrees // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, k)) if k else frame


def _finite(seconds: float) -> float | None:
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def lost_seconds(times: np.ndarray, end: float, expected_end: float | None, step: float) -> float:
    """Seconds of pictures a damaged stream did not yield: gaps between decoded frames longer than
    two frame steps, and the stretch between the last picture and where the stream says it ends."""
    t = np.asarray(times, dtype=np.float64)
    lost = 0.0
    if len(t) > 1 and step > 0:
        gaps = np.diff(np.sort(t))
        lost += float(np.sum(gaps[gaps > 2 * step] - step))
    if expected_end is not None and expected_end > end + 2 * max(step, 0.05):
        lost += expected_end - end
    return round(lost, 3)


class PyAVBackend:
    """FFmpeg through PyAV: sequential decode in presentation order, honours rotation metadata.

    After :meth:`iter_frames` has run, ``decoded_frames``, ``damaged_packets`` (decoding errors: packets that failed or
    were flagged corrupt, and errors FFmpeg logged while concealing damage),
    ``video_end`` (seconds: where the last picture stops being shown) and ``lost_seconds``
    (pictures the damage cost) describe the file decoded last.
    """

    name = "pyav"
    damaged_packets = 0
    video_end = 0.0
    lost_seconds = 0.0
    decoded_frames = 0  # pictures the decoder returned (all of them, or fewer with skip_nonref)

    def __init__(self, *, skip_nonref: bool = False, skip_loop_filter: bool = False, threads: int = 0) -> None:
        # skip_nonref: a frame no other frame refers to (most B-frames) is not decoded unless it
        # may be the one on screen at a sampling target: FFmpeg's skip_frame is NONREF for a
        # packet whose pts p has no target in [p, the largest pts demuxed so far), since a
        # frame with a pts in (p, that largest pts] is shown before any later target. The
        # frames sampled are those a full decode samples; where the stream ends is still read
        # from every packet.
        # skip_loop_filter: FFmpeg's skip_loop_filter=all, no in-loop deblocking (H.264, HEVC,
        # VP8/9...): decoding costs less, pictures are slightly blockier, and the difference
        # carries through predicted frames up to the next keyframe.
        # threads: FFmpeg's decoding threads (thread_count); 0 lets FFmpeg choose (cores + 1).
        self.skip_nonref, self.skip_loop_filter, self.threads = skip_nonref, skip_loop_filter, threads

    def _open(self, path: str):  # noqa: ANN202 - av types are untyped
        import av

        try:
            return av.open(path)
        except Exception as exc:  # av raises many error types, all mean "cannot read"
            raise DecodeError(path, f"cannot open container ({error_text(exc)})") from None

    def _picture_stream(self, path: str, container):  # noqa: ANN001, ANN202
        streams = picture_streams(container)
        if not streams:
            raise NoVideoError(path, "no video stream" + (" (sound only)" if container.streams.audio else ""))
        return streams[0]

    def probe(self, path: str) -> MediaInfo:
        container = self._open(path)
        with container:
            vs = self._picture_stream(path, container)
            duration = _finite(stream_end(container, vs)) or 0.0
            w, h = vs.codec_context.width, vs.codec_context.height
            try:
                first = next(container.decode(vs))
                if first.rotation % 180:
                    w, h = h, w
            except Exception as exc:
                raise DecodeError(path, f"no decodable frame ({error_text(exc)})") from None
            return MediaInfo(path, "video", duration, w, h, has_audio=bool(container.streams.audio))

    def iter_frames(
        self, path: str, *, fps: float, short_side: int | None, chunk_size: int = 32
    ) -> Iterator[FrameBatch]:
        import av

        container = self._open(path)
        with container:
            vs = self._picture_stream(path, container)
            vs.thread_type = "AUTO"
            if self.threads:
                vs.codec_context.thread_count = self.threads
            if self.skip_loop_filter:
                vs.codec_context.options = {**vs.codec_context.options, "skip_loop_filter": "all"}
            origin = container_start(container)
            expected_end = _finite(stream_end(container, vs, stated_only=True))
            nominal_step = 1.0 / float(vs.average_rate) if vs.average_rate else 0.0
            self.damaged_packets, self.video_end, self.lost_seconds, self.decoded_frames = 0, 0.0, 0.0, 0
            selector = FrameSelector(fps)

            def to_rgb(frame) -> np.ndarray:  # noqa: ANN001
                tw, th = scaled_size(frame.width, frame.height, short_side)
                arr = frame.to_ndarray(format="rgb24", width=tw, height=th, interpolation="BILINEAR")
                return _rotate(arr, frame.rotation)

            packet_end = [0.0, -math.inf, -math.inf]  # where the last picture ends (frames left undecoded count too); the two largest pts
            target_step = 1.0 / fps

            def decoded() -> Iterator:
                # Packet by packet, so one damaged packet costs its frames only (as ffmpeg does).
                packets = container.demux(vs)
                while True:
                    try:
                        packet = next(packets)
                    except StopIteration:
                        return
                    except av.error.FFmpegError:  # truncated or broken container: stop here
                        self.damaged_packets += 1
                        return
                    self.damaged_packets += bool(packet.is_corrupt)
                    if self.skip_nonref:
                        _skip_unless_sampled(packet, vs, target_step, lambda t: unwrap(container, vs, t, origin) - origin, packet_end)
                    try:
                        yield from packet.decode()
                    except av.error.FFmpegError:
                        self.damaged_packets += 1
                        if self.damaged_packets > MAX_DAMAGED_PACKETS:
                            raise DecodeError(path, f"more than {MAX_DAMAGED_PACKETS} damaged packets") from None

            def selected() -> Iterator[tuple[float, np.ndarray]]:
                with ffmpeg_errors() as logs:
                    yield from pictures()
                self.damaged_packets += sum(1 for level, _, _ in logs if level <= av.logging.ERROR)
                if self.damaged_packets:
                    step = nominal_step or (float(np.median(np.diff(sorted(times)))) if len(times) > 1 else 0.0)
                    if self.skip_nonref and len(times) > 1:  # gaps of skipped frames are not damage
                        step = max(step, float(np.median(np.diff(sorted(times)))))
                    self.lost_seconds = lost_seconds(np.asarray(times), self.video_end, expected_end, step)

            times: list[float] = []

            def pictures() -> Iterator[tuple[float, np.ndarray]]:
                last_shown = 0.0  # how long the last decoded picture stays on screen
                for frame in decoded():
                    self.decoded_frames += 1
                    if frame.time is None:
                        continue
                    t = unwrap(container, vs, float(frame.time), origin) - origin
                    times.append(t)
                    shown = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
                    last_shown = shown or nominal_step or (times[-1] - times[-2] if len(times) > 1 else 0.0)
                    for st, f in selector.push(t, frame):
                        yield st, to_rgb(f)
                if not times:
                    raise DecodeError(path, "no decodable frame")
                # the last picture is on screen from its pts as long as the gap before it in a full
                # decode (the frame before it may have been left undecoded)
                gap = packet_end[1] - packet_end[2] if self.skip_nonref and math.isfinite(packet_end[2]) else None
                for st, f in selector.finish(gap if gap and gap > 0 else None):
                    yield st, to_rgb(f)
                self.video_end = max(max(times) + last_shown, packet_end[0] if self.damaged_packets == 0 else 0.0)

            yield from _chunks(selected(), chunk_size)


class DecordBackend:
    """decord: random access by frame index, pts read from its frame-timestamp table.

    decord counts times from the video stream's own start; :func:`stream_origin` moves them
    onto the player's timeline, so both backends report the same seconds.
    """

    name = "decord"
    damaged_packets = 0
    video_end = 0.0
    lost_seconds = 0.0

    def __init__(self, *, threads: int = 0) -> None:
        # threads: decord's num_threads for decoding (0: its choice)
        self.threads = threads

    def _reader(self, path: str, short_side: int | None):  # noqa: ANN202
        import decord

        try:
            probe = decord.VideoReader(path, num_threads=1)
        except Exception as exc:
            _raise_unreadable(path, exc)
        if len(probe) == 0:
            raise DecodeError(path, "video has no frames")
        h, w = probe[0].shape[:2] if short_side else (0, 0)
        if not short_side:
            return probe
        tw, th = scaled_size(w, h, short_side)
        del probe
        try:
            return decord.VideoReader(path, width=tw, height=th, num_threads=self.threads)
        except Exception as exc:
            raise DecodeError(path, f"cannot open video ({_decord_reason(exc)})") from None

    def probe(self, path: str) -> MediaInfo:
        import decord

        try:
            vr = decord.VideoReader(path, num_threads=1)
        except Exception as exc:
            _raise_unreadable(path, exc)
        n = len(vr)
        if n == 0:
            raise DecodeError(path, "video has no frames")
        h, w = vr[0].shape[:2]
        duration = stream_origin(path, "video") + float(vr.get_frame_timestamp(n - 1)[1])
        return MediaInfo(path, "video", duration, w, h)

    def iter_frames(
        self, path: str, *, fps: float, short_side: int | None, chunk_size: int = 32
    ) -> Iterator[FrameBatch]:
        vr = self._reader(path, short_side)
        n = len(vr)
        table = np.asarray(vr.get_frame_timestamp(range(n)), dtype=np.float64).reshape(n, 2) + stream_origin(path, "video")
        pts = table[:, 0]
        self.damaged_packets, self.lost_seconds = 0, 0.0
        self.video_end = float(table[:, 1].max())
        order = np.argsort(pts, kind="stable")
        selector = FrameSelector(fps)
        indices: list[tuple[float, int]] = []
        for i in order:
            indices.extend((t, int(j)) for t, j in selector.push(float(pts[i]), int(i)))
        indices.extend((t, int(j)) for t, j in selector.finish())
        for start in range(0, len(indices), chunk_size):
            part = indices[start : start + chunk_size]
            try:
                frames = vr.get_batch([j for _, j in part]).asnumpy()
            except Exception as exc:
                if start == 0:
                    raise DecodeError(path, f"frame decoding failed ({_decord_reason(exc)})") from None
                # keep what decoded before the damage; the rest of the stream is lost
                self.damaged_packets = 1
                end = part[0][0]
                self.lost_seconds = round(self.video_end - end, 3)
                self.video_end = end
                return
            yield FrameBatch(frames, np.asarray([t for t, _ in part], dtype=np.float64))
        errors, packet_times = demux_damage(path)
        if errors:
            self.damaged_packets = errors
            step = float(np.median(np.diff(np.sort(pts)))) if n > 1 else 0.0
            self.lost_seconds = lost_seconds(packet_times, self.video_end, None, step)


def _raise_unreadable(path: str, exc: BaseException) -> NoReturn:
    """decord could not open ``path``: :class:`NoVideoError` when PyAV finds no pictures in it
    (a sound-only file, indexed for its sound), else :class:`DecodeError`."""
    import av

    try:
        with av.open(path) as container:
            if not picture_streams(container):
                raise NoVideoError(path, "no video stream" + (" (sound only)" if container.streams.audio else ""))
    except av.error.FFmpegError:
        pass
    raise DecodeError(path, f"cannot open video ({_decord_reason(exc)})") from None


def _decord_reason(exc: BaseException) -> str:
    """decord's error without its log prefix ("[16:25:23] /github/workspace/src/video/video_reader.cc:270: ")."""
    return re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", str(exc).strip())


BACKENDS: dict[str, type[VideoBackend]] = {"pyav": PyAVBackend, "decord": DecordBackend}
DEFAULT_BACKEND = "pyav"


def get_backend(name: str, *, skip_nonref: bool = False, skip_loop_filter: bool = False, threads: int = 0) -> VideoBackend:
    """A video decoder by name (``pyav``, ``decord``). ``skip_nonref`` and ``skip_loop_filter``
    (PyAV only) and ``threads`` (decoding threads, 0: the decoder's choice): see :class:`PyAVBackend`.

    Raises :class:`UsageError` for an unknown name or negative ``threads``."""
    try:
        backend = BACKENDS[name]
    except KeyError:
        raise UsageError(f"unknown decoder backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    if threads < 0:
        raise UsageError(f"decoder threads must be 0 (the decoder's choice) or more, got {threads}")
    if backend is PyAVBackend:
        return PyAVBackend(skip_nonref=skip_nonref, skip_loop_filter=skip_loop_filter, threads=threads)
    return backend(threads=threads)


_HEIF_REGISTERED = False


def open_image(path: str | os.PathLike):  # noqa: ANN201 - a PIL image
    """The image file opened with Pillow (HEIC/HEIF through pillow-heif); :class:`DecodeError` naming
    the file when it cannot be read or is past Pillow's decompression-bomb limit."""
    global _HEIF_REGISTERED
    from PIL import Image, UnidentifiedImageError

    if not _HEIF_REGISTERED:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:  # pragma: no cover - a dependency; without it HEIC files fail with a clear reason
            pass
        _HEIF_REGISTERED = True
    try:
        return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DecodeError(path, f"too large to decode safely ({exc}); downscale it first") from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DecodeError(path, f"cannot read image ({error_text(exc, path)})") from None


def to_rgb8(im):  # noqa: ANN001, ANN201 - PIL images
    """Any Pillow still as 8-bit RGB, values scaled, never clipped.

    16-bit greyscale (``I;16*``) is divided by 257 (65535 -> 255); 32-bit integer (``I``) and
    float (``F``) pictures are scaled from the range their values use (0-1, 0-255 or 0-65535,
    else their own minimum and maximum). Transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a
    transparent colour) is composited over white, as a page shows it; ``CMYK``, ``YCbCr`` and the
    rest go through Pillow's own conversion.
    """
    from PIL import Image

    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        a = np.where(np.isfinite(a), a, 0.0)  # a NaN or inf pixel says nothing of the others' range
        if mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        else:
            top = float(a.max()) if a.size else 0.0
            bottom = float(a.min()) if a.size else 0.0
            lo, hi = 0.0, next((r for r in (1.0, 255.0, 65535.0) if bottom >= 0 and top <= r), None) or 0.0
            if not hi:
                lo, hi = bottom, max(top, bottom + 1e-12)
        grey = np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im if mode == "RGB" else im.convert("RGB")


def load_image(path: str | os.PathLike, *, short_side: int | None = None) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), EXIF orientation applied, optionally downscaled.

    Every mode Pillow opens reaches the encoder scaled (see :func:`to_rgb8`). Raises
    :class:`DecodeError` naming the file when it cannot be read, including a picture past
    Pillow's decompression-bomb limit.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    with open_image(path) as im:
        try:
            im = to_rgb8(ImageOps.exif_transpose(im))
            if short_side:
                im = im.resize(scaled_size(im.width, im.height, short_side), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()
        except Image.DecompressionBombError as exc:
            raise DecodeError(path, f"too large to decode safely ({exc}); downscale it first") from None
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            raise DecodeError(path, f"cannot read image ({error_text(exc, path)})") from None


ANIMATED_FORMATS = frozenset({"GIF", "WEBP", "PNG"})  # GIF, animated WebP, APNG; not MPO or multi-page TIFF


def is_animation(im) -> bool:  # noqa: ANN001 - an open PIL image (:func:`open_image`)
    """True for an animated GIF, WebP or PNG (several pictures, each with its own duration).

    Other multi-picture files (an MPO photo's second eye, a multi-page TIFF scan) are stills:
    their first picture is indexed.
    """
    return im.format in ANIMATED_FORMATS and bool(getattr(im, "is_animated", False))


def image_batch(path: str | os.PathLike, *, short_side: int | None) -> FrameBatch:
    """A still image as a one-frame batch at time 0."""
    frame = load_image(path, short_side=short_side)
    return FrameBatch(frame[None], np.zeros(1, dtype=np.float64))


class Animation:
    """An animated GIF, WebP or PNG decoded as video frames, with the attributes of a video backend.

    Each picture is on screen for its own ``duration`` (milliseconds, Pillow's ``info``; 100 ms
    when absent, at least 10 ms), sampled by presentation time like a video. A damaged picture
    ends the animation there: what came before is kept, ``damaged_packets`` is 1 and
    ``lost_seconds`` is unknown (0). ``video_end`` is where the last picture decoded stops.
    """

    name = "pillow"

    def __init__(self) -> None:
        self.damaged_packets, self.video_end, self.lost_seconds = 0, 0.0, 0.0

    def iter_frames(self, path: str, *, fps: float, short_side: int | None, chunk_size: int = 32) -> Iterator[FrameBatch]:
        from PIL import Image, ImageSequence

        selector = FrameSelector(fps)
        self.damaged_packets, self.video_end, self.lost_seconds = 0, 0.0, 0.0

        def pictures() -> Iterator[tuple[float, np.ndarray]]:
            t = 0.0
            with open_image(path) as im:
                try:
                    for picture in ImageSequence.Iterator(im):
                        picture.load()  # WebP sets a picture's duration when it is loaded
                        frame = to_rgb8(picture)
                        if short_side:
                            frame = frame.resize(scaled_size(frame.width, frame.height, short_side), Image.Resampling.BILINEAR)
                        yield from selector.push(t, np.asarray(frame, dtype=np.uint8).copy())
                        t += max(float(picture.info.get("duration") or 100), 10.0) / 1000.0
                        self.video_end = t
                except (OSError, ValueError, EOFError, SyntaxError) as exc:
                    if selector.pending is None:
                        raise DecodeError(path, f"cannot read image ({error_text(exc, path)})") from None
                    self.damaged_packets = 1
            yield from selector.finish()

        yield from _chunks(pictures(), chunk_size)


def frame_at(path: str | os.PathLike, seconds: float, *, backend: str = DEFAULT_BACKEND) -> tuple[float, np.ndarray]:
    """The full-resolution frame on screen at ``seconds`` and its pts (for query-by-frame)."""
    best: tuple[float, np.ndarray] | None = None
    for batch in get_backend(backend).iter_frames(os.fspath(path), fps=1000.0, short_side=None):
        for t, f in zip(batch.timestamps, batch.frames):
            if t <= seconds + 1e-9 or best is None:
                best = (float(t), f)
        if batch.timestamps[-1] > seconds:
            break
    if best is None or math.isnan(best[0]):
        raise DecodeError(path, f"no frame at {seconds} s")
    return best


def picture_at(path: str | os.PathLike, seconds: float, *, short_side: int | None = None) -> np.ndarray:
    """The picture on screen at ``seconds`` (from the start of the media as a player shows it) as RGB
    uint8 ``(H, W, 3)``, rotated as shown, optionally downscaled (a thumbnail).

    Seeks to the keyframe before ``seconds`` and decodes from there (a video that cannot seek is
    decoded from its start, as :func:`frame_at`). A still, or an animation PyAV cannot read (WebP),
    gives its picture. Raises :class:`DecodeError` naming the file when nothing decodes.
    """
    import av

    path = os.fspath(path)
    if media_kind(path) == "image":
        return load_image(path, short_side=short_side)
    try:
        container = av.open(path)
    except Exception:  # an animation FFmpeg does not read (animated WebP): Pillow's first picture
        return load_image(path, short_side=short_side)
    with container:
        streams = picture_streams(container)
        if not streams:
            raise NoVideoError(path, "no video stream")
        vs = streams[0]
        origin = container_start(container)
        best = None
        for attempt in ("seek", "from the start"):
            try:
                if attempt == "seek" and vs.time_base:
                    container.seek(max(0, int((seconds + origin) / vs.time_base)), stream=vs, backward=True)
                elif attempt != "seek":
                    container.seek(0)
                for frame in container.decode(vs):
                    if frame.time is None:
                        continue
                    t = unwrap(container, vs, float(frame.time), origin) - origin
                    if t <= seconds + 1e-6 or best is None:
                        best = frame
                    if t > seconds:
                        break
            except av.error.FFmpegError:
                pass
            if best is not None:
                break
        if best is None:
            raise DecodeError(path, f"no picture decodes at {seconds:.3f} s")
        tw, th = scaled_size(best.width, best.height, short_side)
        return _rotate(best.to_ndarray(format="rgb24", width=tw, height=th, interpolation="BILINEAR"), best.rotation)
