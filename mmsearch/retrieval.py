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
from dataclasses import dataclass, replace

import numpy as np

from .moments import repeat_counts
from .spaces import AUDIO
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
    text: str | None = None  # the words said or written in the moment, when a space of words matched


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


def unfold_repeats(starts: np.ndarray, ends: np.ndarray, scores: np.ndarray, step: float | None) -> tuple[np.ndarray, np.ndarray]:
    """A frame curve on the sampling grid again: a frame whose segment ``[start, end)`` lasts
    ``n`` > 1.5 sampling ``step``s stands for ``n - 1`` repeats that were not embedded
    (:mod:`mmsearch.frameskip`), so its score is repeated at ``start + j * step`` for
    ``j < round(n)``. Returns (timestamps, scores), float64; unchanged where no segment is
    that long or ``step`` is None, so smoothing and :func:`localize` see the curve they would
    have seen had every sampled frame been embedded."""
    starts = np.asarray(starts, np.float64)
    scores = np.asarray(scores, np.float64)
    counts = repeat_counts(starts, ends, step)
    if (counts == 1).all():
        return starts, scores
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + offsets * step, np.repeat(scores, counts)


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
    allowed: np.ndarray | None = None,
) -> list[list[Hit]]:
    """Top-k moments per query vector (rows of ``queries``, ``(n, dim)`` float32), best first.

    ``media``: search only these media ids (a benchmark's candidates): stage 1 scores each query
    against their media-level vectors exactly, and of equal scores the one listed first ranks
    first. ``allowed``: sorted int64 media ids a filter lets through
    (:func:`mmsearch.filters.allowed_media`), searched inside the index (:func:`stage1`). Moments are ordered by their combined score (see the module; equal to
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
        candidates = _candidates_from_moments(space, queries, k=k, allowed=allowed)
    else:
        candidates = stage1(space, queries, videos, allowed=allowed)
    return localize_candidates(space, queries, candidates, k=k, config=config, media_weight=media_weight)


def hit_order(hit: Hit, rank: int) -> tuple:
    """The sort key of a two-stage moment: combined score (to :data:`SCORE_DECIMALS`), then its media's
    stage-1 score, then the media's rank in stage 1, then start."""
    return (-round(hit.score, SCORE_DECIMALS), -round(hit.media_score or 0.0, SCORE_DECIMALS), rank, hit.start)


def localize_candidates(
    space: SpaceData,
    queries: np.ndarray,
    candidates: list[list[tuple[int, float]]],
    *,
    k: int,
    config: LocalizeConfig = LocalizeConfig(),
    media_weight: float = MEDIA_WEIGHT,
    ranks: list[list[int]] | None = None,
) -> list[list[Hit]]:
    """Stage 2: the top-k moments (:func:`hit_order`) of each query's stage-1 candidates, (media_id,
    media score) pairs best first. ``ranks``: each candidate's rank in stage 1 when the list is part
    of a longer one (a shard's share of candidates ranked over every shard); default its position."""
    out = []
    for qi, (q, cands) in enumerate(zip(queries, candidates)):
        hits: list[tuple[tuple, Hit]] = []
        for position, (media_id, media_score) in enumerate(cands):
            rank = ranks[qi][position] if ranks is not None else position
            starts, ends, vecs = space.segments_of(media_id)
            if not len(starts):
                continue
            if space.anchor == "start":
                ts, curve = unfold_repeats(starts, ends, vecs @ q, space.step)
            else:
                ts, curve = (starts + ends) / 2, vecs @ q
            for start, end, moment in localize(ts, curve, duration=float(ends.max()), begin=float(starts.min()), config=config):
                hit = Hit(media_id, start, end, combined_score(moment, media_score, media_weight), media_score, moment)
                hits.append((hit_order(hit, rank), hit))
        hits.sort(key=lambda h: h[0])
        out.append([h for _, h in hits[:k]])
    return out


