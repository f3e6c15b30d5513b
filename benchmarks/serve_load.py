"""``mmsearch serve`` under load on loopback (issue #16): latency and errors at 1, 8 and 32 clients.

A real server process (``mmsearch serve``, uvicorn) over the demo's synthetic index (``mmsearch demo``:
synth-clip and synth-clap, Whisper base, RapidOCR and all-MiniLM-L6-v2 for the words) and, in this
process, ``C`` client threads, each with its own HTTP connection, sending requests back to back
until ``--requests`` (at least 10 per client) have been answered or ``--seconds`` have passed:

* ``text search``: ``GET /api/search?q=...&k=10``, the demo's captions in turn (default mode:
  pictures and words fused per moment);
* ``thumbnail``: ``GET /thumbnail/ID?t=S`` over 40 (file, second) pairs, every one cached
  beforehand; the cost of a first request (seek, decode, JPEG) is reported separately, one client;
* ``ranged media read``: ``GET /media/ID`` with ``Range: bytes=A-A+65535`` at random offsets.

An error is a connection failure, a timeout or a status other than 200/206. The clients run on the
same machine as the server (2 cores here), so at 32 clients they compete with it for the CPU.

    python benchmarks/serve_load.py --json benchmarks/results/serve_load.json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli_command, describe, free_port, machine_info, write_json  # noqa: E402


def run_load(url: str, make_request: Callable[[Any, random.Random], Any], clients: int, requests: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads sending requests until ``requests`` are answered or ``seconds`` pass."""
    import httpx

    latencies: list[float] = []
    server_ms: list[float] = []  # the server's own time (its Server-Timing header), where it says
    errors: list[str] = []
    lock = threading.Lock()
    left = [max(requests, 10 * clients)]
    deadline = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=30) as http:
            while True:
                with lock:
                    if left[0] <= 0 or time.monotonic() > deadline:
                        return
                    left[0] -= 1
                t0 = time.perf_counter()
                try:
                    response = make_request(http, rng)
                    ok = response.status_code in (200, 206)
                    reason = f"status {response.status_code}"
                except httpx.HTTPError as exc:
                    ok, reason = False, type(exc).__name__
                took = time.perf_counter() - t0
                timing = response.headers.get("server-timing", "") if ok else ""
                with lock:
                    latencies.append(took)
                    if timing:
                        server_ms.append(sum(float(part.split("dur=")[1]) for part in timing.split(",") if "dur=" in part))
                    if not ok:
                        errors.append(reason)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.asarray(latencies) * 1000
    return {
        "clients": clients, "requests": len(latencies), "errors": len(errors), "error_kinds": sorted(set(errors)),
        "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1), "per_second": round(len(latencies) / wall, 1),
        **({"server_p50_ms": round(float(np.percentile(server_ms, 50)), 1), "server_p99_ms": round(float(np.percentile(server_ms, 99)), 1)}
           if server_ms else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmsearch-serve-load"), help="the demo world (kept between runs)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=200, help="per endpoint and client count (at least 10 per client)")
    parser.add_argument("--seconds", type=float, default=60.0, help="per endpoint and client count, at most")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import httpx

    index = args.work / "index"
    if not (index / "manifest.json").exists():
        subprocess.run(cli_command("demo", str(args.work), "--videos", "8"), check=True, capture_output=True)
    # an index from an earlier version gets this version's text towers before the clock starts
    subprocess.run([sys.executable, "-c", f"from mmsearch.api import freeze_text_towers; freeze_text_towers({str(index)!r})"],
                   check=True, capture_output=True)
    truth = json.loads((args.work / "media" / "ground_truth.json").read_text())
    captions = sorted({row["caption"] for row in truth})
    shutil.rmtree(index / "cache" / "thumbnails", ignore_errors=True)  # so a first request is a first request
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(cli_command("serve", "--index", str(index), "--port", str(port), "--device", "cpu"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.3)
        with httpx.Client(base_url=url, timeout=60) as http:
            for q in captions:  # warm: encoders built, BM25 indexes built
                http.get("/api/search", params={"q": q}).raise_for_status()
            results = [r for q in captions for r in http.get("/api/search", params={"q": q, "k": 10}).json()["results"]]
            videos = {r["media_id"]: r for r in results if r["modality"] != "image"}
            pairs = [(m, round(t, 1)) for m in videos for t in np.linspace(0.5, videos[m]["end"], 40 // max(1, len(videos)) + 1)][:40]
            sizes = {m: int(http.head(f"/media/{m}").headers["content-length"]) for m in videos}
            first = []
            for m, t in pairs:  # the first request of each: seek, decode, JPEG, write to the cache
                t0 = time.perf_counter()
                http.get(f"/thumbnail/{m}", params={"t": t}).raise_for_status()
                first.append(time.perf_counter() - t0)
        first_ms = np.asarray(first) * 1000
        rows.append({"endpoint": "thumbnail, first request", "clients": 1, "requests": len(first), "errors": 0, "error_kinds": [],
                     "p50_ms": round(float(np.percentile(first_ms, 50)), 1), "p99_ms": round(float(np.percentile(first_ms, 99)), 1),
                     "max_ms": round(float(first_ms.max()), 1), "per_second": round(len(first) / first_ms.sum() * 1000, 1)})

        def search(http: Any, rng: random.Random) -> Any:
            return http.get("/api/search", params={"q": rng.choice(captions), "k": 10})

        def thumbnail(http: Any, rng: random.Random) -> Any:
            m, t = rng.choice(pairs)
            return http.get(f"/thumbnail/{m}", params={"t": t})

        def media(http: Any, rng: random.Random) -> Any:
            m = rng.choice(list(sizes))
            start = rng.randrange(0, max(1, sizes[m] - 65536))
            return http.get(f"/media/{m}", headers={"Range": f"bytes={start}-{start + 65535}"})

        for name, make in (("text search", search), ("thumbnail", thumbnail), ("ranged media read", media)):
            for clients in args.clients:
                rows.append({"endpoint": name, **run_load(url, make, clients, args.requests, args.seconds)})
                print(f"  {name:18s} {clients:3d} clients: p50 {rows[-1]['p50_ms']} ms, p99 {rows[-1]['p99_ms']} ms, "
                      f"errors {rows[-1]['errors']}" + (f" (in the server: p50 {rows[-1]['server_p50_ms']} ms, p99 "
                                                         f"{rows[-1]['server_p99_ms']} ms)" if "server_p99_ms" in rows[-1] else ""),
                      flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)

    info = machine_info()
    print(f"machine: {describe(info)}")
    print(f"index: mmsearch demo ({len(truth)} ground-truth events), server and clients on this machine, loopback")
    print(f"{'endpoint':26s} {'clients':>7s} {'requests':>8s} {'errors':>6s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s} {'req/s':>7s}")
    for r in rows:
        print(f"{r['endpoint']:26s} {r['clients']:7d} {r['requests']:8d} {r['errors']:6d} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
              f"{r['max_ms']:8.1f} {r['per_second']:7.1f}")
    search8 = next((r for r in rows if r["endpoint"] == "text search" and r["clients"] == 8), None)
    if search8:
        print(f"target (text search, 8 clients): 0 errors and p99 < 200 ms -> errors {search8['errors']}, p99 {search8['p99_ms']} ms: "
              + ("met" if search8["errors"] == 0 and search8["p99_ms"] < 200 else "NOT met"))
    if args.json:
        write_json(args.json, {"machine": info, "rows": rows, "requests": args.requests, "seconds": args.seconds})


if __name__ == "__main__":
    main()
