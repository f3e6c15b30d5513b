"""Retrieval quality of the packaged synth-clip on a held-out synthetic corpus.

Generates a corpus with :func:`mmsearch.synth.generate_corpus` (a seed the model
was not trained on; training uses seed 0 streams), indexes it with
``mmsearch.index_paths(..., model="synth-clip")``, queries each of the 15 visual
captions and scores the top-1 result against the ground truth:

* ``top_video``: the top result's file contains an event of that caption (bar >= 0.95);
* ``iou@0.5``: the top result overlaps a ground-truth event of that caption in the
  same file with temporal IoU >= 0.5 (bar >= 0.9);
* ``mean_iou``: mean IoU of the top result with its best-matching event of that
  caption (0 when the file is wrong; bar >= 0.7).

Also reported, without a bar: ``stage1_top_video`` and ``stage1_recall@5``, whether
the media item ranked first (or any of the first 5) by stage 1 alone (the mean
frame embedding) contains the event. With ``--videos 20`` every video reaches
stage 2 under the default ``videos=20``, so the top result is decided by the
localized moments' scores; stage 1's own ranking only matters on larger corpora.

Both the two-stage search and ``exhaustive=True`` are scored. Captions without
any event in the corpus are skipped (listed as such).

    HF_HUB_OFFLINE=1 python benchmarks/synth_quality.py --videos 20 --seed 1234 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mmsearch.metrics import temporal_iou

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SETTINGS, machine_info, setting_options  # noqa: E402

BARS = {"top_video": 0.95, "iou@0.5": 0.9, "mean_iou": 0.7}


def score_queries(index: Any, corpus_dir: str | os.PathLike, rows: list[dict], *, exhaustive: bool, k: int = 10) -> dict:
    """Query every visual caption present in ``rows``; per-query details and the three fractions."""
    from mmsearch.synth import VISUAL_CAPTIONS

    corpus_dir = Path(corpus_dir)
    media_paths = {m: r["path"] for m, r in index.snapshot.media_rows().items()}
    space = index.snapshot.spaces["visual"]
    events: dict[str, list[dict]] = {}
    for r in rows:
        if r["modality"] == "video":
            events.setdefault(r["caption"], []).append(r)
    per_query = []
    for caption in VISUAL_CAPTIONS:
        if caption not in events:
            continue
        t0 = time.perf_counter()
        results = index.search(caption, k=k, exhaustive=exhaustive)
        seconds = time.perf_counter() - t0
        entry: dict[str, Any] = {"caption": caption, "query_seconds": seconds, "file": None, "start": None,
                                 "end": None, "score": None, "top_video": False, "iou": 0.0}
        if results:
            top = results[0]
            name = os.path.relpath(top.path, corpus_dir)
            truth = [e for e in events[caption] if e["file"] == name]
            entry.update(file=name, start=top.start, end=top.end, score=top.score, top_video=bool(truth),
                         iou=max((temporal_iou((top.start, top.end), (e["start"], e["end"])) for e in truth), default=0.0))
            entry["truth"] = [(e["start"], e["end"]) for e in truth]
        # stage 1 alone (informational): the media item whose mean frame vector is nearest the query
        _, rows_ = space.media_index.search(index.embed_queries(text=[caption]), 5)
        ranked = [os.path.relpath(media_paths[int(space.media_ids[r])], corpus_dir) for r in rows_[0] if r >= 0]
        wanted = {e["file"] for e in events[caption]}
        entry["stage1_file"] = ranked[0] if ranked else None
        entry["stage1_top_video"] = bool(ranked) and ranked[0] in wanted
        entry["stage1_recall@5"] = any(f in wanted for f in ranked)
        per_query.append(entry)
    n = len(per_query)
    summary = {
        "queries": n,
        "top_video": sum(q["top_video"] for q in per_query) / n if n else 0.0,
        "iou@0.5": sum(q["iou"] >= 0.5 for q in per_query) / n if n else 0.0,
        "mean_iou": sum(q["iou"] for q in per_query) / n if n else 0.0,
        "stage1_top_video": sum(q["stage1_top_video"] for q in per_query) / n if n else 0.0,
        "stage1_recall@5": sum(q["stage1_recall@5"] for q in per_query) / n if n else 0.0,
        "mean_query_seconds": sum(q["query_seconds"] for q in per_query) / n if n else 0.0,
    }
    summary["passes"] = all(summary[key] >= bar for key, bar in BARS.items())
    return {"summary": summary, "queries": per_query,
            "missing_captions": [c for c in VISUAL_CAPTIONS if c not in events]}


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def _print_mode(name: str, result: dict) -> None:
    print(f"\n== {name} ==")
    print(f"{'caption':<18} {'top file':<16} {'moment':>15} {'truth (same file)':<28} {'IoU':>5}")
    for q in result["queries"]:
        moment = f"{q['start']:.1f}-{q['end']:.1f}" if q["file"] else "-"
        truth = ", ".join(f"{s:.1f}-{e:.1f}" for s, e in q.get("truth", [])) or "(not in this file)"
        print(f"{q['caption']:<18} {str(q['file']):<16} {moment:>15} {truth:<28} {q['iou']:5.2f}")
    s = result["summary"]
    for key, bar in BARS.items():
        verdict = "ok" if s[key] >= bar else "BELOW BAR"
        print(f"  {key:<10} {s[key]:.3f}  (bar >= {bar})  {verdict}")
    if result["missing_captions"]:
        print(f"  captions without events in this corpus (skipped): {', '.join(result['missing_captions'])}")


def run(args: argparse.Namespace) -> dict:
    import mmsearch
    from mmsearch.synth import SynthConfig, generate_corpus, load_ground_truth

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="synth-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus_dir, index_dir = work / "corpus", work / "index"
    try:
        config = SynthConfig(min_size=_size(args.min_size), max_size=_size(args.max_size))
        params = {"videos": args.videos, "seed": args.seed, "config": repr(config)}
        stamp = work / "corpus-params.json"
        t0 = time.perf_counter()
        if args.work_dir and stamp.is_file() and json.loads(stamp.read_text()) == params:
            rows = load_ground_truth(corpus_dir)  # same corpus as last time: reuse it
        else:
            stamp.unlink(missing_ok=True)
            rows = generate_corpus(corpus_dir, videos=args.videos, audio=0, seed=args.seed, config=config)
            stamp.write_text(json.dumps(params))
        t_gen = time.perf_counter() - t0
        settings = {}
        for setting in args.settings:  # the same corpus indexed with each ingest setting (issue #18)
            if index_dir.exists():
                shutil.rmtree(index_dir)
            t0 = time.perf_counter()
            report = mmsearch.index_paths([corpus_dir], index_dir, model="synth-clip", device=args.device,
                                          config=mmsearch.IngestConfig(**setting_options(setting)))
            t_index = time.perf_counter() - t0
            index = mmsearch.open_index(index_dir, device=args.device)
            settings[setting] = {
                "options": setting_options(setting), "frames": report.frames, "repeated_frames": report.repeated_frames,
                "index_s": t_index, "modes": {
                    "two-stage": score_queries(index, corpus_dir, rows, exhaustive=False, k=args.k),
                    "exhaustive": score_queries(index, corpus_dir, rows, exhaustive=True, k=args.k),
                },
            }
        first = settings[args.settings[0]]
        modes, t_index = first["modes"], first["index_s"]
    finally:
        if not args.work_dir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "synth_quality",
        "model": "synth-clip",
        "corpus": {"videos": args.videos, "seed": args.seed, "min_size": args.min_size, "max_size": args.max_size,
                   "visual_events": sum(r["modality"] == "video" for r in rows), "frames": first["frames"],
                   "failed": len(report.failed)},
        "seconds": {"generate": t_gen, "index": t_index},
        "bars": BARS,
        "machine": machine_info(),
        "modes": modes,  # of the first setting
        "settings": settings,
        "passes": all(m["summary"]["passes"] for st in settings.values() for m in st["modes"].values()),
    }


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=20)
    p.add_argument("--seed", type=int, default=1234, help="corpus seed; use one the model was not trained on (>= 1000)")
    p.add_argument("--min-size", default="160x120")
    p.add_argument("--max-size", default="1280x720")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--work-dir", help="keep the corpus and index here, reusing the corpus when its parameters match "
                   "(default: a temp dir, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--check", action="store_true", help="exit 1 when a bar is not reached")
    p.add_argument("--settings", default="default",
                   help=f"comma-separated ingest settings, each indexing the same corpus (of {list(SETTINGS)})")
    args = p.parse_args(argv)
    args.settings = [x.strip() for x in args.settings.split(",") if x.strip()]
    for x in args.settings:
        if x not in SETTINGS:
            p.error(f"unknown setting {x!r}; choose from {list(SETTINGS)}")

    result = run(args)
    m = result["machine"]
    print(f"synth_quality: {args.videos} videos, seed {args.seed}, sizes {args.min_size}..{args.max_size}; "
          f"{result['corpus']['visual_events']} visual events, {result['corpus']['frames']} frames indexed")
    print(f"machine: {m['platform']}, {m['processor']}, {m['cpu_count']} CPUs, torch {m['torch']} ({m['torch_threads']} threads)"
          + (f", GPU {m['cuda']}" if m["cuda"] else ""))
    print(f"time: generate {result['seconds']['generate']:.1f}s, index {result['seconds']['index']:.1f}s")
    for name, res in result["modes"].items():
        _print_mode(name, res)
    print(f"\n{'setting':<12} {'frames':>11} {'mode':<12} {'queries':>7} {'top_video':>9} {'iou@0.5':>8} {'mean_iou':>8} "
          f"{'stage1 top1':>11}  pass")
    for setting, st in result["settings"].items():
        for name, res in st["modes"].items():
            s = res["summary"]
            print(f"{setting:<12} {st['frames']:>5}/{st['frames'] + st['repeated_frames']:<5} {name:<12} {s['queries']:7d} "
                  f"{s['top_video']:9.3f} {s['iou@0.5']:8.3f} {s['mean_iou']:8.3f} {s['stage1_top_video']:11.3f}  "
                  f"{'yes' if s['passes'] else 'NO'}")
    s = result["modes"]["two-stage"]["summary"]
    print(f"(no bar) stage 1 alone, mean frame embedding: top-1 video {s['stage1_top_video']:.3f}, "
          f"recall@5 {s['stage1_recall@5']:.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 1 if args.check and not result["passes"] else 0


if __name__ == "__main__":
    sys.exit(main())
