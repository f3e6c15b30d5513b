"""The recipe that makes the packaged ``synth-clap``: a tiny CLAP trained on the synthetic sounds.

``synth-clap`` is an ordinary transformers CLAP checkpoint directory
(``config.json`` + ``model.safetensors`` + processor files) with a small HTSAT
audio tower, a small RoBERTa-style text tower and a word-level tokenizer built
offline with the ``tokenizers`` library (RoBERTa special tokens ``<s> <pad>
</s> <unk> <mask>`` at ids 0..4, as the real CLAP tokenizer has them). Its
feature extractor works at 16 kHz with 32 mel bins; everything else
(repeat-padding to 10 s, log-mel in dB, one crop for an unfused model) is the
stock ``ClapFeatureExtractor``. It loads through the same
``ClapModel.from_pretrained`` / ``ClapProcessor.from_pretrained`` calls as
``laion/larger_clap_music``.

Training draws windows of a simulated synthetic-world track on the fly (events
of 2-15 s separated by 0-5 s gaps of silence or faint noise, as
:func:`mmsearch.synth.generate_corpus` writes them, with sounds from the world's
``"train"`` variation family: many timbres, envelopes, pitch and tempo ranges,
beat bodies, chord voicings, noise colours, amplitudes, noise floors, band limits
and quantisation; see :mod:`mmsearch.synth.families`), of 1-10 s, and labels each
window with the fraction of it that every caption's events cover. The loss is a
symmetric InfoNCE with *soft* multi-positive targets: a window's target over the
captions is proportional to the coverages, and a caption's target over the
windows of the batch is proportional to how much of each window it fills, so a
caption scores windows it fills completely above windows it only touches (the
moment localizer reads these scores as a curve). Windows no event touches are
negatives only. With 0/1 weights the loss is exactly
:func:`mmsearch.train.contrastive.info_nce_loss` with multi-positive groups (a test checks
it); training runs through the project's one contrastive trainer,
:func:`mmsearch.train.contrastive.train_contrastive`, with the coverages as its target matrix.
Reproduce the shipped model with::

    python -m mmsearch.train.synth_clap --out mmsearch/assets/synth-clap --steps 1000 --seed 0 --threads 1

and measure it on fresh corpora with ``python -m mmsearch.train.synth_clap --eval mmsearch/assets/synth-clap``
(default world) and ``python benchmarks/synth_heldout.py`` (the held-out family).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..encoders.clap import MelFrontEnd  # the encoder's own feature path: training sees identical features
from .contrastive import info_nce_loss, train_contrastive

__all__ = [
    "SYNTH_CLAP",
    "SAMPLE_RATE",
    "FEATURE_EXTRACTOR",
    "AUDIO_CONFIG",
    "TEXT_CONFIG",
    "TEMPLATES",
    "VOCABULARY",
    "build_tokenizer",
    "build_feature_extractor",
    "build_processor",
    "build_config",
    "MelFrontEnd",
    "sample_training_window",
    "synth_clap_batches",
    "soft_info_nce_loss",
    "train_synth_clap",
    "save_clap_directory",
    "evaluate_clap",
    "main",
]

SYNTH_CLAP = "synth-clap"
SAMPLE_RATE = 16_000
# ClapFeatureExtractor settings: 10 s at 16 kHz, hop 20 ms -> 501 frames of 32 mel bins (<= 4 * spec_size / 4).
FEATURE_EXTRACTOR: dict[str, Any] = dict(
    feature_size=32,
    sampling_rate=SAMPLE_RATE,
    hop_length=320,
    max_length_s=10,
    fft_window_size=512,
    frequency_min=0,
    frequency_max=8000,
    truncation="rand_trunc",
    padding="repeatpad",
)
# HTSAT with 8x8 patches on a 128x128 "image" (32 mels x 4 time chunks of 128 frames): 256 tokens,
# three Swin stages of 16x16, 8x8 and 4x4 tokens with 4x4 windows.
AUDIO_CONFIG: dict[str, Any] = dict(
    num_mel_bins=32,
    spec_size=128,
    patch_size=8,
    patch_stride=8,
    patch_embeds_hidden_size=32,
    depths=[2, 2, 2],
    num_attention_heads=[2, 4, 8],
    window_size=4,
    hidden_size=128,  # patch_embeds_hidden_size * 2 ** (stages - 1)
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    drop_path_rate=0.0,
    enable_fusion=False,
    projection_hidden_act="relu",
)
TEXT_MAX_TOKENS = 32
TEXT_CONFIG: dict[str, Any] = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    max_position_embeddings=TEXT_MAX_TOKENS + 2,  # RoBERTa positions start after the padding index (1)
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
PROJECTION_DIM = 64
LOGIT_SCALE = 20.0

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # RoBERTa's ids 0..4
# The captions' words plus common words of sound queries; anything else becomes <unk>.
VOCABULARY: tuple[str, ...] = (
    "a", "an", "the", "of", "and", "with", "in", "on", "some", "this", "that", "is", "it", "to",
    "sound", "sounds", "audio", "clip", "recording", "music", "noise", "noisy", "static", "hiss", "hissing",
    "tone", "tones", "pitch", "pitched", "note", "notes", "sine", "wave", "beep", "whistle", "hum", "buzz",
    "high", "higher", "low", "lower", "deep", "fast", "faster", "quick", "rapid", "slow", "slower",
    "beat", "beats", "beating", "drum", "drums", "drumming", "rhythm", "pulse", "click", "clicks", "knock", "tick",
    "chord", "chords", "harmony", "major", "triad", "piano", "three",
    "loud", "quiet", "soft", "short", "long", "steady", "silence", "silent", "white", "pink", "background",
    "-", ",", ".", "!", "?", "'", "s",
)
# Text forms of a caption seen in training ({cap} = "a high tone", {cls} = "high tone").
TEMPLATES: tuple[str, ...] = ("{cap}", "{cap}", "{cls}", "the sound of {cap}", "a sound of {cls}", "{cls} sound")

# Seeds: training windows come from streams derived from (seed, _TRAIN_STREAM); synth.generate_corpus
# derives its per-file streams from (seed, kind in {0, 1}, index) and evaluation corpora use seeds >= 1000.
_TRAIN_STREAM = 7_700_002
EVAL_SEEDS = (1001, 1002, 1003, 1004, 1005)

ProgressFn = Callable[[int, float], None]


# --------------------------------------------------------------------------- tokenizer, processor, config
def build_tokenizer(vocabulary: Sequence[str] = VOCABULARY) -> Any:
    """A word-level, lower-casing tokenizer with RoBERTa's special tokens and ``<s> ... </s>`` framing."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *vocabulary):
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and punctuation runs
    tok.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=TEXT_MAX_TOKENS,
    )


