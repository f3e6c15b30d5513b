"""The Python API: one facade over ingest, store and retrieval.

>>> import mmsearch
>>> mmsearch.index_paths(["./videos"], "./my-index", model="synth-clip")   # doctest: +SKIP
>>> idx = mmsearch.open_index("./my-index")                                # doctest: +SKIP
>>> for hit in idx.search(text="a red circle", k=5):                       # doctest: +SKIP
...     print(hit.path, hit.start, hit.end, hit.score)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from .common_space import HeadConfig, TrainSpaceReport, train_space  # noqa: F401 - part of the facade
from .config import IngestConfig, audio_window_config, config_from_record, encoder_options
from .encoders import EncoderSpec, create_encoder, resolve_spec
from .encoders.frozen import FrozenTextTower
from .errors import EncoderMismatchError, MediaError, MMSearchError, QueryInputError, UsageError
from .filters import MediaFilter, allowed_media, check_query
from .fileio import default_index_dir, display_path, index_dir  # noqa: F401 - part of the facade
from .ingest import IngestReport, content_hash, describe_mismatch, open_writer
from .ingest import index_paths as _ingest
from .media import load_image, media_kind
from .retrieval import SCORE_DECIMALS, Hit, LocalizeConfig, cohort_z, combined_score, fuse_moments, search_space
from .spaces import AUDIO, CAPTION, DEFAULT_AUDIO_WEIGHT, SOUND_TAGS, SPEECH, TEXT, TEXT_SPACES, VISUAL, Modality
from .sharding import open_deriver
from .store import Snapshot, index_exists, open_snapshot, read_manifest, table_to_rows, verify_files

_T = TypeVar("_T")


@dataclass(frozen=True)
class SearchResult:
    """One moment: a file and the seconds [start, end) in it (from the start of the media as a player shows it).

    ``score`` ranks results: the moment's own similarity (``moment_score``) and its media item's
    (``video_score``) combined, see :mod:`mmsearch.retrieval`. ``path`` is the real file name.
    """

    path: str
    start: float
    end: float
    score: float
    video_score: float | None
    modality: Modality
    moment_score: float | None = None
    text: str | None = None  # the words said or written in the moment, when that is what matched
    media_id: int | None = None  # the media item's id in this index (identical copies share one)
    tags: list[dict[str, Any]] | None = None  # sound: the tags of its windows, [{"label", "score"}], most probable first
    caption: str | None = None  # pictures: what the captioner said is seen in the moment (an index with captions)
    match_score: float | None = None  # --rerank: the image-text matcher's probability that the query shows in the moment

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``path`` is always valid Unicode (bytes that are not UTF-8 shown as ``\\xNN``);
        such a name also gets ``path_bytes``, the exact file name in base64."""
        return {**asdict(self), **path_fields(self.path)}


def path_fields(path: str) -> dict[str, str]:
    """``{"path": ...}`` as valid Unicode (bytes that are not UTF-8 shown as ``\\xNN``), plus
    ``"path_bytes"`` (the exact name, base64) when the name is not UTF-8."""
    shown = display_path(path)
    if shown == path:
        return {"path": path}
    return {"path": shown, "path_bytes": base64.b64encode(os.fsencode(path)).decode("ascii")}


