"""``mmsearch bench``: published retrieval benchmarks, read from their official annotation files.

:func:`run_bench` reads a dataset's annotation file in its official format,
finds the media it names under ``--media`` (default: the data folder), indexes
them (a fresh temporary index, or ``--index DIR``, which is brought up to date
incrementally and kept), encodes every query in one batched pass and scores:

The candidates of a benchmark are the media its (kept) queries name, and only
those, even when ``--index`` holds more. Every query gets **the engine's answer**
over them, computed as :meth:`mmsearch.Index.search` computes it: stage 1 orders
the candidates by the cosine of the query and their media-level vector (the
mean of their frame or audio-window vectors, :func:`mmsearch.moments.media_vector`);
stage 2 localizes moments (:func:`mmsearch.retrieval.localize`) in the first
``videos`` (default 20, as ``mmsearch query``) and sorts all those moments as
:func:`mmsearch.retrieval.search_space` does. The ranked list of media is each
media item at its first moment, followed by the candidates stage 2 did not reach
in stage-1 order. Then:

* retrieval tasks (``msrvtt``, ``didemo``, ``activitynet``; ``audiocaps``,
  ``clotho``, ``musiccaps``): the rank of the relevant item in that list gives
  R@1/5/10, MdR, MnR (and mAP@10 for sound), :mod:`mmsearch.metrics`;
  ``stage1_metrics`` holds the same from stage 1 alone (mean pooling, the
  protocol of the zero-shot CLIP numbers in the literature);
* moment tasks (``tvr``, ``charades-sta``, ``activitynet-moments``): VCMR reads
  the first 100 moments, SVMR the moments localized inside the ground-truth
  video only, VR the first 100 media of the list; recalls at IoU 0.5 and 0.7 as
  TVR's ``standalone_eval/eval.py``.

Ties: candidates are listed in the order the annotation file first names them,
and every ranking is a stable sort by score, so of two equal scores the
candidate listed first ranks first (:func:`mmsearch.metrics.stable_ranking`).

The ``mmsearch bench`` command (``mmsearch.cli``) calls :func:`run_bench` and prints
:func:`metric_rows`. docs/bench.md describes the formats.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .errors import UsageError
from .fileio import atomic_write
from .metrics import moment_recalls, retrieval_metrics, video_recalls

__all__ = ["TASKS", "TaskSpec", "Query", "Dataset", "encoder_label", "load_dataset", "metric_rows", "metrics_markdown", "run_bench"]

VIDEO, MOMENT, AUDIO = "video", "moment", "audio"
TOP_SAVED = 10  # predictions written per query to the per-query JSONL
MAX_MOMENTS = 100  # TVR's max_pred_per_query
QUERY_CHUNK = 1024


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # video | moment | audio
    annotation: str  # the official annotation file, looked for in --data
    folder: str  # sub-folder of --media holding the files: videos | audio
    media_pattern: str  # how a file is named, for error messages and the docs
    protocol: str


TASKS: dict[str, TaskSpec] = {
    "msrvtt": TaskSpec(
        "msrvtt", VIDEO, "MSRVTT_JSFUSION_test.csv", "videos", "videos/<video_id>.mp4",
        "MSR-VTT 1k-A (JSFusion test split): text-to-video, one sentence per video, 1,000 candidates",
    ),
    "didemo": TaskSpec(
        "didemo", VIDEO, "test_data.json", "videos", "videos/<video> (matched by file name or stem)",
        "DiDeMo test: paragraph-to-video, a video's descriptions joined (file order) into one query",
    ),
    "activitynet": TaskSpec(
        "activitynet", VIDEO, "val_1.json", "videos", "videos/<video_id>.* (with or without the v_ prefix)",
        "ActivityNet Captions val_1: paragraph-to-video, a video's sentences joined into one query",
    ),
    "tvr": TaskSpec(
        "tvr", MOMENT, "tvr_val_release.jsonl", "videos", "videos/<vid_name>.*",
        "TVR val: video corpus moment retrieval from video frames only (no subtitles)",
    ),
    "charades-sta": TaskSpec(
        "charades-sta", MOMENT, "charades_sta_test.txt", "videos", "videos/<VID>.*",
        "Charades-STA test: moment retrieval (SVMR is the usual single-video protocol)",
    ),
    "activitynet-moments": TaskSpec(
        "activitynet-moments", MOMENT, "val_1.json", "videos", "videos/<video_id>.* (with or without the v_ prefix)",
        "ActivityNet Captions val_1: one query per (video, sentence, timestamp)",
    ),
    "audiocaps": TaskSpec(
        "audiocaps", AUDIO, "test.csv", "audio", "audio/<youtube_id>.* (also Y<youtube_id>.*, <youtube_id>_<start>.*)",
        "AudioCaps test: text-to-audio, every caption a query, one relevant clip",
    ),
    "clotho": TaskSpec(
        "clotho", AUDIO, "clotho_captions_evaluation.csv", "audio", "audio/<file_name>",
        "Clotho evaluation split: text-to-audio, 5 captions per clip, each a query",
    ),
    "musiccaps": TaskSpec(
        "musiccaps", AUDIO, "musiccaps-public.csv", "audio", "audio/<ytid>.* (also Y<ytid>.*, <ytid>_<start_s>.*)",
        "MusicCaps, rows with is_audioset_eval=True (2,858 clips): text-to-music, one caption per clip",
    ),
}

_ANNOTATION_SUBDIRS = ("", "data", "annotations", "annotation", "captions", "ann")


@dataclass
class Query:
    qid: str
    text: str
    item: str  # key of the relevant media item
    ts: tuple[float, float] | None = None  # ground-truth moment, seconds (moment tasks)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Dataset:
    task: str
    annotation: Path
    queries: list[Query]
    names: dict[str, tuple[str, ...]]  # item key -> file names or stems that may hold it
    youtube: bool = False  # items are YouTube ids: also match Y<id> and <id>_<start>
    skipped: int = 0  # annotation entries left out (no text, or outside the evaluated split)


# --------------------------------------------------------------------------- annotation readers
def _bad(path: Path, where: str, what: str) -> UsageError:
    return UsageError(f"{path}: {where}: {what}")


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise _bad(path, "header", f"missing column(s) {', '.join(missing)}; expected columns {','.join(required)}")
        rows = []
        for row in reader:
            rows.append({(k or "").strip(): (v or "") for k, v in row.items()})
        return rows


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise _bad(path, f"line {exc.lineno}", f"not valid JSON ({exc.msg})") from None


def _float(path: Path, where: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _bad(path, where, f"expected a number, got {value!r}") from None


def _activitynet_names(vid: str) -> tuple[str, ...]:
    return (vid, vid[2:]) if vid.startswith("v_") else (vid, "v_" + vid)


def _load_msrvtt(path: Path) -> Dataset:
    rows = _read_csv(path, ("key", "vid_key", "video_id", "sentence"))
    queries, names, skipped = [], {}, 0
    for i, row in enumerate(rows, 2):
        vid, text = row["video_id"].strip(), row["sentence"].strip()
        if not vid:
            raise _bad(path, f"line {i}", "empty video_id")
        if not text:
            skipped += 1
            continue
        queries.append(Query(row["key"].strip() or f"row{i}", text, vid))
        names.setdefault(vid, (vid,))
    return Dataset("msrvtt", path, queries, names, skipped=skipped)


def _load_didemo(path: Path) -> Dataset:
    data = _read_json(path)
    if not isinstance(data, list):
        raise _bad(path, "top level", "expected a JSON list of {video, description, times, ...} objects")
    paragraphs: dict[str, list[str]] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "video" not in entry or "description" not in entry:
            raise _bad(path, f"entry {i}", "expected an object with 'video' and 'description'")
        text = str(entry["description"]).strip()
        paragraphs.setdefault(str(entry["video"]), [])
        if text:
            paragraphs[str(entry["video"])].append(text)
    queries, names, skipped = [], {}, 0
    for video, texts in paragraphs.items():
        if not texts:
            skipped += 1
            continue
        queries.append(Query(video, " ".join(texts), video, extra={"sentences": len(texts)}))
        names[video] = (video, os.path.splitext(video)[0])
    return Dataset("didemo", path, queries, names, skipped=skipped)


def _load_activitynet_json(path: Path) -> dict[str, dict[str, Any]]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise _bad(path, "top level", "expected a JSON object {video_id: {duration, timestamps, sentences}}")
    for vid, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sentences"), list):
            raise _bad(path, f"video {vid}", "expected {duration, timestamps: [[start, end], ...], sentences: [...]}")
    return data


def _load_activitynet(path: Path) -> Dataset:
    queries, names, skipped = [], {}, 0
    for vid, entry in _load_activitynet_json(path).items():
        texts = [str(s).strip() for s in entry["sentences"] if str(s).strip()]
        if not texts:
            skipped += 1
            continue
        queries.append(Query(vid, " ".join(texts), vid, extra={"sentences": len(texts)}))
        names[vid] = _activitynet_names(vid)
    return Dataset("activitynet", path, queries, names, skipped=skipped)


def _load_activitynet_moments(path: Path) -> Dataset:
    queries, names, skipped = [], {}, 0
    for vid, entry in _load_activitynet_json(path).items():
        stamps = entry.get("timestamps")
        if not isinstance(stamps, list) or len(stamps) != len(entry["sentences"]):
            raise _bad(path, f"video {vid}", "'timestamps' must list one [start, end] per sentence")
        names[vid] = _activitynet_names(vid)
        for j, (sentence, ts) in enumerate(zip(entry["sentences"], stamps)):
            text = str(sentence).strip()
            if not text:
                skipped += 1
                continue
            if not isinstance(ts, (list, tuple)) or len(ts) != 2:
                raise _bad(path, f"video {vid}, timestamp {j}", f"expected [start, end], got {ts!r}")
            a, b = _float(path, f"video {vid}", ts[0]), _float(path, f"video {vid}", ts[1])
            queries.append(Query(f"{vid}#{j}", text, vid, (min(a, b), max(a, b)), {"duration": entry.get("duration")}))
    return Dataset("activitynet-moments", path, queries, names, skipped=skipped)


def _load_tvr(path: Path) -> Dataset:
    queries, names, skipped = [], {}, 0
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _bad(path, f"line {i}", f"not valid JSON ({exc.msg})") from None
            for key in ("desc_id", "desc", "vid_name"):
                if key not in entry:
                    raise _bad(path, f"line {i}", f"no '{key}' (expected {{desc_id, desc, vid_name, ts, duration, type}})")
            if "ts" not in entry:
                raise _bad(path, f"line {i}", "no 'ts' ground truth (a test split without annotations cannot be scored)")
            ts = entry["ts"]
            if not isinstance(ts, (list, tuple)) or len(ts) != 2:
                raise _bad(path, f"line {i}", f"'ts' must be [start, end], got {ts!r}")
            text = str(entry["desc"]).strip()
            if not text:
                skipped += 1
                continue
            vid = str(entry["vid_name"])
            a, b = _float(path, f"line {i}", ts[0]), _float(path, f"line {i}", ts[1])
            extra = {k: entry[k] for k in ("type", "duration") if k in entry}
            queries.append(Query(str(entry["desc_id"]), text, vid, (a, b), extra))
            names.setdefault(vid, (vid,))
    return Dataset("tvr", path, queries, names, skipped=skipped)


def _load_charades_sta(path: Path) -> Dataset:
    queries, names, skipped = [], {}, 0
    with open(path, encoding="utf-8-sig") as fh:
        for i, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            if "##" not in line:
                raise _bad(path, f"line {i}", "expected 'VID start end##sentence'")
            head, sentence = line.split("##", 1)
            parts = head.split()
            if len(parts) != 3:
                raise _bad(path, f"line {i}", f"expected 'VID start end' before '##', got {head!r}")
            vid = parts[0]
            a, b = _float(path, f"line {i}", parts[1]), _float(path, f"line {i}", parts[2])
            if not sentence.strip():
                skipped += 1
                continue
            queries.append(Query(str(i), sentence.strip(), vid, (a, b)))
            names.setdefault(vid, (vid,))
    return Dataset("charades-sta", path, queries, names, skipped=skipped)


def _load_audiocaps(path: Path) -> Dataset:
    rows = _read_csv(path, ("audiocap_id", "youtube_id", "start_time", "caption"))
    queries, names, skipped = [], {}, 0
    for i, row in enumerate(rows, 2):
        ytid, text = row["youtube_id"].strip(), row["caption"].strip()
        if not ytid:
            raise _bad(path, f"line {i}", "empty youtube_id")
        if not text:
            skipped += 1
            continue
        start = row["start_time"].strip()
        queries.append(Query(row["audiocap_id"].strip() or f"row{i}", text, ytid, extra={"start_time": start}))
        names.setdefault(ytid, _youtube_names(ytid, start))
    return Dataset("audiocaps", path, queries, names, youtube=True, skipped=skipped)


def _youtube_names(ytid: str, start: str) -> tuple[str, ...]:
    out = [ytid, "Y" + ytid]
    if start:
        out.append(f"{ytid}_{start}")
        try:
            s = float(start)
            out += [f"{ytid}_{int(s)}", f"{ytid}_{int(s * 1000)}", f"Y{ytid}_{start}"]
        except ValueError:
            pass
    return tuple(dict.fromkeys(out))


def _load_clotho(path: Path) -> Dataset:
    cols = ("file_name",) + tuple(f"caption_{i}" for i in range(1, 6))
    rows = _read_csv(path, cols)
    queries, names, skipped = [], {}, 0
    for i, row in enumerate(rows, 2):
        name = row["file_name"].strip()
        if not name:
            raise _bad(path, f"line {i}", "empty file_name")
        names.setdefault(name, (name, os.path.splitext(name)[0]))
        for j in range(1, 6):
            text = row[f"caption_{j}"].strip()
            if not text:
                skipped += 1
                continue
            queries.append(Query(f"{name}#{j}", text, name))
    return Dataset("clotho", path, queries, names, skipped=skipped)


def _load_musiccaps(path: Path) -> Dataset:
    rows = _read_csv(
        path,
        ("ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption", "author_id",
         "is_balanced_subset", "is_audioset_eval"),
    )
    queries, names, skipped = [], {}, 0
    for i, row in enumerate(rows, 2):
        if row["is_audioset_eval"].strip().lower() not in ("true", "1"):
            skipped += 1
            continue
        ytid, text = row["ytid"].strip(), row["caption"].strip()
        if not ytid:
            raise _bad(path, f"line {i}", "empty ytid")
        if not text:
            skipped += 1
            continue
        start = row["start_s"].strip()
        queries.append(Query(ytid, text, ytid, extra={"start_s": start, "end_s": row["end_s"].strip()}))
        names.setdefault(ytid, _youtube_names(ytid, start))
    if not queries and rows:
        raise _bad(path, "is_audioset_eval", "no row has is_audioset_eval=True (the evaluated split)")
    return Dataset("musiccaps", path, queries, names, youtube=True, skipped=skipped)


_LOADERS: dict[str, Callable[[Path], Dataset]] = {
    "msrvtt": _load_msrvtt,
    "didemo": _load_didemo,
    "activitynet": _load_activitynet,
    "tvr": _load_tvr,
    "charades-sta": _load_charades_sta,
    "activitynet-moments": _load_activitynet_moments,
    "audiocaps": _load_audiocaps,
    "clotho": _load_clotho,
    "musiccaps": _load_musiccaps,
}


def _task(task: str) -> TaskSpec:
    spec = TASKS.get(task.lower())
    if spec is None:
        raise UsageError(f"unknown benchmark {task!r}; choose one of {', '.join(TASKS)}")
    return spec


def _layout(spec: TaskSpec) -> str:
    return f"expected layout: DATA/{spec.annotation} and MEDIA/{spec.media_pattern} (MEDIA defaults to DATA)"


def find_annotation(task: str, data_dir: str | os.PathLike) -> Path:
    """The task's annotation file: DATA itself if it is a file, else DATA/<name> (or DATA/{data,annotations,captions}/<name>)."""
    spec = _task(task)
    root = Path(data_dir)
    if root.is_file():
        return root
    if not root.is_dir():
        raise UsageError(f"--data {root}: no such directory; {_layout(spec)}")
    for sub in _ANNOTATION_SUBDIRS:
        candidate = root / sub / spec.annotation if sub else root / spec.annotation
        if candidate.is_file():
            return candidate
    raise UsageError(f"{spec.name}: {root / spec.annotation} not found; {_layout(spec)}")