def build_feature_extractor() -> Any:
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(**FEATURE_EXTRACTOR)


def build_processor() -> Any:
    from transformers import ClapProcessor

    return ClapProcessor(feature_extractor=build_feature_extractor(), tokenizer=build_tokenizer())


def build_config(vocab_size: int | None = None) -> Any:
    from transformers import ClapConfig

    text = dict(TEXT_CONFIG, vocab_size=vocab_size or len(SPECIAL_TOKENS) + len(set(VOCABULARY)))
    text.update(pad_token_id=1, bos_token_id=0, eos_token_id=2, projection_dim=PROJECTION_DIM)
    audio = dict(AUDIO_CONFIG, projection_dim=PROJECTION_DIM)
    return ClapConfig(
        text_config=text,
        audio_config=audio,
        projection_dim=PROJECTION_DIM,
        logit_scale_init_value=LOGIT_SCALE,
    )


# --------------------------------------------------------------------------- data
def sample_training_window(
    rng: np.random.Generator,
    sample_rate: int = SAMPLE_RATE,
    *,
    length: float | None = None,
    family: str = "train",
) -> tuple[np.ndarray, np.ndarray]:
    """A window of a simulated synthetic-world track, and the fraction of it each caption covers.

    The track alternates gaps of 0-5 s (silence, or faint noise in a third of the
    tracks) and events of 2-15 s, never the same caption twice in a row; the window
    (``length`` s, default 10 s for 40 %, 1-3 s for 30 %, else 3-10 s) starts anywhere
    on it. Events come from the variation ``family`` (:mod:`mmsearch.synth.families`):
    with ``"train"`` (the recipe's) peaks are 0.02-0.9, half the tracks carry a
    continuous noise floor, and the window goes through
    :func:`mmsearch.synth.degrade_audio` (band limits of low sample rates and codecs,
    quantisation); with ``"default"`` peaks are 0.05-0.8 and nothing more is done.
    Returns float32 samples and a float32 vector over :data:`mmsearch.synth.AUDIO_CAPTIONS`.
    """
    from ..synth import AUDIO_CAPTIONS, degrade_audio, synth_audio_event
    from ..synth.families import check_family

    check_family(family)
    varied = family != "default"
    if length is None:
        u = rng.random()
        length = 10.0 if u < 0.4 else float(rng.uniform(1.0, 3.0)) if u < 0.7 else float(rng.uniform(3.0, 10.0))
    n = max(1, int(round(length * sample_rate)))
    lead = float(rng.uniform(0.0, 20.0))  # how far into the track the window starts
    w0 = int(round(lead * sample_rate))
    w1 = w0 + n
    gap_noise = float(rng.uniform(0.002, 0.02)) if rng.random() < 1 / 3 else 0.0
    out = (rng.uniform(-gap_noise, gap_noise, n).astype(np.float32) if gap_noise else np.zeros(n, np.float32))
    cover = np.zeros(len(AUDIO_CAPTIONS), dtype=np.float32)
    pos = int(round(rng.uniform(0.0, 5.0) * sample_rate))
    previous = -1
    amp_range = (0.02, 0.9) if varied else (0.05, 0.8)
    while pos < w1:
        length_ev = int(round(rng.uniform(2.0, 15.0) * sample_rate))
        choices = [i for i in range(len(AUDIO_CAPTIONS)) if i != previous]
        cap = choices[int(rng.integers(len(choices)))]
        previous = cap
        s, e = max(pos, w0), min(pos + length_ev, w1)
        if e > s:
            amp = float(rng.uniform(*amp_range))
            event = synth_audio_event(rng, AUDIO_CAPTIONS[cap], sample_rate, length_ev / sample_rate,
                                      amplitude=amp, family=family)
            out[s - w0 : e - w0] = event[s - pos : e - pos]
            cover[cap] += (e - s) / n
        pos += length_ev + int(round(rng.uniform(0.0, 5.0) * sample_rate))
    if varied:
        if rng.random() < 0.5:  # a continuous noise floor (room, hiss) under everything
            out += float(rng.uniform(0.001, 0.015)) * rng.standard_normal(n).astype(np.float32)
        out = degrade_audio(rng, out, sample_rate)
    return out, cover


