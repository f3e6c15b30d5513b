"""What is said and what is written, searched (issue #15): real Whisper base, all-MiniLM-L6-v2 and PP-OCRv4.

Builds a library of videos with words in them at known seconds, indexes it with mmsearch exactly as
a user would (``mmsearch.index_paths``, default speech and OCR; pictures with the tiny ``synth-clip``,
which plays no part in these measures), and asks it questions.

1. **Speech.** ``--videos`` videos of 45 s, each with 3 espeak-ng sentences at random seconds over
   low noise, and the LibriSpeech clips of ``../shared/media/librosa`` as audio files (reference
   phrases in its ``SPEECH.md``). Per sentence two queries: a *quoted phrase* (5 consecutive words
   of it, in double quotes) and a *paraphrase* written to share no content word with it. A query
   is right when the top result is the right file and, for the espeak sentences (whose onsets are
   known), starts within 0.5 s of the sentence's onset (first sample above -40 dBFS); for the
   LibriSpeech phrases (no times known) when the top result's words hold the phrase (quoted) or
   the file is right (paraphrase). Asked with ``--modality speech``, with no modality (pictures
   and words fused per moment) and with ``--modality all`` (the sound fused in too). Word error rate: each espeak sentence against the indexed segment
   sharing most of its words.
2. **On-screen text.** ``--slides`` videos of 30 s, each showing 3 lines of text one after another
   (fonts, sizes, colours and positions drawn per line), with ``--modality text``: right when the
   top result is the right file and its temporal IoU with the line's interval is at least 0.5.
3. **Speed.** Whisper on the library's sound alone (audio-seconds per wall-second, the model loaded
   once, int8 on ``--threads``), OCR frames per second (``mmsearch.ocr.ocr_video`` on the slides),
   the wall time of indexing the same videos with and without ``--speech``/``--ocr``, per hour
   of video, and the lexical index (BM25) built over 100k segments of 4-14 random words.

    python benchmarks/words.py --json benchmarks/results/words.json
    python benchmarks/words.py --sentences heldout --seed 7 --json benchmarks/results/words-heldout.json

The fused default is also scored as it was before picture moments were weighed against the
index's query probes (``default-uncalibrated``), side by side in the same run. ``--sentences
heldout`` asks 24 other sentences and paraphrases, written after that weighing was designed on
the main ones.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, write_json  # noqa: E402
from speech import speak, wer, words_of  # noqa: E402  (benchmarks/speech.py: the same espeak-ng voice and scoring)

# (sentence, paraphrase sharing no content word)
SENTENCES = [
    ("the harbour lights came on one by one", "lamps at the port switched on gradually"),
    ("grandfather told the story about the boat", "grandpa narrated a tale of his ship"),
    ("please bring the blue umbrella tomorrow", "carry an azure parasol with you next day"),
    ("seven students finished the chemistry exam", "pupils completed their science test"),
    ("the orchestra rehearsed until midnight", "musicians practised late into the night"),
    ("a small dog chased the delivery truck", "little puppy ran after a van"),
    ("we planted tomatoes behind the garage", "vegetables were sown at the back of our carport"),
    ("the museum closes early on sundays", "that gallery shuts sooner at weekends"),
    ("my sister painted the kitchen yellow", "our sibling coloured her cooking room golden"),
    ("thunder rolled across the empty valley", "a storm rumbled over deserted hills"),
    ("the baker sells fresh bread every morning", "loaves are baked daily at dawn"),
    ("our train was delayed by heavy snow", "railway trip postponed due to blizzard"),
    ("the children built a castle of sand", "kids made a fortress on a beach"),
    ("the doctor said the fever would pass", "physician promised that temperature goes down soon"),
    ("they climbed the mountain before sunrise", "hikers ascended a peak at dawn"),
    ("the old clock in the hall stopped ticking", "an antique timepiece went silent"),
    ("she forgot her keys at the office", "woman left house keys behind at work"),
    ("the river flooded the farmer's fields", "water overflowed onto agricultural land"),
    ("we watched fireworks from the rooftop", "spectators saw pyrotechnics above a building"),
    ("the cat slept on the warm windowsill", "kitten dozed by a sunny ledge"),
    ("the team celebrated their victory with pizza", "players marked a win eating italian food"),
    ("a strong wind blew the tent away", "gale carried off our camping shelter"),
    ("the library will open a new reading room", "books hall launches another study space"),
    ("grandmother baked an apple pie for dinner", "granny made fruit dessert for supper"),
]
# A second set, written after the fusion of pictures and words was tuned on the first, to check that tuning
# on sentences it never saw (``--sentences heldout``; the LibriSpeech phrases are left out with it).
HELDOUT_SENTENCES = [
    ("the fishermen mended their nets at noon", "anglers repaired mesh gear around midday"),
    ("my uncle repaired the broken bicycle", "a relative fixed that damaged bike"),
    ("the candles flickered during the dinner party", "flames wavered while guests dined"),
    ("a heavy storm knocked down the old oak", "strong gale felled an ancient tree"),
    ("the pilot announced a short delay", "captain said we would wait briefly"),
    ("she practised the violin every evening", "woman rehearsed on her fiddle nightly"),
    ("the farmer sold eggs at the market", "a grower traded poultry produce at the bazaar"),
    ("our neighbours adopted a tiny kitten", "people next door took in a little cat"),
    ("the snow melted quickly in the spring sun", "ice thawed fast under warm april light"),
    ("the teacher handed back the graded essays", "instructor returned marked papers"),
    ("we missed the last bus home", "the final coach left without us"),
    ("the bakery on the corner burned down", "a pastry shop nearby was destroyed by fire"),
    ("his grandmother knitted a warm scarf", "granny made him a cosy woollen wrap"),
    ("the bridge was closed for repairs", "that crossing shut while workers fixed it"),
    ("the painter sketched the harbour at dawn", "an artist drew boats by the port early"),
    ("a crowd gathered to watch the parade", "people assembled to see a procession"),
    ("the nurse checked his blood pressure", "a medic measured circulation readings"),
    ("the puppy chewed my favourite shoes", "young dog gnawed beloved footwear"),
    ("they sailed across the lake at sunset", "a boat trip over water as evening fell"),
    ("the phone rang in the middle of the night", "a call woke us at three"),
    ("the mayor opened the new library", "city leader inaugurated a book building"),
    ("rain flooded the basement last week", "water filled our cellar recently"),
    ("the chef burned the rice again", "cook scorched grains once more"),
    ("an owl hooted in the dark forest", "a night bird called among black woods"),
]
LIBRI_PARAPHRASES = {
    "will there be any harm in my calling on Miss Tilney today": "is it wrong to visit that lady now",
    "I shall not be easy till I have explained everything": "my mind won't rest until it's all clarified",
    "the adventure of the cart": "a wagon escapade",
    "it befell in the month of May": "this happened during springtime",
    "with her white paint and her scarlet smoke stack": "a vessel coloured snowy with a crimson funnel",
    "one of the two small steamers": "a pair of little ships",
}
FONTS = [
    None,
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Oblique.ttf",
]
LINES = [
    "Quarterly results review", "Welcome to the science fair", "Exit through the east gate", "Chapter three the return",
    "Final score home team wins", "Safety first wear a helmet", "Annual general meeting", "Breaking news flood warning",
    "Happy birthday grandma", "Platform four to the airport", "Closing ceremony tonight", "Fresh fish market prices",
    "Department of marine biology", "Lost and found office", "Welcome aboard captain", "Tickets sold out today",
    "Introduction to machine learning", "Garden centre open daily", "Road closed for repairs", "Thank you for watching",
    "Museum of modern art", "Winter sale starts monday", "Keep calm and carry on", "Hospital visiting hours",
]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "media" / "librosa"


def build_speech(folder: Path, videos: int, seed: int, sentences: str = "main", voice: str | None = None) -> list[dict]:
    """Talking videos (3 sentences each, espeak-ng ``voice``) and, with the ``main`` sentences, the LibriSpeech
    clips; returns one truth row per sentence."""
    from mmsearch.synth.talking import Voice, write_talking_video

    rng = np.random.default_rng(seed)
    truth = []
    pairs = SENTENCES if sentences == "main" else HELDOUT_SENTENCES
    order = list(range(len(pairs)))
    for v in range(videos):
        voices, at = [], float(rng.uniform(1.0, 4.0))
        for j in range(3):
            sentence, paraphrase = pairs[order[(3 * v + j) % len(order)]]
            samples = speak(sentence, voice=voice)
            onset = float(np.argmax(np.abs(samples) > 0.01)) / 16000
            voices.append(Voice(samples, at))
            truth.append({"file": f"talk{v:02d}.mp4", "sentence": sentence, "paraphrase": paraphrase, "onset": round(at + onset, 3)})
            at += len(samples) / 16000 + float(rng.uniform(3.0, 8.0))
        write_talking_video(folder / f"talk{v:02d}.mp4", seconds=max(45.0, at + 2.0), voices=voices, seed=v)
    if sentences == "main" and (SHARED / "SPEECH.md").is_file():
        table = (SHARED / "SPEECH.md").read_text(encoding="utf-8")
        for line in table.splitlines():
            m = re.match(r"\|\s*([\w.-]+\.ogg)\s*\|(.*)\|", line)
            if m:
                shutil.copy(SHARED / m.group(1), folder / m.group(1))
                for phrase in re.findall(r'"([^"]+)"', m.group(2)):
                    truth.append({"file": m.group(1), "sentence": phrase, "paraphrase": LIBRI_PARAPHRASES[phrase], "onset": None})
    return truth


def build_slides(folder: Path, count: int, seed: int) -> list[dict]:
    """Videos of 30 s showing 3 lines one after another; returns one truth row per line."""
    from mmsearch.synth.talking import Caption, write_talking_video

    rng = np.random.default_rng(seed + 1)
    truth = []
    fonts = [f for f in FONTS if f is None or Path(f).is_file()]
    for v in range(count):
        captions = []
        for j in range(3):
            text = LINES[(3 * v + j) % len(LINES)]
            start, end = 10.0 * j + float(rng.uniform(0, 2)), 10.0 * (j + 1)
            bright = int(rng.integers(180, 256))
            captions.append(Caption(
                text, round(start, 1), end, position=(float(rng.uniform(0.02, 0.3)), float(rng.uniform(0.05, 0.8))),
                size=int(rng.integers(24, 56)), colour=tuple(int(c) for c in rng.integers(0, 80, 3)) if j % 2 else (bright, bright, bright),
                background=(235, 230, 220) if j % 2 else tuple(int(c) for c in rng.integers(0, 90, 3)), font=fonts[int(rng.integers(len(fonts)))],
            ))
            truth.append({"file": f"slides{v:02d}.mp4", "line": text, "start": captions[-1].start, "end": end})
        write_talking_video(folder / f"slides{v:02d}.mp4", seconds=30.0, captions=captions, size=(960, 540), seed=100 + v)
    return truth


def quoted(sentence: str) -> str:
    words = sentence.split()
    return '"' + " ".join(words[:5] if len(words) <= 6 else words[1:6]) + '"'


def speech_scores(index, truth: list[dict], modality: str | None) -> dict:
    out = {}
    for kind in ("quoted", "paraphrase"):
        rows = []
        for t in truth:
            q = quoted(t["sentence"]) if kind == "quoted" else t["paraphrase"]
            found = index.search(q, modality=modality, k=5)
            top = found[0] if found else None
            right_file = top is not None and Path(top.path).name == t["file"]
            if t["onset"] is not None:
                ok = right_file and abs(top.start - t["onset"]) <= 0.5
            elif kind == "quoted":
                ok = right_file and " ".join(words_of(q)) in " ".join(words_of(top.text or ""))
            else:
                ok = right_file
            rows.append({"query": q, "file": t["file"], "ok": bool(ok), "top": None if top is None else
                         {"file": Path(top.path).name, "start": top.start, "end": top.end, "text": top.text, "modality": top.modality}})
        out[kind] = {"queries": len(rows), "right": sum(r["ok"] for r in rows),
                     "share": round(sum(r["ok"] for r in rows) / max(1, len(rows)), 3), "misses": [r for r in rows if not r["ok"]]}
    return out


def transcript_wer(index, truth: list[dict]) -> float:
    """Mean word error rate of the espeak-ng sentences: each against the indexed segment of its own file
    that shares most of its words (of equals, the one starting nearest its onset)."""
    space = index.snapshot.spaces["speech"]
    rows = space.segment_rows
    texts = [t or "" for t in rows.column("text").to_pylist()]
    files = [Path(index._rows[m]["path"]).name for m in rows.column("media_id").to_pylist()]
    starts = rows.column("start").to_pylist()
    wers = []
    for t in truth:
        if t["onset"] is None:
            continue
        ref = words_of(t["sentence"])
        own = [i for i, f in enumerate(files) if f == t["file"]]
        best = max(own, key=lambda i: (len(set(words_of(texts[i])) & set(ref)), -abs(starts[i] - t["onset"])), default=None)
        wers.append(wer(ref, words_of(texts[best]) if best is not None else []))
    return round(float(np.mean(wers)), 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=8, help="talking videos (3 sentences each)")
    p.add_argument("--slides", type=int, default=8, help="videos with lines of text on screen (3 each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sentences", choices=("main", "heldout"), default="main",
                   help="main: the sentences and LibriSpeech phrases of the README; heldout: 24 others, no LibriSpeech")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--voice", default=None, help="espeak-ng voice of the sentences (default: its own formant voice; "
                   "mb-us1: an MBROLA diphone voice, Debian packages mbrola and mbrola-us1 in contrib/non-free)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--workdir", type=Path, default=None, help="keep the media and indexes here; a second run reuses them")
    args = p.parse_args(argv)
    if not shutil.which("espeak-ng"):
        raise SystemExit("benchmarks/words.py speaks its sentences with espeak-ng: apt-get install espeak-ng")
    import mmsearch
    from mmsearch import ocr
    from mmsearch.metrics import temporal_iou
    from mmsearch.audio import probe_audio
    from mmsearch.speech import load_asr_model, transcribe

    info = machine_info()
    print(f"machine: {describe(info)}", flush=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="words-bench-"))
    results: dict = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        talk, slides = work / "talk", work / "slides"
        saved = work / "truth.json"
        if saved.is_file():  # --workdir of an earlier run: its media, truth, timings and indexes
            speech_truth, slide_truth, timings = json.loads(saved.read_text()).values()
        else:
            speech_truth = build_speech(talk, args.videos, args.seed, args.sentences, args.voice)
            slide_truth = build_slides(slides, args.slides, args.seed)
            timings = {}
            for label, options in (("pictures+sound", dict(speech=False, ocr=False)), ("+speech+ocr", {})):
                t0 = time.perf_counter()
                report = mmsearch.index_paths([talk, slides], work / f"index-{label}", model="synth-clip", **options)
                timings[label] = time.perf_counter() - t0
                if report.failed or report.partial:
                    raise SystemExit(f"indexing failed: {report.failed} {report.partial}")
            saved.write_text(json.dumps({"speech": speech_truth, "slides": slide_truth, "timings": timings}))
        video_seconds = sum(probe_audio(f).duration for f in talk.glob("*.mp4")) + 30.0 * args.slides
        index = mmsearch.open_index(work / "index-+speech+ocr")
        added = timings["+speech+ocr"] - timings["pictures+sound"]
        results["indexing"] = {
            "video_seconds": round(video_seconds, 1), "wall_s": {k: round(v, 2) for k, v in timings.items()},
            "added_per_video_hour_s": round(added / video_seconds * 3600, 1),
        }
        print(f"\nindexing {video_seconds:.0f} s of video (+ {len(list(talk.glob('*.ogg')))} LibriSpeech clips): "
              f"pictures+sound {timings['pictures+sound']:.1f} s, with speech and OCR {timings['+speech+ocr']:.1f} s "
              f"-> speech and OCR add {added / video_seconds * 3600 / 60:.1f} min per hour of video", flush=True)

        print(f"\nspeech: {len(speech_truth)} sentences ({sum(t['onset'] is not None for t in speech_truth)} espeak-ng at known "
              f"seconds, {sum(t['onset'] is None for t in speech_truth)} LibriSpeech phrases)")
        print(f"{'modality':<22} {'quoted phrase':>14} {'paraphrase':>11}")
        speech = {}
        # default-uncalibrated: the fused default as it was before picture moments were weighed against the
        # index's query probes (cohort_z), side by side in the same run
        for label, modality in (("speech", "speech"), ("default", None), ("all", "all"), ("default-uncalibrated", None)):
            if label == "default-uncalibrated":
                index._cohort = lambda space, hits, query: None
            row = speech_scores(index, speech_truth, modality)
            speech[label] = row
            print(f"{label:<22} {row['quoted']['right']:>9}/{row['quoted']['queries']:<4} "
                  f"{row['paraphrase']['right']:>7}/{row['paraphrase']['queries']:<4}", flush=True)
        del index._cohort
        speech["wer"] = transcript_wer(index, speech_truth)
        print(f"word error rate of the espeak-ng sentences as indexed: {speech['wer']}")
        results["speech"] = speech

        rows = []
        for t in slide_truth:
            found = index.search(t["line"], modality="text", k=5)
            top = found[0] if found else None
            ok = top is not None and Path(top.path).name == t["file"] and temporal_iou((top.start, top.end), (t["start"], t["end"])) >= 0.5
            rows.append({"line": t["line"], "ok": bool(ok), "top": None if top is None else
                         {"file": Path(top.path).name, "start": top.start, "end": top.end, "text": top.text}})
        right = sum(r["ok"] for r in rows)
        results["ocr"] = {"queries": len(rows), "right": right, "share": round(right / len(rows), 3), "misses": [r for r in rows if not r["ok"]]}
        print(f"\non-screen text: {right}/{len(rows)} lines found in the right file with IoU >= 0.5")

        model = load_asr_model("base", threads=args.threads)
        seconds, t0 = 0.0, time.perf_counter()
        for f in sorted(talk.iterdir()):
            seconds += probe_audio(f).duration
            transcribe(f, model)
        wall = time.perf_counter() - t0
        engine = ocr.OcrEngine(threads=args.threads)
        sampled: list[int] = []
        t1 = time.perf_counter()
        for f in sorted(slides.glob("*.mp4")):
            ocr.ocr_video(f, engine=engine, on_frame=lambda: sampled.append(1))
        frames = len(sampled)
        ocr_wall = time.perf_counter() - t1
        from mmsearch.textsearch import LexicalIndex

        rng = np.random.default_rng(args.seed)
        vocabulary = sorted({w for s, p in SENTENCES for w in (s + " " + p).split()} | {f"word{i}" for i in range(20000)})
        corpus = [" ".join(rng.choice(vocabulary, size=int(rng.integers(4, 15)))) for _ in range(100_000)]
        t2 = time.perf_counter()
        lexical = LexicalIndex(corpus)
        build = time.perf_counter() - t2
        t3 = time.perf_counter()
        for sentence, _ in SENTENCES:
            lexical.search(sentence, 100)
        lookup = (time.perf_counter() - t3) / len(SENTENCES)
        results["speed"] = {"speech_realtime_x": round(seconds / wall, 2), "audio_seconds": round(seconds, 1),
                            "ocr_frames_per_s": round(frames / ocr_wall, 2), "ocr_frames_sampled": frames,
                            "bm25_build_s_per_100k_segments": round(build, 2), "bm25_query_ms_at_100k": round(lookup * 1000, 2)}
        print(f"\nspeed: Whisper base int8 {seconds / wall:.1f}x real time ({seconds:.0f} s of sound), "
              f"OCR {frames / ocr_wall:.1f} sampled frames/s (960x540, 1 every 2 s; unchanged frames are not read again); "
              f"BM25 over 100k segments: built in {build:.2f} s, {lookup * 1000:.1f} ms a query")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
