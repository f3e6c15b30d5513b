"""Durability of a commit: the order of its file system calls, recorded through an instrumented ``os``.

A SIGKILL keeps the page cache, so the crash tests of test_reliability pass without a single
fsync; a power cut does not. What survives a power cut is what was fsynced, so the order of
the calls decides: every file of the new generation written whole, fsynced and renamed into
place, the data directory fsynced (the renames), and only then the manifest renamed (after its
own fsync), and the index directory fsynced after that. ``os.fsync``, ``os.replace`` and
``os.rename`` are wrapped for the test: each fsync records which file (device, inode) it
flushed and a CRC32 of its bytes at that moment, each rename which file it moved where.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from mmsearch.derive import Deriver, frame_segments
from mmsearch.indexes import IndexRecipe
from mmsearch.moments import MomentConfig
from mmsearch.store import DATA, MANIFEST, IndexWriter

DIM = 16
ENCODER = {"spec": {"family": "test", "model": "random", "pretrained": None, "options": {}}, "identity": {"model": "random", "dim": DIM}}


def _recipe(n: int, dim: int) -> IndexRecipe:
    """A trained index (a .faiss file, built in the background) from 200 rows on, exact below."""
    if n < 200:
        return IndexRecipe("Flat", {}, n)
    return IndexRecipe("IVF8,Flat", {"nprobe": 8}, n)


class Recorder:
    """os.fsync / os.replace / os.rename wrapped: a list of ("fsync", key, size, crc32, is_dir) and ("rename", key, dst)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple] = []
        self._lock = threading.Lock()
        real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

        def fsync(fd):  # noqa: ANN001, ANN202
            st = os.fstat(fd)
            is_dir = stat.S_ISDIR(st.st_mode)
            crc = None if is_dir else _crc_of_fd(fd, st.st_size)
            real_fsync(fd)
            self._add(("fsync", (st.st_dev, st.st_ino), st.st_size, crc, is_dir))

        def moved(real):  # noqa: ANN001, ANN202
            def move(src, dst, *args, **kwargs):  # noqa: ANN001, ANN202
                st = os.stat(src)
                real(src, dst, *args, **kwargs)
                self._add(("rename", (st.st_dev, st.st_ino), os.path.abspath(os.fspath(dst))))
            return move

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", moved(real_replace))
        monkeypatch.setattr(os, "rename", moved(real_rename))

    def _add(self, event: tuple) -> None:
        with self._lock:
            self.events.append(event)

    def mark(self) -> int:
        with self._lock:
            return len(self.events)


def _crc_of_fd(fd: int, size: int) -> int:
    crc, offset = 0, 0
    while offset < size:
        block = os.pread(fd, min(1 << 20, size - offset), offset)
        if not block:
            break
        crc, offset = zlib.crc32(block, crc), offset + len(block)
    return crc


