"""The index directory: versioned generations, committed by atomic rename.

Layout of an index directory::

    manifest.json                  the current generation (the only file ever replaced)
    data/<space>-s000004.npy       frame vectors of one ingest batch (float32, never rewritten)
    data/<space>-s000004.parquet   their rows: media_id, t (seconds)
    data/g000007-media.parquet     path rows of generation 7
    data/g000007-failures.parquet  files that could not be indexed
    data/g000007-<space>-media.faiss / -media.npy        media-level index and its media ids
    data/g000007-<space>-moments.faiss / -moments.parquet moment windows

A commit writes every new file under a temporary name, fsyncs and renames it,
then writes the new manifest the same way and fsyncs the directory. Readers
read ``manifest.json`` once and open exactly the files it lists, so they see
one complete generation. Files that no generation in use refers to, and
temporary files left by a crash, are removed by the next writer.

This layer deals in rows and vectors; it knows nothing of decoding or encoders.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .fileio import atomic_write as _atomic_write
from .errors import IndexCorruptError, IndexFormatError, IndexNotFoundError, MMSearchError
from .moments import MomentConfig, media_vector, moment_windows

FORMAT = "mmsearch-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATA = "data"
TMP_PREFIX = ".tmp-"
VERIFY_CHECKSUM_BELOW = 64 << 20  # on open, files smaller than this get their crc32 checked

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
    ]
)
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
FRAME_SCHEMA = pa.schema([("media_id", pa.int64()), ("t", pa.float64())])
MOMENT_SCHEMA = pa.schema([("media_id", pa.int64()), ("start", pa.float64()), ("end", pa.float64())])


# -- small durable-write helpers ------------------------------------------------------------
def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Any) -> None:
    """Write a file of the index directory: temporary ``.tmp-*`` name (cleaned up after a crash), fsync, rename."""
    _atomic_write(path, write, prefix=TMP_PREFIX, suffix="")


def file_crc32(path: str | os.PathLike) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def display_path(path: str) -> str:
    """A path as valid text: bytes that are not UTF-8 (kept by Python as surrogates) become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


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


def _write_npy(array: np.ndarray, path: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array))

    atomic_write(path, write)


