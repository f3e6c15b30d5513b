"""The shipped synth-clip finds held-out synthetic events: right video, right seconds (CPU, ~30 s)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import mmsearch
from mmsearch.synth import VISUAL_CAPTIONS, SynthConfig, generate_corpus

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "synth_quality.py"
SEED = 1001  # training draws from seed-0 streams only; evaluation corpora use seeds >= 1000


def _bench():
    spec = importlib.util.spec_from_file_location("_synth_quality_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth-held-out")
    rows = generate_corpus(root / "corpus", videos=6, audio=0, seed=SEED,
                           config=SynthConfig(max_size=(320, 240), audio_in_video_probability=0.0))
    report = mmsearch.index_paths([root / "corpus"], root / "index", model="synth-clip", device="cpu")
    assert report.failed == [] and len(report.indexed) == 6
    return {"corpus": root / "corpus", "rows": rows, "index": mmsearch.open_index(root / "index", device="cpu")}


def test_shipped_checkpoint_is_small_and_half_precision():
    import torch

    from mmsearch.encoders.base import packaged_asset

    path = Path(packaged_asset("synth-clip.pt"))
    assert path.stat().st_size < 6_000_000
    state = torch.load(path, map_location="cpu")["state_dict"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}


@pytest.mark.parametrize("exhaustive", [False, True], ids=["two-stage", "exhaustive"])
def test_text_queries_find_held_out_events(held_out, exhaustive):
    result = _bench().score_queries(held_out["index"], held_out["corpus"], held_out["rows"], exhaustive=exhaustive)
    s = result["summary"]
    present = {r["caption"] for r in held_out["rows"] if r["modality"] == "video"}
    assert s["queries"] == len(present) >= 8  # only captions with an event in the corpus count
    misses = [(q["caption"], q["file"], q["start"], q["end"], round(q["iou"], 2))
              for q in result["queries"] if not (q["top_video"] and q["iou"] >= 0.5)]
    assert s["top_video"] >= 0.95, misses
    assert s["iou@0.5"] >= 0.9, misses
    assert s["mean_iou"] >= 0.7, misses


def test_text_to_event_frames_beats_text_to_gap_frames(held_out):
    """Per frame: a caption is closer to frames showing it than to background-only frames of the same video."""
    import numpy as np

    idx = held_out["index"]
    space = idx.snapshot.spaces["visual"]
    texts = idx.embed_queries(text=list(VISUAL_CAPTIONS))
    by_name = {Path(r["path"]).name: m for m, r in idx.snapshot.media_rows().items()}
    gaps, events = [], []
    for name, media_id in by_name.items():
        ts, vecs = space.frames_of(media_id)
        own = [r for r in held_out["rows"] if r["file"] == name and r["modality"] == "video"]
        for t, v in zip(ts, vecs):
            ev = next((r for r in own if r["start"] <= t < r["end"]), None)
            sims = texts @ v
            if ev is None:
                gaps.append(sims.max())
            else:
                events.append(sims[VISUAL_CAPTIONS.index(ev["caption"])])
    assert gaps and events
    assert np.percentile(events, 5) > np.max(gaps) + 0.1
