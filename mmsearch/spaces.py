"""The vocabulary every stage shares: space names, media kinds, modalities.

A *space* is one embedding space of an index (its vectors come from one encoder); a
*segment* is one vector row of a space with a start and an end in seconds (a frame
stands for [its pts, the next frame's pts), an audio window for its interval). This
module imports nothing of mmsearch, so any stage can import it without a cycle.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "ANCHORS", "AUDIO", "COMMON_AUDIO", "COMMON_SOURCES", "COMMON_VISUAL", "MEDIA_KINDS", "MediaKind", "Modality",
    "SEGMENT_ANCHOR", "SPACES_BY_KIND", "VISUAL", "anchor_of",
]

VISUAL = "visual"  # frames and images (CLIP)
AUDIO = "audio"  # sound windows (CLAP)
COMMON_VISUAL = "common-visual"  # frames projected into the learnt common space
COMMON_AUDIO = "common-audio"  # sound windows projected into the learnt common space
COMMON_SOURCES = {COMMON_VISUAL: VISUAL, COMMON_AUDIO: AUDIO}  # a common space and the space it projects

MediaKind = Literal["video", "image", "audio"]
MEDIA_KINDS: tuple[MediaKind, ...] = ("video", "image", "audio")
SPACES_BY_KIND: dict[str, tuple[str, ...]] = {"video": (VISUAL, AUDIO), "image": (VISUAL,), "audio": (AUDIO,)}

Modality = Literal["video", "image", "audio"]  # what a search result is

# Where a segment's score sits on a similarity-over-time curve: a frame at the moment its
# picture appears (its pts, the segment's start), a window of sound at its centre.
ANCHORS = ("start", "centre")
SEGMENT_ANCHOR = {VISUAL: "start", AUDIO: "centre"}


def anchor_of(space: str) -> str:
    """The anchor (``"start"`` or ``"centre"``) of a space's segments; common spaces follow their source."""
    return SEGMENT_ANCHOR.get(COMMON_SOURCES.get(space, space), "centre")
