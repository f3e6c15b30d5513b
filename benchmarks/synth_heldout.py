"""The tiny models on a held-out variation family of the synthetic world (issue #14, fault 10).

``synth-clip`` and ``synth-clap`` are trained on the ``"train"`` family of
:mod:`mmsearch.synth.families`; everything here is drawn from the ``"heldout"``
family, whose synthesis parameters the training never draws (noise-burst beats
without a click, chords built from frequency ratios, vibrato tones with 2nd/3rd
partials, band-pass noise, decaying envelopes, radial backgrounds, darker
shades; pitches, tempi, chord roots and shape sizes in bands cut out of the
training ranges). Three measures:

* ``sounds``: held-out 2 s clips (22.05 kHz, resampled by the encoder), every
  clip's best caption among the 6 (accuracy and confusions) and every caption's
  best clip (text -> sound top-1, precision@n with n clips per class);
* ``frames``: held-out frames, the same for the 15 visual captions;
* ``common space``: a paired corpus in the held-out family (6 shapes, each
  paired with one sound, never told to the trainer), indexed with synth-clip +
  synth-clap, heads trained with :func:`mmsearch.common_space.train_space`;
  fresh held-out clips (2 per sound class: 12 queries) searched with
  ``modality="video"``; right = the top-1 moment shows the paired shape at
  temporal IoU >= 0.5 (bar 0.9).

``--before DIR`` measures another set of weights too (a copy of an older
``mmsearch/assets``), side by side on the very same data::

    python benchmarks/synth_heldout.py --before /tmp/old-assets --json benchmarks/results/synth_heldout.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, write_json
from common_space import evaluate as evaluate_common_space

BARS = {"common_space_top1": 0.9}


@contextlib.contextmanager
def packaged_assets(directory: Path | None) -> Iterator[None]:
    """Resolve ``mmsearch:`` weights (the presets' packaged files) in ``directory`` instead of the package."""
    if directory is None:
        yield
        return
    from mmsearch.encoders import base

    original = base.packaged_asset

    def from_directory(name: str) -> str:
        path = Path(directory) / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: --before needs a copy of mmsearch/assets")
        return str(path)

    base.packaged_asset = from_directory
    try:
        yield
    finally:
        base.packaged_asset = original


def encoder_scores(args: argparse.Namespace) -> dict[str, Any]:
    from mmsearch.encoders import PRESETS, create_encoder
    from mmsearch.train.heldout import (
        heldout_frames,
        heldout_sounds,
        score_frames,
        score_sounds,
    )

    clips, clip_labels = heldout_sounds(args.seed, args.clips_per_class)
    frames, frame_labels = heldout_frames(args.seed, args.frames_per_caption)
    clap = create_encoder(PRESETS["synth-clap"], device="cpu")
    clip = create_encoder(PRESETS["synth-clip"], device="cpu")
    return {"sounds": score_sounds(clap, clips, clip_labels), "frames": score_frames(clip, frames, frame_labels)}


def common_space(work: Path, name: str, media: Path, queries: list, truth: list[dict], epochs: int) -> dict[str, Any]:
    import mmsearch
    from mmsearch.common_space import HeadConfig, train_space

    index_dir = work / f"index-{name}"
    if index_dir.exists():
        shutil.rmtree(index_dir)
    t0 = time.perf_counter()
    mmsearch.index_paths([media], index_dir, model="synth-clip", device="cpu")
    index_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = train_space(index_dir, config=HeadConfig(epochs=epochs))
    train_s = time.perf_counter() - t0
    return {**evaluate_common_space(index_dir, queries, truth), "index_s": index_s, "train_s": train_s,
            "pairs": report.pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=14, help="seed of the held-out clips, frames and corpus")
    parser.add_argument("--clips-per-class", type=int, default=20, help="held-out sound clips per class")
    parser.add_argument("--frames-per-caption", type=int, default=8)
    parser.add_argument("--videos", type=int, default=30, help="videos of the held-out paired corpus")
    parser.add_argument("--queries-per-class", type=int, default=2, help="common-space sound queries per class")
    parser.add_argument("--epochs", type=int, default=30, help="common-space head training epochs")
    parser.add_argument("--before", type=Path, default=None, help="a copy of an older mmsearch/assets to measure too")
    parser.add_argument("--work", type=Path, default=None, help="keep the corpus and indexes here")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from mmsearch.synth import (
        generate_corpus,
        paired_config,
        synth_audio_event,
        write_wav,
    )

    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="mmsearch-heldout-"))
    work.mkdir(parents=True, exist_ok=True)
    config = paired_config(args.seed, 6, max_size=(480, 270), family="heldout")
    t0 = time.perf_counter()
    truth = generate_corpus(work / "media", videos=args.videos, audio=0, seed=args.seed, config=config)
    generate_s = time.perf_counter() - t0
    rng = np.random.default_rng([args.seed, 100_000])  # fresh clips, never in the corpus
    queries = []
    (work / "queries").mkdir(exist_ok=True)
    for shape, sound in config.audio_pairing.items():
        for j in range(args.queries_per_class):
            wav = work / "queries" / f"{sound.replace(' ', '-')}-{j}.wav"
            clip = synth_audio_event(rng, sound, 22050, float(rng.uniform(3.0, 6.0)), family="heldout")
            write_wav(wav, clip, 22050)
            queries.append((sound, shape, wav))

    models = {"before": args.before, "after": None} if args.before else {"after": None}
    results: dict[str, Any] = {}
    for name, assets in models.items():
        with packaged_assets(assets):
            t0 = time.perf_counter()
            scores = encoder_scores(args)
            scores["encoders_s"] = time.perf_counter() - t0
            scores["common_space"] = common_space(work, name, work / "media", queries, truth, args.epochs)
        results[name] = scores

    machine = machine_info()
    print(f"machine: {describe(machine)}")
    print(f"held-out family, seed {args.seed}: {args.clips_per_class} clips per sound class, "
          f"{args.frames_per_caption} frames per visual caption; paired corpus of {args.videos} videos "
          f"(generated in {generate_s:.0f}s), {len(queries)} sound queries; pairing {config.audio_pairing}")
    names = list(results)
    print(f"\n{'measure':<44}" + "".join(f"{n:>10}" for n in names))

    def row(label: str, values: list[Any]) -> None:
        print(f"{label:<44}" + "".join(f"{v:>10.3f}" if isinstance(v, float) else f"{v!s:>10}" for v in values))

    row("sound clip -> caption accuracy", [results[n]["sounds"]["item_accuracy"] for n in names])
    row("text -> sound precision@n", [results[n]["sounds"]["text_precision@n"] for n in names])
    for caption in results[names[0]]["sounds"]["per_caption"]:
        row(f"  '{caption}': clip accuracy", [results[n]["sounds"]["per_caption"][caption]["item_accuracy"] for n in names])
        row(f"  '{caption}': text top-1 class", [results[n]["sounds"]["per_caption"][caption]["text_top1"].replace("a ", "")
                                                  for n in names])
    row("frame -> caption accuracy (15)", [results[n]["frames"]["item_accuracy"] for n in names])
    row("text -> frame precision@n", [results[n]["frames"]["text_precision@n"] for n in names])
    row(f"common space top-1 @IoU0.5 (bar {BARS['common_space_top1']})",
        [results[n]["common_space"]["accuracy_iou_0.5"] for n in names])
    row("  right / queries", [f"{sum(q['right'] for q in results[n]['common_space']['per_query'])}/{len(queries)}"
                              for n in names])
    print("\nsound confusions (rows: true class, columns: predicted)")
    for n in names:
        print(f"[{n}]")
        for true, counts in results[n]["sounds"]["confusion"].items():
            print(f"  {true:<14} " + ", ".join(f"{p}: {c}" for p, c in counts.items() if c))
    if args.json:
        write_json(args.json, {
            "benchmark": "synth_heldout", "machine": machine, "bars": BARS,
            "args": {k: str(v) for k, v in vars(args).items()}, "pairing": config.audio_pairing,
            "generate_s": generate_s, "results": results,
        })
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
