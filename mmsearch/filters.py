"""Which media a search may return: a filter on the media table, applied inside the search.

A :class:`MediaFilter` resolves, against one generation's media table, to the sorted media ids
it lets through (:func:`allowed_media`). The retrieval stages then search only those: stage 1
scores them exactly when they are few and otherwise searches the FAISS index with every other
row masked out (as tombstones are, asking for more rows until ``videos`` pass), so ``k`` results
come back whenever ``k`` match, never a top-k cut afterwards.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .spaces import DEFAULT_AUDIO_WEIGHT

if TYPE_CHECKING:  # imported where used: mmsearch query reads this module before it sends a query to a server
    import numpy as np
    import pyarrow as pa

KINDS = ("video", "image", "audio")
FAR = 1e12  # seconds from 1970: past every file's modification time, either way (and finite, for JSON)
GLOB_CHARS = "*?["


@dataclass(frozen=True)
class MediaFilter:
    """Conditions a media item must meet, all of them (an unset field does not filter).

    ``path``: a path prefix (``/videos/2019``; plain string prefix, end it with ``/`` for a folder
    only) or, when it holds ``*``, ``?`` or ``[``, a glob matched against the whole path (``*`` also
    crosses ``/``) or, for a pattern without ``/``, against the file name (``*.mov``).
    ``kinds``: any of ``video`` (animations too), ``image``, ``audio``. ``min_duration`` and
    ``max_duration``: seconds, inclusive (a still has duration 0). ``modified_after`` and
    ``modified_before``: the file's modification time, seconds since the epoch, inclusive
    (:func:`media_filter` reads dates: a date alone as local time, its whole day for "before").
    ``languages``: ISO 639-1 codes of what is said (Whisper's detection, or the subtitles').
    ``tags``: sound tags (labels of the index's sound tagger, any case; several: any of them): only
    the stretches where the sound is tagged with one of them (``mmsearch index --sound-tags``;
    :meth:`mmsearch.api.Index.tagged_runs`), so only media with such a window; how each search
    kind finds them: :meth:`mmsearch.api.Index.search`.
    """

    path: str | None = None
    kinds: tuple[str, ...] = ()
    min_duration: float | None = None
    max_duration: float | None = None
    modified_after: float | None = None
    modified_before: float | None = None
    languages: tuple[str, ...] = field(default=())
    tags: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise UsageError(f"unknown media kind {unknown[0]!r}; choose from {', '.join(KINDS)}")
        for name in ("min_duration", "max_duration"):
            value = getattr(self, name)
            if value is not None and not (value >= 0 and math.isfinite(value)):  # also NaN, inf
                raise UsageError(f"{name.replace('_', '-')} must be a number of seconds >= 0, got {value}")
        if self.min_duration is not None and self.max_duration is not None and self.min_duration > self.max_duration:
            raise UsageError(f"min-duration {self.min_duration} is above max-duration {self.max_duration}")
        if self.path is not None and not self.path:
            raise UsageError("an empty path filter: give a path prefix (/videos/2019) or a glob (*.mov)")
        if self.path is not None and not any(c in self.path for c in GLOB_CHARS) and not os.path.isabs(self.path):
            raise UsageError(f"path filter {self.path!r}: a path prefix must be absolute (indexed paths are), or use a glob ('*/{self.path.strip('/')}/*')")
        after, before = self.modified_after, self.modified_before
        if after is not None and before is not None and after > before:
            raise UsageError("modified-after is later than modified-before: nothing could pass")

    @property
    def empty(self) -> bool:
        """True when nothing is filtered."""
        return self == MediaFilter()

    def to_dict(self) -> dict[str, Any]:
        """The set fields, JSON-ready (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v not in (None, ())}

    def path_matches(self, path: str) -> bool:
        """Whether ``path`` (a stored, absolute path) passes the ``path`` condition."""
        if self.path is None:
            return True
        if not any(c in self.path for c in GLOB_CHARS):
            return path.startswith(self.path)
        subject = path if "/" in self.path or os.sep in self.path else os.path.basename(path)
        return fnmatch.fnmatchcase(subject, self.path)


def parse_time(value: str | float | int | None, *, name: str, end_of_day: bool = False) -> float | None:
    """Seconds since the epoch from an ISO 8601 date or date-time (``2024-05-01``, local time when no
    zone is given) or a number of seconds; None stays None. A date alone is its first instant, or
    with ``end_of_day`` its last (so "modified before 2024-05-01" includes that day). Raises
    UsageError otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        value = str(value)
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not math.isfinite(seconds):
            raise UsageError(f"{name} {value!r}: give a date (2024-05-01), a date-time or seconds since 1970")
        return seconds
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is not None:
        try:
            if end_of_day and len(text) == 10:  # YYYY-MM-DD: the whole day
                return (moment + timedelta(days=1)).timestamp() - 1e-6
            return moment.timestamp()
        except (OverflowError, ValueError, OSError):  # the calendar's edges (0001-01-01, 9999-12-31): no file is older or newer
            return -FAR if moment.year < 1970 else FAR
    raise UsageError(f"{name} {value!r}: give a date (2024-05-01), a date-time (2024-05-01T18:30) or seconds since 1970")


def split_list(values: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"video,audio"`` or ``["video", "audio,image"]`` as a tuple of stripped, non-empty items."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())


def allowed_media(media: "pa.Table", where: MediaFilter) -> "tuple[np.ndarray, dict[int, str]]":
    """The media ids (sorted int64) with a path that passes ``where``, and for each the first such path.

    ``media`` is a generation's media table (one row per path; identical copies share a media id,
    and a media item passes when any of its paths does).
    """
    import numpy as np

    n = len(media)
    keep = np.ones(n, bool)
    if where.kinds:
        keep &= np.isin(np.asarray(media.column("kind").to_pylist(), object), list(where.kinds))
    duration = media.column("duration").to_numpy(zero_copy_only=False).astype(np.float64)
    if where.min_duration is not None:
        keep &= duration >= where.min_duration  # NaN (unknown) fails both bounds
    if where.max_duration is not None:
        keep &= duration <= where.max_duration
    mtime = media.column("mtime").to_numpy(zero_copy_only=False).astype(np.float64)
    if where.modified_after is not None:
        keep &= mtime >= where.modified_after
    if where.modified_before is not None:
        keep &= mtime <= where.modified_before
    if where.languages:
        keep &= np.isin(np.asarray(media.column("language").to_pylist(), object), list(where.languages))
    ids = media.column("media_id").to_numpy()
    paths = [os.fsdecode(raw) for raw in media.column("raw_path").to_pylist()]  # the real names (the path column is for display)
    first: dict[int, str] = {}
    for i in np.flatnonzero(keep):
        if where.path_matches(paths[i]):
            first.setdefault(int(ids[i]), paths[i])
    return np.asarray(sorted(first), np.int64), first


def media_filter(
    *,
    path: str | None = None,
    kinds: str | list[str] | None = None,
    min_duration: float | None = None,
    max_duration: float | None = None,
    modified_after: str | float | None = None,
    modified_before: str | float | None = None,
    languages: str | list[str] | None = None,
    tags: str | list[str] | None = None,
) -> MediaFilter:
    """A :class:`MediaFilter` from the options of ``mmsearch query`` and the parameters of
    ``/api/search``: kinds and languages as lists or comma-separated, dates as :func:`parse_time`
    reads them. Raises UsageError naming the option that is wrong."""
    return MediaFilter(
        path=path or None,
        kinds=split_list(kinds),
        min_duration=min_duration,
        max_duration=max_duration,
        modified_after=parse_time(modified_after, name="modified-after"),
        modified_before=parse_time(modified_before, name="modified-before", end_of_day=True),
        languages=_languages(languages),
        tags=_tags(tags),
    )


def _languages(languages: str | list[str] | None) -> tuple[str, ...]:
    """Language codes in lower case; UsageError for one that is not a code: ISO 639-1 (two letters), or
    the three of the few languages Whisper names so (haw, yue)."""
    codes = tuple(lang.lower() for lang in split_list(languages))
    for code in codes:
        if not re.fullmatch(r"[a-z]{2,3}", code):
            raise UsageError(f"--language {code}: give language codes such as en, de or fr (ISO 639-1; mmsearch info lists "
                             "the languages said in the index)")
    return codes


def _tags(tags: str | list[str] | None) -> tuple[str, ...]:
    """Sound-tag labels as given, not comma-separated (AudioSet labels hold commas: "Male speech, man
    speaking"); UsageError for an empty one."""
    given = [tags] if isinstance(tags, str) else list(tags or ())
    if any(not t.strip() for t in given):
        raise UsageError("an empty --tag: give a label of the index's sound tags (mmsearch info lists them)")
    return tuple(t.strip() for t in given)


QUOTES = '"\u201c\u201d'


def check_query(text: str | None, k: int, videos: int, audio_weight: float = DEFAULT_AUDIO_WEIGHT) -> None:
    """The checks a search makes before it starts (the CLI makes them before it sends a query to a
    server, so both say the same): a text that is not empty or quotes only, ``k`` and ``videos`` >= 1,
    ``audio_weight`` in [0, 1] (NaN is not). Raises :class:`UsageError`."""
    if text is not None and not text.translate({ord(q): " " for q in QUOTES}).strip():
        raise UsageError('empty query text: say what to look for, e.g. mmsearch query "a dog on a beach"')
    if k < 1 or videos < 1:
        raise UsageError(f"-k and --videos must be at least 1, got {k} and {videos}")
    if not 0.0 <= audio_weight <= 1.0:
        raise UsageError(f"--audio-weight must be between 0 and 1, got {audio_weight}")
