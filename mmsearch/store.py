"""The index directory: versioned generations, committed by atomic rename.

Layout of an index directory (format 2)::

    manifest.json                                the current generation (the only file ever replaced)
    data/<space>-segments-s000004.npy / .parquet segments of one commit: vectors (float32) and rows
                                                 (media_id, start, end in seconds); never rewritten
    data/<space>-moments-s000005.npy / .parquet  moment windows of the media of one commit, same shape
    data/<space>-media-s000006.npy / .parquet    one media-level vector per media item (rows: media_id)
    data/g000007-<space>-moments.faiss           the vector index over a prefix of the moment rows
    data/g000007-<space>-media.faiss             ... and over the media rows (absent while exact search suffices)
    data/g000007-media.parquet                   path rows: the base table, rewritten when the deltas outgrow it
    data/g000009-media-delta.parquet             the path rows a commit changed (``removed`` marks a path gone)
    data/g000007-failures.parquet                files that could not be indexed

Each space holds three tables of rows with vectors; a row's position across a table's
shards (in manifest order) is its row id, the id a vector index stores. Removed media are
tombstones (``tombstones`` in the space's manifest entry) skipped at search, until a
compaction rewrites the shards without them. The path rows are a base table and a few deltas
(``media`` and ``media_deltas`` in the manifest), merged in the way of a log-structured merge
tree, so a commit writes the paths it changed, not the library's (:func:`plan_media_deltas`).
A commit writes every new file under a temporary name, fsyncs and renames it, then writes
the new manifest the same way and fsyncs the directory; vector files of :data:`DIRECT_WRITE_BYTES`
or more are written past the page cache (:class:`mmsearch.fileio.DirectFile`). Readers read
``manifest.json`` once and open exactly the files it lists, so they see one complete generation.
Files that no generation in use refers to, and temporary files left by a crash, are removed by
the next writer.

A sharded index (``mmsearch index --shards N``) is a folder holding ``shards.json`` (the number of
shards and the rule ``media_id % shards``) and ``shard-000/`` ... ``shard-NNN/``, each an index
directory as above with its own generations, vector indexes and lock; all of a media item's rows
(segments, moments, media vector, paths) live on one shard. :func:`read_manifest` and
:func:`open_snapshot` read it as one index: the generation is the sum of the shards' (it grows
with every commit of any shard), and each space's vector indexes are searched shard by shard with
the top-k lists merged (:class:`mmsearch.indexes.ShardedRowIndex`).

This layer deals in rows, vectors and files; it knows nothing of decoding, encoders or
moments: the derive stage (:mod:`mmsearch.derive`) decides what to append and which vector
index to keep, and hands both to :class:`IndexWriter`.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import re
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import IndexCorruptError, IndexFormatError, IndexNotFoundError, IndexWriteError, MMSearchError, NotAnIndexError, UsageError
from .fileio import atomic_write as _atomic_write
from .fileio import DirectFile, display_path, file_crc32  # noqa: F401 - file_crc32 is part of the store's vocabulary
from .indexes import IndexRecipe, PreparedFile, RowIndex, RowVectors, ShardedRowIndex, VectorIndex, split_refine
from .spaces import ANCHORS

FORMAT = "mmsearch-index"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
SHARDS_FILE = "shards.json"  # a sharded index: its layout; each shard-NNN/ folder is an index directory of its own
SHARDS_FORMAT = "mmsearch-shards"
DATA = "data"
TMP_PREFIX = ".tmp-"
VERIFY_CHECKSUM_BELOW = 64 << 20  # on open, files smaller than this get their crc32 checked

SEGMENTS, MOMENTS, MEDIA = "segments", "moments", "media"  # the tables of a space
TABLES = (SEGMENTS, MOMENTS, MEDIA)
INDEXED_TABLES = (MOMENTS, MEDIA)  # tables with a vector index (segments are scored per candidate media)

MEDIA_SCHEMA = pa.schema(
    [
        ("media_id", pa.int64()),
        ("path", pa.string()),  # for display: bytes that are not UTF-8 shown as \xNN
        ("raw_path", pa.binary()),  # the exact file name, as os.fsencode gives it
        ("size", pa.int64()),
        ("mtime", pa.float64()),
        ("content_hash", pa.string()),
        ("kind", pa.string()),
        ("duration", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("spaces", pa.string()),  # comma-separated spaces this media was processed for
        ("damage", pa.string()),  # what a damaged file lost; null when it decoded whole (and in indexes written before it existed)
        ("language", pa.string()),  # what is said in it (ISO 639-1, Whisper's detection); null: no speech, or not transcribed
        ("sidecars", pa.string()),  # the subtitle files read beside a video (name:size:mtime;...), to see them change
    ]
)
MEDIA_DELTA_SCHEMA = MEDIA_SCHEMA.append(pa.field("removed", pa.bool_()))  # a delta: rows replace the base's, removed drops them
FAILURE_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("raw_path", pa.binary()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("time", pa.float64()),
    ]
)
SEGMENT_SCHEMA = pa.schema([("media_id", pa.int64()), ("start", pa.float64()), ("end", pa.float64())])
TEXT_SEGMENT_SCHEMA = SEGMENT_SCHEMA.append(pa.field("text", pa.string()))  # segments of what is said or written
MOMENT_SCHEMA = SEGMENT_SCHEMA
MEDIA_VECTOR_SCHEMA = pa.schema([("media_id", pa.int64())])
TABLE_SCHEMAS = {SEGMENTS: SEGMENT_SCHEMA, MOMENTS: MOMENT_SCHEMA, MEDIA: MEDIA_VECTOR_SCHEMA}
# Sound tags (issue #19): one row a tag of a window [start, end) seconds, its label and probability.
TAG_SCHEMA = SEGMENT_SCHEMA.append(pa.field("label", pa.string())).append(pa.field("score", pa.float32()))


# -- small durable-write helpers ------------------------------------------------------------
def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Any) -> None:
    """Write a file of the index directory: temporary ``.tmp-*`` name (cleaned up after a crash), fsync, rename.

    Raises :class:`~mmsearch.errors.IndexWriteError` (an ``OSError``) when the system refuses the write."""
    try:
        _atomic_write(path, write, prefix=TMP_PREFIX, suffix="")
    except IndexWriteError:
        raise
    except OSError as exc:
        raise index_write_error(path, exc) from exc


_WRITE_ADVICE = {
    errno.ENOSPC: "free space on that disk",
    errno.EDQUOT: "free space within your disk quota",
    errno.EFBIG: "lift the file size limit (ulimit -f)",
    errno.EROFS: "make that disk writable",
    errno.EACCES: "make the index folder writable for this user",
    errno.EPERM: "make the index folder writable for this user",
}


def index_write_error(path: str | os.PathLike, exc: OSError) -> IndexWriteError:
    """The one-line error for a file of the index the system would not write: what, why and what to do.
    The errno is the exception's, or the one pyarrow puts in its message ("... [errno 28] ...")."""
    code = exc.errno
    if code is None and (found := re.search(r"\[errno (\d+)\]", str(exc), re.IGNORECASE)):
        code = int(found.group(1))
    why = os.strerror(code) if code else (exc.strerror or str(exc))
    name = display_path(os.fspath(path))
    return IndexWriteError(
        f"cannot write {name}: {why}. The index keeps its last complete generation: "
        f"{_WRITE_ADVICE.get(code or 0, 'check the disk')}, then run the same command again to go on",
        errno=code, strerror=why, filename=name,
    )



def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Path rows keyed by the real path -> a table with a display path and the exact bytes."""
    out = [{**r, "path": display_path(r["path"]), "raw_path": os.fsencode(r["path"])} for r in rows]
    return pa.Table.from_pylist(out, schema=schema)


def table_to_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The inverse of :func:`rows_to_table`: ``path`` is the real file name again."""
    rows = table.to_pylist()
    for r in rows:
        r["path"] = os.fsdecode(r.pop("raw_path"))
    return rows


def _write_table(table: pa.Table, path: str) -> None:
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


