"""Sharded indexes and ingestion on Ray (issue #17): the same answers as one index built here.

The same synthetic world (videos with and without sound, sound files, a still image) is indexed
three ways: one shard with the local runner (the reference), four shards with the local runner,
and four shards through a Ray Data pipeline on a local Ray cluster started in-process. Text,
image and sound queries, two-stage and exhaustive, filtered and not, must return the same files
and seconds with the same scores. A Ray worker killed mid-ingest must cost nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmsearch.api import index_paths, open_index, remove_paths, verify_index
from mmsearch.config import IngestConfig
from mmsearch.errors import IndexCorruptError, UsageError
from mmsearch.indexes import RowIndex, RowVectors, ShardedRowIndex
from mmsearch.store import MANIFEST, SHARDS_FILE, open_snapshot, read_manifest, shard_dirs
from mmsearch.synth import SynthConfig, generate_corpus

WORLD = SynthConfig(
    max_size=(320, 180), events_per_video=(2, 3), event_seconds=(3.0, 6.0), gap_seconds=(1.0, 2.0),
    audio_in_video_probability=0.5, events_per_audio=(2, 3),
)
OPTIONS = dict(model="synth-clip", device="cpu", speech=False, ocr=False)


def _config() -> IngestConfig:
    return IngestConfig(commit_seconds=600)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import av

    root = tmp_path_factory.mktemp("world")
    media = root / "media"
    truth = generate_corpus(media, videos=8, audio=4, seed=17, config=WORLD)
    still = root / "still.png"  # a picture from the middle of a video, as an image query
    with av.open(str(media / truth[0]["file"])) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 20:
                frame.to_image().save(still)
                break
    sound = next(media / r["file"] for r in truth if r["modality"] == "audio" and not r["file"].endswith(".mp4"))
    single = root / "single"
    index_paths([media], single, config=_config(), **OPTIONS)
    return {"root": root, "media": media, "truth": truth, "still": still, "sound": sound, "single": single}


def _answers(index_dir: Path, world: dict) -> list:
    """Every query's top-5 as (path, start, end, score to 5 decimals)."""
    idx = open_index(index_dir, device="cpu")
    captions = sorted({r["caption"] for r in world["truth"]})
    asked = []
    for caption in captions:
        for modality in ("video", "audio", "all", None):
            asked.append(dict(text=caption, modality=modality))
        asked.append(dict(text=caption, modality="video", exhaustive=True))
        asked.append(dict(text=caption, modality="video", videos=2))
        asked.append(dict(text=caption, modality="audio", where={"kinds": "audio"}))
    asked += [dict(image=world["still"]), dict(image=world["still"], exhaustive=True), dict(audio=world["sound"])]
    out = []
    for query in asked:
        found = idx.search(k=5, **query)
        out.append([(r.path, r.start, r.end, round(r.score, 5)) for r in found])
    return out


def _table_counts(index_dir: Path) -> dict:
    snap = open_snapshot(index_dir)
    return {
        "paths": len(snap.media),
        "unique paths": len(set(snap.media.column("path").to_pylist())),
        **{f"{name} segments": len(space.segment_rows) for name, space in snap.spaces.items()},
        **{f"{name} media": len(space.live_media_ids()) for name, space in snap.spaces.items()},
    }


