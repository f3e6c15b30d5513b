"""benchmarks/ray_ingest.py and benchmarks/shard_search.py at toy size: they run end to end, check
what they measure and write the JSON their docstrings describe (no timing asserted beyond sanity)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _load(script: str):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(f"_bench_{script[:-3]}", BENCH / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow  # the script in a process of its own
def test_shard_search_below_the_approximate_threshold_is_exact_for_every_shard_count(tmp_path: Path) -> None:
    out = tmp_path / "shard_search.json"
    stdout = _run("shard_search.py", "--media", "200", "--dim", "32", "--queries", "40", "--warmup", "3", "--json", str(out))
    result = json.loads(out.read_text())
    assert {"machine", "corpus", "configs", "queries", "k", "videos", "args"} <= set(result)
    corpus = result["corpus"]
    assert corpus["media"] == 200 and corpus["dim"] == 32 and corpus["segments"] > 200 * 3
    assert corpus["length_s"]["min"] < corpus["length_s"]["max"]  # media of varied length
    assert 0.1 < corpus["query_source_cosine"]["mean"] < 0.9  # text-like queries: near their source, not copies of it
    rows = result["configs"]
    assert [(r["config"], r["shards"], r["exact"]) for r in rows] == [
        ("exact", 1, True), ("1 shard", 1, False), ("2 shards", 2, False), ("4 shards", 4, False)]
    for r in rows:
        # one moment and one media index per shard, all exact at this size, holding every row between them
        assert len(r["moment_index"]) == len(r["media_index"]) == r["shards"]
        assert {p["factory"] for p in r["moment_index"] + r["media_index"]} == {"Flat"}
        assert sum(p["rows"] for p in r["moment_index"]) == r["moments"] == rows[0]["moments"]
        assert sum(p["rows"] for p in r["media_index"]) == 200
        assert r["segments"] == corpus["segments"]
        if r["shards"] > 1:
            assert all(p["rows"] > 0 for p in r["moment_index"])  # the media really are spread over the shards
        for mode in ("two_stage", "exhaustive"):
            m = r[mode]
            assert m["recall_at_10"] == 1.0 and m["min_recall"] == 1.0, (r["config"], mode, m)
            assert _positive(m["p50_ms"]) and _positive(m["p99_ms"]) and m["p99_ms"] >= m["p50_ms"]
            assert m["mean_hits"] == result["k"] and m["short_answers"] == 0
        assert set(r["index_recall"].values()) == {1.0}
    assert "4 shards" in stdout and "recall" in stdout


def test_ray_ingest_fails_loudly_on_a_file_it_could_not_index(tmp_path: Path) -> None:
    ray_ingest = _load("ray_ingest.py")
    good = ray_ingest.media_files(tmp_path / "media", 1, 1.0, seed=0)
    bad = tmp_path / "media" / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(SystemExit, match="failed"):
        ray_ingest.ingest_once([*good, bad], tmp_path, {"model": "synth-clip", "pretrained": None}, executor="local",
                               workers=1, fps=1.0, chunk=32)


@pytest.mark.slow
def test_ray_ingest_indexes_the_same_files_and_frames_locally_and_on_ray(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is an extra: pip install 'mmsearch[ray]'")
    out = tmp_path / "ray_ingest.json"
    stdout = _run("ray_ingest.py", "--model", "synth-clip", "--videos", "2", "--seconds", "3", "--small-videos", "1",
                  "--small-seconds", "2", "--media-dir", str(tmp_path / "media"), "--json", str(out))
    result = json.loads(out.read_text())
    assert {"machine", "model", "corpus", "rows", "overhead", "ray_version", "wall_seconds"} <= set(result)
    rows = result["rows"]
    assert [(r["runner"], r["workers"], r["ray_cpus"]) for r in rows] == [("local", 1, None), ("ray", 1, 2), ("ray", 2, 3)]
    for r in rows:
        assert r["files"] == r["indexed"] == r["index_media"] == 2 and not r["failed"]
        assert r["frames"] == r["index_segments"] == 2 * 3  # 3 s at 1 fps, twice: every frame of every file committed
        assert _positive(r["wall_s"]) and _positive(r["video_s_per_s"]) and _positive(r["frames_per_s"])
        assert r["video_s_per_s"] == pytest.approx(result["corpus"]["video_seconds"] / r["wall_s"], rel=0.01)
        assert _positive(r["first_vectors_s"]) and r["first_vectors_s"] <= r["wall_s"]
        assert len([e for e in r["timeline"] if e[1] == "file"]) == 2
    assert rows[0]["speed_vs_local"] == 1.0
    assert all(_positive(r["ray_init_s"]) for r in rows[1:])
    overhead = result["overhead"]
    assert overhead["files"] == 1 and overhead["local"]["frames"] == overhead["ray"]["frames"] == 2
    assert overhead["ray_total_s"] == pytest.approx(overhead["ray"]["ray_init_s"] + overhead["ray"]["wall_s"], abs=0.01)
    assert all(_positive(overhead["startup"][k]) for k in ("ray_init_s", "first_task_s", "first_actor_s", "ready_s"))
    assert "video-s/s" in stdout and "Ray start-up" in stdout
