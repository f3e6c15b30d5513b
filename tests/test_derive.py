"""The derive stage: commits add to the trained indexes, removed media are tombstones, old indexes upgrade."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import mmsearch
from mmsearch.retrieval import search_space
from mmsearch import derive
from mmsearch.derive import Deriver, frame_segments
from mmsearch.errors import IndexCorruptError, IndexFormatError
from mmsearch.indexes import IndexRecipe, VectorIndex
from mmsearch.moments import MomentConfig
from mmsearch.store import MANIFEST, IndexWriter, open_snapshot, plan_media_deltas, verify_files

DIM = 32
DATA = Path(__file__).resolve().parent / "data"
ENCODER = {"spec": {"family": "test", "model": "random", "pretrained": None, "options": {}}, "identity": {"model": "random", "dim": DIM}}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _ivf(n: int, dim: int) -> IndexRecipe:
    """An IVF recipe from 500 live rows on (exact below), re-chosen when the size leaves its range."""
    if n < 500:
        return IndexRecipe("Flat", {}, n)
    return IndexRecipe("IVF16,PQ8x4fs,RFlat", {"nprobe": 4, "k_factor_rf": 8, "target_recall": 0.95, "latency_ms": 50}, n)


class Library:
    """Media items of 20 one-second frames, each a topic of its own, added through a Deriver."""

    def __init__(self, root: Path, *, background: bool = False) -> None:
        self.writer = IndexWriter(root)
        self.writer.ensure_space("visual", ENCODER, DIM, anchor="start")
        self.deriver = Deriver(self.writer, moments=MomentConfig(4.0, 2.0), recipe_for=_ivf, background=background)
        self.rng = np.random.default_rng(0)
        self.topics: dict[int, np.ndarray] = {}
        self.next_id = 0

    def add(self, count: int) -> list[int]:
        ids = []
        for _ in range(count):
            media_id, self.next_id = self.next_id, self.next_id + 1
            topic = _unit(self.rng.standard_normal(DIM))
            frames = _unit(topic + 0.3 * self.rng.standard_normal((20, DIM)) / np.sqrt(DIM))
            self.topics[media_id] = topic
            self.writer.put_path({
                "media_id": media_id, "path": f"/m/{media_id}.mp4", "size": 1, "mtime": 0.0, "content_hash": f"{media_id:040x}",
                "kind": "video", "duration": 20.0, "width": 8, "height": 8, "spaces": "visual",
            })
            starts, ends = frame_segments(np.arange(20.0), duration=20.0)
            self.deriver.add_segments("visual", media_id, starts, ends, frames, duration=20.0)
            ids.append(media_id)
        return ids

    def close(self) -> None:
        self.deriver.close()
        self.writer.close()


def _top_media(root: Path, queries: np.ndarray, k: int = 1) -> list[list[int]]:
    """The media owning each query's best moments, through the moment index (the exhaustive path)."""
    space = open_snapshot(root).spaces["visual"]
    _, rows = space.moment_index.search(queries, k)
    media = space.moments.column("media_id").to_numpy()
    return [[int(media[r]) for r in row if r >= 0] for row in rows]


def test_frame_segments_end_where_the_next_frame_starts():
    starts, ends = frame_segments(np.array([0.0, 0.5, 1.5]), duration=3.0)
    assert starts.tolist() == [0.0, 0.5, 1.5] and ends.tolist() == [0.5, 1.5, 3.0]
    _, ends = frame_segments(np.array([0.0, 1.0, 2.0]), duration=0.0)  # no duration known: one step past the last
    assert ends.tolist() == [1.0, 2.0, 3.0]


