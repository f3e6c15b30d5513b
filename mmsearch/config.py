"""The ingest configuration and the one place it is recorded in, and read back from, an index's manifest."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from .encoders.image_tower import check_image_runtime
from .errors import UsageError
from .media import DEFAULT_BACKEND, get_backend
from .moments import MomentConfig

__all__ = [
    "IngestConfig", "RECORDED_FIELDS", "audio_window_config", "changed_run_fields", "check_recorded", "config_from_record", "config_record", "encoder_options",
]

# What an index remembers of how it was built: a later run and every query cut media the same way.
RECORDED_FIELDS = (
    "fps", "backend", "window", "stride", "audio_window", "audio_hop", "asr_model", "ocr_interval",
    "skip_similar", "skip_nonref", "skip_loop_filter", "image_runtime", "captions",
)
# Decoding threads of one decoder process at most: each thread reserves its stack and frame buffers
# in the decoder's address space (IngestConfig.memory_limit_mb), and 1000 threads made every video
# fail to open; more threads than cores buy nothing.
MAX_DECODER_THREADS = 64
# Recorded fields that must match between runs (changing them would mix incompatible segments).
FIXED_FIELDS = ("fps", "window", "stride", "audio_window", "audio_hop")
# Recorded fields a later run may change: how files are decoded and encoded, not what a segment is.
RUN_FIELDS = ("backend", "skip_similar", "skip_nonref", "skip_loop_filter", "image_runtime", "captions")


@dataclass(frozen=True)
class IngestConfig:
    """How files become vectors. Recorded in the manifest; a later run reuses it."""

    fps: float = 1.0
    backend: str = DEFAULT_BACKEND
    window: float = 4.0
    stride: float = 2.0
    chunk_frames: int = 32
    workers: int | None = None  # decoder processes; None: default_workers() for the encoders' device
    decoder_threads: int | None = None  # video decoding threads per decoder process; None: the cores shared out (ingest.decoder_threads), 0: FFmpeg's choice
    stall_timeout: float = 120.0  # seconds without progress from a decoder before it is killed
    memory_limit_mb: int = 8192  # address-space ceiling of a decoder process
    commit_seconds: float = 30.0  # commit at least this often
    retry_failed: bool = False
    max_memory_mb: int | None = None  # budget of each vector index; None: half the memory available
    latency_ms: float = 10.0  # single-query latency target of each vector index (exact search while it meets it)
    audio_window: float | None = None  # seconds; None: what the audio encoder recommends (10 s for CLAP)
    audio_hop: float | None = None
    asr_model: str | None = None  # faster-whisper model name or directory for the speech space; None: "base"
    ocr_interval: float = 2.0  # seconds between the frames read for on-screen text
    # faster indexing on a CPU (issue #18): see the README's "Faster indexing on a CPU"
    skip_similar: bool = True  # skip sampled frames that repeat the last embedded one (mmsearch.frameskip)
    skip_nonref: bool = True  # PyAV: decode no frame that no other frame refers to (FFmpeg's skip_frame=NONREF)
    skip_loop_filter: bool = False  # PyAV: no in-loop deblocking (FFmpeg's skip_loop_filter=all): cheaper, slightly blockier
    image_runtime: str = "torch"  # the CLIP image tower on a CPU: "torch" (fp32) or "onnx-int8" (ONNX Runtime, int8)
    captions: str | None = None  # the captioner of the caption space, CoCa or BLIP (mmsearch.captions); None: no captions

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise UsageError(f"--fps must be positive, got {self.fps}")
        if not self.latency_ms > 0:
            raise UsageError(f"--latency-ms must be positive, got {self.latency_ms}")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.decoder_threads is not None and not 0 <= self.decoder_threads <= MAX_DECODER_THREADS:
            why = " (more threads than cores buy no speed)" if self.decoder_threads > MAX_DECODER_THREADS else ""
            raise UsageError(f"--decoder-threads must be 0 (FFmpeg's choice) to {MAX_DECODER_THREADS}, got {self.decoder_threads}{why}")
        if not self.stall_timeout > 0:
            raise UsageError(f"--timeout must be positive seconds, got {self.stall_timeout}")
        if not self.commit_seconds >= 0:
            raise UsageError(f"--commit-every must be 0 (after every file) or more seconds, got {self.commit_seconds}")
        if self.max_memory_mb is not None and self.max_memory_mb <= 0:
            raise UsageError(f"--max-memory must be a positive number of MB, got {self.max_memory_mb}")
        get_backend(self.backend)  # validates the name
        MomentConfig(self.window, self.stride)  # validates
        if not self.ocr_interval > 0:
            raise UsageError(f"--ocr-interval must be positive, got {self.ocr_interval}")
        check_image_runtime(self.image_runtime)
        for name in ("audio_window", "audio_hop"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")

    @property
    def moments(self) -> MomentConfig:
        """The moment windows this config asks for."""
        return MomentConfig(self.window, self.stride)


def config_record(config: IngestConfig) -> dict[str, Any]:
    """The recorded fields of ``config`` that are set, for the manifest's ``config``."""
    return {name: getattr(config, name) for name in RECORDED_FIELDS if getattr(config, name) is not None}


def config_from_record(record: dict[str, Any] | None, **options: Any) -> IngestConfig:
    """An :class:`IngestConfig` from a manifest's ``config`` (None or empty: the defaults), then ``options``
    that are not None on top (the other fields of :class:`IngestConfig`, or recorded ones to override)."""
    known = {f.name for f in fields(IngestConfig)}
    unknown = set(options) - known
    if unknown:
        raise UsageError(f"unknown ingest options {sorted(unknown)}; known: {sorted(known)}")
    base = {name: (record or {})[name] for name in RECORDED_FIELDS if name in (record or {})}
    return replace(IngestConfig(**base), **{k: v for k, v in options.items() if v is not None})


def check_recorded(record: dict[str, Any], config: IngestConfig, *, root: Any) -> None:
    """Raise :class:`UsageError` when ``config`` differs from what the index at ``root`` was built with."""
    for key in FIXED_FIELDS:
        mine = getattr(config, key)
        if key in record and mine is not None and float(record[key]) != float(mine):
            raise UsageError(
                f"the index at {root} was built with {key}={record[key]}, not {mine}; "
                f"use the same value or a new --index directory"
            )


def changed_run_fields(record: dict[str, Any], config: IngestConfig) -> dict[str, tuple[Any, Any]]:
    """``{field: (recorded, asked)}`` for the :data:`RUN_FIELDS` that ``config`` sets otherwise than
    the index's ``record`` (a run's choice, applied to the files it indexes; see the README)."""
    return {key: (record[key], getattr(config, key)) for key in RUN_FIELDS
            if key in record and record[key] != getattr(config, key)}


def encoder_options(family: str, config: IngestConfig) -> dict[str, Any]:
    """Keyword options of :func:`mmsearch.encoders.create_encoder` that ``config`` asks of an
    encoder of ``family`` for indexing: the CLIP image tower's runtime."""
    return {"image_runtime": config.image_runtime} if family == "clip" and config.image_runtime != "torch" else {}


def audio_window_config(encoder: Any, config: IngestConfig) -> tuple[float, float]:
    """Audio window and hop in seconds: the config's, else the encoder preset's, else 10 s / 5 s (CLAP's training clips)."""
    options = getattr(getattr(encoder, "spec", None), "options", {}) or {}
    window = config.audio_window or float(options.get("window_seconds", 10.0))
    hop = config.audio_hop or float(options.get("hop_seconds", window / 2))
    return window, hop