def _key(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def check_commit(events: list[tuple], root: Path, before: dict, after: dict, begin: int) -> dict[str, int]:
    """Assert the durable order of the commit from ``before`` to ``after`` (manifests), whose calls start at ``begin``.

    Returns counts of what was checked (new files by kind) so a test can see it checked something.
    """
    root = root.resolve()
    manifest_path = str(root / MANIFEST)
    renames = [(i, e) for i, e in enumerate(events) if e[0] == "rename"]
    final = [i for i, e in renames if i >= begin and e[2] == manifest_path]
    assert len(final) == 1, f"expected one rename onto {MANIFEST} in this commit, saw {len(final)}"
    m_at = final[0]
    m_key = events[m_at][1]

    # the manifest itself: fsynced with exactly its final bytes, before its rename
    text = (root / MANIFEST).read_bytes()
    assert _key(root / MANIFEST) == m_key
    assert any(e[0] == "fsync" and e[1] == m_key and e[3] == zlib.crc32(text) for e in events[:m_at]), \
        "the new manifest was not fsynced (with its final content) before its rename"

    new = {rel: meta for rel, meta in after["files"].items() if before.get("files", {}).get(rel) != meta}
    assert new, "the commit wrote no new file: nothing was checked"
    last_data_rename = -1
    for rel, meta in new.items():
        dst = str(root / rel)
        moves = [i for i, e in renames if i < m_at and e[2] == dst]
        assert moves, f"{rel} was not renamed into place before the manifest's rename"
        at = moves[-1]
        key = events[at][1]
        assert _key(root / rel) == key, f"{rel} on disk is not the file renamed into place"
        flushed = [e for e in events[:at] if e[0] == "fsync" and e[1] == key]
        assert flushed, f"{rel} was renamed into place without an fsync of its data"
        assert (flushed[-1][2], flushed[-1][3]) == (meta["size"], meta["crc32"]), \
            f"{rel}: what was fsynced is not what the manifest lists (written after its fsync?)"
        last_data_rename = max(last_data_rename, at)

    data_dir, root_dir = _key(root / DATA), _key(root)
    assert any(e[0] == "fsync" and e[4] and e[1] == data_dir for e in events[last_data_rename + 1 : m_at]), \
        "the data directory was not fsynced between the last data file's rename and the manifest's rename"
    assert any(e[0] == "fsync" and e[4] and e[1] == root_dir for e in events[m_at + 1 :]), \
        "the index directory was not fsynced after the manifest's rename"
    kinds: dict[str, int] = {}
    for rel in new:
        kinds[Path(rel).suffix] = kinds.get(Path(rel).suffix, 0) + 1
    return kinds


def _manifest(root: Path) -> dict:
    path = root / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.parametrize("direct", [False, True], ids=["page-cache", "direct"])
def test_every_commit_fsyncs_its_files_then_renames_the_manifest_then_fsyncs_the_directory(tmp_path, monkeypatch, direct):
    """``direct``: every vector file is written past the page cache (:class:`mmsearch.fileio.DirectFile`), as
    a real commit's large shards are; its tail is written through the cache and must be fsynced too."""
    import mmsearch.store

    if direct:
        monkeypatch.setattr(mmsearch.store, "DIRECT_WRITE_BYTES", 1)
    rec = Recorder(monkeypatch)
    root = tmp_path / "idx"
    writer = IndexWriter(root)
    writer.ensure_space("visual", ENCODER, DIM, anchor="start")
    deriver = Deriver(writer, moments=MomentConfig(4.0, 2.0), recipe_for=_recipe, background=True)
    rng = np.random.default_rng(0)
    next_id = 0

    def add(count: int) -> None:
        nonlocal next_id
        for _ in range(count):
            m, next_id = next_id, next_id + 1
            writer.put_path({
                "media_id": m, "path": f"/m/{m}.mp4", "size": 1, "mtime": 0.0, "content_hash": f"{m:040x}",
                "kind": "video", "duration": 10.0, "width": 8, "height": 8, "spaces": "visual",
            })
            vectors = rng.standard_normal((10, DIM)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            starts, ends = frame_segments(np.arange(10.0), duration=10.0)
            deriver.add_segments("visual", m, starts, ends, vectors, duration=10.0)

    seen: dict[str, int] = {}
    try:
        # 1: shards and the first trained index (built on a background thread, installed by the commit)
        # 2: more rows, the index extended; 3: most media removed, the shards rewritten (compaction)
        for step in ("first", "more", "removed"):
            if step == "removed":
                for m in range(0, 40):
                    writer.remove_path(f"/m/{m}.mp4")
            else:
                add(50 if step == "first" else 10)
            before, begin = _manifest(root), rec.mark()
            deriver.commit(wait=True)
            for kind, count in check_commit(rec.events, root, before, _manifest(root), begin).items():
                seen[kind] = seen.get(kind, 0) + count
    finally:
        deriver.close()
        writer.close()
    # every kind of file a generation holds went through the check
    assert seen.get(".npy", 0) >= 6 and seen.get(".parquet", 0) >= 9 and seen.get(".faiss", 0) >= 2, seen


def test_files_written_atomically_get_the_permissions_any_new_file_gets(tmp_path):
    """mkstemp makes 0600: an index written through it could be read by its writer only (not by a
    server running as another user). Every file takes the umask as open() would; a secret asks for 0600."""
    from mmsearch.fileio import atomic_write

    old = os.umask(0o027)
    try:
        plain = tmp_path / "plain"
        plain.write_text("x")
        made = atomic_write(tmp_path / "made.json", lambda tmp: tmp.write_text("x"))
        secret = atomic_write(tmp_path / "secret", lambda tmp: tmp.write_text("x"), mode=0o600)
        writer = IndexWriter(tmp_path / "idx")
        writer.ensure_space("visual", {"family": "test", "model": "m"}, 4, anchor="start")
        writer.commit()
        writer.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(made.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o640
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    index_files = [p for p in (tmp_path / "idx").rglob("*") if p.is_file() and p.name != ".lock"]
    assert (tmp_path / "idx" / MANIFEST) in index_files
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in index_files} == {p.name: 0o640 for p in index_files}


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


@pytest.mark.parametrize("rows", [0, 1, 1000, 4096 * 2 + 3])
def test_a_vector_file_written_past_the_page_cache_is_what_numpy_writes(tmp_path, monkeypatch, rows):
    """Sizes below a block, across blocks and across the 8 MiB buffer (smaller here), with a part block at
    the end: the file is np.save's bytes, and the size and CRC32 reported are the file's."""
    import mmsearch.fileio
    import mmsearch.store

    monkeypatch.setattr(mmsearch.store, "DIRECT_WRITE_BYTES", 1)
    monkeypatch.setattr(mmsearch.fileio, "DIRECT_BUFFER", 3 * mmsearch.fileio.DIRECT_BLOCK)
    monkeypatch.setattr(mmsearch.fileio, "_buffer", None)
    array = np.random.default_rng(rows).standard_normal((rows, 7)).astype(np.float32)
    meta = mmsearch.store._write_npy(array, str(tmp_path / "v.npy"))
    raw = (tmp_path / "v.npy").read_bytes()
    assert raw == _npy_bytes(array)
    assert meta == {"size": len(raw), "crc32": zlib.crc32(raw)}
    assert not mmsearch.fileio._buffer_lock.locked()


@pytest.mark.parametrize("refuses", ["open", "write"])
def test_a_file_system_without_direct_io_gets_the_same_file(tmp_path, monkeypatch, refuses):
    """tmpfs before Linux 6.6 and some FUSE file systems refuse O_DIRECT (EINVAL) at open, others at the
    first write: the file is written through the page cache instead, whole and in order."""
    import errno

    import mmsearch.fileio
    from mmsearch.fileio import DirectFile

    if not getattr(os, "O_DIRECT", 0):
        pytest.skip("this platform has no O_DIRECT: DirectFile always writes the ordinary way")
    real_open, real_write = os.open, os.write

    def fake_open(path, flags, *args):  # noqa: ANN001, ANN202
        if refuses == "open" and flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    def fake_write(fd, data):  # noqa: ANN001, ANN202
        import fcntl

        if refuses == "write" and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "write", fake_write)
    monkeypatch.setattr(mmsearch.fileio, "DIRECT_BUFFER", 2 * mmsearch.fileio.DIRECT_BLOCK)
    monkeypatch.setattr(mmsearch.fileio, "_buffer", None)
    data = np.random.default_rng(1).integers(0, 256, 5 * mmsearch.fileio.DIRECT_BLOCK + 17, dtype=np.uint8).tobytes()
    with DirectFile(tmp_path / "f") as fh:
        for i in range(0, len(data), 3000):
            fh.write(data[i : i + 3000])
    assert fh.direct is False
    assert (tmp_path / "f").read_bytes() == data


def test_writers_on_two_threads_each_get_their_own_bytes(tmp_path):
    """The page-aligned buffer is the process's; a second writer at the same time takes its own."""
    from mmsearch.fileio import DirectFile

    data = [np.random.default_rng(i).integers(0, 256, (3 << 20) + 5, dtype=np.uint8).tobytes() for i in range(2)]
    started = threading.Barrier(2)

    def write(i: int) -> None:
        with DirectFile(tmp_path / f"f{i}") as fh:
            started.wait()
            for j in range(0, len(data[i]), 1 << 18):
                fh.write(data[i][j : j + (1 << 18)])

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [(tmp_path / f"f{i}").read_bytes() == data[i] for i in range(2)] == [True, True]


def test_a_write_refused_midway_is_one_error_and_frees_the_buffer(tmp_path, monkeypatch):
    """Disk full in the middle of a large file: one OSError (no second one raised while closing, which
    used to write the whole buffer again), and the process's buffer is free for the next writer."""
    import errno

    import mmsearch.fileio
    from mmsearch.fileio import DirectFile

    real_write = os.write
    calls = []

    def full_after_one(fd, data):  # noqa: ANN001, ANN202
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(mmsearch.fileio, "DIRECT_BUFFER", 2 * mmsearch.fileio.DIRECT_BLOCK)
    monkeypatch.setattr(mmsearch.fileio, "_buffer", None)
    monkeypatch.setattr(os, "write", full_after_one)
    with pytest.raises(OSError) as refused:
        with DirectFile(tmp_path / "f") as fh:
            fh.write(bytes(5 * mmsearch.fileio.DIRECT_BLOCK + 5))
    assert refused.value.errno == errno.ENOSPC and refused.value.__context__ is None
    assert len(calls) == 2 and not mmsearch.fileio._buffer_lock.locked()


def test_a_refused_write_names_the_file_the_reason_and_what_to_do():
    """The errno comes from the OSError, or from pyarrow's message when it only writes it there; the
    error is an OSError with errno, strerror and filename, and one line."""
    import errno

    from mmsearch.errors import IndexWriteError, MMSearchError
    from mmsearch.store import index_write_error

    full = index_write_error("/i/data/x.npy", OSError(errno.ENOSPC, "No space left on device"))
    arrow = index_write_error("/i/data/x.parquet", OSError("Error writing bytes to file. Detail: [errno 28] No space left on device"))
    odd = index_write_error("/i/manifest.json", OSError(errno.EIO, "Input/output error"))
    for error in (full, arrow):
        assert isinstance(error, IndexWriteError) and isinstance(error, OSError) and isinstance(error, MMSearchError)
        assert (error.errno, error.strerror) == (errno.ENOSPC, "No space left on device")
        assert "\n" not in str(error) and "generation: free space on that disk, then run the same command again" in str(error)
    assert str(arrow).startswith("cannot write /i/data/x.parquet: No space left on device. The index keeps its last")
    assert arrow.filename == "/i/data/x.parquet"
    assert odd.errno == errno.EIO and "check the disk, then run the same command again" in str(odd)
