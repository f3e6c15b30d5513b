"""Moment captions (issue #19): do the captions mmsearch stores name what is shown, does a caption query find the moment, what do they cost.

    python benchmarks/captions.py --json benchmarks/results/captions.json

Quality: fresh synthetic corpora (seeds never used in training) of each of ``--families``
(``default``: what ``mmsearch synth`` and the demo write; ``heldout``: the variation family the
tiny models never drew from, :mod:`mmsearch.synth.families`) are indexed as a user would
(``mmsearch.index_paths`` with ``synth-clip``, no sound or words), once with each of ``--captioners``
(default ``synth-coca`` and ``synth-blip``: the tiny CoCa and BLIP captioners) and once without captions.
For every shape caption a corpus shows:

* **top-moment caption**: ``search(caption, modality="video", k=1)``; the caption mmsearch returns
  with the top moment names the query's colour and shape (the issue's measure, bar 0.9), and,
  apart from retrieval, names the shape the ground truth shows in the middle of that moment;
* **caption query**: ``search(caption, modality="caption", k=1)`` (the words of the captions,
  BM25 and MiniLM fused) beside ``modality="video"`` (CLIP): P@1 (the moment overlaps an event
  of the query with IoU >= 0.5) and mean IoU with the best such event.

Every stored caption segment is scored too: right when it says the caption of the event shown
at its middle (or the tiny captioners' background caption where none is).

Cost, side by side in one run: the same corpus indexed with and without captions (wall seconds
per hour of video), and each captioner alone (one thread) on frames: ``synth-coca`` and
``synth-blip`` at 64 px, and the architectures of ``coca_ViT-B-32`` and of
``Salesforce/blip-image-captioning-base`` (random weights saved to a file or a save_pretrained
directory and loaded through the same path, since the real weights cannot be downloaded here), as
seconds per hour of video at one caption every 2 s (the default stride): as captioned (the mean
caption length in tokens beside; random weights stop early or late) and with every caption
decoded to the 20-token limit (an upper bound).
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
from _common import describe, machine_info, random_clip_checkpoint, write_json  # noqa: E402

BAR = 0.9
IOU = 0.5


def _events(gt: list[dict], file: str, caption: str | None = None) -> list[dict]:
    return [r for r in gt if r["file"] == file and r["modality"] == "video" and (caption is None or r["caption"] == caption)]


def _best_iou(hit: Any, events: list[dict]) -> float:
    from mmsearch.metrics import temporal_iou

    return max((temporal_iou((hit.start, hit.end), (r["start"], r["end"])) for r in events), default=0.0)


def _names(caption: str | None, query: str) -> bool:
    from mmsearch.synth import parse_visual_caption

    colour, shape = parse_visual_caption(query)
    words = set((caption or "").split())
    return colour in words and shape in words


def quality(work: Path, seeds: list[int], videos: int, family: str, captioners: list[str], warm_up: bool = True) -> list[dict[str, Any]]:
    """One row per captioner: its captions of the corpora of ``seeds`` (indexed once each with it,
    once without captions, side by side) scored as the module says; ``warm_up``: index the first
    corpus once with each captioner before anything is timed (without it, the first timings hold
    the loading of the models)."""
    from mmsearch.api import index_paths, open_index
    from mmsearch.synth import SynthConfig, generate_corpus, load_ground_truth
    from mmsearch.train.synth_coca import GAP_CAPTION

    seconds = {name: 0.0 for name in ["none", *captioners]}
    video_s = 0.0
    scores = {name: {"queries": 0, "top_names": 0, "top_names_shown": 0, "segments": 0, "segments_right": 0,
                     "found": {"caption": [0, []], "video": [0, []]}} for name in captioners}  # P@1 count, IoUs
    for i, seed in enumerate(seeds):
        corpus = work / f"corpus-{seed}"
        generate_corpus(corpus, videos=videos, audio=0, seed=seed, config=SynthConfig(family=family))
        gt = load_ground_truth(corpus)
        if i == 0 and warm_up:  # models loaded, caches filled, not timed
            for name in captioners:
                index_paths([corpus], work / f"warm-up-{name}", model="synth-clip", audio=False, speech=False, ocr=False, captions=name,
                            freeze_text=False)
        for name in seconds:  # side by side: the cost of captions
            t0 = time.perf_counter()
            index_paths([corpus], work / f"index-{seed}-{name}", model="synth-clip", audio=False, speech=False, ocr=False,
                        captions=None if name == "none" else name, freeze_text=False)
            seconds[name] += time.perf_counter() - t0
        video_s += sum(float(row.get("duration") or 0.0) for row in open_index(work / f"index-{seed}-none")._rows.values())
        for name in captioners:
            score = scores[name]
            idx = open_index(work / f"index-{seed}-{name}")
            space = idx.snapshot.spaces["caption"]
            for media_id, row in idx._rows.items():
                file = os.path.relpath(row["path"], corpus)
                starts, ends, _ = space.segments_of(media_id)
                for start, end, text in zip(starts, ends, space.texts_of(media_id)):
                    middle = (start + end) / 2
                    shown = next((r["caption"] for r in _events(gt, file) if r["start"] <= middle < r["end"]), GAP_CAPTION)
                    score["segments"] += 1
                    score["segments_right"] += text == shown
            for query in sorted({r["caption"] for r in gt if r["modality"] == "video"}):
                score["queries"] += 1
                top = idx.search(query, modality="video", k=1)[0]
                score["top_names"] += _names(top.caption, query)
                file = os.path.relpath(top.path, corpus)
                middle = (top.start + top.end) / 2
                shown = next((r["caption"] for r in _events(gt, file) if r["start"] <= middle < r["end"]), None)
                score["top_names_shown"] += (top.caption == shown) if shown else (top.caption == GAP_CAPTION)
                for modality in ("caption", "video"):
                    hits = idx.search(query, modality=modality, k=1)
                    iou = _best_iou(hits[0], _events(gt, os.path.relpath(hits[0].path, corpus), query)) if hits else 0.0
                    score["found"][modality][0] += iou >= IOU
                    score["found"][modality][1].append(iou)
    hours = video_s / 3600
    rows = []
    for name, score in scores.items():
        queries, segments = score["queries"], score["segments"]
        share = score["top_names"] / queries if queries else 0.0
        rows.append({
            "captioner": name, "family": family, "seeds": seeds, "videos_per_seed": videos, "queries": queries,
            "top_moment_caption_names_query": round(share, 4), "bar": BAR, "met": share >= BAR,
            "top_moment_caption_is_what_is_shown": round(score["top_names_shown"] / queries, 4) if queries else None,
            "stored_segments": segments, "stored_segments_right": round(score["segments_right"] / segments, 4) if segments else None,
            "query": {m: {"p_at_1": round(n / queries, 4) if queries else None, "mean_iou": round(float(np.mean(ious)), 4) if ious else None}
                      for m, (n, ious) in score["found"].items()},
            "index_seconds": {"none": round(seconds["none"], 2), "captions": round(seconds[name], 2)}, "video_seconds": round(video_s, 1),
            "captioning_seconds_per_hour_of_video": round((seconds[name] - seconds["none"]) / hours, 1) if hours else None,
        })
    return rows


def _blip_base(work: Path) -> Path:
    """``Salesforce/blip-image-captioning-base``'s architecture (ViT-B/16 at 384 px, a BERT-base decoder)
    with random weights, written by save_pretrained with a processor whose tokenizer has BLIP's vocabulary
    layout (30 524 ids, [PAD] 0, [SEP] 102, the decoder's start [DEC] 30522) so every id the model writes decodes."""
    import torch
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    from mmsearch.train.synth_itm import save_model_dir

    torch.manual_seed(0)
    config = BlipConfig()
    vocab = {f"w{i}": i for i in range(config.text_config.vocab_size)}
    for token, i in {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, "[DEC]": 30522, "[ENC]": 30523}.items():
        del vocab[f"w{i}"]
        vocab[token] = i
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, bos_token="[DEC]", additional_special_tokens=["[ENC]"])
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 384, "width": 384}), tokenizer=tokenizer)
    return save_model_dir(BlipForConditionalGeneration(config), processor, work / "blip-caption-base")


