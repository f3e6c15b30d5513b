"""What a user waits for one ``mmsearch query`` (issue #16, "queries that answer at once").

Side by side, on one index, each in a fresh process as a user runs it (wall time from start to exit,
peak resident memory of that process):

* ``in-process, full encoders``: the query builds CLIP through open_clip and the sentence model
  through sentence-transformers (what every query did before the text towers;
  ``MMSEARCH_TEXT_TOWERS=0`` forces it);
* ``in-process, text towers``: the default now: the index's frozen text towers (TorchScript and a
  tokenizer, :mod:`mmsearch.encoders.frozen`);
* ``through the server``: ``mmsearch serve`` runs for the index and ``mmsearch query`` sends the
  query there (the server already warm); and, for reference, the server's own answer time to an
  HTTP client already running.

The index is what a user's default gives: ViT-B-32 under its default tag ``laion2b_s34b_b79k``,
with the loading path users take (open_clip -> the Hugging Face cache), but random weights
placed in a private cache (no model host is reachable here: weights change the vectors, not what
is loaded and imported); all-MiniLM-L6-v2 (real, packaged) and Whisper base for the words; a
synthetic world of videos and a video where two sentences are said. The query is a default one
(pictures and words fused).

    python benchmarks/query_latency.py --json benchmarks/results/query_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli_command, describe, free_port, machine_info, write_json  # noqa: E402

HF_REPO = "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
SNAPSHOT = "0" * 40
HEAVY = ("open_clip", "torchvision", "torch._dynamo", "transformers", "sentence_transformers")


def private_hf_cache(work: Path) -> Path:
    """A Hugging Face hub cache holding ViT-B-32 (random weights) where the default tag looks."""
    hub = work / "hf" / "hub"
    target = hub / HF_REPO / "snapshots" / SNAPSHOT / "open_clip_model.safetensors"
    if not target.exists():
        import open_clip
        import torch
        from safetensors.torch import save_file

        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32")
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(target))
        (hub / HF_REPO / "refs").mkdir(parents=True, exist_ok=True)
        (hub / HF_REPO / "refs" / "main").write_text(SNAPSHOT)
    return hub


def build(work: Path, env: dict[str, str], videos: int) -> Path:
    media, index = work / "media", work / "index"
    if not (index / "manifest.json").exists():
        from mmsearch.demo import _talking_video
        from mmsearch.synth import SynthConfig, generate_corpus

        config = SynthConfig(max_size=(480, 270), events_per_video=(2, 3), event_seconds=(3.0, 8.0), gap_seconds=(1.0, 3.0),
                             audio_in_video_probability=0.0)
        generate_corpus(media, videos=videos, audio=0, seed=2026, config=config)
        _talking_video(media / "talk.mp4")
        subprocess.run(cli_command("index", str(media), "--index", str(index), "--model", "ViT-B-32", "--no-audio", "--device", "cpu"),
                       env=env, check=True, capture_output=True)
    return index


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str, str]:
    """(wall seconds, peak resident MiB, stdout, stderr) of one process, as os.wait4 reports it."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]  # small outputs: read, then reap
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[3:])} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, out.decode(), err.decode()


def heavy_imports(index: Path, env: dict[str, str], query: str) -> list[str]:
    code = (
        "import sys, mmsearch\n"
        f"mmsearch.open_index({str(index)!r}, device='cpu').search({query!r}, k=5)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return [m for m in out.strip().splitlines()[-1].split(",") if m] if out.strip() else []


def summary(walls: list[float], rss: list[float]) -> dict[str, float]:
    return {"runs": len(walls), "median_s": round(statistics.median(walls), 3), "min_s": round(min(walls), 3),
            "max_s": round(max(walls), 3), "peak_rss_mib": round(max(rss), 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmsearch-query-latency"), help="kept between runs")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--query", default="a red circle")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)  # the child that builds the index
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(args.work / "hf" / "hub"), "COLUMNS": "200"}
    index = args.work / "index"
    if args.prepare:
        private_hf_cache(args.work)
        build(args.work, env, args.videos)
        os.environ.update(env)
        from mmsearch.api import freeze_text_towers

        freeze_text_towers(index)  # those of this version (a no-op when they are current)
        return
    # built in a child process: this one stays small, so the memory its children report is their own
    # (a child's peak counts what it shares with its parent between fork and exec)
    subprocess.run([sys.executable, __file__, "--prepare", "--work", str(args.work), "--videos", str(args.videos)], check=True)
    query = ["query", args.query, "--index", str(index), "-k", "5", "--json"]
    rows: dict[str, dict] = {}
    answers: dict[str, str] = {}

    for label, extra_env, flags in (
        ("in-process, full encoders", {"MMSEARCH_TEXT_TOWERS": "0"}, ["--local"]),
        ("in-process, text towers", {}, ["--local"]),
    ):
        walls, rss = [], []
        for _ in range(args.runs):
            wall, peak, out, _ = run_measured(cli_command(*query, *flags), {**env, **extra_env})
            walls.append(wall)
            rss.append(peak)
            answers[label] = out
        rows[label] = summary(walls, rss)
        rows[label]["imports"] = heavy_imports(index, {**env, **extra_env}, args.query)

    port = free_port()
    server = subprocess.Popen(cli_command("serve", "--index", str(index), "--port", str(port), "--device", "cpu"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        record = index / "server.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (record.exists() and json.loads(record.read_text()).get("pid") == server.pid):
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=60) as client:
            client.get("/api/search", params={"q": args.query, "k": 5})  # warm: the first query builds what it needs
            http = []
            for _ in range(max(args.runs, 10)):
                t0 = time.perf_counter()
                client.get("/api/search", params={"q": args.query, "k": 5}).raise_for_status()
                http.append(time.perf_counter() - t0)
        walls, rss = [], []
        for _ in range(max(args.runs, 10)):
            wall, peak, out, err = run_measured(cli_command(*query), {**env, "MMSEARCH_LOG": "INFO"})
            if "answered by the server" not in err:
                raise SystemExit("the query was not answered by the server: " + err[-500:])
            walls.append(wall)
            rss.append(peak)
            answers["through the server"] = out
        rows["through the server"] = summary(walls, rss)
        rows["server answer (HTTP client already running)"] = {
            "runs": len(http), "median_s": round(statistics.median(http), 4), "min_s": round(min(http), 4),
            "max_s": round(max(http), 4)}
    finally:
        server.terminate()
        server.wait(timeout=60)

    same = len({json.dumps(json.loads(a)["results"]) for a in answers.values()}) == 1
    info = machine_info()
    print(f"machine: {describe(info)}")
    print(f"index: ViT-B-32 (laion2b_s34b_b79k path, random weights) + all-MiniLM-L6-v2 + Whisper base, "
          f"{args.videos} videos and a talking video; query {args.query!r} (default: pictures and words fused)")
    print(f"{'':46s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'peak MiB':>9s}  heavy imports")
    for label, row in rows.items():
        print(f"{label:46s} {row['median_s']:9.3f} {row['min_s']:7.3f} {row['max_s']:7.3f} "
              f"{row.get('peak_rss_mib', float('nan')):9.0f}  {','.join(row.get('imports', [])) or '-'}")
    print(f"every way gave the same results: {same}")
    if args.json:
        write_json(args.json, {"machine": info, "query": args.query, "videos": args.videos, "rows": rows, "same_results": same})


if __name__ == "__main__":
    main()
