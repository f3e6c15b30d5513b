"""On-screen text (mmsearch.ocr): RapidOCR reads rendered words, lines become time-aligned segments."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rapidocr_onnxruntime")

from mmsearch import ocr  # noqa: E402
from mmsearch.errors import UsageError  # noqa: E402
from mmsearch.spaces import TextSegment  # noqa: E402


def slide(lines: list[str], size: tuple[int, int] = (640, 360), font_size: int = 40) -> np.ndarray:
    """An RGB uint8 (H, W, 3) slide: light text on a dark blue background, one line per entry.

    Pillow's bundled scalable font (``load_default(size=...)``, Pillow >= 10.1) renders the same
    pixels on every machine."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=font_size)
    image = Image.new("RGB", size, (20, 30, 60))
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((size[0] // 2, (i + 1) * size[1] // (len(lines) + 1)), line, fill=(245, 245, 245), font=font, anchor="mm")
    return np.asarray(image)


def jpeg(frame: np.ndarray, quality: int = 40) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def has_words(text: str, phrase: str) -> bool:
    """Every word of ``phrase`` in ``text``, case-insensitive; PP-OCRv4 may drop the spaces between them."""
    glued = "".join(text.casefold().split())
    return all(word in glued for word in phrase.casefold().split())


def write_slides(path: Path, slides: list[tuple[np.ndarray, float]], fps: int = 10) -> None:
    """An H.264 video showing each picture for its seconds; frame i has pts i / fps."""
    import av

    h, w = slides[0][0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        i = 0
        for picture, seconds in slides:
            for _ in range(int(round(seconds * fps))):
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, fps)
                out.mux(stream.encode(frame))
                i += 1
        out.mux(stream.encode())


@pytest.fixture(scope="module")
def engine() -> ocr.OcrEngine:
    return ocr.OcrEngine(threads=1)


def counting(engine: ocr.OcrEngine) -> tuple[ocr.OcrEngine, list[float]]:
    """The engine with its reads recorded (the mean pixel value of each frame read)."""
    calls: list[float] = []
    read = engine.read

    class Counting:
        def read(self, frame: np.ndarray) -> list[tuple[str, float]]:
            calls.append(float(frame.mean()))
            return read(frame)

    return Counting(), calls  # type: ignore[return-value]


class ScriptedEngine:
    """Returns the lines scripted for each frame (keyed by the frame's fill value); counts reads."""

    def __init__(self, script: dict[int, list[tuple[str, float]]]) -> None:
        self.script, self.reads = script, 0

    def read(self, frame: np.ndarray) -> list[tuple[str, float]]:
        self.reads += 1
        return self.script[int(frame[0, 0, 0])]


def flat(value: int) -> np.ndarray:
    return np.full((36, 64, 3), value, np.uint8)


# ---- reading


def test_reads_rendered_lines_in_reading_order(engine: ocr.OcrEngine) -> None:
    lines = engine.read(slide(["HARBOUR LIGHTS", "quarterly results"]))
    assert len(lines) == 2, lines
    assert has_words(lines[0][0], "harbour lights") and has_words(lines[1][0], "quarterly results"), lines
    assert all(ocr.MIN_CONFIDENCE <= score <= 1.0 for _, score in lines)


def test_blank_frame_reads_nothing(engine: ocr.OcrEngine) -> None:
    assert engine.read(np.full((240, 320, 3), 90, np.uint8)) == []


def test_a_banner_too_thin_for_the_detector_reads_nothing(engine: ocr.OcrEngine) -> None:
    """20000x1 and 4000x16 pictures: RapidOCR's detector scales the long side down and is left with no row
    (it raised ResizeImgError with no message, which cost an image its text space as a failure)."""
    for shape in ((1, 20000, 3), (16, 4000, 3)):
        assert engine.read(np.full(shape, 255, np.uint8)) == []


def test_read_rejects_other_arrays(engine: ocr.OcrEngine) -> None:
    with pytest.raises(UsageError, match="RGB uint8"):
        engine.read(np.zeros((240, 320), np.uint8))
    with pytest.raises(UsageError, match="RGB uint8"):
        engine.read(np.zeros((240, 320, 3), np.float32))


def test_missing_rapidocr_is_an_encoder_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from mmsearch.errors import EncoderError

    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # import fails
    with pytest.raises(EncoderError, match="rapidocr"):
        ocr.OcrEngine()


# ---- change detection


def test_changed_ignores_noise_and_sees_new_text() -> None:
    first = slide(["OPENING TITLE", "a subtitle line"], size=(1280, 720), font_size=48)
    rng = np.random.default_rng(0)
    grain = np.clip(first + rng.normal(0, 4, first.shape), 0, 255).astype(np.uint8)
    assert ocr.changed(None, first)
    assert not ocr.changed(first, first.copy())
    assert not ocr.changed(first, jpeg(first, quality=40))
    assert not ocr.changed(first, grain)
    assert ocr.changed(first, slide(["CHAPTER TWO", "a subtitle line"], size=(1280, 720), font_size=48))
    # one letter of a small line, on a small frame
    small = slide(["Opening title", "a subtitle line"], size=(320, 240), font_size=14)
    assert not ocr.changed(small, jpeg(small, quality=40))
    assert ocr.changed(small, slide(["Opening title", "a subtitle lime"], size=(320, 240), font_size=14))
    assert ocr.changed(first, first[:, :640])  # another size


def test_same_line_tolerates_small_misreads() -> None:
    assert ocr.same_line("HARBOUR LIGHTS", "harbourlights")
    assert ocr.same_line("Quarterly results summary", "Quarterly resuIts summary")  # one letter in 23
    assert not ocr.same_line("CHAPTER ONE", "CHAPTER TWO")
    assert not ocr.same_line("SLIDE 1", "SLIDE 2")


# ---- segments


def test_two_slides_become_two_segments(engine: ocr.OcrEngine) -> None:
    title, chapter = slide(["OPENING TITLE"]), slide(["CHAPTER TWO"])
    frames = [(0.0, title), (2.0, title), (4.0, title), (6.0, chapter), (8.0, chapter)]
    wrapped, calls = counting(engine)
    segments = ocr.text_segments(frames, wrapped, end=10.0)
    assert len(calls) == 2  # the unchanged samples are not read again
    assert [(s.start, s.end, s.source) for s in segments] == [(0.0, 6.0, "ocr"), (6.0, 10.0, "ocr")]
    assert has_words(segments[0].text, "opening title") and has_words(segments[1].text, "chapter two")
    assert all(isinstance(s, TextSegment) for s in segments)


def test_unchanged_picture_is_read_once(engine: ocr.OcrEngine) -> None:
    picture = slide(["BLUE UMBRELLA"])
    rng = np.random.default_rng(1)
    frames = [(2.0 * k, np.clip(picture + rng.normal(0, 3, picture.shape), 0, 255).astype(np.uint8)) for k in range(6)]
    wrapped, calls = counting(engine)
    segments = ocr.text_segments(frames, wrapped, end=12.0)
    assert len(calls) == 1
    assert len(segments) == 1 and (segments[0].start, segments[0].end) == (0.0, 12.0)
    assert has_words(segments[0].text, "blue umbrella")


def test_lines_come_and_go_independently() -> None:
    # frames filled with 50/100/150/200 carry scripted lines; a misread keeps the line open
    engine = ScriptedEngine({
        50: [("Breaking news", 0.9)],
        100: [("Breaking news", 0.95), ("Storm warning", 0.8)],
        150: [("Breaklng news", 0.7), ("Storm warning", 0.9)],  # one letter misread: the same line
        200: [],
    })
    frames = [(0.0, flat(50)), (2.0, flat(100)), (4.0, flat(150)), (6.0, flat(200)), (8.0, flat(50))]
    segments = ocr.text_segments(frames, engine, end=9.5)  # type: ignore[arg-type]
    assert [(s.start, s.end, s.text) for s in segments] == [
        (0.0, 6.0, "Breaking news"),  # the most confident reading
        (2.0, 6.0, "Storm warning"),
        (8.0, 9.5, "Breaking news"),  # shown again: a new segment
    ]
    assert engine.reads == 5


def test_same_text_twice_on_a_frame_is_one_line_and_times_must_increase() -> None:
    engine = ScriptedEngine({50: [("LIVE", 0.9), ("LIVE", 0.8)], 100: []})
    segments = ocr.text_segments([(0.0, flat(50)), (2.0, flat(100))], engine, end=4.0)  # type: ignore[arg-type]
    assert [(s.start, s.end, s.text) for s in segments] == [(0.0, 2.0, "LIVE")]
    with pytest.raises(UsageError, match="time order"):
        ocr.text_segments([(2.0, flat(50)), (0.0, flat(100))], engine, end=4.0)  # type: ignore[arg-type]


def test_ocr_video_finds_words_and_times(tmp_path: Path, engine: ocr.OcrEngine) -> None:
    path = tmp_path / "slides.mp4"
    write_slides(path, [(slide(["HARBOUR LIGHTS"], size=(480, 270)), 6.0), (slide(["BLUE UMBRELLA"], size=(480, 270)), 6.0)])
    wrapped, calls = counting(engine)
    segments = ocr.ocr_video(path, engine=wrapped)
    assert len(calls) == 2  # H.264 noise on a still slide is not a change
    assert len(segments) == 2, segments
    first, second = segments
    assert has_words(first.text, "harbour lights") and has_words(second.text, "blue umbrella")
    assert abs(first.start - 0.0) <= ocr.OCR_INTERVAL and abs(first.end - 6.0) <= ocr.OCR_INTERVAL
    assert abs(second.start - 6.0) <= ocr.OCR_INTERVAL
    assert second.end == pytest.approx(12.0, abs=0.11)  # the video's end
    assert ocr.ocr_video(path, engine=wrapped, duration=12.5)[-1].end == 12.5
    with pytest.raises(UsageError, match="interval"):
        ocr.ocr_video(path, engine=wrapped, interval=0.0)


def test_ocr_video_keeps_small_frames_and_downscales_large(
    tmp_path: Path, engine: ocr.OcrEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmsearch import media

    seen: list[int | None] = []
    original = media.PyAVBackend.iter_frames

    def spy(self, path, *, fps, short_side, chunk_size=32):  # noqa: ANN001, ANN202
        seen.append(short_side)
        return original(self, path, fps=fps, short_side=short_side, chunk_size=chunk_size)

    monkeypatch.setattr(media.PyAVBackend, "iter_frames", spy)
    small = tmp_path / "small.mp4"
    write_slides(small, [(np.full((240, 320, 3), 40, np.uint8), 2.0)])
    large = tmp_path / "large.mp4"
    write_slides(large, [(np.full((1080, 1920, 3), 40, np.uint8), 0.5)])
    assert ocr.ocr_video(small, engine=engine) == [] and ocr.ocr_video(large, engine=engine) == []
    assert seen == [None, ocr.OCR_SHORT_SIDE]  # small: as decoded (never upscaled); large: 720 px


def test_ocr_image(tmp_path: Path, engine: ocr.OcrEngine) -> None:
    from PIL import Image

    path = tmp_path / "poster.png"
    Image.fromarray(slide(["GRAND OPENING", "saturday market"], size=(800, 450), font_size=48)).save(path)
    segments = ocr.ocr_image(path, engine=engine)
    assert [(s.start, s.end, s.source) for s in segments] == [(0.0, 0.0, "ocr")] * 2
    assert has_words(segments[0].text, "grand opening") and has_words(segments[1].text, "saturday market")


def test_capitals_read_as_one_word_get_their_spaces_back():
    from mmsearch.ocr import respace

    assert respace("EXITEASTGATE") == "EXIT EAST GATE"
    assert respace("HARBOURLIGHTS tonight") == "HARBOUR LIGHTS tonight"
    assert respace("BIRTHDAY") == "BIRTHDAY" and respace("Chapter two") == "Chapter two" and respace("ABCDEFGHQ") == "ABCDEFGHQ"
