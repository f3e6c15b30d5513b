"""Whisper's decoding settings on the talking videos of benchmarks/words.py (issue #15): do any hear more?

The quoted-phrase misses of ``benchmarks/words.py`` are espeak-ng sentences Whisper base mishears. This
transcribes the same videos (``words.build_speech``: 8 videos, 3 sentences each at known seconds) with
``mmsearch.speech.transcribe`` as indexing does, and again with one setting changed at a time, side by
side: beam width, beam patience, no temperature fallback, conditioning on the text before, the silence
placed between voiced spans, the padding around them, and each span transcribed alone. Per setting:
word error rate (each sentence against the segment of its own file sharing most of its words), how
many of the 24 quoted phrases (5 words of each sentence) some segment holds as ``mmsearch query``
matches them (near misses and one word in five wrong allowed: ``mmsearch.textsearch``), how many
sentences have a segment starting within 0.5 s of their onset, and the wall time.

    python benchmarks/asr_settings.py --json benchmarks/results/asr-settings.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, write_json  # noqa: E402
from speech import wer  # noqa: E402
from words import build_speech, quoted  # noqa: E402

# (label, keyword arguments of mmsearch.speech.transcribe, keyword arguments passed on to faster-whisper)
SETTINGS = [
    ("as indexed (beam 5)", {}, {}),
    ("beam 10", {"beam_size": 10}, {}),
    ("patience 2", {}, {"patience": 2.0}),
    ("temperature 0 only", {}, {"temperature": 0.0}),
    ("conditioned on the text before", {}, {"condition_on_previous_text": True}),
    ("0.3 s between spans", {"gap_s": 0.3}, {}),
    ("1.0 s between spans", {"gap_s": 1.0}, {}),
    ("padding 0.4 s", {"pad_s": 0.4}, {}),
    ("each span alone", {"one_by_one": True}, {}),
]


class _Passing:
    """A faster-whisper model whose ``transcribe`` gets ``extra`` keyword arguments on top of mmsearch's."""

    def __init__(self, model, extra: dict) -> None:
        self.model, self.extra = model, extra

    def detect_language(self, *args, **kwargs):
        return self.model.detect_language(*args, **kwargs)

    def transcribe(self, audio, **kwargs):
        return self.model.transcribe(audio, **{**kwargs, **self.extra})


def score(segments: dict[str, list], truth: list[dict]) -> dict:
    from mmsearch.textsearch import _phrase_errors, words_of

    wers, found, started = [], [], 0
    for t in truth:
        own = segments[t["file"]]
        ref = words_of(t["sentence"])
        best = max(own, key=lambda s: (len(set(words_of(s.text)) & set(ref)), -abs(s.start - t["onset"])), default=None)
        wers.append(wer(ref, words_of(best.text) if best else []))
        started += best is not None and abs(best.start - t["onset"]) <= 0.5
        target = words_of(quoted(t["sentence"]).strip('"'))
        held = any(
            _phrase_errors(target, words_of(s.text), words_of(own[i + 1].text) if i + 1 < len(own) else [])[0] <= len(target) // 5
            for i, s in enumerate(own)
        )
        found.append(held)
    return {"wer": round(float(np.mean(wers)), 3), "phrases_held": int(sum(found)), "started_within_0_5_s": started,
            "sentences": len(truth), "missed": [quoted(t["sentence"]) for t, ok in zip(truth, found) if not ok]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sentences", choices=("main", "heldout"), default="main")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from mmsearch.speech import load_asr_model, transcribe

    info = machine_info()
    print(f"machine: {describe(info)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="asr-settings-") as tmp:
        truth = [t for t in build_speech(Path(tmp), args.videos, args.seed, args.sentences) if t["onset"] is not None]
        model = load_asr_model("base", threads=args.threads)
        rows = []
        print(f"{'setting':<32} {'WER':>6} {'phrases held':>13} {'onset <= 0.5 s':>15} {'wall s':>7}")
        for label, options, extra in SETTINGS:
            t0 = time.perf_counter()
            segments = {f: transcribe(Path(tmp) / f, _Passing(model, extra), **options).segments for f in sorted({t["file"] for t in truth})}
            row = {"setting": label, "transcribe": options, "faster_whisper": extra, **score(segments, truth),
                   "wall_s": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(f"{label:<32} {row['wer']:>6.3f} {row['phrases_held']:>9}/{row['sentences']:<3} "
                  f"{row['started_within_0_5_s']:>11}/{row['sentences']:<3} {row['wall_s']:>7.1f}", flush=True)
    if args.json:
        write_json(args.json, {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "settings": rows})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
