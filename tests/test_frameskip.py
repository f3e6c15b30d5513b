"""Faster indexing on a CPU without losing time or quality (issue #18): repeated frames are not
embedded (mmsearch.frameskip) and PyAV leaves non-reference frames undecoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import BLUE, GREEN, RED, WHITE, YELLOW, write_video

import mmsearch
from mmsearch.frameskip import FrameSkipper, SkipConfig
from mmsearch.media import get_backend
from mmsearch.moments import MomentConfig, moment_windows
from mmsearch.retrieval import unfold_repeats


def _scene(seed: int = 0, size: tuple[int, int] = (224, 398)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)
    img = np.stack([120 + 80 * np.sin(xx / 30), 100 + 60 * np.cos(yy / 25), 140 + 50 * np.sin((xx + yy) / 40)], -1)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def test_a_static_shot_with_grain_is_skipped_and_a_change_is_kept() -> None:
    skipper = FrameSkipper()
    base = _scene()
    assert skipper.keep(0.0, base)  # the first frame is always embedded
    rng = np.random.default_rng(1)
    for t in range(1, 6):  # the same shot, new grain each time
        grainy = np.clip(base.astype(np.int16) + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        assert not skipper.keep(float(t), grainy)
    assert skipper.skipped == 5
    caption = base.copy()
    caption[170:200, 20:120] = 250  # a caption appears in one corner (~4% of the picture)
    assert skipper.keep(6.0, caption)
    # a picture of another colour with the same brightness (grey alone would not see it)
    red, blue = np.full((120, 160, 3), RED, np.uint8), np.full((120, 160, 3), BLUE, np.uint8)
    assert abs(np.mean(red @ np.array([0.299, 0.587, 0.114])) - np.mean(blue @ np.array([0.299, 0.587, 0.114]))) < 3
    other = FrameSkipper()
    assert other.keep(0.0, red) and other.keep(1.0, blue)


def test_a_long_static_shot_is_still_embedded_every_max_gap_seconds() -> None:
    skipper = FrameSkipper(SkipConfig(max_gap=10.0))
    frame = _scene()
    kept = [t for t in range(60) if skipper.keep(float(t), frame)]
    assert kept == [0, 10, 20, 30, 40, 50]


def test_moment_windows_of_kept_frames_equal_those_of_every_frame() -> None:
    """A kept frame's segment covers the repeats skipped after it: its windows, media weights and
    localization curve are those every sampled frame would have given."""
    rng = np.random.default_rng(0)
    scenes = rng.standard_normal((4, 16)).astype(np.float32)
    runs = [(0, 7), (7, 8), (8, 19), (19, 25)]  # seconds: a 7 s shot, a 1 s flash, 11 s, 6 s
    every_t = np.arange(25, dtype=np.float64)
    every_v = np.concatenate([np.repeat(scenes[i : i + 1], b - a, axis=0) for i, (a, b) in enumerate(runs)])
    kept_t = np.array([a for a, _ in runs], np.float64)
    kept_e = np.array([b for _, b in runs], np.float64)
    config = MomentConfig(4.0, 2.0)
    want = moment_windows(every_t, every_v, duration=25.0, config=config)
    got = moment_windows(kept_t, scenes, duration=25.0, config=config, ends=kept_e, step=1.0)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # without the segments' ends, windows inside a long shot would have no frame and vanish
    assert len(moment_windows(kept_t, scenes, duration=25.0, config=config)[0]) < len(want[0])
    ts, scores = unfold_repeats(kept_t, kept_e, scenes @ scenes[2], 1.0)
    np.testing.assert_allclose(ts, every_t)
    np.testing.assert_allclose(scores, every_v @ scenes[2], rtol=1e-6)


def test_indexing_with_repeats_skipped_answers_as_indexing_every_frame(tmp_path, random_clip_checkpoint) -> None:
    """The same files, seconds and moment scores with --skip-similar and --keep-similar, from fewer frames."""
    root = tmp_path / "media"
    write_video(root / "a.mp4", [(RED, 6.0), (GREEN, 1.0), (BLUE, 7.0)])
    write_video(root / "b.mp4", [(YELLOW, 12.0), (WHITE, 3.0)])
    kw = dict(model="synth-clip", pretrained=str(random_clip_checkpoint), device="cpu", speech=False, ocr=False, audio=False)
    skip = mmsearch.index_paths([root], tmp_path / "skip", **kw)
    every = mmsearch.index_paths([root], tmp_path / "every", config=mmsearch.IngestConfig(skip_similar=False), **kw)
    assert every.frames == 14 + 15 and every.repeated_frames == 0
    assert skip.frames == 3 + 3 and skip.frames + skip.repeated_frames == every.frames  # yellow 12 s: kept at 0 and 10 (max gap)
    answers, moments = {}, {}
    for name in ("skip", "every"):
        idx = mmsearch.open_index(tmp_path / name, device="cpu")
        table = idx.snapshot.spaces["visual"].moments
        moments[name] = sorted(zip(table.column("media_id").to_pylist(), table.column("start").to_pylist(), table.column("end").to_pylist()))
        answers[name] = [
            [(Path(r.path).name, round(r.start, 3), round(r.end, 3), round(r.score, 4)) for r in idx.search(text=q, k=3, modality="video")]
            for q in ("a red square", "a green circle", "a blue shape", "yellow", "white")
        ] + [[(Path(r.path).name, round(r.start, 3), round(r.end, 3), round(r.score, 4)) for r in idx.search(text="red", k=3, modality="video", exhaustive=True)]]
    assert moments["skip"] == moments["every"]  # every window of every frame, none lost inside a long shot
    assert answers["skip"] == answers["every"]


def _numbered_video(path: Path, frames: int = 60, fps: int = 10) -> None:
    """H.264 with B-frames (x264 veryfast): frame i is a flat grey of level 40 + 3 i, so a picture tells its own number."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "veryfast", "bf": "3"}
        for i in range(frames):
            img = np.full((48, 64, 3), 40 + 3 * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_skipping_non_reference_frames_samples_the_same_frames_and_the_end(tmp_path) -> None:
    path = tmp_path / "numbered.mp4"
    _numbered_video(path)
    full, fast = get_backend("pyav"), get_backend("pyav", skip_nonref=True)
    want = [(t, f) for b in full.iter_frames(str(path), fps=1.0, short_side=None) for t, f in zip(b.timestamps, b.frames)]
    got = [(t, f) for b in fast.iter_frames(str(path), fps=1.0, short_side=None) for t, f in zip(b.timestamps, b.frames)]
    assert [t for t, _ in got] == [t for t, _ in want] == pytest.approx([0, 1, 2, 3, 4, 5])
    for (_, a), (t, b) in zip(want, got):
        np.testing.assert_array_equal(a, b)  # the very picture on screen at the target, not one before it
        assert round((float(b.mean()) - 40) / 3) == round(t * 10)
    assert fast.decoded_frames < full.decoded_frames == 60  # B-frames away from the targets were left undecoded
    assert fast.video_end == pytest.approx(full.video_end) == pytest.approx(6.0)
    assert fast.damaged_packets == 0 and fast.lost_seconds == 0.0


def test_skipping_non_reference_frames_keeps_a_long_held_last_picture(tmp_path) -> None:
    """Variable frame rate (a screen recording holds a picture for seconds): the last frame, a
    B-frame shown from 4.1 s to the end, is on screen at the 4 s... 5 s targets and is decoded."""
    from test_reliability import _vfr_video

    pts = _vfr_video(tmp_path / "vfr.mkv")
    full, fast = get_backend("pyav"), get_backend("pyav", skip_nonref=True)
    want = [t for b in full.iter_frames(str(tmp_path / "vfr.mkv"), fps=1.0, short_side=None) for t in b.timestamps]
    got = [t for b in fast.iter_frames(str(tmp_path / "vfr.mkv"), fps=1.0, short_side=None) for t in b.timestamps]
    assert got == want == pytest.approx([0.0, 0.6, 2.4, pts[-1]])


def test_a_later_run_may_change_the_run_choices_and_says_so(tmp_path, random_clip_checkpoint) -> None:
    """--keep-similar (like --decode-all, --image-runtime, --backend) on an existing index: the run
    says the index was built otherwise, indexes its new files its way, and the index records it."""
    import json

    root = tmp_path / "media"
    write_video(root / "a.mp4", [(RED, 6.0)])
    kw = dict(model="synth-clip", pretrained=str(random_clip_checkpoint), device="cpu", speech=False, ocr=False, audio=False)
    first = mmsearch.index_paths([root], tmp_path / "idx", **kw)
    assert first.frames == 1 and first.repeated_frames == 5
    write_video(root / "b.mp4", [(GREEN, 6.0)])
    second = mmsearch.index_paths([root], tmp_path / "idx", config=mmsearch.IngestConfig(skip_similar=False), **kw)
    assert second.indexed == [str(root / "b.mp4")] and second.frames == 6 and second.repeated_frames == 0
    assert [n for _, n in second.notes if "skip_similar=True" in n and "skip_similar=False" in n]  # the CLI prints notes
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["config"]["skip_similar"] is False
    third = mmsearch.index_paths([root], tmp_path / "idx", config=mmsearch.IngestConfig(skip_similar=False), **kw)
    assert not [n for _, n in third.notes if "built with" in n]  # the recorded choice is now the run's: no word


def _textured_video(path: Path, frames: int = 45, fps: int = 15) -> None:
    """H.264 at a high CRF (so the in-loop deblocking filter has block edges to smooth): a
    textured pattern that pans, keyframe only at the start, B-frames."""
    import av

    rng = np.random.default_rng(3)
    texture = np.clip(128 + 60 * rng.standard_normal((160, 280, 3)), 0, 255).astype(np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "38", "bf": "3", "g": "300"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[i : i + 96, 2 * i : 2 * i + 160]), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _decode(backend, path: Path) -> tuple[list[float], np.ndarray]:  # noqa: ANN001
    batches = list(backend.iter_frames(str(path), fps=1.0, short_side=None))
    return [t for b in batches for t in b.timestamps], np.concatenate([b.frames for b in batches])


def test_one_decoding_thread_gives_the_pictures_of_ffmpegs_threads(tmp_path) -> None:
    """Decoder threads (shared out among the decoder processes) change what decoding costs, not what it gives."""
    path = tmp_path / "textured.mp4"
    _textured_video(path)
    want_t, want = _decode(get_backend("pyav", skip_nonref=True), path)
    got_t, got = _decode(get_backend("pyav", skip_nonref=True, threads=1), path)
    assert got_t == want_t == pytest.approx([0.0, 1.0, 2.0])
    np.testing.assert_array_equal(got, want)
    with pytest.raises(mmsearch.UsageError, match="decoder threads"):
        get_backend("pyav", threads=-1)
    for bad in (-1, 1000):  # 1000 threads would not fit in a decoder's address space: every video would fail
        with pytest.raises(mmsearch.UsageError, match="--decoder-threads must be 0 .* to 64") as raised:
            mmsearch.IngestConfig(decoder_threads=bad)
        assert ("buy no speed" in str(raised.value)) == (bad > 64)  # the reason given only where it is the reason


def test_skipping_the_loop_filter_gives_the_same_times_and_nearly_the_same_pictures(tmp_path) -> None:
    """--skip-loop-filter (FFmpeg's skip_loop_filter=all): the same frames at the same seconds, not
    deblocked (so not identical), and close to the deblocked pictures (PSNR >= 30 dB here, at CRF 38
    up to two seconds after the only keyframe)."""
    path = tmp_path / "textured.mp4"
    _textured_video(path)
    want_t, want = _decode(get_backend("pyav", skip_nonref=True), path)
    fast = get_backend("pyav", skip_nonref=True, skip_loop_filter=True)
    got_t, got = _decode(fast, path)
    assert got_t == want_t and fast.video_end == pytest.approx(3.0)
    mse = ((got.astype(np.float64) - want) ** 2).reshape(len(got), -1).mean(axis=1)
    assert (mse > 0).all()  # no picture deblocked (35-39 dB here when written)
    psnr = 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))
    assert psnr.min() >= 30


