"""Nothing half-written: every file mmsearch writes goes to a temporary name first, then is renamed."""

from __future__ import annotations

import os
import tempfile
import zlib
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "cache_dir", "default_index_dir", "display_path", "file_crc32", "index_dir"]


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
