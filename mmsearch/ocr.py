"""What is written on screen: RapidOCR (PP-OCRv4 through ONNX Runtime) as time-aligned lines (issue #15).

Frames are sampled every :data:`OCR_INTERVAL` seconds by mmsearch's own decoders (so their times
are seconds from the start of the media, like every other time mmsearch reports), with their short
side at most :data:`OCR_SHORT_SIDE` pixels. A frame whose picture did not change since the last
one read (:func:`changed`) is not read again: on slides, lectures and screencasts most samples are
skipped. Each line of text becomes one :class:`~mmsearch.spaces.TextSegment` (``source="ocr"``)
over ``[first seen, first sample where it is gone)``.

The reader is RapidOCR (``rapidocr_onnxruntime``, https://github.com/RapidAI/RapidOCR), which
ships PaddleOCR's PP-OCRv4 detection and recognition models and the PP-OCR mobile v2 angle
classifier as ONNX files in its wheel: nothing is downloaded. The recogniser is PaddleOCR's
Chinese-and-English model; it often drops the space between capitalised English words
(``HARBOUR LIGHTS`` reads ``HARBOURLIGHTS``), so lines are compared with their spaces removed.
"""

from __future__ import annotations

import difflib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import EncoderError, UsageError
from .spaces import TextSegment

__all__ = [
    "CHANGE_CELL",
    "CHANGE_THRESHOLD",
    "MIN_CONFIDENCE",
    "OCR_INTERVAL",
    "OCR_SHORT_SIDE",
    "SAME_LINE_RATIO",
    "OcrEngine",
    "changed",
    "ocr_image",
    "ocr_video",
    "same_line",
    "text_segments",
]

log = logging.getLogger(__name__)

OCR_INTERVAL = 2.0  # seconds between sampled frames
OCR_SHORT_SIDE = 720  # frames are decoded with their short side at most this many pixels (never upscaled)
DETECT_MAX_SIDE = 960  # pixels: the text detector's input is at most this long (larger frames scaled down)
MIN_CONFIDENCE = 0.5  # recogniser score (mean CTC character probability) a line needs to be kept
SOURCE = "ocr"

# Change detection (see :func:`changed`). Measured on 1280x720, 640x360 and 320x240 slides with
# 12-64 px text: one character swapped (``title`` -> ``titlo``) moves some 6x6 cell's mean grey by
# 15-110 levels, while JPEG at quality 30, Gaussian grain of sigma 8 and H.264 (crf 28-35)
# re-encodes of a still picture move no cell by more than 8.5 levels. A whole-frame mean absolute
# difference cannot tell them apart: a new title line on a 720p slide moves it by 0.3 levels,
# JPEG's colour rounding by 1.0.
CHANGE_CELL = 6  # pixels: side of the square cells whose mean grey levels are compared
CHANGE_THRESHOLD = 12.0  # grey levels (0-255): a cell moving more than this is a change

SAME_LINE_RATIO = 0.9  # difflib ratio at or above which two readings are one line (one character in ten)