def synth_clap_batches(
    seed: int, batch_size: int, front_end: MelFrontEnd, *, family: str = "train"
) -> Iterator[tuple[Any, Any]]:
    """Endless ``(features (B, 1, frames, mels), coverage (B, 6))`` training batches."""
    import torch

    rng = np.random.default_rng(np.random.SeedSequence([seed, _TRAIN_STREAM]))
    while True:
        clips, covers = zip(*(sample_training_window(rng, family=family) for _ in range(batch_size)))
        yield front_end(list(clips)), torch.from_numpy(np.stack(covers))


# --------------------------------------------------------------------------- loss and training
def soft_info_nce_loss(audio: Any, text: Any, scale: float, weights: Any) -> Any:
    """Symmetric InfoNCE with soft targets, ``weights[i, j]`` >= 0 how much audio i matches text j:
    :func:`mmsearch.train.contrastive.info_nce_loss` with ``weights``."""
    return info_nce_loss(audio, text, scale, weights=weights)


def train_synth_clap(
    out_dir: str | os.PathLike,
    *,
    steps: int = 1000,
    batch_size: int = 32,
    seed: int = 0,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    progress: ProgressFn | None = None,
    threads: int | None = None,
    family: str = "train",
) -> list[float]:
    """Train ``synth-clap`` from random weights and save it as a CLAP directory at ``out_dir``.

    ``family`` is the variation family of the training sounds (:mod:`mmsearch.synth.families`).
    """
    import torch
    from transformers import ClapModel

    from ..synth import AUDIO_CAPTIONS, AUDIO_CLASSES

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    processor = build_processor()
    tokenizer = processor.tokenizer
    model = ClapModel(build_config(len(tokenizer)))
    model.train()
    front_end = MelFrontEnd(processor.feature_extractor)
    text_rng = np.random.default_rng(np.random.SeedSequence([seed, _TRAIN_STREAM, 1]))
    # The temperature is fixed (LOGIT_SCALE, also stored as the model's logit_scale_a/t init value).
    params = [p for n, p in model.named_parameters() if not n.startswith("logit_scale") and p.requires_grad]
    features = synth_clap_batches(seed, batch_size, front_end, family=family)

    def batches() -> Iterator[tuple[Any, Any, Any]]:  # (mel features, caption tokens, coverage weights)
        while True:
            feats, cover = next(features)
            texts = [
                TEMPLATES[int(text_rng.integers(len(TEMPLATES)))].format(cap=cap, cls=cls)
                for cap, cls in zip(AUDIO_CAPTIONS, AUDIO_CLASSES)
            ]
            yield feats, tokenizer(texts, padding=True, return_tensors="pt"), cover

    history = train_contrastive(
        lambda feats: _pooled(model.get_audio_features(input_features=feats)),
        lambda tokens: _pooled(model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])),
        params,
        batches(),
        steps=steps,
        lr=lr,
        weight_decay=weight_decay,
        logit_scale=LOGIT_SCALE,
        warmup_steps=min(50, steps // 10),
        seed=seed,
        progress=None if progress is None else (lambda step, loss, scale: progress(step, loss)),
    )
    model.eval()
    info = {
        "recipe": "python -m mmsearch.train.synth_clap",
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "lr": lr,
        "weight_decay": weight_decay,
        "logit_scale": LOGIT_SCALE,
        "family": family,
        "final_loss": float(np.mean(history[-20:])) if history else None,
    }
    save_clap_directory(model, processor, out_dir, info=info)
    return history


