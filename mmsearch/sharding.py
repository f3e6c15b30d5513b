"""Writing a sharded index: one :class:`~mmsearch.store.IndexWriter` and one
:class:`~mmsearch.derive.Deriver` per shard, behind the interface the ingest runner uses for one.

Media are partitioned by id (:func:`mmsearch.store.shard_of`): all of a media item's segments,
moments, media vector and paths go to its shard, so each shard can run both retrieval stages on
its own and a search merges top-k lists only (:func:`mmsearch.store.merge_snapshots`). Discovery,
content hashes, moved files and duplicates are decided over all shards at once, as for one index.
Each shard commits crash-safely on its own; a commit of the whole commits every shard in turn. A
run stopped between two shards' commits leaves each shard a complete generation: the files the
later shards had not committed are not in the index and the next run indexes them again, as after
any interrupted run. Failures (files that could not be indexed) are recorded on shard 0.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .derive import Deriver
from .errors import UsageError
from .store import MANIFEST, IndexWriter, make_index_dir, shard_count, shard_dirs, shard_of, write_shard_layout

__all__ = ["MAX_SHARDS", "ShardedDeriver", "ShardedWriter", "open_deriver", "open_sharded_writer"]

MAX_SHARDS = 256


def open_sharded_writer(root: str | os.PathLike, *, shards: int | None, config: dict[str, Any] | None = None) -> "ShardedWriter | None":
    """The writer of the sharded index at ``root``, creating one of ``shards`` shards where there is
    no index yet; None when ``root`` is (or will be) an index of one shard.

    Raises :class:`UsageError` when ``shards`` differs from the existing index's (re-sharding is
    not supported: build a new index).
    """
    root = Path(root)
    have = shard_count(root) if root.is_dir() else None
    if shards is not None and not 1 <= shards <= MAX_SHARDS:
        raise UsageError(f"--shards must be between 1 and {MAX_SHARDS}, got {shards}")
    if have is None:
        if (root / MANIFEST).exists():
            if shards not in (None, 1):
                raise UsageError(
                    f"the index at {root} has one shard; it cannot be split into {shards}: build a new index with --shards {shards} (another --index)"
                )
            return None
        if shards in (None, 1):
            return None
        make_index_dir(root)
        write_shard_layout(root, shards)
        have = shards
    elif shards is not None and shards != have:
        raise UsageError(f"the index at {root} has {have} shards, not {shards}: leave out --shards, or build a new index")
    writers: list[IndexWriter] = []
    try:
        for folder in shard_dirs(root, have):
            writers.append(IndexWriter(folder, config=config, upgrade=False))
    except BaseException:
        for w in writers:
            w.close()
        raise
    return ShardedWriter(root, writers)


class ShardedWriter:
    """The writers of a sharded index's shards, as one writer (the part of
    :class:`~mmsearch.store.IndexWriter`'s interface the ingest runner uses): path rows go to their
    media's shard, failures to shard 0, spaces and the recorded config to every shard."""

    legacy: dict[str, Any] = {}
    upgraded_from: int | None = None

    def __init__(self, root: Path, writers: list[IndexWriter]) -> None:
        self.root = Path(root)
        self.shards = writers
        self._drop_stale_paths()

    def _drop_stale_paths(self) -> None:
        """A path on two shards: its content changed (a new media id, on another shard) and a run
        stopped between the two shards' commits. The newer content (the higher media id: ids only
        grow) keeps the path; the older row goes at the next commit."""
        owner: dict[str, tuple[int, IndexWriter]] = {}
        for w in self.shards:
            for path, row in list(w.paths.items()):
                seen = owner.get(path)
                if seen is None:
                    owner[path] = (int(row["media_id"]), w)
                elif int(row["media_id"]) > seen[0]:
                    seen[1].remove_path(path)
                    owner[path] = (int(row["media_id"]), w)
                else:
                    w.remove_path(path)

    def shard(self, media_id: int) -> IndexWriter:
        return self.shards[shard_of(media_id, len(self.shards))]

    @property
    def manifest(self) -> dict[str, Any]:
        first = self.shards[0].manifest
        return {**first, "generation": sum(int(w.manifest["generation"]) for w in self.shards), "common": None}

    @property
    def config(self) -> dict[str, Any]:
        return self.shards[0].config

    @property
    def spaces(self) -> dict[str, dict[str, Any]]:
        return self.shards[0].spaces

    @property
    def dirty(self) -> bool:
        return any(w.dirty for w in self.shards)

    @property
    def paths(self) -> dict[str, dict[str, Any]]:
        return {p: r for w in self.shards for p, r in w.paths.items()}

    @property
    def failures(self) -> dict[str, dict[str, Any]]:
        return self.shards[0].failures

    def close(self) -> None:
        for w in self.shards:
            w.close()

    def __enter__(self) -> "ShardedWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def space_encoder(self, space: str) -> dict[str, Any] | None:
        return self.shards[0].space_encoder(space)

    def record_config(self, key: str, value: Any) -> None:
        for w in self.shards:
            w.record_config(key, value)

    def ensure_space(self, space: str, encoder: dict[str, Any], dim: int, *, anchor: str = "start") -> None:
        for w in self.shards:
            w.ensure_space(space, encoder, dim, anchor=anchor)

    def set_query_probes(self, space: str, vectors: np.ndarray | Callable[[], np.ndarray]) -> None:
        if callable(vectors):  # made once, when the first shard needs them
            vectors = functools.cache(vectors)
        for w in self.shards:  # each shard's indexes are tuned on them
            w.set_query_probes(space, vectors)

    def query_probes(self, space: str) -> np.ndarray | None:
        """The space's query probes (made now on every shard if given as a function), as the first shard has them."""
        probes = [w.query_probes(space) for w in self.shards]
        return probes[0]

    def set_tagger(self, record: dict[str, Any]) -> None:
        for w in self.shards:
            w.set_tagger(record)

    @property
    def tagger(self) -> dict[str, Any] | None:
        return self.shards[0].tagger

    def add_tags(self, media_id: int, *args: Any) -> None:
        self.shard(media_id).add_tags(media_id, *args)

    def hashes(self) -> dict[str, int]:
        return {h: m for w in self.shards for h, m in w.hashes().items()}

    def next_media_id(self) -> int:
        return max(w.next_media_id() for w in self.shards)

    def live_media_ids(self) -> np.ndarray:
        return np.unique(np.concatenate([w.live_media_ids() for w in self.shards]))

    def put_path(self, row: dict[str, Any]) -> None:
        owner = self.shard(row["media_id"])
        for w in self.shards:  # the path held other content before (on another shard): that row goes
            if w is not owner and row["path"] in w.paths:
                w.remove_path(row["path"])
        owner.put_path(row)
        self.shards[0].drop_failure(row["path"])

    def remove_path(self, path: str) -> bool:
        self.shards[0].drop_failure(path)
        return any([w.remove_path(path) for w in self.shards if path in w.paths])

    def put_failure(self, row: dict[str, Any]) -> None:
        self.shards[0].put_failure(row)

    def drop_failure(self, path: str) -> None:
        self.shards[0].drop_failure(path)

    def sync_config(self) -> None:
        """Every shard records the config shard 0 holds (each shard directory describes itself)."""
        for w in self.shards[1:]:
            if w.manifest["config"] != self.config:
                w.manifest["config"] = dict(self.config)
                w.dirty = True