def index_paths(
    paths: list[str | os.PathLike] | str | os.PathLike,
    index: str | os.PathLike | None = None,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    audio: bool = True,
    audio_model: str | None = None,
    sound_tags: str | None = None,
    speech: bool = True,
    ocr: bool = True,
    captions: str | None = None,
    asr_model: str | None = None,
    text_model: str | None = None,
    device: str = "auto",
    config: IngestConfig | None = None,
    progress: Any = None,
    freeze_text: bool = True,
    shards: int | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> IngestReport:
    """Index (or bring up to date) the media under ``paths``; see :func:`mmsearch.ingest.index_paths`.

    Without ``model``, an existing index keeps the encoder it was built with;
    a new index gets ``ViT-B-32`` / ``laion2b_s34b_b79k``. Sound (audio files
    and the soundtracks of videos) goes to a separate audio space unless
    ``audio=False``: ``audio_model`` is a CLAP checkpoint id or directory, or
    ``general`` / ``music``; the default is ``laion/larger_clap_general`` for a new
    index (``synth-clap`` when the visual model is ``synth-clip``), the index's
    own model for an existing one.

    ``sound_tags``: tag each window of sound with an Audio Spectrogram Transformer
    (:mod:`mmsearch.encoders.ast`): ``audioset`` (``MIT/ast-finetuned-audioset-10-10-0.4593``), a hub
    id or directory of an ``ASTForAudioClassification``, or the tiny ``synth-ast``. Without it, an
    index that has tags keeps tagging with its own tagger. Files indexed before tags were asked for
    keep none (a note says so). Raises :class:`UsageError` with ``audio=False``.

    What is said (``speech``: Whisper through faster-whisper, model ``asr_model``, default ``base``;
    and subtitles) and what is written on screen (``ocr``: RapidOCR) become spaces of words, embedded
    with ``text_model`` (a sentence-transformers name or directory, default all-MiniLM-L6-v2).

    ``captions``: caption each moment window of videos (its middle frame) and each image with a CoCa
    (:mod:`mmsearch.encoders.coca`): ``coca`` (``coca_ViT-B-32``, ``mscoco_finetuned_laion2b_s13b_b90k``),
    an open_clip CoCa name, ``NAME:PRETRAINED`` (a tag or a checkpoint file) or the tiny ``synth-coca``;
    or with a BLIP captioner (:class:`mmsearch.encoders.blip.BlipCaptioner`): ``blip``
    (``Salesforce/blip-image-captioning-base``), a hub id or ``save_pretrained`` directory, or the tiny
    ``synth-blip``. The captions become the ``caption`` space of words. Recorded in the index: later
    runs keep captioning with it (a file indexed before is captioned then). Raises :class:`UsageError`
    for a name that is no captioner or a checkpoint or directory that is not there.

    ``freeze_text``: afterwards, freeze the text towers queries use (:func:`freeze_text_towers`), so a
    query in a fresh process answers in a fraction of the time.

    ``shards``: split a new index into this many shards by media id (:mod:`mmsearch.sharding`;
    searches fan out over them and merge). ``executor``: ``local`` (decoder processes here) or
    ``ray`` (a Ray Data pipeline on the cluster at ``ray_address``, see :mod:`mmsearch.distributed`;
    None starts a local Ray, ``auto`` joins a running cluster; needs ``pip install "mmsearch[ray]"``).
    Raises :class:`UsageError` for an unknown executor.
    """
    if executor not in EXECUTORS:
        raise UsageError(f"unknown --executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if ray_address is not None and executor != "ray":
        raise UsageError("--ray-address is for --executor ray: add --executor ray, or leave out --ray-address")
    for option, given, stage, on in (("--audio-model", audio_model, "--no-audio", audio), ("--sound-tags", sound_tags, "--no-audio", audio),
                                      ("--asr-model", asr_model, "--no-speech", speech),
                                      ("--text-model", text_model, "--no-speech and --no-ocr", speech or ocr)):
        if given is not None and not on:  # an option for a stage turned off is a mistake in one of the two: say so
            raise UsageError(f"{option} is for a stage that {stage} turns off: leave out one of the two")
    if executor == "ray":  # before any file is read: Ray installed, the cluster reachable
        from .distributed import check_ray

        check_ray(ray_address)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    root = index_dir(index)
    visual = _stored_spec(root, VISUAL) if model is None and pretrained is None else None
    visual = visual or resolve_spec(model, pretrained, family="clip")
    specs = {VISUAL: visual}
    # the image tower's runtime comes from the config, resolved below (the factory runs later)
    encoders = {VISUAL: lambda: create_encoder(visual, device=device, **encoder_options(visual.family, config))}
    if audio:
        audio_spec = _stored_spec(root, AUDIO) if audio_model is None else None
        if audio_spec is None:
            default_audio = "synth-clap" if visual.model == "synth-clip" else None
            audio_spec = resolve_spec(audio_model or default_audio, None, family="clap")
        encoders[AUDIO] = lambda: create_encoder(audio_spec, device=device)
        specs[AUDIO] = audio_spec
        tag_spec = resolve_spec(sound_tags, None, family="ast") if sound_tags else _stored_tagger(root)
        if tag_spec is not None:
            encoders[SOUND_TAGS] = lambda: create_encoder(tag_spec, device=device)
            specs[SOUND_TAGS] = tag_spec
    elif sound_tags:
        raise UsageError("--sound-tags tags the sound that is indexed: leave out --no-audio")
    if config is None:
        config = ingest_config(root, asr_model=asr_model)
    elif asr_model is not None:
        config = replace(config, asr_model=asr_model)
    if captions is not None:
        from .captions import check_captioner

        config = replace(config, captions=check_captioner(captions, load=True))  # named here: its weights load, or one line says why
    elif config.captions is None and index_exists(root):  # a config given without captions: the index keeps its captioner
        config = replace(config, captions=ingest_config(root).captions)
    if speech or ocr or config.captions:
        stored = (_stored_spec(root, s) for s in TEXT_SPACES)
        text_spec = next((spec for spec in stored if spec is not None), None) if text_model is None else None
        text_spec = text_spec or resolve_spec(text_model, None, family="sentence")
        shared: list[Any] = []  # one sentence encoder for every space of words

        def sentence_encoder() -> Any:
            if not shared:
                shared.append(create_encoder(text_spec, device=device))
            return shared[0]

        for space, wanted in ((SPEECH, speech), (TEXT, ocr), (CAPTION, bool(config.captions))):
            if wanted:
                encoders[space] = sentence_encoder
                specs[space] = text_spec
    explicit = [VISUAL] if (model is not None or pretrained is not None) else []
    if audio_model is not None:
        explicit.append(AUDIO)
    if sound_tags:
        explicit.append(SOUND_TAGS)
    if text_model is not None:
        explicit += [s for s in TEXT_SPACES if s in encoders]
    built: dict[str, Any] = {}

    def keep(space: str, factory: Any) -> Any:
        def build() -> Any:
            built[space] = factory()
            return built[space]

        return build

    runner = None
    if executor == "ray":
        from .distributed import ray_runner

        runner = ray_runner(specs, device=device, address=ray_address)
    report = _ingest(
        paths, root, encoders={s: keep(s, f) for s, f in encoders.items()}, config=config, progress=progress,
        verify_encoders=explicit, shards=shards, runner=runner,
    )
    if freeze_text and index_exists(root):
        freeze_text_towers(root, encoders=built)
    return report


def remove_paths(paths: list[str | os.PathLike], index: str | os.PathLike | None = None) -> list[str]:
    """Drop files (or everything under folders) from the index; returns the paths removed.

    Their vectors become tombstones that searches skip (see :mod:`mmsearch.derive`).
    """
    root = index_dir(index)
    read_manifest(root)  # a clear error when there is no index
    removed: list[str] = []
    config = ingest_config(root)
    with open_writer(root, config) as writer, open_deriver(writer, moments=config.moments) as deriver:
        targets = [os.path.abspath(os.fspath(p)) for p in paths]
        for path in list(writer.paths):
            if any(path == t or path.startswith(t.rstrip(os.sep) + os.sep) for t in targets):
                writer.remove_path(path)
                removed.append(path)
        if removed:
            deriver.commit()
    return removed


def upgrade_index(index: str | os.PathLike | None = None) -> int:
    """Convert an index written by an earlier mmsearch to this one's format, in place; returns its generation.

    Every stored embedding is kept (nothing is decoded or encoded again); moments and vector
    indexes are derived anew. An index already in the current format is left as it is.
    """
    root = index_dir(index)
    read_manifest(root)  # a clear error when there is no index
    with open_writer(root, ingest_config(root)) as writer:
        return int(writer.manifest["generation"])


def index_format(index: str | os.PathLike | None = None) -> int:
    """The format version of the index's files (:data:`mmsearch.store.FORMAT_VERSION` is this mmsearch's)."""
    root = index_dir(index)
    return int(read_manifest(root).get("format_version", 0))


def verify_index(index: str | os.PathLike | None = None) -> None:
    """Check every file of the current generation against its size and CRC32 in the manifest.

    Raises :class:`IndexCorruptError` naming the first file that differs, :class:`IndexNotFoundError`.
    """
    root = index_dir(index)
    verify_files(root, read_manifest(root), full=True)


def ingest_config(index: str | os.PathLike | None = None, **options: Any) -> IngestConfig:
    """The :class:`IngestConfig` an index was built with (defaults for a new one), with ``options`` that are not None on top."""
    root = index_dir(index)
    record = read_manifest(root).get("config", {}) if index_exists(root) else None
    return config_from_record(record, **options)


def _query_example(path: str | os.PathLike, kind: Literal["image", "sound"], decode: Callable[[], _T]) -> _T:
    """``decode()`` of a query example file; an empty file, or one its decoder refuses (any
    :class:`~mmsearch.errors.MediaError`: not media, damaged, silent), is a
    :class:`~mmsearch.errors.QueryInputError` naming it and saying what to give instead (and, when
    its name says the other kind, which option takes it)."""
    named = media_kind(os.fspath(path))  # a sound given as a picture, or a picture as a sound: say which flag takes it
    hint = (" (its name says sound or video: --audio takes it)" if kind == "image" and named in ("audio", "video")
            else " (its name says picture: --image takes it)" if kind == "sound" and named == "image" else "")
    try:
        empty = os.path.getsize(path) == 0
    except OSError:
        empty = False  # missing or unreadable: the decoder says which
    if empty:
        raise QueryInputError(path, "the file is empty (0 bytes)", kind=kind, hint=hint)
    try:
        return decode()
    except MediaError as exc:
        raise QueryInputError(path, exc.reason, kind=kind, hint=hint) from None


class Index:
    """A read-only view of one generation of an index directory.

    Safe to share between the threads of a server: the snapshot is immutable, every search
    takes its options as arguments, and each encoder is built once, under a lock.
    """

    def __init__(self, snapshot: Snapshot, *, device: str = "auto", spec_override: EncoderSpec | None = None) -> None:
        self.snapshot = snapshot
        self.root = snapshot.root
        self.device = device
        self._encoders: dict[str, Any] = {}
        self._encoder_lock = threading.Lock()
        self._spec_override = spec_override
        self._rows = snapshot.media_rows()
        self._by_hash: dict[str, int] | None = None  # content hash -> media id, built on first use
        self._lexical: dict[str, Any] = {}  # space of words -> its BM25 index, built on first use
        self._towers: dict[str, Any] = {}  # space -> its frozen text tower (or None: none usable)
        self._tags: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None = None  # built on first use
        search_device = _search_device(device)
        if search_device is not None:  # exact search and re-ranking with torch on the GPU (FAISS's GPU build is rarely there)
            for data in snapshot.spaces.values():
                for rows in (data.media_index, data.moment_index):
                    if rows is not None:
                        rows.use_device(search_device)

    @property
    def manifest(self) -> dict[str, Any]:
        return self.snapshot.manifest

    def info(self) -> dict[str, Any]:
        m = self.manifest
        kinds: dict[str, int] = {}
        for row in self._rows.values():
            kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
        return {
            "index": str(self.root),
            "generation": m["generation"],  # of a sharded index: the sum of its shards' generations
            "format_version": m["format_version"],
            "shards": len(m.get("shards", ())) or 1,  # a space's "index" is then shard 0's, "shard_indexes" each shard's
            "media": kinds,
            "paths": len(self.snapshot.media),
            "failures": len(self.snapshot.failures),
            "damaged": len(self.snapshot.media) - self.snapshot.media.column("damage").null_count,  # path rows, as damaged()
            "languages": _counts(self.snapshot.media.column("language").to_pylist()),  # what is said, per path
            **({"sound_tags": self._tag_summary()} if (m.get("tags") or {}).get("tagger") else {}),
            "config": m.get("config", {}),
            "spaces": {
                name: {
                    "encoder": entry["encoder"]["identity"],
                    "frames": entry.get("derived", {}).get("n_frames", 0),
                    "moments": entry.get("derived", {}).get("n_moments", 0),
                    "index": entry.get("recipe", {}),
                    # moment rows searched exactly until a background job adds them to the index
                    # (0 when exact search over all of them is the choice for their number)
                    "moments_exact": int(entry.get("derived", {}).get("moments_awaiting_index", 0)),
                    "removed_media": len(entry.get("tombstones", [])),  # skipped at search until compaction
                    **({"shard_indexes": [shard.get("recipes", {}).get(name, {}) for shard in m["shards"]]} if m.get("shards") else {}),
                }
                for name, entry in m.get("spaces", {}).items()
            },
            "library_versions": m.get("library_versions", {}),
        }

    def reopened(self) -> "Index":
        """This index at its newest generation (``self`` when none was committed since it was opened);
        the encoders built so far are kept where the new generation still names the same ones."""
        manifest = read_manifest(self.root)
        if manifest.get("generation") == self.manifest.get("generation"):
            return self
        fresh = Index(open_snapshot(self.root), device=self.device, spec_override=self._spec_override)
        with self._encoder_lock:
            for kept, built in ((fresh._encoders, self._encoders), (fresh._towers, self._towers)):
                for space, encoder in built.items():
                    entry = fresh.manifest.get("spaces", {}).get(space)
                    if encoder is not None and entry is not None and entry["encoder"]["identity"] == encoder.identity():
                        kept[space] = encoder
        return fresh

    def _tag_windows(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """media id -> (starts, ends, labels, scores, labels lower-cased) of its tags, live media only
        (thread-safe, built once).

        A tag's stretch is the middle half of its window (seconds): a tag says its class fills much of
        the window, and windows overlap their neighbours by half (the default hop), so the middle halves
        tile the sound; the media's first and last window keep their outer edge."""
        with self._encoder_lock:
            if self._tags is None:
                table = self.snapshot.tags
                ids = table.column("media_id").to_numpy()
                columns = [table.column(c).to_numpy(zero_copy_only=False) for c in ("start", "end", "label", "score")]
                order = np.argsort(ids, kind="stable")
                bounds = np.flatnonzero(np.diff(ids[order])) + 1
                self._tags = {}
                for rows in np.split(order, bounds):
                    media_id = int(ids[rows[0]]) if len(rows) else -1
                    if media_id not in self._rows:
                        continue
                    starts, ends, names, scores = (c[rows] for c in columns)
                    quarter = (ends - starts) / 4
                    duration = float(self._rows[media_id].get("duration") or ends.max())
                    self._tags[media_id] = (np.where(starts <= 1e-3, starts, starts + quarter),
                                            np.where(ends >= duration - 1e-3, ends, ends - quarter), names, scores,
                                            np.char.lower(names.astype(str)))
            return self._tags

    @staticmethod
    def _labelled(lowered: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
        """Which tags (their lower-cased labels, :meth:`_tag_windows`) carry one of ``labels``, any case."""
        return np.isin(lowered, [t.lower() for t in labels])

    def _tag_summary(self) -> dict[str, Any]:
        """The index's sound tagger (identity), its tags of live media and how many windows carry each label."""
        labels: dict[str, int] = {}
        for _, _, names, _, _ in self._tag_windows().values():
            for name in names.tolist():
                labels[name] = labels.get(name, 0) + 1
        return {"tagger": self.manifest["tags"]["tagger"]["identity"], "tags": sum(labels.values()),
                "labels": dict(sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))[:20])}

    def tags_at(self, media_id: int, start: float, end: float, *, labels: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """The sound tags of a media item whose stretches (:meth:`_tag_windows`) overlap ``[start, end)``
        seconds (``start == end``: those holding that second): each label once with its highest probability,
        most probable first, at most :data:`mmsearch.encoders.ast.MAX_TAGS`; ``labels`` (any case) keeps
        only those. Empty when the index has no tags."""
        from .encoders.ast import MAX_TAGS

        found = self._tag_windows().get(int(media_id))
        if found is None:
            return []
        starts, ends, names, scores, lowered = found
        hit = (starts < max(end, start + 1e-9)) & (ends > start)
        if labels:
            hit &= self._labelled(lowered, labels)
        best: dict[str, float] = {}
        for name, score in zip(names[hit].tolist(), scores[hit].tolist()):
            best[name] = max(best.get(name, 0.0), float(score))
        ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_TAGS]
        return [{"label": name, "score": round(score, 4)} for name, score in ranked]

    def caption_at(self, media_id: int, start: float, end: float) -> str | None:
        """The caption of the moment ``[start, end)`` seconds of a media item: of its caption segments
        (:mod:`mmsearch.captions`), the one overlapping the moment most (the nearest centre among equals;
        ``start == end``: one holding that second). None when the index has no captions or none is there."""
        space = self.snapshot.spaces.get(CAPTION)
        rows = space.segment_row_ids(media_id) if space is not None else ()
        if not len(rows):
            return None
        starts, ends = space.segment_bounds(rows)
        if end > start:
            overlap = np.minimum(ends, end) - np.maximum(starts, start)
        else:  # an image, or one second of a video
            overlap = np.where((starts <= start) & (ends >= start), 0.0, -1.0)
        if overlap.max() < 0 or (end > start and overlap.max() <= 0):
            return None
        distance = np.abs((starts + ends) - (start + end)) / 2
        best = int(np.lexsort((distance, -overlap))[0])
        texts = space.texts_of(media_id) or []
        return texts[best] if best < len(texts) else None

    def tagged_runs(self, media_id: int, labels: tuple[str, ...]) -> list[tuple[float, float]]:
        """The stretches (seconds, in time order) of a media item where its sound is tagged with one of
        ``labels`` (any case): the stretches of its tags (:meth:`_tag_windows`, each window's middle
        half), overlapping or touching ones joined into one."""
        found = self._tag_windows().get(int(media_id))
        if found is None:
            return []
        starts, ends, _, _, lowered = found
        hit = self._labelled(lowered, labels)
        runs: list[list[float]] = []
        for s, e in sorted(set(zip(starts[hit].tolist(), ends[hit].tolist()))):
            if runs and s <= runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], e)
            else:
                runs.append([s, e])
        return [(round(s, 3), round(e, 3)) for s, e in runs]

    def tagged_span(self, media_id: int, start: float, end: float, labels: tuple[str, ...]) -> tuple[float, float] | None:
        """The part of ``[start, end)`` seconds of a media item where its sound is tagged with one of
        ``labels``: of its :meth:`tagged_runs`, the one that overlaps the interval most, cut to it; None
        when none overlaps it."""
        runs = [(s, e) for s, e in self.tagged_runs(media_id, labels) if s < end and e > start]
        if not runs:
            return None
        s, e = max(runs, key=lambda run: min(run[1], end) - max(run[0], start))
        return round(max(s, start), 3), round(min(e, end), 3)

    def tagged_media(self, labels: tuple[str, ...]) -> np.ndarray:
        """Sorted int64 ids of the live media with a window tagged with any of ``labels`` (any case)."""
        return np.asarray(sorted(m for m, found in self._tag_windows().items() if self._labelled(found[4], labels).any()), np.int64)

    def media_row(self, media_id: int) -> dict[str, Any] | None:
        """The stored row of a media item (path, kind, duration, size, mtime, language...), None if unknown."""
        return self._rows.get(int(media_id))

    def media_paths(self, media_id: int, *, unchanged: bool = False) -> list[str]:
        """Every indexed path of a media item (identical copies share a media id), in the media table's
        order; with ``unchanged``, only those that are still the file indexed there (same size and
        modification time: not replaced, not swapped for a link to another file)."""
        ids = self.snapshot.media.column("media_id").to_numpy()
        raw, sizes, mtimes = (self.snapshot.media.column(c) for c in ("raw_path", "size", "mtime"))
        out = []
        for i in np.flatnonzero(ids == int(media_id)):
            path = os.fsdecode(raw[int(i)].as_py())
            if unchanged:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or st.st_size != sizes[int(i)].as_py() or abs(st.st_mtime - mtimes[int(i)].as_py()) > 1e-3:
                    continue
            out.append(path)
        return out

    def similarity_over_time(self, text: str, media_id: int, *, modality: str | None = None) -> dict[str, Any]:
        """Where in one media item ``text`` matches: per space a text query searches (see :meth:`search`),
        ``{"space": {"start": [...], "end": [...], "score": [...]}}`` in seconds, one entry per segment
        in time order (overlapping sound windows each own the stretch nearest their centre, where a
        search places them). Scores are cosines for pictures and sound, the fused word score
        (:class:`mmsearch.textsearch.TextQuery`) for what is said or written. Raises UsageError for an
        empty text or an unknown modality or media id."""
        check_query(text, 1, 1)
        if modality is not None and modality not in MODALITIES:
            raise UsageError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")
        if int(media_id) not in self._rows:
            raise UsageError(f"no media item {media_id} in the index at {self.root}")
        out: dict[str, Any] = {}
        spaces = self._text_query_spaces(modality)
        if modality is None and self._rows[int(media_id)]["kind"] == "audio" and AUDIO in self.snapshot.spaces:
            spaces = [AUDIO, *spaces]  # a sound file has no pictures: its sound is what matches
        for space in spaces:
            data = self.snapshot.spaces[space]
            if space in TEXT_SPACES:
                rows = data.segment_row_ids(int(media_id))
                if not len(rows):
                    continue
                starts, ends = data.segment_bounds(rows)
                scores = self.text_query(space, text, allowed=np.asarray([int(media_id)], np.int64)).scores(rows)
            else:
                starts, ends, vectors = data.segments_of(int(media_id))
                if not len(starts):
                    continue
                scores = vectors @ self.embed_queries(text=[text], space=space)[0]
                if data.anchor != "start" and len(starts) > 1:  # overlapping windows, placed at their centres
                    centres = (starts + ends) / 2  # as search places them: each owns the time nearest its centre
                    middles = (centres[1:] + centres[:-1]) / 2
                    starts, ends = np.concatenate([[starts[0]], middles]), np.concatenate([middles, [ends[-1]]])
            out[space] = {
                "start": [round(float(v), 3) for v in starts],
                "end": [round(float(v), 3) for v in ends],
                "score": [round(float(v), 4) for v in scores],
            }
        return out

    def failures(self) -> list[dict[str, Any]]:
        """Files that could not be indexed: ``path`` (valid Unicode; ``path_bytes`` when the name is
        not UTF-8, see :func:`path_fields`), ``stage`` and ``reason`` of each."""
        return [{**path_fields(r["path"]), "stage": r["stage"], "reason": r["reason"]} for r in table_to_rows(self.snapshot.failures)]

    def damaged(self) -> list[dict[str, Any]]:
        """Files indexed for what decoded of them: ``path`` (as in :meth:`failures`), ``kind`` and
        ``damage`` (what was lost) of each."""
        rows = table_to_rows(self.snapshot.media)
        return [{**path_fields(r["path"]), "kind": r["kind"], "damage": r["damage"]} for r in rows if r.get("damage")]

    def encoder(self, space: str = VISUAL) -> Any:
        """The encoder that built ``space`` (built once, on first use; thread-safe)."""
        with self._encoder_lock:
            return self._encoder(space)

    def text_encoder(self, space: str = VISUAL) -> Any:
        """What embeds query texts for ``space``: the text tower frozen from its encoder
        (:mod:`mmsearch.encoders.frozen`: no open_clip, transformers or sentence-transformers to
        import, and faster), else the encoder (thread-safe)."""
        with self._encoder_lock:
            if space not in self._towers:
                self._towers[space] = self._frozen_tower(space)
            return self._towers[space] or self._encoder(space)

    def recheck_towers(self) -> None:
        """Look for text towers again where none was found (after :func:`freeze_text_towers` wrote them)."""
        with self._encoder_lock:
            for space in [s for s, tower in self._towers.items() if tower is None]:
                del self._towers[space]

    def _frozen_tower(self, space: str) -> Any:
        entry = self.manifest["spaces"].get(space)
        if entry is None or (space == VISUAL and self._spec_override is not None) or self.device not in ("auto", "cpu"):
            return None
        if os.environ.get("MMSEARCH_TEXT_TOWERS", "1") == "0":
            return None
        from .encoders.frozen import load_frozen

        identity = entry["encoder"]["identity"]
        return load_frozen(tower_dir(self.root, identity), identity)

    def _encoder(self, space: str) -> Any:
        if space not in self._encoders:
            entry = self.manifest["spaces"].get(space)
            if entry is None:
                raise UsageError(f"the index at {self.root} has no {space} space; index some {_MEDIA_OF[space]} first"
                                 + (" (an index built with --no-audio has none)" if space == AUDIO else ""))
            override = self._spec_override if space == VISUAL else None
            spec = override or EncoderSpec(**entry["encoder"]["spec"])
            encoder = create_encoder(spec, device=self.device)
            if encoder.identity() != entry["encoder"]["identity"]:
                raise EncoderMismatchError(describe_mismatch(self.root, entry["encoder"], encoder.identity(), space=space))
            self._encoders[space] = encoder
        return self._encoders[space]

    def embed_queries(
        self,
        *,
        text: list[str] | None = None,
        images: list[str | os.PathLike] | None = None,
        audio: list[str | os.PathLike] | None = None,
        space: str = VISUAL,
    ) -> np.ndarray:
        """Query vectors for ``space``: texts through that space's text tower (frozen for queries when the
        index holds one, see :func:`freeze_text_towers`), images or sound files through its media tower.
        An example file that is empty or does not decode raises :class:`~mmsearch.errors.QueryInputError`."""
        if text is not None:
            cleaned = [t.strip() for t in text]
            if any(not t for t in cleaned):
                raise UsageError("empty query text: say what to look for, e.g. mmsearch query \"a dog on a beach\"")
            encoder = self.text_encoder(space)
            try:
                return encoder.encode_text(cleaned)
            except Exception:  # noqa: BLE001 - a damaged frozen tower: the full encoder answers, from now on
                if not isinstance(encoder, FrozenTextTower):
                    raise
                with self._encoder_lock:
                    self._towers[space] = None
                return self.text_encoder(space).encode_text(cleaned)
        encoder = self.encoder(space)
        if images is not None:
            if space != VISUAL:
                raise UsageError("an image query searches the visual space")
            pictures = [_query_example(p, "image", lambda p=p: load_image(p, short_side=encoder.input_size)) for p in images]
            return encoder.encode_images(pictures)
        if audio is not None:
            if space != AUDIO:
                raise UsageError("a sound query searches the audio space")
            return np.stack([_query_example(p, "sound", lambda p=p: self._embed_sound(p, encoder)) for p in audio])
        raise UsageError("give a text, an image or a sound file to search for")

    def _embed_sound(self, path: str | os.PathLike, encoder: Any) -> np.ndarray:
        """A sound file as one vector: the mean of its windows' vectors (windows as the index cut them), of
        its first :data:`MAX_QUERY_SOUND_SECONDS` (an example, not a library to index)."""
        from .audio import iter_audio_windows
        from .encoders.base import l2_normalize

        window, hop = audio_window_config(encoder, config_from_record(self.manifest.get("config")))
        windows = iter_audio_windows(path, sample_rate=encoder.sample_rate, window=window, hop=hop, max_seconds=MAX_QUERY_SOUND_SECONDS)
        clips = [w.samples for w in windows if not w.silent]
        return l2_normalize(encoder.encode_audio(clips).mean(axis=0, keepdims=True))[0]

    def search(
        self,
        text: str | None = None,
        *,
        image: str | os.PathLike | None = None,
        audio: str | os.PathLike | None = None,
        modality: Literal["video", "audio", "speech", "text", "caption", "all"] | None = None,
        k: int = 10,
        videos: int = 20,
        exhaustive: bool = False,
        localize: LocalizeConfig = LocalizeConfig(),
        audio_weight: float = DEFAULT_AUDIO_WEIGHT,
        where: MediaFilter | dict[str, Any] | None = None,
        rerank: bool = False,
        rerank_model: str | None = None,
    ) -> list[SearchResult]:
        """The best ``k`` moments for a text, an example image or a sound file, best first.

        ``modality`` picks what to find: ``video`` (frames and images), ``audio`` (sound),
        ``speech`` (what is said: speech and subtitles), ``text`` (what is written on screen),
        ``caption`` (what a captioner said is seen: an index built with ``captions``),
        ``all`` (text only: every space). Without it, a text query searches the pictures and every
        space of words the index has, fused per moment in the way of HERO (see
        :func:`mmsearch.retrieval.fuse_moments`); ``all`` adds the sound to them, which counts
        ``audio_weight`` and the pictures and words ``1 - audio_weight``. An image finds pictures, a
        sound finds sound. An image with ``audio`` or a sound with ``video`` goes through the common
        space (``train-space``). In the spaces of words, words in double quotes must be said or
        written (word for word, or with one word in five misheard: :mod:`mmsearch.textsearch`); so
        must they in a fused text query, which then lists only moments that hold them (none when
        nothing does).

        ``where`` (:class:`mmsearch.filters.MediaFilter`): only media that pass it, filtered inside
        every stage of the search, so ``k`` results come back whenever ``k`` moments match; a result's
        ``path`` is then a path that passes it. Its ``tags`` (sound tags) make a text without
        ``modality`` search the sound; in one space of vectors the moments are then the tagged
        stretches (:meth:`_search_tagged`), with words or ``all`` the moments found are cut to them.
        Raises UsageError for a tag no window of the index carries.

        ``rerank`` (a text query): the best :data:`RERANK_DEPTH` moments (or ``k``, if more) are scored
        again by an image-text matcher whose words attend to the picture's patches (:meth:`rerank`;
        ``rerank_model``: ``blip``, a BLIP hub id or directory, or ``synth-itm``; default ``synth-itm``
        for an index built with ``synth-clip``, else ``blip``), and the best ``k`` of them returned.
        """
        if rerank:
            if text is None:
                raise UsageError("--rerank re-scores the moments a text finds: give a query text")
            found = self.search(text, image=image, audio=audio, modality=modality, k=max(k, RERANK_DEPTH), videos=videos,
                                exhaustive=exhaustive, localize=localize, audio_weight=audio_weight, where=where)
            return self.rerank(text, found, model=rerank_model)[:k]
        check_query(text, k, videos, audio_weight)
        where = _as_filter(where)
        allowed, paths = self._allowed(where)
        tags = where.tags if where is not None else ()
        if tags and modality is None and text is not None:  # tags describe the sound: a text finds sound
            modality = "audio"
        if tags and allowed is not None:
            runs = self._search_tagged(text, image=image, audio=audio, modality=modality, k=k, tags=tags, allowed=allowed)
            if runs is not None:
                return self._with_paths(runs, paths)
        fetch = k
        while True:  # a tag filter with words: moments cut to where their sound is tagged so, looking further down until k are found
            found = self._search(text, image=image, audio=audio, modality=modality, k=fetch, videos=videos, exhaustive=exhaustive,
                                 localize=localize, audio_weight=audio_weight, allowed=allowed)
            if not tags:
                break
            kept, seen = [], set()
            for r in found:
                span = self.tagged_span(r.media_id, r.start, r.end, tags) if r.media_id is not None else None
                if span is not None and (r.media_id, *span) not in seen:
                    seen.add((r.media_id, *span))
                    kept.append(replace(r, start=span[0], end=span[1], tags=self.tags_at(r.media_id, *span)))
            if len(kept) >= k or len(found) < fetch or fetch >= MAX_TAG_FETCH:
                found = kept[:k]
                break
            fetch = min(fetch * 4, MAX_TAG_FETCH)
        return self._with_paths(found, paths)

    def _search_tagged(
        self, text: str | None, *, image: Any, audio: Any, modality: str | None, k: int, tags: tuple[str, ...], allowed: np.ndarray
    ) -> list[SearchResult] | None:
        """A search with a tag filter in one space of vectors: the moments are the stretches where the
        sound is tagged so (:meth:`tagged_runs`) in the media ``allowed``, each scored as a localized
        moment is (its best segment's similarity to the query, combined with its media item's) in the
        space the query searches: the pictures (a text without ``--modality``, or ``video``; an image),
        the sound (``--modality audio``; a sound). None for a query this does not cover (spaces of
        words, ``all``, the common space): the caller filters the moments it localizes instead."""
        if modality not in (None, VISUAL_MODALITY, "audio") or (image is not None and modality == "audio") or (
            audio is not None and modality == VISUAL_MODALITY
        ):
            return None
        space = AUDIO if (audio is not None or modality == "audio") else VISUAL
        data = self.snapshot.spaces.get(space)
        if data is None:
            return None
        query = self.embed_queries(text=[text] if text is not None else None, images=[image] if image is not None else None,
                                   audio=[audio] if audio is not None else None, space=space)[0]
        ids, vectors = data.media_vectors(allowed.tolist())
        hits = []
        for media_id, media_score in zip(ids.tolist(), (vectors @ query).tolist()):
            starts, ends, segments = data.segments_of(media_id)
            similarity = segments @ query
            for a, b in self.tagged_runs(media_id, tags):
                inside = (starts < b) & (ends > a)
                if inside.any():
                    moment = float(similarity[inside].max())
                    hits.append(Hit(media_id, a, b, combined_score(moment, media_score), media_score, moment))
        hits.sort(key=lambda h: (-round(h.score, SCORE_DECIMALS), h.media_id, h.start))
        return [self._result(h, space, tagged=True) for h in hits[:k]]

    def _allowed(self, where: MediaFilter | dict[str, Any] | None) -> tuple[np.ndarray | None, dict[int, str] | None]:
        """(sorted media ids, media id -> first matching path) of a filter (a :class:`MediaFilter`, or
        the keyword arguments of :func:`mmsearch.filters.media_filter`); (None, None) without one."""
        where = _as_filter(where)
        if where is None or where.empty:
            return None, None
        allowed, paths = allowed_media(self.snapshot.media, where)
        if where.languages:  # as with tags: a language nothing is said in is more likely a mistake than a question
            said = _counts(self.snapshot.media.column("language").to_pylist())
            if not set(where.languages) & set(said):
                raise UsageError(
                    f"nothing in the index at {self.root} is said in {' or '.join(where.languages)}"
                    + (f"; languages said: {', '.join(f'{lang} ({n})' for lang, n in said.items())}" if said else
                       "; it holds no speech or subtitles with a language (index with speech on: without --no-speech)")
                )
        if where.tags:  # media with a window tagged so
            known = {name for found in self._tag_windows().values() for name in found[4].tolist()}
            if not known & {t.lower() for t in where.tags}:
                raise UsageError(
                    f"no sound in the index at {self.root} is tagged {' or '.join(map(repr, where.tags))}"
                    + (f"; its tags: {', '.join(sorted(known)[:30])}" if known else
                       "; it has no sound tags (index with --sound-tags audioset, or synth-ast for the synthetic world)")
                )
            allowed = np.intersect1d(allowed, self.tagged_media(where.tags))
        return allowed, paths

    @staticmethod
    def _with_paths(found: list[SearchResult], paths: dict[int, str] | None) -> list[SearchResult]:
        """Results named by the path a filter matched (a media item's copies may not all match)."""
        if not paths:
            return found
        return [replace(r, path=paths.get(r.media_id, r.path)) if r.media_id is not None else r for r in found]

    def matcher(self, model: str | None = None) -> Any:
        """The image-text matcher :meth:`rerank` uses (built once per model, on first use; thread-safe): ``model``
        as ``--rerank-model`` takes it, default ``synth-itm`` for an index built with ``synth-clip``, else ``blip``."""
        from .encoders import resolve_spec

        if model is None:
            model = "synth-itm" if self.manifest["spaces"].get(VISUAL, {}).get("encoder", {}).get("spec", {}).get("model") == "synth-clip" else "blip"
        with self._encoder_lock:
            key = f"rerank:{model}"
            if key not in self._encoders:
                self._encoders[key] = create_encoder(resolve_spec(model, None, family="blip-itm"), device=self.device)
            return self._encoders[key]

    def rerank(self, text: str, found: list[SearchResult], *, model: str | None = None) -> list[SearchResult]:
        """``found`` scored again with an image-text matcher (:class:`mmsearch.encoders.blip.ImageTextMatcher`,
        BLIP's ITM head: the query's words cross-attend to the patches of the picture on screen at the
        middle of each moment, as ViLBERT and VL-BERT's co-attention does), best first.

        A moment's new ``score`` is :data:`RERANK_WEIGHT` times the matcher's probability
        (``match_score``) plus the rest times its retrieval score scaled to [0, 1] over ``found`` (min-max);
        moments of sound have no picture and count as probability 0.5. Raises
        :class:`~mmsearch.errors.EncoderError` when the matcher cannot be loaded.
        """
        from .media import picture_at

        if not found:
            return []
        matcher = self.matcher(model)
        probability: list[float | None] = [None] * len(found)
        frames, rows = [], []
        for i, r in enumerate(found):
            row = self._rows.get(int(r.media_id)) if r.media_id is not None else None
            if row is None or row["kind"] == "audio" or r.modality == "audio":
                continue
            try:
                frames.append(picture_at(r.path, (r.start + r.end) / 2, short_side=matcher.input_size))
                rows.append(i)
            except (MMSearchError, OSError):  # the file changed or went since it was indexed: its retrieval score stands alone
                continue
        for i, p in zip(rows, matcher.match(frames, text).tolist() if frames else []):
            probability[i] = float(p)
        scores = np.asarray([r.score for r in found], np.float64)
        span = float(scores.max() - scores.min())
        scaled = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
        out = [replace(r, score=float(RERANK_WEIGHT * (0.5 if p is None else p) + (1 - RERANK_WEIGHT) * s), match_score=p)
               for r, p, s in zip(found, probability, scaled)]
        return sorted(out, key=lambda r: -r.score)

    def _search(
        self,
        text: str | None,
        *,
        image: str | os.PathLike | None,
        audio: str | os.PathLike | None,
        modality: str | None,
        k: int,
        videos: int,
        exhaustive: bool,
        localize: LocalizeConfig,
        audio_weight: float,
        allowed: np.ndarray | None,
    ) -> list[SearchResult]:
        given = [q for q in (text, image, audio) if q is not None]
        if len(given) != 1:
            raise UsageError("give exactly one of a query text, --image FILE or --audio FILE")
        if modality is not None and modality not in MODALITIES:
            raise UsageError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")
        if text is None and modality in TEXT_SPACES + ("all",):
            raise UsageError(f"--modality {modality} takes a query text, not an image or a sound")
        if text is not None:
            spaces = self._text_query_spaces(modality, audio_weight)
            if len(spaces) > 1:  # no modality (pictures and words) or all (sound too)
                return self._search_seen_and_said(
                    text, spaces, k=k, videos=videos, exhaustive=exhaustive, localize=localize, allowed=allowed,
                    sound_weight=audio_weight if AUDIO in spaces else 0.0,
                )
            if spaces[0] in TEXT_SPACES:
                return self._search_words(spaces[0], text, k=k, allowed=allowed)
            if modality == "all":  # every space the index has is one space (an index of sound only): that one
                modality = "audio" if spaces[0] == AUDIO else VISUAL_MODALITY
        if modality is None:
            modality = "audio" if audio is not None else "video"
        if (image is not None and modality == "audio") or (audio is not None and modality == "video"):
            return self._search_cross_modal(
                image=image, audio=audio, k=k, videos=videos, exhaustive=exhaustive, localize=localize, allowed=allowed
            )
        space = AUDIO if (audio is not None or modality == "audio") else VISUAL
        queries = self.embed_queries(
            text=[text] if text is not None else None,
            images=[image] if image is not None else None,
            audio=[audio] if audio is not None else None,
            space=space,
        )
        found = self.search_vectors(
            queries, space=space, k=k, videos=videos, exhaustive=exhaustive, localize=localize, allowed=allowed
        )[0]
        example = image if image is not None else audio
        if example is not None:
            found = self._item_itself_first(found, example, queries, space=space, localize=localize, allowed=allowed)
        return found

    def _text_query_spaces(self, modality: str | None, audio_weight: float = DEFAULT_AUDIO_WEIGHT) -> list[str]:
        """The spaces a text query searches: the one asked for, or (no modality) the pictures and the
        spaces of words the index has, or (``all``) every one of them (the sound left out when
        ``audio_weight`` is 0, so the answer is the default's)."""
        have = self.snapshot.spaces
        if modality in (VISUAL_MODALITY, "audio") + TEXT_SPACES:
            space = {VISUAL_MODALITY: VISUAL, "audio": AUDIO}.get(modality, modality)
            if space in TEXT_SPACES and space not in have:
                what, how, none = {
                    SPEECH: ("what is said", "with --no-speech", "none has speech or subtitles"),
                    TEXT: ("what is written on screen", "with --no-ocr", "none shows text"),
                    CAPTION: ("captions of the pictures", "without --captions", "their captions failed (mmsearch info --failures)"),
                }[space]
                raise UsageError(
                    f"the index at {self.root} has no {space} space ({what}): its files were indexed {how} or {none}; "
                    "search another --modality"
                )
            return [space]
        wanted = (VISUAL, AUDIO, *TEXT_SPACES) if modality == "all" and audio_weight > 0 else (VISUAL, *TEXT_SPACES)
        return [s for s in wanted if s in have] or [VISUAL]

    def _lexical_index(self, space: str) -> Any:
        """The BM25 index of a space of words, built from this generation's words on first use (thread-safe)."""
        from .textsearch import LexicalIndex

        with self._encoder_lock:
            if space not in self._lexical:
                rows = self.snapshot.spaces[space].segment_rows  # no text column while the space holds no segment
                texts = rows.column("text").to_pylist() if "text" in rows.column_names else []
                self._lexical[space] = LexicalIndex([t or "" for t in texts])
            return self._lexical[space]

    def text_query(self, space: str, text: str, *, allowed: np.ndarray | None = None, vector: np.ndarray | None = None) -> Any:
        """A :class:`mmsearch.textsearch.TextQuery` of ``text`` against the space of words ``space``
        (``allowed``: only these media ids, sorted int64; ``vector``: the text's sentence vector, when
        it is already known, :meth:`_sentence_vectors`)."""
        from .textsearch import TextQuery

        if vector is None:
            vector = self._sentence_vectors(text, [space])[space]
        return TextQuery(self.snapshot.spaces[space], vector, text, self._lexical_index(space), allowed)

    def _sentence_vectors(self, text: str, spaces: list[str]) -> dict[str, np.ndarray]:
        """The sentence vector of a query text for each space of words, embedded once per encoder (what is
        said and what is written share one sentence model)."""
        out: dict[str, np.ndarray] = {}
        by_encoder: dict[str, np.ndarray] = {}
        cleaned = text.replace('"', " ").strip() or text
        for space in spaces:
            key = json.dumps(self.manifest["spaces"][space]["encoder"]["identity"], sort_keys=True, default=str)
            if key not in by_encoder:
                by_encoder[key] = self.embed_queries(text=[cleaned], space=space)[0]
            out[space] = by_encoder[key]
        return out

    def _search_words(self, space: str, text: str, *, k: int, allowed: np.ndarray | None = None) -> list[SearchResult]:
        from .textsearch import search_text

        if k < 1:
            raise UsageError(f"-k must be at least 1, got {k}")
        return [self._result(hit, space, words) for hit, words in search_text(self.text_query(space, text, allowed=allowed), k=k)]

    def _item_itself_first(
        self,
        found: list[SearchResult],
        example: str | os.PathLike,
        queries: np.ndarray,
        *,
        space: str,
        localize: LocalizeConfig,
        allowed: np.ndarray | None = None,
    ) -> list[SearchResult]:
        """An indexed file given as the query example (same content hash) is listed first, with its best
        moment: scores alone decide that too with a sound encoder that spreads its inputs, not with one
        that maps all real music close together (the tiny ``synth-clap`` does)."""
        if self._by_hash is None:
            hashes = self.snapshot.media.column("content_hash").to_pylist()
            ids = self.snapshot.media.column("media_id").to_pylist()
            self._by_hash = dict(zip(hashes, ids))
        try:
            media_id = self._by_hash.get(content_hash(os.fspath(example)))
        except OSError:
            return found
        if media_id is None or (allowed is not None and int(media_id) not in allowed):
            return found
        own = self.search_hits(queries, space=space, k=1, videos=1, media=[int(media_id)], localize=localize)[0]
        if not own:
            return found
        first = self._result(own[0], space)
        rest = [r for r in found if (r.path, r.start, r.end) != (first.path, first.start, first.end)]
        return [first, *rest][: max(1, len(found))]

    def _search_seen_and_said(
        self,
        text: str,
        spaces: list[str],
        *,
        k: int,
        videos: int,
        exhaustive: bool,
        localize: LocalizeConfig,
        allowed: np.ndarray | None = None,
        sound_weight: float = 0.0,
    ) -> list[SearchResult]:
        """A text query in several spaces (no modality: the pictures and the spaces of words; ``all``:
        the sound too, weighed ``sound_weight``), their moments fused per moment
        (:func:`mmsearch.retrieval.fuse_moments`); words in double quotes must be said or written
        there, so a query that quotes words nothing says or shows finds nothing."""
        from .textsearch import phrases_of, search_text

        depth = max(30, 3 * k)
        moments: dict[str, list[Hit]] = {}
        query_vectors: dict[str, np.ndarray] = {}
        words = []
        vectors = self._sentence_vectors(text, [s for s in spaces if s in TEXT_SPACES])
        for space in spaces:
            if space in TEXT_SPACES:
                query = self.text_query(space, text, allowed=allowed, vector=vectors[space])
                words.append((space, search_text(query, k=depth), query.baseline()))
            elif (space == VISUAL and sound_weight < 1) or (space == AUDIO and sound_weight > 0):
                query_vectors[space] = self.embed_queries(text=[text], space=space)
                moments[space] = self.search_hits(
                    query_vectors[space], space=space, k=depth, videos=videos, exhaustive=exhaustive, localize=localize,
                    allowed=allowed,
                )[0]
        weighed = len(moments) + (sound_weight < 1 and any(found for _, found, _ in words))
        cohorts = {s: self._cohort(s, moments[s], query_vectors[s][0]) for s in moments} if weighed > 1 else {}  # one list: its own order
        fused = fuse_moments(
            moments.get(VISUAL, []), words, k=k, cohort=cohorts.get(VISUAL), words_only=bool(phrases_of(text)),
            sounds=moments.get(AUDIO, []), sound_cohort=cohorts.get(AUDIO), sound_weight=sound_weight,
        )
        return [self._result(hit, space or VISUAL, said) for hit, space, said in fused]

    def _cohort(self, space: str, hits: list[Hit], query: np.ndarray) -> np.ndarray | None:
        """Each moment's score for ``query`` (a vector of ``space``, visual or audio) in standard deviations
        above those the index's query probes (generic captions, :mod:`mmsearch.probes`) give it
        (:func:`mmsearch.retrieval.cohort_z`; a moment's score is the mean over its segments); None when
        there are no moments or the index keeps no probes for the space (an index made before they served
        this gets them at its next run that embeds that space)."""
        data = self.snapshot.spaces[space]
        bank = data.query_probes
        if bank is None or not hits:
            return None
        bank = np.asarray(bank, np.float32)
        own, others = [], []
        for hit in hits:
            starts, _, vectors = data.segments_of(hit.media_id)
            inside = (starts >= hit.start) & (starts < hit.end)
            if not inside.any():
                inside = np.arange(len(starts)) == int(np.argmin(np.abs(starts - hit.start)))
            segments = np.asarray(vectors[inside], np.float32)
            own.append(float((segments @ query).mean()))
            others.append((segments @ bank.T).mean(axis=0))
        return cohort_z(np.asarray(own), np.stack(others))

    def _search_cross_modal(
        self, *, image: Any, audio: Any, k: int, videos: int, exhaustive: bool, localize: LocalizeConfig,
        allowed: np.ndarray | None = None,
    ) -> list[SearchResult]:
        """Image -> sound or sound -> video moments through the learnt common space."""
        from .common_space import COMMON_AUDIO, COMMON_VISUAL, load_heads

        heads = load_heads(self.snapshot)
        if image is not None:
            query = heads.project_visual(self.embed_queries(images=[image], space=VISUAL))
            target, result_space = COMMON_AUDIO, AUDIO
        else:
            query = heads.project_audio(self.embed_queries(audio=[audio], space=AUDIO))
            target, result_space = COMMON_VISUAL, VISUAL
        data = self.snapshot.spaces[target]
        hits = search_space(data, query, k=k, videos=videos, exhaustive=exhaustive, config=localize, allowed=allowed)
        return [self._result(h, result_space) for h in hits[0]]

    def search_batch(
        self,
        texts: list[str],
        *,
        modality: Literal["video", "audio", "speech", "text", "all"] | None = None,
        k: int = 10,
        videos: int = 20,
        exhaustive: bool = False,
        localize: LocalizeConfig = LocalizeConfig(),
        where: MediaFilter | dict[str, Any] | None = None,
        audio_weight: float = DEFAULT_AUDIO_WEIGHT,
    ) -> list[list[SearchResult]]:
        """Many text queries at once, as :meth:`search` answers each: in one space of vectors with
        one batched encoder pass and one batched FAISS search; fused or in words, one by one."""
        if not texts:
            return []
        if modality is not None and modality not in MODALITIES:
            raise UsageError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")
        check_query(None, k, videos, audio_weight)
        spaces = self._text_query_spaces(modality, audio_weight)
        where = _as_filter(where)
        if len(spaces) > 1 or spaces[0] in TEXT_SPACES or (where is not None and where.tags):  # a tag filter looks further down
            return [
                self.search(t, modality=modality, k=k, videos=videos, exhaustive=exhaustive, localize=localize, where=where,
                            audio_weight=audio_weight)
                for t in texts
            ]
        allowed, paths = self._allowed(where)
        vectors = self.embed_queries(text=list(texts), space=spaces[0])
        found = self.search_vectors(
            vectors, space=spaces[0], k=k, videos=videos, exhaustive=exhaustive, localize=localize, allowed=allowed
        )
        return [self._with_paths(row, paths) for row in found]

    def search_vectors(
        self,
        queries: np.ndarray,
        *,
        space: str = VISUAL,
        k: int = 10,
        videos: int = 20,
        exhaustive: bool = False,
        localize: LocalizeConfig = LocalizeConfig(),
        allowed: np.ndarray | None = None,
    ) -> list[list[SearchResult]]:
        """Two-stage search of ``queries`` (``(n, dim)`` float32 vectors of ``space``): one result list per query.
        ``allowed``: only these media ids (sorted int64; see :func:`mmsearch.filters.allowed_media`)."""
        hits = self.search_hits(
            queries, space=space, k=k, videos=videos, exhaustive=exhaustive, localize=localize, allowed=allowed
        )
        return [[self._result(h, space) for h in row] for row in hits]

    def search_hits(
        self,
        queries: np.ndarray,
        *,
        space: str = VISUAL,
        k: int = 10,
        videos: int = 20,
        exhaustive: bool = False,
        localize: LocalizeConfig = LocalizeConfig(),
        media: list[int] | None = None,
        allowed: np.ndarray | None = None,
    ) -> list[list[Hit]]:
        """Two-stage search of ``queries`` (``(n, dim)`` float32 vectors of ``space``) as media ids and seconds.

        ``media``: only these media ids (the candidates of a benchmark), stage 1 scored exactly over
        them. ``allowed``: only these media ids (a filter, searched inside the index; see
        :func:`mmsearch.retrieval.stage1`). :meth:`search_vectors` is this with paths.
        """
        if k < 1 or videos < 1:
            raise UsageError(f"-k and --videos must be at least 1, got {k} and {videos}")
        data = self.snapshot.spaces.get(space)
        if data is None:
            return [[] for _ in range(len(np.atleast_2d(queries)))]
        return search_space(
            data, queries, k=k, videos=videos, exhaustive=exhaustive, config=localize, media=media, allowed=allowed
        )

    def media_vectors(self, media: list[int], *, space: str = VISUAL) -> tuple[np.ndarray, np.ndarray]:
        """(ids, ``(n, dim)`` float32) media-level vectors of ``media`` in ``space`` (those it has), in the order given."""
        data = self.snapshot.spaces.get(space)
        if data is None:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return data.media_vectors(media)

    def media_ids(self) -> dict[str, int]:
        """path -> media id of every indexed path (identical copies share one id)."""
        return {r["path"]: int(r["media_id"]) for r in table_to_rows(self.snapshot.media)}

    def _result(self, hit: Any, space: str, text: str | None = None, *, tagged: bool = False) -> SearchResult:
        """``hit`` as a result; with the sound tags of its stretch when it is sound, or ``tagged`` (a tag filter's)."""
        row = self._rows[hit.media_id]
        modality: Modality
        if space in TEXT_SPACES:
            modality = space  # type: ignore[assignment]
        else:
            modality = "audio" if space == AUDIO else ("image" if row["kind"] == "image" else "video")
        return SearchResult(
            path=row["path"],
            start=round(hit.start, 3),
            end=round(hit.end, 3),
            score=float(hit.score),
            video_score=None if hit.media_score is None else float(hit.media_score),
            modality=modality,
            moment_score=None if hit.moment_score is None else float(hit.moment_score),
            text=text,
            media_id=int(hit.media_id),
            tags=self.tags_at(hit.media_id, hit.start, hit.end) or None if (tagged or space == AUDIO) and self.snapshot.tags.num_rows else None,
            caption=self.caption_at(hit.media_id, hit.start, hit.end) if space != AUDIO else None,
        )


