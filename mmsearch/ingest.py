"""The ingest runner: discover -> decode in worker processes -> encode -> commit.

Decoding runs in separate processes (built from a plain config, never a live
decoder), so a decoder that crashes, hangs or eats memory costs one file, not
the run. Frames stream back in chunks while the main process encodes the
previous ones, so decoding and encoding overlap. Work is committed in batches;
an interrupted run resumes from the last commit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DecodeError, EncoderMismatchError, MediaError, UsageError
from .decode_worker import DecodeTask, DecodeWorker
from .media import DEFAULT_BACKEND, discover, get_backend, media_kind
from .moments import MomentConfig
from .store import IndexWriter

log = logging.getLogger("mmsearch.ingest")

VISUAL = "visual"


@dataclass(frozen=True)
class IngestConfig:
    """How files become vectors. Recorded in the manifest; a later run reuses it."""

    fps: float = 1.0
    backend: str = DEFAULT_BACKEND
    window: float = 4.0
    stride: float = 2.0
    chunk_frames: int = 32
    workers: int = 1
    stall_timeout: float = 120.0  # seconds without progress from a decoder before it is killed
    memory_limit_mb: int = 8192  # address-space ceiling of a decoder process
    commit_seconds: float = 30.0  # commit at least this often
    retry_failed: bool = False

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise UsageError(f"--fps must be positive, got {self.fps}")
        get_backend(self.backend)  # validates the name
        MomentConfig(self.window, self.stride)


@dataclass
class IngestReport:
    indexed: list[str] = field(default_factory=list)
    unchanged: int = 0
    moved: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # path, stage, reason
    skipped_failed: int = 0  # failed before, unchanged since, not retried
    warnings: list[tuple[str, str]] = field(default_factory=list)
    frames: int = 0
    timings: dict[str, float] = field(default_factory=lambda: {"hash": 0.0, "decode_wait": 0.0, "encode": 0.0, "commit": 0.0})
    generation: int = 0


ProgressFn = Callable[[str, dict[str, Any]], None]


def content_hash(path: str, *, chunk: int = 1 << 20) -> str:
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# -- the runner -------------------------------------------------------------------------------
@dataclass
class _Pending:
    """A file being decoded and encoded."""

    path: str
    kind: str
    size: int
    mtime: float
    content_hash: str
    media_id: int
    timestamps: list[np.ndarray] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    aliases: list[tuple[str, os.stat_result]] = field(default_factory=list)  # same content, other paths


def index_paths(
    paths: Iterable[str | os.PathLike],
    index_dir: str | os.PathLike,
    *,
    encoder: Any = None,
    encoder_factory: Callable[[], Any] | None = None,
    config: IngestConfig = IngestConfig(),
    progress: ProgressFn | None = None,
    verify_encoder: bool = False,
) -> IngestReport:
    """Bring the index at ``index_dir`` up to date with the media under ``paths``.

    New and changed files are embedded; moved or renamed files and identical
    copies are recognised by content hash and not embedded again; files that
    vanished from under ``paths`` are dropped. ``verify_encoder`` checks the
    encoder against the index even when nothing needs embedding (the user named one).
    """
    notify = progress or (lambda event, data: None)
    roots = [Path(p).expanduser().absolute() for p in paths]
    if not roots:
        raise UsageError("give at least one file or folder to index")
    files = discover(roots)
    report = IngestReport()
    with IndexWriter(index_dir, config=_config_dict(config)) as writer:
        _check_config(writer, config)
        # -- plan: what is new, changed, moved, duplicated, gone -----------------------------
        plan: list[_Pending] = []
        found = {str(f) for f in files}
        known_hashes = writer.hashes()
        by_path = dict(writer.paths)
        next_id = writer.next_media_id()
        planned_hashes: dict[str, _Pending] = {}
        for f in files:
            path = str(f)
            try:
                st = os.stat(path)
            except OSError as exc:
                _fail(writer, report, path, None, "read", f"cannot stat ({exc.strerror})")
                continue
            old = by_path.get(path)
            if old and old["size"] == st.st_size and abs(old["mtime"] - st.st_mtime) < 1e-6:
                report.unchanged += 1
                continue
            failed = writer.failures.get(path)
            if failed and not config.retry_failed and failed["size"] == st.st_size and abs(failed["mtime"] - st.st_mtime) < 1e-6:
                report.skipped_failed += 1
                continue
            if st.st_size == 0:
                _fail(writer, report, path, st, "read", "empty file (0 bytes)")
                continue
            t0 = time.perf_counter()
            try:
                digest = content_hash(path)
            except OSError as exc:
                _fail(writer, report, path, st, "read", f"cannot read ({exc.strerror or exc})")
                continue
            report.timings["hash"] += time.perf_counter() - t0
            kind = media_kind(path) or "video"
            if digest in known_hashes:
                media_id = known_hashes[digest]
                template = next(r for r in writer.paths.values() if r["media_id"] == media_id)
                writer.put_path({**template, "path": path, "size": st.st_size, "mtime": st.st_mtime})
                if _vanished(template["path"]):
                    report.moved.append((template["path"], path))
                else:
                    report.duplicates.append(path)
                continue
            if digest in planned_hashes:  # same content twice in this run: embed once
                planned_hashes[digest].aliases.append((path, st))
                report.duplicates.append(path)
                continue
            item = _Pending(path, kind, st.st_size, st.st_mtime, digest, next_id)
            next_id += 1
            planned_hashes[digest] = item
            plan.append(item)
        for path in list(writer.paths):
            if path not in found and _under(path, roots) and _vanished(path):
                writer.remove_path(path)
                if not any(path == old for old, _ in report.moved):
                    report.removed.append(path)
        for path in list(writer.failures):
            if path not in found and _under(path, roots):
                writer.drop_failure(path)
        notify("plan", {"total": len(plan), "unchanged": report.unchanged})

        if plan or (verify_encoder and writer.space_encoder(VISUAL)):
            enc = encoder if encoder is not None else encoder_factory()
            _check_encoder(writer, enc)
        if plan:
            writer.ensure_space(VISUAL, _encoder_record(enc), enc.dim)
            _run(plan, writer, enc, config, report, notify)
        elif writer.manifest["generation"] == 0 and not files:
            raise UsageError(f"no media files found under {', '.join(map(str, roots))}")
        t0 = time.perf_counter()
        report.generation = writer.commit(moment_config=MomentConfig(config.window, config.stride))
        report.timings["commit"] += time.perf_counter() - t0
    return report


def _run(
    plan: list[_Pending], writer: IndexWriter, encoder: Any, config: IngestConfig, report: IngestReport, notify: ProgressFn
) -> None:
    workers = [DecodeWorker(config.memory_limit_mb) for _ in range(max(1, config.workers))]
    queue = list(reversed(plan))
    active: dict[int, _Pending] = {}
    last_commit = time.monotonic()
    moment_config = MomentConfig(config.window, config.stride)
    try:
        while queue or active:
            for i, worker in enumerate(workers):
                if i not in active and queue:
                    item = queue.pop()
                    worker.start(
                        DecodeTask(item.path, item.kind, config.fps, encoder.input_size, config.backend, config.chunk_frames)
                    )
                    active[i] = item
                    notify("start", {"path": item.path})
            t0 = time.perf_counter()
            ready = wait([workers[i].conn for i in active], timeout=1.0)
            report.timings["decode_wait"] += time.perf_counter() - t0
            now = time.monotonic()
            for i in list(active):
                worker, item = workers[i], active[i]
                if worker.conn in ready:
                    worker.last_seen = now
                    try:
                        message = worker.conn.recv()
                    except (EOFError, OSError):
                        message = None
                    if message is not None:
                        if message[0] == "chunk":
                            t1 = time.perf_counter()
                            _, frames, timestamps = message
                            item.vectors.append(encoder.encode_images(frames))
                            item.timestamps.append(timestamps)
                            report.timings["encode"] += time.perf_counter() - t1
                            report.frames += len(timestamps)
                            notify("frames", {"path": item.path, "n": len(timestamps)})
                            continue
                        if message[0] == "done":
                            _finish(writer, report, item, message[1])
                        else:
                            _fail(writer, report, item.path, item, message[1], message[2])
                        del active[i]
                        notify("file", {"path": item.path})
                        continue
                if worker.conn in ready:  # readable but nothing to read: the process is gone
                    worker.kill()  # reaps it, so its exit status is known
                    reason = f"decoder process crashed ({worker.describe_exit()})"
                elif now - worker.last_seen > config.stall_timeout:
                    worker.kill()
                    reason = f"decoder made no progress for {config.stall_timeout:.0f} s (hung); killed"
                else:
                    continue
                workers[i] = DecodeWorker(config.memory_limit_mb)
                _fail(writer, report, item.path, item, "decode", reason)
                del active[i]
                notify("file", {"path": item.path})
            if writer.dirty and time.monotonic() - last_commit >= config.commit_seconds:
                # Commit between files only, so a generation never holds half a file.
                t1 = time.perf_counter()
                writer.commit(moment_config=moment_config)
                report.timings["commit"] += time.perf_counter() - t1
                last_commit = time.monotonic()
    finally:
        for worker in workers:
            worker.stop()


def _finish(writer: IndexWriter, report: IngestReport, item: _Pending, info: dict[str, Any]) -> None:
    timestamps = np.concatenate(item.timestamps)
    vectors = np.concatenate(item.vectors)
    writer.add_frames(VISUAL, item.media_id, timestamps, vectors)
    row = {
        "media_id": item.media_id,
        "path": item.path,
        "size": item.size,
        "mtime": item.mtime,
        "content_hash": item.content_hash,
        "kind": item.kind,
        "duration": float(info.get("duration") or 0.0),
        "width": int(info.get("width") or 0),
        "height": int(info.get("height") or 0),
    }
    writer.put_path(row)
    for alias, st in item.aliases:
        writer.put_path({**row, "path": alias, "size": st.st_size, "mtime": st.st_mtime})
    report.indexed.append(item.path)
    if info.get("warning"):
        report.warnings.append((item.path, info["warning"]))


def _fail(writer: IndexWriter, report: IngestReport, path: str, st: Any, stage: str, reason: str) -> None:
    """Record a file that could not be indexed; ``st`` (a stat result or a pending item) gives size and mtime."""
    size = int(getattr(st, "st_size", getattr(st, "size", 0)) or 0)
    mtime = float(getattr(st, "st_mtime", getattr(st, "mtime", 0.0)) or 0.0)
    writer.put_failure({"path": path, "size": size, "mtime": mtime, "stage": stage, "reason": reason, "time": time.time()})
    report.failed.append((path, stage, reason))
    log.warning("%s: %s failed: %s", path, stage, reason)


def _under(path: str, roots: list[Path]) -> bool:
    return any(path == str(r) or path.startswith(str(r).rstrip(os.sep) + os.sep) for r in roots)


def _vanished(path: str) -> bool:
    return not os.path.lexists(path)


def _config_dict(config: IngestConfig) -> dict[str, Any]:
    return {"fps": config.fps, "backend": config.backend, "window": config.window, "stride": config.stride}


def _check_config(writer: IndexWriter, config: IngestConfig) -> None:
    stored = writer.config
    for key in ("fps", "window", "stride"):
        if key in stored and float(stored[key]) != float(getattr(config, key)):
            raise UsageError(
                f"the index at {writer.root} was built with {key}={stored[key]}, not {getattr(config, key)}; "
                f"use the same value or a new --index directory"
            )


def _encoder_record(encoder: Any) -> dict[str, Any]:
    spec = encoder.spec
    return {
        "spec": {"family": spec.family, "model": spec.model, "pretrained": spec.pretrained, "options": dict(spec.options)},
        "identity": encoder.identity(),
    }


def _check_encoder(writer: IndexWriter, encoder: Any) -> None:
    stored = writer.space_encoder(VISUAL)
    if stored and stored["identity"] != encoder.identity():
        raise EncoderMismatchError(describe_mismatch(writer.root, stored, encoder.identity()))


def describe_mismatch(root: Any, stored: dict[str, Any], identity: dict[str, Any]) -> str:
    have = stored["identity"]
    return (
        f"the index at {root} was built with encoder {have.get('model')} ({have.get('pretrained')}), "
        f"not {identity.get('model')} ({identity.get('pretrained')}). Vectors of different encoders cannot be "
        "mixed: use the same --model/--pretrained, or a new --index directory."
    )