class OcrEngine:
    """RapidOCR built once: :meth:`read` turns an RGB frame into its lines of text.

    ``threads``: ONNX Runtime intra-op threads of each of RapidOCR's three sessions (det, cls,
    rec), clamped to the machine's CPU count (RapidOCR ignores larger values); inter-op threads
    are 1. Raises :class:`~mmsearch.errors.EncoderError` when ``rapidocr_onnxruntime`` cannot be
    imported or its models cannot be loaded, :class:`~mmsearch.errors.UsageError` for
    ``threads < 1``.
    """

    def __init__(self, *, threads: int = 1) -> None:
        if threads < 1:
            raise UsageError(f"threads must be at least 1, got {threads}")
        self.threads = min(int(threads), os.cpu_count() or 1)
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise EncoderError(f"OCR needs rapidocr-onnxruntime ({exc}); pip install rapidocr-onnxruntime") from None
        try:
            self._ocr = RapidOCR(
                intra_op_num_threads=self.threads, inter_op_num_threads=1, text_score=MIN_CONFIDENCE, print_verbose=False,
                # detect at the frame's own size up to DETECT_MAX_SIDE, never upscaled: RapidOCR's default
                # scales every frame up to a short side of 736 px, which made a 320x180 frame cost 0.38 s
                # instead of 0.013 s here, and read 'HARBOURLIGHTS' for 'HARBOUR LIGHTS' on a 720p slide
                det_limit_type="max", det_limit_side_len=DETECT_MAX_SIDE,
            )
        except Exception as exc:  # a missing or damaged model file, an onnxruntime that cannot load it
            raise EncoderError(f"cannot load RapidOCR's PP-OCRv4 models ({type(exc).__name__}: {exc})") from None

    def read(self, frame: np.ndarray) -> list[tuple[str, float]]:
        """The lines of text on ``frame`` (RGB uint8, (H, W, 3)) as ``(text, confidence)``.

        Confidence is RapidOCR's score in [0, 1]; lines under :data:`MIN_CONFIDENCE` and empty
        ones are dropped. Lines come in reading order: top to bottom, and left to right within a
        row (boxes whose vertical centres are within half a line height of each other).
        Raises :class:`~mmsearch.errors.UsageError` for an array of another shape or dtype.
        """
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise UsageError(f"OCR reads RGB uint8 frames of shape (H, W, 3), got {frame.dtype} {frame.shape}")
        try:
            result, _ = self._ocr(np.ascontiguousarray(frame[..., ::-1]))  # RapidOCR takes OpenCV's BGR order
        except Exception as exc:
            if type(exc).__name__ != "ResizeImgError":
                raise
            # a banner so long and thin (20000x1, 4000x16) that the detector, scaling its long side down, leaves
            # no row of 32 pixels: no line of text can be read on it (RapidOCR raised with no message)
            return []
        found = []
        for box, text, score in result or ():
            text = respace(" ".join(str(text).split()))
            if text and float(score) >= MIN_CONFIDENCE:
                corners = np.asarray(box, dtype=np.float64)
                found.append((corners, text, float(score)))
        return [(text, score) for _, text, score in _reading_order(found)]


def respace(line: str) -> str:
    """Spaces put back into a run of capitals that OCR read as one word: PP-OCRv4's recogniser often
    drops the space between capitalised English words ("EXITEASTGATE"). A token of 8 or more capital
    letters that wordninja (word frequencies of English Wikipedia) splits into words of 2 letters
    or more is split; anything else is kept as read."""
    tokens = line.split()
    if not any(len(t) >= 8 and t.isalpha() and t.isupper() for t in tokens):
        return line
    import wordninja

    out = []
    for token in tokens:
        if len(token) >= 8 and token.isalpha() and token.isupper():
            parts = wordninja.split(token)
            if len(parts) > 1 and all(len(p) >= 2 for p in parts):
                out.extend(parts)
                continue
        out.append(token)
    return " ".join(out)


def _reading_order(found: list[tuple[np.ndarray, str, float]]) -> list[tuple[np.ndarray, str, float]]:
    """Boxes ((4, 2) corners in pixels) sorted into rows top to bottom, each row left to right."""
    by_centre = sorted(found, key=lambda item: item[0][:, 1].mean())
    rows: list[list[tuple[np.ndarray, str, float]]] = []
    for item in by_centre:
        corners = item[0]
        centre, height = corners[:, 1].mean(), np.ptp(corners[:, 1])
        if rows:
            first = rows[-1][0][0]
            if centre - first[:, 1].mean() <= 0.5 * max(height, np.ptp(first[:, 1])):
                rows[-1].append(item)
                continue
        rows.append([item])
    return [item for row in rows for item in sorted(row, key=lambda it: it[0][:, 0].min())]


def _cell_means(frame: np.ndarray, cell: int) -> np.ndarray:
    """Mean luma (ITU-R BT.601, float32, 0-255) of each ``cell`` x ``cell`` block; a partial edge block is dropped."""
    h, w = frame.shape[:2]
    cell_h, cell_w = max(1, min(cell, h)), max(1, min(cell, w))
    rows, cols = h // cell_h, w // cell_w
    rgb = frame[: rows * cell_h, : cols * cell_w].astype(np.float32)
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return grey.reshape(rows, cell_h, cols, cell_w).mean(axis=(1, 3))