MAX_QUERY_SOUND_SECONDS = 120.0
RERANK_DEPTH = 20  # --rerank scores again the best this many moments
RERANK_WEIGHT = 0.7  # of the matcher's probability in a re-ranked score; the rest: the retrieval score scaled to [0, 1]
MAX_TAG_FETCH = 1000  # a tag filter looks at most this far down a search's ranking
_MEDIA_OF = {VISUAL: "videos or images", AUDIO: "audio files or videos with sound", SPEECH: "videos or audio files with speech or subtitles",
             TEXT: "videos or images with text on screen", CAPTION: "videos or images"}
VISUAL_MODALITY = "video"
EXECUTORS = ("local", "ray")  # how `mmsearch index` decodes and embeds: here, or on a Ray cluster
MODALITIES = ("video", "audio", "speech", "text", "caption", "all")


def _search_device(device: str) -> str | None:
    """The torch device the vector indexes' exact rows and re-ranking use: CUDA when ``device`` is
    ``auto`` or ``cuda[:N]`` and a GPU is there (:mod:`mmsearch.indexes.torch_exact`), unless
    ``MMSEARCH_TORCH_SEARCH=0``; None: FAISS on the CPU."""
    if str(device) == "cpu" or os.environ.get("MMSEARCH_TORCH_SEARCH", "1") == "0":
        return None
    if str(device) == "auto" and not os.path.exists("/dev/nvidiactl"):  # no NVIDIA driver: no need to import torch to know
        return None
    from .encoders.base import resolve_device

    resolved = resolve_device(device)
    return str(resolved) if resolved.type == "cuda" else None


