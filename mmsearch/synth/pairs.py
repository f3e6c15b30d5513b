"""Captioned training pairs drawn on the fly (images and sounds) for the tiny models' trainers."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import UsageError
from .families import Family, check_family
from .sound import synth_audio_event
from .visual import _check_count, _check_dims, degrade_image, render_visual_event
from .vocabulary import (
    AUDIO_CAPTIONS,
    VISUAL_CAPTIONS,
    normalize_audio_caption,
    parse_visual_caption,
)


# --------------------------------------------------------------------------- training pairs
def _check_size(size: Any) -> tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise UsageError(f"size must be a (width, height) pair, got {size!r}")
    _check_dims(size[0], size[1])
    return int(size[0]), int(size[1])


def sample_image_caption_pairs(
    rng: np.random.Generator,
    n: int,
    size: tuple[int, int] = (64, 64),
    *,
    captions: Sequence[str] | None = None,
    vary_aspect: bool = True,
    family: Family = "default",
) -> tuple[np.ndarray, list[str]]:
    """``n`` random single frames of random visual events: uint8 ``(n, H, W, 3)`` and captions.

    ``size`` is ``(width, height)``.  Each image has its own background, shape
    size and position; with ``vary_aspect`` about half are rendered at another
    resolution (0.5-1.5x, aspect within +-10%) and resized to ``size``, which adds
    resampling blur and slight stretching as seen on downscaled video frames.
    ``family`` (:mod:`mmsearch.synth.families`) draws shapes, backgrounds and
    degradations (blur, JPEG, noise) from that variation family.
    """
    from PIL import Image

    _check_count("n", n, lo=0)
    family = check_family(family)  # type: ignore[assignment]
    w, h = _check_size(size)
    pool = tuple(captions) if captions is not None else VISUAL_CAPTIONS
    if not pool:
        raise UsageError("captions must not be empty")
    for c in pool:
        parse_visual_caption(c)
    images = np.empty((n, h, w, 3), dtype=np.uint8)
    labels: list[str] = []
    for i in range(n):
        cap = pool[int(rng.integers(len(pool)))]
        if vary_aspect and rng.random() < 0.5:
            scale = rng.uniform(0.5, 1.5)
            rh = int(max(16, round(h * scale)))
            rw = int(max(16, round(w * scale * rng.uniform(0.9, 1.1))))
            img = render_visual_event(rng, cap, rw, rh, family=family)[0]
            img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
        else:
            img = render_visual_event(rng, cap, w, h, family=family)[0]
        images[i] = degrade_image(rng, img, family)
        labels.append(cap)
    return images, labels


def sample_audio_caption_pairs(
    rng: np.random.Generator,
    n: int,
    sample_rate: int,
    seconds: float,
    *,
    captions: Sequence[str] | None = None,
    family: Family = "default",
) -> tuple[np.ndarray, list[str]]:
    """``n`` random audio events: float32 ``(n, round(seconds*sample_rate))`` and captions.

    ``family`` (:mod:`mmsearch.synth.families`) is the variation family they are drawn from.
    """
    _check_count("n", n, lo=0)
    family = check_family(family)  # type: ignore[assignment]
    _check_count("sample_rate", sample_rate, lo=1000)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise UsageError(f"seconds must be a positive number, got {seconds!r}")
    pool = tuple(normalize_audio_caption(c) for c in captions) if captions is not None else AUDIO_CAPTIONS
    if not pool:
        raise UsageError("captions must not be empty")
    length = max(1, int(round(seconds * sample_rate)))
    out = np.empty((n, length), dtype=np.float32)
    labels: list[str] = []
    for i in range(n):
        cap = pool[int(rng.integers(len(pool)))]
        out[i] = synth_audio_event(rng, cap, sample_rate, seconds, family=family)
        labels.append(cap)
    return out, labels
