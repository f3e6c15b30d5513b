"""Store round trip, two-stage retrieval, idempotent re-index, encoder mismatch, bad files (Python API)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import mmsearch
from conftest import GREEN, RED, write_video
from mmsearch.errors import EncoderMismatchError, IndexCorruptError, IndexNotFoundError, UsageError
from mmsearch.media import frame_at
from mmsearch.retrieval import localize


@pytest.fixture(scope="module")
def built(video_corpus, random_clip_checkpoint, tmp_path_factory):
    index_dir = tmp_path_factory.mktemp("idx") / "index"
    report = mmsearch.index_paths(
        [video_corpus["root"]], index_dir, model="synth-clip", pretrained=str(random_clip_checkpoint), device="cpu"
    )
    return {"index": index_dir, "report": report, **video_corpus}


def test_query_probes_are_the_encoders_text_vectors_of_generic_captions_made_with_the_first_index(
        built, video_corpus, random_clip_checkpoint, tmp_path, monkeypatch):
    """Tuning material for the inverted files of a large library (mmsearch.probes): the visual
    encoder's own text vectors of the shipped captions, the same as a query of those words embeds.
    A library searched exactly has no index to tune and never pays for them (issue #18)."""
    from mmsearch import indexes
    from mmsearch.indexes import IndexRecipe
    from mmsearch.probes import probe_captions
    from mmsearch.store import IndexWriter

    def probes_of(index: Path) -> tuple[np.ndarray | None, dict]:
        writer = IndexWriter(index)
        try:
            probes = writer.query_probes("visual")
            return None if probes is None else np.array(probes), writer.spaces["visual"]["indexes"]
        finally:
            writer.close()

    assert probes_of(built["index"])[0] is None  # exact search: nothing to tune
    # the same corpus where every table gets an inverted file, as a large library's would
    monkeypatch.setattr(indexes, "choose_recipe", lambda n, dim, **targets: IndexRecipe(
        "IVF1,Flat", {"nprobe": 1, "target_recall": 0.95, "latency_ms": 50}, n) if n else IndexRecipe("Flat", {}, n))
    index = tmp_path / "index"
    mmsearch.index_paths([video_corpus["root"]], index, model="synth-clip", pretrained=str(random_clip_checkpoint),
                         device="cpu")
    probes, tables = probes_of(index)
    idx = mmsearch.open_index(index, device="cpu")
    captions = probe_captions("visual")
    assert probes.shape == (len(captions), idx.info()["spaces"]["visual"]["encoder"]["dim"])
    np.testing.assert_allclose(probes[:5], idx.embed_queries(text=captions[:5]), atol=1e-5)
    assert tables["moments"]["recipe"]["params"]["query_probes"] == len(captions)  # and tuned on them


def _query_frame(path: Path, t: float, out: Path) -> Path:
    from PIL import Image

    _, frame = frame_at(path, t)
    Image.fromarray(frame).save(out)
    return out


def test_report_counts(built):
    r = built["report"]
    assert sorted(Path(p).name for p in r.indexed) == ["a.mp4", "b.mp4", "c.webm", "photo.png"]
    # sampled at 1 fps: 10 + 10 + 8 frames and the photo; of each run of one colour only its first
    # frame is embedded, the repeats after it are skipped (mmsearch.frameskip, on by default)
    runs = sum(len(segs) for segs in built["specs"].values())
    assert r.failed == [] and r.frames == runs + 1 == 9
    assert r.frames + r.repeated_frames == 10 + 10 + 8 + 1


def test_store_round_trip(built):
    idx = mmsearch.open_index(built["index"], device="cpu")
    info = idx.info()
    assert info["media"] == {"video": 3, "image": 1}
    assert info["spaces"]["visual"]["frames"] == built["report"].frames == 9  # one per colour run (repeats skipped)
    manifest = json.loads((built["index"] / "manifest.json").read_text())
    enc = manifest["spaces"]["visual"]["encoder"]["identity"]
    assert enc["model"] == "synth-clip" and enc["pretrained"].startswith("sha256:") and enc["dim"] == 64
    assert manifest["format_version"] == 2 and "torch" in manifest["library_versions"]  # 2: segments with start and end
    media = idx.snapshot.media.to_pylist()
    a = next(m for m in media if m["path"].endswith("a.mp4"))
    assert a["duration"] == pytest.approx(10.0, abs=0.11) and (a["width"], a["height"]) == (160, 120)
    assert len(a["content_hash"]) == 40 and a["size"] == os.path.getsize(a["path"])
    # frame timestamps are the stream's
    sp = idx.snapshot.spaces["visual"]
    ts, vecs = sp.frames_of(a["media_id"])
    assert ts.tolist() == pytest.approx([0, 3, 7])  # red 0-3 s, green 3-7 s, blue 7-10 s: repeats skipped
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    # each frame is a segment: shown from its pts until the next embedded frame's (so a kept frame
    # covers the repeats skipped after it), the last one until the end
    starts, ends, same = sp.segments_of(a["media_id"])
    assert starts.tolist() == pytest.approx([0, 3, 7])
    assert ends.tolist() == pytest.approx([3, 7, a["duration"]])
    np.testing.assert_array_equal(same, vecs)


@pytest.mark.parametrize("video,t", [("a.mp4", 4.5), ("b.mp4", 7.0), ("sub/c.webm", 0.5), ("a.mp4", 9.0)])
@pytest.mark.parametrize("exhaustive", [False, True])
def test_query_by_frame_finds_video_and_moment(built, tmp_path, video, t, exhaustive):
    query = _query_frame(built["root"] / video, t, tmp_path / "q.png")
    idx = mmsearch.open_index(built["index"], device="cpu")
    results = idx.search(image=query, k=5, exhaustive=exhaustive)
    top = results[0]
    assert top.path == str(built["root"] / video)
    assert top.start <= t <= top.end
    assert top.modality == "video"
    # the moment is the segment the frame comes from, not the whole video
    seg = next((s, e) for s, e in built["bounds"][video] if s <= t < e)
    assert top.end - top.start <= (seg[1] - seg[0]) + 2.0
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_query_by_image_finds_image(built):
    idx = mmsearch.open_index(built["index"], device="cpu")
    top = idx.search(image=built["root"] / "photo.png", k=3)[0]
    assert top.path.endswith("photo.png") and top.modality == "image" and top.start == 0.0


def test_localize_finds_plateau_and_bounds():
    t = np.arange(20.0)
    s = np.full(20, 0.1)
    s[6:11] = 0.9  # event from 6 to 11 s
    s[15] = 0.3
    segs = localize(t, s, duration=20.0)
    start, end, score = segs[0]
    assert (start, end) == (5.5, 10.5)
    assert score == pytest.approx(0.9)  # the plateau's height, not the lone 0.3 spike or the 0.1 floor
    # a flat curve is one segment spanning the media
    assert localize(t, np.full(20, 0.4), duration=20.0) == [(0.0, 20.0, pytest.approx(0.4))]


def test_reindex_is_idempotent_and_detects_changes(built, random_clip_checkpoint, tmp_path):
    root = tmp_path / "media"
    shutil.copytree(built["root"], root)
    index_dir = tmp_path / "index"
    kw = dict(model="synth-clip", pretrained=str(random_clip_checkpoint), device="cpu")
    first = mmsearch.index_paths([root], index_dir, **kw)
    assert len(first.indexed) == 4
    before = mmsearch.open_index(index_dir).snapshot
    again = mmsearch.index_paths([root], index_dir, **kw)
    assert again.indexed == [] and again.unchanged == 4
    after = mmsearch.open_index(index_dir).snapshot
    assert len(after.media) == len(before.media) == 4
    assert after.spaces["visual"].frame_rows.num_rows == before.spaces["visual"].frame_rows.num_rows
    # without --model the index keeps its encoder
    assert mmsearch.index_paths([root], index_dir).unchanged == 4
    # rename one, copy another, delete a third, add a new one
    os.rename(root / "a.mp4", root / "renamed.mp4")
    shutil.copy(root / "b.mp4", root / "b-copy.mp4")
    os.remove(root / "sub" / "c.webm")
    write_video(root / "new.mp4", [(GREEN, 2.0), (RED, 2.0)])
    third = mmsearch.index_paths([root], index_dir, **kw)
    assert [Path(p).name for p in third.indexed] == ["new.mp4"]
    assert [(Path(a).name, Path(b).name) for a, b in third.moved] == [("a.mp4", "renamed.mp4")]
    assert [Path(p).name for p in third.duplicates] == ["b-copy.mp4"]
    assert [Path(p).name for p in third.removed] == ["c.webm"]
    idx = mmsearch.open_index(index_dir)
    paths = sorted(Path(r["path"]).name for r in idx.snapshot.media.to_pylist())
    assert paths == ["b-copy.mp4", "b.mp4", "new.mp4", "photo.png", "renamed.mp4"]
    # renamed a, b once, photo, new: one frame per colour run, repeats skipped
    assert idx.info()["spaces"]["visual"]["frames"] == 3 + 2 + 1 + 2
    # moved into a subfolder and only that subfolder indexed: a move, the old path goes
    (root / "later").mkdir()
    os.rename(root / "renamed.mp4", root / "later" / "renamed.mp4")
    fourth = mmsearch.index_paths([root / "later"], index_dir, **kw)
    assert [(Path(a).name, Path(b).parent.name) for a, b in fourth.moved] == [("renamed.mp4", "later")] and fourth.removed == []
    paths = sorted(os.path.relpath(r["path"], root) for r in mmsearch.open_index(index_dir).snapshot.media.to_pylist())
    assert paths == ["b-copy.mp4", "b.mp4", "later/renamed.mp4", "new.mp4", "photo.png"]
    # touched (a new mtime, the same bytes): unchanged, not a duplicate of itself
    os.utime(root / "b.mp4", (1_700_000_000, 1_700_000_000))
    fifth = mmsearch.index_paths([root], index_dir, **kw)
    assert fifth.unchanged == 5 and fifth.duplicates == [] and fifth.moved == [] and fifth.indexed == []
    again = mmsearch.index_paths([root], index_dir, **kw)  # the new mtime was recorded: not hashed again
    assert again.unchanged == 5 and again.timings["hash"] == 0


def test_encoder_mismatch_is_refused(built, tmp_path):
    import open_clip
    import torch

    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": open_clip.create_model("synth-clip").state_dict()}, other)
    with pytest.raises(EncoderMismatchError, match="built with encoder synth-clip"):
        mmsearch.index_paths([built["root"]], built["index"], model="synth-clip", pretrained=str(other))
    with pytest.raises(EncoderMismatchError):
        mmsearch.open_index(built["index"], model="synth-clip", pretrained=str(other)).search("a red circle")


def test_bad_files_are_skipped_and_reported(random_clip_checkpoint, tmp_path):
    root = tmp_path / "m"
    write_video(root / "good.mp4", [(RED, 2.0)])
    (root / "garbage.mp4").write_bytes(os.urandom(5000))
    (root / "empty.mkv").write_bytes(b"")
    good = (root / "good.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 3])
    report = mmsearch.index_paths(
        [root], tmp_path / "idx", model="synth-clip", pretrained=str(random_clip_checkpoint), device="cpu"
    )
    assert [Path(p).name for p in report.indexed] == ["good.mp4"]
    failed = {Path(p).name: (stage, reason) for p, stage, reason in report.failed}
    assert set(failed) == {"garbage.mp4", "empty.mkv", "truncated.mp4"}
    assert "0 bytes" in failed["empty.mkv"][1]
    idx = mmsearch.open_index(tmp_path / "idx")
    assert len(idx.snapshot.failures) == 3
    # failed files are not retried while unchanged
    again = mmsearch.index_paths([root], tmp_path / "idx")
    assert again.skipped_failed == 3 and again.failed == []


def test_usage_errors(built, tmp_path):
    with pytest.raises(IndexNotFoundError, match="no mmsearch index"):
        mmsearch.open_index(tmp_path / "nowhere")
    idx = mmsearch.open_index(built["index"])
    with pytest.raises(UsageError, match="empty query"):
        idx.search("   ")
    with pytest.raises(UsageError):
        mmsearch.index_paths([tmp_path / "missing"], tmp_path / "i2")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(UsageError, match="no media files"):
        mmsearch.index_paths([tmp_path / "emptydir"], tmp_path / "i3", model="synth-clip")
    assert not (tmp_path / "i3").exists()  # a first run that committed nothing leaves no empty index behind


def test_truncated_index_file_raises_corrupt_error(built, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(built["index"], copy)
    victim = next((copy / "data").glob("visual-moments-s*.npy"))  # the moment vectors exact search scans
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(IndexCorruptError, match=victim.name):
        mmsearch.open_index(copy)


def test_decoder_processes_default_to_two_on_cpu_and_scale_beside_a_gpu(monkeypatch) -> None:
    from types import SimpleNamespace

    import torch

    from mmsearch.ingest import IngestConfig, default_workers

    on_cpu, on_gpu = SimpleNamespace(device=torch.device("cpu")), SimpleNamespace(device=torch.device("cuda"))
    for cores, on_cpu_only, with_gpu in ((1, 1, 1), (2, 2, 1), (16, 2, 4), (64, 2, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert default_workers([on_cpu]) == on_cpu_only  # a second decoder fills the cores the first leaves idle
        assert default_workers([on_cpu, on_gpu]) == with_gpu
    with pytest.raises(UsageError, match="--workers"):
        IngestConfig(workers=0)


def test_one_index_serves_threads_with_the_answers_it_gives_alone(built, tmp_path):
    """A server shares one Index between threads: concurrent searches (first use of the encoder
    included) return exactly what the same searches return one after another."""
    import threading

    idx = mmsearch.open_index(built["index"], device="cpu")
    queries = [_query_frame(built["root"] / v, t, tmp_path / f"q{i}.png") for i, (v, t) in
               enumerate([("a.mp4", 1.0), ("a.mp4", 8.0), ("b.mp4", 2.0), ("b.mp4", 7.0), ("sub/c.webm", 5.0)])]
    texts = ["a red circle", "a blue square", "a yellow triangle"]
    got: dict[tuple[int, int], list] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i, q in enumerate(queries):
                got[(n, i)] = idx.search(image=q, k=3)
            for j, text in enumerate(texts):
                got[(n, 100 + j)] = idx.search(text, k=3, modality="all", audio_weight=0.3)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    alone = mmsearch.open_index(built["index"], device="cpu")
    for i, q in enumerate(queries):
        want = alone.search(image=q, k=3)
        assert all(got[(n, i)] == want for n in range(4))
    for j, text in enumerate(texts):
        want = alone.search(text, k=3, modality="all", audio_weight=0.3)
        assert all(got[(n, 100 + j)] == want for n in range(4))
