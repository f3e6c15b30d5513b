"""From frame embeddings to moment windows and one media-level embedding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .encoders.base import l2_normalize
from .errors import UsageError


@dataclass(frozen=True)
class MomentConfig:
    """Moment windows of ``window`` seconds every ``stride`` seconds."""

    window: float = 4.0
    stride: float = 2.0

    def __post_init__(self) -> None:
        if not (self.window > 0 and self.stride > 0):
            raise UsageError(f"moment window and stride must be positive, got {self.window} and {self.stride}")


def media_vector(vectors: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The L2-normalised mean of a media item's frame vectors (``(n, dim)`` float32), weighted by
    ``weights`` (``(n,)``, e.g. :func:`repeat_counts`) when given."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if weights is None or np.all(weights == 1):
        return l2_normalize(vectors.mean(axis=0, keepdims=True))[0]
    w = np.asarray(weights, np.float64)[:, None]
    return l2_normalize(((w * vectors).sum(axis=0) / w.sum())[None].astype(np.float32))[0]


def repeat_counts(starts: np.ndarray, ends: np.ndarray, step: float | None) -> np.ndarray:
    """How many sampled frames each frame segment ``[start, end)`` (seconds) stands for: a segment
    longer than 1.5 sampling ``step``s holds repeats that were not embedded
    (:mod:`mmsearch.frameskip`) and counts ``round(length / step)``; any other counts 1.
    ``(n,)`` int64, all ones where ``step`` is None."""
    starts = np.asarray(starts, np.float64)
    if not step or not len(starts):
        return np.ones(len(starts), np.int64)
    lengths = np.asarray(ends, np.float64) - starts
    return np.where(lengths > 1.5 * step, np.maximum(1, np.round(lengths / step)), 1).astype(np.int64)


def moment_windows(
    timestamps: np.ndarray, vectors: np.ndarray, *, duration: float, config: MomentConfig,
    ends: np.ndarray | None = None, step: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows [s, s + window) for s = 0, stride, 2*stride, ... covering the media.

    ``timestamps``: ``(n,)`` seconds, ``vectors``: ``(n, dim)`` float32. Returns (starts, ends,
    vectors): without ``ends``, each window's vector is the L2-normalised mean of the frames whose
    timestamp falls inside it. With ``ends`` (``(n,)`` seconds: each frame is a segment
    ``[timestamp, end)``) and ``step`` (the sampling step, seconds), a segment longer than 1.5
    steps stands for the repeats left out after it (:mod:`mmsearch.frameskip`): it counts in
    every window it overlaps, weighted by the overlap in steps, and the other frames weigh 1;
    with no such segment the windows are exactly those by timestamp. Windows with no frame are left out. A media item always
    gets at least one window.
    """
    timestamps = np.asarray(timestamps, dtype=np.float64)
    vectors = np.asarray(vectors, dtype=np.float32)
    end_time = max(float(duration), float(timestamps.max()) if len(timestamps) else 0.0)
    long = None
    if ends is not None and step and step > 0 and len(timestamps):
        ends = np.asarray(ends, dtype=np.float64)
        long = (ends - timestamps) > 1.5 * step
        if not long.any():
            long = None  # nothing stands for left-out frames: windows exactly as by timestamp
    starts_out: list[float] = []
    ends_out: list[float] = []
    vecs_out: list[np.ndarray] = []
    start = 0.0
    while True:
        stop = start + config.window
        mask = (timestamps >= start) & (timestamps < stop)
        if long is None:
            vec = vectors[mask].mean(axis=0) if mask.any() else None
        else:
            # a segment standing for left-out frames counts for the sample steps it covers in the window
            overlap = np.clip(np.minimum(ends, stop) - np.maximum(timestamps, start), 0.0, None) / step
            weights = np.where(long, overlap, mask.astype(np.float64))
            vec = (weights[:, None] * vectors).sum(axis=0) / weights.sum() if weights.any() else None
        if vec is not None:
            starts_out.append(start)
            ends_out.append(min(stop, end_time) if end_time > start else stop)
            vecs_out.append(vec)
        if stop >= end_time:
            break
        start += config.stride
    if not vecs_out:  # all frames before 0 or a zero-duration item
        starts_out, ends_out, vecs_out = [0.0], [end_time], [vectors.mean(axis=0)]
    return (
        np.asarray(starts_out, dtype=np.float64),
        np.asarray(ends_out, dtype=np.float64),
        l2_normalize(np.stack(vecs_out)),
    )
