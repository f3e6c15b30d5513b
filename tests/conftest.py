"""Shared fixtures: media written with PyAV, encoders with random weights saved to local files."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def write_video(
    path: Path,
    segments: list[tuple[tuple[int, int, int], float]],
    *,
    fps: int = 10,
    size: tuple[int, int] = (160, 120),
    codec: str = "libx264",
    pattern: bool = True,
    pts_jitter: bool = False,
    audio: bool = False,
    start: float = 0.0,
    audio_seconds: float | None = None,
    audio_start: float | None = None,
) -> list[tuple[float, float]]:
    """A video of solid-coloured (optionally patterned) segments; returns their (start, end) seconds.

    Frame i has pts i (time base 1/fps), so segment boundaries are exact. ``start`` shifts every
    pts (video and sound) by that many seconds, as an MPEG-TS or edited MKV does (the returned
    bounds stay relative to the first frame); ``audio_seconds`` makes the soundtrack that long and
    ``audio_start`` (default ``start``) starts it at that pts.
    """
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    bounds = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast"}
        astream = out.add_stream("aac", rate=16000) if (audio or audio_seconds) else None
        i = 0
        for colour, seconds in segments:
            n = int(round(seconds * fps))
            bounds.append((i / fps, (i + n) / fps))
            frame_img = np.zeros((h, w, 3), np.uint8)
            frame_img[:] = colour
            if pattern:  # a stripe whose position depends on the colour, so segments differ in layout too
                x = (sum(colour) * 7) % (w - 20)
                frame_img[:, x : x + 20] = 255 - np.asarray(colour, np.uint8)
            for _ in range(n):
                frame = av.VideoFrame.from_ndarray(frame_img, format="rgb24")
                frame.pts = i + int(round(start * fps))
                frame.time_base = Fraction(1, fps)
                for packet in stream.encode(frame):
                    out.mux(packet)
                i += 1
        for packet in stream.encode():
            out.mux(packet)
        if astream is not None:
            total = audio_seconds if audio_seconds is not None else i / fps
            samples = np.sin(2 * np.pi * 440 * np.arange(int(total * 16000)) / 16000).astype(np.float32) * 0.3
            for a in range(0, len(samples), 1024):
                chunk = samples[a : a + 1024]
                af = av.AudioFrame.from_ndarray(chunk[None], format="flt", layout="mono")
                af.sample_rate = 16000
                af.pts = a + int(round((start if audio_start is None else audio_start) * 16000))
                for packet in astream.encode(af):
                    out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)
    return bounds


RED, GREEN, BLUE, YELLOW, WHITE = (220, 30, 30), (30, 200, 60), (40, 80, 230), (235, 220, 40), (240, 240, 240)
CYAN, MAGENTA, ORANGE = (20, 200, 220), (200, 40, 200), (250, 140, 20)


@pytest.fixture(scope="session")
def random_clip_checkpoint(tmp_path_factory) -> Path:
    """The synth-clip architecture with random weights, saved as an open_clip checkpoint file."""
    import open_clip
    import torch

    from mmsearch.encoders.clip import register_packaged_configs

    register_packaged_configs()
    torch.manual_seed(0)
    model = open_clip.create_model("synth-clip")
    path = tmp_path_factory.mktemp("weights") / "random-synth-clip.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def video_corpus(tmp_path_factory) -> dict[str, object]:
    """Three short videos of coloured segments (no colour used twice) with known bounds, plus one image."""
    root = tmp_path_factory.mktemp("corpus")
    specs = {
        "a.mp4": [(RED, 3.0), (GREEN, 4.0), (BLUE, 3.0)],
        "b.mp4": [(YELLOW, 5.0), (WHITE, 5.0)],
        "sub/c.webm": [(CYAN, 2.0), (MAGENTA, 2.0), (ORANGE, 4.0)],
    }
    bounds = {}
    for name, segs in specs.items():
        codec = "libvpx-vp9" if name.endswith(".webm") else "libx264"
        bounds[name] = write_video(root / name, segs, codec=codec)
    from PIL import Image

    img = np.zeros((90, 120, 3), np.uint8)
    img[:] = (200, 100, 0)
    Image.fromarray(img).save(root / "photo.png")
    return {"root": root, "specs": specs, "bounds": bounds}


@pytest.fixture(scope="module")
def vit_b_32_checkpoint(tmp_path_factory) -> Path:
    """ViT-B-32 (the default model's architecture) with random weights, saved as a local checkpoint
    (tests/test_gpu.py, tests/test_image_tower.py)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32")
    path = tmp_path_factory.mktemp("weights") / "vit-b-32-random.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path
