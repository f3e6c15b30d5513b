"""Decoding: presentation timestamps, both backends, rotation, bad files, discovery."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import BLUE, GREEN, RED, SHARED_MEDIA, write_video
from mmsearch.errors import DecodeError, UsageError
from mmsearch.media import FrameSelector, discover, get_backend

BACKENDS = ["pyav", "decord"]
needs_shared = pytest.mark.skipif(not SHARED_MEDIA.is_dir(), reason=f"shared sample media not present at {SHARED_MEDIA}")


def _frames(path: Path, backend: str, fps: float = 1.0, short_side: int | None = 32):
    batches = list(get_backend(backend).iter_frames(str(path), fps=fps, short_side=short_side, chunk_size=4))
    return np.concatenate([b.timestamps for b in batches]), np.concatenate([b.frames for b in batches])


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_sampled_by_presentation_time(tmp_path, backend):
    path = tmp_path / "v.mp4"
    write_video(path, [(RED, 2.0), (GREEN, 3.0), (BLUE, 1.5)], fps=10)
    ts, frames = _frames(path, backend)
    assert ts.tolist() == pytest.approx([0, 1, 2, 3, 4, 5, 6])
    # the frame at each timestamp shows the segment on screen then (3/4 across avoids the stripe)
    expected = [RED, RED, GREEN, GREEN, GREEN, BLUE, BLUE]
    for frame, colour in zip(frames, expected):
        assert np.abs(frame[16, frame.shape[1] * 3 // 4].astype(int) - colour).max() < 30


@pytest.mark.parametrize("backend", BACKENDS)
def test_timestamps_follow_variable_frame_rate(tmp_path, backend):
    """Frames at irregular presentation times: the sampled timestamps are the stream's, not index / fps."""
    import av

    path = tmp_path / "vfr.mkv"
    pts_seconds = [0.0, 0.1, 0.2, 1.7, 1.8, 3.3, 3.35, 5.0]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=100)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for i, t in enumerate(pts_seconds):
            img = np.full((48, 64, 3), 20 * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(round(t * 1000))
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    ts, _ = _frames(path, backend)
    # on screen at t=0,1,2,3,4,5: frames with pts 0.0 (t=0), 0.2 (t=1), 1.8 (t=2,3), 3.35 (t=4), 5.0 (t=5, last)
    assert ts.tolist() == pytest.approx([0.0, 0.2, 1.8, 3.35, 5.0], abs=1e-3)


def test_frame_selector_takes_the_frame_on_screen():
    sel = FrameSelector(fps=2.0)  # targets 0, .5, 1, 1.5 ...
    kept = []
    for pts in [0.1, 0.3, 0.45, 0.8, 1.6, 1.7]:
        kept += [t for t, _ in sel.push(pts, None)]
    kept += [t for t, _ in sel.finish()]
    # 0 -> first frame (on screen from the start); .5 -> 0.45; 1.0 and 1.5 -> 0.8 (kept once);
    # the stream ends at about 1.8 (last frame + its duration), before the target 2.0
    assert kept == [0.1, 0.45, 0.8]
    with pytest.raises(UsageError):
        FrameSelector(fps=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_downscale_keeps_aspect(tmp_path, backend):
    path = tmp_path / "wide.mp4"
    write_video(path, [(RED, 1.0)], size=(320, 120))
    _, frames = _frames(path, backend, short_side=60)
    assert frames.shape[1:] == (60, 160, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_garbage_file_raises_decode_error_naming_it(tmp_path, backend):
    path = tmp_path / "noise.mp4"
    path.write_bytes(os.urandom(20000))
    with pytest.raises(DecodeError) as info:
        _frames(path, backend)
    assert str(path) in str(info.value)


def test_discover_walks_folders_filters_and_survives_symlink_loops(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.mp4").write_bytes(b"1")
    (tmp_path / "a" / "notes.txt").write_text("no")
    (tmp_path / "b.PNG").write_bytes(b"1")
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    found = discover([tmp_path])
    names = sorted(p.name for p in found)
    assert names == ["b.PNG", "x.mp4"]
    with pytest.raises(UsageError):
        discover([tmp_path / "missing"])


@needs_shared
@pytest.mark.parametrize("backend", BACKENDS)
def test_real_kinetics_clip(backend):
    ts, frames = _frames(SHARED_MEDIA / "decord" / "flipping_a_pancake.mkv", backend, short_side=64)
    assert ts.tolist() == pytest.approx(list(range(11)), abs=0.05)
    assert frames.shape[1:] == (64, 112, 3) or frames.shape[1:] == (64, 114, 3)


@needs_shared
def test_rotation_metadata_is_applied():
    backend = get_backend("pyav")
    upright = backend.probe(str(SHARED_MEDIA / "decord" / "video_0.mov"))
    assert (upright.width, upright.height) == (568, 320)
    for name in ("video_90.mov", "video_270.mov"):
        info = backend.probe(str(SHARED_MEDIA / "decord" / name))
        assert (info.width, info.height) == (320, 568)
        _, frames = _frames(SHARED_MEDIA / "decord" / name, "pyav", short_side=None)
        assert frames.shape[1:3] == (568, 320)
    info = backend.probe(str(SHARED_MEDIA / "decord" / "video_180.mov"))
    assert (info.width, info.height) == (568, 320)


@needs_shared
def test_out_of_order_mov_decodes_in_presentation_order():
    ts, _ = _frames(SHARED_MEDIA / "decord" / "unordered.mov", "pyav", fps=100.0)
    assert len(ts) >= 2 and np.all(np.diff(ts) > 0)


@needs_shared
def test_genuinely_corrupt_mp4_is_reported_not_fatal():
    path = SHARED_MEDIA / "decord" / "corrupted.mp4"
    backend = get_backend("pyav")  # the instance that decodes is the one that counts the damage
    batches = list(backend.iter_frames(str(path), fps=1.0, short_side=32, chunk_size=4))
    ts = np.concatenate([b.timestamps for b in batches])
    # decoded around the damage (one bad packet in 5 s): pictures on both sides of it, and the damage counted
    assert backend.damaged_packets >= 1
    assert len(ts) >= 4 and ts[0] < 0.5 and ts[-1] > 3.5
    with pytest.raises(DecodeError):
        _frames(path, "decord")