def test_decoder_processes_share_the_cores_out(tmp_path, monkeypatch, random_clip_checkpoint) -> None:
    """Each decoder process gets the usable cores divided among the processes (at least one);
    --decoder-threads overrides, and --skip-loop-filter reaches the decoder and the manifest."""
    import json

    from mmsearch import ingest
    from mmsearch.api import ingest_config

    monkeypatch.setattr(ingest, "usable_cores", lambda: 2)
    assert [ingest.decoder_threads(n) for n in (1, 2, 3)] == [2, 1, 1]
    monkeypatch.setattr(ingest, "usable_cores", lambda: 16)
    assert ingest.decoder_threads(4) == 4
    root = tmp_path / "media"
    for name, colour in (("a.mp4", RED), ("b.mp4", BLUE)):
        write_video(root / name, [(colour, 3.0)])
    started = []
    start = ingest.DecodeWorker.start
    monkeypatch.setattr(ingest.DecodeWorker, "start", lambda self, task: (started.append(task), start(self, task))[1])
    kw = dict(model="synth-clip", pretrained=str(random_clip_checkpoint), device="cpu", speech=False, ocr=False, audio=False)
    mmsearch.index_paths([root], tmp_path / "idx", config=mmsearch.IngestConfig(workers=2, skip_loop_filter=True), **kw)
    assert sorted((Path(t.path).name, t.decoder_threads, t.skip_loop_filter) for t in started) == [("a.mp4", 8, True), ("b.mp4", 8, True)]
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["config"]["skip_loop_filter"] is True
    write_video(root / "c.mp4", [(GREEN, 3.0)])
    started.clear()
    mmsearch.index_paths([root], tmp_path / "idx", config=ingest_config(tmp_path / "idx", decoder_threads=0), **kw)
    assert [(Path(t.path).name, t.decoder_threads, t.skip_loop_filter) for t in started] == [("c.mp4", 0, True)]  # the recorded choice, as the CLI reads it
    write_video(root / "d.mp4", [(YELLOW, 3.0)])
    decord = mmsearch.index_paths([root], tmp_path / "idx", config=ingest_config(tmp_path / "idx", backend="decord"), **kw)
    assert [n for _, n in decord.notes if "--skip-loop-filter applies to PyAV only: with --backend decord this run decodes with deblocking (the choice is recorded for later runs with --backend pyav)" == n]