class ShardedDeriver:
    """One :class:`~mmsearch.derive.Deriver` per shard, as one: segments go to their media's shard,
    a commit commits every shard (returning the sum of their generations, as
    :func:`mmsearch.store.read_manifest` counts them)."""

    def __init__(self, writer: ShardedWriter, **options: Any) -> None:
        self.writer = writer
        self.derivers = [Deriver(w, **options) for w in writer.shards]

    @property
    def timings(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for d in self.derivers:
            for key, value in d.timings.items():
                out[key] = out.get(key, 0.0) + value
        return out

    def add_segments(self, space: str, media_id: int, *args: Any, **kwargs: Any) -> None:
        self.derivers[shard_of(media_id, len(self.derivers))].add_segments(space, media_id, *args, **kwargs)

    def commit(self, *, wait: bool = True) -> int:
        self.writer.sync_config()
        return sum(d.commit(wait=wait) for d in self.derivers)

    def close(self) -> None:
        for d in self.derivers:
            d.close()

    def __enter__(self) -> "ShardedDeriver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def open_deriver(writer: IndexWriter | ShardedWriter, **options: Any) -> Deriver | ShardedDeriver:
    """The derive stage over a writer: a :class:`~mmsearch.derive.Deriver`, or one per shard."""
    if isinstance(writer, ShardedWriter):
        return ShardedDeriver(writer, **options)
    return Deriver(writer, **options)