def test_a_commit_adds_to_the_trained_index_and_reads_no_old_vector(tmp_path, monkeypatch):
    lib = Library(tmp_path / "idx")
    lib.add(60)  # 60 x 9 = 540 moments: an IVF index is trained
    lib.deriver.commit()
    entry = lib.writer.spaces["visual"]
    assert entry["recipe"]["factory"] == "IVF16,PQ8x4fs,RFlat" and entry["recipe"]["params"]["retrained"] is True
    first_file = entry["indexes"]["moments"]["file"]

    builds, added_rows = [], []
    monkeypatch.setattr(derive, "_build", lambda *a, **k: builds.append(a) or pytest.fail("retrained within range"))
    real_add = VectorIndex.add
    monkeypatch.setattr(VectorIndex, "add", lambda self, vectors, **kw: added_rows.append(len(vectors)) or real_add(self, vectors, **kw))
    added = lib.add(20)  # +180 moments: within twice the size the index was chosen for
    lib.deriver.commit()
    entry = lib.writer.spaces["visual"]
    assert not builds
    assert added_rows == [180]  # the new moment rows, nothing already indexed (the 80 media rows stay exact)
    assert entry["recipe"]["params"]["retrained"] is False and entry["recipe"]["chosen_for"] == 540
    assert entry["indexes"]["moments"]["rows"] == 720 == entry["derived"]["n_moments"]
    assert entry["indexes"]["moments"]["file"] != first_file  # a new file for the new generation, old one kept for readers
    assert (tmp_path / "idx" / first_file).exists()
    # the new media are found through the index, not by an exact scan of a tail
    queries = np.stack([lib.topics[m] for m in added])
    assert [row[0] for row in _top_media(tmp_path / "idx", queries)] == added
    verify_files(tmp_path / "idx", json.loads((tmp_path / "idx" / MANIFEST).read_text()), full=True)
    lib.close()


def test_a_background_build_is_adopted_by_a_later_commit(tmp_path):
    lib = Library(tmp_path / "idx", background=True)
    lib.add(60)
    gen = lib.deriver.commit(wait=False)  # the first IVF is trained in a thread; the rows are searched exactly meanwhile
    snap = open_snapshot(tmp_path / "idx")
    assert snap.generation == gen
    assert mmsearch.open_index(tmp_path / "idx").info()["spaces"]["visual"]["moments_exact"] == 60 * 9
    everything = _top_media(tmp_path / "idx", np.stack([lib.topics[m] for m in range(60)]))
    assert [row[0] for row in everything] == list(range(60))
    lib.add(5)
    lib.deriver.commit(wait=True)
    entry = json.loads((tmp_path / "idx" / MANIFEST).read_text())["spaces"]["visual"]
    assert entry["indexes"]["moments"]["file"] and entry["indexes"]["moments"]["rows"] == 65 * 9
    assert [row[0] for row in _top_media(tmp_path / "idx", np.stack([lib.topics[m] for m in range(65)]))] == list(range(65))
    lib.close()


def test_removed_media_are_skipped_then_compacted_away(tmp_path):
    lib = Library(tmp_path / "idx")
    lib.add(80)
    lib.deriver.commit()
    for media_id in (3, 7):
        lib.writer.remove_path(f"/m/{media_id}.mp4")
    lib.deriver.commit()
    entry = lib.writer.spaces["visual"]
    assert entry["tombstones"] == [3, 7] and entry["derived"]["n_media"] == 78
    info = mmsearch.open_index(tmp_path / "idx").info()["spaces"]["visual"]
    assert info["removed_media"] == 2 and info["moments_exact"] == 0 and info["moments"] == 78 * 9
    space = open_snapshot(tmp_path / "idx").spaces["visual"]
    assert space.frames_of(3)[0].size == 0 and 3 not in space.live_media_ids().tolist()
    # a query aimed at a removed item never returns it, and still returns k live moments
    found = _top_media(tmp_path / "idx", np.stack([lib.topics[3], lib.topics[7]]), k=10)
    assert all(len(row) == 10 and 3 not in row and 7 not in row for row in found)
    _, media_rows = space.media_index.search(lib.topics[3][None], 5)
    assert 3 not in space.media_ids[media_rows[0]].tolist()

    for media_id in range(10, 30):  # now 22 of 80 media are gone: past the compaction share
        lib.writer.remove_path(f"/m/{media_id}.mp4")
    lib.deriver.commit()
    entry = lib.writer.spaces["visual"]
    assert entry["tombstones"] == [] and entry["derived"]["n_media"] == 58
    assert sum(s["n"] for s in entry["tables"]["segments"]) == 58 * 20  # the rows are gone from the shards
    assert entry["indexes"]["moments"]["rows"] == 58 * 9
    survivors = [m for m in range(80) if m not in (3, 7) and not 10 <= m < 30]
    assert [row[0] for row in _top_media(tmp_path / "idx", np.stack([lib.topics[m] for m in survivors]))] == survivors
    lib.close()



