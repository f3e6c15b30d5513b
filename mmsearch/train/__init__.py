"""Training: the one contrastive trainer and the recipes of the tiny models mmsearch ships.

- :mod:`mmsearch.train.contrastive`: :func:`info_nce_loss` (groups or soft targets) and
  :func:`train_contrastive` (AdamW, warm-up and cosine decay with torch's schedulers).
- :mod:`mmsearch.train.synth_clip`: ``synth-clip`` (``python -m mmsearch.train synth-clip``).
- :mod:`mmsearch.train.synth_clap`: ``synth-clap`` (``python -m mmsearch.train.synth_clap``).
- :mod:`mmsearch.train.heldout`: both models measured on the synthetic world's held-out
  variation family (the recipes train on the ``"train"`` family of :mod:`mmsearch.synth.families`).
"""

from __future__ import annotations

from .contrastive import Groups, ProgressFn, info_nce_loss, positive_mask, train_contrastive, warmup_cosine
from .synth_clip import (
    INPUT_SIZE,
    SYNTH_CLIP,
    main,
    render_training_frames,
    save_open_clip_checkpoint,
    synth_clip_batches,
    train_synth_clip,
)

__all__ = [
    "Groups", "INPUT_SIZE", "ProgressFn", "SYNTH_CLIP", "info_nce_loss", "main", "positive_mask",
    "render_training_frames", "save_open_clip_checkpoint", "synth_clip_batches", "train_contrastive",
    "train_synth_clip", "warmup_cosine",
]
