"""Tests for audio ingestion (mmsearch.audio): files written with PyAV, plus real-world samples."""

from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from mmsearch.audio import (
    AudioInfo,
    audio_windows,
    check_audible,
    is_silent,
    iter_audio_windows,
    level_db,
    load_audio,
    probe_audio,
    window_bounds,
)
from mmsearch.errors import DecodeError, MediaError, NoAudioError, UsageError

from conftest import GREEN, RED, write_video

SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
needs_shared_media = pytest.mark.skipif(
    not SHARED_MEDIA.is_dir(), reason=f"real-world sample media not found at {SHARED_MEDIA}"
)


# --------------------------------------------------------------------------- helpers
def tone(freq: float, seconds: float, sr: int, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * sr))) / sr)).astype(np.float32)


def write_audio(
    path: Path,
    channels: np.ndarray,
    sr: int,
    *,
    codec: str = "pcm_s16le",
    fmt: str | None = None,
    start_pts: int = 0,
) -> Path:
    """Write (C, N) float32 samples with PyAV; ``start_pts`` (in samples) delays the first frame."""
    channels = np.atleast_2d(np.asarray(channels, dtype=np.float32))
    layout = "mono" if channels.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=sr)
        stream.layout = layout
        for i in range(0, channels.shape[1], 960):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(channels[:, i : i + 960]), format="fltp", layout=layout)
            frame.sample_rate = sr
            frame.pts = start_pts + i
            frame.time_base = Fraction(1, sr)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def dominant_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1.0 / sr)[int(np.argmax(spectrum))])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


FORMATS = [  # (suffix, container, codec, native rate)
    ("wav", "wav", "pcm_s16le", 44100),
    ("flac", "flac", "flac", 44100),
    ("mp3", "mp3", "libmp3lame", 44100),
    ("opus", "ogg", "libopus", 48000),
    ("m4a", "mp4", "aac", 44100),
    ("webm", "webm", "libopus", 24000),
]


# --------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("suffix,fmt,codec,sr", FORMATS, ids=[f[0] for f in FORMATS])
def test_formats_decode_resample_and_keep_time(tmp_path: Path, suffix: str, fmt: str, codec: str, sr: int) -> None:
    path = write_audio(tmp_path / f"tone.{suffix}", tone(1000.0, 3.0, sr)[None], sr, codec=codec, fmt=fmt)
    info = probe_audio(path)
    native = 48000 if codec == "libopus" else sr  # Opus always decodes at 48 kHz
    assert isinstance(info, AudioInfo) and info.sample_rate == native and info.channels == 1
    assert info.duration == pytest.approx(3.0, abs=0.08)
    samples, offset = load_audio(path, sample_rate=16000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) / 16000 == pytest.approx(3.0, abs=0.08)  # codec priming/padding at most
    assert 0.0 <= offset < 0.03  # mp3 reports its encoder delay (~25 ms) as the start time
    assert dominant_hz(samples, 16000) == pytest.approx(1000.0, abs=5.0)
    assert rms(samples[1600:-1600]) == pytest.approx(0.3 / np.sqrt(2), rel=0.08)


def test_resampling_44k1_to_16k_keeps_frequency_and_length(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "a.wav", tone(1000.0, 2.0, 44100)[None], 44100)
    samples, offset = load_audio(path, sample_rate=16000)
    assert offset == 0.0
    assert abs(len(samples) - 32000) <= 16
    assert dominant_hz(samples, 16000) == pytest.approx(1000.0, abs=1.0)
    # and upwards, to CLAP's 48 kHz
    up, _ = load_audio(path, sample_rate=48000)
    assert abs(len(up) - 96000) <= 48
    assert dominant_hz(up, 48000) == pytest.approx(1000.0, abs=1.0)


def test_stereo_is_mixed_to_mono_by_averaging(tmp_path: Path) -> None:
    sr = 16000
    left, right = tone(440.0, 2.0, sr, 0.4), tone(1500.0, 2.0, sr, 0.4)
    path = write_audio(tmp_path / "st.wav", np.stack([left, right]), sr)
    info = probe_audio(path)
    assert info.channels == 2
    mono, _ = load_audio(path, sample_rate=sr)
    np.testing.assert_allclose(mono, (left + right) / 2, atol=2e-4)  # 16-bit quantisation only
    cancel = write_audio(tmp_path / "cancel.wav", np.stack([left, -left]), sr)
    silent, _ = load_audio(cancel, sample_rate=sr)
    assert np.max(np.abs(silent)) < 1e-3


