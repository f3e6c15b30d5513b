"""Common-space (VATT-style) benchmark: sound query -> video moment, trained heads vs untrained heads.

A corpus pairs 6 visual classes one-to-one with 6 sound classes (a mapping drawn
per corpus and never given to the trainer). For each sound class, fresh clips
from the world (not taken from the corpus) are the queries; a query is right
when the top-1 video moment shows the paired shape at temporal IoU >= 0.5.

    python benchmarks/common_space.py --videos 30 --seed 31 --json benchmarks/results/common_space.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mmsearch  # noqa: E402
from mmsearch.common_space import HeadConfig, train_space  # noqa: E402
from mmsearch.evaluation import best_event  # noqa: E402
from mmsearch.synth import generate_corpus, paired_config, synth_audio_event, write_wav  # noqa: E402


def evaluate(index_dir: Path, queries: list[tuple[str, str, Path]], truth: list[dict]) -> dict:
    idx = mmsearch.open_index(index_dir, device="cpu")
    right = 0
    rows = []
    for sound, shape, wav in queries:
        hits = idx.search(audio=wav, modality="video", k=1)
        top = hits[0] if hits else None
        event, iou = best_event(top.path, top.start, top.end, shape, truth, modality="video") if top else (None, 0.0)
        ok = iou >= 0.5
        right += ok
        rows.append({"sound": sound, "paired_shape": shape, "top": top.to_dict() if top else None, "iou": iou, "right": ok})
    return {"accuracy_iou_0.5": right / len(queries), "queries": len(queries), "per_query": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=30)
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--clips-per-class", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--max-width", type=int, default=480)
    parser.add_argument("--max-height", type=int, default=270)
    parser.add_argument("--work", type=Path, default=None, help="keep the corpus and indexes here")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="mmsearch-common-"))
    config = paired_config(args.seed, 6, max_size=(args.max_width, args.max_height))
    t0 = time.perf_counter()
    truth = generate_corpus(work / "media", videos=args.videos, audio=0, seed=args.seed, config=config)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = work / "index-base"
    if base.exists():
        shutil.rmtree(base)
    mmsearch.index_paths([work / "media"], base, model="synth-clip", device="cpu")
    t_index = time.perf_counter() - t0

    rng = np.random.default_rng(args.seed + 100_000)  # fresh clips, never in the corpus
    queries = []
    (work / "queries").mkdir(exist_ok=True)
    for shape, sound in config.audio_pairing.items():
        for j in range(args.clips_per_class):
            wav = work / "queries" / f"{sound.replace(' ', '-')}-{j}.wav"
            write_wav(wav, synth_audio_event(rng, sound, 16000, float(rng.uniform(3.0, 6.0))), 16000)
            queries.append((sound, shape, wav))

    results = {}
    for name, untrained in (("untrained heads", True), ("trained heads", False)):
        index_dir = work / f"index-{'untrained' if untrained else 'trained'}"
        if index_dir.exists():
            shutil.rmtree(index_dir)
        shutil.copytree(base, index_dir)
        t0 = time.perf_counter()
        report = train_space(index_dir, config=HeadConfig(epochs=args.epochs), untrained=untrained)
        train_s = time.perf_counter() - t0
        results[name] = {**evaluate(index_dir, queries, truth), "train_s": train_s, "pairs": report.pairs, "loss_plot": report.loss_plot}

    machine = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()}
    print(f"machine: {machine['platform']}, {machine['cpus']} CPUs")
    print(f"corpus: {args.videos} videos (seed {args.seed}), generated in {t_gen:.1f}s, indexed in {t_index:.1f}s")
    print(f"pairing (never shown to the trainer): {config.audio_pairing}")
    print(f"{'heads':<16} {'queries':>8} {'top-1 @IoU0.5':>14} {'train s':>8}")
    for name, r in results.items():
        print(f"{name:<16} {r['queries']:>8} {r['accuracy_iou_0.5']:>14.3f} {r['train_s']:>8.1f}")
    print("chance: about 1/6 = 0.167 for the right class, lower for the right moment")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "pairing": config.audio_pairing, "results": results}
        args.json.write_text(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":
    main()
