"""Variation families: how widely each class of the world is drawn.

The world description (six sounds, fifteen coloured shapes) fixes what a class
*is*; a family fixes *how* its examples are synthesised:

* ``"default"``: the original generator (one timbre per class, fixed ranges);
  the demo and the tests' corpora use it, unchanged.
* ``"train"``: wide variation of every class, what ``synth-clip``,
  ``synth-clap`` and ``synth-ast`` are trained on: tone waveforms and
  envelopes, beat bodies, chord voicings, noise colours (uniform and gaussian
  white, pink, low-passed, and hiss: nothing under 700-2000 Hz), pitch and
  tempo ranges, amplitudes, background noise, band limits and quantisation
  (sample rates, codecs); shape sizes, colour shades, background gradients,
  blur and JPEG compression.
* ``"heldout"``: variants the training family never draws, to measure
  generalisation: beats that are bare noise bursts (no click, no body), chords
  built from frequency ratios (4:5:6, ...), tones with vibrato and 2nd/3rd
  partials, band-pass noise, decaying envelopes, radial backgrounds, darker
  shades, box blur; every continuous range (pitches, tempi, chord roots, shape
  sizes, shades) lies in a band cut out of the training family's ranges.

Bands are tuples of ``(lo, hi)`` intervals; a draw picks an interval in
proportion to its width (log-width for frequencies) and then a value in it.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from ..errors import UsageError

Family = Literal["default", "train", "heldout"]
FAMILIES: tuple[str, ...] = ("default", "train", "heldout")
Bands = tuple[tuple[float, float], ...]

# --------------------------------------------------------------------------- sound ranges
PITCH_HZ: dict[str, dict[str, Bands]] = {
    "train": {"high tone": ((800.0, 1300.0), (1500.0, 3000.0)), "low tone": ((80.0, 150.0), (175.0, 280.0))},
    "heldout": {"high tone": ((1300.0, 1500.0),), "low tone": ((150.0, 175.0),)},
}
BEATS_PER_S: dict[str, dict[str, Bands]] = {
    "train": {"fast beat": ((3.5, 4.6), (5.2, 7.5)), "slow beat": ((0.8, 1.3), (1.6, 2.3))},
    "heldout": {"fast beat": ((4.6, 5.2),), "slow beat": ((1.3, 1.6),)},
}
CHORD_ROOT_BANDS: dict[str, Bands] = {"train": ((150.0, 260.0), (300.0, 450.0)), "heldout": ((260.0, 300.0),)}
TONE_TIMBRES = {"train": ("sine", "square", "triangle", "octave", "saw"), "heldout": ("vibrato",)}
ENVELOPES = {"train": ("flat", "adsr", "tremolo"), "heldout": ("decay",)}
NOISE_COLOURS = {"train": ("uniform", "gaussian", "pink", "lowpass", "hiss"), "heldout": ("band",)}
# where noise with nothing under some frequency starts: the training family's hiss, the held-out band-pass noise
NOISE_LOW_CUT_HZ: dict[str, Bands] = {"train": ((700.0, 2000.0),), "heldout": ((300.0, 600.0),)}
BEAT_BODIES = {"train": ("click", "kick", "tick"), "heldout": ("none",)}
# equal-tempered voicings (semitones) for training; frequency ratios for the held-out family
CHORD_SEMITONES: tuple[tuple[int, ...], ...] = ((0, 4, 7), (0, 3, 7), (4, 7, 12), (0, 7, 16), (0, 4, 7, 10), (0, 5, 7))
CHORD_RATIOS: tuple[tuple[float, ...], ...] = ((4.0, 5.0, 6.0), (10.0, 12.0, 15.0), (4.0, 5.0, 6.0, 8.0))

# --------------------------------------------------------------------------- picture ranges
SHAPE_SIZE_BANDS: dict[str, Bands] = {"train": ((0.12, 0.33), (0.4, 0.7)), "heldout": ((0.33, 0.4),)}
SHADE_BANDS: dict[str, Bands] = {"train": ((0.9, 1.15),), "heldout": ((0.78, 0.9),)}  # colour brightness factor
SHADE_JITTER = {"train": 35, "heldout": 10}
BACKGROUNDS = {"train": ("flat", "vertical", "horizontal"), "heldout": ("radial",)}
BACKGROUND_MAX_OF = {"train": 90, "heldout": 80}


def check_family(family: object) -> str:
    """The family name, or UsageError listing the allowed values."""
    if not isinstance(family, str) or family not in FAMILIES:
        raise UsageError(f"family must be one of {list(FAMILIES)}, got {family!r}")
    return family


def draw_band(rng: np.random.Generator, bands: Bands, *, log: bool = False) -> float:
    """A value from the union of ``bands``: an interval in proportion to its (log-)width, then uniform in it."""
    f = math.log if log else float
    widths = np.array([f(hi) - f(lo) for lo, hi in bands], dtype=np.float64)
    k = int(rng.choice(len(bands), p=widths / widths.sum()))
    lo, hi = bands[k]
    u = float(rng.uniform(f(lo), f(hi)))
    return math.exp(u) if log else u


def pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]
