"""Query probes: text vectors that stand in for users' queries when a space's vector indexes are tuned.

Users search pictures and sound with words, and a text vector sits apart from the image or sound
vectors it is meant to find (CLIP's modality gap: Liang et al., "Mind the Gap", NeurIPS 2022).
An inverted file tuned only on indexed vectors as queries stops at a setting that serves
such queries poorly (at 1M x 512, recall@10 0.886 on text-like queries against 0.974 tuned on
text-like probes too, ``benchmarks/search.py``). So the ingest stage hands the index a way to
embed the captions below with the space's own text tower
(:meth:`mmsearch.store.IndexWriter.set_query_probes`); the derive stage makes and keeps them when it
first builds a vector index for the space (a small library searched exactly never pays the ~8 s
ViT-B-32's text tower takes for them on 2 cores) and tunes that space's indexes on them as well
(:meth:`mmsearch.indexes.VectorIndex.build`, ``queries=``).

The captions are generic and made from short lists (who, what, where; sound sources and
qualities), like the queries people type, not the world of any test corpus.
"""

from __future__ import annotations

from itertools import product

import numpy as np

from .spaces import AUDIO, VISUAL

__all__ = ["PROBED_SPACES", "probe_captions"]

_WHO = ["a person", "a child", "a woman", "a man", "two people", "a crowd", "a dog", "a cat", "a bird", "a horse", "a car", "a boat"]
_DOING = ["walking", "running", "cooking", "talking", "dancing", "sitting", "playing", "eating", "jumping", "swimming",
          "driving", "reading", "slicing onions", "riding a bike", "singing", "sleeping", "laughing"]
_WHERE = ["in a kitchen", "on a beach", "in a park", "on a street", "in an office", "in the snow", "at night", "in a forest",
          "on a stage", "in a classroom", "by a river", "in the rain", "in a city", "on a mountain"]
_SOUNDS = ["a dog barking", "rain falling", "a piano", "a guitar", "people talking", "a crowd cheering", "birds singing",
           "a car engine", "footsteps", "a baby crying", "waves crashing", "wind blowing", "a door closing", "drums",
           "a violin", "a siren", "thunder", "applause", "a phone ringing", "laughter", "a train passing", "typing on a keyboard",
           "water running", "a bell ringing", "glass breaking", "music with a slow beat", "an orchestra", "a choir", "a cat meowing"]
_QUALITIES = ["", ", loud", ", quiet", ", far away", ", up close"]
_FRAMES = ["{}", "the sound of {}", "{} in the background", "a recording of {}"]

PROBED_SPACES = (VISUAL, AUDIO)  # spaces searched with words from another modality


def probe_captions(space: str, n: int = 200) -> list[str]:
    """``n`` distinct generic captions for queries of ``space`` (``visual``: scenes; ``audio``: sounds),
    the same list every time. Raises ``ValueError`` for a space not in :data:`PROBED_SPACES`."""
    if space == VISUAL:
        made = [f"{who} {doing} {where}" for who, doing, where in product(_WHO, _DOING, _WHERE)]
    elif space == AUDIO:
        made = [frame.format(sound) + quality for sound, quality, frame in product(_SOUNDS, _QUALITIES, _FRAMES)]
    else:
        raise ValueError(f"no query probes for space {space!r}; probed spaces: {', '.join(PROBED_SPACES)}")
    picked = np.random.default_rng(0).permutation(len(made))[:n]  # spread over the combinations
    return [made[i] for i in sorted(picked)]
