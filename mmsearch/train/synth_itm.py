"""The recipe that makes the packaged ``synth-itm``: a tiny BLIP image-text matcher for the synthetic world.

``synth-itm`` is an ordinary transformers ``BlipForImageTextRetrieval`` directory (config,
safetensors weights, ``BlipProcessor`` files) with BLIP's architecture made small: a ViT of 4
layers of width 64 over 8 px patches of 64 px images, and an image-grounded text encoder of 3
layers of width 64 whose every layer cross-attends from the words to the patches, over a
WordPiece vocabulary of the world's words (:data:`WORDS`). It loads through the same
``from_pretrained`` calls as ``Salesforce/blip-itm-base-coco``.

It is trained from random weights on frames drawn on the fly
(:func:`mmsearch.train.synth_clip.render_training_frames`): one shape, two shapes side by side
(the setting where a dual encoder confuses which colour goes with which shape), or background
only, each frame with four captions (:func:`draw_pairs`): the shapes on screen, then negatives,
hard ones first (the colour of one shape with the shape of the other, then a shown shape in
another colour or another shape). BLIP's losses: ITM (cross-entropy of the match / no-match
head) plus ITC (each frame's vector against every caption's, towards those on screen), which
teaches the vision tower colours and shapes while ITM learns to bind them. The shipped model is
two runs on the world's default family (the second goes on from the first, its learning rate
schedule restarted, on a stream of frames of its own)::

    python -m mmsearch.train.synth_itm --out /tmp/itm-a --family default --width 64 --steps 6000 --seed 0 --threads 1
    python -m mmsearch.train.synth_itm --out mmsearch/assets/synth-itm --init /tmp/itm-a --family default --width 64 \
        --steps 6000 --seed 1 --threads 2

Measure it on fresh frames with ``python -m mmsearch.train.synth_itm --eval mmsearch/assets/synth-itm``;
``python benchmarks/rerank.py`` measures ``mmsearch query --rerank`` with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .contrastive import AdamWCosine, step_logger

__all__ = ["SYNTH_ITM", "WORDS", "build_model", "draw_pairs", "main", "match_accuracy", "save_model_dir", "train_synth_itm"]

SYNTH_ITM = "synth-itm"
WORDS = ("a", "an", "the", "and", "with", "of", "on", "empty", "background", "shape",
         "red", "green", "blue", "yellow", "white", "circle", "square", "triangle")
_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_TRAIN_STREAM, _EVAL_STREAM = 7_700_960, 7_700_961


def build_model(width: int = 64, *, head: str = "BlipForImageTextRetrieval", positions: int = 16) -> tuple[Any, Any]:
    """A random-weight tiny BLIP (vision and text towers of ``width``; ``head``: the transformers class,
    ``BlipForImageTextRetrieval`` or ``BlipForConditionalGeneration``; ``positions``: the text's longest
    sequence in tokens) and its ``BlipProcessor``, over a WordPiece vocabulary of :data:`WORDS`."""
    import open_clip
    import transformers
    from transformers import BertTokenizerFast, BlipConfig, BlipImageProcessor, BlipProcessor, BlipTextConfig, BlipVisionConfig

    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(_SPECIAL + WORDS)}, do_lower_case=True, model_max_length=16)
    image_processor = BlipImageProcessor(size={"height": 64, "width": 64}, image_mean=list(open_clip.OPENAI_DATASET_MEAN),
                                         image_std=list(open_clip.OPENAI_DATASET_STD))
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    text = BlipTextConfig(vocab_size=len(_SPECIAL) + len(WORDS), hidden_size=width, encoder_hidden_size=width, intermediate_size=4 * width,
                          projection_dim=64, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=positions,
                          pad_token_id=0, bos_token_id=2, sep_token_id=3, eos_token_id=3)
    vision = BlipVisionConfig(hidden_size=width, intermediate_size=4 * width, projection_dim=64, num_hidden_layers=4, num_attention_heads=4,
                              image_size=64, patch_size=8)
    config = BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=64)
    return getattr(transformers, head)(config), processor


def draw_pairs(
    rng: np.random.Generator, n: int, *, family: str = "train", gap_fraction: float = 0.1, texts_per_frame: int = 4
) -> tuple[list[np.ndarray], list[int], list[str], list[int]]:
    """``n`` frames and ``texts_per_frame`` captions for each: ``(frames, frame of each caption, captions,
    labels)``, label 1 when the caption's shape is on screen.

    A frame shows one shape (45 %), two side by side (45 %) or background only (``gap_fraction``).
    Its captions are the shapes on screen, then negatives, hard ones first: with two shapes of
    different colours and shapes, the swapped bindings (one's colour with the other's shape); then
    a shown shape in another colour or another shape; else any caption not shown."""
    from ..synth import SHAPES, VISUAL_CAPTIONS, VISUAL_COLOURS
    from .synth_clip import render_training_frames

    scenes: list[Any] = []
    owner: list[int] = []
    texts: list[str] = []
    labels: list[int] = []
    for i in range(n):
        u = rng.random()
        if u < gap_fraction:
            shown: tuple[str, ...] = ()
        else:
            k = 1 if u < gap_fraction + (1 - gap_fraction) / 2 else 2
            shown = tuple(VISUAL_CAPTIONS[int(j)] for j in rng.choice(len(VISUAL_CAPTIONS), size=k, replace=False))
        hard: list[str] = []
        if len(shown) == 2:
            (c1, s1), (c2, s2) = (tuple(c.split()[1:]) for c in shown)
            hard += [f"a {c1} {s2}", f"a {c2} {s1}"]
        near: list[str] = []
        for caption in shown:
            colour, shape = caption.split()[1:]
            near += [f"a {c} {shape}" for c in VISUAL_COLOURS if c != colour] + [f"a {colour} {s}" for s in SHAPES if s != shape]
        hard = [c for c in dict.fromkeys(hard) if c not in shown]
        near = [c for c in dict.fromkeys(near) if c not in shown and c not in hard]
        rest = [c for c in VISUAL_CAPTIONS if c not in shown and c not in hard and c not in near]
        negatives = hard + [near[j] for j in rng.permutation(len(near))] + [rest[j] for j in rng.permutation(len(rest))]
        chosen = list(shown) + negatives[: max(0, texts_per_frame - len(shown))]
        scenes.append(shown[0] if len(shown) == 1 else (shown or None))
        for caption in chosen:
            owner.append(i)
            texts.append(caption)
            labels.append(int(caption in shown))
    frames = render_training_frames(rng, scenes, family=family)
    return frames, owner, texts, labels


def _inputs(processor: Any, frames: list[np.ndarray], owner: list[int], texts: list[str]) -> dict[str, Any]:
    import open_clip
    import torch

    from ..encoders.clip import preprocess_frames

    pixels = torch.cat([preprocess_frames(f[None], size=64, resize_mode="squash", interpolation="bicubic",
                                          mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD) for f in frames])
    tokens = processor.tokenizer(texts, return_tensors="pt", padding=True)
    return {"pixel_values": pixels, "owner": torch.tensor(owner), "input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


def _itc_loss(model: Any, patches: Any, captions: Any, owner: list[int], texts: list[str], labels: list[int]) -> Any:
    """BLIP's image-text contrastive loss, as an aid: each frame's [CLS] against every world caption's
    unimodal [CLS] (temperature 0.07), cross-entropy towards the captions on screen (frames of
    background only left out). It teaches the vision tower colours and shapes before binding them."""
    import torch
    import torch.nn.functional as F

    from ..synth import VISUAL_CAPTIONS

    image = F.normalize(model.vision_proj(patches[:, 0, :]), dim=-1)
    words = model.text_encoder(input_ids=captions["input_ids"], attention_mask=captions["attention_mask"]).last_hidden_state
    text = F.normalize(model.text_proj(words[:, 0, :]), dim=-1)
    target = torch.zeros(len(image), len(VISUAL_CAPTIONS))
    for i, t, y in zip(owner, texts, labels):
        if y:
            target[i, VISUAL_CAPTIONS.index(t)] = 1.0
    shown = target.sum(1) > 0
    if not bool(shown.any()):
        return image.sum() * 0.0
    logits = image[shown] @ text.T / 0.07
    return torch.sum(-F.log_softmax(logits, dim=-1) * (target[shown] / target[shown].sum(1, keepdim=True)), dim=-1).mean()


def train_synth_itm(
    out_dir: str | os.PathLike,
    *,
    steps: int = 6000,
    batch_size: int = 32,
    seed: int = 0,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    itc_weight: float = 1.0,
    family: str = "default",
    width: int = 64,
    init: str | os.PathLike | None = None,
    progress: Callable[[int, float, float], None] | None = None,
) -> list[float]:
    """Train ``synth-itm`` from random weights and save it (model + processor) to ``out_dir``; returns the losses.
    Each step: ``batch_size`` frames with 4 captions each (:func:`draw_pairs`). ``init``: a matcher
    directory to go on training instead of random weights. ``progress(step, loss, accuracy)`` is called
    after every step."""
    import torch

    torch.manual_seed(seed)
    model, processor = build_model(width)
    if init is not None:  # go on training a matcher written before (a warm restart of the schedule)
        from transformers import BlipForImageTextRetrieval, BlipProcessor

        model, processor = BlipForImageTextRetrieval.from_pretrained(init), BlipProcessor.from_pretrained(init)
    model.train()
    optimizer = AdamWCosine(model, lr=lr, weight_decay=weight_decay, steps=steps)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TRAIN_STREAM]))
    from ..synth import VISUAL_CAPTIONS

    captions = processor.tokenizer(list(VISUAL_CAPTIONS), return_tensors="pt", padding=True)
    history: list[float] = []
    for step in range(steps):
        frames, owner, texts, labels = draw_pairs(rng, batch_size, family=family)
        inputs = _inputs(processor, frames, owner, texts)
        # one pass of the vision tower per frame, shared by both losses (BLIP's ITC and ITM heads)
        patches = model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
        question = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                      encoder_hidden_states=patches[inputs["owner"]]).last_hidden_state
        logits = model.itm_head(question[:, 0, :])
        target = torch.tensor(labels)
        loss = torch.nn.functional.cross_entropy(logits, target) + itc_weight * _itc_loss(model, patches, captions, owner, texts, labels)
        history.append(optimizer.step(loss))
        if progress is not None:
            progress(step, history[-1], float((logits.argmax(-1) == target).float().mean()))
    model.eval()
    save_model_dir(model, processor, out_dir)
    return history


def save_model_dir(model: Any, processor: Any, out_dir: str | os.PathLike) -> Path:
    """``model`` and ``processor`` written by their ``save_pretrained`` into ``out_dir``, each file under
    a temporary name and then renamed (never half-written)."""
    from ..fileio import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mmsearch-model-") as tmp:
        staging = Path(tmp)
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        for name in sorted(os.listdir(staging)):
            data = (staging / name).read_bytes()
            atomic_write(out / name, lambda path, data=data: path.write_bytes(data))
    return out


def match_accuracy(matcher: Any, *, seed: int, n: int, family: str) -> dict[str, Any]:
    """Accuracy of ``matcher`` (probability >= 0.5 means "on screen") on the captions of ``n`` fresh frames
    of :func:`draw_pairs` from ``family``: overall, on the captions shown and on the others."""
    from ..synth import VISUAL_CAPTIONS

    rng = np.random.default_rng(np.random.SeedSequence([seed, _EVAL_STREAM]))
    frames, owner, texts, labels = draw_pairs(rng, n, family=family)
    said = np.concatenate([matcher.match([frames[i]], t) for i, t in zip(owner, texts)]) >= 0.5
    right = said == np.asarray(labels, bool)
    positive = np.asarray(labels, bool)
    assert all(t in VISUAL_CAPTIONS for t in texts)
    return {"family": family, "frames": n, "pairs": len(texts), "accuracy": round(float(right.mean()), 4),
            "positives": round(float(right[positive].mean()), 4), "negatives": round(float(right[~positive].mean()), 4)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmsearch.train.synth_itm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="directory to write (e.g. mmsearch/assets/synth-itm)")
    parser.add_argument("--eval", metavar="DIR", help="measure a matcher directory instead of training")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=32, help="frames per step (4 captions each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--family", default="default", choices=("train", "default"), help="variation family of the training frames")
    parser.add_argument("--width", type=int, default=64, help="width of the vision and text towers")
    parser.add_argument("--init", metavar="DIR", help="go on training this matcher directory (instead of random weights)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--log-every", type=int, default=25)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.eval:
        from ..encoders import EncoderSpec, create_encoder

        matcher = create_encoder(EncoderSpec("blip-itm", SYNTH_ITM, os.path.abspath(args.eval)), device="cpu")
        for family in ("default", "train", "heldout"):
            print(json.dumps(match_accuracy(matcher, seed=args.seed + 1, n=300, family=family)))
        return 0
    if not args.out:
        parser.error("give --out DIR to train, or --eval DIR")
    t0 = time.time()
    report = step_logger(args.steps, args.log_every, ("loss", "accuracy"))
    train_synth_itm(args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr, progress=report,
                    family=args.family, width=args.width, init=args.init)
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