def _pooled(output: Any) -> Any:
    import torch

    return output if isinstance(output, torch.Tensor) else output.pooler_output


def save_clap_directory(model: Any, processor: Any, out_dir: str | os.PathLike, *, info: dict | None = None) -> Path:
    """``save_pretrained`` model and processor (or a feature extractor alone) into a temp directory beside
    ``out_dir``, then swap it in; ``info`` goes to ``training.json``. Any transformers model directory
    (CLAP, AST) is written this way."""
    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    old: Path | None = None
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        # transformers 4 reads the feature extractor from preprocessor_config.json, 5 from processor_config.json
        if getattr(processor, "feature_extractor", None) is not None:
            processor.feature_extractor.save_pretrained(tmp)
        _portable_tokenizer_config(tmp)
        if info is not None:
            (tmp / "training.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; this directory ships in the package
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists():
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _portable_tokenizer_config(directory: Path) -> None:
    """Name the tokenizer class ``PreTrainedTokenizerFast``, which transformers 4 and 5 both resolve."""
    path = directory / "tokenizer_config.json"
    if path.is_file():
        cfg = json.loads(path.read_text(encoding="utf-8"))
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- evaluation
def evaluate_clap(
    model: str | os.PathLike,
    *,
    seeds: Sequence[int] = EVAL_SEEDS,
    files: int = 6,
    windows: Sequence[tuple[float, float]] = ((10.0, 5.0), (2.0, 1.0)),
    workdir: str | os.PathLike | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Text-to-window retrieval on fresh synthetic corpora (seeds unused in training).

    For every corpus, window size and caption present in it, the caption is the
    query and all non-silent windows of all files are ranked: ``top1_contains``
    counts queries whose best window overlaps an event of that caption,
    ``top1_majority`` those where the event fills at least half of it, and
    ``top1_file`` those whose best file (max over its windows) has the event.
    ``window_accuracy`` is the share of windows mostly (>= 60 %) filled by one
    event whose best caption is that event's.
    """
    from ..audio import iter_audio_windows
    from ..encoders.base import EncoderSpec
    from ..encoders.clap import ClapEncoder
    from ..synth import AUDIO_CAPTIONS, generate_corpus

    encoder = ClapEncoder(EncoderSpec("clap", SYNTH_CLAP, os.fspath(model)), device=device)
    text = encoder.encode_text(list(AUDIO_CAPTIONS))
    stats: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        corpora = []
        for seed in seeds:
            root = Path(tmp) / f"corpus-{seed}"
            rows = generate_corpus(root, videos=0, audio=files, seed=seed)
            corpora.append((root, [r for r in rows if r["modality"] == "audio"]))
        for window, hop in windows:
            key = f"{window:g}s/{hop:g}s"
            per_caption = {c: [0, 0, 0, 0] for c in AUDIO_CAPTIONS}  # queries, contains, majority, file
            win_ok = win_n = 0
            n_windows = 0
            for root, rows in corpora:
                entries: list[tuple[str, float, float]] = []
                clips: list[np.ndarray] = []
                for path in sorted(root.glob("audio_*")):
                    for w in iter_audio_windows(path, sample_rate=encoder.sample_rate, window=window, hop=hop, allow_silent=True):
                        if not w.silent:
                            entries.append((path.name, w.start, w.end))
                            clips.append(w.samples)
                n_windows += len(clips)
                scores = encoder.encode_audio(clips) @ text.T  # (windows, captions)

                def overlap(name: str, a: float, b: float, caption: str) -> float:
                    return sum(
                        max(0.0, min(b, r["end"]) - max(a, r["start"]))
                        for r in rows
                        if r["file"] == name and r["caption"] == caption
                    )

                for j, caption in enumerate(AUDIO_CAPTIONS):
                    if not any(r["caption"] == caption for r in rows):
                        continue
                    best = int(np.argmax(scores[:, j]))
                    name, a, b = entries[best]
                    ov = overlap(name, a, b, caption)
                    file_best: dict[str, float] = {}
                    for (fname, _, _), s in zip(entries, scores[:, j]):
                        file_best[fname] = max(file_best.get(fname, -1.0), float(s))
                    top_file = max(file_best, key=file_best.__getitem__)
                    counts = per_caption[caption]
                    counts[0] += 1
                    counts[1] += ov > 0
                    counts[2] += ov >= 0.5 * (b - a)
                    counts[3] += any(r["file"] == top_file and r["caption"] == caption for r in rows)
                for (name, a, b), row in zip(entries, scores):
                    fills = [overlap(name, a, b, c) / (b - a) for c in AUDIO_CAPTIONS]
                    k = int(np.argmax(fills))
                    if fills[k] >= 0.6:
                        win_n += 1
                        win_ok += int(np.argmax(row)) == k
            queries = sum(v[0] for v in per_caption.values())
            stats[key] = {
                "queries": queries,
                "windows": n_windows,
                "top1_contains": sum(v[1] for v in per_caption.values()) / max(1, queries),
                "top1_majority": sum(v[2] for v in per_caption.values()) / max(1, queries),
                "top1_file": sum(v[3] for v in per_caption.values()) / max(1, queries),
                "window_accuracy": win_ok / max(1, win_n),
                "per_caption_top1_contains": {c: (v[1] / v[0] if v[0] else None) for c, v in per_caption.items()},
            }
    return stats


# --------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmsearch.train.synth_clap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="model directory to write (e.g. mmsearch/assets/synth-clap)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--family", default="train", choices=("train", "default"),
                        help="variation family of the training sounds (mmsearch.synth.families)")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--eval", metavar="DIR", help="evaluate a trained model directory instead of training")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.eval:
        t0 = time.time()
        print(json.dumps(evaluate_clap(args.eval), indent=2))
        print(f"evaluated in {time.time() - t0:.0f}s")
        return 0
    if not args.out:
        parser.error("--out is required when training")
    t0 = time.time()
    c0 = time.process_time()
    recent: list[float] = []

    def report(step: int, loss: float) -> None:
        recent.append(loss)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            print(
                f"step {step + 1}/{args.steps}  loss {sum(recent) / len(recent):.4f}  "
                f"{time.time() - t0:.0f}s wall  {time.process_time() - c0:.0f}s cpu",
                flush=True,
            )
            recent.clear()

    history = train_synth_clap(
        args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr,
        weight_decay=args.weight_decay, progress=report, threads=args.threads or None, family=args.family,
    )
    size = sum(f.stat().st_size for f in Path(args.out).iterdir() if f.is_file())
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) after {len(history)} steps in {time.time() - t0:.0f}s "
          f"({time.process_time() - c0:.0f}s of CPU); mean loss of the last 20 steps {np.mean(history[-20:]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