def stage1(space: SpaceData, queries: np.ndarray, videos: int, *, allowed: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
    """The ``videos`` best media per query, (media_id, score) best first, from the media-level index.

    ``allowed`` (sorted int64 media ids, a filter): the index is searched with every other row
    masked (few rows are scored exactly, see :meth:`mmsearch.indexes.RowIndex.search`), so
    ``videos`` come back whenever that many pass.
    """
    keep = None if allowed is None else np.isin(space.media_ids, allowed)
    scores, rows = space.media_index.search(queries, min(videos, space.media_index.ntotal), keep=keep)
    return [
        [(int(space.media_ids[r]), float(sc)) for sc, r in zip(srow, rrow) if r >= 0]
        for srow, rrow in zip(scores, rows)
    ]


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


def _candidates_from_moments(
    space: SpaceData, queries: np.ndarray, *, k: int, allowed: np.ndarray | None = None
) -> list[list[tuple[int, float]]]:
    """Media items owning the best moment windows of the whole corpus (one stage, no media ranking),
    each with its exact media score, so exhaustive moments are scored as two-stage ones are.
    ``allowed``: only moments of these media ids (a filter, masked inside the search)."""
    scores, owners = moment_candidates(space, queries, k=k, allowed=allowed)
    out = []
    for q, orow in zip(queries, owners):
        seen = list(dict.fromkeys(int(m) for m in orow if m >= 0))
        ids, vectors = space.media_vectors(seen)
        out.append([(int(m), float(v @ q)) for m, v in zip(ids, vectors)])
    return out


def moment_candidates(space: SpaceData, queries: np.ndarray, *, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The best ``max(50, 20 k)`` moment windows of the whole space per query: (scores ``(n, m)``
    float32, their media ids ``(n, m)`` int64, -1 where fewer exist), best first (exhaustive search's
    first step)."""
    n = space.moment_index.ntotal
    moment_media = space.moments.column("media_id").to_numpy()
    if not n:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    keep = None if allowed is None else np.isin(moment_media, allowed)
    scores, rows = space.moment_index.search(queries, max(1, min(n, max(50, 20 * k))), keep=keep)
    return scores, np.where(rows >= 0, moment_media[np.maximum(rows, 0)], -1).astype(np.int64)


WORDS_GATE = 0.2  # a word score (0.7 meaning + 0.3 words) under this is no evidence, however it ranks
WORDS_WEIGHT = 1.0  # a standard deviation of the words against one of the pictures
WORDS_SAMPLE = 10  # segments a query's baseline needs before its standard deviations mean anything
WORDS_FULL = (0.25, 0.6, 4.0)  # word scores from 0.25 (nothing) to 0.6 (as good as it gets) count up to 4 SD


def words_evidence(score: float, baseline: tuple[float, float, int]) -> float:
    """How much a segment's word score says for a moment, in standard deviations of the pictures.

    Relative: its z against the query's baseline (the library's nearest segments), once there are
    :data:`WORDS_SAMPLE` of them. Absolute: all-MiniLM-L6-v2 gives unrelated sentences a cosine of
    about 0.1 and a sentence that is the query 0.8 or more, so a word score is mapped linearly from
    :data:`WORDS_FULL` [0] (nothing) to [1] (full), times [2]. The larger of the two counts, so a
    sentence that is clearly the query leads in a library of two sentences as in one of thousands.
    """
    mean, std, n = baseline
    relative = (score - mean) / std if n >= WORDS_SAMPLE else 0.0
    low, high, weight = WORDS_FULL
    absolute = weight * float(np.clip((score - low) / (high - low), 0.0, 1.0))
    return max(relative, absolute)


def overlaps(a: Hit, b: Hit) -> bool:
    """Whether two moments share time in one media item (two that start together always do)."""
    return a.media_id == b.media_id and (min(a.end, b.end) > max(a.start, b.start) or a.start == b.start)


def within(a: Hit, b: Hit) -> bool:
    """Whether moment ``a`` lies wholly inside moment ``b`` of the same media item."""
    return a.media_id == b.media_id and b.start <= a.start and a.end <= b.end


def overlap_coefficient(a: Hit, b: Hit) -> float:
    """How much two moments of one media item share, in [0, 1]: seconds of overlap over the seconds of
    the shorter (the Szymkiewicz-Simpson overlap coefficient of two intervals; 1 when one lies within
    the other, 0 when they do not overlap; a moment of no length, an image's, gives 1 when they overlap)."""
    if not overlaps(a, b):
        return 0.0
    shorter = min(a.end - a.start, b.end - b.start)
    if shorter <= 0:
        return 1.0
    return float(np.clip((min(a.end, b.end) - max(a.start, b.start)) / shorter, 0.0, 1.0))


def cohort_z(query_scores: np.ndarray, cohort_scores: np.ndarray) -> np.ndarray:
    """How far each candidate's score for the query stands above the scores a cohort of unrelated queries
    gives the same candidate, in their standard deviations: ``query_scores`` ``(n,)``, ``cohort_scores``
    ``(n, m)`` for ``m`` cohort queries; returns ``(n,)`` float64.

    Z-norm of speaker verification (Auckenthaler et al., "Score normalization for text-independent speaker
    verification systems", 2000), with a bank of generic captions as the cohort, as QB-Norm (Bogolin et al.,
    CVPR 2022) uses a query bank against hubs in text-video retrieval: a picture that every caption scores
    well (a slide of text, a busy scene) stands out for none of them.
    """
    cohort_scores = np.asarray(cohort_scores, np.float64)
    std = cohort_scores.std(axis=1)
    return (np.asarray(query_scores, np.float64) - cohort_scores.mean(axis=1)) / np.where(std > 0, std, 1.0)


def fuse_moments(
    pictures: list[Hit],
    words: list[tuple[str, list[tuple[Hit, str]], tuple[float, float, int]]],
    *,
    k: int,
    weight: float = WORDS_WEIGHT,
    cohort: np.ndarray | None = None,
    words_only: bool = False,
    sounds: Sequence[Hit] = (),
    sound_cohort: np.ndarray | None = None,
    sound_weight: float = 0.0,
) -> list[tuple[Hit, str | None, str | None]]:
    """Moments of the pictures, of the sound and of the spaces of words, fused per moment (late fusion
    in the way of HERO, Li et al., EMNLP 2020: frames and what is said on one timeline); returns (hit,
    ``"audio"`` for a sound moment, the space of words that gave most or None for a picture moment,
    its words), best first.

    ``pictures`` and ``sounds`` are two-stage moments (:func:`search_space`), ``words`` per space of
    words its best segments with their text (:func:`mmsearch.textsearch.search_text`) and the mean,
    standard deviation and number of the scores of its nearest segments (:meth:`TextQuery.baseline`).
    Scores are standardised (z; the scales of the encoders differ: the pictures' and the sound's over
    their own list, the words' by :func:`words_evidence`) and only evidence *for* a moment counts: a
    negative z counts as 0, and so does a segment of words scoring under :data:`WORDS_GATE`
    (all-MiniLM-L6-v2 gives unrelated sentences a cosine under about 0.25, so the best of many
    unrelated lines never counts). The sound weighs ``sound_weight``, the pictures and the words
    ``1 - sound_weight`` (the words ``weight`` standard deviations of the pictures per standard
    deviation of their own); a space weighed 0 is left out. A moment scores its own weighted z plus,
    from each other list, the best weighted z of the moments it overlaps there; from the words, the
    best evidence said or written within it (when the words give more than the moment itself, the
    moment is the seconds of those words, not the whole stretch of similar pictures). Each claim
    counts in proportion to how much the two share (:func:`overlap_coefficient`: a moment within a
    caption's stretch, or a sentence within a moment, fully; a caption that touches a moment for half
    a second of its 14, little). Overlapping moments of one media item are one: the better scored is
    kept. Without words (none indexed, none above the gate) and sound the order is the pictures' own,
    so a query about what is seen ranks as the visual search does. ``cohort`` (``(len(pictures),)``,
    :func:`cohort_z`; ``sound_cohort`` for ``sounds``): how far each moment stands out for this query
    against a bank of generic captions; a moment claims no more than that (its z is the smaller of
    the two), so one that every caption matches does not outvote what was said. ``words_only``: the
    query quotes words, which must be said or written (as a search engine reads quotes), and
    ``words`` holds only segments that hold them (:meth:`mmsearch.textsearch.TextQuery.candidates`):
    each of those counts whatever its score, and a moment of pictures or sound is kept only where it
    overlaps one of them, and becomes that segment's seconds when it holds only part of it; no
    segment, no moment.
    """
    share = 1.0 - sound_weight
    dense = [(space, list(hits), share_of * _standardised(hits, bank)) for space, hits, bank, share_of in
             ((None, pictures, cohort, share), (AUDIO, sounds, sound_cohort, sound_weight)) if share_of > 0 and len(hits)]
    said = []
    for space, found, baseline in words:
        for hit, text in found:
            zw = words_evidence(hit.score, baseline)
            if hit.score >= WORDS_GATE and zw > 0 and share > 0:
                said.append((space, hit, text, share * weight * float(zw)))
            elif words_only:  # it holds the quoted words: a weak match still is where they are said
                said.append((space, hit, text, 0.0))

    def seen(hit: Hit, skip: int | None = None) -> float:
        """The best weighted z each other list of moments gives the moments ``hit`` overlaps, summed."""
        return sum(max(0.0, max((float(zi) * overlap_coefficient(hit, h) for h, zi in zip(hits, z) if overlaps(h, hit)), default=0.0))
                   for d, (_, hits, z) in enumerate(dense) if d != skip)

    fused: list[tuple[float, int, Hit, str | None, str | None]] = []
    for d, (space, hits, z) in enumerate(dense):
        for hit, zi in zip(hits, z):
            claims = [(w, w[3] * overlap_coefficient(w[1], hit)) for w in said if overlaps(w[1], hit)]
            if words_only and not claims:
                continue
            best, bonus = max(claims, key=lambda c: c[1], default=(None, 0.0))
            score = float(zi) + bonus + seen(hit, skip=d)
            if best and (bonus > zi or (words_only and not within(best[1], hit))):
                # the words say more than the moment, or it holds quoted words only in part: it is where they are said
                fused.append((score, len(fused), replace(hit, start=best[1].start, end=best[1].end), best[0], best[2]))
            else:
                fused.append((score, len(fused), hit, space, best[2] if best else None))
    for space, hit, text, evidence in said:
        fused.append((evidence + seen(hit), len(fused), hit, space, text))
    fused.sort(key=lambda f: (-round(f[0], SCORE_DECIMALS), f[1]))
    out: list[tuple[Hit, str | None, str | None]] = []
    for score, _, hit, space, text in fused:
        if any(overlaps(hit, kept) for kept, _, _ in out):
            continue
        out.append((replace(hit, score=score, text=text), space, text))
        if len(out) == k:
            break
    return out


def _standardised(hits: Sequence[Hit], bank: np.ndarray | None) -> np.ndarray:
    """The moments' scores as z over their list (``(len(hits),)`` float64), no higher than ``bank``
    (their :func:`cohort_z`) where it is given."""
    scores = np.asarray([h.score for h in hits], np.float64)
    z = (scores - scores.mean()) / (scores.std() or 1.0) if len(scores) else scores
    return np.minimum(z, bank) if bank is not None and len(z) else z
