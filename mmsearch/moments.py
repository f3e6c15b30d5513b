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


def media_vector(vectors: np.ndarray) -> np.ndarray:
    """The L2-normalised mean of a media item's frame vectors."""
    return l2_normalize(np.asarray(vectors, dtype=np.float32).mean(axis=0, keepdims=True))[0]


def moment_windows(
    timestamps: np.ndarray, vectors: np.ndarray, *, duration: float, config: MomentConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows [s, s + window) for s = 0, stride, 2*stride, ... covering the media.

    Returns (starts, ends, vectors): each window's vector is the L2-normalised
    mean of the frames whose timestamp falls inside it; windows with no frame
    are left out. A media item always gets at least one window.
    """
    timestamps = np.asarray(timestamps, dtype=np.float64)
    vectors = np.asarray(vectors, dtype=np.float32)
    end_time = max(float(duration), float(timestamps.max()) if len(timestamps) else 0.0)
    starts_out: list[float] = []
    ends_out: list[float] = []
    vecs_out: list[np.ndarray] = []
    start = 0.0
    while True:
        stop = start + config.window
        mask = (timestamps >= start) & (timestamps < stop)
        if mask.any():
            starts_out.append(start)
            ends_out.append(min(stop, end_time) if end_time > start else stop)
            vecs_out.append(vectors[mask].mean(axis=0))
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