def _counts(values: list[Any]) -> dict[str, int]:
    """How often each value that is not None occurs, most frequent first."""
    counts: dict[str, int] = {}
    for value in values:
        if value is not None:
            counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def open_index(
    root: str | os.PathLike | None = None,
    *,
    device: str = "auto",
    model: str | None = None,
    pretrained: str | None = None,
) -> Index:
    """Open the current generation of an index (``root`` defaults to :func:`default_index_dir`).

    ``model``/``pretrained`` name the query encoder explicitly; it must be the
    one the index was built with (or the same weights from another file).
    """
    snapshot = open_snapshot(index_dir(root))
    override = resolve_spec(model, pretrained, family="clip") if (model or pretrained) else None
    return Index(snapshot, device=device, spec_override=override)


def _as_filter(where: MediaFilter | dict[str, Any] | None) -> MediaFilter | None:
    """A :class:`MediaFilter` from itself or the keyword arguments of :func:`mmsearch.filters.media_filter`."""
    if isinstance(where, dict):
        from .filters import media_filter

        return media_filter(**where)
    return where


def _stored_tagger(root: Path) -> EncoderSpec | None:
    """The spec of the sound tagger an index's tags come from, or None."""
    if not index_exists(root):
        return None
    tagger = (read_manifest(root).get("tags") or {}).get("tagger")
    return EncoderSpec(**tagger["spec"]) if tagger else None


