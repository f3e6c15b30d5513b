"""The VATT-style common space: heads learnt from co-occurrence make sound find the paired pictures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mmsearch
from mmsearch.common_space import COMMON_AUDIO, COMMON_VISUAL, HeadConfig, build_pairs, train_space
from mmsearch.errors import UsageError
from mmsearch.evaluation import best_event
from mmsearch.store import open_snapshot
from mmsearch.synth import generate_corpus, paired_config, synth_audio_event, write_wav


@pytest.fixture(scope="module")
def paired_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("paired")
    config = paired_config(5, 6, max_size=(160, 120), event_seconds=(3.0, 7.0), gap_seconds=(1.0, 3.0), webm_probability=0.0)
    truth = generate_corpus(root / "media", videos=14, audio=0, seed=5, config=config)
    index_dir = root / "index"
    # the common space pairs pictures with sound: no speech or on-screen text needed (5 of 21 s here)
    mmsearch.index_paths([root / "media"], index_dir, model="synth-clip", device="cpu", speech=False, ocr=False)
    return {"root": root, "truth": truth, "index": index_dir, "config": config}


def _accuracy(index_dir: Path, config, truth, tmp_path: Path, per_class: int = 3) -> float:
    idx = mmsearch.open_index(index_dir)
    rng = np.random.default_rng(99)
    right = total = 0
    for shape, sound in config.audio_pairing.items():
        for j in range(per_class):
            wav = tmp_path / f"{sound.replace(' ', '_')}-{j}.wav"
            write_wav(wav, synth_audio_event(rng, sound, 16000, 4.0), 16000)
            top = idx.search(audio=wav, modality="video", k=1)[0]
            assert top.modality == "video"
            right += best_event(top.path, top.start, top.end, shape, truth, modality="video")[1] >= 0.5
            total += 1
    return right / total


def test_pairs_are_frames_and_sound_of_the_same_moment(paired_world):
    snap = open_snapshot(paired_world["index"])
    pairs = build_pairs(snap, audio_window=2.0)
    assert len(pairs.visual) == len(pairs.audio) > 50
    assert np.allclose(np.linalg.norm(pairs.visual, axis=1), 1, atol=1e-5)
    # every pair comes from a video that has both streams, at a time inside that video
    rows = snap.media_rows()
    for media_id, t in zip(pairs.media_ids[:20], pairs.times[:20]):
        assert rows[int(media_id)]["kind"] == "video" and 0 <= t <= rows[int(media_id)]["duration"] + 1


def test_cross_modal_needs_training_first(paired_world, tmp_path):
    write_wav(tmp_path / "q.wav", synth_audio_event(np.random.default_rng(1), "a chord", 16000, 3.0), 16000)
    with pytest.raises(UsageError, match="train-space"):
        mmsearch.open_index(paired_world["index"]).search(audio=tmp_path / "q.wav", modality="video")


def test_trained_heads_find_the_paired_shape_untrained_do_not(paired_world, tmp_path):
    import shutil

    untrained = tmp_path / "untrained"
    shutil.copytree(paired_world["index"], untrained)
    train_space(untrained, untrained=True)
    baseline = _accuracy(untrained, paired_world["config"], paired_world["truth"], tmp_path)

    report = train_space(paired_world["index"], config=HeadConfig(epochs=40))
    assert report.losses[-1] < report.losses[0]
    assert report.loss_plot and Path(report.loss_plot).is_file()
    manifest = json.loads((paired_world["index"] / "manifest.json").read_text())
    assert manifest["common"]["version"] == 1 and manifest["common"]["trained"]
    assert {COMMON_VISUAL, COMMON_AUDIO} <= set(manifest["spaces"])
    trained = _accuracy(paired_world["index"], paired_world["config"], paired_world["truth"], tmp_path)
    assert trained >= 0.85, f"trained heads: {trained:.2f}"
    assert baseline <= 0.5, f"untrained heads should be near chance, got {baseline:.2f}"

    # image -> sound through the same space
    from PIL import Image

    from mmsearch.media import frame_at

    event = next(r for r in paired_world["truth"] if r["modality"] == "video")
    _, frame = frame_at(paired_world["root"] / "media" / event["file"], (event["start"] + event["end"]) / 2)
    Image.fromarray(frame).save(tmp_path / "frame.png")
    hits = mmsearch.open_index(paired_world["index"]).search(image=tmp_path / "frame.png", modality="audio", k=3)
    assert hits and hits[0].modality == "audio"
    sound = paired_world["config"].audio_pairing[event["caption"]]
    truth = paired_world["truth"]
    assert best_event(hits[0].path, hits[0].start, hits[0].end, sound, truth, modality="audio")[1] >= 0.5


def test_fusion_ranks_moments_matching_in_both_spaces_first(paired_world):
    """Per-moment fusion of picture and sound moments: where both match, the moment ranks first."""
    from mmsearch.retrieval import fuse_moments

    idx = mmsearch.open_index(paired_world["index"])
    snap = idx.snapshot
    truth = paired_world["truth"]
    for shape, sound in list(paired_world["config"].audio_pairing.items())[:3]:
        q_visual = idx.embed_queries(text=[shape], space="visual")
        q_audio = idx.embed_queries(text=[sound], space="audio")
        pictures = idx.search_hits(q_visual, space="visual", k=30)[0]
        sounds = idx.search_hits(q_audio, space="audio", k=30)[0]
        both = fuse_moments(pictures, [], k=3, sounds=sounds, sound_weight=0.5)
        rows = snap.media_rows()
        assert {space for _, space, _ in both} <= {None, "audio"}
        for hit, _, _ in both[:2]:
            assert best_event(rows[hit.media_id]["path"], hit.start, hit.end, shape, truth, modality="video")[1] >= 0.5
        # weight 0 on a space removes it: the fused ranking equals that of the other space alone
        only_visual = fuse_moments(pictures, [], k=3, sounds=sounds, sound_weight=0.0)
        assert [(h.media_id, h.start) for h, _, _ in only_visual] == [(h.media_id, h.start) for h in pictures[:3]]
        only_sound = fuse_moments(pictures, [], k=3, sounds=sounds, sound_weight=1.0)
        assert [(h.media_id, h.start, space) for h, space, _ in only_sound] == [(h.media_id, h.start, "audio") for h in sounds[:3]]
    # through the public API, --modality all returns fused moments
    hits = idx.search(next(iter(paired_world["config"].audio_pairing)), modality="all", k=3)
    assert hits and {h.modality for h in hits} <= {"video", "audio"}