def test_four_local_shards_answer_as_one_index(world: dict, tmp_path: Path) -> None:
    sharded = tmp_path / "sharded"
    report = index_paths([world["media"]], sharded, shards=4, config=_config(), **OPTIONS)
    assert len(report.indexed) == 12 and not report.failed
    assert json.loads((sharded / SHARDS_FILE).read_text())["shards"] == 4
    # every shard holds media of its own id class only, and all of a media item's rows
    for i, folder in enumerate(shard_dirs(sharded, 4)):
        snap = open_snapshot(folder)
        ids = set(snap.media.column("media_id").to_pylist())
        assert ids and all(m % 4 == i for m in ids)
        for space in snap.spaces.values():
            assert set(space.segment_rows.column("media_id").to_pylist()) <= ids
    assert _table_counts(sharded) == _table_counts(world["single"])
    expected = _answers(world["single"], world)
    assert sum(len(a) for a in expected) > 100  # the queries find something to compare
    assert _answers(sharded, world) == expected
    verify_index(sharded)  # every file of every shard against its checksum
    info = open_index(sharded, device="cpu").info()
    assert info["generation"] == sum(read_manifest(d)["generation"] for d in shard_dirs(sharded, 4))
    assert info["spaces"]["visual"]["frames"] == open_index(world["single"], device="cpu").info()["spaces"]["visual"]["frames"]
    for space in ("visual", "audio"):  # each shard's own vector index, as its manifest records it
        assert info["spaces"][space]["shard_indexes"] == [read_manifest(d)["spaces"][space]["recipe"] for d in shard_dirs(sharded, 4)]


def test_a_sharded_index_updates_as_one(world: dict, tmp_path: Path) -> None:
    """Re-runs, moved files, duplicates across shards and removals behave as on one index."""
    import shutil

    media = tmp_path / "media"
    shutil.copytree(world["media"], media)
    index = tmp_path / "sharded"
    index_paths([media], index, shards=3, config=_config(), **OPTIONS)
    again = index_paths([media], index, config=_config(), **OPTIONS)  # keeps its 3 shards without --shards
    assert again.unchanged == 12 and not again.indexed
    video = sorted(media.glob("video_*"))[0]
    copy = media / "copy_of_first.mp4"
    shutil.copy(video, copy)
    moved = media / "renamed.mp4"
    second = sorted(media.glob("video_*"))[1]
    second.rename(moved)
    report = index_paths([media], index, config=_config(), **OPTIONS)
    assert report.duplicates == [str(copy)] and report.moved == [(str(second), str(moved))] and not report.indexed
    idx = open_index(index, device="cpu")
    ids = idx.media_ids()
    assert ids[str(copy)] == ids[str(video)] and str(second) not in ids and str(moved) in ids
    assert sorted(remove_paths([video, copy], index)) == sorted([str(video), str(copy)])
    idx = open_index(index, device="cpu")
    assert str(video) not in idx.media_ids() and str(copy) not in idx.media_ids()
    found = idx.search(world["truth"][0]["caption"], modality="video", k=50, videos=50)
    assert found and all(r.path not in (str(video), str(copy)) for r in found)


def test_a_path_left_on_two_shards_by_a_stopped_run_keeps_its_newer_content(world: dict, tmp_path: Path) -> None:
    """A file whose content changed moves to the shard of its new media id; a run stopped after the
    new shard committed but before the old one did leaves the path on both: the next writer keeps
    the newer row (the higher media id) and drops the stale one, so no stale result remains."""
    import shutil

    from mmsearch.sharding import open_sharded_writer

    media = tmp_path / "media"
    media.mkdir()
    clip = media / f"clip{world['sound'].suffix}"
    shutil.copy(world["sound"], clip)
    index = tmp_path / "index"
    index_paths([media], index, shards=2, config=_config(), **OPTIONS)
    [old] = open_index(index, device="cpu").media_ids().values()
    stale = shard_dirs(index, 2)[old % 2]
    kept = tmp_path / "stale-shard"
    shutil.copytree(stale, kept)  # the old shard as it was before the next run's commit
    sounds = [p for p in sorted(world["media"].glob("audio_*")) if p.name != world["sound"].name]
    other = next((p for p in sounds if p.suffix == clip.suffix), sounds[0])
    shutil.copy(other, clip)  # new content: a new media id (old + 1, the other shard)
    index_paths([media], index, config=_config(), **OPTIONS)
    shutil.rmtree(stale)
    shutil.copytree(kept, stale)  # as if the run stopped before the old shard committed
    (stale / ".lock").unlink(missing_ok=True)
    rows = open_snapshot(index).media.column("media_id").to_pylist()
    assert sorted(rows) == [old, old + 1]  # the path is on both shards now
    with open_sharded_writer(index, shards=None) as writer:
        assert {r["media_id"] for r in writer.paths.values()} == {old + 1}
        for w in writer.shards:
            w.commit()
    snap = open_snapshot(index)
    assert snap.media.column("media_id").to_pylist() == [old + 1]  # one row for the path: the newer content's
    assert old not in snap.spaces["audio"].live_media_ids()  # the old content's vectors are tombstones, never found
    assert index_paths([media], index, config=_config(), **OPTIONS).unchanged == 1


