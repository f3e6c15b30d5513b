"""Subtitles as time-aligned text: sidecar files next to a video and text streams inside it (issue #15).

Every cue becomes a :class:`~mmsearch.spaces.TextSegment` with ``source="subtitles"``, its times in
seconds from the start of the media as a player shows it (for an embedded stream: packet pts minus
the container's start time, :func:`mmsearch.avutil.container_start`), so subtitles, speech,
frames and sound share one origin.

Sidecars are parsed by pysubs2 (SubRip, SubStation Alpha) and webvtt-py (WebVTT); markup (``{\\i1}``, ``<i>``,
``\\N``) is reduced to plain text with :attr:`pysubs2.SSAEvent.plaintext`. Embedded streams are
demuxed and decoded with PyAV; only text codecs are read, picture subtitles (DVD, Blu-ray PGS,
DVB) would need OCR and are skipped. :func:`read_subtitles` gathers both and reports the sources
it could not read as one-line problems, so a broken ``film.srt`` never keeps ``film.mp4`` out of
the index.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .avutil import container_start, error_text, stream_end
from .errors import SubtitleError
from .spaces import TextSegment

if TYPE_CHECKING:  # PyAV is imported where it is used, so that this module stays light
    from av.container import InputContainer
    from av.packet import Packet
    from av.subtitles.stream import SubtitleStream

__all__ = ["SIDECAR_EXTENSIONS", "embedded_subtitles", "read_sidecar", "read_subtitles", "sidecar_files", "sidecar_names"]

log = logging.getLogger(__name__)

SOURCE = "subtitles"
SIDECAR_EXTENSIONS = (".srt", ".vtt", ".ass", ".ssa")
# A language tag between the video's stem and the extension: ISO 639-1/-2 code, an optional
# script (zh-Hans) and an optional region (pt-BR, es-419).
_LANGUAGE_TAG = r"[A-Za-z]{2,3}(?:-[A-Za-z]{4})?(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"
# Descriptor names of the text codecs read from containers (FFmpeg's ``codec.canonical_name``).
TEXT_CODECS = frozenset({"subrip", "srt", "ass", "ssa", "mov_text", "webvtt"})
_ASS_FIELDS_BEFORE_TEXT = 8  # ReadOrder,Layer,Style,Name,MarginL,MarginR,MarginV,Effect,Text
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_STRICT_ENCODINGS = ("utf-8-sig", "cp1252")  # then latin-1, which decodes any byte


def _clean(text: str) -> str:
    """One line of plain words: line breaks and runs of white space become single spaces."""
    return " ".join(text.split())


def _ass_plaintext(markup: str) -> str:
    """ASS text (override tags, ``\\N``) as plain words."""
    import pysubs2

    return _clean(pysubs2.SSAEvent(text=markup).plaintext)


# -- sidecar files ---------------------------------------------------------------------------------
def sidecar_files(video_path: str | os.PathLike) -> list[tuple[Path, str | None]]:
    """Subtitle files next to ``video_path``: ``stem.ext`` or ``stem.LANG.ext`` with ``ext`` one of
    :data:`SIDECAR_EXTENSIONS` (any case), as ``(path, language)`` sorted by file name.

    ``language`` is the infix as written (``film.en.srt`` -> ``"en"``, ``film.pt-BR.srt`` ->
    ``"pt-BR"``), None without one. The stem must match exactly: ``film2.srt`` or
    ``film.en.forced.srt`` do not belong to ``film.mp4``. A folder that cannot be listed has none.
    """
    video = Path(video_path)
    try:
        names = [entry.name for entry in os.scandir(video.parent) if entry.is_file()]
    except OSError:
        return []
    return [(video.parent / name, language) for name, language in _sidecars_among(video.name, names)]


def sidecar_names(video_name: str, names: list[str]) -> list[str]:
    """Which of ``names`` (files in the video's folder) are subtitle files of the video ``video_name``, sorted."""
    return [name for name, _ in _sidecars_among(video_name, names)]


def _sidecars_among(video_name: str, names: list[str]) -> list[tuple[str, str | None]]:
    pattern = re.compile(
        re.escape(Path(video_name).stem) + rf"(?:\.(?P<language>{_LANGUAGE_TAG}))?(?P<ext>\.[^.]+)",
    )
    found = []
    for name in sorted(names):
        match = pattern.fullmatch(name)
        if match and match["ext"].lower() in SIDECAR_EXTENSIONS:
            found.append((name, match["language"]))
    return found


def _decode_text(data: bytes) -> str:
    """Subtitle bytes as text: UTF-16 when it has a byte-order mark, else UTF-8 (BOM or not),
    else Windows-1252, else Latin-1."""
    if data.startswith(_UTF16_BOMS):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    for encoding in _STRICT_ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")  # decodes any bytes: the last resort


def read_sidecar(path: str | os.PathLike, language: str | None = None) -> list[TextSegment]:
    """The cues of a subtitle file (SubRip, WebVTT, ASS/SSA, detected from the content) in file order.

    Times are seconds (millisecond precision, centiseconds for ASS) as the file states them;
    ``language`` is copied onto every segment. Comment events, drawings and cues without text
    are left out; markup is removed and white space collapsed. An empty file has no cues.

    Raises :class:`~mmsearch.errors.SubtitleError` when the file cannot be read or is not a
    subtitle format pysubs2 recognises.
    """
    import pysubs2

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SubtitleError(path, f"cannot read subtitles ({error.strerror or error}): check the file's permissions") from error
    text = _decode_text(data)
    if not text.strip():
        return []
    if path.suffix.lower() == ".vtt" or text.lstrip("\ufeff").startswith("WEBVTT"):
        return _read_webvtt(path, text, language)
    # SubStation Alpha by its name when it has events (pysubs2's guess takes a file without a styles
    # section for SubRip and loses every line); anything else by its content
    named = path.suffix.lower()[1:] if path.suffix.lower() in (".ass", ".ssa") and "[events]" in text.lower() else None
    try:
        subs = pysubs2.SSAFile.from_string(text, format_=named)
    except Exception as error:
        detail = f"{type(error).__name__}: {error}".splitlines()[0]
        raise SubtitleError(path, f"cannot parse subtitles ({detail}): fix or remove the file") from error
    segments = []
    for event in subs:
        if event.is_comment or event.is_drawing:
            continue
        words = _clean(event.plaintext)
        if words and event.end > event.start:
            segments.append(TextSegment(event.start / 1000.0, event.end / 1000.0, words, SOURCE, language))
    return segments


def _read_webvtt(path: Path, text: str, language: str | None) -> list[TextSegment]:
    """WebVTT cues through webvtt-py, which knows its blocks (NOTE, STYLE, REGION), cue identifiers and
    the word timestamps of automatic captions (``<00:00:00.900>``); pysubs2 reads WebVTT as SubRip and
    leaves them in the text."""
    import webvtt

    try:
        captions = webvtt.from_string(text.lstrip("\ufeff"))
    except Exception as error:  # noqa: BLE001 - webvtt-py raises its own kinds for a malformed file
        detail = f"{type(error).__name__}: {error}".splitlines()[0]
        raise SubtitleError(path, f"cannot parse subtitles ({detail}): fix or remove the file") from error
    segments = []
    for caption in captions:
        start, end, words = _vtt_seconds(caption.start), _vtt_seconds(caption.end), _clean(caption.text)
        if words and end > start:
            segments.append(TextSegment(start, end, words, SOURCE, language))
    return segments


def _vtt_seconds(stamp: str) -> float:
    """``HH:MM:SS.mmm`` or ``MM:SS.mmm`` as seconds."""
    seconds = 0.0
    for part in stamp.strip().split(":"):
        seconds = seconds * 60 + float(part)
    return round(seconds, 3)


# -- streams inside the container ------------------------------------------------------------------
def _stream_language(stream: SubtitleStream) -> str | None:
    """The stream's ``language`` tag; ``und`` (undetermined) and no tag are None."""
    tag = (stream.metadata.get("language") or "").strip()
    return None if not tag or tag.lower() == "und" else tag


def _packet_text(codec: str, data: bytes) -> str:
    """Plain text of one undecoded subtitle packet (used when FFmpeg's decoder rejects it)."""
    import pysubs2

    if codec == "mov_text":  # 3GPP timed text: 16-bit big-endian length, UTF-8 text, style boxes
        size = int.from_bytes(data[:2], "big") if len(data) >= 2 else 0
        return _clean(data[2 : 2 + size].decode("utf-8", errors="replace"))
    text = data.decode("utf-8", errors="replace")
    if codec in ("ass", "ssa"):  # Matroska's ASS block: ReadOrder,Layer,Style,...,Effect,Text
        fields = text.split(",", _ASS_FIELDS_BEFORE_TEXT)
        return _ass_plaintext(fields[-1]) if len(fields) > _ASS_FIELDS_BEFORE_TEXT else ""
    # SubRip or WebVTT cue text, HTML-like tags and all: let pysubs2's SubRip reader clean it.
    cue = f"1\n00:00:00,000 --> 00:00:01,000\n{text.strip()}\n"
    try:
        events = pysubs2.SSAFile.from_string(cue, format_="srt").events
    except Exception:  # noqa: BLE001 - fall back to the raw words
        return _clean(text)
    return " ".join(_clean(event.plaintext) for event in events).strip()


def _decoded_text(packet: Packet) -> str:
    """Plain text of a decoded subtitle packet: each rect's ASS dialogue (``ReadOrder,Layer,...,Text``,
    FFmpeg's form since 3.0) or its plain ``text``, joined by spaces."""
    parts = []
    for rect in packet.decode():
        ass = getattr(rect, "ass", b"") or b""
        if ass:
            fields = ass.decode("utf-8", errors="replace").split(",", _ASS_FIELDS_BEFORE_TEXT)
            parts.append(_ass_plaintext(fields[-1]))
        else:
            parts.append(_clean((getattr(rect, "text", b"") or b"").decode("utf-8", errors="replace")))
    return " ".join(part for part in parts if part)


def _text_streams(container: InputContainer) -> list[SubtitleStream]:
    """The container's subtitle streams that carry text and that FFmpeg can decode."""
    streams = []
    for stream in container.streams.subtitles:
        context = stream.codec_context
        if context is None:  # no decoder in this FFmpeg build: the codec cannot even be named
            log.debug("subtitle stream #%d: no decoder, skipped", stream.index)
            continue
        if context.codec.canonical_name in TEXT_CODECS or context.name in TEXT_CODECS:
            streams.append(stream)
        else:  # dvd_subtitle, hdmv_pgs_subtitle, dvb_subtitle...: pictures that would need OCR
            log.debug("subtitle stream #%d (%s): not text, skipped", stream.index, context.name)
    return streams


def embedded_subtitles(path: str | os.PathLike) -> list[TextSegment]:
    """The cues of the text subtitle streams inside ``path`` (SubRip, ASS/SSA, mov_text, WebVTT).

    ``start`` is the packet's pts minus the container's start time, ``end`` is ``start`` plus the
    packet's duration, in seconds; a packet without a duration ends where the stream's next cue
    starts (or the stream ends). ``language`` is the stream's tag (None for ``und`` or none).
    Picture subtitle streams are skipped; a file without text subtitle streams gives ``[]``.
    Segments come stream by stream, each in demux order.

    Raises :class:`~mmsearch.errors.SubtitleError` when PyAV cannot open or demux the file.
    """
    import av

    path = Path(path)
    segments: list[TextSegment] = []
    try:
        with av.open(str(path)) as container:
            streams = _text_streams(container)
            if not streams:
                return []
            origin = container_start(container)
            cues: dict[int, list[list]] = {stream.index: [] for stream in streams}  # [start, end | None, text]
            for packet in container.demux(streams):
                stream = packet.stream
                pts = packet.pts if packet.pts is not None else packet.dts
                time_base = packet.time_base or stream.time_base
                if pts is None or time_base is None or packet.size == 0:
                    continue  # a flush packet, or one no clock places
                try:
                    text = _decoded_text(packet)
                except av.error.FFmpegError:  # the decoder rejects it: read the bytes ourselves
                    text = _packet_text(stream.codec_context.codec.canonical_name, bytes(packet))
                start = float(pts * time_base) - origin
                end = start + float(packet.duration * time_base) if packet.duration else None
                cues[stream.index].append([start, end, text])
            for stream in streams:
                language, stream_cues = _stream_language(stream), cues[stream.index]
                last = stream_end(container, stream)
                for i, (start, end, text) in enumerate(stream_cues):
                    if end is None:
                        end = stream_cues[i + 1][0] if i + 1 < len(stream_cues) else last
                    if not text or not end > max(start, 0.0):  # nan ends fail this too
                        continue
                    segments.append(TextSegment(max(start, 0.0), end, text, SOURCE, language))
    except av.error.FFmpegError as error:
        raise SubtitleError(
            path, f"cannot read its subtitle streams ({error_text(error)}): check that the file is a complete, undamaged video"
        ) from error
    return segments


# -- everything for one video ----------------------------------------------------------------------
def read_subtitles(video_path: str | os.PathLike) -> tuple[list[TextSegment], list[str]]:
    """All subtitles of a video: its text streams and its sidecar files, sorted by (start, end) seconds.

    A cue present in two sources (same start and end to the millisecond, same text) is kept once,
    from the first source (embedded streams, then sidecars by name). The second element lists one
    line per source that could not be read (``"film.en.srt: cannot parse subtitles (...): fix or
    remove the file"``), so the caller can report it and still index the video. Never raises
    :class:`~mmsearch.errors.SubtitleError`.
    """
    video = Path(video_path)
    segments: list[TextSegment] = []
    problems: list[str] = []
    try:
        segments.extend(embedded_subtitles(video))
    except SubtitleError as error:
        problems.append(f"{video.name}: {error.reason}")
    for sidecar, language in sidecar_files(video):
        try:
            segments.extend(read_sidecar(sidecar, language))
        except SubtitleError as error:
            problems.append(f"{sidecar.name}: {error.reason}")
    unique, seen = [], set()
    for segment in segments:
        key = (round(segment.start, 3), round(segment.end, 3), segment.text)
        if key not in seen:
            seen.add(key)
            unique.append(segment)
    unique.sort(key=lambda segment: (segment.start, segment.end))
    return unique, problems
