"""The derive stage: segments of new media -> moment windows, media-level vectors and vector indexes.

A commit costs what it adds. The segments of each media item become its moment windows
and its media-level vector once, when the item is added (:meth:`Deriver.add_segments`);
all three are appended to the space's tables as new shards. At :meth:`Deriver.commit` the
new moment and media rows are added to the trained vector indexes (FAISS ``add``: codes
for the new rows only; re-ranking reads the memory-mapped shards), and removed media stay
as tombstones that searches skip. Nothing reads the vectors already in the index.

An index is trained again only when the number of live rows leaves the range its recipe
was chosen for (half to twice ``chosen_for``, :meth:`IndexRecipe.covers`) or another recipe
is chosen (exact search while it meets the latency target, then IVF with a list count
for the size). That build streams the shards in chunks and runs in a background thread
while later commits go on: until it is adopted, the old index keeps taking new rows, or,
before the first one, the rows are searched exactly. A commit with ``wait=True`` (the last
of a run) waits for it. When tombstones pass :data:`COMPACT_SHARE` of a space's segments,
the shards are rewritten without them and the indexes built again, at that commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .indexes import IndexRecipe, RowVectors, VectorIndex, choose_recipe
from .moments import MomentConfig, media_vector, moment_windows
from .spaces import anchor_of
from .store import INDEXED_TABLES, MEDIA, MOMENTS, SEGMENTS, IndexWriter

__all__ = ["COMPACT_SHARE", "Deriver", "frame_segments", "upgrade_index"]

log = logging.getLogger("mmsearch.derive")

COMPACT_SHARE = 0.25  # rewrite a space without its tombstones once they are this share of its segments
RecipeChooser = Callable[[int, int], IndexRecipe]


def frame_segments(pts: np.ndarray, *, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames sampled at ``pts`` (seconds, ascending) as segments: each shown until the next one's pts,
    the last one until the end of the media (``duration``, seconds) or one frame step past it."""
    starts = np.asarray(pts, dtype=np.float64)
    if not len(starts):
        return starts, starts.copy()
    step = float(np.median(np.diff(starts))) if len(starts) > 1 else 0.0
    last_end = float(duration) if duration > starts[-1] else float(starts[-1] + step)
    return starts, np.concatenate([starts[1:], [last_end]])


@dataclass
class _Level:
    """The vector index of one table of one space, as the writer process holds it between commits."""

    index: VectorIndex | None = None
    future: Future | None = None  # a build (first training or retraining) under way