def load_dataset(task: str, data_dir: str | os.PathLike) -> Dataset:
    """Parse the official annotation file of ``task`` found in ``data_dir`` (see :data:`TASKS`)."""
    spec = _task(task)
    path = find_annotation(spec.name, data_dir)
    try:
        return _LOADERS[spec.name](path)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: not in the official {spec.name} format ({type(exc).__name__}: {exc}); {_layout(spec)}") from None


# --------------------------------------------------------------------------- finding media
class MediaFolder:
    """The media files under a folder, by file name, by stem and (for YouTube ids) by the 11-character id."""

    def __init__(self, root: Path, extensions: frozenset[str]) -> None:
        self.root = root
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        self.by_youtube: dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                stem, ext = os.path.splitext(name)
                if name.startswith(".") or ext.lower() not in extensions:
                    continue
                path = Path(dirpath) / name
                self.by_name.setdefault(name, path)
                self.by_stem.setdefault(stem, path)
                if len(stem) > 11 and stem[11] in "_-.":
                    self.by_youtube.setdefault(stem[:11], path)
                if stem.startswith("Y") and (len(stem) == 12 or (len(stem) > 12 and stem[12] in "_-.")):
                    self.by_youtube.setdefault(stem[1:12], path)

    def __len__(self) -> int:
        return len(self.by_name)

    def find(self, names: tuple[str, ...], *, youtube: bool = False) -> Path | None:
        for name in names:
            hit = self.by_name.get(name) or self.by_stem.get(name)
            if hit is not None:
                return hit
        if youtube and names:
            return self.by_youtube.get(names[0])
        return None