def test_the_delta_schedule_keeps_few_deltas_and_merges_them_into_the_base_once_they_outgrow_it():
    assert plan_media_deltas(100, [10]) == (False, 0)
    assert plan_media_deltas(100, [10, 10]) == (False, 2)  # the newer holds half the older or more: merged
    assert plan_media_deltas(100, [40, 10]) == (False, 0)
    assert plan_media_deltas(100, [40, 20, 10, 10]) == (False, 4)  # 10+10, then 20+20, then 40+40
    assert plan_media_deltas(100, [40, 20, 10, 1]) == (False, 0)
    assert plan_media_deltas(100, [60, 40]) == (True, 0)  # as many rows as the base: a new base
    assert plan_media_deltas(0, [1]) == (True, 0)


def _path_row(media_id: int, path: str, size: int) -> dict:
    return {"media_id": media_id, "path": path, "size": size, "mtime": 0.0, "content_hash": f"{media_id:040x}", "kind": "video",
            "duration": 1.0, "width": 8, "height": 8, "spaces": "visual"}


def test_path_rows_commit_as_deltas_and_read_back_as_the_library_is(tmp_path):
    """Paths added, replaced (new content: a new media id), renamed and removed over 60 commits: every generation
    reads back exactly the paths of the writer, with removed media as tombstones, while a commit that changes a
    few paths of a large library leaves the base table alone and the deltas stay few."""
    rng = np.random.default_rng(0)
    writer = IndexWriter(tmp_path / "idx")
    writer.ensure_space("visual", ENCODER, DIM)
    paths: dict[str, int] = {}  # the model: path -> media id
    committed: set[int] = set()
    tombstones: set[int] = set()
    next_id = 0
    bases, merged = set(), 0
    for step in range(60):
        before = {"media": writer.manifest.get("media"), "deltas": len(writer.manifest.get("media_deltas", []))}
        for _ in range(int(rng.integers(1, 40)) if step else 500):
            action = rng.random() if paths else 0.0
            if action < 0.6:  # a new file (some with a name that is not UTF-8)
                path, media_id = f"/lib/f{next_id:05d}\udce9.mp4" if next_id % 7 == 0 else f"/lib/f{next_id:05d}.mp4", next_id
                next_id += 1
            elif action < 0.75:  # its content changed: a new media id
                path, media_id = str(rng.choice(sorted(paths))), next_id
                next_id += 1
            elif action < 0.85:  # renamed: the same media id under a new path
                old = str(rng.choice(sorted(paths)))
                path, media_id = old + ".moved", paths.pop(old)
                writer.remove_path(old)
            else:  # deleted (sometimes a file added since the last commit)
                path = str(rng.choice(sorted(paths)))
                del paths[path]
                writer.remove_path(path)
                continue
            paths[path] = media_id
            writer.put_path(_path_row(media_id, path, media_id))
        writer.commit()
        live = set(paths.values())
        tombstones |= committed - live
        committed = live
        snapshot = open_snapshot(tmp_path / "idx")
        media = snapshot.media
        got = dict(zip((os.fsdecode(p) for p in media.column("raw_path").to_pylist()), media.column("media_id").to_pylist()))
        assert got == paths and media.column("size").to_pylist() == [paths[os.fsdecode(p)] for p in media.column("raw_path").to_pylist()]
        assert media.column("raw_path").to_pylist() == sorted(media.column("raw_path").to_pylist())
        assert set(writer.spaces["visual"]["tombstones"]) == tombstones - live
        deltas = writer.manifest["media_deltas"]
        assert len(deltas) <= int(np.log2(len(paths))) + 1
        if step and writer.manifest["media"] == before["media"]:  # the base stays until the deltas hold as many rows
            assert sum(d["rows"] for d in deltas) < writer.manifest["media_rows"]
            merged += len(deltas) <= before["deltas"]
        bases.add(writer.manifest["media"])
        verify_files(tmp_path / "idx", writer.manifest, full=True)
    assert 2 <= len(bases) <= 4 and merged >= 10  # both ways of merging happened, the base was rewritten rarely
    writer.close()
    reopened = IndexWriter(tmp_path / "idx")  # a writer opened later reads the same paths
    assert {p: r["media_id"] for p, r in reopened.paths.items()} == paths
    reopened.close()


