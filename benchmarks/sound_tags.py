"""Sound tags (issue #19): are the tags mmsearch stores right, what does the tag filter return, what does tagging cost.

    python benchmarks/sound_tags.py --json benchmarks/results/sound_tags.json

Quality: fresh synthetic corpora (seeds never used in training; audio files and
videos with soundtracks) of each of ``--families`` (``default``: what ``mmsearch synth``
and the demo write; ``heldout``: the variation family the tiny models never drew
from, :mod:`mmsearch.synth.families`) are indexed as a user would
(``mmsearch.index_paths`` with ``synth-clip``, ``synth-clap`` and ``sound_tags="synth-ast"``).
Every stored audio window (2 s, hop 1 s) is scored against the ground truth: a class
*is in* a window when its events fill at least half of it
(:data:`mmsearch.train.synth_ast.PRESENT_SHARE`); a tag is right when its class is
in. Micro F1 over every (window, class) pair, and F1 per class (bar: 0.9). The tag
filter: for each class, ``search("a sound", modality="audio", where={"tags": [cls]})``;
right = the returned moment overlaps an event of that class.

Cost, side by side in one run: the same corpus indexed with and without tags (wall
seconds, per hour of sound), and the tagger alone on 2 s windows (synth-ast) and on
10 s windows with the architecture of ``MIT/ast-finetuned-audioset-10-10-0.4593``
(AST base, 527 labels; random weights saved to a directory and loaded through
the same path, since the real weights cannot be downloaded here): seconds of
tagging per hour of sound at CLAP's windows (10 s, hop 5 s: 720 windows an hour).
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

BAR_F1 = 0.9


def _truth(gt: list[dict], file: str, starts: np.ndarray, ends: np.ndarray, classes: list[str]) -> np.ndarray:
    """(windows, classes) share of each window each class's events fill."""
    from mmsearch.synth.vocabulary import _audio_class

    cover = np.zeros((len(starts), len(classes)), np.float32)
    for row in gt:
        if row["file"] != file or row["modality"] != "audio":
            continue
        j = classes.index(_audio_class(row["caption"]))
        overlap = np.clip(np.minimum(ends, row["end"]) - np.maximum(starts, row["start"]), 0, None)
        cover[:, j] += overlap / np.maximum(ends - starts, 1e-9)
    return cover


def quality(work: Path, seeds: list[int], videos: int, audio: int, family: str) -> dict[str, Any]:
    from mmsearch.api import index_paths, open_index
    from mmsearch.errors import UsageError
    from mmsearch.synth import AUDIO_CLASSES, SynthConfig, generate_corpus, load_ground_truth
    from mmsearch.synth.vocabulary import _audio_class
    from mmsearch.train.synth_ast import PRESENT_SHARE, f1_scores

    classes = list(AUDIO_CLASSES)
    probs, covers = [], []
    filter_right = filter_total = 0
    seconds = {"tags": 0.0, "none": 0.0}
    sound_s = 0.0
    for i, seed in enumerate(seeds):
        corpus = work / f"corpus-{seed}"
        generate_corpus(corpus, videos=videos, audio=audio, seed=seed, config=SynthConfig(family=family))
        gt = load_ground_truth(corpus)
        if i == 0:  # warm-up (models loaded, caches filled), not timed
            index_paths([corpus], work / "warm-up", model="synth-clip", sound_tags="synth-ast", speech=False, ocr=False,
                        freeze_text=False)
        for name, tags in (("none", None), ("tags", "synth-ast")):  # side by side: the cost of tagging
            t0 = time.perf_counter()
            index_paths([corpus], work / f"index-{seed}-{name}", model="synth-clip", sound_tags=tags, speech=False, ocr=False,
                        freeze_text=False)
            seconds[name] += time.perf_counter() - t0
        idx = open_index(work / f"index-{seed}-tags")
        threshold = float(idx.manifest["tags"]["tagger"]["identity"]["threshold"])
        space = idx.snapshot.spaces["audio"]
        stored: dict[tuple[int, float, float], list[tuple[str, float]]] = {}
        for t in idx.snapshot.tags.to_pylist():
            stored.setdefault((t["media_id"], round(t["start"], 3), round(t["end"], 3)), []).append((t["label"], t["score"]))
        for media_id, row in idx._rows.items():
            file = os.path.relpath(row["path"], corpus)
            starts, ends, _ = space.segments_of(media_id)
            sound_s += float(row.get("duration") or 0.0)
            cover = _truth(gt, file, starts, ends, classes)
            p = np.zeros_like(cover)  # each window's own tags, as stored (windows overlap: look them up by their bounds)
            for i, (s, e) in enumerate(zip(starts, ends)):
                for label, score in stored.get((media_id, round(float(s), 3), round(float(e), 3)), ()):
                    p[i, classes.index(label)] = score
            probs.append(p)
            covers.append(cover)
        for cls in classes:
            try:
                hits = idx.search("a sound", modality="audio", k=3, where={"tags": [cls]})
            except UsageError:  # no window of this corpus is tagged so
                continue
            for hit in hits:
                file = os.path.relpath(hit.path, corpus)
                events = [r for r in gt if r["file"] == file and r["modality"] == "audio" and _audio_class(r["caption"]) == cls]
                filter_total += 1
                filter_right += any(min(hit.end, r["end"]) > max(hit.start, r["start"]) for r in events)
    scores = f1_scores(np.concatenate(probs), np.concatenate(covers), threshold, classes)
    hours = sound_s / 3600
    return {
        "family": family, "seeds": seeds, "files_per_seed": videos + audio, "present_share": PRESENT_SHARE, "threshold": threshold,
        **scores, "bar_f1": BAR_F1, "met": scores["f1"] >= BAR_F1,
        "tag_filter": {"results": filter_total, "overlap_the_class": filter_right,
                       "precision": round(filter_right / filter_total, 4) if filter_total else None},
        "index_seconds": {k: round(v, 2) for k, v in seconds.items()}, "sound_seconds": round(sound_s, 1),
        "tagging_seconds_per_hour_of_sound": round((seconds["tags"] - seconds["none"]) / hours, 1) if hours else None,
    }


