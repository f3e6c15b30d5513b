"""The derive stage: segments of new media -> moment windows, media-level vectors and vector indexes.

A commit costs what it adds. The segments of each media item become its moment windows
and its media-level vector once, when the item is added (:meth:`Deriver.add_segments`);
all three are appended to the space's tables as new shards at the next commit. Nothing in
a commit reads the vectors already indexed.

The vector indexes follow in two background threads, each on one core at a lower priority,
pausing while a commit runs: an *extension* appends the rows added since to a clone of the
trained index (no retraining), a *build* trains a new one when the number of live rows
leaves the range its recipe was chosen for (half to twice ``chosen_for``,
:meth:`IndexRecipe.covers`) or another recipe is chosen (exact search while it meets the
latency target, then IVF with a list count for the size), streaming the shards in chunks.
Each job writes and checksums its own index file (codes only: re-ranking reads the
memory-mapped shards), which the next commit renames into place; until then the rows past
the committed index are searched exactly (:class:`mmsearch.indexes.RowIndex`), so every
committed row is searchable at once. A commit with ``wait=True`` (the last of a run) runs
the jobs to the end. Removed media stay as tombstones that searches skip; when they pass
:data:`COMPACT_SHARE` of a space's segments, the shards are rewritten without them and the
indexes built again, at that commit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .indexes import IndexRecipe, PreparedFile, RowVectors, VectorIndex, choose_recipe
from .moments import MomentConfig, media_vector, moment_windows, repeat_counts
from .spaces import TEXT_SPACES, anchor_of
from .store import DATA, INDEXED_TABLES, MEDIA, MOMENTS, SEGMENTS, IndexWriter

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


Job = tuple[VectorIndex, PreparedFile]  # what a job hands back: the index and its file, written and checksummed


class JobStopped(Exception):
    """A background index job stopped early because its deriver was closed (an interrupted run)."""


@dataclass
class _Level:
    """The vector index of one table of one space, as the writer process holds it between commits."""

    index: VectorIndex | None = None
    file: PreparedFile | None = None  # ``index`` written but not yet part of a generation
    build: Future | None = None  # a first training or a retraining under way
    staged: Job | None = None  # a finished build that covers fewer rows than ``index``: extended, then adopted
    extend: tuple[Future, VectorIndex] | None = None  # a copy of ``index`` (or the staged one) being given the newer rows

    def take(self, job: Job, *, drop_staged: bool = False) -> None:
        """Use ``job``'s index from now on (its file goes into the next generation); ``drop_staged``:
        it supersedes the staged build too."""
        if self.file is not None:
            self.file.discard()
        self.index, self.file = job
        if drop_staged and self.staged is not None:
            self.staged[1].discard()
            self.staged = None


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
    # seconds spent: cutting moments (add_segments), writing shards, updating indexes (waiting for jobs
    # included), publishing the generation (tables, checksums, manifest)
    timings: dict[str, float] = field(
        default_factory=lambda: {"derive": 0.0, "flush": 0.0, "indexes": 0.0, "index_wait": 0.0, "publish": 0.0}
    )
    _levels: dict[tuple[str, str], _Level] = field(default_factory=dict)
    _executors: dict[str, ThreadPoolExecutor] = field(default_factory=dict)
    # set while no commit runs: background jobs pause at their next step during a commit, so a commit
    # on a small machine is not slowed by index building (both cores of a 2-core machine are its)
    _quiet: threading.Event = field(default_factory=lambda: _set(threading.Event()))
    _closing: bool = False

    def __enter__(self) -> "Deriver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the background jobs: a running one stops at its next step; results and files are dropped."""
        self._closing = True
        self._quiet.set()  # wake a job waiting out a commit, so it sees the stop at once
        for key in list(self._levels):
            self._discard(*key)
        for executor in self._executors.values():
            executor.shutdown(wait=True, cancel_futures=True)
        self._executors = {}

    def _pause(self) -> None:
        """Where a background job may wait (while a commit runs) or stop (the deriver is closing)."""
        if self._closing:
            raise JobStopped("the index writer is closing")
        self._quiet.wait()
        if self._closing:
            raise JobStopped("the index writer is closing")

    # -- adding -------------------------------------------------------------------------------
    def add_segments(
        self,
        space: str,
        media_id: int,
        starts: np.ndarray,
        ends: np.ndarray,
        vectors: np.ndarray,
        *,
        duration: float,
        texts: list[str] | None = None,
    ) -> None:
        """One media item's segments of ``space``: seconds, seconds, ``(n, dim)`` float32 L2-normalised vectors,
        and for a space of what is said or written the text of each.

        Appends them, the item's moment windows and its media-level vector; all of one item in one call.
        In a space of words (:data:`~mmsearch.spaces.TEXT_SPACES`) each segment (a sentence, a
        subtitle, a line on screen) is its own moment, row for row, so the moment index finds
        segments and a moment row is the segment row of the same number.
        """
        t0 = time.perf_counter()
        starts = np.asarray(starts, np.float64)
        order = np.argsort(starts, kind="stable")
        starts, ends = starts[order], np.asarray(ends, np.float64)[order]
        vectors = np.asarray(vectors, np.float32)[order]
        texts = None if texts is None else [texts[int(i)] for i in order]
        if not len(starts):
            return
        w = self.writer
        w.append(space, SEGMENTS, media_id, vectors, starts=starts, ends=ends, texts=texts)
        weights = None
        if space in TEXT_SPACES:
            m_start, m_end, m_vec = starts, ends, vectors
        elif w.spaces[space].get("anchor", "start") == "start":  # frames: a kept frame may stand for repeats after it
            fps = (w.config or {}).get("fps")
            step = 1.0 / float(fps) if fps else None
            weights = repeat_counts(starts, ends, step)
            m_start, m_end, m_vec = moment_windows(starts, vectors, duration=duration, config=self.moments, ends=ends, step=step)
        else:
            m_start, m_end, m_vec = moment_windows((starts + ends) / 2, vectors, duration=duration, config=self.moments)
        w.append(space, MOMENTS, media_id, m_vec, starts=m_start, ends=m_end)
        w.append(space, MEDIA, media_id, media_vector(vectors, weights)[None])
        self.timings["derive"] += time.perf_counter() - t0

    # -- committing ---------------------------------------------------------------------------
    def commit(self, *, wait: bool = True) -> int:
        """Update the indexes with what was added and commit a generation; returns its number.

        ``wait``: adopt background builds before committing (the last commit of a run); with
        False a build still running is adopted by a later commit.
        """
        self._quiet.clear()  # background jobs wait at their next step until this commit is done
        try:
            return self._commit(wait)
        finally:
            self._quiet.set()

    def _commit(self, wait: bool) -> int:
        w = self.writer
        t0 = time.perf_counter()
        w.flush()
        t1 = time.perf_counter()
        for space in list(w.spaces):
            self._derive_space(space, wait)
        t2 = time.perf_counter()
        generation = w.commit()
        t3 = time.perf_counter()
        for key, seconds in (("flush", t1 - t0), ("indexes", t2 - t1), ("publish", t3 - t2)):
            self.timings[key] = self.timings.get(key, 0.0) + seconds
        return generation

    def _derive_space(self, space: str, wait: bool) -> None:
        w = self.writer
        dead = w.dead_media(space)
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
        live_segments = sum(int(shard["n"]) for shard in w.spaces[space]["tables"].get(SEGMENTS, []))
        if len(dead):
            live_segments -= int(np.isin(w.table_media_ids(space, SEGMENTS), dead).sum())
        w.describe_space(
            space,
            recipe=info[MOMENTS][0],
            media_recipe=info[MEDIA][0],
            derived={
                "n_frames": live_segments, "n_segments": live_segments, "n_moments": info[MOMENTS][1], "n_media": info[MEDIA][1],
                "moments_awaiting_index": info[MOMENTS][2],
            },
        )

    def _level(self, space: str, table: str) -> _Level:
        key = (space, table)
        if key not in self._levels:
            self._levels[key] = _Level(index=self.writer.load_index(space, table))
        return self._levels[key]

    def _discard(self, space: str, table: str) -> None:
        """Forget a table's index state: cancel its jobs and delete the files nobody will install."""
        level = self._levels.pop((space, table), None)
        if level is None:
            return
        for future in (level.build, level.extend[0] if level.extend else None):
            if future is not None:
                future.cancel()  # a job already running finishes; its file is deleted then
                future.add_done_callback(_drop)
        for job_file in (level.file, level.staged[1] if level.staged else None):
            if job_file is not None:
                job_file.discard()

    def _derive_level(self, space: str, table: str, dead: np.ndarray, wait: bool) -> tuple[dict[str, Any], int, int]:
        """Bring one index towards the table's rows; returns (the recipe it has, the number of live rows,
        the rows searched exactly until a job adds them to an index).

        Two kinds of job, each on a copy, at most one of each per index at a time: a build
        (first training or retraining) and an extension (the rows added since, appended to a
        clone of the current index), each on a background thread of its own, on one core at a
        lower priority. A job also writes and checksums its index file, so a commit only
        renames it into place: the commit's own cost is the rows it adds. A finished job is
        adopted by the next commit; until then the rows past the committed index are searched
        exactly. An extension of an index that a finished build replaces is dropped. ``wait``
        (or ``background=False``) runs the jobs to the end within this commit.
        """
        w = self.writer
        level = self._level(space, table)
        vectors = w.table_vectors(space, table)
        n = len(vectors)
        n_live = n - (int(np.isin(w.table_media_ids(space, table), dead).sum()) if len(dead) else 0)
        wanted = (self.recipe_for or _default_recipe)(n_live, vectors.dim)
        changed = table not in w.spaces[space].get("indexes", {})
        synchronous = wait or not self.background
        changed |= self._collect(level, synchronous)
        if wanted.factory == "Flat":  # exact search over the rows meets the target: no index to keep
            had_file = bool(w.index_entry(space, table).get("file"))
            self._discard(space, table)
            level = self._levels[(space, table)] = _Level()
            changed |= had_file
        else:
            # synchronously: a build first, then the extension of what it gave (a failed build: of the old index)
            for step in range(2 if synchronous else 1):
                self._start_jobs(level, vectors, wanted, n_live, w.root / DATA, synchronous=synchronous, may_build=step == 0,
                                 queries=w.query_probes(space))
                if synchronous:
                    changed |= self._collect(level, True)
        if changed:
            w.put_index(space, table, level.index, prepared=level.file)
            level.file = None  # the writer installs it at this commit
        recipe = level.index.recipe if level.index is not None else IndexRecipe("Flat", {}, n_live)
        # rows searched exactly although an index is wanted: added since the index, or before the first one
        waiting = 0 if wanted.factory == "Flat" else n - (level.index.ntotal if level.index is not None else 0)
        return recipe.to_dict(), n_live, waiting

    def _collect(self, level: _Level, wait: bool) -> bool:
        """Adopt the jobs that finished (all of them, waiting, with ``wait``); True if the index changed."""
        changed = False
        if level.build is not None and (wait or level.build.done()):
            built = self._result(level.build)
            level.build = None
            if built is not None and (wait or level.index is None or built[0].ntotal >= level.index.ntotal):
                level.take(built, drop_staged=True)
                changed = True
            elif built is not None:  # the index in use covers more rows: extend the new one first, then switch
                level.staged = built
        if level.extend is not None and (wait or level.extend[0].done()):
            (future, base), level.extend = level.extend, None
            extended = self._result(future)
            if extended is not None and level.staged is not None and base is level.staged[0]:
                level.take(extended, drop_staged=True)
                changed = True
            elif extended is not None and base is level.index:
                level.take(extended)
                changed = True
            elif extended is not None:  # superseded meanwhile
                extended[1].discard()
        return changed

    def _start_jobs(
        self, level: _Level, vectors: RowVectors, wanted: IndexRecipe, n_live: int, folder: Path, *, synchronous: bool, may_build: bool,
        queries: np.ndarray | None = None,
    ) -> None:
        """A build when the index is missing or stale (none running), an extension when it lags the rows (none running).
        ``queries``: the space's query probes, which a build tunes on as well."""
        current = level.index
        stale = current is None or current.recipe.factory != wanted.factory or not current.recipe.covers(n_live)
        if may_build and stale and level.build is None and level.staged is None:
            level.build = self._submit(_build, vectors, wanted, folder, queries, synchronous=synchronous, worker="build")
            if synchronous:
                return  # the extension, if any, starts from what the build gives
        target = level.staged[0] if level.staged is not None else level.index
        if target is not None and target.ntotal < len(vectors) and level.extend is None:
            level.extend = (self._submit(_extend, target, vectors, folder, synchronous=synchronous, worker="extend"), target)

    def _submit(self, job: Callable[..., Job], *args: Any, synchronous: bool, worker: str) -> Future:
        """Run ``job(*args)`` here (``synchronous``) or on the background thread named ``worker``, on one core there."""
        if synchronous:
            future: Future = Future()
            try:
                future.set_result(job(*args, pause=None))
            except Exception as exc:  # reported where it is adopted
                future.set_exception(exc)
            return future
        if worker not in self._executors:
            self._executors[worker] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mmsearch-index-{worker}")
        return self._executors[worker].submit(_in_background, job, *args, pause=self._pause)

    def _result(self, future: Future) -> Job | None:
        """A job's index and file (waiting for it); None when it failed, which leaves the old index (or exact search) in place."""
        t0 = time.perf_counter()
        waiting = not future.done()
        if waiting:
            self._quiet.set()  # the commit waits for the job: let it run
        try:
            return future.result()
        except Exception as exc:
            log.warning("updating a vector index failed (%s); keeping the previous one", exc)
            return None
        finally:
            if waiting:
                self._quiet.clear()
            self.timings["index_wait"] += time.perf_counter() - t0


