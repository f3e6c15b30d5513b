"""Variation families of the synthetic world, and the shipped tiny models on the held-out one (issue #14, fault 10).

The models are trained on the ``"train"`` family; the ``"heldout"`` family draws
parameters training never draws. The model tests would fail with models that
only know the default generator (the shipped ones before this change classified
half of the held-out sounds right: slow beats and chords heard as noise or high
tones).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from mmsearch.errors import UsageError
from mmsearch.synth import (
    AUDIO_CAPTIONS,
    SynthConfig,
    generate_corpus,
    synth_audio_event,
)
from mmsearch.synth import families as fam


def _overlap(a: fam.Bands, b: fam.Bands) -> bool:
    return any(lo1 < hi2 and lo2 < hi1 for lo1, hi1 in a for lo2, hi2 in b)


# --------------------------------------------------------------------------- the families
def test_heldout_parameters_are_never_drawn_by_training() -> None:
    for cls in ("high tone", "low tone"):
        assert not _overlap(fam.PITCH_HZ["train"][cls], fam.PITCH_HZ["heldout"][cls])
    for cls in ("fast beat", "slow beat"):
        assert not _overlap(fam.BEATS_PER_S["train"][cls], fam.BEATS_PER_S["heldout"][cls])
    for table in (fam.CHORD_ROOT_BANDS, fam.SHAPE_SIZE_BANDS, fam.SHADE_BANDS, fam.NOISE_LOW_CUT_HZ):
        assert not _overlap(table["train"], table["heldout"])
    for choices in (fam.TONE_TIMBRES, fam.ENVELOPES, fam.NOISE_COLOURS, fam.BEAT_BODIES, fam.BACKGROUNDS):
        assert not set(choices["train"]) & set(choices["heldout"])
    # and draws stay inside their bands (property over many draws)
    rng = np.random.default_rng(0)
    for bands in (fam.PITCH_HZ["train"]["high tone"], fam.SHAPE_SIZE_BANDS["train"], fam.CHORD_ROOT_BANDS["heldout"]):
        for _ in range(500):
            v = fam.draw_band(rng, bands, log=True)
            assert any(lo <= v <= hi for lo, hi in bands)


@pytest.mark.parametrize("family", ["train", "heldout"])
@pytest.mark.parametrize("caption", AUDIO_CAPTIONS)
def test_family_sounds_are_finite_and_scaled(family: str, caption: str) -> None:
    for sr in (8000, 22050):
        x = synth_audio_event(np.random.default_rng(5), caption, sr, 1.5, amplitude=0.4, family=family)
        assert x.dtype == np.float32 and x.shape == (int(1.5 * sr),) and np.isfinite(x).all()
        assert 0.2 <= np.abs(x).max() <= 0.45


def test_heldout_beats_have_the_class_tempo_and_no_tonal_click() -> None:
    sr = 8000
    x = synth_audio_event(np.random.default_rng(4), "slow beat", sr, 8.0, amplitude=0.5, family="heldout")
    env = np.abs(x).reshape(-1, 80).max(1)  # 10 ms envelope
    loud = env > 0.3 * env.max()
    onsets = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    assert 8 * 1.3 - 2 <= len(onsets) + loud[0] <= 8 * 1.6 + 1
    # a bare noise burst: no spectral line stands out (a click would put one at 150-400 Hz)
    spec = np.abs(np.fft.rfft(x))
    assert spec.max() < 8 * np.median(spec[spec > 0])


@pytest.mark.parametrize("colour,family", [("hiss", "train"), ("band", "heldout")])
def test_hiss_and_band_pass_noise_leave_out_what_is_under_their_cut(colour: str, family: str) -> None:
    """The training family's hiss starts at 700-2000 Hz, the held-out band-pass noise at 300-600 Hz: each has
    (next to) nothing under its cut-off band and most of its power above it (the bands do not meet: above)."""
    from mmsearch.synth.sound import _noise

    sr, n = 22050, 22050
    (lo, hi), = fam.NOISE_LOW_CUT_HZ[family]
    for seed in range(20):
        spec = np.abs(np.fft.rfft(_noise(np.random.default_rng(seed), colour, sr, n))) ** 2
        freqs = np.fft.rfftfreq(n, 1.0 / sr)
        assert spec[freqs < lo].sum() < 1e-9 * spec.sum()
        assert spec[freqs >= hi].sum() > 0.85 * spec.sum()


def test_family_is_validated() -> None:
    with pytest.raises(UsageError, match="family must be one of"):
        SynthConfig(family="wild")
    with pytest.raises(UsageError, match="family must be one of"):
        synth_audio_event(np.random.default_rng(0), "noise", 8000, 1.0, family="wild")


def test_heldout_paired_corpus_is_written(tmp_path: Path) -> None:
    from mmsearch.synth import paired_config

    cfg = paired_config(3, 6, max_size=(192, 144), event_seconds=(1.0, 1.5), gap_seconds=(0.5, 1.0),
                        family="heldout")
    rows = generate_corpus(tmp_path, videos=2, audio=1, seed=3, config=cfg)
    assert {r["modality"] for r in rows} == {"video", "audio"}
    for name in {r["file"] for r in rows if r["modality"] == "video"}:
        with av.open(str(tmp_path / name)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert frames and frames[0].shape[2] == 3
    # same seed and config, same bytes of ground truth
    again = generate_corpus(tmp_path / "again", videos=2, audio=1, seed=3, config=cfg)
    assert again == rows


# --------------------------------------------------------------------------- the shipped models
@pytest.fixture(scope="module")
def shipped() -> dict:
    from mmsearch.encoders import PRESETS, create_encoder

    return {name: create_encoder(PRESETS[name], device="cpu") for name in ("synth-clap", "synth-clip")}


def test_synth_clap_hears_the_heldout_family(shipped: dict) -> None:
    from mmsearch.train.heldout import heldout_sounds, score_sounds

    clips, labels = heldout_sounds(3, 8)
    result = score_sounds(shipped["synth-clap"], clips, labels)
    confusions = {c: {p: n for p, n in row.items() if n} for c, row in result["confusion"].items()}
    # before the training family, 0.5 here: tones, chords and beats heard as noise, noise as a high tone
    assert result["item_accuracy"] >= 0.8, confusions
    for caption, per in result["per_caption"].items():  # text -> sound: every caption finds its own class
        assert per["text_top1"] == caption, confusions
        if caption != "noise":  # band-pass noise (nothing under 300-600 Hz) is often heard as a chord: a known gap
            assert per["item_accuracy"] >= 0.9, confusions


def test_synth_clip_sees_the_heldout_family(shipped: dict) -> None:
    from mmsearch.train.heldout import heldout_frames, score_frames

    frames, labels = heldout_frames(3, 2)
    result = score_frames(shipped["synth-clip"], frames, labels)
    assert result["item_accuracy"] >= 0.95, result["confusion"]
    assert result["text_top1_right"] == 1.0


# --------------------------------------------------------------------------- the recipes draw the training family
def test_training_draws_come_from_the_training_family() -> None:
    from mmsearch.train.synth_clap import sample_training_window
    from mmsearch.train.synth_clip import INPUT_SIZE, render_training_frames

    rng = np.random.default_rng(0)
    for _ in range(6):
        x, cover = sample_training_window(rng, length=3.0)
        assert x.shape == (48000,) and x.dtype == np.float32 and np.isfinite(x).all()
        assert cover.shape == (len(AUDIO_CAPTIONS),) and 0.0 <= cover.sum() <= 1.0 + 1e-6
    frames = render_training_frames(rng, ["a red circle", None, "a white triangle"])
    assert all(f.dtype == np.uint8 and min(f.shape[:2]) == INPUT_SIZE for f in frames)
    with pytest.raises(UsageError, match="family must be one of"):
        sample_training_window(rng, family="heldout-typo")
