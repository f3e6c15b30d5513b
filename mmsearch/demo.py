"""``mmsearch demo``: a small synthetic world, indexed with the shipped tiny models and queried.

Runs fully offline in well under a minute on two CPU cores. Every hit is
printed beside the ground truth, so a user sees at once whether the right
file and the right seconds came back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .api import index_paths, open_index
from .evaluation import best_event
from .config import IngestConfig
from .synth import SynthConfig, generate_corpus
from .synth.vocabulary import _audio_class

DEMO_SEED = 2026  # not a training seed of the shipped models


@dataclass
class DemoResult:
    corpus: Path
    index: Path
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per query
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(
    out_dir: str | Path,
    *,
    videos: int = 8,
    audio: int = 4,
    seed: int = DEMO_SEED,
    device: str = "cpu",
    queries: tuple[tuple[str, str], ...] | None = None,  # (text, modality)
    words: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Generate the world (and, with ``words``, a video in which a sentence is said and a line is
    written), index it with the shipped tiny models and Whisper base, and ask the queries. With
    ``words`` the frames are captioned too (``synth-coca``) and one shape is also looked for in the
    captions (``--modality caption``)."""
    out = Path(out_dir)
    corpus, index_dir = out / "media", out / "index"
    result = DemoResult(corpus, index_dir)
    t0 = time.perf_counter()
    config = SynthConfig(
        max_size=(480, 270), events_per_video=(2, 3), event_seconds=(3.0, 8.0), gap_seconds=(1.0, 3.0),
        audio_in_video_probability=0.0, events_per_audio=(2, 3),
    )
    truth = generate_corpus(corpus, videos=videos, audio=audio, seed=seed, config=config)
    if words:
        truth += _talking_video(corpus / "talk.mp4")
    result.seconds["generate"] = time.perf_counter() - t0
    log(
        f"generated {videos} videos with {sum(r['modality'] == 'video' for r in truth)} visual events and "
        f"{audio} audio files with {sum(r['modality'] == 'audio' for r in truth)} sound events in {corpus}"
    )

    t0 = time.perf_counter()
    report = index_paths(
        [corpus], index_dir, model="synth-clip", sound_tags="synth-ast", device=device, config=IngestConfig(commit_seconds=600),
        speech=words, ocr=words, captions="synth-coca" if words else None,
    )
    result.seconds["index"] = time.perf_counter() - t0
    log(
        f"indexed {len(report.indexed)} files ({report.frames} frames, {report.audio_windows} audio windows, "
        f"{report.text_segments} sentences, lines of text and captions) with synth-clip, synth-clap, synth-ast"
        f"{', synth-coca, Whisper base, RapidOCR and all-MiniLM-L6-v2' if words else ''} into {index_dir}"
    )

    sound: tuple[str, ...] = ()
    if queries is None:  # the captions the corpus has, in order of appearance: four visual, three sound
        visual = tuple(dict.fromkeys(r["caption"] for r in truth if r["modality"] == "video"))[:4]
        sound = tuple(dict.fromkeys(r["caption"] for r in truth if r["modality"] == "audio"))[:3]
        queries = tuple((q, "video") for q in visual) + tuple((q, "audio") for q in sound)
        if words:
            queries += tuple((r["caption"], r["modality"]) for r in truth if r["modality"] in ("speech", "text"))
            queries += tuple((q, "caption") for q in visual[:1])  # a shape, found by the words of its captions
    asked: list[tuple[str, str, str | None]] = [(q, m, None) for q, m in queries]
    if sound:  # the first sound again, with the tag filter: only where synth-ast heard it
        asked.append((sound[0], "audio", _audio_class(sound[0])))
    t0 = time.perf_counter()
    idx = open_index(index_dir, device=device)
    for query, modality, tag in asked:
        hits = idx.search(query, modality=modality, k=3, where={"tags": [tag]} if tag else None)
        present = any(r["caption"] == query for r in truth)
        row: dict[str, Any] = {"query": query, "modality": modality, "in_corpus": present, "hits": [], "tag": tag}
        for hit in hits:
            event, iou = best_event(hit.path, hit.start, hit.end, query, truth, modality="video" if modality == "caption" else modality)
            row["hits"].append({**hit.to_dict(), "truth": event, "iou": iou})
        result.rows.append(row)
    result.seconds["query"] = time.perf_counter() - t0
    return result


def _talking_video(path: Path) -> list[dict[str, Any]]:
    """A video in which two shipped espeak-ng sentences are said and a line is written; its truth rows
    (the ``caption`` of each is the query that should find it)."""
    from .synth.talking import Caption, Voice, onset_seconds, packaged_voice, write_talking_video

    boat, _ = packaged_voice("boat")
    umbrella, _ = packaged_voice("umbrella")
    write_talking_video(path, seconds=20, voices=[Voice(boat, 2.0), Voice(umbrella, 11.0)], captions=[Caption("HARBOUR LIGHTS", 0, 8)])
    said = 2.0 + onset_seconds(boat)
    return [
        {"file": path.name, "modality": "speech", "start": round(said, 3), "end": round(2.0 + len(boat) / 16000, 3),
         "caption": "the story about the boat"},
        {"file": path.name, "modality": "text", "start": 0.0, "end": 8.0, "caption": "harbour lights"},
    ]