def _stored_spec(root: Path, space: str) -> EncoderSpec | None:
    if not index_exists(root):
        return None
    entry = read_manifest(root).get("spaces", {}).get(space)
    return EncoderSpec(**entry["encoder"]["spec"]) if entry else None


def query_answer(
    idx: Index,
    results: list[SearchResult],
    *,
    text: str | None = None,
    image: str | None = None,
    audio: str | None = None,
    modality: str | None = None,
    k: int = 10,
    videos: int = 20,
    exhaustive: bool = False,
    where: MediaFilter | None = None,
    rerank: bool = False,
    audio_weight: float = DEFAULT_AUDIO_WEIGHT,
) -> dict[str, Any]:
    """The answer to one query as ``mmsearch query --json`` (one line of ``--batch``) prints it and
    ``mmsearch serve`` returns it: ``{"query": {...}, "results": [SearchResult.to_dict(), ...]}``; paths
    absolute, the index's too; ``audio_weight`` is recorded for ``modality`` ``all``, which it weighs."""
    query: dict[str, Any] = {
        "text": text,
        "image": image,
        "audio": audio,
        "modality": modality or ("audio" if audio is not None else "video" if image is not None else "default"),
        "k": k,
        "videos": videos,
        "exhaustive": exhaustive,
        "index": os.path.abspath(idx.root),
    }
    if modality == "all":
        query["audio_weight"] = audio_weight
    if where is not None and not where.empty:
        query["filter"] = where.to_dict()
    if rerank:
        query["rerank"] = True
    return {"query": query, "results": [r.to_dict() for r in results]}