def test_timestamps_count_from_the_start_of_the_media(tmp_path: Path) -> None:
    """Sound times are the stream's pts minus the container's start (issue #14): a file whose
    only stream starts at pts 1 s starts at 0, as a player shows it."""
    sr = 16000
    path = write_audio(tmp_path / "late.mkv", tone(440.0, 2.0, sr)[None], sr, codec="flac", fmt="matroska", start_pts=sr)
    for backend in ("pyav", "decord"):
        samples, offset = load_audio(path, sample_rate=sr, backend=backend)
        assert offset == pytest.approx(0.0, abs=1e-3) and len(samples) == 2 * sr
    windows = list(iter_audio_windows(path, sample_rate=sr, window=1.0, hop=0.5))
    assert windows[0].start == pytest.approx(0.0, abs=1e-3)
    assert windows[-1].end == pytest.approx(2.0, abs=1e-3)


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_sound_that_starts_after_the_pictures_keeps_its_delay(tmp_path: Path, backend: str) -> None:
    """Pictures from 0 s (container start 5 s), sound from 1 s: the sound's offset is 1 s."""
    sr, fps, start = 16000, 10, 5.0
    path = tmp_path / "delayed.mkv"
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("flac", rate=sr)
        audio.layout = "mono"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(start * fps) + i, Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        samples = tone(440.0, 2.0, sr)[None]
        for i in range(0, samples.shape[1], 960):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i : i + 960]), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = sr, int((start + 1.0) * sr) + i, Fraction(1, sr)
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    _, offset = load_audio(path, sample_rate=sr, backend=backend)
    assert offset == pytest.approx(1.0, abs=0.01)
    windows = list(iter_audio_windows(path, sample_rate=sr, window=1.0, hop=0.5, backend=backend))
    assert windows[0].start == pytest.approx(1.0, abs=0.01) and windows[-1].end == pytest.approx(3.0, abs=0.01)


def test_max_seconds_stops_early(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "long.flac", tone(300.0, 6.0, 22050)[None], 22050, codec="flac", fmt="flac")
    samples, _ = load_audio(path, sample_rate=16000, max_seconds=2.5)
    assert len(samples) == 40000
    windows = list(iter_audio_windows(path, sample_rate=16000, window=2.0, hop=1.0, max_seconds=2.5))
    assert [(w.start, w.end) for w in windows] == [(0.0, 2.0), (1.0, 2.5)]


def test_video_with_aac_track(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    write_video(path, [(RED, 2.0), (GREEN, 2.0)], audio=True)  # a 440 Hz tone at 16 kHz in AAC
    info = probe_audio(path)
    assert info.sample_rate == 16000 and info.duration == pytest.approx(4.0, abs=0.1)
    samples, offset = load_audio(path, sample_rate=16000)
    assert offset == pytest.approx(0.0, abs=0.01)
    assert len(samples) / 16000 == pytest.approx(4.0, abs=0.1)
    assert dominant_hz(samples, 16000) == pytest.approx(440.0, abs=3.0)
    windows = list(iter_audio_windows(path, sample_rate=16000, window=2.0, hop=1.0))
    assert [round(w.start, 3) for w in windows][:3] == [0.0, 1.0, 2.0] and not any(w.silent for w in windows)
    assert windows[-1].end == pytest.approx(len(samples) / 16000) and windows[-2].end < windows[-1].end


def test_video_without_audio_raises_no_audio(tmp_path: Path) -> None:
    path = tmp_path / "mute.mp4"
    write_video(path, [(RED, 1.0)])
    for call in (
        lambda: probe_audio(path),
        lambda: load_audio(path, sample_rate=16000),
        lambda: list(iter_audio_windows(path, sample_rate=16000)),
        lambda: load_audio(path, sample_rate=16000, backend="decord"),
    ):
        with pytest.raises(NoAudioError) as err:
            call()
        assert isinstance(err.value, MediaError) and err.value.stage == "audio"
        assert err.value.path == str(path)


def test_zero_sample_file_raises_no_audio(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"")
    with pytest.raises(NoAudioError):
        load_audio(path, sample_rate=16000)
    with pytest.raises(NoAudioError):
        list(iter_audio_windows(path, sample_rate=16000))


def test_garbage_raises_decode_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.mp3"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    for call in (lambda: probe_audio(path), lambda: load_audio(path, sample_rate=16000)):
        with pytest.raises((DecodeError, NoAudioError)) as err:
            call()
        assert isinstance(err.value, MediaError)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 100)
    with pytest.raises(DecodeError):
        load_audio(text, sample_rate=16000)
    with pytest.raises(DecodeError):
        probe_audio(tmp_path / "missing.wav")