def _tokens(captioner: Any, caption: str) -> int:
    """Tokens in a caption, as its captioner counts them (no start or end of text)."""
    if hasattr(captioner, "processor"):  # BLIP
        return len(captioner.processor.tokenizer(caption, add_special_tokens=False)["input_ids"])
    import open_clip

    return int((open_clip.get_tokenizer(captioner.spec.model)([caption])[0] != 0).sum()) - 2


def captioner_speed(work: Path, frames: int, stride: float = 2.0) -> list[dict[str, Any]]:
    from mmsearch.captions import load_captioner
    from mmsearch.encoders.coca import greedy_captions

    rng = np.random.default_rng(0)
    rows = []
    for name, spec in (("synth-coca", "synth-coca"), ("coca_ViT-B-32 (architecture)", f"coca_ViT-B-32:{random_clip_checkpoint('coca_ViT-B-32', work)}"),
                       ("synth-blip", "synth-blip"), ("BLIP base (blip-image-captioning-base architecture)", str(_blip_base(work)))):
        captioner = load_captioner(spec, device="cpu")
        batch = rng.integers(0, 255, (frames, 270, 480, 3), dtype=np.uint8)
        captioner.caption(batch[:2])  # warm-up
        t0 = time.perf_counter()
        said = captioner.caption(batch)
        per_frame = (time.perf_counter() - t0) / frames
        t0 = time.perf_counter()  # the longest caption: every frame decoded to the token limit
        if hasattr(captioner, "processor"):
            captioner.caption(batch, stop_at_end=False)
        else:
            greedy_captions(captioner.model, captioner.preprocess(batch), max_tokens=captioner.max_tokens, stop_at_end=False)
        per_frame_longest = (time.perf_counter() - t0) / frames
        tokens = float(np.mean([_tokens(captioner, s) for s in said]))
        rows.append({"captioner": name, "input_px": captioner.input_size, "frames": frames, "mean_tokens": round(tokens, 1),
                     "seconds_per_frame": round(per_frame, 4), "seconds_per_hour_of_video": round(per_frame * 3600 / stride, 1),
                     "max_tokens": captioner.max_tokens, "seconds_per_frame_at_max_tokens": round(per_frame_longest, 4),
                     "seconds_per_hour_of_video_at_max_tokens": round(per_frame_longest * 3600 / stride, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="2201,2202,2203", help="corpus seeds, comma-separated (never used in training)")
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--families", default="default,heldout",
                        help="variation families of the corpora, comma-separated (default: what mmsearch synth writes; heldout: never trained on)")
    parser.add_argument("--captioners", default="synth-coca,synth-blip", help="what --captions names, comma-separated, measured side by side")
    parser.add_argument("--speed-frames", type=int, default=8, help="frames timed per captioner (0: no timing of the captioners alone)")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="time the first index runs with the models' loading (a quick check of the script)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="mmsearch-captions-"))
    try:
        qs = [row for family in args.families.split(",")
              for row in quality(work / family, [int(s) for s in args.seeds.split(",")], args.videos, family, args.captioners.split(","), args.warm_up)]
        speed = captioner_speed(work, args.speed_frames) if args.speed_frames else []
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = machine_info()
    print(f"machine: {describe(info)}")
    for q in qs:
        print(f"\n{q['captioner']} captions, {q['family']} family, seeds {args.seeds} ({q['queries']} queries, {q['stored_segments']} stored segments):")
        print(f"  top moment's caption names the query's colour and shape: {q['top_moment_caption_names_query']:.3f}; "
              f"bar {BAR}: {'met' if q['met'] else 'NOT met'}")
        print(f"  top moment's caption is what the moment shows: {q['top_moment_caption_is_what_is_shown']:.3f}; "
              f"stored segments right: {q['stored_segments_right']:.3f}")
        print(f"  {'query':<18}{'P@1 (IoU>=0.5)':>16}{'mean IoU':>10}")
        for m, v in q["query"].items():
            print(f"  --modality {m:<7}{v['p_at_1']:>16.3f}{v['mean_iou']:>10.3f}")
        print(f"  indexing {q['video_seconds']:.0f} s of video: {q['index_seconds']['none']:.1f} s without captions, "
              f"{q['index_seconds']['captions']:.1f} s with: {q['captioning_seconds_per_hour_of_video']} s per hour of video")
    print(f"\n{'captioner':<52}{'px':>5}{'tokens':>7}{'s/frame':>10}{'s per hour of video':>21}{'at 20 tokens: s/frame':>23}{'s/hour':>9}")
    for r in speed:
        print(f"{r['captioner']:<52}{r['input_px']:>5}{r['mean_tokens']:>7.1f}{r['seconds_per_frame']:>10.4f}{r['seconds_per_hour_of_video']:>21.1f}"
              f"{r['seconds_per_frame_at_max_tokens']:>23.4f}{r['seconds_per_hour_of_video_at_max_tokens']:>9.1f}")
    if args.json:
        write_json(args.json, {"machine": info, "quality": qs, "captioner_speed": speed,
                               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}})


if __name__ == "__main__":
    main()
