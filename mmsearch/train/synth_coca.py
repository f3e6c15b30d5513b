"""The recipe that makes the packaged ``synth-coca``: a tiny open_clip CoCa captioning the synthetic world.

``synth-coca`` is an ordinary open_clip model config (``mmsearch/assets/synth-coca.json``: the
``coca_ViT-B-32`` layout made small, 64 px images in 8 px patches, 3 vision layers of width
64, an attentional pooler of 16 queries, text and multimodal towers of width 32 over
open_clip's own tokenizer) plus checkpoint, loaded by the same ``create_model_and_transforms``
call as ``coca_ViT-B-32``. It is trained from random weights with open_clip's ``CoCaLoss``
(contrastive loss weight 1, captioning loss weight 2, open_clip's defaults for CoCa) on frames
of the world's ``"train"`` variation family drawn on the fly as for ``synth-clip``
(:func:`mmsearch.train.synth_clip.synth_clip_batches`): a shape's frame is captioned with its
caption (``"a red circle"``), a frame of background only with :data:`GAP_CAPTION`.
Reproduce the shipped model with::

    python -m mmsearch.train.synth_coca --out mmsearch/assets/synth-coca.pt --steps 600 --seed 0 --threads 1

and measure the captions it writes for frames never drawn in training, of the training family
and of the held-out family (:mod:`mmsearch.synth.families`), with
``python -m mmsearch.train.synth_coca --eval mmsearch/assets/synth-coca.pt``;
``python benchmarks/captions.py`` measures the captions mmsearch stores for indexed videos.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .contrastive import AdamWCosine, step_logger
from .synth_clip import save_open_clip_checkpoint, synth_clip_batches

__all__ = ["GAP_CAPTION", "SYNTH_COCA", "caption_accuracy", "main", "train_synth_coca"]

SYNTH_COCA = "synth-coca"
GAP_CAPTION = "an empty background"  # what synth-coca says of a frame with no shape on it
_EVAL_STREAM = 7_700_950


def train_synth_coca(
    out_path: str | os.PathLike,
    *,
    steps: int = 600,
    batch_size: int = 64,
    seed: int = 0,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    gap_fraction: float = 0.15,
    caption_loss_weight: float = 2.0,
    clip_loss_weight: float = 1.0,
    family: str = "train",
    progress: Callable[[int, float, float], None] | None = None,
) -> list[float]:
    """Train ``synth-coca`` from random weights and save it to ``out_path``; returns the loss history.

    Each step: ``batch_size`` frames of shapes with their captions plus ``round(gap_fraction *
    batch_size)`` frames of background captioned :data:`GAP_CAPTION`, through open_clip's
    ``CoCaLoss`` (teacher-forced next-token cross-entropy over the caption, plus the contrastive
    loss of the image and text embeddings). AdamW with a linear warm-up and cosine decay.
    ``progress(step, contrastive_loss, caption_loss)`` is called after every step.
    """
    import open_clip
    import torch
    from open_clip.loss import CoCaLoss

    from ..encoders.clip import register_packaged_configs

    register_packaged_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model(SYNTH_COCA)
    model.train()
    tokenizer = open_clip.get_tokenizer(SYNTH_COCA)
    loss_fn = CoCaLoss(caption_loss_weight=caption_loss_weight, clip_loss_weight=clip_loss_weight, pad_id=model.pad_id)
    optimizer = AdamWCosine(model, lr=lr, weight_decay=weight_decay, steps=steps)
    batches = synth_clip_batches(seed, batch_size, gap_fraction=gap_fraction, family=family)
    history: list[float] = []
    for step in range(steps):
        images, texts, _ = next(batches)
        texts = texts + [GAP_CAPTION] * (len(images) - len(texts))
        out = model(images, tokenizer(texts))
        contrastive, captioning = loss_fn(out["image_features"], out["text_features"], out["logits"], out["labels"],
                                          out["logit_scale"])
        history.append(optimizer.step(contrastive + captioning))
        if progress is not None:
            progress(step, float(contrastive.detach()), float(captioning.detach()))
    model.eval()
    save_open_clip_checkpoint(model, out_path)
    return history


def caption_accuracy(captioner: Any, *, seed: int, per_caption: int, family: str) -> dict[str, Any]:
    """Captions of ``per_caption`` fresh frames of every world caption (and as many background frames)
    from ``family``: the share that is exactly right, the share naming the right colour and shape,
    and the background frames captioned :data:`GAP_CAPTION`. Frames are drawn as for training
    (:func:`mmsearch.train.synth_clip.render_training_frames`), from a stream training never uses."""
    from ..synth import VISUAL_CAPTIONS, parse_visual_caption
    from .synth_clip import render_training_frames

    rng = np.random.default_rng(np.random.SeedSequence([seed, _EVAL_STREAM]))
    wanted: list[str | None] = [c for c in VISUAL_CAPTIONS for _ in range(per_caption)] + [None] * per_caption
    frames = render_training_frames(rng, wanted, family=family)
    said = captioner.caption(frames)
    exact = named = gaps = 0
    wrong: dict[str, int] = {}
    for want, got in zip(wanted, said):
        if want is None:
            gaps += got == GAP_CAPTION
            continue
        colour, shape = parse_visual_caption(want)
        words = set(got.split())
        exact += got == want
        named += colour in words and shape in words
        if got != want:
            wrong[f"{want} -> {got}"] = wrong.get(f"{want} -> {got}", 0) + 1
    n = len(VISUAL_CAPTIONS) * per_caption
    return {"family": family, "frames": n, "exact": exact / n, "names_colour_and_shape": named / n,
            "background_frames": per_caption, "background_right": gaps / per_caption,
            "confusions": dict(sorted(wrong.items(), key=lambda kv: -kv[1])[:10])}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmsearch.train.synth_coca", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="checkpoint to write (e.g. mmsearch/assets/synth-coca.pt)")
    parser.add_argument("--eval", metavar="CHECKPOINT", help="measure a checkpoint instead of training")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--log-every", type=int, default=25)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.eval:
        from ..encoders import create_encoder
        from ..encoders.base import EncoderSpec

        captioner = create_encoder(EncoderSpec("coca", SYNTH_COCA, os.path.abspath(args.eval), {"image_resize_mode": "squash"}),
                                   device="cpu")
        for family in ("train", "heldout"):
            print(json.dumps(caption_accuracy(captioner, seed=args.seed + 1, per_caption=20, family=family)))
        return 0
    if not args.out:
        parser.error("give --out CHECKPOINT to train, or --eval CHECKPOINT")
    t0 = time.time()
    report = step_logger(args.steps, args.log_every, ("contrastive", "caption"))
    train_synth_coca(args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr, progress=report)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB) in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