def test_decord_backend_agrees(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "d.flac", tone(1000.0, 3.0, 44100)[None], 44100, codec="flac", fmt="flac")
    a, _ = load_audio(path, sample_rate=16000)
    b, offset = load_audio(path, sample_rate=16000, backend="decord")
    assert offset == 0.0
    assert abs(len(a) - len(b)) <= 400
    assert dominant_hz(b, 16000) == pytest.approx(1000.0, abs=2.0)
    windows = list(iter_audio_windows(path, sample_rate=16000, window=2.0, hop=1.0, backend="decord"))
    assert windows[0].start == 0.0 and windows[-1].end == pytest.approx(3.0, abs=0.03)
    with pytest.raises(UsageError):
        load_audio(path, sample_rate=16000, backend="nope")


# --------------------------------------------------------------------------- windows and silence
def test_window_bounds_cover_the_file() -> None:
    sr = 1000
    assert window_bounds(23_000, sr, window=10.0, hop=5.0) == [(0, 10000), (5000, 15000), (10000, 20000), (15000, 23000)]
    assert window_bounds(20_000, sr, window=10.0, hop=5.0) == [(0, 10000), (5000, 15000), (10000, 20000)]
    assert window_bounds(3_000, sr, window=10.0, hop=5.0) == [(0, 3000)]  # shorter than a window: kept shorter
    assert window_bounds(10_001, sr, window=10.0, hop=5.0) == [(0, 10000), (5000, 10001)]
    assert window_bounds(0, sr) == []
    assert window_bounds(5_000, sr, window=2.0, hop=2.0) == [(0, 2000), (2000, 4000), (4000, 5000)]
    with pytest.raises(UsageError):
        window_bounds(100, sr, window=1.0, hop=2.0)
    with pytest.raises(UsageError):
        window_bounds(100, sr, window=0.0, hop=0.0)


def test_windows_times_and_silence_flags(tmp_path: Path) -> None:
    sr = 16000
    track = np.concatenate([tone(500.0, 4.0, sr), np.zeros(6 * sr, np.float32), tone(800.0, 3.0, sr)])
    windows = audio_windows(track, sr, window=2.0, hop=2.0, offset=0.5)
    assert [(w.start, w.end) for w in windows] == [(0.5 + 2 * k, min(0.5 + 2 * k + 2, 13.5)) for k in range(7)]
    assert [w.silent for w in windows] == [False, False, True, True, True, False, False]
    assert all(len(w.samples) == round(w.duration * sr) for w in windows)
    # the streaming iterator yields exactly the same windows
    path = write_audio(tmp_path / "t.wav", track[None], sr)
    streamed = list(iter_audio_windows(path, sample_rate=sr, window=2.0, hop=2.0))
    whole = audio_windows(load_audio(path, sample_rate=sr)[0], sr, window=2.0, hop=2.0)
    assert [(w.start, w.end, w.silent) for w in streamed] == [(w.start, w.end, w.silent) for w in whole]
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(streamed, whole))
    overlapping = list(iter_audio_windows(path, sample_rate=sr, window=5.0, hop=2.5))
    assert [(w.start, w.end) for w in overlapping] == [(0.0, 5.0), (2.5, 7.5), (5.0, 10.0), (7.5, 12.5), (10.0, 13.0)]


def test_silence_detection() -> None:
    sr = 16000
    assert is_silent(np.zeros(sr, np.float32))
    assert is_silent(np.zeros(0, np.float32))
    assert is_silent(tone(440.0, 1.0, sr, amplitude=1e-4))  # about -83 dBFS
    assert not is_silent(tone(440.0, 1.0, sr, amplitude=0.01))  # about -43 dBFS
    quiet = np.zeros(10 * sr, np.float32)
    quiet[5 * sr : 5 * sr + 1600] = tone(440.0, 0.1, sr, amplitude=0.05)  # a short blip is not silence
    assert not is_silent(quiet)
    assert level_db(tone(440.0, 1.0, sr, amplitude=1.0)) == pytest.approx(-3.01, abs=0.05)
    assert is_silent(tone(440.0, 1.0, sr, amplitude=0.01), threshold_db=-30.0)


def test_silent_file_is_reported(tmp_path: Path) -> None:
    sr = 16000
    path = write_audio(tmp_path / "hush.wav", np.zeros((1, 5 * sr), np.float32), sr)
    samples, _ = load_audio(path, sample_rate=sr)  # silence is not a decode error...
    with pytest.raises(NoAudioError, match="silent"):
        check_audible(path, samples)  # ...but the whole-file check reports it
    seen = []
    with pytest.raises(NoAudioError, match="silent"):
        for w in iter_audio_windows(path, sample_rate=sr, window=2.0, hop=1.0):
            seen.append(w)
    assert seen and all(w.silent for w in seen)  # every window came out, flagged, before the error
    assert all(w.silent for w in iter_audio_windows(path, sample_rate=sr, allow_silent=True))
    with pytest.raises(NoAudioError):
        check_audible(path, audio_windows(samples, sr))
    check_audible(path, tone(440.0, 1.0, sr))  # no error