class _Checksummed:
    """A binary file being written that keeps the CRC32 and size of what passed through it."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.crc32, self.size = fh, 0, 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.crc32 = zlib.crc32(view, self.crc32)
        self.size += len(view)
        return self.fh.write(view)


DIRECT_WRITE_BYTES = 4 << 20  # arrays at least this large are written past the page cache (fileio.DirectFile)


def _write_npy(array: np.ndarray, path: str) -> dict[str, int]:
    """Write ``array`` as ``.npy`` (temporary name, fsync, rename); returns its size and CRC32, computed
    as it is written, so a commit need not read the file back. An array of :data:`DIRECT_WRITE_BYTES` or
    more (of a plain dtype) is written with :class:`~mmsearch.fileio.DirectFile`, straight from its own
    memory into the aligned buffer (no bytes object of it is made)."""
    out: dict[str, int] = {}
    array = np.ascontiguousarray(array)

    def write(tmp: str) -> None:
        if array.nbytes < DIRECT_WRITE_BYTES or array.dtype.hasobject or array.dtype.names:
            with open(tmp, "wb") as fh:
                sink = _Checksummed(fh)
                np.lib.format.write_array(sink, array, allow_pickle=False)
        else:
            with DirectFile(tmp) as fh:
                sink = _Checksummed(fh)
                np.lib.format.write_array_header_1_0(sink, np.lib.format.header_data_from_array_1_0(array))
                sink.write(array)
        out.update(size=sink.size, crc32=sink.crc32)

    atomic_write(path, write)
    return out


# -- read side -------------------------------------------------------------------------------
def _runs(media_ids: np.ndarray) -> dict[int, list[tuple[int, int]]]:
    """media_id -> the [start, stop) row ranges it occupies (one range when its rows were appended together)."""
    out: dict[int, list[tuple[int, int]]] = {}
    if not len(media_ids):
        return out
    change = np.flatnonzero(np.diff(media_ids)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(media_ids)]])
    for a, b in zip(starts.tolist(), stops.tolist()):
        out.setdefault(int(media_ids[a]), []).append((a, b))
    return out


@dataclass
class SpaceData:
    """One embedding space of a generation: segments by media, and the moment and media-level indexes.

    Row ids of ``moment_index`` are rows of ``moments``; row ids of ``media_index`` index
    ``media_ids``. Rows of removed media stay until compaction and are skipped by both indexes.
    """

    name: str
    encoder: dict[str, Any]
    dim: int
    segment_vectors: RowVectors  # (n_segments, dim) float32, memory-mapped
    segment_rows: pa.Table  # media_id, start, end (seconds): row i describes segment_vectors[i]
    media_ids: np.ndarray  # int64: row i of the media-level index is media item media_ids[i]
    media_index: RowIndex | None
    moments: pa.Table  # media_id, start, end: row i of the moment index
    moment_index: RowIndex | None
    recipe: dict[str, Any] = field(default_factory=dict)
    anchor: str = "start"  # a segment's place on a similarity curve: its start (frames) or centre (windows)
    step: float | None = None  # seconds between sampled frames (1 / the index's fps); None: unknown
    live: np.ndarray | None = None  # int64 ids of the media this space serves; None: every media_id present
    query_probes: np.ndarray | None = None  # (m, dim) float32 text vectors of generic captions (mmsearch.probes), or None
    _runs: dict[int, list[tuple[int, int]]] = field(default_factory=dict, repr=False)
    _media_row: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # lookups built once, of live media only, so a snapshot shared by the threads of a server
        # is never written to and a search never tests liveness again
        ids = np.unique(self.media_ids)
        self._live_ids = ids if self.live is None else ids[np.isin(ids, self.live)]
        live = set(self._live_ids.tolist())
        self._runs = {m: r for m, r in _runs(self.segment_rows.column("media_id").to_numpy()).items() if m in live}
        self._start = self.segment_rows.column("start").to_numpy()
        self._end = self.segment_rows.column("end").to_numpy()
        self._media_row = {int(m): i for i, m in enumerate(self.media_ids.tolist()) if int(m) in live}

    def live_media_ids(self) -> np.ndarray:
        """Media ids with vectors in this space, removed ones left out (sorted int64)."""
        return self._live_ids

    def segments_of(self, media_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts, ends, vectors) of one media item's segments in time order: seconds, seconds, ``(n, dim)`` float32."""
        found = self._segment_rows(media_id)
        if found is None:
            return np.zeros(0), np.zeros(0), np.zeros((0, self.dim), np.float32)
        ranges, rows, order = found
        if len(ranges) == 1:
            vectors = self.segment_vectors[ranges[0][0] : ranges[0][1]]
        else:
            vectors = self.segment_vectors[rows]
        return self._start[rows][order], self._end[rows][order], vectors[order]

    def _segment_rows(self, media_id: int) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray] | None:
        """(row ranges, row ids, their order by start) of one live media item's segments; None when it has none."""
        ranges = self._runs.get(int(media_id))
        if not ranges:
            return None
        rows = np.concatenate([np.arange(a, b) for a, b in ranges])
        return ranges, rows, np.argsort(self._start[rows], kind="stable")

    def segment_row_ids(self, media_id: int) -> np.ndarray:
        """Row numbers (int64) of one live media item's segments, in the order of :meth:`segments_of`."""
        found = self._segment_rows(media_id)
        return np.zeros(0, np.int64) if found is None else found[1][found[2]].astype(np.int64)

    def segment_bounds(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) in seconds of the given segment rows."""
        return self._start[rows], self._end[rows]

    def texts_of(self, media_id: int) -> list[str] | None:
        """The text of one media item's segments, in the order of :meth:`segments_of` (None in a space without text)."""
        if "text" not in self.segment_rows.column_names:
            return None
        found = self._segment_rows(media_id)
        if found is None:
            return []
        _, rows, order = found
        column = self.segment_rows.column("text")
        return [column[int(i)].as_py() for i in rows[order]]

    def media_vectors(self, media_ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, ``(n, dim)`` float32 media-level vectors) of the given media that are live in this space,
        in the order given (each id once)."""
        wanted = dict.fromkeys(int(m) for m in media_ids)
        found = [(m, self._media_row[m]) for m in wanted if m in self._media_row]
        if not found:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        rows = np.asarray([r for _, r in found], np.int64)
        return np.asarray([m for m, _ in found], np.int64), self.media_index.vectors[rows]

    def frames_of(self, media_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(times, vectors) of one media item: each segment at its anchor (start or centre), in time order."""
        starts, ends, vectors = self.segments_of(media_id)
        return (starts if self.anchor == "start" else (starts + ends) / 2), vectors

    @property
    def frame_rows(self) -> pa.Table:
        """The live segment rows (kept under its earlier name)."""
        if self.live is None:
            return self.segment_rows
        mask = np.isin(self.segment_rows.column("media_id").to_numpy(), self.live)
        return self.segment_rows.filter(pa.array(mask))


@dataclass
class Snapshot:
    """One complete, immutable generation of an index directory."""

    root: Path
    manifest: dict[str, Any]
    media: pa.Table
    failures: pa.Table
    spaces: dict[str, SpaceData]
    tags: pa.Table = field(default_factory=TAG_SCHEMA.empty_table)  # sound tags (TAG_SCHEMA), removed media included

    @property
    def generation(self) -> int:
        return int(self.manifest["generation"])

    def media_rows(self) -> dict[int, dict[str, Any]]:
        """media_id -> its first path row (identical content under several paths is embedded once)."""
        out: dict[int, dict[str, Any]] = {}
        for row in table_to_rows(self.media):
            out.setdefault(int(row["media_id"]), row)
        return out


