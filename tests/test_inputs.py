"""Faults found in the field (issue #14): each kind of input fault, through indexing and queries.

Every test makes its own inputs (or reads the real files of ``../shared/media``, skipping with
the reason when that folder is absent) and asserts the value a broken implementation misses.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import mmsearch
from conftest import BLUE, RED, SHARED_MEDIA, write_video
from mmsearch.media import frame_at, load_image
from test_cli import run


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _save_frame(video: Path, t: float, out: Path, backend: str = "pyav") -> Path:
    from PIL import Image

    _, frame = frame_at(video, t, backend=backend)
    Image.fromarray(frame).save(out)
    return out


# -- 1. high bit depth and other still modes ---------------------------------------------------
def _grey_pattern() -> np.ndarray:
    """An 8-bit picture with structure at every grey level: a ramp, a dark disc and a bright bar."""
    y, x = np.mgrid[0:96, 0:128]
    img = (x * 2).astype(np.float64)
    img[(x - 40) ** 2 + (y - 48) ** 2 < 20**2] = 20
    img[10:30, 80:120] = 240
    return np.clip(img, 0, 255).astype(np.uint8)


def test_still_modes_reach_the_encoder_scaled(tmp_path):
    from PIL import Image

    grey = _grey_pattern()
    Image.fromarray(grey, "L").save(tmp_path / "eight.png")
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)  # the same picture in 16 bits
    sixteen.save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I;16")
    Image.fromarray(grey.astype(np.int32) * 257, "I").save(tmp_path / "int32.tif")
    Image.fromarray(grey.astype(np.float32) / 255.0, "F").save(tmp_path / "float.tif")
    with_nan = grey.astype(np.float32) / 255.0
    with_nan[0, 0] = np.nan  # one bad pixel must not black out the rest
    Image.fromarray(with_nan, "F").save(tmp_path / "nan.tif")
    Image.fromarray(grey, "L").convert("LA").save(tmp_path / "la.png")
    palette = Image.fromarray(grey, "L").convert("P")
    palette.info["transparency"] = 255 - 3  # a palette entry the picture may use: those pixels go white
    palette.save(tmp_path / "p.png", transparency=int(np.setdiff1d(np.arange(256), np.asarray(palette))[0]))
    rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")

    ref = load_image(tmp_path / "eight.png")
    for name in ("sixteen.png", "int32.tif", "float.tif", "la.png", "p.png"):
        got = load_image(tmp_path / name)
        assert got.shape == ref.shape and np.abs(got.astype(int) - ref).max() <= 1, name
    nan = load_image(tmp_path / "nan.tif").astype(int)
    assert np.abs(nan - ref)[1:].max() <= 1 and nan[0, 0].max() == 0
    assert np.abs(load_image(tmp_path / "cmyk.tif").astype(int) - load_image(tmp_path / "rgb.png")).max() <= 1


def test_sixteen_bit_still_and_its_eight_bit_twin_give_one_vector(tmp_path):
    from PIL import Image

    grey = _grey_pattern()
    media = tmp_path / "media"
    media.mkdir()
    Image.fromarray(grey, "L").save(media / "eight.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(media / "sixteen.png")
    mmsearch.index_paths([media], tmp_path / "index", model="synth-clip", audio=False, device="cpu")
    idx = mmsearch.open_index(tmp_path / "index", device="cpu")
    ids = {Path(p).name: m for p, m in idx.media_ids().items()}
    space = idx.snapshot.spaces["visual"]
    eight = space.segments_of(ids["eight.png"])[2][0]
    sixteen = space.segments_of(ids["sixteen.png"])[2][0]
    assert _cosine(eight, sixteen) > 0.99  # indexing
    q8, q16 = idx.embed_queries(images=[media / "eight.png", media / "sixteen.png"])
    assert _cosine(q8, q16) > 0.99  # the same file as a query image
    assert _cosine(q16, eight) > 0.99


# -- 2 and 3. one time origin; pictures end where the video ends ----------------------------------
@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("name", ["offset.mkv", "offset.ts"])
def test_start_offset_file_reports_seconds_from_its_start(tmp_path, random_clip_checkpoint, backend, name):
    media = tmp_path / "media"
    video = media / name
    write_video(video, [(RED, 2.0), (BLUE, 2.0)], start=5.0, audio=True)
    import av

    with av.open(str(video)) as c:
        assert c.start_time / 1e6 > 1.0  # the container really starts late
    mmsearch.index_paths(
        [media], tmp_path / "index", model="synth-clip", pretrained=str(random_clip_checkpoint), audio_model="synth-clap",
        device="cpu", config=mmsearch.IngestConfig(backend=backend),
    )
    idx = mmsearch.open_index(tmp_path / "index", device="cpu")
    row = next(iter(idx.snapshot.media_rows().values()))
    assert row["duration"] == pytest.approx(4.0, abs=0.15)
    frames, _ = idx.snapshot.spaces["visual"].frames_of(row["media_id"])
    assert frames[0] == pytest.approx(0.0, abs=0.1) and frames[-1] < 4.0
    starts, ends, _ = idx.snapshot.spaces["audio"].segments_of(row["media_id"])
    assert starts[0] == pytest.approx(0.0, abs=0.1) and ends.max() <= row["duration"] + 0.1

    red = _save_frame(video, 0.5, tmp_path / "red.png", backend=backend)
    top = idx.search(image=red, k=5)
    assert top[0].start == pytest.approx(0.0, abs=0.1) and top[0].end == pytest.approx(2.0, abs=0.6)
    for result in [*top, *idx.search(audio=video, k=5)]:
        assert result.end <= row["duration"] + 0.01


def test_visual_moments_end_with_the_pictures(tmp_path, random_clip_checkpoint):
    media = tmp_path / "media"
    video = media / "short-picture-long-sound.mp4"
    write_video(video, [(RED, 1.5), (BLUE, 1.5)], audio_seconds=25.0)
    mmsearch.index_paths(
        [media], tmp_path / "index", model="synth-clip", pretrained=str(random_clip_checkpoint), audio_model="synth-clap", device="cpu"
    )
    idx = mmsearch.open_index(tmp_path / "index", device="cpu")
    row = next(iter(idx.snapshot.media_rows().values()))
    assert row["duration"] == pytest.approx(25.0, abs=0.2)  # the media lasts as long as its sound
    _, ends, _ = idx.snapshot.spaces["visual"].segments_of(row["media_id"])
    assert ends.max() == pytest.approx(3.0, abs=0.11)  # ... its pictures stop at 3 s
    blue = _save_frame(video, 2.5, tmp_path / "blue.png")
    for result in idx.search(image=blue, k=5):
        assert result.end <= 3.11
    _, sound_ends, _ = idx.snapshot.spaces["audio"].segments_of(row["media_id"])
    assert sound_ends.max() == pytest.approx(25.0, abs=0.2)  # while its sound runs on to 25 s
    assert max(r.end for r in idx.search(audio=video, k=10)) > 20.0


def test_visual_moments_start_with_the_pictures(tmp_path, random_clip_checkpoint):
    """Sound from 0 s, pictures from 2 s (red 2-4 s, blue 4-6 s): the red moment starts at 2 s, not 0."""
    media = tmp_path / "media"
    video = media / "late-pictures.mkv"
    write_video(video, [(RED, 2.0), (BLUE, 2.0)], start=2.0, audio_start=0.0, audio_seconds=6.0)
    mmsearch.index_paths(
        [media], tmp_path / "index", model="synth-clip", pretrained=str(random_clip_checkpoint), audio_model="synth-clap", device="cpu"
    )
    idx = mmsearch.open_index(tmp_path / "index", device="cpu")
    row = next(iter(idx.snapshot.media_rows().values()))
    starts, _, _ = idx.snapshot.spaces["visual"].segments_of(row["media_id"])
    assert starts[0] == pytest.approx(2.0, abs=0.05)
    top = idx.search(image=_save_frame(video, 2.5, tmp_path / "red.png"), k=3)[0]
    assert top.start == pytest.approx(2.0, abs=0.05) and top.end == pytest.approx(4.0, abs=0.6)


# -- 4. query inputs fail in one line --------------------------------------------------------------
def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` pixels (past Pillow's decompression-bomb limit)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, random_clip_checkpoint):
    root = tmp_path_factory.mktemp("small")
    write_video(root / "media" / "a.mp4", [(RED, 1.0), (BLUE, 1.0)], audio=True)
    mmsearch.index_paths(
        [root / "media"], root / "index", model="synth-clip", pretrained=str(random_clip_checkpoint), audio_model="synth-clap", device="cpu"
    )
    return root


def _one_line_error(proc, *needles: str, code: int | None = None) -> None:
    assert proc.returncode != 0 if code is None else proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.slow
def test_query_inputs_fail_in_one_line_naming_the_file(small_index, tmp_path):
    index = str(small_index / "index")
    bomb = _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    _one_line_error(run("query", "--image", str(bomb), "--index", index, check=False), "bomb.png", "too large", code=2)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    # a path of the wrong kind: exit 2, the file named, what to give instead, FFmpeg's words without its errno
    _one_line_error(run("query", "--image", str(notes), "--index", index, check=False), "notes.txt", "give a picture file", code=2)
    proc = run("query", "--audio", str(notes), "--index", index, check=False)
    _one_line_error(proc, "notes.txt", "Invalid data found", "give a sound file", code=2)
    assert "[Errno" not in proc.stderr and proc.stderr.count("notes.txt") == 1, proc.stderr
    latin1 = tmp_path / "queries.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    _one_line_error(run("query", "--batch", str(latin1), "--index", index, check=False), "queries.txt", "UTF-8")
    for i, listing in enumerate(("[1, 2]", '[{"text": null}]', '[{"text": ["a"]}]')):
        odd = tmp_path / f"odd{i}.json"
        odd.write_text(listing)
        _one_line_error(run("query", "--batch", str(odd), "--index", index, check=False), odd.name)


def test_a_query_example_that_is_empty_or_not_media_says_what_to_give(small_index, tmp_path):
    """Index.search with an example file that cannot be used: QueryInputError (a MediaError, so the server
    answers 415; exit status 2 in the CLI), naming the file, why (empty, not decodable, silent) and what to give."""
    import wave

    from mmsearch.errors import MediaError, QueryInputError

    idx = mmsearch.open_index(small_index / "index")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "fake.mp3").write_text("not a sound")
    silent = tmp_path / "silent.wav"
    with wave.open(str(silent), "wb") as out:  # one second of digital silence, 16-bit mono
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes(bytes(32000))
    cases = [
        ({"audio": tmp_path / "empty.wav", "modality": "audio"}, "empty.wav", "empty (0 bytes)", "give a sound file"),
        ({"image": tmp_path / "empty.png"}, "empty.png", "empty (0 bytes)", "give a picture file"),
        ({"audio": tmp_path / "fake.mp3", "modality": "audio"}, "fake.mp3", "Invalid data found", "give a sound file"),
        ({"image": tmp_path / "fake.mp3"}, "fake.mp3", "cannot read image", "(its name says sound or video: --audio takes it)"),
        ({"audio": silent, "modality": "audio"}, "silent.wav", "silent", "give a sound file"),
        ({"audio": tmp_path / "empty.png", "modality": "audio"}, "empty.png", "empty", "(its name says picture: --image takes it)"),
    ]
    for given, name, why, advice in cases:
        with pytest.raises(QueryInputError) as raised:
            idx.search(None, k=1, **given)
        message = str(raised.value)
        assert isinstance(raised.value, MediaError) and raised.value.exit_code == 2
        assert message.startswith(str(tmp_path / name)) and why in message and advice in message, message
        assert "[Errno" not in message and "\n" not in message and message.count(name) == 1, message  # named once


# -- 5 and 6. what people keep: more containers and stills, animations, sound-only containers --------
def _write_with(path: Path, container: str | None, codec: str, *, fps: int = 10, seconds: float = 2.0, size=(96, 64),
                options: dict | None = None) -> None:
    import av

    with av.open(str(path), "w", format=container, options=options or {}) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.zeros((size[1], size[0], 3), np.uint8)
            img[:] = RED if i < seconds * fps / 2 else BLUE
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _sound_only(path: Path, container: str | None = None, seconds: float = 3.0) -> None:
    import av

    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream("aac", rate=16000)
        samples = (0.3 * np.sin(2 * np.pi * 330 * np.arange(int(seconds * 16000)) / 16000)).astype(np.float32)
        for a in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[a : a + 1024][None], format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, a
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_library_formats_are_indexed_and_the_rest_is_counted(tmp_path, random_clip_checkpoint):
    from PIL import Image

    media = tmp_path / "media"
    media.mkdir()
    _write_with(media / "camcorder.mts", "mpegts", "mpeg2video", fps=25)
    _write_with(media / "broadcast.m2ts", "mpegts", "mpeg2video", fps=25, size=(112, 64))  # not a copy of the .mts
    _write_with(media / "bluray.ts", "mpegts", "mpeg2video", fps=25, options={"mpegts_m2ts_mode": "1"})  # 192-byte packets
    _write_with(media / "dvd.mpg", "mpeg", "mpeg1video", fps=25)
    _write_with(media / "phone.3gp", "3gp", "mpeg4")
    _write_with(media / "old.flv", "flv", "flv")
    _write_with(media / "windows.wmv", "asf", "wmv2")
    frames = [Image.new("RGB", (64, 48), RED), Image.new("RGB", (64, 48), BLUE)]
    frames[0].save(media / "anim.gif", save_all=True, append_images=frames[1:], duration=[700, 500], loop=0)
    frames[0].save(media / "anim.webp", save_all=True, append_images=frames[1:], duration=[700, 500], loop=0)
    frames[0].save(media / "still.gif")
    frames[1].save(media / "scan.bmp")
    frames[1].save(media / "scan.tif")
    import pillow_heif

    pillow_heif.from_pillow(frames[0]).save(media / "iphone.heic")  # without registering Pillow's opener here
    frames[0].save(media / "scan2.tif", save_all=True, append_images=[frames[1]])  # a two-page scan: a still
    frames[0].save(media / "broken.gif", save_all=True, append_images=[frames[1]] * 3, duration=300, loop=0)
    (media / "broken.gif").write_bytes((media / "broken.gif").read_bytes()[:-60])  # the last pictures cut off
    _sound_only(media / "voice-memo.mp4")  # 6: a sound-only container with a video extension
    (media / "notes.txt").write_text("hello")
    (media / "list.txt").write_text("x")
    (media / "app.ts").write_text("export const x: number = 1;\n")  # TypeScript, not MPEG-TS
    report = mmsearch.index_paths(
        [media], tmp_path / "index", model="synth-clip", pretrained=str(random_clip_checkpoint), audio_model="synth-clap", device="cpu"
    )
    assert report.failed == []
    indexed = sorted(Path(p).name for p in report.indexed)
    assert indexed == sorted([
        "camcorder.mts", "broadcast.m2ts", "bluray.ts", "dvd.mpg", "phone.3gp", "old.flv", "windows.wmv", "anim.gif",
        "anim.webp", "still.gif", "scan.bmp", "scan.tif", "scan2.tif", "broken.gif", "iphone.heic", "voice-memo.mp4",
    ])
    assert [Path(p).name for p, _ in report.damaged] == ["broken.gif"]  # indexed for the pictures that decoded
    assert report.not_media == {".txt": 2, ".ts": 1}
    idx = mmsearch.open_index(tmp_path / "index", device="cpu")
    rows = {Path(r["path"]).name: r for r in idx.snapshot.media_rows().values()}
    visual = idx.snapshot.spaces["visual"]
    for name in ("anim.gif", "anim.webp"):  # animations are short videos, timed by their pictures' durations
        assert rows[name]["kind"] == "video" and rows[name]["duration"] == pytest.approx(1.2, abs=0.01)
        starts, ends, _ = visual.segments_of(rows[name]["media_id"])
        assert starts.tolist() == pytest.approx([0.0, 0.7]) and ends[-1] == pytest.approx(1.2, abs=0.01)  # each at its own pts
    assert {rows[n]["kind"] for n in ("still.gif", "iphone.heic", "scan2.tif")} == {"image"}
    assert rows["broken.gif"]["kind"] == "video" and len(visual.segments_of(rows["broken.gif"]["media_id"])[0]) >= 1
    for name in ("camcorder.mts", "dvd.mpg", "phone.3gp", "old.flv", "windows.wmv"):
        assert rows[name]["kind"] == "video" and rows[name]["duration"] == pytest.approx(2.0, abs=0.15), name
        assert len(visual.segments_of(rows[name]["media_id"])[0]) == 2, name
    memo = rows["voice-memo.mp4"]
    assert memo["kind"] == "audio" and memo["duration"] == pytest.approx(3.0, abs=0.1)
    assert len(idx.snapshot.spaces["audio"].segments_of(memo["media_id"])[0]) >= 1
    assert len(visual.segments_of(memo["media_id"])[0]) == 0
    assert idx.search(audio=media / "voice-memo.mp4", k=1)[0].path.endswith("voice-memo.mp4")
    again = mmsearch.index_paths([media], tmp_path / "index", model="synth-clip", pretrained=str(random_clip_checkpoint), device="cpu")
    assert again.indexed == [] and again.unchanged == 16  # nothing is re-decoded on the next run


@pytest.mark.slow  # mmsearch index as a whole process
def test_index_summary_counts_what_is_not_media(tmp_path, random_clip_checkpoint):
    media = tmp_path / "media"
    write_video(media / "a.mp4", [(RED, 1.0)])
    for name in ("a.txt", "b.txt", "c.json", "README"):
        (media / name).write_text("x")
    out = run("index", str(media), "--index", str(tmp_path / "idx"), "--model", "synth-clip", "--pretrained",
              str(random_clip_checkpoint), "--no-audio", "--device", "cpu")
    assert "passed over: 4 (.txt 2, (none) 1, .json 1)" in out.stdout, out.stdout


def test_an_index_kept_among_the_media_is_not_indexed(tmp_path, random_clip_checkpoint):
    """`mmsearch index . --index ./idx`: the index's own files (parquet, npy, a server's thumbnails) are
    neither media nor passed over, on the next run or ever."""
    from PIL import Image

    media = tmp_path / "media"
    write_video(media / "a.mp4", [(RED, 1.0)])
    options = dict(model="synth-clip", pretrained=str(random_clip_checkpoint), audio=False, speech=False, ocr=False, device="cpu")
    mmsearch.index_paths([media], media / "idx", **options)
    (media / "idx" / "cache" / "thumbnails").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), BLUE).save(media / "idx" / "cache" / "thumbnails" / "0-1.jpg")
    write_video(media / "b.mp4", [(BLUE, 1.0)])
    report = mmsearch.index_paths([media], media / "idx", **options)
    assert [Path(p).name for p in report.indexed] == ["b.mp4"] and report.unchanged == 1 and report.not_media == {}
    assert sorted(Path(p).name for p in mmsearch.open_index(media / "idx").media_ids()) == ["a.mp4", "b.mp4"]


def test_a_copy_named_as_another_kind_does_not_cost_the_copy_that_decodes(tmp_path, random_clip_checkpoint):
    """The same bytes as `clip.mp4` and as `a_clip.jpg` (a video named as a picture): the picture fails on its
    own and the video is indexed; copies of one kind that cannot be decoded are each recorded as failed."""
    media = tmp_path / "media"
    write_video(media / "z_clip.mp4", [(RED, 1.0)])
    (media / "a_clip.jpg").write_bytes((media / "z_clip.mp4").read_bytes())
    (media / "cut1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    (media / "cut2.mp4").write_bytes((media / "cut1.mp4").read_bytes())
    report = mmsearch.index_paths([media], tmp_path / "idx", model="synth-clip", pretrained=str(random_clip_checkpoint),
                                  audio=False, speech=False, ocr=False, device="cpu")
    assert [Path(p).name for p in report.indexed] == ["z_clip.mp4"]
    assert sorted(Path(p).name for p, _, _ in report.failed) == ["a_clip.jpg", "cut1.mp4", "cut2.mp4"] and report.duplicates == []
    idx = mmsearch.open_index(tmp_path / "idx")
    assert sorted(Path(f["path"]).name for f in idx.failures()) == ["a_clip.jpg", "cut1.mp4", "cut2.mp4"]
    assert [Path(r.path).name for r in idx.search("red", k=1)] == ["z_clip.mp4"]


def test_a_video_without_a_frame_or_a_sound_says_both(tmp_path, random_clip_checkpoint):
    """A .mp4 whose video stream holds no frame and which has no sound: the failure says both (it said only
    that there was no audio stream, as if the pictures had been fine)."""
    import av

    media = tmp_path / "media"
    media.mkdir()
    with av.open(str(media / "zero.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()  # the header, with no frame after it
    report = mmsearch.index_paths([media], tmp_path / "idx", model="synth-clip", pretrained=str(random_clip_checkpoint),
                                  speech=False, ocr=False, device="cpu")
    [(path, stage, reason)] = report.failed
    assert Path(path).name == "zero.mp4" and stage == "decode" and "no video stream" in reason and "no audio stream" in reason


def test_a_common_space_without_sound_or_with_no_steps_is_one_usage_error(tmp_path, random_clip_checkpoint):
    """train-space on a library of pictures only says why in one line (it raised a KeyError); heads of no
    dimension or no epochs are refused before anything is read."""
    from PIL import Image

    from mmsearch.api import HeadConfig, train_space

    media = tmp_path / "media"
    media.mkdir()
    Image.new("RGB", (64, 64), RED).save(media / "a.png")
    mmsearch.index_paths([media], tmp_path / "idx", model="synth-clip", pretrained=str(random_clip_checkpoint), audio=False,
                         speech=False, ocr=False, device="cpu")
    with pytest.raises(mmsearch.UsageError, match="needs both a visual and an audio space"):
        train_space(tmp_path / "idx")
    for bad in (dict(epochs=0), dict(common_dim=-1), dict(batch_size=0), dict(temperature=0.0)):
        with pytest.raises(mmsearch.UsageError, match="common space's"):
            HeadConfig(**bad)


# -- 7. damage is recorded -------------------------------------------------------------------------
def _damaged_copy(src: Path, dst: Path) -> Path:
    """``src`` with a stretch of garbage over 20 % of its bytes, starting at 40 %."""
    data = bytearray(src.read_bytes())
    a, b = int(len(data) * 0.4), int(len(data) * 0.6)
    data[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_damaged_file_is_recorded_with_what_it_lost(tmp_path, random_clip_checkpoint, backend):
    clean = tmp_path / "clean" / "long.mkv"
    write_video(clean, [(RED, 10.0), (BLUE, 10.0)], fps=10, codec="mpeg4")
    media = tmp_path / "media"
    media.mkdir()
    _damaged_copy(clean, media / "damaged.mkv")
    write_video(media / "fine.mp4", [(RED, 1.0)])
    report = mmsearch.index_paths([media], tmp_path / "index", model="synth-clip", pretrained=str(random_clip_checkpoint),
                                  audio=False, device="cpu", config=mmsearch.IngestConfig(backend=backend))
    assert sorted(Path(p).name for p in report.indexed) == ["damaged.mkv", "fine.mp4"]
    assert [Path(p).name for p, _ in report.damaged] == ["damaged.mkv"]
    idx = mmsearch.open_index(tmp_path / "index", device="cpu")
    damaged = idx.damaged()
    assert [Path(d["path"]).name for d in damaged] == ["damaged.mkv"]
    lost = float(damaged[0]["damage"].split("about ")[1].split(" s")[0])
    assert 2.0 <= lost <= 10.0  # ~20 % of a 20 s file, give or take the packets around the damage
    assert idx.info()["damaged"] == 1
    # one whole line per damaged file, however long, also when the output is piped (80 columns; grep finds it)
    out = run("info", "--index", str(tmp_path / "index"), "--failures", env={"COLUMNS": "80"})
    [line] = [x for x in out.stdout.splitlines() if x.startswith("  damaged ")]
    assert line == f"  damaged {media / 'damaged.mkv'}: {damaged[0]['damage']} (indexed for what decoded)", out.stdout
    assert "fine.mp4" not in out.stdout


def test_a_cut_webm_says_how_far_it_decoded_not_that_nothing_was_lost(tmp_path, random_clip_checkpoint):
    """A WebM written as a live stream (as browsers' MediaRecorder writes it: no duration, no cues),
    cut short, does not say where its pictures should end: the damage is recorded as how far it
    decoded, not as "about 0.0 s lost"."""
    import av

    clean = tmp_path / "clean.webm"
    with av.open(str(clean), "w", format="webm", options={"live": "1"}) as out:
        stream = out.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(200):  # 20 s
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), RED if i < 100 else BLUE, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    media = tmp_path / "media"
    media.mkdir()
    data = clean.read_bytes()
    (media / "cut.webm").write_bytes(data[: len(data) * 2 // 5])
    report = mmsearch.index_paths([media], tmp_path / "index", model="synth-clip", pretrained=str(random_clip_checkpoint),
                                  audio=False, speech=False, ocr=False, device="cpu")
    [(path, damage)] = report.damaged
    assert Path(path).name == "cut.webm" and "0.0 s lost" not in damage, damage
    until = float(damage.split("decoded up to ")[1].split(" s")[0])
    assert 4.0 <= until <= 12.0 and "unknown" in damage  # about 40 % of the 20 s


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_damaged_sound_is_recorded_and_keeps_its_times(tmp_path, backend):
    from mmsearch.audio import AudioDamage, iter_audio_windows
    from test_audio import dominant_hz, tone, write_audio

    sr = 16000
    clean = write_audio(tmp_path / "clean.m4a", np.concatenate([tone(330.0, 10.0, sr), tone(880.0, 10.0, sr)])[None], sr,
                        codec="aac", fmt="mp4")
    media = tmp_path / "media"
    media.mkdir()
    damaged = _damaged_copy(clean, media / "damaged.m4a")
    for path, broken in ((clean, False), (damaged, True)):
        damage = AudioDamage()
        windows = list(iter_audio_windows(path, sample_rate=sr, window=1.0, hop=1.0, damage=damage, backend=backend))
        assert (damage.damaged_packets > 0) == broken and (2.0 <= damage.lost_seconds <= 13.0) == broken, (path, damage)
    if backend == "pyav":  # what follows a skipped stretch keeps its time: the 880 Hz half is still at 10-20 s
        late = [w for w in windows if w.start >= 16.0 and not w.silent]
        assert late and all(dominant_hz(w.samples, sr) == pytest.approx(880.0, abs=20) for w in late)
    flac = write_audio(tmp_path / "whole.flac", tone(330.0, 6.0, sr)[None], sr, codec="flac", fmt="flac")
    (media / "cut.flac").write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])  # its header says 6 s; ~3 s are there
    report = mmsearch.index_paths([media], tmp_path / "index", model="synth-clip", audio_model="synth-clap", device="cpu",
                                  config=mmsearch.IngestConfig(backend=backend))
    damaged = dict((Path(p).name, d) for p, d in report.damaged)
    assert sorted(damaged) == ["cut.flac", "damaged.m4a"] and all(d.startswith("sound: ") for d in damaged.values())
    assert 2.0 <= float(damaged["cut.flac"].split("about ")[1].split(" s")[0]) <= 4.0


@pytest.mark.skipif(not (SHARED_MEDIA / "decord" / "corrupted.mp4").is_file(), reason=f"real corrupt MP4 not found under {SHARED_MEDIA}")
def test_real_corrupt_mp4_is_listed_as_damaged(tmp_path, random_clip_checkpoint):
    media = tmp_path / "media"
    media.mkdir()
    os.symlink(SHARED_MEDIA / "decord" / "corrupted.mp4", media / "corrupted.mp4")
    report = mmsearch.index_paths([media], tmp_path / "index", model="synth-clip", pretrained=str(random_clip_checkpoint),
                                  audio=False, device="cpu")
    idx = mmsearch.open_index(tmp_path / "index", device="cpu")
    if report.failed:  # nothing decodable: it must then be a recorded failure, not silence
        assert [Path(f["path"]).name for f in idx.failures()] == ["corrupted.mp4"]
    else:
        assert [Path(d["path"]).name for d in idx.damaged()] == ["corrupted.mp4"]


# -- 8. a whole indexed file used as the query finds itself first ------------------------------------
def test_query_by_example_finds_the_file_itself_first(tmp_path):
    from mmsearch.synth import AUDIO_CLASSES, synth_audio_event, write_wav

    media = tmp_path / "media"
    media.mkdir()
    rng = np.random.default_rng(3)
    names = []
    for i, sound in enumerate(AUDIO_CLASSES * 2):  # two clips of each sound class, different draws
        names.append(f"{i:02d}-{sound.replace(' ', '_')}.wav")
        write_wav(media / names[-1], synth_audio_event(rng, sound, 16000, 6.0), 16000)
    mmsearch.index_paths([media], tmp_path / "index", model="synth-clip", audio_model="synth-clap", device="cpu")
    idx = mmsearch.open_index(tmp_path / "index", device="cpu")
    for name in names:
        for exhaustive in (False, True):
            top = idx.search(audio=media / name, k=3, exhaustive=exhaustive)
            assert Path(top[0].path).name == name, (name, exhaustive, [(Path(r.path).name, r.score) for r in top])


@pytest.mark.skipif(not (SHARED_MEDIA / "librosa").is_dir(), reason=f"real sample sounds not found under {SHARED_MEDIA}")
@pytest.mark.slow
def test_real_sounds_find_themselves_first(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    files = sorted((SHARED_MEDIA / "librosa").glob("*.ogg"))
    for f in files:
        os.symlink(f, media / f.name)
    mmsearch.index_paths([media], tmp_path / "index", model="synth-clip", audio_model="synth-clap", device="cpu")
    idx = mmsearch.open_index(tmp_path / "index", device="cpu")
    misses = [f.name for f in files if Path(idx.search(audio=media / f.name, k=1)[0].path).name != f.name]
    assert misses == []


# -- 9. file names that are not UTF-8 --------------------------------------------------------------
@pytest.mark.slow
def test_non_utf8_names_give_valid_json_and_keep_their_bytes(tmp_path, random_clip_checkpoint):
    media = tmp_path / "media"
    write_video(media / "x.mp4", [(RED, 1.0), (BLUE, 1.0)])
    raw = os.fsencode(media) + b"/caf\xe9.mp4"  # Latin-1 bytes: not UTF-8
    os.rename(media / "x.mp4", raw)
    index = tmp_path / "index"
    run("index", str(media), "--index", str(index), "--model", "synth-clip", "--pretrained", str(random_clip_checkpoint),
        "--no-audio", "--device", "cpu")
    red = _save_frame(Path(os.fsdecode(raw)), 0.5, tmp_path / "red.png")
    out = run("query", "--image", str(red), "--index", str(index), "--json")
    data = json.loads(out.stdout)
    for text in _strings(data):
        text.encode("utf-8")  # a lone surrogate (\udce9) raises here, as strict parsers reject it
    top = data["results"][0]
    assert top["path"].endswith("caf\\xe9.mp4")
    assert base64.b64decode(top["path_bytes"]) == raw
    info = json.loads(run("info", "--index", str(index), "--json", "--failures").stdout)
    for text in _strings(info):
        text.encode("utf-8")


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