def changed(previous: np.ndarray | None, frame: np.ndarray, *, threshold: float = CHANGE_THRESHOLD) -> bool:
    """Whether ``frame`` differs enough from ``previous`` (both RGB uint8 (H, W, 3)) to be read again.

    Both pictures are cut into :data:`CHANGE_CELL`-pixel squares and the mean grey level of each
    is compared: a change is any square moving by more than ``threshold`` grey levels (0-255).
    Averaging a square removes per-pixel encoder noise and grain, while a glyph that appears,
    disappears or changes shape moves the mean of the squares it covers by tens of levels (the
    measurements are at :data:`CHANGE_THRESHOLD`). True when there is no ``previous`` or the
    sizes differ.
    """
    if previous is None or previous.shape != frame.shape:
        return True
    return bool(np.abs(_cell_means(previous, CHANGE_CELL) - _cell_means(frame, CHANGE_CELL)).max() > threshold)


def _line_key(text: str) -> str:
    """A reading compared: case-folded, spaces removed (the recogniser drops and adds them between readings)."""
    return "".join(text.casefold().split())


def same_line(a: str, b: str) -> bool:
    """Whether two readings are one line: equal after case folding and removing whitespace, or
    with a :class:`difflib.SequenceMatcher` ratio of at least :data:`SAME_LINE_RATIO` (about one
    character in ten misread). A changed number in a long line can thus pass as the same line."""
    ka, kb = _line_key(a), _line_key(b)
    if ka == kb:
        return True
    matcher = difflib.SequenceMatcher(None, ka, kb, autojunk=False)
    return matcher.quick_ratio() >= SAME_LINE_RATIO and matcher.ratio() >= SAME_LINE_RATIO


@dataclass
class _ShownLine:
    start: float
    text: str  # the most confident reading so far
    confidence: float


class _LineTracker:
    """Turns sampled frames, pushed in time order, into one segment per line shown."""

    def __init__(self, engine: OcrEngine) -> None:
        self.engine = engine
        self.shown: list[_ShownLine] = []
        self.segments: list[TextSegment] = []
        self.last_read: np.ndarray | None = None
        self.lines: list[tuple[str, float]] = []
        self.last_time = -float("inf")
        self.reads = 0
        self.frames = 0
        self.read_seconds = 0.0

    def push(self, timestamp: float, frame: np.ndarray) -> None:
        if timestamp < self.last_time:
            raise UsageError(f"OCR frames must come in time order: {timestamp} s after {self.last_time} s")
        self.last_time = timestamp
        self.frames += 1
        if changed(self.last_read, frame):
            began = time.perf_counter()
            self.lines = self.engine.read(frame)
            self.read_seconds += time.perf_counter() - began
            self.last_read = frame
            self.reads += 1
        self._update(timestamp)

    def _update(self, timestamp: float) -> None:
        current: list[tuple[str, float]] = []
        for text, confidence in self.lines:  # the same text twice on one frame is one line
            if not any(same_line(text, seen) for seen, _ in current):
                current.append((text, confidence))
        # exact readings first, so a fuzzy match cannot take the reading another line has exactly
        matches: dict[int, int] = {}
        for compare in (lambda a, b: _line_key(a) == _line_key(b), same_line):
            for n, line in enumerate(self.shown):
                if n in matches:
                    continue
                taken = set(matches.values())
                found = next((i for i, (text, _) in enumerate(current) if i not in taken and compare(text, line.text)), None)
                if found is not None:
                    matches[n] = found
        still: list[_ShownLine] = []
        for n, line in enumerate(self.shown):
            if n not in matches:
                self.segments.append(TextSegment(line.start, timestamp, line.text, SOURCE))
                continue
            text, confidence = current[matches[n]]
            if confidence > line.confidence:
                line.text, line.confidence = text, confidence
            still.append(line)
        taken = set(matches.values())
        still.extend(_ShownLine(timestamp, text, confidence) for i, (text, confidence) in enumerate(current) if i not in taken)
        self.shown = still

    def finish(self, end: float) -> list[TextSegment]:
        """Every segment, lines still shown ending at ``end`` seconds, sorted by (start, text)."""
        for line in self.shown:
            self.segments.append(TextSegment(line.start, max(float(end), line.start), line.text, SOURCE))
        self.shown = []
        log.debug("ocr: %d frames, %d read in %.2f s", self.frames, self.reads, self.read_seconds)
        return sorted(self.segments, key=lambda seg: (seg.start, seg.text))


