"""The audio space end to end: sound files and soundtracks indexed, text-to-audio and sound-to-sound queries."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mmsearch
from mmsearch.evaluation import best_event
from mmsearch.synth import AUDIO_CAPTIONS, SynthConfig, generate_corpus, synth_audio_event, write_wav


@pytest.fixture(scope="module")
def audio_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio-world")
    config = SynthConfig(
        max_size=(160, 120), audio_in_video_probability=1.0, events_per_audio=(2, 3), event_seconds=(3.0, 8.0),
        gap_seconds=(1.0, 3.0), webm_probability=0.0,
    )
    truth = generate_corpus(root / "media", videos=3, audio=8, seed=4242, config=config)
    index_dir = root / "index"
    report = mmsearch.index_paths([root / "media"], index_dir, model="synth-clip", device="cpu")
    return {"root": root / "media", "truth": truth, "index": index_dir, "report": report}


def test_audio_files_and_soundtracks_are_indexed(audio_world):
    report = audio_world["report"]
    assert report.failed == []
    assert len(report.indexed) == 11 and report.audio_windows > 0
    idx = mmsearch.open_index(audio_world["index"])
    info = idx.info()
    assert info["media"] == {"video": 3, "audio": 8}
    assert info["spaces"]["audio"]["encoder"]["model"] == "synth-clap"
    assert info["spaces"]["audio"]["frames"] > 0
    kinds = {r["kind"]: r["spaces"] for r in idx.snapshot.media_rows().values()}
    assert kinds["audio"] == "audio,speech" and kinds["video"] == "audio,speech,text,visual"


def test_text_to_audio_finds_file_and_moment(audio_world):
    idx = mmsearch.open_index(audio_world["index"])
    truth = [r for r in audio_world["truth"] if r["modality"] == "audio"]
    asked = right_file = right_moment = 0
    for caption in AUDIO_CAPTIONS:
        if not any(r["caption"] == caption for r in truth):
            continue
        asked += 1
        top = idx.search(caption, modality="audio", k=3)[0]
        assert top.modality == "audio"
        event, iou = best_event(top.path, top.start, top.end, caption, truth, modality="audio")
        right_file += event is not None
        right_moment += iou >= 0.5
    assert asked >= 5
    # each sound is heard in 3 to 7 of the 11 files: the right file alone is often luck, the right moment is not
    assert right_file / asked >= 0.8 and right_moment / asked >= 0.8


def test_query_by_sound_file_and_modality_all(audio_world, tmp_path):
    idx = mmsearch.open_index(audio_world["index"])
    truth = [r for r in audio_world["truth"] if r["modality"] == "audio"]
    # every sound of the corpus as a fresh 4 s clip: the top moment is that sound (IoU >= 0.5 with one of its events)
    captions = [c for c in AUDIO_CAPTIONS if any(r["caption"] == c for r in truth)]
    found = 0
    for caption in captions:
        clip = synth_audio_event(np.random.default_rng(7), caption, 16000, 4.0)
        write_wav(tmp_path / "q.wav", clip, 16000)
        top = idx.search(audio=tmp_path / "q.wav", k=3)[0]
        assert top.modality == "audio"
        found += best_event(top.path, top.start, top.end, caption, truth, modality="audio")[1] >= 0.5
    assert len(captions) >= 5 and found >= len(captions) - 1, f"{found} of {len(captions)} sounds found at their moment"
    mixed = idx.search("a red circle", modality="all", k=6)
    assert {r.modality for r in mixed} >= {"audio"} and {r.modality for r in mixed} & {"video", "image"}


@pytest.mark.slow  # mmsearch query as a whole process
def test_cli_audio_query_json(audio_world):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "from mmsearch.cli import main; main()", "query", "a chord", "--modality", "audio",
         "--json", "--index", str(audio_world["index"])],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["query"]["modality"] == "audio"
    assert payload["results"] and all(r["modality"] == "audio" for r in payload["results"])