def shard_count(root: str | os.PathLike) -> int | None:
    """The number of shards of a sharded index at ``root`` (its ``shards.json``); None when it is not one.

    Raises :class:`IndexCorruptError` for a ``shards.json`` that is not one mmsearch wrote.
    """
    path = Path(root) / SHARDS_FILE
    try:
        layout = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(path, f"cannot be read ({exc})") from None
    if not isinstance(layout, dict) or layout.get("format") != SHARDS_FORMAT or not isinstance(layout.get("shards"), int) or layout["shards"] < 1:
        raise IndexCorruptError(path, "not an mmsearch shard layout")
    return int(layout["shards"])


def shard_dirs(root: str | os.PathLike, count: int) -> list[Path]:
    """The index directories of the shards of a sharded index, shard 0 first."""
    return [Path(root) / f"shard-{i:03d}" for i in range(count)]


def shard_of(media_id: int, count: int) -> int:
    """The shard that holds a media item (all of its rows): ``media_id % count``."""
    return int(media_id) % int(count)


def write_shard_layout(root: str | os.PathLike, count: int) -> None:
    """Make ``root`` a sharded index of ``count`` shards (atomically; once, before any shard is written)."""
    text = json.dumps({"format": SHARDS_FORMAT, "shards": int(count), "partition": "media_id % shards"}, indent=2)
    atomic_write(Path(root) / SHARDS_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    fsync_dir(root)


def _cannot_create(root: Path, exc: OSError) -> str:
    """One line for an index directory (or a folder inside it) that could not be made: the path in the way."""
    return f"cannot create the index directory {exc.filename or root} ({exc.strerror or exc}): pass a folder you can write to"


def make_index_dir(root: Path) -> bool:
    """Make the folder of an index (and its parents); True when it did not exist. Raises :class:`UsageError`
    (one line naming the path in the way) when ``root`` is a file or cannot be made."""
    if root.exists() and not root.is_dir():
        raise UsageError(f"--index {root} is a file, not an index directory: pass a folder (new or existing)")
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(_cannot_create(root, exc)) from None
    return created


def index_exists(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds a committed index (its manifest, or of a sharded index a shard's)."""
    root = Path(root)
    if (root / MANIFEST).exists():
        return True
    count = shard_count(root) if root.is_dir() else None
    return count is not None and any((d / MANIFEST).exists() for d in shard_dirs(root, count))


def manifest_stamp(root: str | os.PathLike) -> tuple[int, ...]:
    """What changes when a generation is committed (the manifests' inode, mtime and size), cheap to
    read once a second; of a sharded index, of every shard's. Raises :class:`OSError` when none exists."""
    root = Path(root)
    count = shard_count(root) if root.is_dir() else None
    stamp: list[int] = []
    for path in [root / MANIFEST] if count is None else [d / MANIFEST for d in shard_dirs(root, count)]:
        try:
            st = path.stat()
        except FileNotFoundError:
            if count is None:
                raise
            stamp += [0, 0, 0]
            continue
        stamp += [st.st_ino, st.st_mtime_ns, st.st_size]
    return tuple(stamp)


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The current manifest of the index at ``root``; of a sharded index, the shards' manifests merged
    (see the module). Raises :class:`IndexNotFoundError`, :class:`IndexCorruptError`, :class:`IndexFormatError`."""
    root = Path(root)
    count = shard_count(root) if root.is_dir() else None
    if count is not None:
        return merged_manifest(root, [_shard_manifest(d) for d in shard_dirs(root, count)])
    return _read_one_manifest(root)


def _shard_manifest(root: Path) -> dict[str, Any] | None:
    """A shard's manifest; None for a shard that has not committed yet (a run stopped before its first commit)."""
    return _read_one_manifest(root) if (root / MANIFEST).exists() else None


def _read_one_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if root.exists() and not root.is_dir():
        raise NotAnIndexError(f"{root} is a file, not an mmsearch index directory: pass --index DIR, the folder `mmsearch index` wrote")
    if not path.exists():
        raise IndexNotFoundError(
            f"no mmsearch index at {root} (no {MANIFEST}). Build one with `mmsearch index PATH --index {root}`."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(path, f"not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise IndexCorruptError(path, "not an mmsearch manifest")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} was written by a newer mmsearch (format {manifest['format_version']}); upgrade mmsearch"
        )
    return manifest


def _refuse_old_format(root: Path, manifest: dict[str, Any]) -> None:
    version = int(manifest.get("format_version", 0))
    if version < FORMAT_VERSION:
        raise IndexFormatError(
            f"the index at {root} has format {version}, written by an earlier mmsearch; this one reads format "
            f"{FORMAT_VERSION}. Convert it in place, keeping every embedding (nothing is decoded again): "
            f"`mmsearch upgrade --index {root}` (or just run `mmsearch index` on it)."
        )


def verify_files(root: Path, manifest: dict[str, Any], *, full: bool = False) -> None:
    """Check every file of the generation: size always, crc32 for small files (all files when ``full``)."""
    for rel, meta in manifest.get("files", {}).items():
        path = root / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise IndexCorruptError(path, "file listed in the manifest is missing") from None
        if size != meta["size"]:
            raise IndexCorruptError(path, f"size {size} bytes, the manifest says {meta['size']} (truncated or altered)")
        if (full or size < VERIFY_CHECKSUM_BELOW) and file_crc32(path) != meta["crc32"]:
            raise IndexCorruptError(path, "checksum does not match the manifest (altered)")


def open_snapshot(root: str | os.PathLike, *, retries: int = 5) -> Snapshot:
    """Open the current generation. A writer may commit meanwhile; then the newer one is opened.
    A sharded index opens as one (:func:`merge_snapshots`).

    Raises :class:`IndexNotFoundError`, :class:`IndexCorruptError`, and :class:`IndexFormatError`
    for an index of another format (with the command that converts it).
    """
    root = Path(root)
    count = shard_count(root) if root.is_dir() else None
    if count is not None:
        dirs = shard_dirs(root, count)
        if not any((d / MANIFEST).exists() for d in dirs):
            raise IndexNotFoundError(f"the sharded index at {root} has no committed shard yet: run `mmsearch index PATH --index {root}`")
        return merge_snapshots(root, [open_snapshot(d, retries=retries) if (d / MANIFEST).exists() else None for d in dirs])
    for attempt in range(retries):
        manifest = read_manifest(root)
        _refuse_old_format(root, manifest)
        try:
            verify_files(root, manifest)
            return _load(root, manifest)
        except IndexCorruptError as exc:
            # A file missing because a newer generation replaced it is a race, not corruption.
            if attempt + 1 < retries and read_manifest(root).get("generation") != manifest.get("generation"):
                continue
            raise exc
    raise AssertionError("unreachable")  # pragma: no cover


def _read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise IndexCorruptError(path, f"parquet cannot be read ({exc})") from None


def read_media_table(root: Path, manifest: dict[str, Any]) -> pa.Table:
    """The path rows (:data:`MEDIA_SCHEMA`) of a generation: its base table with each of its deltas applied
    in order (a delta's rows replace those of the same path, its removed paths are dropped), sorted by
    ``raw_path``. Raises :class:`IndexCorruptError` for a file that cannot be read."""
    table, deltas = _read_media_parts(root, manifest)
    return _merge_media(table, deltas) if deltas else table


def _read_media_parts(root: Path, manifest: dict[str, Any]) -> tuple[pa.Table, list[pa.Table]]:
    """The base table of path rows and the deltas of a generation, oldest first, as stored. Raises
    :class:`IndexCorruptError` for a file that cannot be read or a manifest whose list of them is altered."""
    base, entries = manifest.get("media"), manifest.get("media_deltas", [])
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("file"), str) and type(e.get("rows")) is int and e["rows"] >= 0 for e in entries
    ):
        raise IndexCorruptError(root / MANIFEST, "its media_deltas entry is not a list of {file, rows} objects (altered)")
    listed = manifest.get("files")
    for rel in ([base] if base else []) + [e["file"] for e in entries]:
        if listed is not None and rel not in listed:
            raise IndexCorruptError(root / MANIFEST, f"it names {rel} as a table of paths but does not list that file (altered)")
    table = _read_path_table(root / base, MEDIA_SCHEMA, required=("media_id", "raw_path")) if base else MEDIA_SCHEMA.empty_table()
    return table, [_read_media_delta(root / e["file"]) for e in entries]


def _read_media_delta(path: Path) -> pa.Table:
    """One delta of path rows (:data:`MEDIA_DELTA_SCHEMA`); raises :class:`IndexCorruptError` for a file that is not one."""
    return _read_path_table(path, MEDIA_DELTA_SCHEMA, required=("raw_path", "removed"))


def _merge_media(base: pa.Table, deltas: list[pa.Table]) -> pa.Table:
    """Path rows of a base table (sorted) with deltas applied, sorted by ``raw_path``."""
    merged = apply_media_deltas(base.append_column("removed", pa.array(np.zeros(len(base), bool))), deltas)
    merged = merged.filter(pc.invert(merged.column("removed"))).drop_columns(["removed"])
    return merged.take(pc.sort_indices(merged, sort_keys=[("raw_path", "ascending")]))


def apply_media_deltas(older: pa.Table, newer: list[pa.Table]) -> pa.Table:
    """Path rows (:data:`MEDIA_DELTA_SCHEMA`) with newer deltas applied in order: a path's newest row wins,
    removal marks kept (so the result is itself a delta that can be applied to an older base)."""
    for delta in newer:
        older = older.filter(pc.invert(pc.is_in(older.column("raw_path"), value_set=delta.column("raw_path"))))
        older = pa.concat_tables([older, delta])
    return older


def plan_media_deltas(base_rows: int, delta_rows: list[int]) -> tuple[bool, int]:
    """How a commit that appended a delta of path rows keeps their number small: ``(into_base, merge_last)``.

    ``into_base``: the deltas hold as many rows as the base, so all of them are merged into a new base (the
    library has about doubled since the base was written: each row is rewritten into the base O(log n) times
    over the library's life). Otherwise the newest ``merge_last`` deltas (0: none) are merged into one, the
    newer of two while it holds at least half the rows of the older, so the deltas' sizes at least double
    from newest to oldest and there are O(log n) of them (the binary-counter schedule of log-structured merge
    trees: O'Neil et al., 1996). ``delta_rows`` are oldest first, the one just written last.
    """
    if sum(delta_rows) >= max(base_rows, 1):
        return True, 0
    sizes, merge = list(delta_rows), 1
    while len(sizes) >= 2 and 2 * sizes[-1] >= sizes[-2]:
        sizes[-2:] = [sizes[-2] + sizes[-1]]
        merge += 1
    return False, merge if merge > 1 else 0


def _read_path_table(path: Path, schema: pa.Schema, *, required: tuple[str, ...] = ("raw_path",)) -> pa.Table:
    """A media or failures table, with the columns a later version added filled with nulls; raises
    :class:`IndexCorruptError` when a column in ``required`` is missing (another kind of table)."""
    table = _read_table(path)
    missing = [name for name in required if name not in table.column_names]
    if missing:
        raise IndexCorruptError(path, f"it is not the kind of table the manifest says (no column {', '.join(missing)})")
    for name in schema.names:
        if name not in table.column_names:
            table = table.append_column(schema.field(name), pa.nulls(len(table), schema.field(name).type))
    return table.select(schema.names).cast(schema)


# numpy reads a .npy header with ast.literal_eval, and CPython 3.11's AST constructor keeps its
# recursion depth in state shared by all threads: two threads parsing at once can fail with
# "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905). Readers (a
# server's threads) and a writer open shards concurrently, so the header is read under one lock
# (memory-mapping only reads the header: the lock is held for microseconds).
_NPY_HEADER_LOCK = threading.Lock()


def _load_npy(path: Path) -> np.ndarray:
    try:
        with _NPY_HEADER_LOCK:
            return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise IndexCorruptError(path, f"cannot be read ({exc})") from None


def load_table(root: Path, shards: list[dict[str, Any]], schema: pa.Schema, dim: int) -> tuple[pa.Table, RowVectors]:
    """The rows (one table) and the vectors (memory-mapped) of a space's table, shards in manifest order."""
    vectors, rows = [], []
    for shard in shards:
        v = _load_npy(root / shard["vectors"])
        table = _read_table(root / shard["rows"])
        if len(table) != len(v):
            raise IndexCorruptError(root / shard["rows"], "row count differs from its vectors")
        vectors.append(v)
        rows.append(table)
    table = pa.concat_tables(rows) if rows else schema.empty_table()
    return table, RowVectors(vectors, dim)


def _load_index(root: Path, entry: dict[str, Any], vectors: RowVectors, alive: np.ndarray | None) -> RowIndex:
    recipe = IndexRecipe.from_dict(entry.get("recipe", {"factory": "Flat"}))
    index = None
    if entry.get("file"):
        index = VectorIndex.load(root / entry["file"], recipe, refine=vectors if _has_refine(recipe) else None)
        if index.ntotal != int(entry.get("rows", index.ntotal)):
            raise IndexCorruptError(root / entry["file"], f"holds {index.ntotal} rows, the manifest says {entry['rows']}")
    return RowIndex(vectors, index, alive=alive)


def _load(root: Path, manifest: dict[str, Any]) -> Snapshot:
    media = read_media_table(root, manifest)
    failures = _read_path_table(root / manifest["failures"], FAILURE_SCHEMA) if manifest.get("failures") else FAILURE_SCHEMA.empty_table()
    spaces: dict[str, SpaceData] = {}
    with_path = np.unique(media.column("media_id").to_numpy())
    for name, space in manifest.get("spaces", {}).items():
        dim = int(space["dim"])
        tables = space.get("tables", {})
        loaded = {t: load_table(root, tables.get(t, []), TABLE_SCHEMAS[t], dim) for t in TABLES}
        held = np.unique(loaded[MEDIA][0].column("media_id").to_numpy())
        # removed media, and media no path row refers to (none, unless the manifest was altered): never found
        tombstones = np.union1d(np.asarray(space.get("tombstones", []), np.int64), np.setdiff1d(held, with_path))

        def alive(table: pa.Table) -> np.ndarray | None:
            if not len(tombstones):
                return None
            return ~np.isin(table.column("media_id").to_numpy(), tombstones)

        indexes = space.get("indexes", {})
        moment_rows, moment_vectors = loaded[MOMENTS]
        media_rows, media_vectors = loaded[MEDIA]
        spaces[name] = SpaceData(
            name=name,
            encoder=space["encoder"],
            dim=dim,
            segment_vectors=loaded[SEGMENTS][1],
            segment_rows=loaded[SEGMENTS][0],
            media_ids=media_rows.column("media_id").to_numpy(),
            media_index=_load_index(root, indexes.get(MEDIA, {}), media_vectors, alive(media_rows)),
            moments=moment_rows,
            moment_index=_load_index(root, indexes.get(MOMENTS, {}), moment_vectors, alive(moment_rows)),
            recipe=space.get("recipe", {"factory": "Flat", "params": {}, "chosen_for": 0}),
            anchor=space.get("anchor", "start"),
            step=1.0 / float(manifest["config"]["fps"]) if (manifest.get("config") or {}).get("fps") else None,
            live=None if not len(tombstones) else np.setdiff1d(held, tombstones),
            query_probes=_load_npy(root / space["query_probes"]) if space.get("query_probes") else None,
        )
    return Snapshot(root, manifest, media, failures, spaces, _load_tags(root, manifest))


def _load_tags(root: Path, manifest: dict[str, Any]) -> pa.Table:
    """The sound tags of a generation (:data:`TAG_SCHEMA`), shards in manifest order."""
    tables = [_read_table(root / rel) for rel in (manifest.get("tags") or {}).get("shards", [])]
    return pa.concat_tables(tables) if tables else TAG_SCHEMA.empty_table()


def merged_manifest(root: Path, manifests: list[dict[str, Any] | None]) -> dict[str, Any]:
    """One manifest for the shards of a sharded index (None: a shard not committed yet): the
    generation is the sum of theirs, files are named from ``root`` (``shard-001/data/...``), spaces
    carry the first shard's encoder and recipe with the counts summed; ``shards`` lists each shard's
    generation and vector-index recipe per space."""
    present = [(d, m) for d, m in zip(shard_dirs(root, len(manifests)), manifests) if m is not None]
    if not present:
        raise IndexNotFoundError(f"the sharded index at {root} has no committed shard yet: run `mmsearch index PATH --index {root}`")
    first = present[0][1]
    spaces: dict[str, Any] = {}
    counts: dict[str, int] = {}
    files: dict[str, Any] = {}
    for folder, m in present:
        files.update({f"{folder.name}/{rel}": meta for rel, meta in m.get("files", {}).items()})
        for key, value in m.get("counts", {}).items():
            counts[key] = counts.get(key, 0) + int(value)
        for name, entry in m.get("spaces", {}).items():
            merged = spaces.setdefault(name, {**entry, "derived": {}, "tombstones": []})
            for key, value in entry.get("derived", {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    merged["derived"][key] = merged["derived"].get(key, 0) + value
            merged["tombstones"] = sorted(set(merged["tombstones"]) | set(entry.get("tombstones", [])))
    return {
        "format": FORMAT,
        "format_version": min(int(m.get("format_version", 0)) for _, m in present),
        "generation": sum(int(m.get("generation", 0)) for _, m in present),
        "shards": [
            {"dir": d.name, "generation": int(m["generation"]) if m else 0,
             "recipes": {name: entry.get("recipe", {}) for name, entry in m.get("spaces", {}).items()} if m else {}}
            for d, m in zip(shard_dirs(root, len(manifests)), manifests)
        ],
        "committed": max(float(m.get("committed", 0.0)) for _, m in present),
        "config": first.get("config", {}),
        "spaces": spaces,
        "files": files,
        "counts": counts,
        "library_versions": first.get("library_versions", {}),
        **({"tags": {"tagger": tagged[0]["tagger"]}} if (tagged := [m["tags"] for _, m in present if m.get("tags")]) else {}),
    }


def merge_snapshots(root: Path, shards: list[Snapshot | None]) -> Snapshot:
    """The snapshots of a sharded index's shards (None: not committed yet) as one :class:`Snapshot`:
    tables concatenated (nothing copied: memory maps and Arrow chunks), each space's vector indexes
    searched shard by shard (:class:`mmsearch.indexes.ShardedRowIndex`), so every search answers as
    over one index holding all the rows."""
    present = [s for s in shards if s is not None]
    manifest = merged_manifest(root, [s.manifest if s is not None else None for s in shards])
    media = pa.concat_tables([s.media for s in present])
    media = media.take(pc.sort_indices(media, sort_keys=[("raw_path", "ascending")]))
    failures = pa.concat_tables([s.failures for s in present])
    spaces: dict[str, SpaceData] = {}
    for name in manifest["spaces"]:
        parts = [s.spaces[name] for s in present if name in s.spaces]
        first = parts[0]
        spaces[name] = SpaceData(
            name=name,
            encoder=first.encoder,
            dim=first.dim,
            segment_vectors=RowVectors([v for p in parts for v in p.segment_vectors.parts], first.dim),
            segment_rows=pa.concat_tables([p.segment_rows for p in parts], promote_options="default"),
            media_ids=np.concatenate([p.media_ids for p in parts]).astype(np.int64),
            media_index=ShardedRowIndex([p.media_index for p in parts]),
            moments=pa.concat_tables([p.moments for p in parts], promote_options="default"),
            moment_index=ShardedRowIndex([p.moment_index for p in parts]),
            recipe=first.recipe,
            anchor=first.anchor,
            step=first.step,
            live=np.concatenate([p.live_media_ids() for p in parts]).astype(np.int64),
            query_probes=next((p.query_probes for p in parts if p.query_probes is not None), None),
        )
    tags = pa.concat_tables([s.tags for s in present])
    return Snapshot(root, manifest, media, failures, spaces, tags)


# -- write side ------------------------------------------------------------------------------
class IndexLockedError(MMSearchError):
    """Another process is writing to this index."""


@dataclass
class _Append:
    media_ids: list[np.ndarray] = field(default_factory=list)
    starts: list[np.ndarray] = field(default_factory=list)
    ends: list[np.ndarray] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    texts: list[list[str]] = field(default_factory=list)


class IndexWriter:
    """Accumulates changes to an index and commits them as new generations.

    One writer at a time (an exclusive lock on ``.lock``). Readers never block. The writer
    stores what it is handed: rows with vectors appended to a space's tables, vector indexes
    (:meth:`put_index`), path and failure rows. ``upgrade=True`` opens an index of an earlier
    format with its media and failures but empty spaces, for :mod:`mmsearch.derive` to refill
    from :meth:`legacy_segments`; otherwise such an index raises :class:`IndexFormatError`.
    """

    def __init__(self, root: str | os.PathLike, *, config: dict[str, Any] | None = None, upgrade: bool = False) -> None:
        if not os.fspath(root):
            raise UsageError("the index directory is empty: pass --index DIR (a folder)")
        self.root = Path(root)
        if (self.root / SHARDS_FILE).exists():
            raise UsageError(f"{self.root} is a sharded index: open it with mmsearch.sharding.open_sharded_writer")
        created = make_index_dir(self.root)
        try:
            if not (self.root / DATA).is_dir():
                (self.root / DATA).mkdir()
                fsync_dir(self.root)  # data/ survives a power cut once the first manifest does
            if created:
                fsync_dir(self.root.parent)
        except OSError as exc:
            raise UsageError(_cannot_create(self.root, exc)) from None
        try:
            self._lock_fh = open(self.root / ".lock", "a+")
        except OSError as exc:  # a read-only disk, or a folder this user may read but not write
            raise index_write_error(self.root / ".lock", exc) from exc
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            raise IndexLockedError(f"another mmsearch process is writing to the index at {self.root}; wait for it to finish") from None
        self.legacy: dict[str, Any] = {}  # spaces of an earlier format, while upgrading
        self.upgraded_from: int | None = None  # the format this writer found and converted, if older
        try:
            self._open(config, upgrade)
        except BaseException:
            self.close()
            raise
        self._pending: dict[tuple[str, str], _Append] = {}
        self._pending_tags: list[pa.Table] = []
        self._pending_indexes: dict[tuple[str, str], tuple[VectorIndex | None, PreparedFile | None]] = {}
        self._new_files: list[str] = []
        self._ids_cache: dict[str, np.ndarray] = {}  # shard rows file -> its media_id column (files never change)
        self._vectors_cache: dict[str, np.ndarray] = {}  # shard vectors file -> its memory map
        self._probe_sources: dict[str, Callable[[], np.ndarray]] = {}  # query probes made when first needed
        self._checked: dict[str, dict[str, int]] = {}  # files written since the last commit: size and CRC32
        self._clean_temporaries()

    def _open(self, config: dict[str, Any] | None, upgrade: bool) -> None:
        self.dirty = False  # anything to commit?
        if (self.root / MANIFEST).exists():
            self.manifest = read_manifest(self.root)
            if int(self.manifest.get("format_version", 0)) < FORMAT_VERSION:
                if not upgrade:
                    _refuse_old_format(self.root, self.manifest)
                verify_files(self.root, self.manifest)
                self.upgraded_from = int(self.manifest.get("format_version", 0))
                self.legacy = self.manifest.get("spaces", {})
                self.manifest = {**self.manifest, "format_version": FORMAT_VERSION, "spaces": {}}
                self.dirty = True
            verify_files(self.root, self.manifest)
            media = read_media_table(self.root, self.manifest)
            failures = (
                _read_path_table(self.root / self.manifest["failures"], FAILURE_SCHEMA) if self.manifest.get("failures") else FAILURE_SCHEMA.empty_table()
            )
        else:
            self.manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "generation": 0,
                "config": dict(config or {}),
                "spaces": {},
                "files": {},
            }
            media, failures = MEDIA_SCHEMA.empty_table(), FAILURE_SCHEMA.empty_table()
        self.paths: dict[str, dict[str, Any]] = {r["path"]: r for r in table_to_rows(media)}
        self._live: np.ndarray | None = None
        self._changed_paths: set[str] = set()  # paths put or removed since the last commit: its media delta
        self.failures: dict[str, dict[str, Any]] = {r["path"]: r for r in table_to_rows(failures)}
        # media id -> how many paths refer to it; ids whose count changed since the last commit; ids the last
        # generation held. Kept up to date as paths change, so a commit costs what changed, not the library.
        self._refs: dict[int, int] = dict(Counter(int(r["media_id"]) for r in self.paths.values()))
        self._touched: set[int] = set()
        self._committed: set[int] = set(self._refs)

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    @property
    def spaces(self) -> dict[str, dict[str, Any]]:
        return self.manifest["spaces"]

    def close(self) -> None:
        if not self._lock_fh.closed:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- spaces, paths, failures -------------------------------------------------------------
    def space_encoder(self, space: str) -> dict[str, Any] | None:
        entry = self.spaces.get(space)
        return entry["encoder"] if entry else None

    def record_config(self, key: str, value: Any) -> None:
        """Set ``key`` of the index's recorded config (the manifest's ``config``) at the next commit."""
        if self.config.get(key) != value:
            self.config[key] = value
            self.dirty = True

    def ensure_space(self, space: str, encoder: dict[str, Any], dim: int, *, anchor: str = "start") -> None:
        if anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
        self.spaces.setdefault(space, _new_space(encoder, dim, anchor))

    def reset_space(self, space: str, encoder: dict[str, Any], dim: int, *, anchor: str = "start") -> None:
        """Start ``space`` over (its old shards go at the next commit): for spaces derived from others."""
        self.dirty = True
        for key in [k for k in self._pending if k[0] == space]:
            del self._pending[key]
        self._drop_pending_indexes(space)
        self.spaces[space] = _new_space(encoder, dim, anchor)

    def set_query_probes(self, space: str, vectors: np.ndarray | Callable[[], np.ndarray]) -> None:
        """Keep ``(m, dim)`` float32 vectors like the queries ``space`` will get (its encoder's text
        vectors of generic captions, :mod:`mmsearch.probes`) in the index: the derive stage tunes
        the space's vector indexes on them too. Written once per space; later calls are ignored.

        ``vectors`` may be a function that makes them: it is called when :meth:`query_probes` is
        first asked, that is when the derive stage first builds a vector index for the space (a
        library small enough for exact search never pays for it: 200 captions through ViT-B-32's
        text tower take about 8 s on 2 cores, more than indexing a few minutes of video)."""
        entry = self.spaces[space]
        if entry.get("query_probes"):
            return
        if callable(vectors):
            self._probe_sources.setdefault(space, vectors)
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != int(entry["dim"]):
            raise ValueError(f"query probes of {space} must be (m, {entry['dim']}), got {vectors.shape}")
        rel = f"{DATA}/{space}-query-probes.npy"
        self._checked[rel] = _write_npy(vectors, str(self.root / rel))
        self._new_files.append(rel)
        entry["query_probes"] = rel
        self._probe_sources.pop(space, None)
        self.dirty = True

    def query_probes(self, space: str) -> np.ndarray | None:
        """The query probes of ``space`` (:meth:`set_query_probes`), ``(m, dim)`` float32 memory-mapped
        read-only, or None. Probes given as a function are made and written now, for the next
        commit. The file never changes: it is mapped once, as shard files are."""
        if space in self._probe_sources:  # only while none are written (writing them drops the source)
            self.set_query_probes(space, self._probe_sources.pop(space)())
        rel = self.spaces.get(space, {}).get("query_probes")
        if not rel:
            return None
        if rel not in self._vectors_cache:
            self._vectors_cache[rel] = _load_npy(self.root / rel)
        return self._vectors_cache[rel]

    def attach(self, rel: str) -> None:
        """Make a file written into the index directory part of this and later generations."""
        self.dirty = True
        attachments = self.manifest.setdefault("attachments", [])
        if rel not in attachments:
            attachments.append(rel)

    def hashes(self) -> dict[str, int]:
        """content hash -> media_id of everything indexed."""
        return {r["content_hash"]: int(r["media_id"]) for r in self.paths.values()}

    def next_media_id(self) -> int:
        used = [int(r["media_id"]) for r in self.paths.values()]
        return max(used + [int(self.manifest.get("max_media_id", -1))]) + 1

    def live_media_ids(self) -> np.ndarray:
        """Sorted int64 ids of the media some path refers to (computed again only after paths change)."""
        if self._live is None:
            self._live = np.sort(np.fromiter(self._refs, np.int64, len(self._refs)))
        return self._live

    def _refer(self, media_id: int, change: int) -> None:
        count = self._refs.get(media_id, 0) + change
        if count > 0:
            self._refs[media_id] = count
        else:
            self._refs.pop(media_id, None)
        self._touched.add(media_id)
        self._live = None

    def put_path(self, row: dict[str, Any]) -> None:
        self.dirty = True
        old = self.paths.get(row["path"])
        if old is not None:
            self._refer(int(old["media_id"]), -1)
        self.paths[row["path"]] = row
        self._refer(int(row["media_id"]), 1)
        self._changed_paths.add(row["path"])
        self.failures.pop(row["path"], None)
        self.manifest["max_media_id"] = max(int(self.manifest.get("max_media_id", -1)), int(row["media_id"]))

    def remove_path(self, path: str) -> bool:
        self.dirty = True
        self.failures.pop(path, None)
        self._changed_paths.add(path)
        old = self.paths.pop(path, None)
        if old is not None:
            self._refer(int(old["media_id"]), -1)
        return old is not None

    def put_failure(self, row: dict[str, Any]) -> None:
        self.dirty = True
        self.failures[row["path"]] = row

    def drop_failure(self, path: str) -> None:
        if self.failures.pop(path, None) is not None:
            self.dirty = True

    # -- rows and vectors --------------------------------------------------------------------
    def append(
        self,
        space: str,
        table: str,
        media_ids: np.ndarray,
        vectors: np.ndarray,
        *,
        starts: np.ndarray | None = None,
        ends: np.ndarray | None = None,
        texts: list[str] | None = None,
    ) -> None:
        """Rows to add to ``table`` of ``space`` at the next commit: int64 ids, ``(n, dim)`` float32, seconds;
        ``texts`` (one string a row, segments only) for a space of what is said or written."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; one of {TABLES}")
        dim = int(self.spaces[space]["dim"])
        vectors = np.asarray(vectors, np.float32).reshape(-1, dim)
        pending = self._pending.setdefault((space, table), _Append())
        if texts is not None:
            if table != SEGMENTS or len(texts) != len(vectors):
                raise ValueError(f"texts go with segments, one per row: got {len(texts)} for {len(vectors)} rows of {table}")
            if pending.vectors and not pending.texts:
                raise ValueError(f"the {space} space's segments were appended without texts before")
            pending.texts.append([str(t) for t in texts])
        elif pending.texts:
            raise ValueError(f"the {space} space's segments carry texts: give texts= for these rows too")
        pending.media_ids.append(np.broadcast_to(np.asarray(media_ids, np.int64), (len(vectors),)).copy())
        pending.vectors.append(vectors)
        if table != MEDIA:
            pending.starts.append(np.asarray(starts, np.float64))
            pending.ends.append(np.asarray(ends, np.float64))
        self.dirty = True

    def set_tagger(self, record: dict[str, Any]) -> None:
        """Record the sound tagger of the tags added: ``{"spec": ..., "identity": ...}`` as an encoder is
        recorded (the identity is :meth:`mmsearch.encoders.ast.SoundTagger.identity`)."""
        entry = self.manifest.setdefault("tags", {"shards": [], "next_shard": 0})
        if entry.get("tagger") != record:
            entry["tagger"] = record
            self.dirty = True

    @property
    def tagger(self) -> dict[str, Any] | None:
        """The record (spec and identity) of the sound tagger the index's tags come from, or None."""
        return (self.manifest.get("tags") or {}).get("tagger")

    def add_tags(self, media_id: int, starts: np.ndarray, ends: np.ndarray, tags: list[list[tuple[str, float]]]) -> None:
        """One media item's sound tags at the next commit: window ``i`` is ``[starts[i], ends[i])`` seconds with the
        ``(label, probability)`` pairs ``tags[i]``. Raises ValueError without :meth:`set_tagger` first."""
        if not self.tagger:
            raise ValueError("record the tagger (set_tagger) before adding tags")
        rows = [(s, e, label, score) for s, e, pairs in zip(starts, ends, tags) for label, score in pairs]
        if rows:
            s, e, label, score = zip(*rows)
            self._pending_tags.append(pa.table({"media_id": np.full(len(rows), media_id, np.int64), "start": s, "end": e,
                                                "label": label, "score": score}, schema=TAG_SCHEMA))
            self.dirty = True

    def flush(self) -> list[tuple[str, str]]:
        """Write the appended rows as new shards (not yet part of a generation); returns the (space, table) pairs written."""
        if self._pending_tags:  # append-only shards, as a space's tables; removed media are left out when read
            entry = self.manifest["tags"]
            rel = f"{DATA}/tags-s{int(entry.get('next_shard', 0)):06d}.parquet"
            _write_table(pa.concat_tables(self._pending_tags), str(self.root / rel))
            entry["shards"].append(rel)
            entry["next_shard"] = int(entry.get("next_shard", 0)) + 1
            self._new_files.append(rel)
            self._pending_tags = []
        written = []
        for (space, table), pending in self._pending.items():
            if not pending.vectors:
                continue
            columns: dict[str, Any] = {"media_id": np.concatenate(pending.media_ids)}
            if table != MEDIA:
                columns["start"] = np.concatenate(pending.starts)
                columns["end"] = np.concatenate(pending.ends)
            schema = TABLE_SCHEMAS[table]
            if pending.texts:
                columns["text"] = [t for part in pending.texts for t in part]
                schema = TEXT_SEGMENT_SCHEMA
            self._write_shard(space, table, pa.table(columns, schema=schema), np.concatenate(pending.vectors))
            written.append((space, table))
        self._pending = {}
        return written

    def _write_shard(self, space: str, table: str, rows: pa.Table, vectors: np.ndarray) -> None:
        entry = self.spaces[space]
        shard_no = int(entry.get("next_shard", 0))
        stem = f"{DATA}/{space}-{table}-s{shard_no:06d}"
        self._checked[f"{stem}.npy"] = _write_npy(vectors, str(self.root / f"{stem}.npy"))
        _write_table(rows, str(self.root / f"{stem}.parquet"))
        entry["tables"].setdefault(table, []).append({"vectors": f"{stem}.npy", "rows": f"{stem}.parquet", "n": len(vectors)})
        entry["next_shard"] = shard_no + 1
        self._new_files += [f"{stem}.npy", f"{stem}.parquet"]
        self._ids_cache[f"{stem}.parquet"] = rows.column("media_id").to_numpy()

    def table_vectors(self, space: str, table: str) -> RowVectors:
        """Every vector written to the table so far (flushed shards included), memory-mapped."""
        entry = self.spaces[space]
        parts = []
        for shard in entry["tables"].get(table, []):
            rel = shard["vectors"]
            if rel not in self._vectors_cache:  # shard files never change: map each once
                self._vectors_cache[rel] = _load_npy(self.root / rel)
            parts.append(self._vectors_cache[rel])
        return RowVectors(parts, int(entry["dim"]))

    def table_media_ids(self, space: str, table: str) -> np.ndarray:
        """int64 media id of every row of the table (flushed shards included)."""
        parts = []
        for shard in self.spaces[space]["tables"].get(table, []):
            rel = shard["rows"]
            if rel not in self._ids_cache:
                self._ids_cache[rel] = _read_table(self.root / rel).column("media_id").to_numpy()
            parts.append(self._ids_cache[rel])
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def tombstones(self, space: str) -> np.ndarray:
        return np.asarray(self.spaces[space].get("tombstones", []), np.int64)

    def _gone(self) -> np.ndarray:
        """Media the last generation held that no path refers to any more: tombstones at the next commit
        (sorted int64; found among the ids whose paths changed since, not by comparing whole libraries)."""
        return np.asarray(sorted(m for m in self._touched if m in self._committed and m not in self._refs), np.int64)

    def _settle(self) -> None:
        """The media ids of the paths now are those of the last generation (after a commit or compaction)."""
        for media_id in self._touched:
            if media_id in self._refs:
                self._committed.add(media_id)
            else:
                self._committed.discard(media_id)
        self._touched = set()

    def dead_media(self, space: str) -> np.ndarray:
        """Media whose rows in ``space`` searches must skip: its tombstones and those the next commit adds."""
        return np.union1d(self.tombstones(space), self._gone())

    def describe_space(self, space: str, **info: Any) -> None:
        """Record facts about a space in its manifest entry (the recipes chosen, row counts)."""
        entry = self.spaces[space]
        if any(entry.get(key) != value for key, value in info.items()):
            entry.update(info)
            self.dirty = True

    def compact(self, space: str, dead: np.ndarray) -> None:
        """Rewrite the space's shards without the rows of media ``dead`` (one shard at a time) and drop
        its vector indexes: row ids change, so the caller builds them again."""
        entry = self.spaces[space]
        for table in TABLES:
            old, entry["tables"][table] = entry["tables"].get(table, []), []
            for shard in old:
                rows = _read_table(self.root / shard["rows"])
                keep = ~np.isin(rows.column("media_id").to_numpy(), dead)
                if keep.any():
                    vectors = np.asarray(_load_npy(self.root / shard["vectors"])[keep])
                    self._write_shard(space, table, rows.filter(pa.array(keep)), vectors)
        entry["tombstones"] = []
        entry["indexes"] = {}
        self._compact_tags(dead)
        gone = self._gone()
        for other, other_entry in self.spaces.items():  # what the other spaces must still skip
            if other != space:
                other_entry["tombstones"] = sorted(set(other_entry.get("tombstones", [])) | set(gone.tolist()))
        self._settle()
        self._drop_pending_indexes(space)
        self.dirty = True

    def _compact_tags(self, dead: np.ndarray) -> None:
        """Rewrite the sound tags without the rows of media ``dead``, as one shard (when any row goes)."""
        entry = self.manifest.get("tags") or {}
        if not entry.get("shards"):
            return
        table = _load_tags(self.root, self.manifest)
        keep = ~np.isin(table.column("media_id").to_numpy(), dead)
        if keep.all():
            return
        entry["shards"] = []
        if keep.any():
            self._pending_tags.insert(0, table.filter(pa.array(keep)))  # written by the next flush, before newer tags

    def _drop_pending_indexes(self, space: str) -> None:
        for key in [k for k in self._pending_indexes if k[0] == space]:
            prepared = self._pending_indexes.pop(key)[1]
            if prepared is not None:
                prepared.discard()

    def put_index(self, space: str, table: str, index: VectorIndex | None, *, prepared: PreparedFile | None = None) -> None:
        """The vector index over the first ``index.ntotal`` rows of ``table`` for the next commit (None: exact search).

        ``prepared``: the index already written to a temporary file (with its checksum), which the
        commit renames into place instead of writing the index itself.
        """
        old = self._pending_indexes.get((space, table))
        if old is not None and old[1] is not None and old[1] is not prepared:
            old[1].discard()
        self._pending_indexes[(space, table)] = (index, prepared)
        self.dirty = True

    def index_entry(self, space: str, table: str) -> dict[str, Any]:
        return self.spaces[space].get("indexes", {}).get(table, {})

    def load_index(self, space: str, table: str) -> VectorIndex | None:
        """The committed index of ``table`` in memory (not memory-mapped), or None."""
        entry = self.index_entry(space, table)
        if not entry.get("file"):
            return None
        recipe = IndexRecipe.from_dict(entry["recipe"])
        refine = self.table_vectors(space, table) if _has_refine(recipe) else None
        return VectorIndex.load(self.root / entry["file"], recipe, mmap=False, refine=refine)

    def legacy_segments(self, space: str) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Format 1: (media_id, times in seconds, ``(n, dim)`` vectors) of each live media item, one shard in memory at a time."""
        live = set(self.live_media_ids().tolist())
        for shard in self.legacy[space]["shards"]:
            vectors = _load_npy(self.root / shard["vectors"])
            rows = _read_table(self.root / shard["rows"])
            ids, ts = rows.column("media_id").to_numpy(), rows.column("t").to_numpy()
            for media_id, ranges in _runs(ids).items():
                if media_id in live:
                    sel = np.concatenate([np.arange(a, b) for a, b in ranges])
                    yield media_id, ts[sel], np.asarray(vectors[sel], np.float32)

    # -- commit ------------------------------------------------------------------------------
    def commit(self) -> int:
        """Write a new generation holding everything added so far; returns its number.

        With nothing changed since the last commit, nothing is written. Media no path refers
        to any more become tombstones of every space.
        """
        if not self.dirty and self.manifest["generation"] > 0:
            return int(self.manifest["generation"])
        gen = int(self.manifest["generation"]) + 1
        self.flush()
        gone = self._gone()
        if len(gone):
            for entry in self.spaces.values():
                entry["tombstones"] = sorted(set(entry.get("tombstones", [])) | set(gone.tolist()))
        checked, self._checked = self._checked, {}  # files whose size and checksum are already known
        for (space, table), (index, prepared) in self._pending_indexes.items():
            indexes = self.spaces[space].setdefault("indexes", {})
            if index is None:
                indexes[table] = {"file": None, "rows": 0}
                continue
            rel = f"{DATA}/g{gen:06d}-{space}-{table}.faiss"
            if prepared is not None:
                prepared.install(self.root / rel)
                checked[rel] = {"size": prepared.size, "crc32": prepared.crc32}
            else:
                index.save(self.root / rel)
            self._new_files.append(rel)
            indexes[table] = {"file": rel, "rows": index.ntotal, "recipe": index.recipe.to_dict()}
        self._pending_indexes = {}

        media_files = self._commit_media_table(gen)
        fail_rel = f"{DATA}/g{gen:06d}-failures.parquet"
        frows = sorted(self.failures.values(), key=lambda r: r["path"])
        _write_table(rows_to_table(frows, FAILURE_SCHEMA), str(self.root / fail_rel))
        new_files = set(self._new_files) | set(media_files) | {fail_rel}

        keep = set(new_files) | set(self.manifest.get("attachments", [])) | set((self.manifest.get("tags") or {}).get("shards", []))
        keep.update([self.manifest["media"]] + [d["file"] for d in self.manifest.get("media_deltas", [])])
        for entry in self.spaces.values():
            for shards in entry["tables"].values():
                for shard in shards:
                    keep.update([shard["vectors"], shard["rows"]])
            keep.update(i["file"] for i in entry.get("indexes", {}).values() if i.get("file"))
            if entry.get("query_probes"):
                keep.add(entry["query_probes"])
        old_files = self.manifest.get("files", {})
        files = {}
        for rel in sorted(keep):
            if rel in old_files and rel not in new_files:
                files[rel] = old_files[rel]
            elif rel in checked:
                files[rel] = checked[rel]
            else:
                p = self.root / rel
                files[rel] = {"size": p.stat().st_size, "crc32": file_crc32(p)}
        previous_files = set(old_files)
        self.manifest.update(
            {
                "generation": gen,
                "committed": time.time(),
                "failures": fail_rel,
                "files": files,
                "counts": {
                    "paths": len(self.paths),
                    "media": len(self._refs),
                    "failures": len(frows),
                    **{f"{s}_frames": int(e.get("derived", {}).get("n_frames", 0)) for s, e in self.spaces.items()},
                },
                "library_versions": library_versions(),
            }
        )
        self.legacy = {}
        fsync_dir(self.root / DATA)
        text = json.dumps(self.manifest, indent=2, sort_keys=True)
        atomic_write(self.root / MANIFEST, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        fsync_dir(self.root)
        self.dirty = False
        self._new_files = []
        self._settle()
        # Keep the previous generation's files for readers that opened it a moment ago.
        self._collect_garbage(keep | previous_files)
        return gen

    def _commit_media_table(self, gen: int) -> list[str]:
        """Write generation ``gen``'s path rows as :func:`plan_media_deltas` says: the paths changed since the
        last commit as a delta, merged with the newest deltas or into a new base when they have grown; sets
        the manifest's ``media`` and ``media_deltas``; returns the files written."""
        changed, self._changed_paths = sorted(self._changed_paths), set()
        deltas = list(self.manifest.get("media_deltas", []))
        base_rel = f"{DATA}/g{gen:06d}-media.parquet"
        if self.manifest.get("media") is None:  # the first generation
            rows = sorted(self.paths.values(), key=lambda r: os.fsencode(r["path"]))
            return self._write_media_base(base_rel, rows_to_table(rows, MEDIA_SCHEMA))
        if not changed:
            return []
        kept = [self.paths[p] for p in changed if p in self.paths]
        removed = [{"path": p, "removed": True} for p in changed if p not in self.paths]
        delta = rows_to_table([{**r, "removed": False} for r in kept] + removed, MEDIA_DELTA_SCHEMA)
        into_base, merge = plan_media_deltas(int(self.manifest.get("media_rows", 0)), [d["rows"] for d in deltas] + [len(delta)])
        if into_base:
            base, older = _read_media_parts(self.root, self.manifest)
            return self._write_media_base(base_rel, _merge_media(base, older + [delta]))
        if merge:
            older = [_read_media_delta(self.root / d["file"]) for d in deltas[len(deltas) - merge + 1:]]
            delta = apply_media_deltas(older[0], older[1:] + [delta])
            deltas = deltas[: len(deltas) - merge + 1]
        rel = f"{DATA}/g{gen:06d}-media-delta.parquet"
        _write_table(delta, str(self.root / rel))
        self.manifest["media_deltas"] = deltas + [{"file": rel, "rows": len(delta)}]
        return [rel]

    def _write_media_base(self, rel: str, table: pa.Table) -> list[str]:
        """Write ``table`` (sorted path rows) as the new base of the path rows, with no deltas; returns [rel]."""
        _write_table(table, str(self.root / rel))
        self.manifest.update(media=rel, media_deltas=[], media_rows=len(table))
        return [rel]

    def _clean_temporaries(self) -> None:
        for folder in (self.root, self.root / DATA):
            for p in folder.glob(TMP_PREFIX + "*"):
                p.unlink(missing_ok=True)

    def _collect_garbage(self, keep: Iterable[str]) -> None:
        keep = set(keep)
        for p in (self.root / DATA).iterdir():
            rel = f"{DATA}/{p.name}"
            if rel not in keep and not p.name.startswith(TMP_PREFIX):
                p.unlink(missing_ok=True)
                self._ids_cache.pop(rel, None)
                self._vectors_cache.pop(rel, None)


def _new_space(encoder: dict[str, Any], dim: int, anchor: str) -> dict[str, Any]:
    return {"encoder": encoder, "dim": dim, "anchor": anchor, "tables": {t: [] for t in TABLES}, "next_shard": 0, "indexes": {}, "tombstones": []}


def _has_refine(recipe: IndexRecipe) -> bool:
    """Whether the recipe re-ranks (``RFlat``, ``Refine(...)``): the store's indexes then re-rank with the shards."""
    return split_refine(recipe.factory)[1] is not None


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("mmsearch", "torch", "open_clip_torch", "transformers", "faiss-cpu", "pyarrow", "av", "decord", "numpy"):
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            continue
    return tuple(out)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an index's files and vectors (read once per process)."""
    return dict(_versions())