def test_shard_counts_are_checked(world: dict, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="one shard; it cannot be split into 2"):
        index_paths([world["media"]], world["single"], shards=2, config=_config(), **OPTIONS)
    index = tmp_path / "two"
    index_paths([world["sound"]], index, shards=2, config=_config(), **OPTIONS)
    with pytest.raises(UsageError, match="has 2 shards, not 3"):
        index_paths([world["sound"]], index, shards=3, config=_config(), **OPTIONS)
    with pytest.raises(UsageError, match="--shards must be between 1 and"):
        index_paths([world["sound"]], tmp_path / "zero", shards=0, config=_config(), **OPTIONS)
    (index / SHARDS_FILE).write_text('{"format": "something else"}')
    with pytest.raises(IndexCorruptError, match="shards.json"):
        open_index(index, device="cpu")


@pytest.mark.slow  # mmsearch index and query as whole processes (16 s)
def test_the_command_line_indexes_and_queries_a_sharded_index(world: dict, tmp_path: Path) -> None:
    index = tmp_path / "cli"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mmsearch.cli", *args], capture_output=True, text=True, env=env, timeout=600)

    made = cli("index", str(world["media"]), "--index", str(index), "--model", "synth-clip", "--no-speech", "--no-ocr", "--shards", "3", "-q")
    assert made.returncode == 0, made.stderr
    caption = next(r["caption"] for r in world["truth"] if r["modality"] == "video")
    asked = cli("query", caption, "--index", str(index), "--modality", "video", "-k", "5", "--json", "--local")
    assert asked.returncode == 0, asked.stderr
    single = open_index(world["single"], device="cpu").search(caption, modality="video", k=5)
    got = json.loads(asked.stdout)["results"]
    assert [(r["path"], r["start"], r["end"]) for r in got] == [(r.path, r.start, r.end) for r in single]
    info = json.loads(cli("info", "--index", str(index), "--json").stdout)
    assert info["shards"] == 3 and info["paths"] == 12
    refused = cli("train-space", "--index", str(index))
    assert refused.returncode != 0 and "sharded" in refused.stderr and "Traceback" not in refused.stderr
    bad = cli("index", str(world["sound"]), "--index", str(index), "--shards", "2", "--model", "synth-clip", "--no-speech", "--no-ocr")
    assert bad.returncode != 0 and "has 3 shards, not 2" in bad.stderr and "Traceback" not in bad.stderr


def test_a_shard_not_committed_yet_reads_as_empty(world: dict, tmp_path: Path) -> None:
    """A run stopped between two shards' first commits: the committed shards are the index."""
    index = tmp_path / "sharded"
    index_paths([world["media"]], index, shards=2, config=_config(), **OPTIONS)
    whole = open_index(index, device="cpu")
    (shard_dirs(index, 2)[1] / MANIFEST).unlink()
    half = open_index(index, device="cpu")
    kept = {p for p, m in whole.media_ids().items() if m % 2 == 0}
    assert set(half.media_ids()) == kept
    report = index_paths([world["media"]], index, config=_config(), **OPTIONS)  # the next run completes it
    assert len(report.indexed) == len(whole.media_ids()) - len(kept)
    assert _answers(index, world) == _answers(world["single"], world)