def test_an_index_written_before_media_deltas_opens_and_its_next_commit_writes_a_base(tmp_path):
    writer = IndexWriter(tmp_path / "idx")
    for i in range(5):
        writer.put_path(_path_row(i, f"/lib/{i}.mp4", i))
    writer.commit()
    writer.close()
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    for key in ("media_deltas", "media_rows"):  # as format 2 wrote it before deltas
        del manifest[key]
    (tmp_path / "idx" / MANIFEST).write_text(json.dumps(manifest))
    assert open_snapshot(tmp_path / "idx").media.num_rows == 5
    writer = IndexWriter(tmp_path / "idx")
    writer.remove_path("/lib/0.mp4")
    writer.put_path(_path_row(9, "/lib/9.mp4", 9))
    writer.commit()
    assert writer.manifest["media_deltas"] == [] and writer.manifest["media_rows"] == 5
    assert sorted(open_snapshot(tmp_path / "idx").media.column("media_id").to_pylist()) == [1, 2, 3, 4, 9]
    writer.close()


@pytest.mark.parametrize("entries", ["garbage", None, [{"rows": 1}], [["data/x"]], [{"file": "data/g000099-media-delta.parquet", "rows": 1}],
                                     "base with rows three", "base as a delta", "failures as a delta"])
def test_an_altered_list_of_path_deltas_is_a_corrupt_index_not_a_crash(tmp_path, entries):
    """A hand-edited manifest whose path deltas are malformed, or name a listed file of another kind (the base,
    the failures), is refused on open with the file to blame, never read as an empty or odd table."""
    writer = IndexWriter(tmp_path / "idx")
    writer.put_path(_path_row(0, "/lib/0.mp4", 0))
    writer.commit()
    writer.close()
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    blamed = "manifest.json"
    if entries == "base with rows three":
        entries = [{"file": manifest["media"], "rows": "three"}]
    elif entries in ("base as a delta", "failures as a delta"):
        blamed = manifest["media"] if entries == "base as a delta" else manifest["failures"]
        entries = [{"file": blamed, "rows": 1}]
    manifest["media_deltas"] = entries
    (tmp_path / "idx" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match=f"{re.escape(blamed)} is corrupt: it"):
        open_snapshot(tmp_path / "idx")
    with pytest.raises(IndexCorruptError, match=re.escape(blamed)):
        IndexWriter(tmp_path / "idx")