TEXT_TOWERS = "cache/text-towers"  # in the index directory: the text towers frozen for queries


def tower_dir(root: str | os.PathLike, identity: dict[str, Any]) -> Path:
    """Where the text tower frozen from the encoder of ``identity`` lives in the index at ``root``."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(root) / TEXT_TOWERS / digest


def freeze_text_towers(index: str | os.PathLike | None = None, *, encoders: dict[str, Any] | None = None) -> dict[str, bool]:
    """Freeze the text tower of each space a text query reads (pictures, what is said, what is written)
    into the index's ``cache/text-towers`` (:mod:`mmsearch.encoders.frozen`), so a query in a fresh
    process loads TorchScript and a tokenizer instead of open_clip and sentence-transformers.

    ``encoders``: space -> an encoder already built on the CPU (others are built here, once, only for
    a space without a current tower). Towers of encoders the index no longer names are removed.
    Returns space -> whether a faithful tower is now in place (False: queries build the encoder).
    The towers take disk (ViT-B-32: about 250 MB; all-MiniLM-L6-v2: about 90 MB); deleting the
    folder is safe.
    """
    from .encoders.frozen import freeze, load_frozen

    root = index_dir(index)
    spaces = read_manifest(root).get("spaces", {})
    done: dict[str, bool] = {}
    wanted: set[Path] = set()
    for space in (VISUAL, *TEXT_SPACES):
        if space not in spaces:
            continue
        identity = spaces[space]["encoder"]["identity"]
        target = tower_dir(root, identity)
        wanted.add(target)
        if target.exists() and load_frozen(target, identity) is not None:
            done[space] = True
            continue
        encoder = (encoders or {}).get(space)
        if encoder is None or getattr(getattr(encoder, "device", None), "type", None) != "cpu":
            try:
                encoder = create_encoder(EncoderSpec(**spaces[space]["encoder"]["spec"]), device="cpu")
            except Exception:  # noqa: BLE001 - weights gone since indexing: queries will say so themselves
                done[space] = False
                continue
        done[space] = encoder.identity() == identity and freeze(encoder, target)
    folder = root / TEXT_TOWERS
    if folder.is_dir():
        import shutil

        for stale in folder.iterdir():
            if stale not in wanted:
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    return done