def text_segments(frames: Iterable[tuple[float, np.ndarray]], engine: OcrEngine, *, end: float) -> list[TextSegment]:
    """One :class:`~mmsearch.spaces.TextSegment` (``source="ocr"``) per line of text shown.

    ``frames``: ``(timestamp seconds, RGB uint8 (H, W, 3))`` in time order, sampled every
    :data:`OCR_INTERVAL` seconds or so by the caller. A frame that has not :func:`changed` since
    the last one read is not read again: its lines are taken as still shown. A line (compared
    with :func:`same_line`) seen on consecutive samples is one segment from the first sample
    showing it to the first sample where it is gone, or to ``end`` (the media's duration, seconds)
    when it is shown to the last sample. Its text is its most confident reading. Sorted by
    ``(start, text)``. Raises :class:`~mmsearch.errors.UsageError` when timestamps go backwards.
    """
    tracker = _LineTracker(engine)
    for timestamp, frame in frames:
        tracker.push(float(timestamp), frame)
    return tracker.finish(end)


def ocr_video(
    path: str | os.PathLike,
    *,
    backend: str = "pyav",
    interval: float = OCR_INTERVAL,
    engine: OcrEngine | None = None,
    duration: float | None = None,
    on_frame: Callable[[], Any] | None = None,
    decoder: Any = None,
) -> list[TextSegment]:
    """The text on screen in a video, as :func:`text_segments`, times in seconds from the media's start.

    Frames are decoded by ``backend`` (:func:`mmsearch.media.get_backend`) every ``interval``
    seconds with their short side at most :data:`OCR_SHORT_SIDE` pixels (smaller videos at their
    own size). Lines shown to the end last until ``duration`` when given, else until the
    backend's ``video_end`` (where the last picture stops being shown). ``on_frame`` (optional) is
    called after each sampled frame (a long video reports progress); ``decoder`` replaces the
    backend (an animated image is read by :class:`mmsearch.media.Animation`). Raises
    :class:`~mmsearch.errors.DecodeError` / :class:`~mmsearch.errors.NoVideoError` from the
    decoder, :class:`~mmsearch.errors.UsageError` for a non-positive ``interval``.
    """
    from .media import get_backend

    if not interval > 0:
        raise UsageError(f"OCR interval must be positive seconds, got {interval}")
    path = os.fspath(path)
    if decoder is None:
        decoder = get_backend(backend)
    if hasattr(decoder, "probe"):
        info = decoder.probe(path)
        width, height, stated = info.width, info.height, info.duration
    else:  # an animated image (mmsearch.media.Animation): its size from the file
        from .media import open_image

        with open_image(path) as im:
            (width, height), stated = im.size, 0.0
    short_side = OCR_SHORT_SIDE if min(width, height) > OCR_SHORT_SIDE else None  # None: as decoded
    tracker = _LineTracker(engine or OcrEngine())
    for batch in decoder.iter_frames(path, fps=1.0 / interval, short_side=short_side, chunk_size=8):
        for timestamp, frame in zip(batch.timestamps, batch.frames):
            tracker.push(float(timestamp), frame)
            if on_frame is not None:
                on_frame()
    end = duration if duration is not None else (getattr(decoder, "video_end", 0.0) or stated)
    return tracker.finish(end)


def ocr_image(path: str | os.PathLike, engine: OcrEngine | None = None) -> list[TextSegment]:
    """The lines of text on a still image as segments at ``[0.0, 0.0]``, in reading order.

    The image is read at full resolution (documents and screenshots carry small text; RapidOCR
    itself caps the long side at 2000 pixels) through :func:`mmsearch.media.load_image`, which
    raises :class:`~mmsearch.errors.DecodeError` naming a file it cannot read.
    """
    from .media import load_image

    frame = load_image(path)
    lines = (engine or OcrEngine()).read(frame)
    return [TextSegment(0.0, 0.0, text, SOURCE) for text, _ in lines]
