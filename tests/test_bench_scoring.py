"""``mmsearch bench`` scoring against hand-computed values.

:func:`mmsearch.bench.run_bench` runs on real annotation files (MSR-VTT's CSV, TVR's JSONL)
and real file lookup, but the engine behind it is a stand-in whose answers are written by
hand: per query, the stage-1 scores of the candidates (the query vector against one-hot media
vectors) and the ranked moments stage 2 returns. Every figure the bench reports is then known
in advance and written below as a literal, computed by hand from those answers (the comments
show the arithmetic). 12 and more candidates, and right answers at positions 11 to 41, make
R@100 differ from R@10: a bench that read only 10 predictions, or only 4 candidates, fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import mmsearch
from mmsearch.bench import run_bench
from mmsearch.retrieval import Hit

N_VIDEOS = 13  # video12 has a file but no vector (it failed to index)
DIM = 2 * 16  # first 16 dims: one per video (its media vector is one-hot); last 16: which query this is


class HandEngine:
    """Stands for :class:`mmsearch.api.Index` with hand-written answers.

    ``stage1[q]``: query q's score for each video (0 where not given); ``moments[q]``: the
    (video, start, end) moments stage 2 returns for query q, best first, before the bench's
    ``media`` filter and ``k`` cut are applied (as the engine applies them).
    """

    def __init__(self, folder: Path, videos: list[str], stage1: dict[int, dict[str, float]],
                 moments: dict[int, list[tuple[str, float, float]]], texts: list[str], space: str = "visual") -> None:
        self.folder, self.videos, self.space = folder, videos, space
        self.ids = {v: 500 + 7 * j for j, v in enumerate(videos)}  # media ids unlike candidate positions
        self.name_of = {m: v for v, m in self.ids.items()}
        self.query_vectors = {}
        for q, text in enumerate(texts):
            vec = np.zeros(DIM, np.float32)
            for v, score in stage1.get(q, {}).items():
                vec[videos.index(v)] = score
            vec[16 + q] = 1.0  # orthogonal to every media vector: tells the stand-in which query it is asked
            self.query_vectors[text] = vec
        self.moments = moments
        self.snapshot = SimpleNamespace(spaces={space: SimpleNamespace(dim=DIM)})
        self.manifest = {"spaces": {space: {"encoder": {"identity": {"model": "hand", "dim": DIM}}}}}
        self.calls: list[dict] = []

    def media_ids(self) -> dict[str, int]:
        root = Path(os.path.abspath(self.folder))
        return {str(p): self.ids[p.stem] for p in root.iterdir() if p.stem in self.ids}

    def media_vectors(self, media: list[int], *, space: str) -> tuple[np.ndarray, np.ndarray]:
        known = [m for m in dict.fromkeys(media) if self.name_of[m] != "video12"]
        vectors = np.zeros((len(known), DIM), np.float32)
        for row, m in enumerate(known):
            vectors[row, self.videos.index(self.name_of[m])] = 1.0
        return np.asarray(known, np.int64), vectors

    def embed_queries(self, *, text: list[str], space: str) -> np.ndarray:
        return np.stack([self.query_vectors[t] for t in text])

    def encoder(self, space: str) -> SimpleNamespace:
        return SimpleNamespace(device="cpu")

    def search_hits(self, queries: np.ndarray, *, space: str, k: int, videos: int, media: list[int]) -> list[list[Hit]]:
        self.calls.append({"k": k, "videos": videos, "n_media": len(media)})
        out = []
        for vec in np.atleast_2d(queries):
            q = int(np.argmax(vec[16:]))
            allowed = set(media)
            hits = [Hit(self.ids[v], s, e, 1.0 - 0.001 * i, None) for i, (v, s, e) in enumerate(self.moments.get(q, []))]
            out.append([h for h in hits if h.media_id in allowed][:k])
        return out


def _run(task: str, data: Path, engine: HandEngine, monkeypatch, tmp_path: Path) -> tuple[dict, list[dict]]:
    monkeypatch.setattr(mmsearch, "index_paths", lambda *a, **kw: SimpleNamespace(indexed=[], failed=[]))
    monkeypatch.setattr(mmsearch, "open_index", lambda *a, **kw: engine)
    result = run_bench(task, data, index_dir=tmp_path / "unused-index", device="cpu", per_query=tmp_path / "pq.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "pq.jsonl").read_text().splitlines()]
    return result, lines


def _videos(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True)
    for name in names:
        (folder / f"{name}.mp4").write_bytes(b"a stand-in: the engine is stubbed")


def test_msrvtt_ranks_and_metrics_by_hand(tmp_path, monkeypatch):
    names = [f"video{j}" for j in range(N_VIDEOS)]
    data = tmp_path / "msrvtt"
    _videos(data / "videos", names)
    texts = [f"sentence {q}" for q in range(N_VIDEOS)]  # query q is about video q
    (data / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n" + "".join(f"ret{q},msr{q},video{q},{texts[q]}\n" for q in range(N_VIDEOS))
    )
    others = [v for v in names[:12] if v != "video3"]
    stage1 = {0: {"video0": 1.0}, 1: {"video3": 1.0, "video1": 0.5}, 2: {"video2": 1.0}, 4: {"video4": -1.0}}
    moments = {
        0: [("video0", 0.0, 5.0)],
        1: [("video3", 0.0, 5.0), ("video3", 9.0, 12.0), ("video1", 1.0, 2.0)],  # video3 twice: video1 is 2nd
        3: [(v, 0.0, 1.0) for v in others[:10]] + [("video3", 0.0, 1.0)],  # 10 other videos first: 11th
    }
    engine = HandEngine(data / "videos", names, stage1, moments, texts)
    result, lines = _run("msrvtt", data, engine, monkeypatch, tmp_path)
    assert result["n_candidates"] == 13 and result["rank_of_not_retrieved"] == 14
    assert result["not_indexed"]["examples"] == ["video12"]
    # q0 1st; q1 2nd (video3's second moment does not count twice); q2 by stage 1 alone (no moment): 1st;
    # q3 11th; q4 scores -1, below the 11 zeros: 12th; q5..q11 tie at 0 with every video but their
    # own earlier-listed ones: listing order, 6th..12th; q12's video has no vector: 13 + 1
    ranks = [1, 2, 1, 11, 12, 6, 7, 8, 9, 10, 11, 12, 14]
    assert [q["rank"] for q in lines] == ranks
    # stage 1 alone: q1 video3 above video1 (2nd); q3 ties at 0, listed 4th
    assert [q["stage1_rank"] for q in lines] == [1, 2, 1, 4, 12, 6, 7, 8, 9, 10, 11, 12, 14]
    # R@1 2/13, R@5 3/13, R@10 8/13 (ranks 1 2 1 6 7 8 9 10), MdR the 7th of 13 sorted = 9, MnR 104/13
    assert result["metrics"] == {"R@1": 15.38, "R@5": 23.08, "R@10": 61.54, "MdR": 9.0, "MnR": 8.0}
    # stage 1: R@1 2/13, R@5 4/13, R@10 9/13, MdR 8, MnR 97/13
    assert result["stage1_metrics"] == {"R@1": 15.38, "R@5": 30.77, "R@10": 69.23, "MdR": 8.0, "MnR": 7.46}
    assert [t["item"] for t in lines[3]["top"]] == others[:10]  # the first 10 of the answer are saved
    assert [t["item"] for t in lines[1]["top"][:3]] == ["video3", "video1", "video0"]
    assert engine.calls and all(c["n_media"] == 12 and c["videos"] == 20 and c["k"] >= 100 for c in engine.calls)


# TVR: 12 clips, query q about clip q; every (video, start, end) below is what stage 2 returns.
TVR_TRUTH = [(0, 10), (10, 20), (0, 10), (5, 15), (0, 4)] + [(0, 10)] * 7
TVR_STAGE1 = {0: {"clip00": 1.0}, 1: {"clip02": 1.0, "clip01": 0.5}, 2: {"clip02": 1.0}, 4: {"clip04": 1.0}, 10: {"clip10": -1.0}}


def _tvr_moments() -> dict[int, list[tuple[str, float, float]]]:
    others = [f"clip{j:02d}" for j in range(12) if j != 2]
    return {
        0: [("clip00", 0.0, 10.0)],  # IoU 1 at 1
        # right time in the wrong clip at 1; right clip, no overlap at 2; IoU 8/10 at 3
        1: [("clip02", 10.0, 20.0), ("clip01", 0.0, 5.0), ("clip01", 12.0, 20.0)],
        # 11 other clips first, then clip02 0-6: IoU 6/10 (>= 0.5, < 0.7) at 12
        2: [(v, 0.0, 10.0) for v in others] + [("clip02", 0.0, 6.0)],
        # 40 moments of clip04, then clip03 5-14: IoU 9/10 at 41
        3: [("clip04", float(t), float(t) + 1.0) for t in range(40)] + [("clip03", 5.0, 14.0)],
        4: [("clip04", 0.0, 8.0)],  # IoU exactly 4/8 = 0.5 at 1
    }


def test_tvr_vcmr_svmr_vr_by_hand(tmp_path, monkeypatch):
    names = [f"clip{j:02d}" for j in range(12)]
    data = tmp_path / "tvr"
    _videos(data / "videos", names)
    texts = [f"what happens {q}" for q in range(12)]
    with open(data / "tvr_val_release.jsonl", "w") as fh:
        for q, (start, end) in enumerate(TVR_TRUTH):
            fh.write(json.dumps({"desc_id": q, "desc": texts[q], "vid_name": names[q], "ts": [start, end], "duration": 30.0, "type": "v"}) + "\n")
    engine = HandEngine(data / "videos", names, TVR_STAGE1, _tvr_moments(), texts)
    result, lines = _run("tvr", data, engine, monkeypatch, tmp_path)
    m = result["metrics"]
    # VCMR at IoU 0.5, first correct moment: q0 1, q1 3, q2 12, q3 41, q4 1, the rest never (of 12 queries)
    assert m["VCMR"]["0.5"] == {"R@1": 16.67, "R@5": 25.0, "R@10": 25.0, "R@100": 41.67}
    # at IoU 0.7: q0 1, q1 3, q3 41 (q2's 0.6 and q4's 0.5 fall short)
    assert m["VCMR"]["0.7"] == {"R@1": 8.33, "R@5": 16.67, "R@10": 16.67, "R@100": 25.0}
    # SVMR, moments inside the right clip only: q0 1, q1 2 (0-5 then 12-20), q2 1, q3 1, q4 1
    assert m["SVMR"]["0.5"] == {"R@1": 33.33, "R@5": 41.67, "R@10": 41.67, "R@100": 41.67}
    assert m["SVMR"]["0.7"] == {"R@1": 16.67, "R@5": 25.0, "R@10": 25.0, "R@100": 25.0}
    # VR, clips at their first moment then stage-1 order: q0 1, q1 2, q2 12, q3 2, q4 1,
    # q5..q9 6..10 (ties at 0, listing order), q10 scores -1: 12, q11 12
    assert [q["rank"] for q in lines] == [1, 2, 12, 2, 1, 6, 7, 8, 9, 10, 12, 12]
    assert m["VR"] == {"R@1": 16.67, "R@5": 33.33, "R@10": 75.0, "R@100": 100.0}
    assert [q["stage1_rank"] for q in lines] == [1, 2, 1, 4, 1, 6, 7, 8, 9, 10, 12, 12]
    assert result["stage1_metrics"] == {"R@1": 25.0, "R@5": 41.67, "R@10": 83.33, "MdR": 6.5, "MnR": 6.08}
    assert [(s["start"], s["end"]) for s in lines[1]["svmr"]] == [(0.0, 5.0), (12.0, 20.0)]
    assert len(lines[3]["moments"]) == 10  # the per-query file keeps 10; the metrics read 100
