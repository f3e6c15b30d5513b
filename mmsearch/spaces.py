"""The vocabulary every stage shares: space names, media kinds, modalities.

A *space* is one embedding space of an index (its vectors come from one encoder); a
*segment* is one vector row of a space with a start and an end in seconds (a frame
stands for [its pts, the next frame's pts), an audio window for its interval). This
module imports nothing of mmsearch, so any stage can import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ANCHORS", "AUDIO", "CAPTION", "COMMON_AUDIO", "COMMON_SOURCES", "COMMON_VISUAL", "DEFAULT_AUDIO_WEIGHT", "MEDIA_KINDS", "MediaKind", "Modality",
    "SEGMENT_ANCHOR", "SOUND_TAGS", "SPACES_BY_KIND", "SPEECH", "TEXT", "TEXT_SPACES", "TextSegment", "VISUAL", "anchor_of",
]

VISUAL = "visual"  # frames and images (CLIP)
AUDIO = "audio"  # sound windows (CLAP)
COMMON_VISUAL = "common-visual"  # frames projected into the learnt common space
COMMON_AUDIO = "common-audio"  # sound windows projected into the learnt common space
SPEECH = "speech"  # what is said: speech (Whisper) and subtitles, as sentences (issue #15)
TEXT = "text"  # what is written on screen (OCR), as lines (issue #15)
CAPTION = "caption"  # what a captioner (CoCa or BLIP) says is seen, one caption per moment window (issue #19)
TEXT_SPACES = (SPEECH, TEXT, CAPTION)  # spaces whose segments carry their words
COMMON_SOURCES = {COMMON_VISUAL: VISUAL, COMMON_AUDIO: AUDIO}  # a common space and the space it projects
DEFAULT_AUDIO_WEIGHT = 0.5  # --modality all: the sound's share of a moment's score (pictures and words: the rest)
SOUND_TAGS = "tags"  # not a space: the sound tagger's key among a run's encoders; its tags label the audio space's windows

MediaKind = Literal["video", "image", "audio"]
MEDIA_KINDS: tuple[MediaKind, ...] = ("video", "image", "audio")
SPACES_BY_KIND: dict[str, tuple[str, ...]] = {
    "video": (VISUAL, AUDIO, SPEECH, TEXT, CAPTION), "image": (VISUAL, TEXT, CAPTION), "audio": (AUDIO, SPEECH),
}

Modality = Literal["video", "image", "audio", "speech", "text", "caption"]  # what a search result is (what matched)

# Where a segment's score sits on a similarity-over-time curve: a frame at the moment its
# picture appears (its pts, the segment's start), a window of sound at its centre.
ANCHORS = ("start", "centre")
SEGMENT_ANCHOR = {VISUAL: "start", AUDIO: "centre", SPEECH: "start", TEXT: "start", CAPTION: "centre"}


def anchor_of(space: str) -> str:
    """The anchor (``"start"`` or ``"centre"``) of a space's segments; common spaces follow their source."""
    return SEGMENT_ANCHOR.get(COMMON_SOURCES.get(space, space), "centre")


@dataclass(frozen=True)
class TextSegment:
    """Words said or written over ``[start, end)`` seconds from the start of the media (as a player shows it).

    ``source``: ``"speech"`` (Whisper), ``"subtitles"`` (a subtitle stream or a sidecar file),
    ``"ocr"`` (text on screen) or ``"caption"`` (a captioner's description of the frames). ``language``: an ISO 639 code when known (Whisper's detection, a
    subtitle stream's tag or a sidecar's name such as ``film.en.srt``), else None.
    """

    start: float
    end: float
    text: str
    source: str
    language: str | None = None