def _ast_base_dir(work: Path) -> Path:
    """AST base (the AudioSet checkpoint's architecture and feature extractor) with random weights, saved."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    from mmsearch.encoders.clap import _quiet_loading

    torch.manual_seed(0)
    labels = {i: f"label {i}" for i in range(527)}
    model = ASTForAudioClassification(ASTConfig(id2label=labels, label2id={v: k for k, v in labels.items()}))
    out = work / "ast-base-random"
    with _quiet_loading():
        model.save_pretrained(out)
    ASTFeatureExtractor().save_pretrained(out)
    return out


def tagger_speed(work: Path, clips: int) -> list[dict[str, Any]]:
    from mmsearch.encoders import EncoderSpec, create_encoder

    rng = np.random.default_rng(0)
    rows = []
    for name, source, window, hop in (("synth-ast", "mmsearch:synth-ast", 2.0, 1.0),
                                      ("AST base (AudioSet architecture)", str(_ast_base_dir(work)), 10.0, 5.0)):
        tagger = create_encoder(EncoderSpec("ast", name, source), device="cpu")
        batch = [rng.uniform(-0.3, 0.3, int(window * tagger.sample_rate)).astype(np.float32) for _ in range(clips)]
        tagger.predict(batch[:2])  # warm-up
        t0 = time.perf_counter()
        tagger.predict(batch)
        per_clip = (time.perf_counter() - t0) / clips
        windows_per_hour = 3600 / hop
        rows.append({"tagger": name, "window_s": window, "hop_s": hop, "clips": clips, "seconds_per_window": round(per_clip, 4),
                     "seconds_per_hour_of_sound": round(per_clip * windows_per_hour, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="2101,2102,2103", help="corpus seeds, comma-separated (never used in training)")
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--audio", type=int, default=6)
    parser.add_argument("--families", default="default,heldout",
                        help="variation families of the corpora, comma-separated (default: what mmsearch synth writes; heldout: never trained on)")
    parser.add_argument("--speed-clips", type=int, default=16, help="windows timed per tagger (0: no timing of the taggers alone)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="mmsearch-tags-"))
    try:
        qs = [quality(work / family, [int(s) for s in args.seeds.split(",")], args.videos, args.audio, family)
              for family in args.families.split(",")]
        speed = tagger_speed(work, args.speed_clips) if args.speed_clips else []
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = machine_info()
    print(f"machine: {describe(info)}")
    for q in qs:
        print(f"\nsynth-ast tags of indexed 2 s windows, {q['family']} family, seeds {args.seeds} ({q['windows']} windows):")
        print(f"  micro F1 {q['f1']:.3f} (precision {q['precision']:.3f}, recall {q['recall']:.3f}); bar {BAR_F1}: {'met' if q['met'] else 'NOT met'}")
        print("  per class: " + ", ".join(f"{c} {v:.3f}" for c, v in q["per_class_f1"].items()))
        tf = q["tag_filter"]
        print(f"  tag filter: {tf['overlap_the_class']}/{tf['results']} results overlap an event of the class asked for")
        print(f"  indexing {q['sound_seconds']:.0f} s of sound: {q['index_seconds']['none']:.1f} s without tags, "
              f"{q['index_seconds']['tags']:.1f} s with: {q['tagging_seconds_per_hour_of_sound']} s per hour of sound")
    print(f"\n{'tagger':<36}{'window s':>9}{'hop s':>7}{'s/window':>10}{'s per hour of sound':>21}")
    for r in speed:
        print(f"{r['tagger']:<36}{r['window_s']:>9.1f}{r['hop_s']:>7.1f}{r['seconds_per_window']:>10.4f}{r['seconds_per_hour_of_sound']:>21.1f}")
    if args.json:
        write_json(args.json, {"machine": info, "quality": qs, "tagger_speed": speed,
                               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}})


if __name__ == "__main__":
    main()
