"""Two-stage retrieval in the style of HAMMER: rank whole media first, then localize moments.

Stage 1 searches the media-level index for the top ``videos`` items. Stage 2
scores the frames of those items only and turns each item's
similarity-over-time curve into segments (smoothing, a threshold relative to
the curve, merging of near neighbours). ``exhaustive`` replaces stage 1 by a
search over every moment window of the corpus.

A moment's score keeps the stage-1 evidence, as HAMMER combines its video and
moment scores: ``score = (1 - media_weight) * moment_score + media_weight *
media_score`` (``media_weight`` 0.5 by default), where ``moment_score`` is the
peak of the moment's smoothed curve and ``media_score`` the cosine of the query
with its media item's vector. So a whole indexed file used as the query ranks
its own moments first (its media score is ~1), and of two equally good moments
the one in the better-matching video wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .store import SpaceData


@dataclass(frozen=True)
class LocalizeConfig:
    """How a similarity curve becomes segments."""

    smooth_seconds: float = 3.0  # running-median width
    threshold: float = 0.7  # keep frames above baseline + threshold * (peak - baseline)
    max_drop: float = 0.1  # ... and at most this much cosine similarity below the peak
    baseline_percentile: float = 10.0
    merge_gap: float = 1.0  # join segments separated by at most this many seconds
    max_segments: int = 5  # per media item


MEDIA_WEIGHT = 0.5  # share of the media (stage-1) score in a moment's score
SCORE_DECIMALS = 6  # scores equal to this many decimals tie (a batched encoder pass differs in the 7th)


@dataclass(frozen=True)
class Hit:
    """A moment ``[start, end)`` (seconds) of one media item and its scores (cosine-scale floats)."""

    media_id: int
    start: float
    end: float
    score: float  # what results are ranked by: the moment and media scores combined
    media_score: float | None
    moment_score: float | None = None  # the moment's own similarity (its curve's peak)


def combined_score(moment_score: float, media_score: float | None, media_weight: float = MEDIA_WEIGHT) -> float:
    """``(1 - media_weight) * moment_score + media_weight * media_score`` (the moment score alone without a media score)."""
    if media_score is None:
        return float(moment_score)
    return float((1.0 - media_weight) * moment_score + media_weight * media_score)


def smooth(values: np.ndarray, timestamps: np.ndarray, seconds: float) -> np.ndarray:
    """Centred running median over ``seconds``: removes one-frame spikes and dips, keeps step edges."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 3 or seconds <= 0:
        return values
    step = float(np.median(np.diff(timestamps))) if len(timestamps) > 1 else 1.0
    width = max(1, int(round(seconds / max(step, 1e-6))))
    width += 1 - width % 2  # odd, so the window is centred
    if width <= 1:
        return values
    half = width // 2
    padded = np.pad(values, half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width), axis=1)


