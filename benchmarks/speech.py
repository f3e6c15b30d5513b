"""Speech transcription quality, timing and speed with real Whisper base weights (issue #15).

Two measures, side by side for four ways of running faster-whisper on the same sound:

* ``stream``: mmsearch's way (:func:`mmsearch.speech.transcribe`): Silero VAD, then the voiced
  spans (padded by 0.2 s) laid end to end with 0.5 s of silence between them and transcribed as
  one stream; each word mapped back into the span holding its midpoint (:class:`mmsearch.speech.SpanMap`);
* ``spans``: each voiced span transcribed on its own, times offset by the span's start;
* ``whole+vad``: the whole file, faster-whisper's built-in ``vad_filter=True``;
* ``whole``: the whole file, no VAD.

1. **Known times.** ``--sentences`` espeak-ng sentences placed at known seconds in one track
   with silences of 2-12 s between them (16 kHz WAV). A sentence is *found*
   ... see :func:`score_known`: the segment sharing most of a sentence's words stands for it
   (found when it holds half of them); its first word's start minus the sentence's true onset
   (first sample above -40 dBFS) is the start error. Reported: found, starts within 0.25 s and
   0.5 s, median and max |error|, mean WER of the sentences, and segments whose words match no
   sentence (invented text).
2. **Real speech.** The LibriSpeech clips of ``../shared/media/librosa`` with the reference
   phrases of its ``SPEECH.md``: word error rate of each phrase against the best-aligned stretch
   of the transcript, and whether the phrase is found word for word (case and punctuation aside).

Speed is audio-seconds per wall-second (transcription only; the model is loaded once, int8,
torch/CTranslate2 on ``--threads`` threads).

    python benchmarks/speech.py --json benchmarks/results/speech.json
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, write_json  # noqa: E402

SENTENCES = [
    "the harbour lights came on one by one",
    "grandfather told the story about the boat",
    "please bring the blue umbrella tomorrow",
    "seven students finished the chemistry exam",
    "the orchestra rehearsed until midnight",
    "a small dog chased the delivery truck",
    "we planted tomatoes behind the garage",
    "the museum closes early on sundays",
    "my sister painted the kitchen yellow",
    "thunder rolled across the empty valley",
    "the baker sells fresh bread every morning",
    "our train was delayed by heavy snow",
]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "media" / "librosa"


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def speak(text: str, sample_rate: int = 16000, voice: str | None = None) -> np.ndarray:
    """espeak-ng's voice for ``text``, float32 mono at ``sample_rate``; ``voice``: an espeak-ng voice name
    (default: its own formant voice; ``mb-us1`` etc. are the MBROLA diphone voices, Debian packages
    ``mbrola-us1``, ... in non-free)."""
    from mmsearch.audio import load_audio

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", *(["-v", voice] if voice else []), "-w", str(wav), text], check=True, capture_output=True)
        samples, _ = load_audio(wav, sample_rate=sample_rate)
    return samples


def known_times_track(n: int, seed: int, out: Path, voice: str | None = None) -> list[tuple[str, float]]:
    """A WAV of ``n`` sentences (espeak-ng ``voice``, :func:`speak`) with silences of 2-12 s; returns
    (sentence, true onset seconds)."""
    from mmsearch.synth import write_wav

    sr = 16000
    rng = np.random.default_rng(seed)
    pieces, truth, t = [], [], 0.0
    for sentence in SENTENCES[:n]:
        gap = float(rng.uniform(2.0, 12.0))
        pieces.append(np.zeros(int(gap * sr), np.float32))
        t += gap
        said = speak(sentence, sr, voice)
        onset = int(np.argmax(np.abs(said) > 0.01))  # -40 dBFS
        truth.append((sentence, round(t + onset / sr, 3)))
        pieces.append(said)
        t += len(said) / sr
    pieces.append(np.zeros(3 * sr, np.float32))
    write_wav(out, np.concatenate(pieces), sr)
    return truth


def run_whole(model, path: Path, vad: bool) -> list[tuple[float, float, str, tuple]]:
    from mmsearch.audio import load_audio

    samples, _ = load_audio(path, sample_rate=16000)
    found, _ = model.transcribe(samples, language="en", word_timestamps=True, vad_filter=vad, beam_size=5)
    return [(s.start, s.end, s.text, tuple((w.start, w.end, w.word) for w in s.words or [])) for s in found]


def run_spans(model, path: Path, pad_s: float, **options) -> list[tuple[float, float, str, tuple]]:
    from mmsearch.speech import transcribe

    return [(s.start, s.end, s.text, s.words) for s in transcribe(path, model, pad_s=pad_s, **options).segments]


def score_known(segments, truth) -> dict:
    """Per sentence, the segment sharing most of its words (found when it holds at least half of
    them); the start error is that segment's first word's start minus the sentence's onset."""
    errors, wers = [], []
    for sentence, onset in truth:
        ref = words_of(sentence)
        best = max(segments, key=lambda s: len(set(words_of(s[2])) & set(ref)), default=None)
        if best is None or len(set(words_of(best[2])) & set(ref)) < len(ref) / 2:
            wers.append(1.0)
            continue
        start = float(best[3][0][0]) if best[3] else float(best[0])
        errors.append(start - onset)
        wers.append(wer(ref, words_of(best[2])))
    vocabulary = {w for s, _ in truth for w in words_of(s)}
    invented = sum(1 for s in segments if words_of(s[2]) and not (set(words_of(s[2])) & vocabulary))
    abs_err = np.abs(errors) if errors else np.array([np.inf])
    return {
        "sentences": len(truth), "found": len(errors),
        "within_0.25s": int(np.sum(abs_err <= 0.25)), "within_0.5s": int(np.sum(abs_err <= 0.5)),
        "median_abs_error_s": round(float(np.median(abs_err)), 3) if errors else None,
        "max_abs_error_s": round(float(np.max(abs_err)), 3) if errors else None,
        "mean_wer": round(float(np.mean(wers)), 3),
        "invented_segments": invented, "errors_s": [round(float(e), 3) for e in errors],
    }


