"""Nothing half-written: every file mmsearch writes goes to a temporary name first, then is renamed."""

from __future__ import annotations

import errno
import mmap
import os
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Callable

__all__ = ["DirectFile", "atomic_write", "cache_dir", "default_index_dir", "display_path", "file_crc32", "index_dir"]


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[Path], object],
    *,
    prefix: str | None = None,
    suffix: str = ".tmp",
    fsync: bool = True,
    mode: int | None = None,
) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``.

    A reader sees the old file or the new one, never a part. ``fsync`` flushes the
    data before the rename (what a crash-safe index needs; the caller fsyncs the
    directory when the rename itself must survive a power cut). ``prefix`` names the
    temporary file (default ``.NAME.``), so that whoever cleans up after a crash can
    find it; ``mode`` sets its permissions, by default those ``open(path, "w")`` would
    give (0666 less the umask: ``mkstemp`` alone makes 0600, which kept an index from
    anyone but its writer, a server running as another user included). On any error
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=prefix if prefix is not None else f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, mode if mode is not None else 0o666 & ~current_umask())
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def cache_dir() -> Path:
    """mmsearch's cache folder: ``$XDG_CACHE_HOME/mmsearch`` (``~/.cache/mmsearch`` without it), where
    joined Whisper weights and built image towers are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmsearch"


def current_umask() -> int:
    """The process's umask, read without changing it where the platform allows (Linux's
    ``/proc/self/status``); else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def display_path(path: str) -> str:
    """A path as valid text: bytes that are not UTF-8 (kept by Python as surrogates) become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def default_index_dir() -> Path:
    """``$MMSEARCH_INDEX``, else ``$XDG_DATA_HOME/mmsearch/index`` (``~/.local/share/mmsearch/index``)."""
    env = os.environ.get("MMSEARCH_INDEX")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "mmsearch" / "index"


def index_dir(index: str | os.PathLike | None) -> Path:
    """``index`` as a path, or :func:`default_index_dir` when None."""
    return Path(index) if index is not None else default_index_dir()


def file_crc32(path: str | os.PathLike) -> int:
    """The CRC-32 of a file's bytes, read a MiB at a time (about 1.3 GB/s here)."""
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


DIRECT_BLOCK = 4096  # O_DIRECT wants offsets, lengths and buffer addresses aligned to the logical block (512 or 4096)
DIRECT_BUFFER = 8 << 20  # the page-aligned buffer blocks are written from, kept for the process
_buffer_lock = threading.Lock()
_buffer: mmap.mmap | None = None


class DirectFile:
    """A new file written past the page cache (``O_DIRECT``), for the large files of a commit; a binary
    file object with ``write`` and ``close`` (a context manager).

    Bytes are copied into a page-aligned buffer of :data:`DIRECT_BUFFER` bytes that the process keeps
    and written from it in whole blocks; the last part block is written through the page cache once
    ``O_DIRECT`` is cleared. ``close`` does not fsync: whoever commits the file does (written this
    way, that flushes only the tail). Where the platform or file system refuses ``O_DIRECT`` (e.g.
    macOS, Windows, ramfs, tmpfs before Linux 6.6, some FUSE file systems: ``EINVAL`` at open or at
    the first write) the file is written the ordinary way. The same pattern as RocksDB's
    ``use_direct_io_for_flush_and_compaction``: a large file that is written once, fsynced and read
    later need not pass through the page cache. On a virtual machine whose host takes back the guest's
    free memory (virtio-balloon free page reporting), copying into the page cache cost 0.35-0.5 s for a
    commit's 174 MB of shards against 0.08-0.1 s written directly (``benchmarks/disk_write.py``).

    Raises ``OSError`` as ``open``/``write`` do.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        direct = getattr(os, "O_DIRECT", 0)
        self.direct = bool(direct)
        try:
            self.fd = os.open(path, flags | direct, 0o666)
        except OSError as e:
            if not direct or e.errno != errno.EINVAL:
                raise
            self.fd, self.direct = os.open(path, flags, 0o666), False
        self._own: mmap.mmap | None = None
        self._buf: memoryview | None = None
        self._shared = False  # holding the process's buffer (and its lock), not one of its own
        self.fill = 0
        if self.direct:
            global _buffer
            self._shared = _buffer_lock.acquire(blocking=False)  # one buffer serves the process's writers in turn
            if self._shared:
                self._own = _buffer = _buffer or mmap.mmap(-1, DIRECT_BUFFER)
            else:
                self._own = mmap.mmap(-1, DIRECT_BUFFER)
            self._buf = memoryview(self._own)

    def write(self, data: object) -> int:
        view = memoryview(data).cast("B")  # type: ignore[arg-type]
        if self._buf is None:
            self._write_all(view)
            return len(view)
        done = 0
        while done < len(view):
            k = min(DIRECT_BUFFER - self.fill, len(view) - done)
            self._buf[self.fill : self.fill + k] = view[done : done + k]
            self.fill += k
            done += k
            if self.fill == DIRECT_BUFFER:
                self.fill = 0  # taken, whether or not the write succeeds: close() must not write it again
                self._write_all(self._buf)
        return len(view)

    def _write_all(self, view: memoryview) -> None:
        while len(view):
            try:
                n = os.write(self.fd, view)
            except OSError as e:  # a file system that opens with O_DIRECT but will not write that way
                if not self.direct or e.errno != errno.EINVAL:
                    raise
                self._buffered()
                continue
            view = view[n:]

    def _buffered(self) -> None:
        import fcntl

        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self.direct = False

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            if self._buf is not None and self.fill:
                whole = self.fill - self.fill % DIRECT_BLOCK
                self._write_all(self._buf[:whole])
                if self.direct:  # the last part block cannot be written directly
                    self._buffered()
                self._write_all(self._buf[whole : self.fill])
        finally:
            os.close(self.fd)
            self.fd = -1
            if self._buf is not None:
                self._buf.release()
                self._buf = None
            if self._shared:
                _buffer_lock.release()
            elif self._own is not None:
                self._own.close()
            self._own, self._shared = None, False

    def __enter__(self) -> "DirectFile":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:  # a write failed (disk full...): what is buffered is not written again
            self.fill = 0
        self.close()
