"""``mmsearch bench`` end to end on tiny datasets written in each benchmark's official format.

A synthetic world (mmsearch.synth) gives videos and sounds with known captions and
times; each test writes the annotation file of one benchmark from that ground truth,
copies the media under the benchmark's ids, and runs :func:`mmsearch.bench.run_bench`
with the shipped tiny models (``synth-clip``; ``synth-clap`` for the sound
benchmarks). All tasks share one index per modality: copies of a file are
recognised by content hash, so each run only hashes.
"""

from __future__ import annotations

import csv
import glob
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import mmsearch
from mmsearch.bench import TASKS, load_dataset, run_bench
from mmsearch.errors import UsageError
from mmsearch.metrics import temporal_iou
from mmsearch.synth import SynthConfig, generate_corpus

SYNTH_CLAP_DIR = Path(__file__).resolve().parents[1] / "mmsearch" / "assets" / "synth-clap"

VISUAL_CONFIG = SynthConfig(
    max_size=(160, 120), webm_probability=0.0, audio_in_video_probability=0.0,
    event_seconds=(3.0, 6.0), gap_seconds=(1.0, 2.0), events_per_video=(2, 3),
)
AUDIO_CONFIG = SynthConfig(max_size=(160, 120), events_per_audio=(1, 2), event_seconds=(3.0, 6.0), gap_seconds=(1.0, 2.0))
AUDIO_SEED = 10  # clips [noise, slow beat], [noise, fast beat], [low tone], [high tone, noise]

RETRIEVAL_KEYS = {"R@1", "R@5", "R@10", "MdR", "MnR"}
RECALL_KEYS = {"R@1", "R@5", "R@10", "R@100"}
RESULT_KEYS = {
    "task", "n_queries", "metrics", "stage1_metrics", "n_candidates", "protocol", "annotation", "media", "limit",
    "skipped_annotations", "missing_media", "not_indexed", "rank_of_not_retrieved", "videos", "space", "encoder",
    "index", "seconds", "indexed_files", "machine",
}


class World:
    """Synthetic media with their ground truth: files, events, captions unique to one file."""

    def __init__(self, media: Path, truth: list[dict], modality: str, index: Path) -> None:
        self.media = media
        self.index = index
        self.events = [r for r in truth if r["modality"] == modality]
        self.files = sorted({r["file"] for r in self.events})
        per_file = {f: {r["caption"] for r in self.events if r["file"] == f} for f in self.files}
        counts = Counter(c for caps in per_file.values() for c in caps)
        self.unique = {f: sorted(c for c in caps if counts[c] == 1) for f, caps in per_file.items()}
        self.count = counts  # caption -> number of files showing it

    def captions(self, f: str) -> list[str]:
        """The file's captions in time order."""
        return [r["caption"] for r in sorted(self.events, key=lambda r: r["start"]) if r["file"] == f]

    def copy(self, folder: Path, names: dict[str, str]) -> None:
        """Copy each world file f to folder/names[f] (the name gets f's extension unless it has one)."""
        folder.mkdir(parents=True, exist_ok=True)
        for f, name in names.items():
            suffix = "" if Path(name).suffix in (".mp4", ".wav", ".flac", ".mp3") else Path(f).suffix
            shutil.copy(self.media / f, folder / (name + suffix))


