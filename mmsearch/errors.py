"""The mmsearch exception tree.

Every error a user can cause derives from :class:`MMSearchError`; the CLI
prints its message (no stack trace) and exits non-zero. Messages name the
file involved and say what to do.
"""

from __future__ import annotations

import os
from typing import Literal


class MMSearchError(Exception):
    """Root of every error mmsearch raises on purpose."""

    exit_code = 1


class UsageError(MMSearchError, ValueError):
    """The caller asked for something that cannot be done (bad option, empty query...)."""

    exit_code = 2


class MediaError(MMSearchError):
    """A media file could not be used. Carries the path and the stage that failed."""

    def __init__(self, path: str | os.PathLike, reason: str, *, stage: str = "decode", message: str | None = None) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        self.stage = stage
        super().__init__(message or f"{self.path}: {stage} failed: {reason}")


class DecodeError(MediaError):
    """The file's container or streams could not be decoded."""


class NoVideoError(DecodeError):
    """The file has no moving pictures (a sound-only container, or only cover art)."""


class QueryInputError(MediaError):
    """A file given as a query example (``kind``: ``"image"`` or ``"sound"``) is empty or cannot be
    decoded: a path of the wrong kind, so the CLI exits 2 as for a usage error; still a
    :class:`MediaError`, so the HTTP server answers an upload of it with 415."""

    exit_code = 2
    ADVICE = {
        "image": "give a picture file that opens (JPEG, PNG, WebP, HEIC...)",
        "sound": "give a sound file that plays (WAV, FLAC, MP3, OGG, M4A...) or a video with sound",
    }

    def __init__(self, path: str | os.PathLike, reason: str, *, kind: Literal["image", "sound"], hint: str = "") -> None:
        self.kind = kind
        message = f"{os.fspath(path)}: cannot search by this {kind}: {reason}; {self.ADVICE[kind]}{hint}"
        super().__init__(path, reason, stage=f"query {kind}", message=message)


class NoAudioError(MediaError):
    """The file has no usable audio (no track, zero length or silence)."""


class SubtitleError(MediaError):
    """Subtitles (a sidecar file such as ``film.en.srt``, or a text stream inside the container)
    could not be read. The video itself may still be indexed without them."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(path, reason, stage="subtitles")


class EncoderError(MMSearchError):
    """An encoder could not be built or its weights could not be loaded."""


class UnknownModelError(EncoderError, UsageError):
    """A model name no library knows: a usage error (exit 2), and an :class:`EncoderError` to code that
    catches those."""


class EncoderMismatchError(MMSearchError):
    """An index is opened or extended with another encoder than the one that built it."""


class IndexNotFoundError(MMSearchError, FileNotFoundError):
    """No index exists at the given directory."""


class NotAnIndexError(IndexNotFoundError, UsageError):
    """A file given where an index directory belongs: a path of the wrong kind, so a usage error
    (exit 2), and an :class:`IndexNotFoundError` to code that catches those."""


class IndexCorruptError(MMSearchError):
    """A file of the index is missing, truncated or altered."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        super().__init__(
            f"index file {self.path} is corrupt: {reason}. "
            "Rebuild the index (delete the directory and run `mmsearch index` again)."
        )


class IndexWriteError(MMSearchError, OSError):
    """A file of the index could not be written (disk full, quota, read-only disk, permissions, a file
    size limit). The index keeps its last complete generation, and running the same command again
    goes on from there. ``errno``, ``strerror`` and ``filename`` are the operating system's, as on
    any ``OSError``; ``str()`` is the one-line message."""

    def __init__(self, message: str, *, errno: int | None = None, strerror: str | None = None,
                 filename: str | None = None) -> None:
        super().__init__(message)
        self.errno, self.strerror, self.filename = errno, strerror, filename

    def __str__(self) -> str:  # OSError's own would be "[Errno N] strerror: 'filename'"
        return str(self.args[0])


class IndexFormatError(MMSearchError):
    """The index was written by an incompatible version of mmsearch."""
