"""Text-to-audio quality of the shipped synth-clap on a held-out synthetic corpus (issue #4's bar).

Generates audio-only files and videos with soundtracks (a seed the model was
not trained on), indexes them with synth-clip + synth-clap, queries each of the
6 sound captions with ``modality="audio"`` and scores the top-1 result:

* ``top_file``: the top file contains an event of that caption (bar >= 0.95);
* ``iou@0.5``: the top moment overlaps such an event at temporal IoU >= 0.5 (bar >= 0.8);
* ``mean_iou``: mean IoU of the top moment with its best-matching event.

    python benchmarks/audio_quality.py --audio 20 --videos 10 --seed 2024 --json benchmarks/results/audio_quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mmsearch  # noqa: E402
from mmsearch.evaluation import best_event  # noqa: E402
from mmsearch.synth import AUDIO_CAPTIONS, SynthConfig, generate_corpus  # noqa: E402

BARS = {"top_file": 0.95, "iou@0.5": 0.8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=int, default=20)
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2024])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    runs = []
    for seed in args.seeds:
        work = Path(tempfile.mkdtemp(prefix="mmsearch-audio-"))
        config = SynthConfig(max_size=(320, 240), audio_in_video_probability=1.0)
        t0 = time.perf_counter()
        truth = generate_corpus(work / "media", videos=args.videos, audio=args.audio, seed=seed, config=config)
        gen_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = mmsearch.index_paths([work / "media"], work / "index", model="synth-clip", device="cpu")
        index_s = time.perf_counter() - t0
        idx = mmsearch.open_index(work / "index", device="cpu")
        sound = [r for r in truth if r["modality"] == "audio"]
        per_query = []
        for caption in AUDIO_CAPTIONS:
            if not any(r["caption"] == caption for r in sound):
                continue
            for exhaustive in (False, True):
                top = idx.search(caption, modality="audio", k=1, exhaustive=exhaustive)[0]
                event, iou = best_event(top.path, top.start, top.end, caption, sound, modality="audio")
                per_query.append({"caption": caption, "exhaustive": exhaustive, "path": top.path, "start": top.start,
                                  "end": top.end, "top_file": event is not None, "iou": iou})
        for exhaustive in (False, True):
            rows = [q for q in per_query if q["exhaustive"] == exhaustive]
            runs.append({
                "seed": seed, "mode": "exhaustive" if exhaustive else "two-stage", "queries": len(rows),
                "top_file": sum(q["top_file"] for q in rows) / len(rows),
                "iou@0.5": sum(q["iou"] >= 0.5 for q in rows) / len(rows),
                "mean_iou": sum(q["iou"] for q in rows) / len(rows),
                "files": len(report.indexed), "audio_windows": report.audio_windows,
                "generate_s": gen_s, "index_s": index_s, "per_query": rows,
            })
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs"
    print(f"machine: {machine}")
    print(f"{'seed':>6} {'mode':<11} {'queries':>7} {'top file':>9} {'IoU>=0.5':>9} {'mean IoU':>9}")
    for r in runs:
        print(f"{r['seed']:>6} {r['mode']:<11} {r['queries']:>7} {r['top_file']:>9.3f} {r['iou@0.5']:>9.3f} {r['mean_iou']:>9.3f}")
    print(f"bars: top file >= {BARS['top_file']}, IoU>=0.5 in >= {BARS['iou@0.5']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "bars": BARS, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
