"""The recipe that makes the packaged ``synth-clip``: the tiny open_clip model trained on the synthetic world.

:func:`train_synth_clip` trains it from scratch on image/caption pairs drawn on the fly
from :mod:`mmsearch.synth` with :func:`mmsearch.train.contrastive.train_contrastive` and
writes the checkpoint shipped as ``mmsearch/assets/synth-clip.pt``::

    python -m mmsearch.train synth-clip --out mmsearch/assets/synth-clip.pt --steps 500 --seed 0 --threads 1

The frames come from the synthetic world's ``"train"`` variation family (shape sizes and shades,
background gradients and noise, blur and JPEG; :mod:`mmsearch.synth.families`);
``python benchmarks/synth_heldout.py`` measures the model on the held-out family.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write
from .contrastive import ProgressFn, train_contrastive

__all__ = [
    "INPUT_SIZE",
    "SYNTH_CLIP",
    "main",
    "render_training_frames",
    "save_open_clip_checkpoint",
    "synth_clip_batches",
    "train_synth_clip",
]

# Seeds: training draws from streams derived from (seed, _TRAIN_STREAM); synth.generate_corpus
# derives its per-file streams from (seed, kind in {0, 1}, index), so the two never coincide.
# Evaluation corpora additionally use seeds >= 1000 (benchmarks/synth_quality.py, tests).
_TRAIN_STREAM = 7_700_001


# --------------------------------------------------------------------------- synth-clip data
SYNTH_CLIP = "synth-clip"
INPUT_SIZE = 64  # the model's image size; the decoder scales frames so their short side is this


def _world_size(rng: np.random.Generator) -> tuple[int, int]:
    """A video size as the default synthetic world draws it: 160x120..1280x720, aspects 1..1.9."""
    h = 2 * int(rng.integers(60, 361))
    aspect = float(rng.choice([4 / 3, 16 / 9, 3 / 2, 1.0, rng.uniform(1.0, 1.9)]))
    w = min(max(int(round(h * aspect)), 160), 1280)
    return w - (w % 2), h


def render_training_frames(
    rng: np.random.Generator,
    captions: Sequence[str | tuple[str, str] | None],
    *,
    max_render_short: int = 200,
    max_noise_sigma: float = 3.0,
    family: str = "train",
) -> list[np.ndarray]:
    """One decoded-looking frame per caption (None = background only, a gap between events; a pair of
    captions = two shapes on screen together, one in each half of the frame).

    A video size is drawn as the synthetic world draws it; the frame is rendered at
    that size or, to keep training cheap, at a reduced size whose short side is at
    most ``max_render_short`` (same aspect, same relative shape size and position),
    then scaled so its short side is 64 px with PIL's bilinear filter, as the
    decoder does (``media.scaled_size``). The world's gaussian background noise
    (sigma 4 at full resolution) is mostly averaged away by that downscale (and by
    the video codec), so it is added after it, with a random sigma up to
    ``max_noise_sigma``: far cheaper than drawing noise at full resolution.

    ``family`` (:mod:`mmsearch.synth.families`) draws shapes (sizes, shades), backgrounds
    (gradients, noise) and degradations (blur, JPEG) from that variation family; with
    ``"default"`` backgrounds are flat dark colours and frames are not degraded.
    """
    from PIL import Image

    from ..media import scaled_size
    from ..synth import degrade_image, random_background_colour, render_family_background, render_visual_event
    from ..synth.visual import random_halves
    from ..synth.families import check_family

    check_family(family)

    out = []
    for cap in captions:
        w, h = _world_size(rng)
        short = min(w, h)
        render_short = int(rng.integers(INPUT_SIZE, max(INPUT_SIZE, min(short, max_render_short)) + 1))
        scale = render_short / short
        rw, rh = max(16, int(round(w * scale))), max(16, int(round(h * scale)))
        if family == "default":
            img = np.empty((rh, rw, 3), np.uint8)
            img[:] = random_background_colour(rng)
        else:
            img = render_family_background(rng, rw, rh, 1, family=family)[0]
        if isinstance(cap, str):
            img = render_visual_event(rng, cap, rw, rh, 1, img, family=family)[0]
        elif cap:  # shapes on screen together: each in its own half of the frame, in a random order
            for one, region in zip(cap, random_halves(rng)):
                img = render_visual_event(rng, one, rw, rh, 1, img, family=family, region=region)[0]
        tw, th = scaled_size(w, h, INPUT_SIZE)
        if (rw, rh) != (tw, th):
            img = np.array(Image.fromarray(img).resize((tw, th), Image.Resampling.BILINEAR))
        sigma = float(rng.uniform(0.0, max_noise_sigma))
        if sigma > 0:
            noisy = img.astype(np.float32) + sigma * rng.standard_normal(img.shape, dtype=np.float32)
            img = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        out.append(degrade_image(rng, img, family))
    return out


def _preprocess(frames: list[np.ndarray]) -> Any:
    """The inference path: :func:`mmsearch.encoders.clip.preprocess_frames` (squash to 64, bicubic)."""
    import open_clip
    import torch

    from ..encoders.clip import preprocess_frames

    kw = dict(
        size=INPUT_SIZE, resize_mode="squash", interpolation="bicubic",
        mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD,
    )
    return torch.cat([preprocess_frames(f[None], **kw) for f in frames])


def synth_clip_batches(
    seed: int,
    batch_size: int,
    *,
    gap_fraction: float = 0.15,
    captions: Sequence[str] | None = None,
    family: str = "train",
) -> Iterator[tuple[Any, list[str], tuple[list[int], list[int]]]]:
    """Endless ``(images, captions, (groups_a, groups_b))`` batches for synth-clip.

    ``batch_size`` (image, caption) pairs with captions drawn uniformly from
    ``captions`` (default all 15), plus ``round(gap_fraction * batch_size)``
    background-only images that match no caption (group -1): extra negatives that
    push text-to-gap similarity down. Images are preprocessed tensors (the
    inference path); the group id of a pair is its caption's index in the pool.
    ``family`` is the variation family the frames are drawn from (see :func:`render_training_frames`).
    """
    from ..synth import VISUAL_CAPTIONS, parse_visual_caption

    pool = tuple(captions or VISUAL_CAPTIONS)
    for c in pool:
        parse_visual_caption(c)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TRAIN_STREAM]))
    n_gaps = int(round(gap_fraction * batch_size))
    while True:
        ids = [int(i) for i in rng.integers(len(pool), size=batch_size)]
        texts = [pool[i] for i in ids]
        frames = render_training_frames(rng, texts + [None] * n_gaps, family=family)
        yield _preprocess(frames), texts, (ids + [-1] * n_gaps, ids)


# --------------------------------------------------------------------------- synth-clip training
def save_open_clip_checkpoint(model: Any, out_path: str | os.PathLike, *, half: bool = True) -> Path:
    """Write ``{"state_dict": ...}`` (fp16 floats when ``half``) atomically: temp file, then os.replace."""
    import torch

    final = Path(out_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
        for k, v in model.state_dict().items()
    }
    # Serialise to memory first: torch.save names the zip archive after a file's name, and the
    # temp name is random, so saving to it directly would make identical weights differ in bytes
    # (and in the sha256 an index records for its encoder).
    buf = io.BytesIO()
    torch.save({"state_dict": state}, buf)
    atomic_write(final, lambda tmp: tmp.write_bytes(buf.getvalue()))  # readable as any new file is
    return final


def train_synth_clip(
    out_path: str | os.PathLike,
    *,
    steps: int = 500,
    batch_size: int = 128,
    seed: int = 0,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    logit_scale: float | None = 10.0,
    gap_fraction: float = 0.15,
    progress: ProgressFn | None = None,
    family: str = "train",
) -> list[float]:
    """Train ``synth-clip`` from random weights on synthetic pairs and save it to ``out_path``.

    ``logit_scale`` None learns CLIP's temperature; a number fixes it. A moderate
    fixed scale (10) keeps the loss pushing until positives sit near cosine 1 and
    negatives (other captions, background frames) near or below 0, rather than stopping
    at a small margin as a large or learnt scale does: the moment localizer and the
    mean-frame ranking rely on those wide gaps. ``family`` is the variation family of
    the training frames (:mod:`mmsearch.synth.families`). Returns the loss history.
    """
    import open_clip
    import torch

    from ..encoders.clip import register_packaged_configs
    from ..synth import VISUAL_CAPTIONS

    register_packaged_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model(SYNTH_CLIP)
    model.train()
    tokenizer = open_clip.get_tokenizer(SYNTH_CLIP)
    order = {c: i for i, c in enumerate(VISUAL_CAPTIONS)}

    def encode_images(images: Any) -> Any:
        return model.encode_image(images)

    def encode_captions(texts: list[str]) -> Any:
        # only 15 distinct captions: encode each once, then gather (same result, far cheaper)
        unique = sorted(set(texts), key=lambda t: (order.get(t, len(order)), t))
        emb = model.encode_text(tokenizer(unique))
        row = {c: k for k, c in enumerate(unique)}
        return emb[torch.tensor([row[t] for t in texts])]

    if logit_scale is None:
        scale: Any = model.logit_scale
        params = [p for n, p in model.named_parameters() if n != "logit_scale"]
    else:
        scale = float(logit_scale)
        model.logit_scale.requires_grad_(False)
        with torch.no_grad():
            model.logit_scale.fill_(math.log(scale))
        params = [p for n, p in model.named_parameters() if n != "logit_scale"]
    batches = synth_clip_batches(seed, batch_size, gap_fraction=gap_fraction, family=family)
    history = train_contrastive(
        encode_images, encode_captions, params, batches,
        steps=steps, lr=lr, weight_decay=weight_decay, logit_scale=scale, seed=seed, progress=progress,
    )
    model.eval()
    save_open_clip_checkpoint(model, out_path)
    return history


# --------------------------------------------------------------------------- command line
def _cpu_seconds() -> float:
    try:
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime
    except ImportError:  # not on every platform
        return float("nan")


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmsearch.train", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="recipe", required=True)
    p = sub.add_parser(SYNTH_CLIP, help="train the packaged synth-clip model on the synthetic world")
    p.add_argument("--out", required=True, help="checkpoint to write (e.g. mmsearch/assets/synth-clip.pt)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--logit-scale", type=float, default=10.0, help="fixed logit scale; 0 = learn it")
    p.add_argument("--gap-fraction", type=float, default=0.15, help="background-only images per pair")
    p.add_argument("--family", default="train", choices=("train", "default"),
                   help="variation family of the training frames (mmsearch.synth.families)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--log-every", type=int, default=25)
    args = parser.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t0 = time.time()
    recent: list[float] = []

    def report(step: int, loss: float, scale: float) -> None:
        recent.append(loss)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            mean = sum(recent) / len(recent)
            recent.clear()
            print(f"step {step + 1}/{args.steps}  loss {mean:.4f}  scale {scale:.1f}  {time.time() - t0:.0f}s", flush=True)

    history = train_synth_clip(
        args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr,
        weight_decay=args.weight_decay, logit_scale=args.logit_scale or None,
        gap_fraction=args.gap_fraction, progress=report, family=args.family,
    )
    size = os.path.getsize(args.out)
    cpu = _cpu_seconds()
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) after {len(history)} steps in {time.time() - t0:.0f}s wall, "
          f"{cpu:.0f}s CPU ({os.cpu_count()} CPUs, {_torch_threads()} torch threads); "
          f"final loss {history[-1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
