"""Subtitles as time-aligned text (issue #15): sidecar files and text streams inside containers.

Every test writes its own files: sidecars as text, videos with PyAV (subtitle streams muxed from
raw packets with ``add_mux_stream``), and asserts exact seconds, words and languages.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import RED, write_video

from mmsearch.errors import MediaError, SubtitleError
from mmsearch.spaces import TextSegment
from mmsearch.subtitles import (
    _packet_text,
    embedded_subtitles,
    read_sidecar,
    read_subtitles,
    sidecar_files,
)

SRT = """1
00:00:01,250 --> 00:00:03,500
Hello <i>there</i>,
general Kenobi

2
00:00:04,000 --> 00:00:05,125
Second   cue
"""

VTT = """WEBVTT

00:00:00.500 --> 00:00:02.000
<v Bob>Good morning</v>

00:01:02.345 --> 00:01:04.000 align:start
Second line
"""

ASS = """[Script Info]
ScriptType: v4.00+
PlayResX: 384
PlayResY: 288

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Arial,20,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,2,2,2,10,10,10,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:01.50,0:00:02.75,Default,,0,0,0,,{\\i1}Slanted{\\i0} words\\Nnext line
Comment: 0,0:00:03.00,0:00:04.00,Default,,0,0,0,,a note for the typesetter
Dialogue: 0,0:00:05.00,0:00:06.00,Default,,0,0,0,,{\\pos(10,10)\\b1}Bold{\\b0}
"""


def _segments(segments: list[TextSegment]) -> list[tuple[float, float, str, str | None]]:
    assert all(s.source == "subtitles" for s in segments)
    return [(s.start, s.end, s.text, s.language) for s in segments]


def write_subtitled(
    path: Path,
    tracks: list[tuple[str, str, list[tuple[float, float, bytes]]]],
    *,
    start: float = 0.0,
    seconds: float = 10.0,
) -> None:
    """A small mpeg4 video with subtitle streams ``(codec, language, [(start s, end s, payload)])``.

    Every pts (pictures and cues) is shifted by ``start`` seconds, so the container starts there;
    cue times are given relative to the first picture, as a player shows them.
    """
    import av

    fps = 10
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        subs = []
        for codec, language, _ in tracks:
            stream = out.add_mux_stream(codec, time_base=Fraction(1, 1000))
            stream.metadata["language"] = language
            subs.append(stream)
        picture = np.full((48, 64, 3), 128, np.uint8)
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i + round(start * fps), Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        for stream, (_, _, cues) in zip(subs, tracks):
            for begin, end, payload in cues:
                packet = av.Packet(payload)
                packet.stream, packet.time_base = stream, Fraction(1, 1000)
                packet.pts = packet.dts = round((begin + start) * 1000)
                packet.duration = round((end - begin) * 1000)
                out.mux(packet)


def _mov_text(text: str) -> bytes:
    data = text.encode("utf-8")
    return len(data).to_bytes(2, "big") + data


# -- sidecar names ---------------------------------------------------------------------------------
def test_sidecar_names_match_the_stem_and_an_optional_language(tmp_path):
    for name in [
        "film.mp4", "film.srt", "film.en.srt", "film.pt-BR.srt", "film.eng.ass", "film.fr.VTT", "film.ssa",
        "film2.srt", "film.en.forced.srt", "film.english.srt", "film.en.txt", "other.en.srt", "film.en.mp4",
    ]:
        (tmp_path / name).write_text("x")
    (tmp_path / "film.de.srt").mkdir()  # a folder is not a subtitle file
    found = sidecar_files(tmp_path / "film.mp4")
    assert [(p.name, lang) for p, lang in found] == [
        ("film.en.srt", "en"), ("film.eng.ass", "eng"), ("film.fr.VTT", "fr"),
        ("film.pt-BR.srt", "pt-BR"), ("film.srt", None), ("film.ssa", None),
    ]
    assert all(p.parent == tmp_path for p, _ in found)
    # film.en.mp4's stem is "film.en": its own film.en.srt, not film.srt or film.eng.ass
    assert [(p.name, lang) for p, lang in sidecar_files(tmp_path / "film.en.mp4")] == [("film.en.srt", None)]
    assert sidecar_files(tmp_path / "missing-folder" / "film.mp4") == []


# -- sidecar contents ------------------------------------------------------------------------------
def test_srt_sidecar_gives_exact_times_plain_text_and_language(tmp_path):
    path = tmp_path / "film.en.srt"
    path.write_text(SRT, encoding="utf-8")
    assert _segments(read_sidecar(path, "en")) == [
        (1.25, 3.5, "Hello there, general Kenobi", "en"),
        (4.0, 5.125, "Second cue", "en"),
    ]
    write_video(tmp_path / "film.mp4", [(RED, 1.0)])
    segments, problems = read_subtitles(tmp_path / "film.mp4")  # the language comes from the name
    assert problems == [] and [s.language for s in segments] == ["en", "en"]


def test_vtt_sidecar(tmp_path):
    path = tmp_path / "clip.vtt"
    path.write_text(VTT, encoding="utf-8")
    assert _segments(read_sidecar(path)) == [
        (0.5, 2.0, "Good morning", None),
        (62.345, 64.0, "Second line", None),
    ]


def test_ass_sidecar_strips_override_tags_and_skips_comments(tmp_path):
    path = tmp_path / "clip.ass"
    path.write_text(ASS, encoding="utf-8")
    assert _segments(read_sidecar(path, "de")) == [
        (1.5, 2.75, "Slanted words next line", "de"),
        (5.0, 6.0, "Bold", "de"),
    ]


_CUE = "1\n00:00:02,000 --> 00:00:03,000\n{}\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_CUE.format("Café – naïve “quotes”").encode("cp1252"), "Café – naïve “quotes”"),  # 0x93, 0x96: not latin-1
        (_CUE.format("Über straße").encode("utf-8-sig"), "Über straße"),  # UTF-8 with a byte-order mark
        (_CUE.format("Здравствуй").encode("utf-16"), "Здравствуй"),  # UTF-16 with a byte-order mark
    ],
    ids=["cp1252", "utf8-bom", "utf16-bom"],
)
def test_sidecar_encodings(tmp_path, data, expected):
    path = tmp_path / "film.srt"
    path.write_bytes(data)
    assert _segments(read_sidecar(path)) == [(2.0, 3.0, expected, None)]


def test_empty_sidecar_has_no_cues(tmp_path):
    path = tmp_path / "film.srt"
    path.write_text("\n\n")
    assert read_sidecar(path) == []


def test_garbage_sidecar_raises_subtitle_error_naming_the_file(tmp_path):
    path = tmp_path / "film.en.srt"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(SubtitleError) as err:
        read_sidecar(path)
    assert isinstance(err.value, MediaError) and err.value.path == str(path)
    assert "film.en.srt" in str(err.value) and "fix or remove the file" in err.value.reason
    assert "\n" not in str(err.value)


def test_unreadable_sidecar_raises_subtitle_error(tmp_path):
    with pytest.raises(SubtitleError) as err:
        read_sidecar(tmp_path / "absent.srt")
    assert err.value.path == str(tmp_path / "absent.srt") and "cannot read" in err.value.reason


# -- embedded streams ------------------------------------------------------------------------------
def test_embedded_subrip_in_mkv_with_start_offset(tmp_path):
    """The container starts at 5 s: a cue at container time 7.0 s is at 2.0 s for the viewer."""
    import av

    video = tmp_path / "late.mkv"
    write_subtitled(
        video,
        [("subrip", "eng", [(2.0, 3.5, b"Hello <i>world</i>"), (4.25, 5.0, b"Two\nlines")])],
        start=5.0,
    )
    with av.open(str(video)) as container:
        assert container.start_time == 5_000_000  # the file really starts late
        (packet,) = [p for p in container.demux(container.streams.subtitles[0]) if p.size][:1]
        assert packet.pts * packet.time_base == 7  # and the cue really is at container time 7 s
    assert _segments(embedded_subtitles(video)) == [
        (2.0, 3.5, "Hello world", "eng"),
        (4.25, 5.0, "Two lines", "eng"),
    ]


def test_embedded_mov_text_in_mp4(tmp_path):
    video = tmp_path / "clip.mp4"
    write_subtitled(
        video,
        [
            ("mov_text", "fra", [(1.0, 2.5, _mov_text("Bonjour à tous")), (6.0, 7.0, _mov_text("Fin"))]),
            ("mov_text", "und", [(3.0, 4.0, _mov_text("Sans langue"))]),  # MP4 keeps "und" (Matroska drops it)
        ],
    )
    # the MP4 muxer fills the gaps between cues with empty samples: they are no segments
    assert _segments(embedded_subtitles(video)) == [
        (1.0, 2.5, "Bonjour à tous", "fra"),
        (6.0, 7.0, "Fin", "fra"),
        (3.0, 4.0, "Sans langue", None),
    ]


def test_embedded_ass_and_webvtt_streams_and_und_language(tmp_path):
    video = tmp_path / "two.mkv"
    write_subtitled(
        video,
        [
            ("ass", "und", [(1.0, 2.0, b"0,0,Default,,0,0,0,,{\\i1}Lean{\\i0}, with commas\\Nand lines")]),
            ("webvtt", "spa", [(3.0, 4.0, b"Hola <b>mundo</b>")]),
        ],
        start=1.5,
    )
    assert _segments(embedded_subtitles(video)) == [
        (1.0, 2.0, "Lean, with commas and lines", None),
        (3.0, 4.0, "Hola mundo", "spa"),
    ]


def test_video_without_subtitles_has_none(tmp_path):
    video = tmp_path / "plain.mp4"
    write_video(video, [(RED, 1.0)])
    assert embedded_subtitles(video) == []
    assert read_subtitles(video) == ([], [])


def test_damaged_container_raises_subtitle_error(tmp_path):
    video = tmp_path / "broken.mkv"
    video.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(SubtitleError) as err:
        embedded_subtitles(video)
    assert err.value.path == str(video) and "broken.mkv" in str(err.value)


def test_packet_bytes_when_the_decoder_rejects_a_packet(tmp_path, monkeypatch):
    """Without a working decoder the text comes from the packet bytes, one codec's layout each."""
    import av

    from mmsearch import subtitles

    assert _packet_text("mov_text", _mov_text("Olá") + b"\x00\x00\x00\x0cstyl") == "Olá"
    assert _packet_text("ass", b"3,0,Default,,0,0,0,,{\\b1}A, b{\\b0}\\Nc") == "A, b c"
    assert _packet_text("subrip", b"<i>Hi</i>\nthere") == "Hi there"

    def reject(packet):
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(subtitles, "_decoded_text", reject)
    video = tmp_path / "clip.mp4"
    write_subtitled(video, [("mov_text", "eng", [(1.0, 2.0, _mov_text("Raw bytes"))])])
    assert _segments(embedded_subtitles(video)) == [(1.0, 2.0, "Raw bytes", "eng")]


