"""Retrieval and moment-retrieval metrics, as the published benchmarks compute them.

Text-to-video / text-to-audio retrieval (MSR-VTT, DiDeMo, ActivityNet paragraphs,
AudioCaps, Clotho, MusicCaps) is scored from the **1-based rank of the one
relevant item** of each query:

* ``R@k``: percentage of queries whose item ranks ``<= k``;
* ``MdR`` / ``MnR``: median / mean of the ranks (``numpy.median``: the mean of the
  two middle ranks when the count is even, as CLIP4Clip's ``compute_metrics``);
* ``mAP@10``: with one relevant item per query the average precision is
  ``1 / rank`` when ``rank <= 10``, else 0 (the DCASE language-based audio
  retrieval metric), averaged over queries and given as a percentage.

A query whose item was not retrieved at all (its file failed to index, or has
no vector in the searched space) counts with ``rank = number of candidates + 1``:
it misses every ``R@k`` and pulls ``MdR``/``MnR`` up, instead of vanishing from
the average.

Ranks come from a **stable** sort by descending score: candidates with equal
scores keep the order in which they were listed (for the benchmarks: the order
in which the annotation file first names them). :func:`stable_ranking` and
:func:`rank_of` implement that rule.

Moment retrieval follows ``standalone_eval/eval.py`` of TVRetrieval (Lei et al.,
TVR, ECCV 2020): a predicted ``(video, start, end)`` is correct when its video is
the ground-truth video **and** its temporal IoU with the ground-truth moment is
``>= thd``; ``R@k`` at IoU ``thd`` is the percentage of queries with at least one
correct prediction among their top ``k`` (at most 100 predictions per query are
read). Where the ground truth of a query has four or more annotated moments
(DiDeMo), a prediction is correct when it reaches the IoU with at least two of
them, as in that script. VR (video retrieval) counts a query as found at ``k``
when the ground-truth video is among the first ``k`` distinct predicted videos.

All recalls are percentages in [0, 100], not rounded (TVR's script rounds to two
decimals when it prints; the bench rounds its JSON the same way).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "stable_ranking",
    "rank_of",
    "recall_at",
    "median_rank",
    "mean_rank",
    "map_at_10",
    "retrieval_metrics",
    "temporal_iou",
    "moment_recalls",
    "video_recalls",
]

MAX_PREDICTIONS = 100  # TVR's max_pred_per_query


# --------------------------------------------------------------------------- ranks
def stable_ranking(scores: Sequence[float] | np.ndarray) -> list[int]:
    """Indices of ``scores``, best first; equal scores keep their listing order (stable sort)."""
    s = np.asarray(scores, dtype=np.float64)
    return [int(i) for i in np.argsort(-s, kind="stable")]


def rank_of(scores: Sequence[float] | np.ndarray, target: int) -> int:
    """1-based rank of candidate ``target`` in :func:`stable_ranking` order, without sorting.

    ``1 + (#candidates scoring higher) + (#candidates scoring the same and listed before it)``.
    A NaN score of the target ranks it last (``len(scores)``).
    """
    s = np.asarray(scores, dtype=np.float64)
    if not 0 <= target < len(s):
        raise IndexError(f"candidate {target} out of range for {len(s)} scores")
    own = s[target]
    if np.isnan(own):
        return len(s)
    higher = int(np.sum(s > own))
    tied_before = int(np.sum(s[:target] == own))
    return 1 + higher + tied_before


def _ranks(ranks: Iterable[int]) -> np.ndarray:
    arr = np.asarray(list(ranks), dtype=np.float64)
    if arr.size and (arr < 1).any():
        raise ValueError("ranks are 1-based: every rank must be >= 1")
    return arr


def recall_at(ranks: Iterable[int], k: int) -> float:
    """Percentage of queries whose relevant item ranks ``<= k`` (0.0 for no queries)."""
    arr = _ranks(ranks)
    return float(100.0 * np.mean(arr <= k)) if arr.size else 0.0


def median_rank(ranks: Iterable[int]) -> float:
    """Median rank (``numpy.median``: mean of the two middle ranks for an even count); NaN for no queries."""
    arr = _ranks(ranks)
    return float(np.median(arr)) if arr.size else float("nan")


def mean_rank(ranks: Iterable[int]) -> float:
    """Mean rank; NaN for no queries."""
    arr = _ranks(ranks)
    return float(arr.mean()) if arr.size else float("nan")


def map_at_10(ranks: Iterable[int]) -> float:
    """mAP@10 for one relevant item per query: mean of ``1/rank`` (0 beyond rank 10), as a percentage."""
    arr = _ranks(ranks)
    if not arr.size:
        return 0.0
    return float(100.0 * np.mean(np.where(arr <= 10, 1.0 / arr, 0.0)))


def retrieval_metrics(ranks: Iterable[int], *, ks: Sequence[int] = (1, 5, 10), with_map: bool = False) -> dict[str, float]:
    """``{"R@1", "R@5", "R@10", "MdR", "MnR"}`` (plus ``"mAP@10"`` when ``with_map``) from 1-based ranks.

    A query whose item was not retrieved must be passed with rank ``n_candidates + 1``.
    """
    arr = _ranks(ranks)
    out: dict[str, float] = {f"R@{k}": recall_at(arr, k) for k in ks}
    out["MdR"] = median_rank(arr)
    out["MnR"] = mean_rank(arr)
    if with_map:
        out["mAP@10"] = map_at_10(arr)
    return out


# --------------------------------------------------------------------------- moments
def temporal_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [start, end] intervals; union = max(ends) - min(starts), as TVR's eval (0 if empty)."""
    inter = max(0.0, min(float(a[1]), float(b[1])) - max(float(a[0]), float(b[0])))
    union = max(float(a[1]), float(b[1])) - min(float(a[0]), float(b[0]))
    return inter / union if union > 0 else 0.0


def _gt_moments(item: Any) -> tuple[Any, list[tuple[float, float]]]:
    """(video, [(start, end), ...]) from ``(video, start, end)``, ``(video, [[s, e], ...])`` or a TVR-style dict."""
    if isinstance(item, dict):
        video, ts = item.get("video", item.get("vid_name")), item["ts"]
    elif len(item) == 3:
        video, ts = item[0], [item[1], item[2]]
    elif len(item) == 2:
        video, ts = item
    else:
        raise ValueError(f"ground truth must be (video, start, end) or (video, [[start, end], ...]), got {item!r}")
    ts = list(ts)
    if len(ts) == 2 and not isinstance(ts[0], (list, tuple, np.ndarray)):
        return video, [(float(ts[0]), float(ts[1]))]
    return video, [(float(s), float(e)) for s, e in ts]


def _correct(pred: Sequence[Any], video: Any, moments: list[tuple[float, float]], thd: float) -> bool:
    if pred[0] != video:
        return False
    window = (pred[1], pred[2])
    hits = sum(temporal_iou(window, m) >= thd for m in moments)
    need = 2 if len(moments) >= 4 else 1  # TVR's eval: DiDeMo's 4+ annotators, at least 2 must agree
    return hits >= need


def moment_recalls(
    predictions: Sequence[Sequence[Sequence[Any]]],
    ground_truth: Sequence[Any],
    ks: Sequence[int] = (1, 5, 10, 100),
    ious: Sequence[float] = (0.5, 0.7),
    *,
    max_predictions: int = MAX_PREDICTIONS,
) -> dict[str, dict[str, float]]:
    """Moment recall as TVR's ``eval_by_task_type`` (VCMR / SVMR): ``{"0.5": {"R@1": ..., ...}, "0.7": {...}}``.

    ``predictions[i]`` are query i's ranked ``(video, start, end, ...)`` tuples
    (anything after ``end``, e.g. a score, is ignored; only the first
    ``max_predictions`` count). ``ground_truth[i]`` is ``(video, start, end)``
    or ``(video, [[start, end], ...])``. Keys of the outer dict are the IoU
    thresholds as ``str(float)`` (``"0.5"``), inner keys ``"R@k"``.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} prediction lists for {len(ground_truth)} ground-truth moments")
    n = len(ground_truth)
    out: dict[str, dict[str, float]] = {}
    for thd in ious:
        first_hit: list[int | None] = []
        for preds, gt in zip(predictions, ground_truth):
            video, moments = _gt_moments(gt)
            hit = next(
                (i + 1 for i, p in enumerate(list(preds)[:max_predictions]) if _correct(p, video, moments, thd)), None
            )
            first_hit.append(hit)
        out[str(float(thd))] = {
            f"R@{k}": (100.0 * sum(h is not None and h <= k for h in first_hit) / n) if n else 0.0 for k in ks
        }
    return out


def video_recalls(
    predictions: Sequence[Sequence[Any]],
    ground_truth: Sequence[Any],
    ks: Sequence[int] = (1, 5, 10, 100),
    *,
    max_predictions: int = MAX_PREDICTIONS,
) -> dict[str, float]:
    """VR as TVR's eval: ``{"R@k": % of queries whose video is among the first k distinct predicted videos}``.

    ``predictions[i]`` is a ranked list of videos, or of ``(video, ...)`` tuples;
    repeats of a video are dropped (first occurrence kept) before the cut-off.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} prediction lists for {len(ground_truth)} ground-truth videos")
    n = len(ground_truth)
    positions: list[int | None] = []
    for preds, gt in zip(predictions, ground_truth):
        video = gt if not isinstance(gt, (tuple, list, dict)) else _gt_moments(gt)[0]
        distinct: list[Any] = []
        for p in preds:
            v = p[0] if isinstance(p, (tuple, list)) else p
            if v not in distinct:
                distinct.append(v)
            if len(distinct) >= max_predictions:
                break
        positions.append(distinct.index(video) + 1 if video in distinct else None)
    return {f"R@{k}": (100.0 * sum(p is not None and p <= k for p in positions) / n) if n else 0.0 for k in ks}
