"""Ground-truth scoring shared by the demo, the tests and the benchmarks."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from .metrics import temporal_iou

__all__ = ["best_event", "temporal_iou"]


def best_event(
    path: str, start: float, end: float, caption: str, truth: Iterable[dict[str, Any]], *, modality: str | None = None
) -> tuple[dict[str, Any] | None, float]:
    """The ground-truth event with ``caption`` in the file ``path`` that overlaps [start, end) most, and the IoU."""
    name = os.path.basename(path)
    best: tuple[dict[str, Any] | None, float] = (None, 0.0)
    for row in truth:
        if row["caption"] != caption or os.path.basename(row["file"]) != name:
            continue
        if modality is not None and row["modality"] != modality:
            continue
        iou = temporal_iou((start, end), (row["start"], row["end"]))
        if best[0] is None or iou > best[1]:
            best = (row, iou)
    return best
