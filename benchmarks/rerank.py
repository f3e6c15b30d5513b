"""Cross-attention re-ranking (issue #19): does `mmsearch query --rerank` raise moment P@1 where shapes appear together, and what does it cost.

    python benchmarks/rerank.py --json benchmarks/results/rerank.json

Fresh synthetic corpora (seeds never used in training) in two settings, side by side:

* ``together``: the issue's harder world, ``SynthConfig(companion_probability=0.7)``: most
  shapes share the screen with a second shape of another caption (each its own ground-truth
  event), so a frame of "a red square and a blue circle" is close to "a red circle" for a
  dual encoder, which compares pooled vectors and does not bind colour to shape;
* ``alone``: the default world (one shape at a time), to see that re-ranking costs nothing there.

Each corpus is indexed as a user would (``index_paths`` with ``synth-clip``, no sound or words).
For every caption a corpus shows, ``search(caption, modality="video", k=1)`` plain and with
``rerank=True`` (``synth-itm``: the tiny BLIP image-text matcher, the best 20 moments scored
again): P@1 = the top moment overlaps an event of the query in its file with IoU >= 0.5; mean
IoU with the best such event; and the wall time per query (median, after a warm-up query), the
difference being what re-ranking adds. The matcher alone is also timed on one frame at the
architecture of ``Salesforce/blip-itm-base-coco`` (BLIP base, 384 px; random weights saved
and loaded through the same path): seconds per re-ranked query of 20 moments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, write_json  # noqa: E402

IOU = 0.5
SETTINGS = {"together": 0.7, "alone": 0.0}  # companion_probability


def _best_iou(hit: Any, gt: list[dict], corpus: Path, caption: str) -> float:
    from mmsearch.metrics import temporal_iou

    file = os.path.relpath(hit.path, corpus)
    return max((temporal_iou((hit.start, hit.end), (r["start"], r["end"])) for r in gt
                if r["file"] == file and r["modality"] == "video" and r["caption"] == caption), default=0.0)


def quality(work: Path, seeds: list[int], videos: int, setting: str) -> dict[str, Any]:
    from mmsearch.api import index_paths, open_index
    from mmsearch.synth import SynthConfig, generate_corpus, load_ground_truth

    rows: dict[str, dict[str, list[float]]] = {"plain": {"iou": [], "seconds": []}, "rerank": {"iou": [], "seconds": []}}
    for seed in seeds:
        corpus = work / f"corpus-{seed}"
        generate_corpus(corpus, videos=videos, audio=0, seed=seed, config=SynthConfig(companion_probability=SETTINGS[setting]))
        gt = load_ground_truth(corpus)
        index_paths([corpus], work / f"index-{seed}", model="synth-clip", audio=False, speech=False, ocr=False, freeze_text=False)
        idx = open_index(work / f"index-{seed}", device="cpu")
        captions = sorted({r["caption"] for r in gt if r["modality"] == "video"})
        idx.search(captions[0], modality="video", k=1, rerank=True)  # warm-up: encoders and matcher loaded
        for caption in captions:
            for name, rerank in (("plain", False), ("rerank", True)):
                t0 = time.perf_counter()
                hits = idx.search(caption, modality="video", k=1, rerank=rerank)
                rows[name]["seconds"].append(time.perf_counter() - t0)
                rows[name]["iou"].append(_best_iou(hits[0], gt, corpus, caption) if hits else 0.0)
    out: dict[str, Any] = {"setting": setting, "companion_probability": SETTINGS[setting], "seeds": seeds, "videos_per_seed": videos,
                           "queries": len(rows["plain"]["iou"])}
    for name, r in rows.items():
        iou = np.asarray(r["iou"])
        out[name] = {"p_at_1": round(float((iou >= IOU).mean()), 4), "mean_iou": round(float(iou.mean()), 4),
                     "median_query_s": round(float(np.median(r["seconds"])), 4)}
    out["added_s_per_query"] = round(out["rerank"]["median_query_s"] - out["plain"]["median_query_s"], 4)
    return out


def matcher_speed(work: Path, moments: int = 20) -> list[dict[str, Any]]:
    """The matcher alone on ``moments`` frames: synth-itm, and BLIP base's architecture (random weights)."""
    import torch
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipProcessor

    from mmsearch.encoders import EncoderSpec, create_encoder
    from mmsearch.train.synth_itm import build_model

    base = work / "blip-itm-base"
    if not base.exists():
        torch.manual_seed(0)
        _, tiny_processor = build_model()
        model = BlipForImageTextRetrieval(BlipConfig())  # BLIP base: ViT-B/16 at 384 px, BERT-base text encoder
        model.save_pretrained(base)
        processor = BlipProcessor(image_processor=type(tiny_processor.image_processor)(size={"height": 384, "width": 384}),
                                  tokenizer=tiny_processor.tokenizer)
        processor.save_pretrained(base)
    rng = np.random.default_rng(0)
    rows = []
    for name, source in (("synth-itm", "mmsearch:synth-itm"), ("BLIP base (blip-itm-base-coco architecture)", str(base))):
        matcher = create_encoder(EncoderSpec("blip-itm", name, source), device="cpu")
        frames = [rng.integers(0, 255, (270, 480, 3), dtype=np.uint8) for _ in range(moments)]
        matcher.match(frames[:2], "a red circle")  # warm-up
        t0 = time.perf_counter()
        matcher.match(frames, "a red circle")
        seconds = time.perf_counter() - t0
        rows.append({"matcher": name, "input_px": matcher.input_size, "moments": moments, "seconds_per_query": round(seconds, 3),
                     "seconds_per_moment": round(seconds / moments, 4)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="2401,2402,2403", help="corpus seeds, comma-separated (never used in training)")
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--settings", default="together,alone", help=f"comma-separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--no-speed", action="store_true", help="leave out the matcher timing")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="mmsearch-rerank-"))
    try:
        qs = [quality(work / s, [int(x) for x in args.seeds.split(",")], args.videos, s) for s in args.settings.split(",")]
        speed = [] if args.no_speed else matcher_speed(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = machine_info()
    print(f"machine: {describe(info)}")
    print(f"\n{'world':<10}{'queries':>8}{'plain P@1':>11}{'IoU':>7}{'rerank P@1':>12}{'IoU':>7}{'plain s/query':>15}{'rerank s/query':>16}{'added s':>9}")
    for q in qs:
        print(f"{q['setting']:<10}{q['queries']:>8}{q['plain']['p_at_1']:>11.3f}{q['plain']['mean_iou']:>7.3f}"
              f"{q['rerank']['p_at_1']:>12.3f}{q['rerank']['mean_iou']:>7.3f}{q['plain']['median_query_s']:>15.3f}"
              f"{q['rerank']['median_query_s']:>16.3f}{q['added_s_per_query']:>9.3f}")
    if speed:
        print(f"\n{'matcher':<46}{'px':>5}{'s per query of 20 moments':>27}{'s/moment':>10}")
        for r in speed:
            print(f"{r['matcher']:<46}{r['input_px']:>5}{r['seconds_per_query']:>27.3f}{r['seconds_per_moment']:>10.4f}")
    if args.json:
        write_json(args.json, {"machine": info, "quality": qs, "matcher_speed": speed,
                               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}})


if __name__ == "__main__":
    main()