def test_sharded_row_index_merges_as_one_exact_search() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((n, 16)).astype(np.float32) for n in (37, 0, 64, 5)]
    parts = [p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-9) for p in parts]
    alive = [np.ones(len(p), bool) for p in parts]
    alive[2][::3] = False  # tombstones in one shard
    shards = [RowIndex(RowVectors([p], 16), None, alive=a) for p, a in zip(parts, alive)]
    whole = RowIndex(RowVectors(parts, 16), None, alive=np.concatenate(alive))
    sharded = ShardedRowIndex(shards)
    queries = rng.standard_normal((6, 16)).astype(np.float32)
    keep = rng.random(len(whole.vectors)) < 0.5
    for mask in (None, keep):
        for k in (1, 10, 200):
            s1, i1 = whole.search(queries, k, keep=mask)
            s2, i2 = sharded.search(queries, k, keep=mask)
            np.testing.assert_array_equal(i1, i2)
            np.testing.assert_allclose(s1, s2, rtol=1e-6)
    assert sharded.ntotal == whole.ntotal and len(sharded.vectors) == len(whole.vectors)


def test_without_ray_the_executor_says_what_to_install(world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(UsageError, match=r'pip install "mmsearch\[ray\]"'):
        index_paths([world["sound"]], tmp_path / "idx", executor="ray", config=_config(), **OPTIONS)
    assert not (tmp_path / "idx").exists()  # nothing committed, nothing left behind
    with pytest.raises(UsageError, match="unknown --executor"):
        index_paths([world["sound"]], tmp_path / "idx", executor="spark", config=_config(), **OPTIONS)


def test_the_committer_takes_each_row_once_and_a_file_when_all_its_rows_are_in() -> None:
    """Rows out of order, and rows a retried task sends again (mmsearch.distributed.FileRows)."""
    from mmsearch.distributed import FileRows

    rows = FileRows()
    done = ("done", {"duration": 4.0})
    assert rows.take(7, 2) and not rows.take(7, 2)  # the same row twice: the second is dropped
    rows.end(7, 2, done)
    assert rows.complete(7) is None  # rows 0 and 1 are still missing
    assert rows.take(7, 0) and rows.complete(7) is None
    assert rows.take(7, 1) and rows.count(7) == 3
    assert rows.complete(7) == done and 7 in rows.finished
    assert not rows.take(7, 0) and not rows.take(7, 3)  # a retried task's rows after the file was committed
    assert rows.complete(7) is None  # finished once only
    assert rows.take(8, 0)
    rows.end(8, 0, ("failed", "decode", "no video stream"))
    assert rows.complete(8) == ("failed", "decode", "no video stream")


def test_a_decode_task_ends_a_file_that_cannot_be_opened_at_once(world: dict, tmp_path: Path) -> None:
    """The decode stage's rows for a file the decoder refuses end with its reason, without waiting
    for the stall timeout, and the same decoder process goes on to the next file."""
    import pickle
    import time

    from mmsearch import distributed
    from mmsearch.decode_worker import DecodeTask

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(5000))

    def rows(path: Path) -> list[tuple]:
        task = DecodeTask(speech=None, ocr_interval=None, asr_device="cpu", path=str(path), kind="video", fps=1.0, short_side=64,
                          backend="pyav", chunk_frames=16, visual=True, audio=None)
        out = distributed.decode_file({"key": 0, "task": pickle.dumps(task)}, memory_limit_mb=4096, stall_timeout=60)
        return [pickle.loads(row["message"]) for row in out]

    try:
        started = time.monotonic()
        failed = rows(broken)
        assert time.monotonic() - started < 30  # not the 60 s stall timeout
        assert len(failed) == 1 and failed[0][:2] == ("failed", "decode") and "cannot open" in failed[0][2]
        decoder = distributed._DECODER
        good = rows(next(world["media"].glob("*.mp4")))
        assert good[-1][0] == "done" and any(m[0] == "chunk" for m in good)
        assert distributed._DECODER is decoder and not decoder.dead  # reused, not replaced
    finally:
        if distributed._DECODER is not None:
            distributed._DECODER.stop()
            distributed._DECODER = None


