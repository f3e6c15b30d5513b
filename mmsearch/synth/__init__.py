"""Deterministic synthetic "ground-truth world" of media files with known events.

Visual events are single coloured shapes (circle/square/triangle) drifting slowly
on a dark, mildly noisy background; audio events are tones, beats, noise and
chords.  :func:`generate_corpus` writes videos (H.264/mp4 or VP9/webm, optionally
with a soundtrack) and audio-only files (wav/flac/mp3) plus a ground-truth table
of ``(file, modality, start, end, caption)`` rows.

Timing conventions (exact, by construction):

* video frame ``k`` has pts ``k`` in time base ``1/fps``; a visual row
  ``(start, end)`` satisfies ``start = K0 / fps`` and ``end = K1 / fps`` and frame
  ``k`` shows the shape iff ``K0 <= k < K1`` (equivalently ``start <= t < end``
  with ``t = k / fps``; webm files only use fps values dividing 1000, so their
  millisecond timestamps are exact too);
* an audio row has ``start = n0 / sr`` and ``end = n1 / sr`` (samples
  ``n0 <= n < n1`` contain the event), except in pairing mode where it copies
  the visual row's times and samples ``round(start*sr) <= n < round(end*sr)``
  contain the sound.

Everything is a pure function of the seed (per-file generators are derived from
``(seed, kind, index)``), so the same seed gives identical ground truth and
identical pixel/sample content.

Variation families (:mod:`.families`): ``"default"`` is the generator above;
``"train"`` draws every class widely (timbres, envelopes, ranges, noise, sizes,
shades, backgrounds) for the tiny models' training; ``"heldout"`` draws variants
the training family never does, to measure generalisation.

One module per craft: :mod:`.vocabulary` (captions, classes, colours, ranges),
:mod:`.config` (:class:`SynthConfig`), :mod:`.visual` (pictures), :mod:`.sound`
(sounds), :mod:`.pairs` (captioned training pairs), :mod:`.corpus` (planning,
writing with PyAV, ground truth).
"""

from __future__ import annotations

from .config import SynthConfig
from .corpus import generate_corpus, load_ground_truth, paired_config, write_wav
from .pairs import sample_audio_caption_pairs, sample_image_caption_pairs
from .families import FAMILIES, Family
from .sound import degrade_audio, synth_audio_event
from .visual import (
    degrade_image,
    random_background_colour,
    render_background,
    render_family_background,
    render_visual_event,
)
from .vocabulary import (
    AUDIO_CAPTIONS,
    AUDIO_CLASSES,
    GROUND_TRUTH_JSON,
    GROUND_TRUTH_PARQUET,
    SHAPES,
    VISUAL_CAPTIONS,
    VISUAL_COLOURS,
    normalize_audio_caption,
    parse_visual_caption,
)

__all__ = [
    "VISUAL_COLOURS",
    "SHAPES",
    "VISUAL_CAPTIONS",
    "AUDIO_CLASSES",
    "AUDIO_CAPTIONS",
    "GROUND_TRUTH_JSON",
    "GROUND_TRUTH_PARQUET",
    "SynthConfig",
    "FAMILIES",
    "Family",
    "degrade_audio",
    "degrade_image",
    "render_family_background",
    "parse_visual_caption",
    "normalize_audio_caption",
    "random_background_colour",
    "render_background",
    "render_visual_event",
    "synth_audio_event",
    "sample_image_caption_pairs",
    "sample_audio_caption_pairs",
    "generate_corpus",
    "load_ground_truth",
    "paired_config",
    "write_wav",
]