def test_media_no_path_row_refers_to_are_never_found(tmp_path):
    """A generation whose path rows lost a delta (an altered manifest) holds vectors of a media item no
    path refers to: searches skip it as removed instead of failing on the missing path."""
    lib = Library(tmp_path / "idx")
    lib.add(30)
    lib.deriver.commit()
    [orphan] = lib.add(1)
    lib.deriver.commit()
    lib.close()
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    assert len(manifest["media_deltas"]) == 1
    manifest["media_deltas"] = []
    (tmp_path / "idx" / MANIFEST).write_text(json.dumps(manifest))
    idx = mmsearch.open_index(tmp_path / "idx")
    found = idx.search_vectors(lib.topics[orphan][None], k=5)[0]
    assert len(found) == 5 and all(r.media_id != orphan for r in found)
    assert orphan not in open_snapshot(tmp_path / "idx").spaces["visual"].live_media_ids().tolist()


def _end_now(idx, hit: dict, space: str) -> float:
    """A format-1 answer's end as this version reports it: format 1 cut every moment at the media's
    stored duration (its video stream's); a moment reaching it now ends where the space's last
    segment does (#14: the sound of a.mp4 runs 0.5 s past its pictures)."""
    media_id, row = next((m, r) for m, r in idx.snapshot.media_rows().items() if r["path"] == hit["path"])
    _, ends, _ = idx.snapshot.spaces[space].segments_of(media_id)
    return round(float(ends.max()), 3) if hit["end"] >= row["duration"] - 1e-3 else hit["end"]


def test_text_segments_keep_their_words_through_commits_and_compaction(tmp_path):
    """A space of what is said or written (issue #15) stores each segment's text beside its seconds."""
    writer = IndexWriter(tmp_path / "idx")
    writer.ensure_space("speech", ENCODER, DIM, anchor="centre")
    deriver = Deriver(writer, moments=MomentConfig(4.0, 2.0), recipe_for=_ivf)
    rng = np.random.default_rng(1)
    said = {0: ["good morning", "the boat left early", "see you"], 1: ["a story about the boat"], 2: ["nothing here"]}
    for media_id, lines in said.items():
        writer.put_path({
            "media_id": media_id, "path": f"/m/{media_id}.mp4", "size": 1, "mtime": 0.0, "content_hash": f"{media_id:040x}",
            "kind": "video", "duration": 30.0, "width": 8, "height": 8, "spaces": "speech",
        })
        starts = np.arange(len(lines), dtype=np.float64)[::-1] * 5.0  # given out of time order
        deriver.add_segments("speech", media_id, starts, starts + 2.0, _unit(rng.standard_normal((len(lines), DIM))),
                             duration=30.0, texts=lines)
    with pytest.raises(ValueError, match="texts"):
        writer.append("speech", "segments", 9, _unit(rng.standard_normal((1, DIM))), starts=np.zeros(1), ends=np.ones(1))
    deriver.commit(wait=True)
    space = open_snapshot(tmp_path / "idx").spaces["speech"]
    assert space.texts_of(0) == ["see you", "the boat left early", "good morning"]  # in time order, with their seconds
    assert space.segments_of(0)[0].tolist() == [0.0, 5.0, 10.0]
    assert space.texts_of(1) == ["a story about the boat"]
    writer.remove_path("/m/0.mp4")
    deriver.commit(wait=True)
    writer.compact("speech", writer.dead_media("speech"))
    deriver.commit(wait=True)
    space = open_snapshot(tmp_path / "idx").spaces["speech"]
    assert space.texts_of(0) == [] and space.texts_of(2) == ["nothing here"] and space.texts_of(1) == ["a story about the boat"]
    deriver.close()
    writer.close()
    frames = Library(tmp_path / "frames")
    frames.add(1)
    frames.deriver.commit(wait=True)
    assert open_snapshot(tmp_path / "frames").spaces["visual"].texts_of(0) is None  # a space without text says so
    frames.close()


