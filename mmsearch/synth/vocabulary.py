"""What the synthetic world holds: shape and sound captions, colours, classes, value ranges."""

from __future__ import annotations

from ..errors import UsageError

# --------------------------------------------------------------------------- world
VISUAL_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 200, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 220, 40),
    "white": (240, 240, 240),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
VISUAL_CAPTIONS: tuple[str, ...] = tuple(f"a {c} {s}" for c in VISUAL_COLOURS for s in SHAPES)
AUDIO_CLASSES: tuple[str, ...] = ("high tone", "low tone", "fast beat", "slow beat", "noise", "chord")
AUDIO_CAPTIONS: tuple[str, ...] = tuple(c if c == "noise" else f"a {c}" for c in AUDIO_CLASSES)

GROUND_TRUTH_JSON = "ground_truth.json"
GROUND_TRUTH_PARQUET = "ground_truth.parquet"

COLOUR_JITTER = 25
BACKGROUND_MAX = 70
SHAPE_SIZE_FRACTION = (0.2, 0.6)  # of the frame height
HIGH_TONE_HZ = (1000.0, 2000.0)
LOW_TONE_HZ = (100.0, 250.0)
FAST_BEAT_PER_S = (4.0, 6.0)
SLOW_BEAT_PER_S = (1.0, 2.0)
CHORD_ROOT_HZ = (200.0, 400.0)
MAX_GAP_NOISE = 0.02

_VIDEO_CONTAINERS = {"mp4": ("mp4", "libx264", "aac"), "webm": ("webm", "libvpx-vp9", "libopus")}
_AUDIO_CONTAINERS = {"wav": ("wav", "pcm_s16le"), "flac": ("flac", "flac"), "mp3": ("mp3", "libmp3lame")}
_COMMON_SAMPLE_RATES = (16000, 22050, 24000, 32000, 44100, 48000)
_OPUS_SAMPLE_RATES = (16000, 24000, 48000)
_AUDIO_CAPTION_OF_CLASS = dict(zip(AUDIO_CLASSES, AUDIO_CAPTIONS))
_KIND_VIDEO, _KIND_AUDIO = 0, 1
_NOISE_BANK = 4  # distinct background-noise frames cycled through per video


def parse_visual_caption(caption: str) -> tuple[str, str]:
    """Split ``"a red circle"`` into ``("red", "circle")``; UsageError (a ValueError) if unknown."""
    if not isinstance(caption, str) or caption not in VISUAL_CAPTIONS:
        raise UsageError(f"unknown visual caption {caption!r}; expected one of {list(VISUAL_CAPTIONS)}")
    _, colour, shape = caption.split(" ")
    return colour, shape


def normalize_audio_caption(caption: str) -> str:
    """Return the canonical audio caption for a caption or class name (``"high tone"``)."""
    if isinstance(caption, str):
        if caption in AUDIO_CAPTIONS:
            return caption
        if caption in _AUDIO_CAPTION_OF_CLASS:
            return _AUDIO_CAPTION_OF_CLASS[caption]
    raise UsageError(f"unknown audio caption {caption!r}; expected one of {list(AUDIO_CAPTIONS)}")


def _audio_class(caption: str) -> str:
    cap = normalize_audio_caption(caption)
    return AUDIO_CLASSES[AUDIO_CAPTIONS.index(cap)]
