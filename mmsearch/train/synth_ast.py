"""The recipe that makes the packaged ``synth-ast``: a tiny Audio Spectrogram Transformer tagging the world's sounds.

``synth-ast`` is an ordinary transformers ``ASTForAudioClassification`` directory
(``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``) with the
architecture of AST (Gong et al., Interspeech 2021: a ViT over 16x16 patches of a
Kaldi log-mel filterbank, patches overlapping by 6 in both axes) made small: 64 mel bins,
256 frames of 10 ms (the first 2.56 s of a clip; the ``synth-clap`` preset cuts sound
into 2 s windows), 3 layers of width 64. Its six labels are the synthetic world's sound
classes (:data:`mmsearch.synth.AUDIO_CLASSES`). It loads through the same
``ASTForAudioClassification.from_pretrained`` call as
``MIT/ast-finetuned-audioset-10-10-0.4593``.

Training draws windows of a simulated synthetic-world track on the fly with
:func:`mmsearch.train.synth_clap.sample_training_window` (the world's ``"train"``
variation family: many timbres, envelopes, pitch and tempo ranges, amplitudes,
noise floors and codecs), 2 s long (60 %) or 1-2.5 s, and teaches each label the
share of the window its class fills (binary cross-entropy with soft targets, as AST is
trained on AudioSet's multi-label targets), so a probability of 0.5 means "fills
about half the window". Reproduce the shipped model with::

    python -m mmsearch.train.synth_ast --out mmsearch/assets/synth-ast --steps 1500 --seed 0 --threads 1

and measure it on windows never drawn in training, of the training family and of the
held-out family (:mod:`mmsearch.synth.families`) with ``python -m mmsearch.train.synth_ast
--eval mmsearch/assets/synth-ast``; ``python benchmarks/sound_tags.py`` measures the
tags mmsearch stores for indexed files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..encoders.clap import _quiet_loading
from .contrastive import AdamWCosine
from .synth_clap import SAMPLE_RATE, sample_training_window, save_clap_directory

__all__ = ["SYNTH_AST", "FEATURE_EXTRACTOR", "MODEL_CONFIG", "PRESENT_SHARE", "build_feature_extractor", "build_config",
           "sample_window", "train_synth_ast", "evaluate_tagger", "f1_scores", "main"]

SYNTH_AST = "synth-ast"
FEATURE_EXTRACTOR: dict[str, Any] = dict(sampling_rate=SAMPLE_RATE, num_mel_bins=64, max_length=256)
MODEL_CONFIG: dict[str, Any] = dict(
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=256,
    patch_size=16,
    frequency_stride=10,
    time_stride=10,
    num_mel_bins=64,
    max_length=256,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
PRESENT_SHARE = 0.5  # a class is in a window (the truth tags are scored against) when it fills at least half of it
_TRAIN_STREAM = 7_700_003
_EVAL_STREAM = 7_700_903
ProgressFn = Callable[[int, float], None]


def build_feature_extractor() -> Any:
    from transformers import ASTFeatureExtractor

    return ASTFeatureExtractor(**FEATURE_EXTRACTOR)


def build_config() -> Any:
    from transformers import ASTConfig

    from ..synth import AUDIO_CLASSES

    labels = dict(enumerate(AUDIO_CLASSES))
    return ASTConfig(**MODEL_CONFIG, id2label=labels, label2id={v: k for k, v in labels.items()},
                     problem_type="multi_label_classification")


def sample_window(rng: np.random.Generator, *, family: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """A training window (2 s for 60 %, else 1-2.5 s) at 16 kHz and the share of it each class fills, float32 (6,)."""
    length = 2.0 if rng.random() < 0.6 else float(rng.uniform(1.0, 2.5))
    return sample_training_window(rng, SAMPLE_RATE, length=length, family=family)


def _batches(rng: np.random.Generator, batch_size: int, extractor: Any, family: str) -> Iterator[tuple[Any, Any]]:
    import torch

    while True:
        clips, cover = zip(*(sample_window(rng, family=family) for _ in range(batch_size)))
        feats = extractor(list(clips), sampling_rate=SAMPLE_RATE, return_tensors="pt")["input_values"]
        yield feats, torch.from_numpy(np.clip(np.stack(cover), 0.0, 1.0))


def train_synth_ast(
    out_dir: str | os.PathLike,
    *,
    steps: int = 1500,
    batch_size: int = 32,
    seed: int = 0,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    progress: ProgressFn | None = None,
    threads: int | None = None,
    family: str = "train",
) -> list[float]:
    """Train ``synth-ast`` from random weights and save it as an AST directory at ``out_dir``; returns the losses."""
    import torch
    from transformers import ASTForAudioClassification

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    extractor = build_feature_extractor()
    model = ASTForAudioClassification(build_config())
    model.train()
    optimizer = AdamWCosine(model, lr=lr, weight_decay=weight_decay, steps=steps, warmup=min(100, steps // 10), max_grad_norm=1.0)
    batches = _batches(np.random.default_rng(np.random.SeedSequence([seed, _TRAIN_STREAM])), batch_size, extractor, family)
    history: list[float] = []
    for step in range(steps):
        feats, target = next(batches)
        logits = model(input_values=feats).logits
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        history.append(optimizer.step(loss))
        if progress is not None:
            progress(step, history[-1])
    model.eval()
    info = {"recipe": "python -m mmsearch.train.synth_ast", "steps": steps, "batch_size": batch_size, "seed": seed,
            "lr": lr, "weight_decay": weight_decay, "family": family,
            "final_loss": float(np.mean(history[-20:])) if history else None}
    with _quiet_loading():
        save_clap_directory(model, extractor, out_dir, info=info)
    return history


def f1_scores(probs: np.ndarray, cover: np.ndarray, threshold: float, labels: Sequence[str]) -> dict[str, Any]:
    """Micro F1, precision and recall of tags (``probs >= threshold``) against the truth
    (``cover >= PRESENT_SHARE``) over every (window, class) pair, and F1 per class."""
    pred, true = np.asarray(probs) >= threshold, np.asarray(cover) >= PRESENT_SHARE

    def f1(p: np.ndarray, t: np.ndarray) -> tuple[float, float, float]:
        tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        return (2 * precision * recall / (precision + recall) if precision + recall else 0.0), precision, recall

    micro, precision, recall = f1(pred, true)
    return {"f1": round(micro, 4), "precision": round(precision, 4), "recall": round(recall, 4), "windows": int(len(pred)),
            "per_class_f1": {name: round(f1(pred[:, i], true[:, i])[0], 4) for i, name in enumerate(labels)}}


def evaluate_tagger(model: str, *, windows: int = 600, seed: int = 0, families: Sequence[str] = ("train", "heldout")) -> dict[str, Any]:
    """F1 of a tagger's tags on fresh 2 s windows of each variation family (a stream training never draws from)."""
    from ..encoders import create_encoder, resolve_spec

    tagger = create_encoder(resolve_spec(model, None, family="ast"), device="cpu")
    out: dict[str, Any] = {"model": str(model), "threshold": tagger.threshold, "present_share": PRESENT_SHARE}
    for family in families:
        rng = np.random.default_rng(np.random.SeedSequence([seed, _EVAL_STREAM, len(family)]))
        clips, cover = zip(*(sample_training_window(rng, SAMPLE_RATE, length=2.0, family=family) for _ in range(windows)))
        probs = tagger.predict(list(clips), sample_rate=SAMPLE_RATE)
        out[family] = f1_scores(probs, np.stack(cover), tagger.threshold, tagger.labels)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmsearch.train.synth_ast", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="model directory to write (e.g. mmsearch/assets/synth-ast)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval", metavar="DIR", help="evaluate a trained model directory (or name) instead of training")
    parser.add_argument("--windows", type=int, default=600, help="windows per family for --eval")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.eval:
        t0 = time.time()
        print(json.dumps(evaluate_tagger(args.eval, windows=args.windows), indent=2))
        print(f"evaluated in {time.time() - t0:.0f}s")
        return 0
    if not args.out:
        parser.error("--out is required when training")
    t0 = time.time()
    recent: list[float] = []

    def report(step: int, loss: float) -> None:
        recent.append(loss)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps}  loss {sum(recent) / len(recent):.4f}  {time.time() - t0:.0f}s", flush=True)
            recent.clear()

    history = train_synth_ast(args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr,
                              progress=report, threads=args.threads or None)
    size = sum(f.stat().st_size for f in Path(args.out).iterdir() if f.is_file())
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) after {len(history)} steps in {time.time() - t0:.0f}s; "
          f"mean loss of the last 20 steps {np.mean(history[-20:]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
