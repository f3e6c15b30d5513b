"""Zero-shot measures of the tiny models on the held-out variation family (issue #14, fault 10).

The recipes train on :mod:`mmsearch.synth`'s ``"train"`` family; these functions
draw balanced sets from the ``"heldout"`` family (parameters the training never
draws: click-less noise-burst beats, chords from frequency ratios, vibrato tones,
band-pass noise, radial backgrounds, darker shades, sizes and tempi in bands cut
out of the training ranges) and score an encoder on them. The test suite and
``benchmarks/synth_heldout.py`` share them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["HELDOUT_STREAM", "heldout_frames", "heldout_sounds", "score_frames", "score_sounds"]

# Evaluation streams: (seed, HELDOUT_STREAM, kind); the recipes' training streams are 7_700_001/2.
HELDOUT_STREAM = 7_700_900


def heldout_sounds(
    seed: int, per_class: int, *, seconds: float = 2.0, sample_rate: int = 22050
) -> tuple[list[np.ndarray], list[str]]:
    """``per_class`` held-out clips of every sound caption (peak 0.1-0.5), in caption order."""
    from ..synth import AUDIO_CAPTIONS, synth_audio_event

    rng = np.random.default_rng(np.random.SeedSequence([seed, HELDOUT_STREAM, 1]))
    clips, labels = [], []
    for caption in AUDIO_CAPTIONS:
        for _ in range(per_class):
            clips.append(synth_audio_event(rng, caption, sample_rate, seconds, family="heldout"))
            labels.append(caption)
    return clips, labels


def heldout_frames(
    seed: int, per_caption: int, *, size: tuple[int, int] = (96, 64)
) -> tuple[np.ndarray, list[str]]:
    """``per_caption`` held-out frames of every visual caption, uint8 ``(N, H, W, 3)``, in caption order."""
    from ..synth import VISUAL_CAPTIONS, sample_image_caption_pairs

    rng = np.random.default_rng(np.random.SeedSequence([seed, HELDOUT_STREAM, 2]))
    frames, labels = [], []
    for caption in VISUAL_CAPTIONS:
        imgs, caps = sample_image_caption_pairs(rng, per_caption, size, captions=[caption], family="heldout")
        frames.append(imgs)
        labels.extend(caps)
    return np.concatenate(frames), labels


def _score(items: np.ndarray, text: np.ndarray, labels: list[str], captions: tuple[str, ...]) -> dict[str, Any]:
    """Item -> caption accuracy and confusions, and text -> item top-1 and precision@n per caption."""
    scores = items @ text.T  # (items, captions)
    truth = np.array([captions.index(c) for c in labels])
    predicted = np.argmax(scores, axis=1)
    confusion = {c: {d: 0 for d in captions} for c in captions}
    for t, p in zip(truth, predicted):
        confusion[captions[t]][captions[p]] += 1
    per_caption = {}
    for j, caption in enumerate(captions):
        n = int((truth == j).sum())
        if not n:
            continue
        order = np.argsort(-scores[:, j], kind="stable")
        per_caption[caption] = {
            "items": n,
            "item_accuracy": float((predicted[truth == j] == j).mean()),
            "text_top1": captions[int(truth[order[0]])],
            f"text_precision@{n}": float((truth[order[:n]] == j).mean()),
        }
    return {
        "items": len(labels),
        "item_accuracy": float((predicted == truth).mean()),
        "text_top1_right": float(np.mean([v["text_top1"] == c for c, v in per_caption.items()])),
        "text_precision@n": float(np.mean([v[f"text_precision@{v['items']}"] for v in per_caption.values()])),
        "per_caption": per_caption,
        "confusion": confusion,
    }


def score_sounds(encoder: Any, clips: list[np.ndarray], labels: list[str], *, sample_rate: int = 22050) -> dict[str, Any]:
    """A CLAP encoder on held-out clips: see :func:`_score` (captions are the 6 sound captions)."""
    from ..synth import AUDIO_CAPTIONS

    audio = encoder.encode_audio(clips, sample_rate=sample_rate)
    return _score(audio, encoder.encode_text(list(AUDIO_CAPTIONS)), labels, AUDIO_CAPTIONS)


def score_frames(encoder: Any, frames: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """A CLIP encoder on held-out frames: see :func:`_score` (captions are the 15 visual captions)."""
    from ..synth import VISUAL_CAPTIONS

    images = encoder.encode_images(frames)
    return _score(images, encoder.encode_text(list(VISUAL_CAPTIONS)), labels, VISUAL_CAPTIONS)
