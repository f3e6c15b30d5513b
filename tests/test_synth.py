"""Tests for the synthetic ground-truth world (mmsearch.synth)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from mmsearch.synth import (
    AUDIO_CAPTIONS,
    AUDIO_CLASSES,
    SHAPES,
    VISUAL_CAPTIONS,
    VISUAL_COLOURS,
    SynthConfig,
    generate_corpus,
    load_ground_truth,
    render_background,
    render_visual_event,
    sample_audio_caption_pairs,
    sample_image_caption_pairs,
    synth_audio_event,
)

SMALL = dict(max_size=(320, 240), event_seconds=(2.0, 3.0), gap_seconds=(1.0, 2.0))


def _nearest_colour(rgb: np.ndarray) -> str:
    return min(VISUAL_COLOURS, key=lambda c: float(np.sum((np.asarray(VISUAL_COLOURS[c]) - rgb) ** 2)))


def _decode_video(path: Path) -> tuple[list[float], list[np.ndarray], float]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        times, frames = [], []
        for f in c.decode(stream):
            times.append(float(f.time))
            frames.append(f.to_ndarray(format="rgb24"))
        duration = c.duration / 1e6
    return times, frames, duration


def _decode_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        chunks, sr = [], None
        for f in c.decode(stream):
            sr = f.sample_rate
            a = f.to_ndarray()
            if a.dtype == np.int16:
                a = a.astype(np.float32) / 32768.0
            chunks.append(a.reshape(-1) if a.shape[0] == 1 else a.mean(axis=0))
    assert sr is not None
    return np.concatenate(chunks).astype(np.float32), sr


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _gaps(rows: list[dict], duration: float) -> list[tuple[float, float]]:
    spans = sorted((r["start"], r["end"]) for r in rows)
    out, pos = [], 0.0
    for s, e in spans:
        if s > pos:
            out.append((pos, s))
        pos = max(pos, e)
    if duration > pos:
        out.append((pos, duration))
    return out


# --------------------------------------------------------------------------- constants
def test_world_constants() -> None:
    assert SHAPES == ("circle", "square", "triangle")
    assert len(VISUAL_CAPTIONS) == 15 and "a red circle" in VISUAL_CAPTIONS
    assert AUDIO_CLASSES == ("high tone", "low tone", "fast beat", "slow beat", "noise", "chord")
    assert AUDIO_CAPTIONS == ("a high tone", "a low tone", "a fast beat", "a slow beat", "noise", "a chord")


# --------------------------------------------------------------------------- rendering
@pytest.mark.parametrize("shape,fill", [("circle", np.pi / 4), ("square", 1.0), ("triangle", 0.5)])
def test_render_visual_event_shape_and_colour(shape: str, fill: float) -> None:
    rng = np.random.default_rng(0)
    for colour in VISUAL_COLOURS:
        frames = render_visual_event(rng, f"a {colour} {shape}", 160, 120, n_frames=5, background=(20, 20, 20))
        assert frames.shape == (5, 120, 160, 3) and frames.dtype == np.uint8
        centroids = []
        for img in frames:
            mask = np.abs(img.astype(int) - 20).max(-1) > 60
            ys, xs = np.nonzero(mask)
            side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
            assert 0.2 * 120 - 2 <= side <= 0.6 * 120 + 2
            assert mask.sum() / side**2 == pytest.approx(fill, abs=0.12)
            assert _nearest_colour(img[mask].mean(0)) == colour
            centroids.append((xs.mean(), ys.mean()))
        step = np.abs(np.diff(np.asarray(centroids), axis=0)).max()
        assert step <= 0.15 * 160 / 4 + 1  # slow drift


def test_render_is_deterministic_and_background_dark() -> None:
    a = render_visual_event(np.random.default_rng(3), "a green square", 64, 48, n_frames=3)
    b = render_visual_event(np.random.default_rng(3), "a green square", 64, 48, n_frames=3)
    np.testing.assert_array_equal(a, b)
    bg = render_background(np.random.default_rng(1), 64, 48, n_frames=2)
    assert bg.shape == (2, 48, 64, 3)
    assert np.median(bg.reshape(-1, 3), axis=0).max() <= 70 + 1
    assert 1.0 < bg.astype(float).std(axis=(1, 2)).mean() < 8.0  # mild noise


def test_training_pair_samplers() -> None:
    rng = np.random.default_rng(5)
    imgs, caps = sample_image_caption_pairs(rng, 20, size=(64, 48))
    assert imgs.shape == (20, 48, 64, 3) and imgs.dtype == np.uint8
    assert len(caps) == 20 and set(caps) <= set(VISUAL_CAPTIONS)
    audio, acaps = sample_audio_caption_pairs(rng, 8, 16000, 1.0)
    assert audio.shape == (8, 16000) and audio.dtype == np.float32
    assert set(acaps) <= set(AUDIO_CAPTIONS)
    assert 0.05 < np.abs(audio).max() <= 0.5 + 1e-6
    sub, scaps = sample_image_caption_pairs(rng, 4, captions=["a red circle"])
    assert sub.shape == (4, 64, 64, 3) and scaps == ["a red circle"] * 4


@pytest.mark.parametrize(
    "caption,lo,hi", [("a high tone", 1000, 2000), ("a low tone", 100, 250), ("a chord", 200, 400 * 2 ** (7 / 12))]
)
def test_synth_audio_event_frequency(caption: str, lo: float, hi: float) -> None:
    sr = 16000
    x = synth_audio_event(np.random.default_rng(2), caption, sr, 1.0)
    assert x.dtype == np.float32 and x.shape == (sr,)
    assert 0.1 - 1e-6 <= np.abs(x).max() <= 0.5 + 1e-6
    peak = np.argmax(np.abs(np.fft.rfft(x))) * sr / len(x)
    assert lo - 2 <= peak <= hi + 2


@pytest.mark.parametrize("caption,lo,hi", [("a fast beat", 4, 6), ("a slow beat", 1, 2)])
def test_beat_rate(caption: str, lo: int, hi: int) -> None:
    sr = 8000
    x = synth_audio_event(np.random.default_rng(4), caption, sr, 4.0)
    env = np.abs(x).reshape(-1, 80).max(1)  # 10 ms envelope
    onsets = np.flatnonzero((env[1:] > 0.5 * env.max()) & (env[:-1] <= 0.5 * env.max())) + 1
    hits = len(onsets) + (env[0] > 0.5 * env.max())
    assert lo * 4 - 1 <= hits <= hi * 4 + 1


# --------------------------------------------------------------------------- corpus
@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("corpus")
    cfg = SynthConfig(**SMALL, webm_probability=0.5)
    return out, generate_corpus(out, videos=3, audio=2, seed=11, config=cfg)


def test_corpus_layout_and_ground_truth(small_corpus: tuple[Path, list[dict]]) -> None:
    out, rows = small_corpus
    names = sorted(os.listdir(out))
    assert not [n for n in names if n.startswith(".")]  # no temp files left
    assert "ground_truth.json" in names and "ground_truth.parquet" in names
    assert len([n for n in names if n.startswith("video_")]) == 3
    assert len([n for n in names if n.startswith("audio_")]) == 2
    assert {r["file"] for r in rows} <= set(names)
    for r in rows:
        assert set(r) == {"file", "modality", "start", "end", "caption"}
        assert 0 <= r["start"] < r["end"]
        assert r["caption"] in (VISUAL_CAPTIONS if r["modality"] == "video" else AUDIO_CAPTIONS)
        if r["file"].startswith("audio_"):
            assert r["modality"] == "audio"
    assert load_ground_truth(out) == rows
    # parquet alone gives the same rows
    other = out.parent / "parquet_only"
    other.mkdir()
    (other / "ground_truth.parquet").write_bytes((out / "ground_truth.parquet").read_bytes())
    assert load_ground_truth(other) == rows


def test_load_ground_truth_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_ground_truth(tmp_path)


def test_determinism(tmp_path: Path, small_corpus: tuple[Path, list[dict]]) -> None:
    out, rows = small_corpus
    again = generate_corpus(tmp_path / "a", videos=3, audio=2, seed=11, config=SynthConfig(**SMALL, webm_probability=0.5))
    assert again == rows
    for name in {r["file"] for r in rows}:
        assert (tmp_path / "a" / name).read_bytes() == (out / name).read_bytes()
    other = generate_corpus(tmp_path / "b", videos=3, audio=2, seed=12, config=SynthConfig(**SMALL, webm_probability=0.5))
    assert other != rows


@pytest.mark.parametrize("webm", [False, True])
def test_video_frames_match_ground_truth(tmp_path: Path, webm: bool) -> None:
    cfg = SynthConfig(**SMALL, events_per_video=(2, 3), webm_probability=1.0 if webm else 0.0,
                      audio_in_video_probability=0.0)
    rows = generate_corpus(tmp_path, videos=1, audio=0, seed=3, config=cfg)
    name = rows[0]["file"]
    assert name.endswith(".webm" if webm else ".mp4")
    vis = [r for r in rows if r["modality"] == "video"]
    assert all(r["modality"] == "video" for r in rows) and 2 <= len(vis) <= 3
    times, frames, duration = _decode_video(tmp_path / name)
    last_end = max(r["end"] for r in vis)
    assert last_end <= duration + 1e-6 <= last_end + 2.0 + 0.2
    bg = frames[0].reshape(-1, 3).astype(float).mean(0)  # leading gap >= 1 s
    assert times[0] == 0.0 and vis[0]["start"] >= 1.0
    seen = set()
    for t, img in zip(times, frames):
        mask = np.abs(img.astype(float) - bg).max(-1) > 60
        active = [r for r in vis if r["start"] <= t < r["end"]]
        if active:  # exact boundaries: every frame inside shows the shape in its colour
            assert mask.mean() > 0.01, (t, active)
            assert _nearest_colour(img[mask].mean(0)) == active[0]["caption"].split()[1]
            seen.add(active[0]["caption"])
        else:
            assert mask.mean() < 0.001, (t, vis)
    assert seen == {r["caption"] for r in vis}


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
def test_audio_file_energy_and_frequency(tmp_path: Path, fmt: str) -> None:
    cfg = SynthConfig(**SMALL, audio_formats=(fmt,), audio_captions=("a high tone", "a low tone"),
                      events_per_audio=(2, 2))
    rows = generate_corpus(tmp_path, videos=0, audio=1, seed=5, config=cfg)
    assert rows[0]["file"] == f"audio_000.{fmt}"
    x, sr = _decode_audio(tmp_path / rows[0]["file"])
    duration = len(x) / sr
    assert duration >= rows[-1]["end"]
    margin = 0.1
    for r in rows:
        seg = x[int((r["start"] + margin) * sr) : int((r["end"] - margin) * sr)]
        assert _rms(seg) > 0.05
        freq = np.argmax(np.abs(np.fft.rfft(seg))) * sr / len(seg)
        lo, hi = (1000, 2000) if r["caption"] == "a high tone" else (100, 250)
        assert lo - 5 <= freq <= hi + 5, (r, freq)
    for s, e in _gaps(rows, rows[-1]["end"]):
        if e - s > 2 * margin:
            assert _rms(x[int((s + margin) * sr) : int((e - margin) * sr)]) < 0.003
    if fmt != "mp3":  # lossless: boundaries are exact to the sample
        ten_ms = sr // 100
        for r in rows:
            n0, n1 = round(r["start"] * sr), round(r["end"] * sr)
            assert abs(n0 - r["start"] * sr) < 1e-6 and abs(n1 - r["end"] * sr) < 1e-6  # whole samples
            assert not x[n0 - ten_ms : n0].any() and not x[n1 : n1 + ten_ms].any()
            assert _rms(x[n0 : n0 + ten_ms]) > 0.01 and _rms(x[n1 - ten_ms : n1]) > 0.01


def test_pairing_mode(tmp_path: Path) -> None:
    pairing = {"a red circle": "a high tone", "a blue square": "a low tone", "a green triangle": "noise"}
    cfg = SynthConfig(**SMALL, audio_pairing=pairing, gap_noise_amplitude=0.01, audio_in_video_probability=0.0,
                      webm_probability=0.5)
    rows = generate_corpus(tmp_path, videos=2, audio=0, seed=9, config=cfg)
    vis = [r for r in rows if r["modality"] == "video"]
    aud = [r for r in rows if r["modality"] == "audio"]
    assert vis and len(aud) == len(vis)
    for v in vis:
        assert v["caption"] in pairing
        match = [a for a in aud if a["file"] == v["file"] and a["start"] == v["start"] and a["end"] == v["end"]]
        assert [a["caption"] for a in match] == [pairing[v["caption"]]]
    for name in {r["file"] for r in rows}:
        x, sr = _decode_audio(tmp_path / name)
        file_rows = [a for a in aud if a["file"] == name]
        for a in file_rows:
            assert _rms(x[int((a["start"] + 0.1) * sr) : int((a["end"] - 0.1) * sr)]) > 0.05
        for s, e in _gaps(file_rows, len(x) / sr):
            if e - s > 0.3:
                gap = x[int((s + 0.1) * sr) : int((e - 0.1) * sr)]
                assert 0.001 < _rms(gap) < 0.02  # quiet noise, not silence


def test_soundtrack_independent_events(tmp_path: Path) -> None:
    cfg = SynthConfig(**SMALL, audio_in_video_probability=1.0, webm_probability=0.0)
    rows = generate_corpus(tmp_path, videos=1, audio=0, seed=21, config=cfg)
    aud = [r for r in rows if r["modality"] == "audio"]
    assert aud and all(r["file"] == "video_000.mp4" for r in aud)
    x, sr = _decode_audio(tmp_path / "video_000.mp4")
    for a in aud:
        assert _rms(x[int((a["start"] + 0.1) * sr) : int((a["end"] - 0.1) * sr)]) > 0.03
    for s, e in _gaps(aud, len(x) / sr):
        if e - s > 0.3:
            assert _rms(x[int((s + 0.1) * sr) : int((e - 0.1) * sr)]) < 0.003


# --------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(fps_range=(30, 10)),
        dict(min_size=(640, 480), max_size=(320, 240)),
        dict(max_size=(320,)),
        dict(event_seconds=(0.0, 1.0)),
        dict(gap_seconds=(-1.0, 1.0)),
        dict(events_per_video=(0, 2)),
        dict(webm_probability=1.5),
        dict(audio_in_video_probability=-0.1),
        dict(gap_noise_amplitude=0.1),
        dict(visual_captions=("a purple circle",)),
        dict(audio_captions=("a meow",)),
        dict(audio_pairing={"a red circle": "a meow"}),
        dict(audio_pairing={"a red circle": "a high tone"}, visual_captions=("a red circle", "a red square")),
        dict(audio_formats=("ogg",)),
        dict(sample_rate_range=(1, 100)),
    ],
)
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SynthConfig(**kwargs)


def test_bad_arguments_raise(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        generate_corpus(tmp_path, videos=-1, audio=0, seed=0)
    with pytest.raises(ValueError):
        generate_corpus(tmp_path, videos=1, audio=0, seed=-3)
    with pytest.raises(ValueError):
        generate_corpus(tmp_path, videos=1, audio=0, seed=0, config={"max_size": (320, 240)})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        render_visual_event(rng, "a purple circle", 64, 64)
    with pytest.raises(ValueError):
        render_visual_event(rng, "a red circle", 64, 64, n_frames=0)
    with pytest.raises(ValueError):
        render_visual_event(rng, "a red circle", 64, 64, background=np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError):
        synth_audio_event(rng, "a meow", 16000, 1.0)
    with pytest.raises(ValueError):
        synth_audio_event(rng, "a high tone", 16000, 0.0)
    with pytest.raises(ValueError):
        synth_audio_event(rng, "a high tone", 0, 1.0)
    with pytest.raises(ValueError):
        sample_image_caption_pairs(rng, -1)
    with pytest.raises(ValueError):
        sample_audio_caption_pairs(rng, 2, 16000, 1.0, captions=["nope"])
    assert not list(tmp_path.iterdir())  # nothing written on bad arguments


def test_pairing_defaults_visual_captions() -> None:
    cfg = SynthConfig(audio_pairing={"a red circle": "high tone"})
    assert cfg.used_visual_captions == ("a red circle",)
    assert cfg.audio_pairing == {"a red circle": "a high tone"}
