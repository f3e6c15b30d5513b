"""The benchmark tasks and their official annotation files: what each one holds and how it is read."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError

VIDEO, MOMENT, AUDIO = "video", "moment", "audio"  # kinds of task
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