BACKGROUND_NICE = 10  # background index jobs yield the CPU to commits, decoders and encoders


def _in_background(job: Callable[..., Job], *args: Any, pause: Callable[[], Any]) -> Job:
    """A background job on one core at a lower priority, waiting out commits, so it does not slow ingestion down.

    OpenMP's thread count and Linux's nice value are both per thread.
    """
    import faiss

    faiss.omp_set_num_threads(1)
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (OSError, AttributeError):  # not Linux, or not allowed: run at the normal priority
        pass
    return job(*args, pause=pause)


def _set(event: threading.Event) -> threading.Event:
    event.set()
    return event


def _drop(future: Future) -> None:
    """Delete the file of a job whose result nobody takes."""
    if not future.cancelled() and future.exception() is None:
        future.result()[1].discard()


def _build(vectors: RowVectors, recipe: IndexRecipe, folder: Path, queries: np.ndarray | None, *, pause: Callable[[], Any] | None) -> Job:
    """Train, fill and tune an index over ``vectors`` (streamed in chunks) and, tuning, over ``queries``
    too (the space's query probes, or None); codes only, re-ranking from the shards."""
    # k-means samples and tuning re-rank rows all over the shards: leave those pages to the page cache
    index = VectorIndex.build(vectors.releasing(), recipe=recipe, refine_outside=True, pause=pause, queries=queries)
    index.refine = vectors
    if pause is not None:
        pause()
    return index, index.write_prepared(folder)


def _extend(index: VectorIndex, vectors: RowVectors, folder: Path, *, pause: Callable[[], Any] | None) -> Job:
    """A copy of ``index`` with the rows of ``vectors`` past it appended (no retraining); the original is untouched."""
    import faiss

    if pause is not None:
        pause()
    out = VectorIndex(faiss.clone_index(index.index), index.recipe, refine=index.refine)
    out.add(vectors.view(index.ntotal), refine=vectors if index.refine is not None else None, pause=pause)
    r = out.recipe
    out.recipe = IndexRecipe(r.factory, {**r.params, "retrained": False}, r.chosen_for)  # extended, not trained
    out._apply_params()
    if pause is not None:
        pause()
    return out, out.write_prepared(folder)


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