def wer(ref: list[str], hyp: list[str]) -> float:
    d = np.arange(len(hyp) + 1, dtype=np.int64)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d.copy(), i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return float(d[len(hyp)]) / max(1, len(ref))


def best_wer(phrase: list[str], transcript: list[str]) -> float:
    """WER of ``phrase`` against the stretch of ``transcript`` it aligns to best (lengths n-2..n+2)."""
    n, best = len(phrase), 1.0
    for i in range(len(transcript)):
        for m in range(max(1, n - 2), n + 3):
            best = min(best, wer(phrase, transcript[i : i + m]))
    return best


def reference_phrases() -> dict[str, list[str]]:
    table = (SHARED / "SPEECH.md").read_text(encoding="utf-8")
    out = {}
    for line in table.splitlines():
        m = re.match(r"\|\s*([\w.-]+\.ogg)\s*\|(.*)\|", line)
        if m:
            out[m.group(1)] = re.findall(r'"([^"]+)"', m.group(2))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sentences", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="base")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--voice", default=None, help="espeak-ng voice of the sentences (default: its own; mb-us1: MBROLA)")
    args = p.parse_args(argv)
    from mmsearch.speech import load_asr_model

    info = machine_info()
    print(f"machine: {describe(info)}", flush=True)
    model = load_asr_model(args.model, threads=args.threads)
    results: dict = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}}
    methods = {"stream": lambda f: run_spans(model, f, 0.2),  # what mmsearch does: voiced spans as one stream
               "spans": lambda f: run_spans(model, f, 0.2, one_by_one=True),
               "whole+vad": lambda f: run_whole(model, f, True),
               "whole": lambda f: run_whole(model, f, False)}
    work = Path(tempfile.mkdtemp(prefix="speech-bench-"))
    try:
        if shutil.which("espeak-ng"):
            track = work / "known.wav"
            truth = known_times_track(args.sentences, args.seed, track, args.voice)
            seconds = truth[-1][1] + 6.0
            known = {}
            print(f"\nknown times: {len(truth)} espeak-ng sentences in {seconds:.0f} s of sound, silences 2-12 s", flush=True)
            print(f"{'method':<12} {'found':>6} {'<=0.25s':>8} {'<=0.5s':>7} {'median s':>9} {'max s':>7} {'WER':>6} {'invented':>9} {'x real time':>12}")
            for name, run in methods.items():
                t0 = time.perf_counter()
                segments = run(track)
                wall = time.perf_counter() - t0
                row = {**score_known(segments, truth), "wall_s": round(wall, 2), "realtime_x": round(seconds / wall, 2)}
                known[name] = row
                print(f"{name:<12} {row['found']:>3}/{row['sentences']:<2} {row['within_0.25s']:>8} {row['within_0.5s']:>7} "
                      f"{row['median_abs_error_s']!s:>9} {row['max_abs_error_s']!s:>7} {row['mean_wer']:>6} {row['invented_segments']:>9} {row['realtime_x']:>12}",
                      flush=True)
            results["known_times"] = {"truth": truth, "methods": known}
        else:
            print("espeak-ng not installed: the known-times measure is skipped (apt-get install espeak-ng)")
        if (SHARED / "SPEECH.md").is_file():
            phrases = reference_phrases()
            real = {}
            print(f"\nreal speech: {len(phrases)} LibriSpeech clips, {sum(map(len, phrases.values()))} reference phrases")
            print(f"{'method':<12} {'phrases found':>14} {'mean phrase WER':>16} {'x real time':>12}")
            from mmsearch.audio import probe_audio

            for name, run in methods.items():
                per, found, wers, audio_s, wall = [], 0, [], 0.0, 0.0
                for clip, refs in phrases.items():
                    path = SHARED / clip
                    audio_s += probe_audio(path).duration
                    t0 = time.perf_counter()
                    segments = run(path)
                    wall += time.perf_counter() - t0
                    said = words_of(" ".join(s[2] for s in segments))
                    for ref in refs:
                        w = best_wer(words_of(ref), said)
                        wers.append(w)
                        found += w == 0.0
                        per.append({"clip": clip, "phrase": ref, "wer": round(w, 3)})
                real[name] = {"phrases": len(wers), "found": found, "mean_wer": round(float(np.mean(wers)), 3),
                              "realtime_x": round(audio_s / wall, 2), "per_phrase": per}
                print(f"{name:<12} {found:>10}/{len(wers):<3} {real[name]['mean_wer']:>16} {real[name]['realtime_x']:>12}", flush=True)
            results["real_speech"] = real
        else:
            print(f"no reference phrases at {SHARED}: the real-speech measure is skipped")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
