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
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from .errors import DecodeError, UsageError

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus"})
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS | AUDIO_EXTENSIONS

MAX_DAMAGED_PACKETS = 1000  # beyond this a stream is garbage, not a damaged video

MediaKind = Literal["video", "image", "audio"]


def media_kind(path: str | os.PathLike) -> MediaKind | None:
    """The kind of a file judged by its extension, or None when mmsearch does not handle it."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    return None


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


def discover(paths: Iterable[str | os.PathLike], *, kinds: Iterable[MediaKind] = ("video", "image")) -> list[Path]:
    """Expand files and folders into the media files under them, sorted, without duplicates.

    Folders are walked following symlinks, but each real directory is visited
    once, so a symlink loop ends the walk instead of hanging it.
    """
    wanted = set(kinds)
    found: dict[str, Path] = {}
    for raw in paths:
        root = Path(raw).expanduser()
        if not root.exists():
            raise UsageError(f"{root}: no such file or directory")
        if root.is_file():
            if media_kind(root) in wanted:
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
            dirnames.sort()
            for name in sorted(filenames):
                if media_kind(name) in wanted:
                    p = Path(os.path.abspath(os.path.join(dirpath, name)))
                    found.setdefault(str(p), p)
    return sorted(found.values(), key=str)


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) scaled so the short side is ``short_side`` (even numbers); unchanged when None."""
    if not short_side or min(width, height) <= 0:
        return width, height
    scale = short_side / min(width, height)
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

    def finish(self) -> list[tuple[float, object]]:
        """The last frame, when a target falls on it (or when nothing was kept yet)."""
        if self.pending is None:
            return []
        pts, frame = self.pending
        self.pending = None
        if self.emitted == 0 or self.next_target < pts + max(self.last_delta, 1e-6):
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


def _rotate(frame: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate an HxWx3 frame counter-clockwise by ``degrees`` (FFmpeg's display-matrix angle, a multiple of 90)."""
    k = (degrees // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, k)) if k else frame


class PyAVBackend:
    """FFmpeg through PyAV: sequential decode in presentation order, honours rotation metadata."""

    name = "pyav"
    damaged_packets = 0  # of the last file decoded; the ingest report shows it

    def _open(self, path: str):  # noqa: ANN202 - av types are untyped
        import av

        try:
            return av.open(path)
        except Exception as exc:  # av raises many error types, all mean "cannot read"
            raise DecodeError(path, f"cannot open container ({exc})") from None

    def probe(self, path: str) -> MediaInfo:
        container = self._open(path)
        with container:
            if not container.streams.video:
                raise DecodeError(path, "no video stream")
            vs = container.streams.video[0]
            duration = _stream_duration(container, vs)
            w, h = vs.codec_context.width, vs.codec_context.height
            try:
                first = next(container.decode(vs))
                if first.rotation % 180:
                    w, h = h, w
            except Exception as exc:
                raise DecodeError(path, f"no decodable frame ({exc})") from None
            return MediaInfo(path, "video", duration, w, h, has_audio=bool(container.streams.audio))

    def iter_frames(
        self, path: str, *, fps: float, short_side: int | None, chunk_size: int = 32
    ) -> Iterator[FrameBatch]:
        import av

        container = self._open(path)
        with container:
            if not container.streams.video:
                raise DecodeError(path, "no video stream")
            vs = container.streams.video[0]
            vs.thread_type = "AUTO"
            self.damaged_packets = 0
            selector = FrameSelector(fps)

            def to_rgb(frame) -> np.ndarray:  # noqa: ANN001
                tw, th = scaled_size(frame.width, frame.height, short_side)
                arr = frame.to_ndarray(format="rgb24", width=tw, height=th, interpolation="BILINEAR")
                return _rotate(arr, frame.rotation)

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
                    try:
                        yield from packet.decode()
                    except av.error.FFmpegError:
                        self.damaged_packets += 1
                        if self.damaged_packets > MAX_DAMAGED_PACKETS:
                            raise DecodeError(path, f"more than {MAX_DAMAGED_PACKETS} damaged packets") from None

            def selected() -> Iterator[tuple[float, np.ndarray]]:
                n_decoded = 0
                for frame in decoded():
                    if frame.time is None:
                        continue
                    n_decoded += 1
                    for t, f in selector.push(float(frame.time), frame):
                        yield t, to_rgb(f)
                if n_decoded == 0:
                    raise DecodeError(path, "no decodable frame")
                for t, f in selector.finish():
                    yield t, to_rgb(f)

            yield from _chunks(selected(), chunk_size)


def _stream_duration(container, vs) -> float:  # noqa: ANN001
    if vs.duration is not None and vs.time_base is not None:
        return float(vs.duration * vs.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000
    return 0.0


class DecordBackend:
    """decord: random access by frame index, pts read from its frame-timestamp table."""

    name = "decord"

    def _reader(self, path: str, short_side: int | None):  # noqa: ANN202
        import decord

        try:
            probe = decord.VideoReader(path, num_threads=1)
        except Exception as exc:
            raise DecodeError(path, f"cannot open video ({exc})") from None
        if len(probe) == 0:
            raise DecodeError(path, "video has no frames")
        h, w = probe[0].shape[:2] if short_side else (0, 0)
        if not short_side:
            return probe
        tw, th = scaled_size(w, h, short_side)
        del probe
        try:
            return decord.VideoReader(path, width=tw, height=th, num_threads=0)
        except Exception as exc:
            raise DecodeError(path, f"cannot open video ({exc})") from None

    def probe(self, path: str) -> MediaInfo:
        import decord

        try:
            vr = decord.VideoReader(path, num_threads=1)
        except Exception as exc:
            raise DecodeError(path, f"cannot open video ({exc})") from None
        n = len(vr)
        if n == 0:
            raise DecodeError(path, "video has no frames")
        h, w = vr[0].shape[:2]
        duration = float(vr.get_frame_timestamp(n - 1)[1])
        return MediaInfo(path, "video", duration, w, h)

    def iter_frames(
        self, path: str, *, fps: float, short_side: int | None, chunk_size: int = 32
    ) -> Iterator[FrameBatch]:
        vr = self._reader(path, short_side)
        n = len(vr)
        pts = np.asarray(vr.get_frame_timestamp(range(n))[:, 0], dtype=np.float64)
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
                    raise DecodeError(path, f"frame decoding failed ({exc})") from None
                return  # keep what decoded before the damage
            yield FrameBatch(frames, np.asarray([t for t, _ in part], dtype=np.float64))


BACKENDS: dict[str, type[VideoBackend]] = {"pyav": PyAVBackend, "decord": DecordBackend}
DEFAULT_BACKEND = "pyav"


def get_backend(name: str) -> VideoBackend:
    try:
        return BACKENDS[name]()
    except KeyError:
        raise UsageError(f"unknown decoder backend {name!r}; choose one of {sorted(BACKENDS)}") from None


def load_image(path: str | os.PathLike, *, short_side: int | None = None) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), EXIF orientation applied, optionally downscaled."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            if short_side:
                im = im.resize(scaled_size(im.width, im.height, short_side), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DecodeError(path, f"cannot read image ({exc})") from None


def image_batch(path: str | os.PathLike, *, short_side: int | None) -> FrameBatch:
    """A still image as a one-frame batch at time 0."""
    frame = load_image(path, short_side=short_side)
    return FrameBatch(frame[None], np.zeros(1, dtype=np.float64))


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