# -- everything together ---------------------------------------------------------------------------
def test_read_subtitles_merges_sources_drops_duplicates_and_reports_broken_sidecars(tmp_path):
    video = tmp_path / "film.mkv"
    write_subtitled(video, [("subrip", "eng", [(1.25, 3.5, b"Hello there, general Kenobi"), (8.0, 9.0, b"Only inside")])])
    (tmp_path / "film.en.srt").write_text(SRT, encoding="utf-8")  # its first cue repeats the stream's
    (tmp_path / "film.fr.vtt").write_text(VTT, encoding="utf-8")
    (tmp_path / "film.de.srt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    segments, problems = read_subtitles(video)
    assert [(s.start, s.end, s.text) for s in segments] == [
        (0.5, 2.0, "Good morning"),
        (1.25, 3.5, "Hello there, general Kenobi"),
        (4.0, 5.125, "Second cue"),
        (8.0, 9.0, "Only inside"),
        (62.345, 64.0, "Second line"),
    ]
    assert [s.language for s in segments] == ["fr", "eng", "en", "eng", "fr"]  # the duplicate kept from the stream
    assert len(problems) == 1 and problems[0].startswith("film.de.srt: cannot parse subtitles (")
    assert problems[0].endswith("fix or remove the file") and "\n" not in problems[0]


def test_read_subtitles_reports_a_damaged_container_and_keeps_sidecars(tmp_path):
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\x00garbage" * 100)
    (tmp_path / "broken.srt").write_text(SRT, encoding="utf-8")
    segments, problems = read_subtitles(video)
    assert [s.text for s in segments] == ["Hello there, general Kenobi", "Second cue"]
    assert len(problems) == 1 and problems[0].startswith("broken.mp4: cannot read its subtitle streams")


def test_vtt_blocks_identifiers_and_word_timestamps_stay_out_of_the_text(tmp_path):
    vtt = tmp_path / "film.en.vtt"
    vtt.write_text(
        "\ufeffWEBVTT\n\nNOTE a note that is not a cue\n\nSTYLE\n::cue { color: red }\n\n"
        "cue-1\n00:00:00.500 --> 00:00:02.000\nFirst <c.yellow>line</c>\n\n"
        "00:00:02.000 --> 00:00:04.250 align:start\nYouTube<00:00:02.900><c> style</c>\n",
        encoding="utf-8",
    )
    got = [(s.start, s.end, s.text, s.language) for s in read_sidecar(vtt, "en")]
    assert got == [(0.5, 2.0, "First line", "en"), (2.0, 4.25, "YouTube style", "en")]


def test_ass_without_a_styles_section_is_read_by_its_extension(tmp_path):
    ass = tmp_path / "film.ass"
    ass.write_text(
        "[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
        "Dialogue: 0,0:00:01.00,0:00:02.50,Default,,0,0,0,,{\\i1}Hello{\\i0} there\n",
        encoding="utf-8",
    )
    assert [(s.start, s.end, s.text) for s in read_sidecar(ass)] == [(1.0, 2.5, "Hello there")]