def test_an_index_of_format_1_is_refused_with_the_command_then_upgraded(tmp_path):
    """tests/data/index-v1 was written by mmsearch before segments (format 1), with synth-clip and synth-clap."""
    root = tmp_path / "old"
    shutil.copytree(DATA / "index-v1", root)
    with pytest.raises(IndexFormatError, match=r"mmsearch upgrade --index"):
        mmsearch.open_index(root)
    assert mmsearch.api.upgrade_index(root) == 2
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["format_version"] == 2
    assert not [f for f in manifest["files"] if f.startswith("data/visual-s0")]  # format 1's shards are not used
    assert manifest["spaces"]["visual"]["anchor"] == "start" and manifest["spaces"]["audio"]["anchor"] == "centre"
    verify_files(root, manifest, full=True)
    before = json.loads((DATA / "index-v1-results.json").read_text())  # what format 1 answered
    idx = mmsearch.open_index(root, device="cpu")
    rows = idx.snapshot.media_rows()
    queries = np.load(DATA / "index-v1-queries.npz")  # the text vectors of the encoders that built it
    for text, query in zip(queries["visual_texts"], queries["visual"]):
        # format 1 ranked by the moment's own similarity; since #14 the media's score is combined in,
        # so the embeddings are checked under the ranking format 1 used (media_weight 0)
        hits = search_space(idx.snapshot.spaces["visual"], query[None], k=3, media_weight=0.0)[0]
        got = [(rows[h.media_id]["path"], round(h.start, 3), round(h.end, 3)) for h in hits]
        assert got == [(h["path"], h["start"], h["end"]) for h in before[text]]
        assert [h.score for h in hits] == pytest.approx([h["score"] for h in before[text]], abs=1e-5)
        assert [h.moment_score for h in hits] == pytest.approx([h["score"] for h in before[text]], abs=1e-5)
    hits = search_space(idx.snapshot.spaces["audio"], queries["audio"], k=3, media_weight=0.0)[0]
    got = [(rows[h.media_id]["path"], round(h.start, 3), round(h.end, 3)) for h in hits]
    assert got == [(h["path"], h["start"], _end_now(idx, h, "audio")) for h in before["audio"]]
    # the frames became segments that end where the next frame starts
    space = idx.snapshot.spaces["visual"]
    a = next(m for m, r in idx.snapshot.media_rows().items() if r["path"].endswith("a.mp4"))
    starts, ends, _ = space.segments_of(a)
    assert np.allclose(ends[:-1], starts[1:]) and ends[-1] == pytest.approx(idx.snapshot.media_rows()[a]["duration"])


def test_query_on_format_1_says_what_to_run_and_the_cli_upgrade_does_it(tmp_path):
    from typer.testing import CliRunner

    from mmsearch.cli import app

    root = tmp_path / "old"
    shutil.copytree(DATA / "index-v1", root)
    runner = CliRunner()
    refused = runner.invoke(app, ["query", "a blue square", "--index", str(root), "--json", "--device", "cpu"])
    assert refused.exit_code != 0 and f"mmsearch upgrade --index {root}" in str(refused.exception or refused.output)
    done = runner.invoke(app, ["upgrade", "--index", str(root)])
    assert done.exit_code == 0, done.output
    checked = runner.invoke(app, ["info", "--check", "--index", str(root)])
    assert checked.exit_code == 0 and "check passed" in checked.output, checked.output
    # it answers (through the vectors of the encoder that built it: the shipped synth-clip has moved on)
    queries = np.load(DATA / "index-v1-queries.npz")
    blue = list(queries["visual_texts"]).index("a blue square")
    top = mmsearch.open_index(root).search_vectors(queries["visual"][blue : blue + 1], k=1)[0][0]
    before = json.loads((DATA / "index-v1-results.json").read_text())["a blue square"][0]
    assert (top.path, top.start, top.end) == (before["path"], before["start"], before["end"])


def test_index_run_on_format_1_reports_the_conversion(tmp_path):
    root = tmp_path / "old"
    shutil.copytree(DATA / "index-v1", root)
    (tmp_path / "nothing-new").mkdir()
    report = mmsearch.index_paths([tmp_path / "nothing-new"], root, device="cpu")  # the index's own encoders, none needed
    assert report.upgraded_from == 1 and json.loads((root / MANIFEST).read_text())["format_version"] == 2
    assert mmsearch.index_paths([tmp_path / "nothing-new"], root, device="cpu").upgraded_from is None  # once


