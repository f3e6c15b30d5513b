"""Near-duplicate frames skipped before the image encoder.

Sampled at 1 frame per second, a static shot, a talking head or a slide gives the encoder the
same picture again and again, and on a CPU the encoder is the slowest stage of indexing. A
sampled frame is compared with the last frame that was kept (not the previous one, so a slow
drift is noticed once it adds up) on a 32x32 colour thumbnail (grey alone misses a red picture
turning blue of the same brightness), and it is skipped when both

* the mean absolute difference of the thumbnails is at most ``mean_threshold`` levels (0-255,
  over pixels and R, G, B): the picture as a whole is the same (grain, compression, a small
  moving detail), and
* no channel's mean level of any 4x4 cell of the thumbnail (1/64 of the picture) moved by more
  than ``cell_threshold`` levels: nothing new appeared in one place (a caption, a bullet point, a face entering),

and the last kept frame is less than ``max_gap`` seconds old. A skipped frame is simply not
embedded: a kept frame's segment runs until the next kept frame's pts
(:func:`mmsearch.derive.frame_segments`), so it covers the interval of the frames it stands for
and reported times stay honest.

The idea is the shot-boundary / keyframe selection step of video retrieval systems (frame
differencing on small thumbnails, as in PySceneDetect's ``ContentDetector`` and the frame
de-duplication of clip-retrieval's video pipeline), used here only to drop repeats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FrameSkipper", "SkipConfig", "thumbnail"]

THUMB = 32  # thumbnail side, pixels
CELL = 4  # thumbnail pixels per cell side: an 8x8 grid of cells


def thumbnail(frame: np.ndarray, side: int = THUMB) -> np.ndarray:
    """``(side, side, 3)`` float32 (0-255) area average of an ``(H, W, 3)`` uint8 frame over a grid
    of ``side`` x ``side`` blocks (edge rows and columns that do not fill a block are dropped; a
    frame smaller than ``side`` is used as it is)."""
    h, w = frame.shape[:2]
    bh, bw = max(1, h // side), max(1, w // side)
    rows, cols = min(side, h // bh), min(side, w // bw)
    rgb = frame[: rows * bh, : cols * bw].astype(np.float32)
    return rgb.reshape(rows, bh, cols, bw, 3).mean(axis=(1, 3))


@dataclass(frozen=True)
class SkipConfig:
    """When a sampled frame counts as a repeat of the last kept one (see the module docstring)."""

    mean_threshold: float = 3.0  # levels (0-255), mean over the 32x32x3 thumbnail
    cell_threshold: float = 16.0  # levels, the largest change of one channel of one 4x4 cell
    max_gap: float = 10.0  # seconds: a frame is kept at least this often


class FrameSkipper:
    """Decides frame by frame, in presentation order, which sampled frames to embed.

    ``keep(t, frame)`` is True for the first frame, for any frame that differs from the last kept
    one, and for a frame ``max_gap`` seconds or more after it; ``skipped`` counts the others.
    """

    def __init__(self, config: SkipConfig | None = None) -> None:
        self.config = config or SkipConfig()
        self._last: np.ndarray | None = None
        self._last_t = 0.0
        self.skipped = 0

    def keep(self, timestamp: float, frame: np.ndarray) -> bool:
        thumb = thumbnail(frame)
        if self._last is not None and self._last.shape == thumb.shape and timestamp - self._last_t < self.config.max_gap:
            diff = thumb - self._last
            if float(np.abs(diff).mean()) <= self.config.mean_threshold and _largest_cell(diff) <= self.config.cell_threshold:
                self.skipped += 1
                return False
        self._last, self._last_t = thumb, float(timestamp)
        return True

    def filter(self, timestamps: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """Boolean mask over a chunk (``(N,)`` seconds, ``(N, H, W, 3)`` uint8) of the frames to keep."""
        return np.fromiter((self.keep(float(t), f) for t, f in zip(timestamps, frames)), bool, len(timestamps))


def _largest_cell(diff: np.ndarray) -> float:
    """The largest change of a cell's mean level in one channel, from the signed thumbnail difference."""
    rows, cols = diff.shape[0] // CELL, diff.shape[1] // CELL
    if not rows or not cols:
        return float(np.abs(diff).max()) if diff.size else 0.0
    cells = diff[: rows * CELL, : cols * CELL].reshape(rows, CELL, cols, CELL, -1).mean(axis=(1, 3))
    return float(np.abs(cells).max())
