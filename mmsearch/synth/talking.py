"""Videos with words in them, at known seconds: voices said over a soundtrack and lines written on
slides (issue #15's tests and benchmarks).

:func:`write_talking_video` places 16 kHz mono voice clips (espeak-ng's, or any recording) at given
seconds of an AAC soundtrack and draws lines of text on the frames over given intervals, so where
each sentence starts and each line shows is known exactly: frame ``k`` has pts ``k / fps`` and the
sound's first sample is at 0 s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["Caption", "VOICES", "Voice", "onset_seconds", "packaged_voice", "write_talking_video"]

SAMPLE_RATE = 16000
VOICES = Path(__file__).resolve().parents[1] / "assets" / "speech"  # espeak-ng sentences shipped with mmsearch


def packaged_voice(name: str) -> tuple[np.ndarray, str]:
    """A sentence shipped in ``mmsearch/assets/speech`` (``boat``, ``umbrella``, ``exam``, ``tomatoes``):
    float32 mono samples at 16 kHz and what it says."""
    from ..audio import load_audio

    return load_audio(VOICES / f"{name}.flac", sample_rate=SAMPLE_RATE)[0], (VOICES / f"{name}.txt").read_text(encoding="utf-8").strip()


def onset_seconds(samples: np.ndarray, threshold: float = 0.01) -> float:
    """Seconds to the first sample above ``threshold`` (-40 dBFS): where a voice starts."""
    return float(np.argmax(np.abs(samples) > threshold)) / SAMPLE_RATE


@dataclass(frozen=True)
class Voice:
    """A clip (float32 mono at 16 kHz) said from ``at`` seconds on."""

    samples: np.ndarray
    at: float


@dataclass(frozen=True)
class Caption:
    """A line of ``text`` drawn on the frames shown in ``[start, end)`` seconds."""

    text: str
    start: float
    end: float
    position: tuple[float, float] = (0.08, 0.4)  # left, top as shares of the frame
    size: int = 40  # pixels
    colour: tuple[int, int, int] = (255, 255, 255)
    background: tuple[int, int, int] = (20, 40, 90)
    font: str | None = None  # a TrueType file; None: Pillow's own scalable font


def _frame(t: float, captions: list[Caption], size: tuple[int, int], base: tuple[int, int, int]) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    shown = [c for c in captions if c.start <= t < c.end]
    image = Image.new("RGB", size, shown[0].background if shown else base)
    draw = ImageDraw.Draw(image)
    for c in shown:
        font = ImageFont.truetype(c.font, c.size) if c.font else ImageFont.load_default(size=c.size)
        draw.text((c.position[0] * size[0], c.position[1] * size[1]), c.text, fill=c.colour, font=font)
    return np.asarray(image)


def write_talking_video(
    path: str | os.PathLike,
    *,
    seconds: float,
    voices: list[Voice] = (),  # type: ignore[assignment]
    captions: list[Caption] = (),  # type: ignore[assignment]
    size: tuple[int, int] = (640, 360),
    fps: int = 5,
    background: tuple[int, int, int] = (60, 60, 60),
    noise: float = 0.003,
    seed: int = 0,
) -> Path:
    """Write an H.264 + AAC MP4 of ``seconds`` with ``voices`` and ``captions``; returns the path.

    The soundtrack is low noise (``noise`` RMS, so voice activity detection has silence to find)
    with each voice added at its ``at``. Raises ``ValueError`` for a voice that does not fit.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    track = (rng.standard_normal(int(seconds * SAMPLE_RATE)) * noise).astype(np.float32)
    for voice in voices:
        a = int(round(voice.at * SAMPLE_RATE))
        if a < 0 or a + len(voice.samples) > len(track):
            raise ValueError(f"a voice at {voice.at} s of {len(voice.samples) / SAMPLE_RATE:.1f} s does not fit in {seconds} s")
        track[a : a + len(voice.samples)] += voice.samples
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        video.options = {"preset": "ultrafast"}
        sound = out.add_stream("aac", rate=SAMPLE_RATE)
        sound.layout = "mono"
        for k in range(int(round(seconds * fps))):
            frame = av.VideoFrame.from_ndarray(_frame(k / fps, list(captions), size, background), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        for a in range(0, len(track), 1024):
            chunk = np.clip(track[a : a + 1024], -1, 1)
            frame = av.AudioFrame.from_ndarray(chunk[None], format="flt", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, a
            for packet in sound.encode(frame):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    return path