@dataclass
class Deriver:
    """Turns added segments into the derived tables and keeps the vector indexes current.

    ``moments``: the moment windows; ``recipe_for(n, dim)``: the index recipe for ``n`` live rows
    (default :func:`mmsearch.indexes.choose_recipe`); ``background``: train indexes in a thread
    while later commits go on (False: at the commit that needs them).
    """

    writer: IndexWriter
    moments: MomentConfig
    recipe_for: RecipeChooser | None = None
    background: bool = True
    timings: dict[str, float] = field(default_factory=lambda: {"derive": 0.0, "index_add": 0.0, "index_wait": 0.0})
    _levels: dict[tuple[str, str], _Level] = field(default_factory=dict)
    _executor: ThreadPoolExecutor | None = None

    def __enter__(self) -> "Deriver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop background builds (a running one finishes; its result is dropped)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    # -- adding -------------------------------------------------------------------------------
    def add_segments(
        self, space: str, media_id: int, starts: np.ndarray, ends: np.ndarray, vectors: np.ndarray, *, duration: float
    ) -> None:
        """One media item's segments of ``space``: seconds, seconds, ``(n, dim)`` float32 L2-normalised vectors.

        Appends them, the item's moment windows and its media-level vector; all of one item in one call.
        """
        t0 = time.perf_counter()
        starts = np.asarray(starts, np.float64)
        order = np.argsort(starts, kind="stable")
        starts, ends = starts[order], np.asarray(ends, np.float64)[order]
        vectors = np.asarray(vectors, np.float32)[order]
        if not len(starts):
            return
        w = self.writer
        w.append(space, SEGMENTS, media_id, vectors, starts=starts, ends=ends)
        times = starts if w.spaces[space].get("anchor", "start") == "start" else (starts + ends) / 2
        m_start, m_end, m_vec = moment_windows(times, vectors, duration=duration, config=self.moments)
        w.append(space, MOMENTS, media_id, m_vec, starts=m_start, ends=m_end)
        w.append(space, MEDIA, media_id, media_vector(vectors)[None])
        self.timings["derive"] += time.perf_counter() - t0

    # -- committing ---------------------------------------------------------------------------
    def commit(self, *, wait: bool = True) -> int:
        """Update the indexes with what was added and commit a generation; returns its number.

        ``wait``: adopt background builds before committing (the last commit of a run); with
        False a build still running is adopted by a later commit.
        """
        w = self.writer
        w.flush()
        for space in list(w.spaces):
            self._derive_space(space, wait)
        return w.commit()

    def _derive_space(self, space: str, wait: bool) -> None:
        w = self.writer
        dead = np.union1d(w.tombstones(space), np.setdiff1d(w.committed_media_ids(), w.live_media_ids()))
        if len(dead):
            segment_ids = w.table_media_ids(space, SEGMENTS)
            if len(segment_ids) and np.isin(segment_ids, dead).mean() > COMPACT_SHARE:
                for table in INDEXED_TABLES:
                    self._discard(space, table)
                w.compact(space, dead)
                dead = np.zeros(0, np.int64)
                wait = True
        info: dict[str, Any] = {}
        for table in INDEXED_TABLES:
            info[table] = self._derive_level(space, table, dead, wait)
        live_segments = len(w.table_media_ids(space, SEGMENTS))
        if len(dead):
            live_segments -= int(np.isin(w.table_media_ids(space, SEGMENTS), dead).sum())
        w.describe_space(
            space,
            recipe=info[MOMENTS][0],
            media_recipe=info[MEDIA][0],
            derived={"n_frames": live_segments, "n_segments": live_segments, "n_moments": info[MOMENTS][1], "n_media": info[MEDIA][1]},
        )

    def _level(self, space: str, table: str) -> _Level:
        key = (space, table)
        if key not in self._levels:
            self._levels[key] = _Level(index=self.writer.load_index(space, table))
        return self._levels[key]

    def _discard(self, space: str, table: str) -> None:
        level = self._levels.pop((space, table), None)
        if level is not None and level.future is not None:
            level.future.cancel()

    def _derive_level(self, space: str, table: str, dead: np.ndarray, wait: bool) -> tuple[dict[str, Any], int]:
        """Bring one index up to date; returns (the recipe it has, the number of live rows)."""
        w = self.writer
        level = self._level(space, table)
        vectors = w.table_vectors(space, table)
        n = len(vectors)
        n_live = n - (int(np.isin(w.table_media_ids(space, table), dead).sum()) if len(dead) else 0)
        wanted = (self.recipe_for or _default_recipe)(n_live, vectors.dim)
        changed = table not in w.spaces[space].get("indexes", {})
        adopted = False
        if level.future is not None and (wait or level.future.done()):
            adopted = self._adopt(level)
        if wanted.factory == "Flat":  # exact search over the rows meets the target: no index to keep
            if level.future is not None:
                level.future.cancel()
                level.future = None
            changed |= level.index is not None
            level.index = None
        else:
            current = level.index
            stale = current is None or current.recipe.factory != wanted.factory or not current.recipe.covers(n_live)
            if stale and level.future is None:
                level.future = self._submit(vectors, wanted)
                if wait or not self.background:
                    adopted |= self._adopt(level)
            if level.index is not None and level.index.ntotal < n:
                t0 = time.perf_counter()
                level.index.add(vectors.view(level.index.ntotal, n), refine=vectors if level.index.refine is not None else None)
                if not adopted:  # this generation's index was extended, not trained
                    r = level.index.recipe
                    level.index.recipe = IndexRecipe(r.factory, {**r.params, "retrained": False}, r.chosen_for)
                self.timings["index_add"] += time.perf_counter() - t0
                changed = True
        if changed or adopted:
            w.put_index(space, table, level.index)
        recipe = level.index.recipe if level.index is not None else IndexRecipe("Flat", {}, n_live)
        return recipe.to_dict(), n_live

    def _submit(self, vectors: RowVectors, recipe: IndexRecipe) -> Future:
        if not self.background:
            future: Future = Future()
            future.set_result(_build(vectors, recipe))
            return future
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmsearch-index-build")
        return self._executor.submit(_build, vectors, recipe)

    def _adopt(self, level: _Level) -> bool:
        """Take the finished build (waiting for it); rows added since it started are added by the caller."""
        future, level.future = level.future, None
        t0 = time.perf_counter()
        try:
            built = future.result()
        except Exception as exc:  # a failed build leaves the old index (or exact search) in place
            log.warning("building a vector index failed (%s); keeping the previous one", exc)
            return False
        finally:
            self.timings["index_wait"] += time.perf_counter() - t0
        level.index = built
        return True


def _build(vectors: RowVectors, recipe: IndexRecipe) -> VectorIndex:
    """Train, fill and tune an index over ``vectors`` (streamed in chunks); codes only, re-ranking from the shards."""
    return VectorIndex.build(vectors, recipe=recipe, refine_outside=True)


def _default_recipe(n: int, dim: int) -> IndexRecipe:
    return choose_recipe(n, dim)


def upgrade_index(writer: IndexWriter, moments: MomentConfig, *, audio_window: float | None = None) -> None:
    """Refill the spaces of an index of an earlier format (opened with ``upgrade=True``) from its stored vectors.

    Format 1 kept one time per vector: a frame's pts, an audio window's centre. A frame becomes
    the segment [pts, next pts) (:func:`frame_segments`); a window, ``audio_window`` seconds
    around its centre. Moments, media vectors and indexes are derived again; nothing is decoded.
    """
    durations = {int(r["media_id"]): float(r["duration"] or 0.0) for r in writer.paths.values()}
    with Deriver(writer, moments=moments, background=False) as deriver:
        for space, entry in writer.legacy.items():
            anchor = anchor_of(space)
            writer.ensure_space(space, entry["encoder"], int(entry["dim"]), anchor=anchor)
            for media_id, times, vectors in writer.legacy_segments(space):
                order = np.argsort(times, kind="stable")
                times, vectors = times[order], vectors[order]
                duration = durations.get(media_id, 0.0)
                if anchor == "start":
                    starts, ends = frame_segments(times, duration=duration)
                else:
                    half = (audio_window or 0.0) / 2
                    starts, ends = times - half, times + half
                deriver.add_segments(space, media_id, starts, ends, vectors, duration=duration)
        deriver.commit()