def _media_folder(spec: TaskSpec, media_dir: Path) -> MediaFolder:
    from .media import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS

    if not media_dir.is_dir():
        raise UsageError(f"--media {media_dir}: no such directory; {_layout(spec)}")
    sub = media_dir / spec.folder
    root = sub if sub.is_dir() else media_dir
    extensions = VIDEO_EXTENSIONS if spec.kind != AUDIO else AUDIO_EXTENSIONS | VIDEO_EXTENSIONS
    folder = MediaFolder(Path(os.path.abspath(root)), extensions)
    if not len(folder):
        raise UsageError(f"{spec.name}: no media files in {root} (looked for {', '.join(sorted(extensions))}); {_layout(spec)}")
    return folder


# --------------------------------------------------------------------------- running
def run_bench(
    task: str,
    data_dir: str | os.PathLike,
    *,
    media_dir: str | os.PathLike | None = None,
    index_dir: str | os.PathLike | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    audio_model: str | None = None,
    limit: int | None = None,
    device: str = "auto",
    out: str | os.PathLike | None = None,
    per_query: str | os.PathLike | None = None,
    markdown: str | os.PathLike | None = None,
    videos: int = 20,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run benchmark ``task`` on the dataset in ``data_dir``; returns (and with ``out`` writes) the result.

    The result is ``{"task", "n_queries", "metrics", ...}``: retrieval tasks
    have ``metrics = {"R@1", "R@5", "R@10", "MdR", "MnR"}`` (sound tasks add
    ``"mAP@10"``), moment tasks ``{"VCMR": {"0.5": {"R@1", "R@5", "R@10",
    "R@100"}, "0.7": {...}}, "SVMR": {...}, "VR": {"R@1", ..., "R@100"}}``;
    recalls are percentages rounded to 2 decimals. Queries whose media file is
    absent are left out (counted in ``missing_media``); ``limit`` keeps the first
    ``limit`` of the rest, and only their media are indexed and ranked. A query
    whose file is there but has no vectors (it failed to index) counts as not
    retrieved, with rank ``n_candidates + 1``. ``videos`` is the number of
    stage-1 candidates stage 2 localizes moments in (``mmsearch query --videos``).
    ``per_query`` writes one JSON line per query (the query, its ground truth,
    ``rank`` and ``stage1_rank``, the first 10 media and moments, and for moment
    tasks the first 10 SVMR moments); ``markdown`` a short report.
    """
    import mmsearch

    from .ingest import AUDIO as AUDIO_SPACE
    from .ingest import VISUAL as VISUAL_SPACE

    say = log or (lambda message: None)
    spec = _task(task)
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    if videos < 1:
        raise UsageError(f"videos must be at least 1, got {videos}")
    t_start = time.perf_counter()
    dataset = load_dataset(spec.name, data_dir)
    if not dataset.queries:
        raise UsageError(f"{dataset.annotation}: no queries in it; {_layout(spec)}")
    data_root = Path(data_dir) if Path(data_dir).is_dir() else Path(data_dir).parent
    folder = _media_folder(spec, Path(media_dir) if media_dir is not None else data_root)

    # media of each item; queries without a file are left out
    files: dict[str, Path | None] = {key: folder.find(names, youtube=dataset.youtube) for key, names in dataset.names.items()}
    present = [q for q in dataset.queries if files.get(q.item) is not None]
    missing_items = sorted({q.item for q in dataset.queries if files.get(q.item) is None})
    if not present:
        raise UsageError(
            f"{spec.name}: none of the {len(dataset.names)} media files named in {dataset.annotation} is in {folder.root} "
            f"(e.g. {missing_items[0]!r}); {_layout(spec)}"
        )
    queries = present[:limit] if limit is not None else present
    candidates = list(dict.fromkeys(q.item for q in queries))  # listing order = first mention
    position = {key: i for i, key in enumerate(candidates)}
    paths = [files[key] for key in candidates]
    t_loaded = time.perf_counter()
    say(f"{spec.name}: {len(queries)} queries over {len(candidates)} {spec.folder} from {dataset.annotation}"
        + (f" ({len(missing_items)} media files not found, their queries left out)" if missing_items else ""))

    temporary = index_dir is None
    root = Path(tempfile.mkdtemp(prefix=f"mmsearch-bench-{spec.name}-")) if temporary else Path(index_dir)  # type: ignore[arg-type]
    try:
        say(f"indexing into {root}" + (" (temporary)" if temporary else ""))
        report = mmsearch.index_paths(
            sorted({str(p) for p in paths}), root, model=model, pretrained=pretrained,
            audio=spec.kind == AUDIO, audio_model=audio_model if spec.kind == AUDIO else None, device=device,
        )
        t_indexed = time.perf_counter()
        idx = mmsearch.open_index(root, device=device)
        space_name = AUDIO_SPACE if spec.kind == AUDIO else VISUAL_SPACE
        space = idx.snapshot.spaces.get(space_name)
        if space is None:
            raise UsageError(f"{spec.name}: nothing could be indexed in the {space_name} space of {root} (see index failures)")
        media_table = idx.snapshot.media
        path_to_id = dict(zip(media_table.column("path").to_pylist(), media_table.column("media_id").to_pylist()))
        rows = idx.snapshot.media_rows()
        from .moments import media_vector

        ids: list[int | None] = [path_to_id.get(str(p)) for p in paths]

        # stage-1 vectors of the candidates (the mean of their frames), and the frames for stage 2
        frames = _Frames(space, ids)
        matrix = np.zeros((len(candidates), space.dim), dtype=np.float32)
        has = np.zeros(len(candidates), dtype=bool)
        for c in range(len(candidates)):
            vecs = frames.vectors(c)
            if vecs is not None:
                matrix[c] = media_vector(vecs)
                has[c] = True
        durations = [float((rows.get(int(mid)) or {}).get("duration") or 0.0) if mid is not None else 0.0 for mid in ids]
        not_indexed = [candidates[c] for c in range(len(candidates)) if not has[c]]

        texts = [q.text for q in queries]
        vectors = np.concatenate(
            [idx.embed_queries(text=texts[s : s + QUERY_CHUNK], space=space_name) for s in range(0, len(texts), QUERY_CHUNK)]
        ).astype(np.float32)
        t_encoded = time.perf_counter()
        encoder = idx.encoder(space_name)
        identity = idx.manifest["spaces"][space_name]["encoder"]["identity"]

        n = len(candidates)
        gt = np.asarray([position[q.item] for q in queries], dtype=np.int64)
        ranked = _rank(vectors, matrix, has, gt, frames, durations, videos)

        metrics: dict[str, Any]
        if spec.kind == MOMENT:
            metrics = _moment_metrics(queries, candidates, gt, vectors, ranked, frames, durations)
        else:
            metrics = _round(retrieval_metrics(ranked.ranks.tolist(), with_map=spec.kind == AUDIO))
        stage1 = _round(retrieval_metrics(ranked.stage1_ranks.tolist(), with_map=spec.kind == AUDIO))
        records: list[dict[str, Any]] = []
        for i, q in enumerate(queries):
            rec: dict[str, Any] = {
                "query_id": q.qid, "query": q.text, "gt": q.item,
                "rank": int(ranked.ranks[i]), "stage1_rank": int(ranked.stage1_ranks[i]),
            }
            if q.ts is not None:
                rec["gt_moment"] = [q.ts[0], q.ts[1]]
            if q.extra:
                rec["info"] = q.extra
            best = ranked.best[i]
            rec["top"] = [
                {"item": candidates[c], "score": _r5(best.get(c, ranked.scores[i, c])), "stage1_score": _r5(ranked.scores[i, c])}
                for c in ranked.order[i][:TOP_SAVED]
            ]
            rec["moments"] = [_moment(candidates[c], st, en, sc) for c, st, en, sc in ranked.moments[i][:TOP_SAVED]]
            if spec.kind == MOMENT:
                rec["svmr"] = [_moment(q.item, st, en, sc) for st, en, sc in ranked.svmr[i][:TOP_SAVED]]
            records.append(rec)
        t_done = time.perf_counter()
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)

    result: dict[str, Any] = {
        "task": spec.name,
        "n_queries": len(queries),
        "metrics": metrics,
        "n_candidates": n,
        "protocol": spec.protocol,
        "annotation": str(dataset.annotation),
        "media": str(folder.root),
        "limit": limit,
        "skipped_annotations": dataset.skipped,
        "missing_media": {"items": len(missing_items), "queries": len(dataset.queries) - len(present), "examples": missing_items[:10]},
        "not_indexed": {"items": len(not_indexed), "examples": not_indexed[:10],
                        "failures": [{"path": p, "stage": st, "reason": r} for p, st, r in report.failed][:10]},
        "rank_of_not_retrieved": n + 1,
        "stage1_metrics": stage1,
        "videos": videos,
        "space": space_name,
        "encoder": identity,
        "index": None if temporary else str(Path(root).absolute()),
        "seconds": {
            "load": round(t_loaded - t_start, 3),
            "index": round(t_indexed - t_loaded, 3),
            "encode": round(t_encoded - t_indexed, 3),
            "score": round(t_done - t_encoded, 3),
            "total": round(t_done - t_start, 3),
        },
        "indexed_files": len(report.indexed),
        "machine": _machine(str(getattr(encoder, "device", device))),
    }
    if out is not None:
        _write(Path(out), json.dumps(result, indent=2) + "\n")
    if per_query is not None:
        _write(Path(per_query), "".join(json.dumps(r) + "\n" for r in records))
    if markdown is not None:
        _write(Path(markdown), metrics_markdown(result))
    return result


class _Frames:
    """(timestamps, vectors) of each candidate, read once; kept in memory up to a budget, else read again."""

    BUDGET = 1 << 30  # bytes of frame vectors kept

    def __init__(self, space: Any, ids: list[int | None]) -> None:
        self.space = space
        self.ids = ids
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.kept = 0

    def get(self, c: int) -> tuple[np.ndarray, np.ndarray] | None:
        if c in self.cache:
            return self.cache[c]
        mid = self.ids[c]
        if mid is None:
            return None
        ts, vecs = self.space.frames_of(int(mid))
        if not len(ts):
            return None
        out = (np.asarray(ts, dtype=np.float64), np.asarray(vecs, dtype=np.float32))
        if self.kept + out[1].nbytes <= self.BUDGET:
            self.cache[c] = out
            self.kept += out[1].nbytes
        return out

    def vectors(self, c: int) -> np.ndarray | None:
        got = self.get(c)
        return None if got is None else got[1]


@dataclass
class _Ranked:
    scores: np.ndarray  # stage-1 score of every (query, candidate); -inf for candidates without vectors
    stage1_ranks: np.ndarray  # 1-based rank of the ground truth by stage-1 score alone
    ranks: np.ndarray  # 1-based rank of the ground truth in the engine's answer
    order: list[list[int]]  # the engine's candidate order per query (the first MAX_MOMENTS)
    moments: list[list[tuple[int, float, float, float]]]  # (candidate, start, end, score), best first, <= MAX_MOMENTS
    best: list[dict[int, float]]  # best moment score of each localized candidate
    svmr: list[list[tuple[float, float, float]]] = field(default_factory=list)


def _rank(
    vectors: np.ndarray, matrix: np.ndarray, has: np.ndarray, gt: np.ndarray, frames: _Frames, durations: list[float], videos: int
) -> _Ranked:
    """The engine's two stages over the benchmark's candidates, for every query.

    Stage 1 orders the candidates by the cosine of the query and their media
    vector (stable sort: of equal scores the candidate listed first wins).
    Stage 2 localizes moments in the first ``videos`` of them and sorts the
    moments as :func:`mmsearch.retrieval.search_space` does (moment score, then
    stage-1 score, then stage-1 position, then start). The engine's answer lists
    each candidate at its first moment; the candidates stage 2 did not reach
    follow in stage-1 order, so their rank is their stage-1 rank. A ground truth
    without vectors gets rank ``n_candidates + 1``.
    """
    from .retrieval import LocalizeConfig, localize

    config = LocalizeConfig()
    n = matrix.shape[0]
    n_has = int(has.sum())
    col = np.arange(n)
    scores_all = np.empty((len(vectors), n), dtype=np.float32)
    stage1_ranks = np.empty(len(vectors), dtype=np.int64)
    ranks = np.empty(len(vectors), dtype=np.int64)
    order_all: list[list[int]] = []
    moments_all: list[list[tuple[int, float, float, float]]] = []
    best_all: list[dict[int, float]] = []
    for s in range(0, len(vectors), QUERY_CHUNK):
        scores = vectors[s : s + QUERY_CHUNK] @ matrix.T
        scores[:, ~has] = -np.inf
        g = gt[s : s + QUERY_CHUNK]
        own = scores[np.arange(len(g)), g][:, None]
        higher = (scores > own).sum(axis=1)
        tied_before = ((scores == own) & (col[None, :] < g[:, None])).sum(axis=1)
        stage1_ranks[s : s + len(g)] = np.where(has[g], 1 + higher + tied_before, n + 1)
        scores_all[s : s + len(g)] = scores
        for j, row in enumerate(scores):
            i = s + j
            stage1_order = [int(c) for c in np.argsort(-row, kind="stable")[:n_has]]
            hits = []
            for pos, c in enumerate(stage1_order[:videos]):
                got = frames.get(c)
                assert got is not None  # has[c]
                ts, vecs = got
                for start, end, score in localize(ts, vecs @ vectors[i], duration=durations[c], config=config):
                    hits.append((-score, -float(row[c]), pos, start, end, c, score))
            hits.sort(key=lambda h: h[:4])
            localized = list(dict.fromkeys(h[5] for h in hits))
            order = localized + stage1_order[len(localized) :]
            gi = int(g[j])
            if not has[gi]:
                ranks[i] = n + 1
            elif gi in localized:
                ranks[i] = localized.index(gi) + 1
            else:
                ranks[i] = stage1_ranks[i]
            order_all.append(order[:MAX_MOMENTS])
            moments_all.append([(h[5], h[3], h[4], h[6]) for h in hits[:MAX_MOMENTS]])
            best: dict[int, float] = {}
            for h in hits:
                best.setdefault(h[5], h[6])
            best_all.append(best)
    return _Ranked(scores_all, stage1_ranks, ranks, order_all, moments_all, best_all)


def _moment_metrics(
    queries: list[Query], candidates: list[str], gt: np.ndarray, vectors: np.ndarray, ranked: _Ranked,
    frames: _Frames, durations: list[float],
) -> dict[str, Any]:
    """VCMR (the engine's moments over the corpus), SVMR (inside the ground-truth video), VR; TVR's rules."""
    from .retrieval import LocalizeConfig, localize

    config = LocalizeConfig()
    truth: list[tuple[str, float, float]] = []
    for i, q in enumerate(queries):
        got = frames.get(int(gt[i]))
        if got is None:
            ranked.svmr.append([])
        else:
            ts, vecs = got
            ranked.svmr.append(localize(ts, vecs @ vectors[i], duration=durations[int(gt[i])], config=config))
        assert q.ts is not None
        truth.append((q.item, q.ts[0], q.ts[1]))
    vcmr = [[(candidates[c], st, en) for c, st, en, _ in moments] for moments in ranked.moments]
    svmr = [[(q.item, st, en) for st, en, _ in segs] for q, segs in zip(queries, ranked.svmr)]
    vr = [[candidates[c] for c in order] for order in ranked.order]
    return {
        "VCMR": {thd: _round(r) for thd, r in moment_recalls(vcmr, truth).items()},
        "SVMR": {thd: _round(r) for thd, r in moment_recalls(svmr, truth).items()},
        "VR": _round(video_recalls(vr, [t[0] for t in truth])),
    }


def _moment(video: str, start: float, end: float, score: float) -> dict[str, Any]:
    return {"video": video, "start": round(float(start), 3), "end": round(float(end), 3), "score": _r5(score)}


def _r5(x: float) -> float:
    return round(float(x), 5)


def _round(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 2) for k, v in metrics.items()}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=False)


def _machine(device: str) -> dict[str, Any]:
    import mmsearch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "device": device,
        "mmsearch": mmsearch.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


# --------------------------------------------------------------------------- reporting
def metric_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the metrics table shared by the terminal and the markdown output."""
    m = result["metrics"]
    if "VCMR" in m:
        ks = list(m["VR"])
        header = ["", "IoU"] + ks
        rows = []
        for name in ("VCMR", "SVMR"):
            for thd, recalls in m[name].items():
                rows.append([name, thd] + [f"{recalls[k]:.2f}" for k in ks])
        rows.append(["VR", "-"] + [f"{m['VR'][k]:.2f}" for k in ks])
        return header, rows
    header = list(m)
    return header, [[f"{m[k]:.2f}" if k != "MdR" else f"{m[k]:g}" for k in header]]


def encoder_label(identity: dict[str, Any]) -> str:
    """``model (pretrained)``, a packaged or local weights file by its name without the hash."""
    pretrained = str(identity.get("pretrained", "?")).split("@sha256:")[0]
    return f"{identity.get('model', '?')} ({os.path.basename(pretrained.rstrip('/')) or pretrained})"


def metrics_markdown(result: dict[str, Any]) -> str:
    """The result as a small markdown report (a title line, a metrics table, the setup)."""
    header, rows = metric_rows(result)
    lines = [
        f"## mmsearch bench {result['task']}",
        "",
        f"{result['n_queries']} queries, {result.get('n_candidates', '?')} candidates; "
        f"encoder {encoder_label(result.get('encoder', {}))}; {result.get('protocol', '')}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    missing = result.get("missing_media", {})
    if missing.get("items"):
        lines += ["", f"{missing['items']} media files were not found; their {missing['queries']} queries are left out."]
    return "\n".join(lines) + "\n"