def test_closing_stops_a_background_build_at_its_next_step(tmp_path, monkeypatch):
    """An interrupted `mmsearch index` must not wait for a long index build: the job stops at its next pause."""
    import threading
    import time

    steps = []

    def endless_build(vectors, *, pause=None, **kwargs):  # noqa: ANN001, ANN202 - stands in for a long k-means
        while True:
            pause()
            steps.append(1)
            time.sleep(0.01)

    monkeypatch.setattr(VectorIndex, "build", staticmethod(endless_build))
    lib = Library(tmp_path / "idx", background=True)
    lib.add(60)
    lib.deriver.commit(wait=False)  # submits the build, which never ends on its own
    while not steps:
        time.sleep(0.01)
    closer = threading.Thread(target=lib.close)
    t0 = time.perf_counter()
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive() and time.perf_counter() - t0 < 5
    assert not list((tmp_path / "idx" / "data").glob(".tmp-*"))  # nothing half-made left behind


def test_query_probes_given_as_a_function_are_made_once_when_the_first_index_is_built(tmp_path):
    """Encoding 200 probe captions costs seconds (ViT-B-32's text tower): a library searched exactly
    never pays it; the commit that builds the first vector index makes and keeps them, once."""
    probes = _unit(np.random.default_rng(5).standard_normal((40, DIM)))
    calls = []

    def make() -> np.ndarray:
        calls.append(1)
        return probes

    lib = Library(tmp_path / "idx")
    lib.writer.set_query_probes("visual", make)
    lib.add(10)  # 90 moment windows: exact search, no index to tune
    lib.deriver.commit()
    assert calls == [] and "query_probes" not in lib.writer.spaces["visual"]
    lib.add(60)  # 630: the first IVF index, tuned on the probes
    lib.deriver.commit()
    lib.add(5)
    lib.deriver.commit()
    assert calls == [1]
    entry = lib.writer.spaces["visual"]
    assert entry["indexes"]["moments"]["recipe"]["params"]["query_probes"] == 40
    lib.close()
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    assert entry["query_probes"] in manifest["files"]
    reopened = IndexWriter(tmp_path / "idx")
    np.testing.assert_array_equal(reopened.query_probes("visual"), probes)
    reopened.close()


def test_query_probes_are_kept_in_the_index_and_tune_the_indexes_built_after(tmp_path):
    lib = Library(tmp_path / "idx")
    probes = _unit(np.random.default_rng(5).standard_normal((40, DIM)))
    lib.writer.set_query_probes("visual", probes)
    lib.writer.set_query_probes("visual", probes[:3])  # kept once: a later call changes nothing
    lib.writer.ensure_space("audio", ENCODER, DIM, anchor="start")
    with pytest.raises(ValueError, match="must be"):
        lib.writer.set_query_probes("audio", probes[:, :5])  # not of the space's dimension
    lib.add(60)
    lib.deriver.commit()
    entry = lib.writer.spaces["visual"]
    tuned = entry["indexes"]["moments"]["recipe"]["params"]
    assert tuned["query_probes"] == 40 and 0.0 <= tuned["query_recall_at_10"] <= 1.0
    assert tuned["recall_at_10"] <= tuned["query_recall_at_10"] + 1e-9  # the lower of the two probe sets
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    assert entry["query_probes"] in manifest["files"]  # checksummed, kept by every later generation
    lib.add(5)
    lib.deriver.commit()
    lib.close()
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    verify_files(tmp_path / "idx", manifest, full=True)
    reopened = IndexWriter(tmp_path / "idx")
    np.testing.assert_array_equal(reopened.query_probes("visual"), probes)
    assert reopened.query_probes("nosuch") is None
    reopened.close()
