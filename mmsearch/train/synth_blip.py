"""The recipe that makes the packaged ``synth-blip``: a tiny BLIP captioner for the synthetic world.

``synth-blip`` is an ordinary transformers ``BlipForConditionalGeneration`` directory (config,
safetensors weights, ``BlipProcessor`` files) with the layout of ``Salesforce/blip-image-captioning-base``
made small, as ``synth-itm`` makes the matcher small (:func:`mmsearch.train.synth_itm.build_model`):
a ViT of 4 layers of width 64 over 8 px patches of 64 px images, and an image-grounded text
*decoder* of 3 layers of width 64 whose every layer cross-attends from the words written so far
to the patches, over a WordPiece vocabulary of the world's words. It loads through the same
``from_pretrained`` calls as the real model.

Its vision tower starts from ``synth-itm``'s (as BLIP's captioner starts from the pre-trained
model; from random weights instead, 1500 steps named the right colour and shape in 0.92 of fresh
frames, against 0.97 with it); the rest starts from random weights. It is trained with BLIP's
captioning loss (the language-modelling loss of ``BlipForConditionalGeneration``: next-token
cross-entropy with label smoothing 0.1) on frames of
the world's ``"train"`` variation family drawn on the fly as for ``synth-coca``
(:func:`mmsearch.train.synth_clip.render_training_frames`): a shape's frame is captioned with its
caption (``"a red circle"``), a frame of background only with
:data:`~mmsearch.train.synth_coca.GAP_CAPTION`. Reproduce the shipped model with::

    python -m mmsearch.train.synth_blip --out mmsearch/assets/synth-blip --init-vision mmsearch/assets/synth-itm \
        --steps 1500 --seed 0 --threads 1

and measure its captions on frames never drawn in training, of the training family and of the
held-out family, with ``python -m mmsearch.train.synth_blip --eval mmsearch/assets/synth-blip``
(the measure of ``synth-coca``: :func:`mmsearch.train.synth_coca.caption_accuracy`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from .contrastive import AdamWCosine, step_logger

__all__ = ["SYNTH_BLIP", "main", "train_synth_blip"]

SYNTH_BLIP = "synth-blip"
POSITIONS = 32  # the decoder's longest sequence: [CLS] and the 20 tokens a caption may have, with room
_TRAIN_STREAM = 7_700_970


def train_synth_blip(
    out_dir: str | os.PathLike,
    *,
    steps: int = 1500,
    batch_size: int = 64,
    seed: int = 0,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    gap_fraction: float = 0.15,
    family: str = "train",
    width: int = 64,
    init_vision: str | os.PathLike | None = None,
    progress: Callable[[int, float, float], None] | None = None,
) -> list[float]:
    """Train ``synth-blip`` from random weights and save it (model + processor) to ``out_dir``; returns the losses.

    Each step: ``batch_size`` frames of shapes with their captions plus ``round(gap_fraction *
    batch_size)`` frames of background captioned :data:`~mmsearch.train.synth_coca.GAP_CAPTION`,
    through ``BlipForConditionalGeneration``'s own loss (the captions as ``labels``, padding ignored).
    AdamW with a linear warm-up and cosine decay. ``init_vision``: a BLIP directory of either head
    (``synth-itm``) whose vision tower starts training, as BLIP's captioner starts from the pre-trained
    model (Li et al. 2022, section 3.3). ``progress(step, loss, token_accuracy)`` is called
    after every step (token accuracy: the share of caption tokens predicted right, teacher-forced).
    """
    import torch

    from ..synth import VISUAL_CAPTIONS
    from .synth_clip import _preprocess, render_training_frames
    from .synth_coca import GAP_CAPTION
    from .synth_itm import build_model, save_model_dir

    torch.manual_seed(seed)
    model, processor = build_model(width, head="BlipForConditionalGeneration", positions=POSITIONS)
    if init_vision is not None:
        from transformers import BlipForImageTextRetrieval

        model.vision_model.load_state_dict(BlipForImageTextRetrieval.from_pretrained(init_vision).vision_model.state_dict())
    model.train()
    optimizer = AdamWCosine(model, lr=lr, weight_decay=weight_decay, steps=steps)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TRAIN_STREAM]))
    n_gaps = int(round(gap_fraction * batch_size))
    history: list[float] = []
    for step in range(steps):
        texts = [VISUAL_CAPTIONS[int(i)] for i in rng.integers(len(VISUAL_CAPTIONS), size=batch_size)]
        pixels = _preprocess(render_training_frames(rng, texts + [None] * n_gaps, family=family))
        tokens = processor.tokenizer(texts + [GAP_CAPTION] * n_gaps, return_tensors="pt", padding=True)
        labels = tokens["input_ids"].masked_fill(tokens["attention_mask"] == 0, -100)
        out = model(pixel_values=pixels, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], labels=labels)
        history.append(optimizer.step(out.loss))
        if progress is not None:
            predicted, wanted = out.logits[:, :-1].argmax(-1), labels[:, 1:]
            right = (predicted == wanted)[wanted != -100]
            progress(step, history[-1], float(right.float().mean()))
    model.eval()
    save_model_dir(model, processor, out_dir)
    return history


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmsearch.train.synth_blip", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="directory to write (e.g. mmsearch/assets/synth-blip)")
    parser.add_argument("--eval", metavar="DIR", help="measure a captioner directory instead of training")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=64, help="width of the vision and text towers")
    parser.add_argument("--init-vision", metavar="DIR", help="start the vision tower from this BLIP directory (e.g. mmsearch/assets/synth-itm)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--log-every", type=int, default=25)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.eval:
        from ..encoders import EncoderSpec, create_encoder
        from .synth_coca import caption_accuracy

        captioner = create_encoder(EncoderSpec("blip-caption", SYNTH_BLIP, os.path.abspath(args.eval)), device="cpu")
        for family in ("train", "heldout"):
            print(json.dumps(caption_accuracy(captioner, seed=args.seed + 1, per_caption=20, family=family)))
        return 0
    if not args.out:
        parser.error("give --out DIR to train, or --eval DIR")
    t0 = time.time()
    report = step_logger(args.steps, args.log_every, ("loss", "token_accuracy"))
    train_synth_blip(args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr, width=args.width,
                     init_vision=args.init_vision, progress=report)
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