def _ray_processes(marker: str) -> list[int]:
    """Pids of this user's Ray worker processes whose title (``ray::...``) contains ``marker``."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            title = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::") and marker in title:
            out.append(int(entry.name))
    return out


@pytest.mark.slow
def test_ray_with_four_shards_answers_as_the_local_path(world: dict, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is an extra: pip install 'mmsearch[ray]' (the test command installs it)")
    index = tmp_path / "ray4"
    report = index_paths([world["media"]], index, shards=4, executor="ray", config=_config(), **OPTIONS)
    assert len(report.indexed) == 12 and not report.failed and report.frames > 0 and report.audio_windows > 0
    assert _table_counts(index) == _table_counts(world["single"])
    assert _answers(index, world) == _answers(world["single"], world)
    verify_index(index)


@pytest.mark.slow
def test_ray_indexes_what_is_said_and_written_as_the_local_path(world: dict, tmp_path: Path) -> None:
    """Speech and on-screen text are on by default: their words are heard and read in the decode
    tasks, embedded by the actors and land in the same spaces, at the same seconds, as locally."""
    pytest.importorskip("ray", reason="Ray is an extra: pip install 'mmsearch[ray]' (the test command installs it)")
    from mmsearch.demo import _talking_video

    media = tmp_path / "talk"
    truth = _talking_video(media / "talk.mp4")
    shutil.copy(world["sound"], media / world["sound"].name)  # a file without words beside it
    (media / "broken.mp4").write_bytes(os.urandom(5000))  # and one that cannot be opened
    words = dict(model="synth-clip", device="cpu", config=_config())
    local = index_paths([media], tmp_path / "local", **words)
    ray = index_paths([media], tmp_path / "ray", shards=2, executor="ray", **words)
    assert ray.failed == local.failed and [f[0] for f in ray.failed] == [str(media / "broken.mp4")]
    assert ray.text_segments == local.text_segments > 0
    assert _table_counts(tmp_path / "ray") == _table_counts(tmp_path / "local")
    spaces = open_index(tmp_path / "ray", device="cpu").info()["spaces"]
    assert {"speech", "text"} <= set(spaces)

    def found(index_dir: Path) -> list:
        idx = open_index(index_dir, device="cpu")
        return [[(r.path, r.start, r.end, round(r.score, 5)) for r in idx.search(text=row["caption"], modality=row["modality"], k=3)]
                for row in truth]

    expected = found(tmp_path / "local")
    assert all(expected) and found(tmp_path / "ray") == expected
    verify_index(tmp_path / "ray")


@pytest.mark.slow
def test_a_ray_worker_killed_mid_ingest_costs_nothing(world: dict, tmp_path: Path) -> None:
    """SIGKILL the Ray worker running a decode task and, later, the embedding actor's process: Ray
    runs the task again and restarts the actor; nothing is lost or stored twice."""
    pytest.importorskip("ray", reason="Ray is an extra: pip install 'mmsearch[ray]' (the test command installs it)")
    import threading

    killed: dict[str, list[int]] = {"decode": [], "embed": []}
    files = []
    done = threading.Event()

    def kill_a_decoder() -> None:  # decoding runs ahead of embedding: watch for a decode task at work
        while not done.is_set() and not killed["decode"]:
            for pid in _ray_processes("FlatMap(decode_file)")[:1]:
                os.kill(pid, signal.SIGKILL)
                killed["decode"].append(pid)
            done.wait(0.005)

    def progress(event: str, data: dict) -> None:
        if event == "file":
            files.append(data["path"])
            if len(files) == 4 and not killed["embed"]:
                pids = _ray_processes("EmbedStage")
                for pid in pids[:1]:
                    os.kill(pid, signal.SIGKILL)
                killed["embed"] += pids[:1]

    index = tmp_path / "killed"
    watcher = threading.Thread(target=kill_a_decoder, daemon=True)
    watcher.start()
    try:
        report = index_paths([world["media"]], index, shards=2, executor="ray", config=_config(), progress=progress, **OPTIONS)
    finally:
        done.set()
        watcher.join()
    assert killed["decode"] and killed["embed"], f"no Ray worker was found to kill: {killed}"
    assert sorted(report.indexed) == sorted(set(report.indexed)) and len(report.indexed) == 12 and not report.failed
    assert len(files) == 12
    verify_index(index)
    check = subprocess.run([sys.executable, "-m", "mmsearch.cli", "info", "--check", "--index", str(index)],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr
    assert _table_counts(index) == _table_counts(world["single"])
    assert _answers(index, world) == _answers(world["single"], world)


# -- mmsearch serve --ray --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_shards(world: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = tmp_path_factory.mktemp("three") / "index"
    index_paths([world["media"]], index, shards=3, config=_config(), **OPTIONS)
    return index


def _router_queries(world: dict) -> list[dict]:
    captions = sorted({r["caption"] for r in world["truth"]})
    asked = []
    for caption in captions:
        for modality in ("video", "audio"):
            asked += [dict(text=caption, modality=modality), dict(text=caption, modality=modality, exhaustive=True),
                      dict(text=caption, modality=modality, videos=2, k=3)]
        asked.append(dict(text=caption, modality="video", where={"kinds": "video"}))
    return asked


def _rows(results: list) -> list:
    return [(r["path"], r["start"], r["end"], round(r["score"], 5)) for r in results]


def test_the_ray_serve_router_answers_as_one_index(world: dict, three_shards: Path) -> None:
    """The router's two rounds (stage 1 merged over shards, then stage 2 on each shard's share) give
    what one unsharded index gives, called here in one process (mmsearch.serve_ray)."""
    import asyncio

    from mmsearch.filters import media_filter
    from mmsearch.serve_ray import LocalShard, Router, ShardSearcher

    router = Router([LocalShard(ShardSearcher(str(d))) for d in shard_dirs(three_shards, 3)], str(three_shards))
    single = open_index(world["single"], device="cpu")
    compared = 0
    for query in _router_queries(world):
        where = query.pop("where", None)
        text = query.pop("text")
        got = asyncio.run(router.search(text, where=media_filter(**where) if where else None, **query))
        expected = single.search(text, where=where, **{"k": 10, **query})
        assert _rows(got["results"]) == [(r.path, r.start, r.end, round(r.score, 5)) for r in expected], (text, query)
        compared += len(expected)
    assert compared > 100
    from mmsearch.serve_ray import NotServedError

    for modality in ("speech", "text", "all", None):  # None: all spaces fused, mmsearch serve's default
        with pytest.raises(NotServedError, match="served by mmsearch serve"):
            asyncio.run(router.search("anything", modality=modality))
    with pytest.raises(UsageError, match="unknown modality") as bad:
        asyncio.run(router.search("anything", modality="bogus"))
    assert not isinstance(bad.value, NotServedError)


def test_serve_ray_refuses_what_it_cannot_serve_before_starting_ray(world: dict, three_shards: Path, tmp_path: Path) -> None:
    """No index, an unsharded index, a port in use: one line each, before a Ray cluster is started."""
    import socket

    from mmsearch.errors import IndexNotFoundError
    from mmsearch.serve_ray import serving
    from mmsearch.server import ServeConfig

    with pytest.raises(IndexNotFoundError):
        with serving(ServeConfig(index=tmp_path / "nosuch")):
            pass
    with pytest.raises(UsageError, match="not sharded"):
        with serving(ServeConfig(index=world["single"])):
            pass
    with socket.socket() as held:  # another server (mmsearch serve, or a second serve --ray) on the port
        held.bind(("127.0.0.1", 0))
        held.listen()
        with pytest.raises(UsageError, match="cannot listen on 127.0.0.1"):
            with serving(ServeConfig(index=three_shards, port=held.getsockname()[1])):
                pass


def test_an_unreachable_ray_address_is_refused_at_once(world: dict, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is an extra: pip install 'mmsearch[ray]' (the test command installs it)")
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(UsageError, match=f"no Ray cluster answers at --ray-address 127.0.0.1:{port}"):
        index_paths([world["media"]], tmp_path / "i", executor="ray", ray_address=f"127.0.0.1:{port}", config=_config(), **OPTIONS)
    assert time.monotonic() - started < 30  # Ray alone retries for minutes
    assert not (tmp_path / "i").exists()
    with pytest.raises(UsageError, match="--ray-address is for --executor ray"):  # not ignored without Ray
        index_paths([world["media"]], tmp_path / "i", ray_address="auto", config=_config(), **OPTIONS)
    assert not (tmp_path / "i").exists()


def test_a_sharded_index_says_why_it_has_no_common_space(world: dict, three_shards: Path) -> None:
    with pytest.raises(UsageError, match="sharded and has no common space") as refused:
        open_index(three_shards, device="cpu").search(audio=world["sound"], modality="video")
    assert "train-space --index" not in str(refused.value)  # not advice that train-space refuses


@pytest.mark.slow
def test_serve_ray_answers_over_http(world: dict, three_shards: Path) -> None:
    """One Ray Serve deployment per shard and a router, on a local Ray cluster, over HTTP."""
    pytest.importorskip("ray.serve", reason="Ray Serve is an extra: pip install 'mmsearch[ray]' (the test command installs it)")
    import socket

    import httpx

    from mmsearch.serve_ray import serving
    from mmsearch.server import ServeConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    single = open_index(world["single"], device="cpu")
    caption = next(r["caption"] for r in world["truth"] if r["modality"] == "video")
    with serving(ServeConfig(index=three_shards, port=port, device="cpu")) as (url, token):
        assert token is None
        health = httpx.get(url + "api/health", timeout=60).json()
        assert health["shards"] == 3 and health["generation"] == read_manifest(three_shards)["generation"] >= 3
        with pytest.raises(UsageError, match="cannot listen"):  # a second serve --ray on the port would split its traffic
            with serving(ServeConfig(index=three_shards, port=port, device="cpu")):
                pass
        for modality, exhaustive in (("video", False), ("audio", False), ("video", True)):
            answer = httpx.get(url + "api/search", params={"q": caption, "modality": modality, "k": 5, "exhaustive": exhaustive},
                               timeout=120)
            assert answer.status_code == 200, answer.text
            expected = single.search(caption, modality=modality, k=5, exhaustive=exhaustive)
            assert _rows(answer.json()["results"]) == [(r.path, r.start, r.end, round(r.score, 5)) for r in expected]
        words = httpx.get(url + "api/search", params={"q": caption, "modality": "speech"}, timeout=60)
        assert words.status_code == 501 and "mmsearch serve" in words.json()["detail"]
        fused = httpx.get(url + "api/search", params={"q": caption}, timeout=60)  # no modality: fused, as mmsearch serve
        assert fused.status_code == 501, fused.text
        bogus = httpx.get(url + "api/search", params={"q": caption, "modality": "bogus"}, timeout=60)
        assert bogus.status_code == 422  # refused by validation, as mmsearch serve does
        foreign = httpx.get(url + "api/search", params={"q": caption}, headers={"Host": "evil.example"}, timeout=60)
        assert foreign.status_code in (400, 403)  # another site's name rebound to this machine