# --------------------------------------------------------------------------- real-world files
@needs_shared_media
@pytest.mark.parametrize("name", ["198-209-0000.ogg", "Kevin_MacLeod_-_Vibe_Ace.ogg", "pibble.ogg", "glacier-bay-humpback.ogg"])
def test_real_ogg_vorbis(name: str) -> None:
    path = SHARED_MEDIA / "librosa" / name
    info = probe_audio(path)
    assert info.sample_rate == 22050 and info.channels == 1 and info.duration > 2.0
    samples, offset = load_audio(path, sample_rate=16000)
    assert offset == 0.0
    assert len(samples) / 16000 == pytest.approx(info.duration, abs=0.01)
    assert not is_silent(samples) and np.max(np.abs(samples)) <= 1.01
    windows = list(iter_audio_windows(path, sample_rate=16000))
    assert windows[0].start == 0.0 and windows[-1].end == pytest.approx(info.duration, abs=0.01)
    assert all(b.start - a.start == pytest.approx(5.0) for a, b in zip(windows, windows[1:]))


@needs_shared_media
def test_all_real_ogg_files_decode() -> None:
    files = sorted((SHARED_MEDIA / "librosa").glob("*.ogg"))
    assert files
    for path in files:
        samples, _ = load_audio(path, sample_rate=16000, max_seconds=20.0)
        assert len(samples) > 16000 and not is_silent(samples), path.name


@needs_shared_media
def test_real_mkv_with_opus_track() -> None:
    path = SHARED_MEDIA / "decord" / "flipping_a_pancake.mkv"
    info = probe_audio(path)
    assert info.sample_rate == 48000 and info.channels >= 1
    assert info.duration == pytest.approx(10.4, abs=0.1)
    samples, offset = load_audio(path, sample_rate=48000)
    assert offset == pytest.approx(0.0, abs=0.01)
    assert len(samples) / 48000 == pytest.approx(10.37, abs=0.05)
    assert not is_silent(samples)
    windows = list(iter_audio_windows(path, sample_rate=48000))
    assert [round(w.start, 3) for w in windows] == [0.0, 5.0] and windows[-1].end == pytest.approx(10.37, abs=0.05)
    via_decord, _ = load_audio(path, sample_rate=48000, backend="decord")
    assert abs(len(via_decord) - len(samples)) < 0.05 * 48000


@needs_shared_media
def test_real_videos_without_audio() -> None:
    with pytest.raises(NoAudioError):
        probe_audio(SHARED_MEDIA / "decord" / "video_0.mov")
    with pytest.raises(NoAudioError):
        load_audio(SHARED_MEDIA / "decord" / "corrupted.mp4", sample_rate=16000)


def test_sound_that_ends_before_the_pictures_is_not_damage(tmp_path):
    """An MKV states no length per stream: the container's (its pictures') is not the sound's."""
    from conftest import RED, write_video

    from mmsearch.audio import AudioDamage, iter_audio_windows

    path = tmp_path / "ends_early.mkv"
    write_video(path, [(RED, 6.0)], audio_seconds=3.0)
    damage = AudioDamage()
    windows = list(iter_audio_windows(path, sample_rate=16000, window=1.0, hop=1.0, damage=damage))
    assert windows and windows[-1].end == pytest.approx(3.0, abs=0.1)
    assert damage.damaged_packets == 0 and damage.lost_seconds == 0.0


def test_a_damaged_mpeg_ts_whose_sound_clock_wrapped_keeps_its_times(tmp_path):
    """MPEG-TS counts time in 33 bits: a first sound packet stamped just before the start came out of a
    damaged file as 2**33 ticks (95 443 s) late. Its sound is placed at 0 s, like its pictures."""
    import av

    from mmsearch.audio import AudioDamage, iter_audio_windows

    path = tmp_path / "clip.ts"
    write_video(path, [(RED, 7.0), (GREEN, 7.0)], audio=True)
    data = bytearray(path.read_bytes())
    a, b = int(len(data) * 0.42), int(len(data) * 0.57)
    data[a:b] = bytes(b - a)  # damage in the middle
    path.write_bytes(bytes(data))
    with av.open(str(path)) as container:  # the condition this test is about
        stream = container.streams.audio[0]
        assert float(stream.start_time * stream.time_base) > 90_000
    windows = list(iter_audio_windows(path, sample_rate=16000, window=2.0, hop=2.0, damage=AudioDamage()))
    assert windows[0].start == pytest.approx(0.0, abs=0.1) and windows[-1].end <= 14.2
