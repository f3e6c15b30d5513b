"""Crash safety, resumption, concurrent readers, corruption detection and the bad-input catalogue."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import mmsearch
from conftest import BLUE, GREEN, RED, WHITE, YELLOW, write_video
from mmsearch.errors import IndexCorruptError
from mmsearch.ingest import IngestConfig
from mmsearch.store import MANIFEST, open_snapshot, verify_files

COLOURS = [RED, GREEN, BLUE, YELLOW, WHITE]


def _corpus(root: Path, n: int) -> Path:
    for i in range(n):
        segs = [(COLOURS[(i + j) % 5], 1.0 + (i + j) % 3) for j in range(3)]
        write_video(root / f"v{i:02d}.mp4", segs, size=(96, 64), fps=5)
    return root


def _content(index_dir: Path) -> dict[tuple[str, float], np.ndarray]:
    """(path, frame time) -> vector: the logical content of an index, independent of its file layout."""
    snap = open_snapshot(index_dir)
    space = snap.spaces["visual"]
    out = {}
    for media_id, row in snap.media_rows().items():
        ts, vecs = space.frames_of(media_id)
        for t, v in zip(ts, vecs):
            key = (row["path"], round(float(t), 6))
            assert key not in out, f"duplicate frame row {key}"
            out[key] = v
    return out


def _index_command(root: Path, index_dir: Path, ckpt: Path) -> list[str]:
    return [
        sys.executable, "-c", "from mmsearch.cli import main; main()",
        "index", str(root), "--index", str(index_dir), "--model", "synth-clip", "--pretrained", str(ckpt),
        "--device", "cpu", "--commit-every", "0", "--quiet", "--no-audio",
    ]


def _generation(index_dir: Path) -> int:
    try:  # the manifest is replaced atomically, so a read sees one whole generation or none
        return int(json.loads((index_dir / MANIFEST).read_text())["generation"])
    except FileNotFoundError:
        return 0


def _run_watching_generations(cmd: list[str], index_dir: Path, *, kill_at=None, timeout: float = 300.0):
    """Run ``cmd``, polling the committed generation; SIGKILL it once ``kill_at(generation, elapsed)`` says so.

    Returns (killed, [(seconds since start, generation) for every generation seen change]).
    """
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = [(0.0, _generation(index_dir))]
    while proc.poll() is None:
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{cmd} ran past {timeout}s")
        gen = _generation(index_dir)
        if gen != seen[-1][1]:
            seen.append((elapsed, gen))
        if kill_at is not None and kill_at(gen, elapsed):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True, seen
        time.sleep(0.002)
    assert proc.returncode == 0, proc.stderr.read().decode()
    return False, seen


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_clean_build(tmp_path, random_clip_checkpoint):
    """Qdrant-crasher style: SIGKILL `mmsearch index` at random moments, resume, compare with a clean build.

    The kill moments are drawn inside the window where commits happen (a random number
    of commits into the run, then a random fraction of one commit interval), not as a
    fraction of the whole run: process start-up and shutdown dominate a run's wall time
    on a fast machine, and kills landing there would test nothing.
    """
    root = _corpus(tmp_path / "media", 10)
    clean = tmp_path / "clean"
    _, timeline = _run_watching_generations(_index_command(root, clean, random_clip_checkpoint), clean)
    expected = _content(clean)
    commits = [t for t, _ in timeline[1:]]
    assert len(commits) >= 5, f"expected one commit per file, saw generations {timeline}"
    interval = max((b - a for a, b in zip(commits, commits[1:])), default=0.1)

    crashed = tmp_path / "crashed"
    rng = random.Random(1234)
    kills = 0
    generations = set()
    for _ in range(40):
        first = _generation(crashed)
        target = first + rng.randint(0, 3)  # 0: kill before this run commits anything
        delay = rng.uniform(0.0, interval)
        state = {}

        def kill_at(gen, elapsed, target=target, delay=delay, state=state):
            if gen >= target and "since" not in state:
                state["since"] = elapsed
            return "since" in state and elapsed - state["since"] >= delay

        killed, _ = _run_watching_generations(_index_command(root, crashed, random_clip_checkpoint), crashed, kill_at=kill_at)
        if killed:
            kills += 1
            if (crashed / MANIFEST).exists():  # whatever was committed is complete and right
                manifest = json.loads((crashed / MANIFEST).read_text())
                verify_files(crashed, manifest, full=True)
                generations.add(manifest["generation"])
                for key, vec in _content(crashed).items():
                    np.testing.assert_array_equal(vec, expected[key])
            continue
        if kills >= 10:
            break
        shutil.rmtree(crashed, ignore_errors=True)  # finished before ten kills: start over
    assert kills >= 10, f"only {kills} kills happened"
    got = _content(crashed)
    assert set(got) == set(expected)  # nothing lost, nothing duplicated (_content refuses duplicates)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    assert len(generations) >= 2  # kills landed after different commits
    assert not [p.name for p in (crashed / "data").iterdir() if p.name.startswith(".tmp-")]


def test_readers_during_updates_see_whole_generations(tmp_path, random_clip_checkpoint):
    root = _corpus(tmp_path / "media", 3)
    index_dir = tmp_path / "index"
    kw = dict(model="synth-clip", pretrained=str(random_clip_checkpoint), device="cpu")
    mmsearch.index_paths([root], index_dir, **kw)
    query = mmsearch.open_index(index_dir).embed_queries(text=["a red circle"])
    errors: list[BaseException] = []
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                idx = mmsearch.open_index(index_dir)
                n_media = len(idx.snapshot.media_rows())
                n_frames = idx.snapshot.spaces["visual"].frame_rows.num_rows
                results = idx.search_vectors(query, k=3)
                assert results[0], "no results"
                # frames and media of one generation agree: 3 frames per second of video, none missing
                assert n_frames == idx.snapshot.manifest["counts"]["visual_frames"]
                seen.append((idx.snapshot.generation, n_media))
            except BaseException as exc:  # noqa: BLE001 - report any failure of a reader
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(4):
        write_video(root / f"extra{i}.mp4", [(COLOURS[i], 2.0)], size=(96, 64), fps=5)
        mmsearch.index_paths([root], index_dir, config=IngestConfig(commit_seconds=0.0), **kw)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len({g for g, _ in seen}) >= 2  # readers saw several generations
    for generation, n_media in seen:
        assert n_media == 3 + (generation - 1)  # each generation adds exactly one file


def test_altered_or_truncated_files_raise_index_corrupt_error(tmp_path, random_clip_checkpoint):
    root = _corpus(tmp_path / "media", 2)
    index_dir = tmp_path / "index"
    mmsearch.index_paths([root], index_dir, model="synth-clip", pretrained=str(random_clip_checkpoint), device="cpu")
    manifest = json.loads((index_dir / MANIFEST).read_text())
    for rel in manifest["files"]:
        copy = tmp_path / f"copy-{Path(rel).name}"
        shutil.copytree(index_dir, copy)
        target = copy / rel
        data = bytearray(target.read_bytes())
        if rel.endswith(".npy"):
            target.write_bytes(bytes(data[: len(data) // 2]))  # truncated
        else:
            data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
            target.write_bytes(bytes(data))
        with pytest.raises(IndexCorruptError, match=Path(rel).name):
            mmsearch.open_index(copy)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MANIFEST).write_text("{not json")
    with pytest.raises(IndexCorruptError, match="manifest.json"):
        mmsearch.open_index(tmp_path / "bad")


def test_leftover_temporary_files_are_ignored_and_cleaned(tmp_path, random_clip_checkpoint):
    root = _corpus(tmp_path / "media", 2)
    index_dir = tmp_path / "index"
    kw = dict(model="synth-clip", pretrained=str(random_clip_checkpoint), device="cpu")
    mmsearch.index_paths([root], index_dir, **kw)
    (index_dir / ".tmp-manifest").write_text("half")
    (index_dir / "data" / ".tmp-abc.npy").write_bytes(b"half")
    (index_dir / "data" / "visual-s999999.npy").write_bytes(b"orphan of a crashed commit")
    assert len(mmsearch.open_index(index_dir).snapshot.media) == 2  # readers ignore them
    write_video(root / "new.mp4", [(RED, 1.0)], size=(96, 64), fps=5)
    mmsearch.index_paths([root], index_dir, **kw)
    names = {p.name for p in (index_dir / "data").iterdir()} | {p.name for p in index_dir.iterdir()}
    assert not any(n.startswith(".tmp-") for n in names) and "visual-s999999.npy" not in names


def _vfr_video(path: Path) -> list[float]:
    import av
    from fractions import Fraction

    pts = [0.0, 0.5, 0.6, 2.3, 2.4, 4.1]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=50)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.time_base = Fraction(1, 1000)
        for i, t in enumerate(pts):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 30 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = int(t * 1000), Fraction(1, 1000)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return pts


def test_bad_input_catalogue(tmp_path, random_clip_checkpoint):
    """Every kind of bad input costs only itself: the run goes on and the index stays consistent."""
    root = tmp_path / "media"
    good = root / "good.mp4"
    write_video(good, [(RED, 2.0), (BLUE, 2.0)], size=(96, 64), fps=5)
    data = good.read_bytes()
    for i, cut in enumerate((100, len(data) // 2, len(data) - 50)):
        (root / f"truncated-{i}.mp4").write_bytes(data[:cut])
    moov = data.find(b"moov")
    (root / "no-moov.mp4").write_bytes(data[: moov - 4] + b"\0" * 8 + data[moov + 4 :] if moov > 0 else data[:10])
    (root / "random.mkv").write_bytes(np.random.default_rng(0).bytes(30000))
    (root / "zero.mp4").write_bytes(b"")
    import av

    with av.open(str(root / "zero-duration.mp4"), "w") as out:  # a video stream with no frame at all
        stream = out.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
    write_video(root / "with audio.mp4", [(GREEN, 2.0)], size=(96, 64), fps=5, audio=True)
    write_video(root / "unicodé 動画.mp4", [(YELLOW, 2.0)], size=(96, 64), fps=5)
    bad_name = os.fsdecode(b"latin1-\xe9t\xe9.mp4")
    write_video(root / bad_name, [(WHITE, 2.0)], size=(96, 64), fps=5)
    write_video(root / "huge.mp4", [(BLUE, 1.0)], size=(3840, 2160), fps=2)
    _vfr_video(root / "vfr.mkv")
    locked = root / "locked.mp4"
    write_video(locked, [(GREEN, 1.0)], size=(96, 64), fps=5)
    locked.chmod(0)
    (root / "loop").mkdir()
    os.symlink(root, root / "loop" / "back")
    try:
        report = mmsearch.index_paths(
            [root], tmp_path / "index", model="synth-clip", pretrained=str(random_clip_checkpoint), device="cpu"
        )
    finally:
        locked.chmod(stat.S_IRUSR | stat.S_IWUSR)
    indexed = {Path(p).name for p in report.indexed}
    failed = {Path(p).name: (stage, reason) for p, stage, reason in report.failed}
    assert {"good.mp4", "with audio.mp4", "unicodé 動画.mp4", bad_name, "huge.mp4", "vfr.mkv"} <= indexed
    assert {"random.mkv", "zero.mp4", "truncated-0.mp4", "zero-duration.mp4"} <= set(failed)
    if os.geteuid() != 0:  # root reads any file
        assert failed["locked.mp4"][0] == "read"
    assert set(indexed) | set(failed) == {p.name for p in root.iterdir() if p.is_file()}
    idx = mmsearch.open_index(tmp_path / "index")
    rows = {Path(r["path"]).name: r for r in idx.snapshot.media_rows().values()}
    ts, _ = idx.snapshot.spaces["visual"].frames_of(rows["vfr.mkv"]["media_id"])
    # on screen at t = 0, 1, 2, 3, 4 (pts 0, .5, .6, 2.3, 2.4, 4.1): 0.0, 0.6, 0.6 (kept once), 2.4, 2.4, then 4.1 last
    assert ts.tolist() == pytest.approx([0.0, 0.6, 2.4, 4.1], abs=1e-3)
    assert (rows["huge.mp4"]["width"], rows["huge.mp4"]["height"]) == (3840, 2160)
    assert os.fsencode(next(p for p in idx.snapshot.media_rows().values() if "latin1" in p["path"])["path"]).endswith(b"\xe9t\xe9.mp4")
    # the failures table keeps path, stage and reason
    failures = {Path(r["path"]).name: r for r in idx.snapshot.failures.to_pylist()}
    assert failures["random.mkv"]["stage"] == "decode" and failures["random.mkv"]["reason"]
    # --retry-failed tries them again; they fail again, nothing else changes
    again = mmsearch.index_paths([root], tmp_path / "index", config=IngestConfig(retry_failed=True))
    assert again.indexed == [] and {Path(p).name for p, _, _ in again.failed} >= {"random.mkv", "zero.mp4"}