@pytest.fixture(scope="module")
def visual(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("bench-visual")
    truth = generate_corpus(root / "synth", videos=4, audio=0, seed=0, config=VISUAL_CONFIG)
    mmsearch.index_paths([root / "synth"], root / "index", model="synth-clip", audio=False, device="cpu")
    world = World(root / "synth", truth, "video", root / "index")
    assert len(world.files) == 4 and all(world.unique.values()), f"seed 0 no longer gives every video a unique caption: {world.unique}"
    return world


@pytest.fixture(scope="module")
def sound(tmp_path_factory) -> World:
    if not SYNTH_CLAP_DIR.is_dir():
        pytest.skip(f"{SYNTH_CLAP_DIR} is absent (the packaged synth-clap is not trained yet): the sound benchmarks need it")
    root = tmp_path_factory.mktemp("bench-sound")
    truth = generate_corpus(root / "synth", videos=0, audio=4, seed=AUDIO_SEED, config=AUDIO_CONFIG)
    mmsearch.index_paths([root / "synth"], root / "index", model="synth-clip", audio_model="synth-clap", device="cpu")
    world = World(root / "synth", truth, "audio", root / "index")
    assert len(world.files) == 4 and all(world.unique.values()), f"seed {AUDIO_SEED} no longer gives every clip a unique caption: {world.unique}"
    return world


def _bench(task: str, data: Path, world: World, tmp_path: Path, **kw) -> tuple[dict, list[dict]]:
    kw.setdefault("audio_model", "synth-clap" if TASKS[task].kind == "audio" else None)
    result = run_bench(
        task, data, index_dir=world.index, model="synth-clip", device="cpu",
        out=tmp_path / "result.json", per_query=tmp_path / "per_query.jsonl", markdown=tmp_path / "result.md", **kw,
    )
    assert json.loads((tmp_path / "result.json").read_text()) == result
    lines = [json.loads(line) for line in (tmp_path / "per_query.jsonl").read_text().splitlines()]
    assert len(lines) == result["n_queries"]
    assert result["task"] == task and "| R@1 |" in (tmp_path / "result.md").read_text()
    assert set(result) == RESULT_KEYS
    assert set(result["seconds"]) == {"load", "index", "encode", "score", "total"}
    assert set(result["missing_media"]) == {"items", "queries", "examples"}
    assert result["index"] == str(world.index.absolute()) and result["space"] == ("audio" if TASKS[task].kind == "audio" else "visual")
    assert result["encoder"]["model"] == ("synth-clap" if TASKS[task].kind == "audio" else "synth-clip")
    return result, lines


def _check_engine_order(lines: list[dict], world: World, items: dict[Path, str], modality: str) -> None:
    """The bench's answer is the engine's: Index.search_batch, each file at its first moment, and the same moments.

    The shared index holds each synthetic file once (the benchmark copies are
    recognised by content), so results are compared by media id.
    """
    idx = mmsearch.open_index(world.index, device="cpu")
    media = idx.snapshot.media
    media_of = dict(zip(media.column("path").to_pylist(), media.column("media_id").to_pylist()))
    item_of = {media_of[str(p.absolute())]: item for p, item in items.items()}
    results = idx.search_batch([q["query"] for q in lines], modality=modality, k=100, videos=20)
    for q, hits in zip(lines, results):
        engine = [(item_of[media_of[h.path]], h.start, h.end) for h in hits]
        assert [t["item"] for t in q["top"]] == list(dict.fromkeys(e[0] for e in engine))
        assert [(m["video"], m["start"], m["end"]) for m in q["moments"]] == engine[:10]


def _by_hand(ranks: list[int]) -> dict[str, float]:
    """R@1/5/10, MdR, MnR of 1-based ranks, written out (the bench's figures must agree with these)."""
    n, ordered = len(ranks), sorted(ranks)
    middle = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    recall = {f"R@{k}": 100 * sum(r <= k for r in ranks) / n for k in (1, 5, 10)}
    return {**recall, "MdR": middle, "MnR": sum(ranks) / n}


def _iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


# --------------------------------------------------------------------------- text-to-video retrieval
def test_msrvtt(visual: World, tmp_path: Path) -> None:
    data = tmp_path / "msrvtt"
    ids = {f: f"video{7010 + i}" for i, f in enumerate(visual.files)}
    visual.copy(data / "videos", ids)
    (data / "videos" / "video7777.mp4").write_bytes(b"not a video at all" * 100)  # on disk, but cannot be indexed
    with open(data / "MSRVTT_JSFUSION_test.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for i, f in enumerate(visual.files):
            w.writerow([f"ret{i}", f"msr{7010 + i}", ids[f], visual.unique[f][0]])
        w.writerow(["ret98", "msr7777", "video7777", "a green circle"])
        w.writerow(["ret99", "msr9999", "video9999", "a red square, not downloaded"])  # no such file
    result, lines = _bench("msrvtt", data, visual, tmp_path)
    assert set(result["metrics"]) == RETRIEVAL_KEYS and set(result["stage1_metrics"]) == RETRIEVAL_KEYS
    assert result["n_queries"] == 5 and result["n_candidates"] == 5 and result["rank_of_not_retrieved"] == 6
    assert result["missing_media"] == {"items": 1, "queries": 1, "examples": ["video9999"]}
    assert result["not_indexed"]["items"] == 1 and result["not_indexed"]["examples"] == ["video7777"]
    ranks = [q["rank"] for q in lines]
    assert ranks[4] == 6  # not retrieved: number of candidates + 1
    assert "video7777" not in [t["item"] for q in lines for t in q["top"]]
    # the metrics are those of the per-query ranks (computed here by hand, not by mmsearch.metrics)
    assert result["metrics"] == pytest.approx(_by_hand(ranks), abs=0.01)
    assert result["stage1_metrics"] == pytest.approx(_by_hand([q["stage1_rank"] for q in lines]), abs=0.01)
    _check_engine_order(lines[:4], visual, {p: p.stem for p in (data / "videos").glob("video70*")}, "video")
    # every sentence names a shape only its own video shows: that video first for (nearly) all
    assert sum(r == 1 for r in ranks[:4]) >= 3


def test_msrvtt_limit_and_ties(visual: World, tmp_path: Path) -> None:
    """Two ids with the very same video tie on score: the one listed first ranks first."""
    data = tmp_path / "msrvtt"
    f = visual.files[0]
    visual.copy(data / "videos", {f: "video1"})
    shutil.copy(data / "videos" / f"video1{Path(f).suffix}", data / "videos" / f"video2{Path(f).suffix}")
    visual.copy(data / "videos", {visual.files[1]: "video3"})
    caption = visual.unique[f][0]
    (data / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n"
        f"ret0,msr1,video1,{caption}\nret1,msr2,video2,{caption}\nret2,msr3,video3,{visual.unique[visual.files[1]][0]}\n"
    )
    result, lines = _bench("msrvtt", data, visual, tmp_path)
    assert [q["rank"] for q in lines] == [1, 2, 1]
    assert lines[1]["top"][0]["score"] == lines[1]["top"][1]["score"]  # a real tie
    assert [t["item"] for t in lines[1]["top"][:2]] == ["video1", "video2"]
    assert result["metrics"]["R@1"] == pytest.approx(66.67) and result["metrics"]["MnR"] == pytest.approx(1.33)
    limited, _ = _bench("msrvtt", data, visual, tmp_path, limit=2)  # the first 2 queries and only their 2 videos
    assert limited["n_queries"] == 2 and limited["n_candidates"] == 2 and limited["limit"] == 2


def test_didemo_and_activitynet_paragraphs(visual: World, tmp_path: Path) -> None:
    # DiDeMo: one entry per description; names carry an extension the files do not have (match by stem)
    data = tmp_path / "didemo"
    names = {f: f"1234{i}@N00_56789{i}_abcdef.mov" for i, f in enumerate(visual.files)}
    visual.copy(data / "videos", {f: Path(n).stem for f, n in names.items()})
    entries = [
        {"annotation_id": k, "description": c, "video": names[f], "times": [[0, 1]] * 4, "num_segments": 6}
        for k, (f, c) in enumerate((f, c) for f in visual.files for c in visual.captions(f))
    ]
    (data / "test_data.json").write_text(json.dumps(entries))
    ds = load_dataset("didemo", data)
    assert [q.text for q in ds.queries] == [" ".join(visual.captions(f)) for f in visual.files]
    result, lines = _bench("didemo", data, visual, tmp_path)
    assert result["n_queries"] == 4 and set(result["metrics"]) == RETRIEVAL_KEYS and result["missing_media"]["items"] == 0
    # (synth-clip learnt single captions: paragraphs are beyond it, so only the plumbing is checked here)
    _check_engine_order(lines, visual, {p: names[f] for f in visual.files for p in (data / "videos").glob(Path(names[f]).stem + ".*")}, "video")

    # ActivityNet Captions: ids with and without the v_ prefix on disk
    data = tmp_path / "anet"
    ids = {f: f"v_{'abcdefghijk'[i]}{i:010d}" for i, f in enumerate(visual.files)}
    visual.copy(data / "videos", {f: (v[2:] if i % 2 else v) for i, (f, v) in enumerate(ids.items())})
    ann = {
        ids[f]: {
            "duration": 20.0,
            "timestamps": [[r["start"], r["end"]] for r in sorted(visual.events, key=lambda r: r["start"]) if r["file"] == f],
            "sentences": [c + "." for c in visual.captions(f)],
        }
        for f in visual.files
    }
    (data / "val_1.json").write_text(json.dumps(ann))
    result, lines = _bench("activitynet", data, visual, tmp_path)
    assert result["missing_media"]["items"] == 0 and result["n_queries"] == 4
    assert [q["query"] for q in lines] == [" ".join(c + "." for c in visual.captions(f)) for f in visual.files]
    moments = load_dataset("activitynet-moments", data)
    assert len(moments.queries) == len(visual.events) and moments.queries[0].ts is not None
    result, lines = _bench("activitynet-moments", data, visual, tmp_path, limit=3)
    assert result["n_queries"] == 3 and set(result["metrics"]) == {"VCMR", "SVMR", "VR"}
    assert lines[0]["query_id"] == f"{ids[visual.files[0]]}#0" and lines[0]["query"] == visual.captions(visual.files[0])[0] + "."


# --------------------------------------------------------------------------- moment retrieval
def _check_moment_result(result: dict, lines: list[dict], world: World, ids: dict[str, str]) -> None:
    m = result["metrics"]
    assert set(m) == {"VCMR", "SVMR", "VR"}
    assert set(m["VCMR"]) == set(m["SVMR"]) == {"0.5", "0.7"}
    assert all(set(m[t][thd]) == RECALL_KEYS for t in ("VCMR", "SVMR") for thd in ("0.5", "0.7"))
    assert set(m["VR"]) == RECALL_KEYS
    # R@1 follows from each query's first prediction by TVR's rule, written out here (hand-computed
    # figures at every k, and past 10 predictions, are checked in test_bench_scoring.py)
    n = len(lines)
    for thd in (0.5, 0.7):
        vcmr = sum(q["moments"][0]["video"] == q["gt"] and _iou((q["moments"][0]["start"], q["moments"][0]["end"]), q["gt_moment"]) >= thd
                   for q in lines if q["moments"])
        svmr = sum(_iou((q["svmr"][0]["start"], q["svmr"][0]["end"]), q["gt_moment"]) >= thd for q in lines if q["svmr"])
        assert m["VCMR"][str(thd)]["R@1"] == pytest.approx(100 * vcmr / n, abs=0.01)
        assert m["SVMR"][str(thd)]["R@1"] == pytest.approx(100 * svmr / n, abs=0.01)
    assert m["VR"]["R@1"] == pytest.approx(100 * sum(q["rank"] == 1 for q in lines) / n, abs=0.01)
    # each query's rank is where its video stands in the answer it saved
    assert all(q["top"][q["rank"] - 1]["item"] == q["gt"] and q["gt"] not in [t["item"] for t in q["top"][: q["rank"] - 1]] for q in lines)
    for thd in ("0.5", "0.7"):  # recall grows with k, falls with the IoU threshold
        for t in ("VCMR", "SVMR"):
            values = [m[t][thd][k] for k in ("R@1", "R@5", "R@10", "R@100")]
            assert values == sorted(values)
            assert m[t]["0.7"]["R@1"] <= m[t]["0.5"]["R@1"]
    # known answers: a shape shown in one video only -> that video first, and its moment found in it
    by_id = {v: f for f, v in ids.items()}
    unique = [q for q in lines if q["query"] in world.unique[by_id[q["gt"]]]]
    assert len(unique) >= 4
    assert sum(q["rank"] == 1 for q in unique) >= 0.75 * len(unique)
    assert sum(temporal_iou(q["gt_moment"], (q["svmr"][0]["start"], q["svmr"][0]["end"])) >= 0.5 for q in unique) >= 0.75 * len(unique)
    assert m["SVMR"]["0.5"]["R@5"] >= 75.0


def test_tvr(visual: World, tmp_path: Path) -> None:
    data = tmp_path / "tvr"
    ids = {f: f"castle_s01e0{i}_seg02_clip_1{i}" for i, f in enumerate(visual.files)}
    visual.copy(data / "videos", ids)
    with open(data / "tvr_val_release.jsonl", "w") as fh:
        for k, r in enumerate(visual.events):
            fh.write(json.dumps({"desc_id": 90000 + k, "desc": r["caption"], "vid_name": ids[r["file"]],
                                 "ts": [r["start"], r["end"]], "duration": 30.0, "type": "v"}) + "\n")
    result, lines = _bench("tvr", data, visual, tmp_path)
    # --data may also name the annotation file itself
    assert len(load_dataset("tvr", data / "tvr_val_release.jsonl").queries) == len(visual.events)
    assert result["n_queries"] == len(visual.events) and result["n_candidates"] == 4
    assert lines[0]["query_id"] == "90000" and lines[0]["info"]["type"] == "v"
    _check_moment_result(result, lines, visual, ids)


def test_charades_sta(visual: World, tmp_path: Path) -> None:
    data = tmp_path / "charades"
    ids = {f: f"{'ABCD'[i]}{i}X7Q" for i, f in enumerate(visual.files)}
    visual.copy(data / "videos", ids)
    (data / "charades_sta_test.txt").write_text(
        "".join(f"{ids[r['file']]} {r['start']:.1f} {r['end']:.1f}##{r['caption']}.\n" for r in visual.events)
    )
    result, lines = _bench("charades-sta", data, visual, tmp_path)
    assert result["n_queries"] == len(visual.events)
    for q in lines:  # the trailing full stop of the sentence is part of the query
        q["query"] = q["query"].rstrip(".")
    _check_moment_result(result, lines, visual, ids)


# --------------------------------------------------------------------------- errors and the command
def test_clear_errors(visual: World, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown benchmark"):
        run_bench("msr-vtt", tmp_path)
    with pytest.raises(UsageError, match=r"MSRVTT_JSFUSION_test\.csv not found.*videos/<video_id>\.mp4"):
        run_bench("msrvtt", tmp_path)
    (tmp_path / "charades_sta_test.txt").write_text("AAAAA 1.0 2.0##a red circle\nBBBBB 1.0 a blue square\n")
    with pytest.raises(UsageError, match=r"charades_sta_test\.txt: line 2"):
        run_bench("charades-sta", tmp_path)
    (tmp_path / "test.csv").write_text("audiocap_id,youtube_id,caption\n1,abc,a dog barks\n")
    with pytest.raises(UsageError, match="missing column.*start_time"):
        run_bench("audiocaps", tmp_path)
    (tmp_path / "videos").mkdir()
    visual.copy(tmp_path / "videos", {visual.files[0]: "other"})
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\nret0,msr1,video1,a red circle\n")
    with pytest.raises(UsageError, match=r"none of the 1 media files.*'video1'"):
        run_bench("msrvtt", tmp_path, index_dir=visual.index, model="synth-clip", device="cpu")


def test_bench_command_registers_and_runs(visual: World, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from mmsearch.cli import bench as bench_command  # the command lives in the CLI; mmsearch.bench is the library

    app = typer.Typer()
    app.command("bench")(bench_command)

    @app.callback()
    def main() -> None:  # a group, as in the real CLI
        pass

    data = tmp_path / "msrvtt"
    f = visual.files[2]
    visual.copy(data / "videos", {f: "video5"})
    (data / "MSRVTT_JSFUSION_test.csv").write_text(f"key,vid_key,video_id,sentence\nret0,msr5,video5,{visual.unique[f][0]}\n")
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["bench", "msrvtt", "--data", str(data), "--index", str(visual.index), "--model",
                                   "synth-clip", "--device", "cpu", "--out", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "R@1" in res.output and json.loads(out.read_text())["metrics"]["R@1"] == 100.0
    # importing the module does not import typer (the command is built on first use)
    code = "import sys, mmsearch.bench; print('typer' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


# --------------------------------------------------------------------------- text-to-audio retrieval
def _check_audio(result: dict, lines: list[dict], world: World, ids: dict[str, str], keys: set[str]) -> None:
    assert set(result["metrics"]) == keys
    by_id = {v: f for f, v in ids.items()}
    unique = [q for q in lines if q["query"] in world.unique[by_id[q["gt"]]]]
    assert len(unique) >= 4
    # a sound heard in one clip only: that clip first for (nearly) every such caption
    assert sum(q["rank"] == 1 for q in unique) >= 0.75 * len(unique)
    # and a sound heard in m of the n clips (m < n) ranks its clip among the m that have it, for most such queries
    # (with 4 candidates, "rank <= m + 1" held for any answer once m >= 3)
    shared = [q for q in lines if world.count[q["query"]] < result["n_candidates"]]
    assert len(shared) >= 0.75 * len(lines)
    assert sum(q["rank"] <= world.count[q["query"]] for q in shared) >= 0.75 * len(shared)
    ranks = [q["rank"] for q in lines]
    assert result["metrics"]["R@1"] == pytest.approx(100 * sum(r == 1 for r in ranks) / len(ranks), abs=0.01)
    if "mAP@10" in keys:
        assert result["metrics"]["mAP@10"] == pytest.approx(100 * sum(1 / r for r in ranks if r <= 10) / len(ranks), abs=0.01)


def test_audiocaps(sound: World, tmp_path: Path) -> None:
    data = tmp_path / "audiocaps"
    ids = {f: f"-{'abcd'[i]}Xy_{i}7Kq9Z" for i, f in enumerate(sound.files)}  # 11-character YouTube ids
    # as downloaders name them: <id>, Y<id>, <id>_<start>, <id>_<start>_<end>
    forms = ("{}", "Y{}", "{}_30", "{}_30.000_40.000")
    names = {f: forms[i].format(v) for i, (f, v) in enumerate(ids.items())}
    sound.copy(data / "audio", names)
    with open(data / "test.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        k = 100
        for f in sound.files:
            for c in sound.captions(f):
                w.writerow([k, ids[f], 30, c])
                k += 1
    result, lines = _bench("audiocaps", data, sound, tmp_path)
    assert result["missing_media"]["items"] == 0 and result["n_candidates"] == 4
    _check_engine_order(lines, sound, {next((data / "audio").glob(glob.escape(names[f]) + ".*")): ids[f] for f in sound.files}, "audio")
    assert result["n_queries"] == sum(len(sound.captions(f)) for f in sound.files)
    _check_audio(result, lines, sound, ids, RETRIEVAL_KEYS | {"mAP@10"})


def test_clotho(sound: World, tmp_path: Path) -> None:
    data = tmp_path / "clotho"
    ids = {f: f"Field recording {i}, take 2{Path(f).suffix}" for i, f in enumerate(sound.files)}  # names with spaces
    sound.copy(data / "audio", {f: Path(v).stem for f, v in ids.items()})
    with open(data / "clotho_captions_evaluation.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name"] + [f"caption_{j}" for j in range(1, 6)])
        for f in sound.files:
            caps = sound.captions(f)
            w.writerow([ids[f]] + [caps[j % len(caps)] for j in range(5)])
    result, lines = _bench("clotho", data, sound, tmp_path)
    assert result["n_queries"] == 5 * len(sound.files)
    _check_engine_order(lines, sound, {data / "audio" / ids[f]: ids[f] for f in sound.files}, "audio")
    _check_audio(result, lines, sound, ids, RETRIEVAL_KEYS | {"mAP@10"})


def test_musiccaps(sound: World, tmp_path: Path) -> None:
    data = tmp_path / "musiccaps"
    ids = {f: f"{'wxyz'[i]}Q3-zz_{i}aB1" for i, f in enumerate(sound.files)}
    sound.copy(data / "audio", ids)
    with open(data / "musiccaps-public.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption", "author_id",
                    "is_balanced_subset", "is_audioset_eval"])
        for f in sound.files:
            w.writerow([ids[f], 30, 40, "/m/04rlf", "['tone']", sound.unique[f][0], 4, False, True])
        w.writerow(["trainOnly01", 0, 10, "/m/04rlf", "[]", "a slow beat", 1, False, False])  # not the eval split
    result, lines = _bench("musiccaps", data, sound, tmp_path)
    assert result["n_queries"] == 4 and result["missing_media"]["items"] == 0 and result["skipped_annotations"] == 1
    assert {"R@1", "R@10"} <= set(result["metrics"])
    _check_audio(result, lines, sound, ids, RETRIEVAL_KEYS | {"mAP@10"})