# -- read side -------------------------------------------------------------------------------
@dataclass
class SpaceData:
    """One embedding space of a generation: frames by media, media-level and moment indexes."""

    name: str
    encoder: dict[str, Any]
    dim: int
    frame_vectors: list[np.ndarray]  # one memory-mapped array per shard
    frame_rows: pa.Table  # media_id, t, shard, row (all live frames, sorted by media_id then t)
    media_ids: np.ndarray  # row i of the media-level index is media_ids[i]
    media_index: Any  # indexes.VectorIndex
    moments: pa.Table  # media_id, start, end (row i = moment index row i)
    moment_index: Any
    recipe: dict[str, Any] = field(default_factory=dict)
    _by_media: dict[int, tuple[int, int]] | None = None

    def frames_of(self, media_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(timestamps, vectors) of one media item, in time order."""
        if self._by_media is None:
            ids = self.frame_rows.column("media_id").to_numpy()
            bounds: dict[int, tuple[int, int]] = {}
            if len(ids):
                change = np.flatnonzero(np.diff(ids)) + 1
                starts = np.concatenate([[0], change])
                ends = np.concatenate([change, [len(ids)]])
                bounds = {int(ids[s]): (int(s), int(e)) for s, e in zip(starts, ends)}
            self._by_media = bounds
            self._t = self.frame_rows.column("t").to_numpy()
            self._shard = self.frame_rows.column("shard").to_numpy()
            self._row = self.frame_rows.column("row").to_numpy()
        if media_id not in self._by_media:
            return np.zeros(0), np.zeros((0, self.dim), np.float32)
        s, e = self._by_media[media_id]
        shard, rows = self._shard[s:e], self._row[s:e]
        if (shard == shard[0]).all():
            vecs = np.asarray(self.frame_vectors[int(shard[0])][rows], dtype=np.float32)
        else:
            vecs = np.stack([self.frame_vectors[int(a)][int(b)] for a, b in zip(shard, rows)]).astype(np.float32)
        return self._t[s:e], vecs


@dataclass
class Snapshot:
    """One complete, immutable generation of an index directory."""

    root: Path
    manifest: dict[str, Any]
    media: pa.Table
    failures: pa.Table
    spaces: dict[str, SpaceData]

    @property
    def generation(self) -> int:
        return int(self.manifest["generation"])

    def media_rows(self) -> dict[int, dict[str, Any]]:
        """media_id -> its first path row (identical content under several paths is embedded once)."""
        out: dict[int, dict[str, Any]] = {}
        for row in table_to_rows(self.media):
            out.setdefault(int(row["media_id"]), row)
        return out


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    root = Path(root)
    path = root / MANIFEST
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
    """Open the current generation. A writer may commit meanwhile; then the newer one is opened."""
    root = Path(root)
    for attempt in range(retries):
        manifest = read_manifest(root)
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


def _load(root: Path, manifest: dict[str, Any]) -> Snapshot:
    from mmsearch.indexes import IndexRecipe, VectorIndex

    media = _read_table(root / manifest["media"]) if manifest.get("media") else MEDIA_SCHEMA.empty_table()
    failures = _read_table(root / manifest["failures"]) if manifest.get("failures") else FAILURE_SCHEMA.empty_table()
    live = set(media.column("media_id").to_pylist())
    spaces: dict[str, SpaceData] = {}
    for name, space in manifest.get("spaces", {}).items():
        vectors = []
        rows = []
        for i, shard in enumerate(space["shards"]):
            try:
                vectors.append(np.load(root / shard["vectors"], mmap_mode="r"))
            except (ValueError, OSError) as exc:
                raise IndexCorruptError(root / shard["vectors"], f"cannot be read ({exc})") from None
            table = _read_table(root / shard["rows"])
            if len(table) != len(vectors[-1]):
                raise IndexCorruptError(root / shard["rows"], "row count differs from its vectors")
            rows.append(
                table.append_column("shard", pa.array(np.full(len(table), i, np.int32)))
                .append_column("row", pa.array(np.arange(len(table), dtype=np.int64)))
            )
        frame_rows = pa.concat_tables(rows) if rows else FRAME_SCHEMA.empty_table()
        if rows:
            mask = np.isin(frame_rows.column("media_id").to_numpy(), np.fromiter(live, np.int64, len(live)))
            frame_rows = frame_rows.filter(pa.array(mask)).sort_by([("media_id", "ascending"), ("t", "ascending")])
        recipe = IndexRecipe.from_dict(space.get("recipe", {"factory": "Flat"}))
        derived = space.get("derived")
        if derived:
            media_ids = np.load(root / derived["media_ids"])
            media_index = VectorIndex.load(root / derived["media_index"], IndexRecipe.from_dict(space.get("media_recipe", {"factory": "Flat"})))
            moments = _read_table(root / derived["moments"])
            moment_index = VectorIndex.load(root / derived["moment_index"], recipe)
        else:
            media_ids = np.zeros(0, np.int64)
            media_index = moment_index = None
            moments = MOMENT_SCHEMA.empty_table()
        spaces[name] = SpaceData(
            name=name,
            encoder=space["encoder"],
            dim=int(space["dim"]),
            frame_vectors=vectors,
            frame_rows=frame_rows,
            media_ids=media_ids,
            media_index=media_index,
            moments=moments,
            moment_index=moment_index,
            recipe=recipe.to_dict(),
        )
    return Snapshot(root, manifest, media, failures, spaces)


# -- write side ------------------------------------------------------------------------------
class IndexLockedError(MMSearchError):
    """Another process is writing to this index."""


class IndexWriter:
    """Accumulates changes to an index and commits them as new generations.

    One writer at a time (an exclusive lock on ``.lock``). Readers never block.
    """

    def __init__(self, root: str | os.PathLike, *, config: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / DATA).mkdir(exist_ok=True)
        self._lock_fh = open(self.root / ".lock", "a+")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            raise IndexLockedError(f"another mmsearch process is writing to the index at {self.root}; wait for it to finish") from None
        if (self.root / MANIFEST).exists():
            self.manifest = read_manifest(self.root)
            verify_files(self.root, self.manifest)
            media = _read_table(self.root / self.manifest["media"]) if self.manifest.get("media") else MEDIA_SCHEMA.empty_table()
            failures = _read_table(self.root / self.manifest["failures"]) if self.manifest.get("failures") else FAILURE_SCHEMA.empty_table()
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
        self.failures: dict[str, dict[str, Any]] = {r["path"]: r for r in table_to_rows(failures)}
        self.pending: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        self.dirty = False  # anything to commit?
        self._clean_temporaries()

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    def close(self) -> None:
        if not self._lock_fh.closed:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the ingest runner calls --------------------------------------------------------
    def space_encoder(self, space: str) -> dict[str, Any] | None:
        entry = self.manifest["spaces"].get(space)
        return entry["encoder"] if entry else None

    def ensure_space(self, space: str, encoder: dict[str, Any], dim: int) -> None:
        self.manifest["spaces"].setdefault(space, {"encoder": encoder, "dim": dim, "shards": [], "next_shard": 0})

    def reset_space(self, space: str, encoder: dict[str, Any], dim: int) -> None:
        """Start ``space`` over (its old shards go at the next commit): for spaces derived from others."""
        self.dirty = True
        self.pending.pop(space, None)
        self.manifest["spaces"][space] = {"encoder": encoder, "dim": dim, "shards": [], "next_shard": 0}

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

    def add_frames(self, space: str, media_id: int, timestamps: np.ndarray, vectors: np.ndarray) -> None:
        self.dirty = True
        self.pending.setdefault(space, []).append(
            (media_id, np.asarray(timestamps, np.float64), np.asarray(vectors, np.float32))
        )

    def put_path(self, row: dict[str, Any]) -> None:
        self.dirty = True
        self.paths[row["path"]] = row
        self.failures.pop(row["path"], None)
        self.manifest["max_media_id"] = max(int(self.manifest.get("max_media_id", -1)), int(row["media_id"]))

    def remove_path(self, path: str) -> bool:
        self.dirty = True
        self.failures.pop(path, None)
        return self.paths.pop(path, None) is not None

    def put_failure(self, row: dict[str, Any]) -> None:
        self.dirty = True
        self.failures[row["path"]] = row

    def drop_failure(self, path: str) -> None:
        if self.failures.pop(path, None) is not None:
            self.dirty = True

    # -- commit ------------------------------------------------------------------------------
    def commit(self, *, moment_config: MomentConfig, recipe_for: Any = None) -> int:
        """Write a new generation holding everything added so far; returns its number.

        With nothing changed since the last commit, nothing is written.
        """
        if not self.dirty and self.manifest["generation"] > 0:
            return int(self.manifest["generation"])

        gen = int(self.manifest["generation"]) + 1
        data = self.root / DATA
        new_files: list[str] = []
        for space, items in self.pending.items():
            entry = self.manifest["spaces"][space]
            if not items:
                continue
            shard_no = int(entry.get("next_shard", 0))
            stem = f"{DATA}/{space}-s{shard_no:06d}"
            vectors = np.concatenate([v for _, _, v in items]).astype(np.float32)
            table = pa.table(
                {
                    "media_id": np.concatenate([np.full(len(t), m, np.int64) for m, t, _ in items]),
                    "t": np.concatenate([t for _, t, _ in items]),
                },
                schema=FRAME_SCHEMA,
            )
            _write_npy(vectors, str(self.root / f"{stem}.npy"))
            _write_table(table, str(self.root / f"{stem}.parquet"))
            entry["shards"].append({"vectors": f"{stem}.npy", "rows": f"{stem}.parquet", "n": len(vectors)})
            entry["next_shard"] = shard_no + 1
            new_files += [f"{stem}.npy", f"{stem}.parquet"]
        self.pending = {}

        media_rel = f"{DATA}/g{gen:06d}-media.parquet"
        rows = sorted(self.paths.values(), key=lambda r: r["path"])
        _write_table(rows_to_table(rows, MEDIA_SCHEMA), str(self.root / media_rel))
        fail_rel = f"{DATA}/g{gen:06d}-failures.parquet"
        frows = sorted(self.failures.values(), key=lambda r: r["path"])
        _write_table(rows_to_table(frows, FAILURE_SCHEMA), str(self.root / fail_rel))
        new_files += [media_rel, fail_rel]

        live = {int(r["media_id"]): r for r in rows}
        for space, entry in self.manifest["spaces"].items():
            new_files += self._write_derived(gen, space, entry, live, moment_config, recipe_for)

        files = {}
        keep = set(new_files) | set(self.manifest.get("attachments", []))
        for space_entry in self.manifest["spaces"].values():
            for shard in space_entry["shards"]:
                keep.update([shard["vectors"], shard["rows"]])
        old_files = self.manifest.get("files", {})
        for rel in sorted(keep):
            if rel in old_files and rel not in new_files:
                files[rel] = old_files[rel]
            else:
                p = self.root / rel
                files[rel] = {"size": p.stat().st_size, "crc32": file_crc32(p)}
        previous_files = set(old_files)
        self.manifest.update(
            {
                "generation": gen,
                "committed": time.time(),
                "media": media_rel,
                "failures": fail_rel,
                "files": files,
                "counts": {
                    "paths": len(rows),
                    "media": len(live),
                    "failures": len(frows),
                    **{
                        f"{s}_frames": int(e.get("derived", {}).get("n_frames", 0))
                        for s, e in self.manifest["spaces"].items()
                    },
                },
                "library_versions": library_versions(),
            }
        )
        fsync_dir(data)
        text = json.dumps(self.manifest, indent=2, sort_keys=True)

        def write_manifest(tmp: str) -> None:
            Path(tmp).write_text(text, encoding="utf-8")

        atomic_write(self.root / MANIFEST, write_manifest)
        fsync_dir(self.root)
        self.dirty = False
        # Keep the previous generation's files for readers that opened it a moment ago.
        self._collect_garbage(keep | previous_files)
        return gen

    def _write_derived(
        self,
        gen: int,
        space: str,
        entry: dict[str, Any],
        live: dict[int, dict[str, Any]],
        moment_config: MomentConfig,
        recipe_for: Any,
    ) -> list[str]:
        """Rebuild the media-level and moment indexes of one space from its live frames."""
        from mmsearch.indexes import VectorIndex

        dim = int(entry["dim"])
        media_ids: list[int] = []
        media_vecs: list[np.ndarray] = []
        m_media: list[np.ndarray] = []
        m_start: list[np.ndarray] = []
        m_end: list[np.ndarray] = []
        m_vecs: list[np.ndarray] = []
        n_frames = 0
        for media_id, (ts, vecs) in sorted(_frames_by_media(self.root, entry, set(live)).items()):
            row = live[media_id]
            n_frames += len(ts)
            media_ids.append(media_id)
            media_vecs.append(media_vector(vecs))
            s, e, v = moment_windows(ts, vecs, duration=float(row["duration"] or 0.0), config=moment_config)
            m_media.append(np.full(len(s), media_id, np.int64))
            m_start.append(s)
            m_end.append(e)
            m_vecs.append(v)
        stem = f"{DATA}/g{gen:06d}-{space}"
        mv = np.stack(media_vecs) if media_vecs else np.zeros((0, dim), np.float32)
        moment_vecs = np.concatenate(m_vecs) if m_vecs else np.zeros((0, dim), np.float32)
        recipe = recipe_for(len(moment_vecs), dim) if recipe_for else None
        media_recipe = recipe_for(len(mv), dim) if recipe_for else None
        media_index = VectorIndex.build(mv, recipe=media_recipe, trained=self._trained_index(entry, "media", media_recipe, len(mv)))
        moment_index = VectorIndex.build(moment_vecs, recipe=recipe, trained=self._trained_index(entry, "moment", recipe, len(moment_vecs)))
        media_index.save(self.root / f"{stem}-media.faiss")
        _write_npy(np.asarray(media_ids, np.int64), str(self.root / f"{stem}-media.npy"))
        moments = pa.table(
            {
                "media_id": np.concatenate(m_media) if m_media else np.zeros(0, np.int64),
                "start": np.concatenate(m_start) if m_start else np.zeros(0),
                "end": np.concatenate(m_end) if m_end else np.zeros(0),
            },
            schema=MOMENT_SCHEMA,
        )
        _write_table(moments, str(self.root / f"{stem}-moments.parquet"))
        moment_index.save(self.root / f"{stem}-moments.faiss")
        entry["recipe"] = moment_index.recipe.to_dict()
        entry["media_recipe"] = media_index.recipe.to_dict()
        entry["derived"] = {
            "media_index": f"{stem}-media.faiss",
            "media_ids": f"{stem}-media.npy",
            "moments": f"{stem}-moments.parquet",
            "moment_index": f"{stem}-moments.faiss",
            "n_frames": n_frames,
            "n_moments": len(moment_vecs),
            "n_media": len(media_ids),
        }
        return [f"{stem}-media.faiss", f"{stem}-media.npy", f"{stem}-moments.parquet", f"{stem}-moments.faiss"]

    def _trained_index(self, entry: dict[str, Any], level: str, recipe: Any, n: int) -> Any:
        """The space's current ``level`` ("media" or "moment") index, when its training can serve ``n`` vectors.

        It can while the chosen recipe is the same and ``n`` stays within the range the
        index was trained for; otherwise (or when it cannot be read) a new one is trained.
        """
        from mmsearch.indexes import IndexRecipe, VectorIndex

        previous = entry.get("recipe" if level == "moment" else "media_recipe")
        path = entry.get("derived", {}).get(f"{level}_index")
        if recipe is None or not previous or not path or previous.get("factory") in (None, "Flat"):
            return None
        old = IndexRecipe.from_dict(previous)
        if old.factory != recipe.factory or not old.covers(n):
            return None
        try:
            return VectorIndex.load(self.root / path, old, mmap=False)
        except MMSearchError:
            return None

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


def _frames_by_media(root: Path, entry: dict[str, Any], live: set[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """All live frames of a space grouped by media id, each in time order."""
    parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for shard in entry["shards"]:
        vectors = np.load(root / shard["vectors"], mmap_mode="r")
        table = pq.read_table(root / shard["rows"])
        ids = table.column("media_id").to_numpy()
        ts = table.column("t").to_numpy()
        for media_id in np.unique(ids):
            if int(media_id) not in live:
                continue
            mask = ids == media_id
            parts.setdefault(int(media_id), []).append((ts[mask], np.asarray(vectors[mask], np.float32)))
    out = {}
    for media_id, chunks in parts.items():
        t = np.concatenate([c[0] for c in chunks])
        v = np.concatenate([c[1] for c in chunks])
        order = np.argsort(t, kind="stable")
        out[media_id] = (t[order], v[order])
    return out


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("mmsearch", "torch", "open_clip_torch", "transformers", "faiss-cpu", "pyarrow", "av", "decord", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
