"""The disk's own pace: how long writing and fsyncing a commit's new shards takes, with nothing else running.

    python benchmarks/disk_write.py --rounds 50 --json benchmarks/results/disk-write.json

A control for ``commit_scale.py``: every commit there writes the same bytes (the segment
vectors and moment vectors of 1000 media x 60 frames of d=512: 123 MB + 59 MB as ``.npy``),
so a commit can never be faster than the disk writes them. This writes the same two arrays
round after round, back to back, each to a new file with ``fsync`` (as the store does), and
reads the CRC32 of what it wrote, timing each round. Virtual disks often take a first burst
faster than they sustain.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--rows", type=int, default=60_000, help="segment rows per round (the moments are 29/60 of it)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    info = machine_info()
    print(f"machine: {describe(info)}", flush=True)
    segments = np.random.default_rng(0).standard_normal((args.rows, args.dim)).astype(np.float32)
    moments = segments[: args.rows * 29 // 60].copy()
    folder = Path(tempfile.mkdtemp(prefix="disk-write-"))
    seconds = []
    try:
        for i in range(args.rounds):
            t0 = time.perf_counter()
            for name, array in (("segments", segments), ("moments", moments)):
                path = folder / f"{name}-{i:04d}.npy"
                with open(path, "wb") as fh:
                    np.save(fh, array)
                    fh.flush()
                    os.fsync(fh.fileno())
                crc = 0
                with open(path, "rb") as fh:
                    while block := fh.read(1 << 20):
                        crc = zlib.crc32(block, crc)
            seconds.append(round(time.perf_counter() - t0, 3))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    mb = (segments.nbytes + moments.nbytes) / 2**20
    print(f"{mb:.0f} MB a round, seconds: {' '.join(f'{s:.2f}' for s in seconds)}")
    print(f"first {seconds[0]:.2f} s, median {float(np.median(seconds)):.2f} s, max {max(seconds):.2f} s")
    if args.json:
        write_json(args.json, {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "mb_per_round": round(mb, 1), "seconds": seconds})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