def localize(
    timestamps: np.ndarray,
    scores: np.ndarray,
    *,
    duration: float,
    config: LocalizeConfig = LocalizeConfig(),
    begin: float = 0.0,
) -> list[tuple[float, float, float]]:
    """Segments (start, end, score) of a similarity-over-time curve, best first.

    A frame at ``t[i]`` stands for the time from the midpoint with its
    predecessor to the midpoint with its successor, so segment bounds fall
    halfway between the last frame outside and the first frame inside. The
    first frame's stretch starts at ``begin`` and the last one's ends at
    ``duration`` (seconds: where the space's segments start and end, so a
    picture stream that starts late or stops early bounds its moments).
    """
    t = np.asarray(timestamps, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    end_time = max(float(duration), float(t[-1]) if len(t) else 0.0)
    if len(t) == 0:
        return []
    begin = min(float(begin), float(t[0]))
    if len(t) == 1:
        return [(begin, end_time, float(s[0]))]
    curve = smooth(s, t, config.smooth_seconds)
    peak = float(curve.max())
    base = float(np.percentile(curve, config.baseline_percentile))
    if peak - base < 1e-6:
        return [(begin, end_time, peak)]
    mask = curve >= max(base + config.threshold * (peak - base), peak - config.max_drop)
    # runs of consecutive frames above the threshold
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    runs: list[list[int]] = []
    for a, b in zip(starts, ends):
        if runs and t[a] - t[runs[-1][1]] <= config.merge_gap + 1e-9 + _step(t, a):
            runs[-1][1] = int(b)
        else:
            runs.append([int(a), int(b)])
    segments = []
    for a, b in runs:
        start = begin if a == 0 else (t[a - 1] + t[a]) / 2
        stop = end_time if b == len(t) - 1 else (t[b] + t[b + 1]) / 2
        segments.append((float(start), float(stop), float(curve[a : b + 1].max())))
    segments.sort(key=lambda seg: -seg[2])
    return segments[: config.max_segments]


def _step(t: np.ndarray, i: int) -> float:
    return float(t[i] - t[i - 1]) if i > 0 else 0.0


def search_space(
    space: SpaceData,
    queries: np.ndarray,
    *,
    k: int = 10,
    videos: int = 20,
    exhaustive: bool = False,
    config: LocalizeConfig = LocalizeConfig(),
    media: Sequence[int] | None = None,
    media_weight: float = MEDIA_WEIGHT,
) -> list[list[Hit]]:
    """Top-k moments per query vector (rows of ``queries``, ``(n, dim)`` float32), best first.

    ``media``: search only these media ids (a benchmark's candidates, a filter): stage 1 scores
    each query against their media-level vectors exactly, and of equal scores the one listed
    first ranks first. Moments are ordered by their combined score (see the module; equal to
    :data:`SCORE_DECIMALS` decimals is a tie), then by their media's stage-1 score and rank,
    then by start. A media item's moments start and end where its segments do (pictures end
    where the video stream does, not with a longer soundtrack).
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if space.media_index is None or space.media_index.ntotal == 0:
        return [[] for _ in queries]
    if media is not None:
        candidates = stage1_among(space, queries, media, videos)
    elif exhaustive:
        candidates = _candidates_from_moments(space, queries, k=k)
    else:
        scores, rows = space.media_index.search(queries, min(videos, space.media_index.ntotal))
        candidates = [
            [(int(space.media_ids[r]), float(sc)) for sc, r in zip(srow, rrow) if r >= 0]
            for srow, rrow in zip(scores, rows)
        ]
    out = []
    for q, cands in zip(queries, candidates):
        hits: list[tuple[tuple, Hit]] = []
        for rank, (media_id, media_score) in enumerate(cands):
            starts, ends, vecs = space.segments_of(media_id)
            if not len(starts):
                continue
            ts = starts if space.anchor == "start" else (starts + ends) / 2
            curve = vecs @ q
            for start, end, moment in localize(ts, curve, duration=float(ends.max()), begin=float(starts.min()), config=config):
                score = combined_score(moment, media_score, media_weight)
                key = (-round(score, SCORE_DECIMALS), -round(media_score or 0.0, SCORE_DECIMALS), rank, start)
                hits.append((key, Hit(media_id, start, end, score, media_score, moment)))
        hits.sort(key=lambda h: h[0])
        out.append([h for _, h in hits[:k]])
    return out


def stage1_among(space: SpaceData, queries: np.ndarray, media: Sequence[int], videos: int) -> list[list[tuple[int, float]]]:
    """The ``videos`` best of ``media`` (ids) per query by media-level score, exact; ties keep the order given.

    Returns, per query, (media_id, score) pairs best first; ids without vectors in the space are left out.
    """
    ids, vectors = space.media_vectors(media)
    if not len(ids):
        return [[] for _ in queries]
    scores = np.atleast_2d(queries) @ vectors.T
    out = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:videos]
        out.append([(int(ids[i]), float(row[i])) for i in order])
    return out


def _candidates_from_moments(space: SpaceData, queries: np.ndarray, *, k: int) -> list[list[tuple[int, float]]]:
    """Media items owning the best moment windows of the whole corpus (one stage, no media ranking),
    each with its exact media score, so exhaustive moments are scored as two-stage ones are."""
    n = space.moment_index.ntotal
    scores, rows = space.moment_index.search(queries, min(n, max(50, 20 * k)))
    moment_media = space.moments.column("media_id").to_numpy()
    out = []
    for q, srow, rrow in zip(queries, scores, rows):
        seen = list(dict.fromkeys(int(moment_media[r]) for r in rrow if r >= 0))
        ids, vectors = space.media_vectors(seen)
        out.append([(int(m), float(v @ q)) for m, v in zip(ids, vectors)])
    return out


def search_fused(
    parts: list[tuple[SpaceData, np.ndarray, float]],
    *,
    k: int = 10,
    videos: int = 20,
    exhaustive: bool = False,
    config: LocalizeConfig = LocalizeConfig(),
) -> list[Hit]:
    """One query in several spaces (e.g. CLIP text vs frames, CLAP text vs sound), fused per moment.

    ``parts`` holds (space, query vector, weight). Stage 1 takes the union of
    each space's top media. Each space's curve is standardised over all the
    candidates' frames (cosine scales differ between encoders), sampled on the
    finest timeline of the media, weighted and summed; a space a media item lacks
    contributes 0 (the average). Moments are localized on the fused curve, so a
    moment that matches in both spaces ranks first. Media scores are standardised
    with the same statistics and fused the same way, and each moment's score combines
    the two as single-space search does (:func:`combined_score`), so a weight of 0
    on a space ranks as the other space alone would.
    """
    candidates: dict[int, float] = {}
    for space, query, _ in parts:
        if space.media_index is None or space.media_index.ntotal == 0:
            continue
        if exhaustive:
            ids = [int(m) for m in space.live_media_ids()]
        else:
            _, rows = space.media_index.search(query[None], min(videos, space.media_index.ntotal))
            ids = [int(space.media_ids[r]) for r in rows[0] if r >= 0]
        for media_id in ids:
            candidates.setdefault(media_id, 0.0)
    curves: dict[int, list[tuple[np.ndarray, np.ndarray, float] | None]] = {m: [] for m in candidates}
    ends_at: dict[int, float] = {}
    starts_at: dict[int, float] = {}
    stats = []
    for space, query, weight in parts:
        values = []
        for media_id in candidates:
            starts, ends, vecs = space.segments_of(media_id)
            ts = starts if space.anchor == "start" else (starts + ends) / 2
            if len(ts):
                ends_at[media_id] = max(ends_at.get(media_id, 0.0), float(ends.max()))
                starts_at[media_id] = min(starts_at.get(media_id, np.inf), float(starts.min()))
                scores = vecs @ query
                curves[media_id].append((ts, scores, weight))
                values.append(scores)
            else:
                curves[media_id].append(None)
        pooled = np.concatenate(values) if values else np.zeros(1)
        stats.append((float(pooled.mean()), float(pooled.std()) or 1.0))
    media_fused: dict[int, float] = dict.fromkeys(candidates, 0.0)
    for (space, query, weight), (mean, std) in zip(parts, stats):
        ids, vectors = space.media_vectors(list(candidates))
        for media_id, score in zip(ids, vectors @ query):
            media_fused[int(media_id)] += weight * (float(score) - mean) / std
    hits: list[Hit] = []
    for media_id, per_space in curves.items():
        present = [c for c in per_space if c is not None]
        if not present:
            continue
        grid = max((c[0] for c in present), key=len)  # the finest timeline this media has
        fused = np.zeros(len(grid))
        for curve, (mean, std) in zip(per_space, stats):
            if curve is None:
                continue
            ts, scores, weight = curve
            fused += weight * np.interp(grid, ts, (scores - mean) / std)
        media_score = media_fused[media_id]
        for start, end, moment in localize(grid, fused, duration=ends_at[media_id], begin=starts_at[media_id], config=config):
            hits.append(Hit(media_id, start, end, combined_score(moment, media_score), media_score, moment))
    hits.sort(key=lambda h: (-round(h.score, SCORE_DECIMALS), h.media_id, h.start))
    return hits[:k]
