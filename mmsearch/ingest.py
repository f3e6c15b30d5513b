"""The ingest runner: discover -> decode in worker processes -> encode -> commit.

Decoding runs in separate processes (built from a plain config, never a live
decoder), so a decoder that crashes, hangs or eats memory costs one file, not
the run. Frames stream back in chunks while the main process encodes the
previous ones, so decoding and encoding overlap. Work is committed in batches;
an interrupted run resumes from the last commit.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import numpy as np

from .config import IngestConfig, audio_window_config, changed_run_fields, check_recorded, config_from_record, config_record
from .decode_worker import AudioSpec, DecodeTask, DecodeWorker, usable_cores
from .derive import Deriver, frame_segments, upgrade_index
from .speech import DEFAULT_ASR_MODEL
from .errors import EncoderMismatchError, UsageError
from .media import discover, media_kind
from .probes import PROBED_SPACES, probe_captions
from .spaces import AUDIO, CAPTION, COMMON_AUDIO, COMMON_VISUAL, SOUND_TAGS, SPACES_BY_KIND, SPEECH, TEXT, TEXT_SPACES, VISUAL, anchor_of
from .sharding import ShardedDeriver, ShardedWriter, open_deriver, open_sharded_writer
from .store import IndexWriter, index_exists

__all__ = ["IngestConfig", "IngestReport", "Runner", "index_paths", "open_writer", "run_local"]

log = logging.getLogger("mmsearch.ingest")


@dataclass
class IngestReport:
    indexed: list[str] = field(default_factory=list)
    unchanged: int = 0
    moved: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # path, stage, reason
    skipped_failed: int = 0  # failed before, unchanged since, not retried
    frames: int = 0
    repeated_frames: int = 0  # sampled frames left out as repeats of the last embedded one (mmsearch.frameskip)
    audio_windows: int = 0
    sound_tags: int = 0  # (window, label) pairs the sound tagger gave
    no_audio: list[tuple[str, str]] = field(default_factory=list)  # videos without usable sound, and why
    damaged: list[tuple[str, str]] = field(default_factory=list)  # indexed for what decoded; what was lost
    partial: list[tuple[str, str, str]] = field(default_factory=list)  # indexed, but a stage of words failed: path, stage, reason
    notes: list[tuple[str, str]] = field(default_factory=list)  # indexed; something beside it was not (a bad subtitle file)
    text_segments: int = 0  # sentences, subtitles and lines on screen embedded
    not_media: dict[str, int] = field(default_factory=dict)  # files passed over, by extension
    timings: dict[str, float] = field(default_factory=lambda: {"hash": 0.0, "decode_wait": 0.0, "encode": 0.0, "commit": 0.0})
    generation: int = 0
    upgraded_from: int | None = None  # the format an index of an earlier mmsearch was converted from


ProgressFn = Callable[[str, dict[str, Any]], None]
# decodes and embeds the planned files into the derive stage: (plan, deriver, encoders by space,
# config, report, progress, projection heads or None); run_local, or mmsearch.distributed's on Ray
Runner = Callable[..., None]


def content_hash(path: str, *, chunk: int = 1 << 20) -> str:
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# -- the runner -------------------------------------------------------------------------------
@dataclass
class _Pending:
    """A file being decoded and encoded, and the spaces it still needs."""

    path: str
    kind: str
    size: int
    mtime: float
    content_hash: str
    media_id: int
    spaces: tuple[str, ...]
    done_spaces: tuple[str, ...] = ()  # already embedded in an earlier run (a space added later)
    row: dict[str, Any] | None = None  # the existing media row, when only new spaces are needed
    # space -> (starts, ends, vectors) chunks; a frame's end is known once the next frame is
    buffers: dict[str, tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]] = field(default_factory=dict)
    texts: dict[str, list[str]] = field(default_factory=dict)  # the words of a text space's segments
    tags: list[list[tuple[str, float]]] = field(default_factory=list)  # sound tags of the audio windows, in their order
    aliases: list[tuple[str, os.stat_result]] = field(default_factory=list)  # same content, other paths
    sidecars: str | None = None  # the subtitle files beside a video, as read (see _sidecar_signature)

    def add(
        self, space: str, starts: np.ndarray, ends: np.ndarray | None, vectors: np.ndarray, texts: list[str] | None = None,
        tags: list[list[tuple[str, float]]] | None = None,
    ) -> None:
        ss, es, vs = self.buffers.setdefault(space, ([], [], []))
        ss.append(np.asarray(starts, np.float64))
        es.append(np.asarray(ends if ends is not None else np.full(len(starts), np.nan), np.float64))
        vs.append(vectors)
        if texts is not None:
            self.texts.setdefault(space, []).extend(texts)
        if tags is not None:
            self.tags.extend(tags)


EncoderFactories = dict[str, Callable[[], Any]]
WORD_STAGES = ("speech", "subtitles", "ocr", "captions")  # stages whose failure costs a file its words only
STAGE_SPACE = {"speech": SPEECH, "subtitles": SPEECH, "ocr": TEXT, "captions": CAPTION}  # the space of words of each


class _Encoders(dict):
    """The encoders of a run by space. A text space's (the sentence encoder) is built when its first
    words arrive, so a library without speech or on-screen text never loads it."""

    def __init__(self, factories: EncoderFactories, writer: IndexWriter) -> None:
        super().__init__()
        self.factories = factories
        self.writer = writer

    def __missing__(self, space: str) -> Any:
        encoder = self.factories[space]()
        if space == SOUND_TAGS:  # not a space: the index records the tagger its tags come from
            record = _encoder_record(encoder)
            stored = self.writer.tagger
            if stored and stored["identity"] != record["identity"]:
                have = stored["identity"]
                raise EncoderMismatchError(
                    f"the sound tags of the index at {self.writer.root} come from {have.get('model')} ({have.get('pretrained')}, "
                    f"threshold {have.get('threshold')}), not {encoder.spec.model}: tags of different taggers cannot be mixed; "
                    "leave out --sound-tags (the index keeps its tagger) or use a new --index directory"
                )
            self.writer.set_tagger(record)
            self[space] = encoder
            return encoder
        _check_encoder(self.writer, space, encoder)
        self.writer.ensure_space(space, _encoder_record(encoder), encoder.dim, anchor=anchor_of(space))
        if space in PROBED_SPACES and not self.writer.spaces[space].get("query_probes"):
            # text vectors like users' queries, to tune this space's vector indexes on (mmsearch.probes),
            # made when the first vector index is built (exact search needs none)
            self.writer.set_query_probes(space, functools.partial(encoder.encode_text, probe_captions(space)))
        self[space] = encoder
        return encoder


def index_paths(
    paths: Iterable[str | os.PathLike],
    index_dir: str | os.PathLike,
    *,
    encoders: EncoderFactories,
    config: IngestConfig = IngestConfig(),
    progress: ProgressFn | None = None,
    verify_encoders: Iterable[str] = (),
    shards: int | None = None,
    runner: "Runner | None" = None,
) -> IngestReport:
    """Bring the index at ``index_dir`` up to date with the media under ``paths``.

    ``encoders`` maps each space to fill (``visual``, ``audio``) to a function
    that builds its encoder (called only when something needs embedding).
    New and changed files are embedded; moved or renamed files and identical
    copies are recognised by content hash and not embedded again; files that
    vanished from under ``paths`` are dropped. A space added to an existing
    index is filled for the files already there. ``verify_encoders`` names
    spaces whose encoder the user chose explicitly: it is checked against the
    index even when nothing needs embedding.

    ``shards``: a new index is split into this many shards by media id (see
    :mod:`mmsearch.sharding`); an existing one keeps its own (:class:`UsageError` when they
    differ). ``runner`` decodes and embeds the planned files (default :func:`run_local`, decoder
    processes on this machine; :func:`mmsearch.distributed.ray_runner` runs them on Ray).
    """
    notify = progress or (lambda event, data: None)
    roots = [Path(p).expanduser().absolute() for p in paths]
    if not roots:
        raise UsageError("give at least one file or folder to index")
    wanted = set(encoders)
    kinds = [k for k, spaces in SPACES_BY_KIND.items() if wanted & set(spaces)]
    skipped: Counter[str] = Counter()
    files = discover(roots, kinds=kinds, skipped=skipped, skip_dir=index_exists)  # an index among the media is not media
    if SPEECH in wanted:  # subtitle files are read with their videos, not passed over
        from .subtitles import SIDECAR_EXTENSIONS

        for extension in SIDECAR_EXTENSIONS:
            skipped.pop(extension, None)
    report = IngestReport(not_media=dict(sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))))
    new_dir = not Path(index_dir).exists()
    try:
        _index(files, roots, index_dir, encoders, config, report, notify, wanted, verify_encoders, shards, runner or run_local)
    except BaseException:
        if new_dir and not index_exists(index_dir):  # nothing committed: leave no empty index behind
            shutil.rmtree(index_dir, ignore_errors=True)
        raise
    return report


def _index(
    files: list[Path],
    roots: list[Path],
    index_dir: str | os.PathLike,
    encoders: EncoderFactories,
    config: IngestConfig,
    report: IngestReport,
    notify: ProgressFn,
    wanted: set[str],
    verify_encoders: Iterable[str],
    shards: int | None,
    runner: "Runner",
) -> None:
    with open_writer(index_dir, config, shards=shards) as writer, open_deriver(
        writer, moments=config.moments, recipe_for=_recipe_chooser(config, len(writer.shards) if isinstance(writer, ShardedWriter) else 1)
    ) as deriver:
        report.upgraded_from = writer.upgraded_from
        check_recorded(writer.config, config, root=writer.root)
        for key, (recorded, asked) in changed_run_fields(writer.config, config).items():
            note = (f"built with {key}={recorded}; this run indexes with {key}={asked} "
                    "(files already indexed keep theirs; recorded for later runs)")
            _note(report, str(writer.root), note)
            writer.record_config(key, asked)
        if config.backend != "pyav" and config.skip_loop_filter:
            _note(report, str(writer.root), f"--skip-loop-filter applies to PyAV only: with --backend {config.backend} this run decodes "
                  "with deblocking (the choice is recorded for later runs with --backend pyav)")
        plan = _plan(files, roots, writer, wanted, config, report)
        notify("plan", {"total": len(plan), "unchanged": report.unchanged})
        needed = {s for item in plan for s in item.spaces} | {s for s in verify_encoders if writer.space_encoder(s)}
        built = _Encoders(encoders, writer)
        for space in sorted(needed & wanted, key=lambda name: name != VISUAL):  # the visual encoder first
            if space not in TEXT_SPACES or space in verify_encoders:  # text spaces: when words arrive
                built[space]
        if SOUND_TAGS in wanted and not writer.tagger and report.unchanged:
            _note(report, str(writer.root), f"sound tags start with this run: the {report.unchanged} file(s) indexed before keep none "
                  "(index them into a new --index to tag them)")
        if SOUND_TAGS in wanted and (AUDIO in built or SOUND_TAGS in verify_encoders):
            built[SOUND_TAGS]  # tags label the audio windows embedded in this run; a tagger named is checked, and recorded, anyway
        if AUDIO in built:  # record the effective windows, so later runs and queries cut sound the same way
            window, hop = audio_window_config(built[AUDIO], config)
            writer.config.setdefault("audio_window", window)
            writer.config.setdefault("audio_hop", hop)
            config = replace(config, audio_window=float(writer.config["audio_window"]), audio_hop=float(writer.config["audio_hop"]))
        if config.captions and writer.config.get("captions") is None:  # captions asked of an index without: recorded, later runs keep them
            writer.record_config("captions", config.captions)
        if SPEECH in wanted:  # the index remembers which Whisper heard its words
            writer.config.setdefault("asr_model", config.asr_model or DEFAULT_ASR_MODEL)
        heads = _load_heads(writer)
        if plan:
            runner(plan, deriver, built, config, report, notify, heads)
        elif writer.manifest["generation"] == 0 and not files:
            raise UsageError(f"no media files found under {', '.join(map(str, roots))}")
        if VISUAL in built and set(writer.spaces) & set(TEXT_SPACES):
            writer.query_probes(VISUAL)  # made now if not yet: fused text queries weigh the pictures against them
        t0 = time.perf_counter()
        report.generation = deriver.commit(wait=True)  # the last commit of a run adopts index builds under way
        report.timings["commit"] += time.perf_counter() - t0


def open_writer(index_dir: str | os.PathLike, config: IngestConfig, *, shards: int | None = None) -> IndexWriter | ShardedWriter:
    """The index's writer; an index of an earlier format is converted first (its vectors kept, see
    :func:`mmsearch.derive.upgrade_index`). A sharded index (or a new one with ``shards`` > 1) gets
    a :class:`mmsearch.sharding.ShardedWriter`."""
    sharded = open_sharded_writer(index_dir, shards=shards, config=config_record(config))
    if sharded is not None:
        return sharded
    writer = IndexWriter(index_dir, config=config_record(config), upgrade=True)
    if writer.legacy:
        try:
            upgrade_index(
                writer,
                config_from_record(writer.config).moments,
                audio_window=writer.config.get("audio_window") or _legacy_audio_window(writer),
            )
        except BaseException:
            writer.close()
            raise
    return writer


def _legacy_audio_window(writer: IndexWriter) -> float | None:
    entry = writer.legacy.get(AUDIO)
    if not entry:
        return None
    options = entry["encoder"].get("spec", {}).get("options", {}) or {}
    return float(options.get("window_seconds", entry["encoder"].get("identity", {}).get("window_seconds") or 10.0))


def _plan(
    files: list[Path], roots: list[Path], writer: IndexWriter, wanted: set[str], config: IngestConfig, report: IngestReport
) -> list[_Pending]:
    """Decide per file: unchanged, moved, duplicate, new/changed (embed), or a space to add."""
    plan: list[_Pending] = []
    found = {str(f) for f in files}
    known_hashes = writer.hashes()
    by_path = dict(writer.paths)
    row_of_media: dict[int, dict[str, Any]] = {}  # a path row of each media id: moved files and copies start from it
    for row in by_path.values():
        row_of_media.setdefault(int(row["media_id"]), row)
    next_id = writer.next_media_id()
    planned_hashes: dict[tuple[str, str], _Pending] = {}  # (content hash, kind) -> the file that embeds it
    listings: dict[str, list[os.DirEntry]] = {}
    for f in files:
        path = str(f)
        kind = media_kind(path) or "video"
        spaces = tuple(s for s in SPACES_BY_KIND[kind] if s in wanted)
        try:
            st = os.stat(path)
        except OSError as exc:
            _fail(writer, report, path, None, "read", f"cannot stat ({exc.strerror})")
            continue
        old = by_path.get(path)
        sidecars = _sidecar_signature(path, listings) if kind == "video" and SPEECH in wanted else None
        subtitles_changed = sidecars is not None and old is not None and (old.get("sidecars") or "") != sidecars
        if old and not subtitles_changed and old["size"] == st.st_size and abs(old["mtime"] - st.st_mtime) < 1e-6:
            done = tuple(s for s in (old.get("spaces") or "").split(",") if s)
            missing = tuple(s for s in spaces if s not in done)
            failed = writer.failures.get(path)
            if missing and failed and failed["stage"] in WORD_STAGES and not config.retry_failed:
                report.skipped_failed += 1  # its words failed before; --retry-failed tries them again
            elif not missing:
                report.unchanged += 1
            else:  # a space this index did not fill before (e.g. audio added later)
                item = _Pending(path, kind, st.st_size, st.st_mtime, old["content_hash"], int(old["media_id"]), missing, done, old,
                                sidecars=sidecars)
                plan.append(item)
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
        if digest in known_hashes and not subtitles_changed:  # new subtitles: the video is indexed again
            media_id = known_hashes[digest]
            template = row_of_media[int(media_id)]
            writer.put_path({**template, "path": path, "size": st.st_size, "mtime": st.st_mtime})
            if old is not None and int(old["media_id"]) == int(media_id):  # touched: the same content, a new mtime
                report.unchanged += 1
            elif _vanished(template["path"]):
                report.moved.append((template["path"], path))
            else:
                report.duplicates.append(path)
            continue
        # same content twice in this run: embed once; but a copy named as another kind (a video named .jpg)
        # is decoded as that kind, so it fails on its own and the copy that decodes is indexed
        if (digest, kind) in planned_hashes:
            planned_hashes[digest, kind].aliases.append((path, st))
            report.duplicates.append(path)
            continue
        item = _Pending(path, kind, st.st_size, st.st_mtime, digest, next_id, spaces, sidecars=sidecars)
        next_id += 1
        planned_hashes[digest, kind] = item
        plan.append(item)
    moved_from = {old for old, _ in report.moved}
    for path in list(writer.paths):  # a file moved here from outside the folders indexed is gone from there too
        if path not in found and (_under(path, roots) or path in moved_from) and _vanished(path):
            writer.remove_path(path)
            if path not in moved_from:
                report.removed.append(path)
    for path in list(writer.failures):
        if path not in found and _under(path, roots):
            writer.drop_failure(path)
    return plan


def _task(item: _Pending, encoders: dict[str, Any], config: IngestConfig, threads: int = 0) -> DecodeTask:
    """What a decoder process is asked to do for ``item``; ``threads``: the video decoder's threads
    unless ``config.decoder_threads`` says (0: the decoder's choice)."""
    visual = encoders.get(VISUAL) if VISUAL in item.spaces else None
    audio = encoders.get(AUDIO) if AUDIO in item.spaces else None
    audio_spec = None
    if audio is not None:
        window, hop = audio_window_config(audio, config)
        audio_spec = AudioSpec(sample_rate=int(audio.sample_rate), window=window, hop=hop)
    device = getattr(next(iter(encoders.values()), None), "device", None)
    return DecodeTask(
        speech=(config.asr_model or DEFAULT_ASR_MODEL) if SPEECH in item.spaces else None,
        ocr_interval=config.ocr_interval if TEXT in item.spaces else None,
        captions=config.captions if CAPTION in item.spaces else None,
        caption_stride=config.stride,
        asr_device="cuda" if getattr(device, "type", None) == "cuda" else "cpu",
        path=item.path,
        kind=item.kind,
        fps=config.fps,
        short_side=visual.input_size if visual is not None else None,
        backend=config.backend,
        chunk_frames=config.chunk_frames,
        skip_similar=config.skip_similar,
        skip_nonref=config.skip_nonref,
        skip_loop_filter=config.skip_loop_filter,
        decoder_threads=threads if config.decoder_threads is None else config.decoder_threads,
        visual=visual is not None,
        audio=audio_spec,
    )


def default_workers(encoders: Any) -> int:
    """Decoder processes when none are asked for: two while encoding runs on the CPU (one on a single
    core), more beside a GPU.

    On a CPU the encoder and the decoders share the cores, and with one decoder process a run used
    1.4-1.8 of 2 cores (ViT-B-32, torch fp32 or the int8 tower); a second decoder raised end-to-end
    throughput by 6% and 19% (two runs) with torch fp32 and by 26% and 30% with the int8 tower
    (``benchmarks/ingest.py --workers 1,2``, README "Faster indexing on a CPU"). A GPU encodes ViT-B-32 frames ~200x faster than 16 CPU cores
    (benchmarks/encode.py), which leaves decoding the whole cost: one decoder per four cores
    (each decodes with four threads, :func:`decoder_threads`), at most 8.
    """
    on_gpu = any(getattr(getattr(e, "device", None), "type", "cpu") == "cuda" for e in encoders)
    if not on_gpu:
        return min(2, usable_cores())
    return max(1, min(8, usable_cores() // 4))


def decoder_threads(processes: int) -> int:
    """Video decoding threads of each of ``processes`` decoder processes: the usable cores shared
    out, at least one.

    FFmpeg's own choice is cores + 1 threads in every process: on a CPU that also encodes, the
    decoders' threads then compete with each other and with the encoder. Shared out, two decoder
    processes on 2 cores indexed 4-10% more video-seconds per second than with FFmpeg's threads
    with the torch image tower and 10-27% more with the int8 one (``benchmarks/ingest.py``, three
    runs; README, "Faster indexing on a CPU"), with the same pictures."""
    return max(1, usable_cores() // max(1, processes))


def _recipe_chooser(config: IngestConfig, shards: int = 1) -> Callable[[int, int], Any]:
    """Picks the moment index for its size at every commit, so it is re-chosen as the corpus grows.

    In an index of several ``shards`` each shard's index gets an equal part of the latency target
    and of the memory budget: one process searches the shards one after another, and holds them
    all (:class:`mmsearch.indexes.ShardedRowIndex`); so 4 shards of 25k rows get what 100k rows
    in one index would (not four exact searches that each meet the whole target)."""
    from mmsearch.indexes import _spare_memory, choose_recipe

    def choose(n: int, dim: int) -> Any:
        budget = (config.max_memory_mb << 20) if config.max_memory_mb is not None else (None if shards == 1 else _spare_memory())
        return choose_recipe(n, dim, max_memory_bytes=None if budget is None else budget // shards, latency_ms=config.latency_ms / shards)

    return choose


def _load_heads(writer: IndexWriter) -> Any:
    """The index's trained projection heads, when it has a common space (new media go there too)."""
    common = writer.manifest.get("common")
    if not common:
        return None
    from .common_space import ProjectionHeads

    return ProjectionHeads.load(writer.root / common["heads"])


def run_local(
    plan: list[_Pending],
    deriver: Deriver | ShardedDeriver,
    encoders: dict[str, Any],
    config: IngestConfig,
    report: IngestReport,
    notify: ProgressFn,
    heads: Any = None,
) -> None:
    writer = deriver.writer
    count = max(1, min(config.workers or default_workers(encoders.values()), len(plan)))  # no idle processes
    workers = [DecodeWorker(config.memory_limit_mb) for _ in range(count)]
    threads = decoder_threads(count)
    queue = list(reversed(plan))
    active: dict[int, _Pending] = {}
    last_commit = time.monotonic()
    try:
        while queue or active:
            for i, worker in enumerate(workers):
                if i not in active and queue:
                    item = queue.pop()
                    worker.start(_task(item, encoders, config, threads))
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
                        kind = message[0]
                        if kind == "alive":
                            continue
                        if kind in ("chunk", "audio", "text"):
                            _encode_chunk(item, message, encoders, report)
                            notify("frames", {"path": item.path, "n": len(message[2])})
                            continue
                        if kind == "done":
                            _finish(deriver, report, item, message[1], heads)
                        else:
                            _fail_item(writer, report, item, message[1], message[2])
                        del active[i]
                        notify("file", {"path": item.path})
                        continue
                if worker.conn in ready:  # readable but nothing to read: the process is gone
                    reason = worker.crashed()
                elif now - worker.last_seen > config.stall_timeout:
                    reason = worker.hung(config.stall_timeout)
                else:
                    continue
                workers[i] = DecodeWorker(config.memory_limit_mb)
                _fail_item(writer, report, item, "decode", reason)
                del active[i]
                notify("file", {"path": item.path})
            if writer.dirty and time.monotonic() - last_commit >= config.commit_seconds:
                # Commit between files only, so a generation never holds half a file.
                t1 = time.perf_counter()
                deriver.commit(wait=False)  # an index being trained is adopted by a later commit
                report.timings["commit"] += time.perf_counter() - t1
                last_commit = time.monotonic()
    except BaseException:  # interrupted (Ctrl-C) or failed: decoders stop now, mid-file (they ignore SIGINT)
        for worker in workers:
            worker.kill()
        raise
    finally:
        for worker in workers:
            worker.stop()


Embedded = tuple[str, np.ndarray, "np.ndarray | None", np.ndarray, "list[str] | None", "list[list[tuple[str, float]]] | None"]


def embed_message(message: tuple, encoders: dict[str, Any]) -> Embedded:
    """The segments a decoder message carries (``chunk``, ``audio`` or ``text``, see
    :func:`mmsearch.decode_worker.decode_into`), embedded: (space, starts in seconds, ends or None,
    ``(n, dim)`` float32 vectors, the texts of a space of words or None, the sound tags of audio
    windows when ``encoders`` holds a tagger (:data:`~mmsearch.spaces.SOUND_TAGS`) or None)."""
    if message[0] == "chunk":  # a frame's segment ends at the next frame's pts (set in _finish)
        _, frames, timestamps = message
        return VISUAL, timestamps, None, encoders[VISUAL].encode_images(frames), None, None
    if message[0] == "text":  # ("text", space, starts, ends, texts): sentences, subtitles, lines on screen
        _, space, starts, ends, texts = message
        return space, starts, ends, encoders[space].encode_text(texts), texts, None
    _, clips, starts, ends = message  # ("audio", clips, starts, ends): each window is the segment [start, end)
    encoder = encoders[AUDIO]
    tags = encoders[SOUND_TAGS].tag(clips, sample_rate=encoder.sample_rate) if SOUND_TAGS in encoders else None
    return AUDIO, starts, ends, encoder.encode_audio(clips), None, tags


def add_embedded(item: _Pending, embedded: Embedded, report: IngestReport) -> None:
    """Keep a file's embedded segments (:func:`embed_message`) until the file is done; count them."""
    space, starts, ends, vectors, texts, tags = embedded
    item.add(space, starts, ends, vectors, texts, tags)
    if space == VISUAL:
        report.frames += len(starts)
    elif space == AUDIO:
        report.audio_windows += len(starts)
        report.sound_tags += sum(len(t) for t in tags or ())
    else:
        report.text_segments += len(starts)


def _encode_chunk(item: _Pending, message: tuple, encoders: dict[str, Any], report: IngestReport) -> None:
    t0 = time.perf_counter()
    add_embedded(item, embed_message(message, encoders), report)
    report.timings["encode"] += time.perf_counter() - t0


def _finish(deriver: Deriver | ShardedDeriver, report: IngestReport, item: _Pending, info: dict[str, Any], heads: Any = None) -> None:
    writer = deriver.writer
    duration = float((item.row or info).get("duration") or 0.0)
    # Pictures end where the video stream ends, not with a longer soundtrack.
    video_end = float(info.get("video_end") or 0.0) or duration
    stage_failures = list(info.get("stage_failures") or ())
    # a space of words whose stage failed is left undone (its other words too), so the next run tries it again
    failed = {STAGE_SPACE[stage] for stage, _ in stage_failures}
    notes = list(info.get("notes") or ())
    for space, (ss, es, vs) in item.buffers.items():
        if space in failed:
            continue
        starts, ends, vectors = np.concatenate(ss), np.concatenate(es), np.concatenate(vs)
        if space == AUDIO and item.tags:
            writer.add_tags(item.media_id, starts, ends, item.tags)
        if space in TEXT_SPACES and duration > 0:  # a cue past the end of the media (a sidecar's mistake) is left out
            keep = starts < duration
            if not keep.all():
                notes.append(f"{int((~keep).sum())} {space} segment(s) after the end of the media ({duration:.1f} s) left out")
                item.texts[space] = [t for t, k in zip(item.texts[space], keep) if k]
                starts, ends, vectors = starts[keep], ends[keep], vectors[keep]
            ends = np.minimum(ends, duration)
            if not len(starts):
                continue
        if space == VISUAL:
            order = np.argsort(starts, kind="stable")
            starts, vectors = starts[order], vectors[order]
            starts, ends = frame_segments(starts, duration=video_end)
        texts = item.texts.get(space) if space in TEXT_SPACES else None
        deriver.add_segments(space, item.media_id, starts, ends, vectors, duration=duration, texts=texts)
        if heads is not None and space in (VISUAL, AUDIO):
            common, project = (COMMON_VISUAL, heads.project_visual) if space == VISUAL else (COMMON_AUDIO, heads.project_audio)
            deriver.add_segments(common, item.media_id, starts, ends, project(vectors), duration=duration)
    report.repeated_frames += int(info.get("skipped_frames") or 0)
    audio_note = info.get("audio_note")
    if audio_note:
        report.no_audio.append((item.path, audio_note))
    damage = _damage(info)
    base = item.row or {
        "media_id": item.media_id,
        "path": item.path,
        "size": item.size,
        "mtime": item.mtime,
        "content_hash": item.content_hash,
        "kind": info.get("kind") or item.kind,
        "duration": float(info.get("duration") or 0.0),
        "width": int(info.get("width") or 0),
        "height": int(info.get("height") or 0),
    }
    row = {**base, "spaces": ",".join(sorted(set(item.done_spaces) | (set(item.spaces) - failed)))}
    if item.sidecars is not None:
        row["sidecars"] = item.sidecars
    if damage or item.row is None:
        row["damage"] = damage
    if SPEECH in item.spaces:
        row["language"] = info.get("language")
    writer.put_path(row)
    for alias, st in item.aliases:
        writer.put_path({**row, "path": alias, "size": st.st_size, "mtime": st.st_mtime})
    report.indexed.append(item.path)
    if damage:
        report.damaged.append((item.path, damage))
    for note in notes:
        _note(report, item.path, note)
    for stage, reason in stage_failures:  # recorded after the path, which clears old failures
        for path, st in [(item.path, item), *item.aliases]:
            writer.put_failure(_failure_row(path, st, stage, reason))
        report.partial.append((item.path, stage, reason))
        log.warning("%s: %s failed (indexed without it): %s", item.path, stage, reason)


def _note(report: IngestReport, path: str, note: str) -> None:
    """Something beside indexing a path that its user should read: kept in the report (the CLI prints
    it) and logged."""
    report.notes.append((path, note))
    log.warning("%s: %s", path, note)


def _damage(info: dict[str, Any]) -> str | None:
    """What a damaged file lost, in words (None when it decoded whole)."""
    parts = []
    for prefix, what, end in (("", "pictures", "video_end"), ("audio_", "sound", "audio_end")):
        errors = int(info.get(f"{prefix}damaged_packets") or 0)
        if not errors:
            continue
        lost = float(info.get(f"{prefix}lost_seconds") or 0.0)
        if lost >= 0.05:
            parts.append(f"{what}: {errors} decoding error(s), about {lost:.1f} s lost")
        else:  # a cut file that does not say where it should end (a WebM written live): what decoded is what is known
            until = f", decoded up to {float(info[end]):.1f} s" if info.get(end) else ""
            parts.append(f"{what}: {errors} decoding error(s){until} (how much is lost is unknown)")
    return "; ".join(parts) or None


def _fail(writer: IndexWriter, report: IngestReport, path: str, st: Any, stage: str, reason: str) -> None:
    """Record a file that could not be indexed; ``st`` (a stat result or a pending item) gives size and mtime."""
    writer.put_failure(_failure_row(path, st, stage, reason))
    report.failed.append((path, stage, reason))
    log.warning("%s: %s failed: %s", path, stage, reason)


def _fail_item(writer: IndexWriter, report: IngestReport, item: _Pending, stage: str, reason: str) -> None:
    """Record a planned file that could not be indexed, and its copies in this run (same content, same
    kind: they would fail the same way), so each is listed and tried again once changed."""
    for path, st in [(item.path, item), *item.aliases]:
        _fail(writer, report, path, st, stage, reason)
        if path in report.duplicates:  # counted once, as failed
            report.duplicates.remove(path)


def _sidecar_signature(path: str, listings: dict[str, list[os.DirEntry]]) -> str:
    """The subtitle files beside a video (see :func:`mmsearch.subtitles.sidecar_files`) as
    ``name:size:mtime;...``, "" without any; each folder is listed once per run."""
    from .subtitles import sidecar_names

    folder = os.path.dirname(path)
    if folder not in listings:
        try:
            listings[folder] = [e for e in os.scandir(folder) if e.is_file()]
        except OSError:
            listings[folder] = []
    entries = {e.name: e for e in listings[folder]}
    parts = []
    for name in sidecar_names(os.path.basename(path), list(entries)):
        try:
            st = entries[name].stat()
        except OSError:
            continue
        parts.append(f"{name}:{st.st_size}:{st.st_mtime:.6f}")
    return ";".join(parts)


def _failure_row(path: str, st: Any, stage: str, reason: str) -> dict[str, Any]:
    size = int(getattr(st, "st_size", getattr(st, "size", 0)) or 0)
    mtime = float(getattr(st, "st_mtime", getattr(st, "mtime", 0.0)) or 0.0)
    return {"path": path, "size": size, "mtime": mtime, "stage": stage, "reason": reason, "time": time.time()}


def _under(path: str, roots: list[Path]) -> bool:
    return any(path == str(r) or path.startswith(str(r).rstrip(os.sep) + os.sep) for r in roots)


def _vanished(path: str) -> bool:
    return not os.path.lexists(path)


def _encoder_record(encoder: Any) -> dict[str, Any]:
    spec = encoder.spec
    return {
        "spec": {"family": spec.family, "model": spec.model, "pretrained": spec.pretrained, "options": dict(spec.options)},
        "identity": encoder.identity(),
    }


def _check_encoder(writer: IndexWriter, space: str, encoder: Any) -> None:
    stored = writer.space_encoder(space)
    if stored and stored["identity"] != encoder.identity():
        raise EncoderMismatchError(describe_mismatch(writer.root, stored, encoder.identity(), space=space))


def describe_mismatch(root: Any, stored: dict[str, Any], identity: dict[str, Any], *, space: str = VISUAL) -> str:
    have = stored["identity"]
    flag = "--audio-model" if space == AUDIO else "--model/--pretrained"
    return (
        f"the {space} space of the index at {root} was built with encoder {have.get('model')} ({have.get('pretrained')}), "
        f"not {identity.get('model')} ({identity.get('pretrained')}). Vectors of different encoders cannot be "
        f"mixed: use the same {flag}, or a new --index directory."
    )
