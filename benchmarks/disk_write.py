"""The disk's own pace: how long writing and fsyncing a commit's new shards takes, with nothing else running.

    python benchmarks/disk_write.py --rounds 20 --json benchmarks/results/disk-write.json

A control for ``commit_scale.py``: every commit there writes the same bytes (the segment
vectors and moment vectors of 1000 media x 60 frames of d=512: 123 MB + 59 MB as ``.npy``),
so a commit can never be faster than the machine writes them. This writes the same two arrays
round after round, each to a new file with ``fsync`` (as the store does), and takes the CRC32
of what it wrote from memory (as the store does), timing each round and, apart, the ``write`` calls (copying into the page
cache) and the ``fsync`` (the disk). Five ways, side by side:

- ``keep``: back to back, the files' pages left in the page cache (what the store did before it
  wrote large files directly);
- ``drop``: back to back, each file's pages dropped after its fsync (``posix_fadvise``
  ``POSIX_FADV_DONTNEED``), so the next round's writes reuse memory just freed;
- ``drop-pause``: the same with ``--pause`` seconds between rounds (the gaps of real ingestion);
- ``direct``: back to back, written past the page cache (``O_DIRECT`` from one page-aligned buffer,
  :class:`mmsearch.fileio.DirectFile`: what the store does for files of 4 MiB and more);
- ``direct-pause``: the same with ``--pause`` seconds between rounds.

On a virtual machine whose host takes back the guest's free memory, writing into pages the
guest has not touched lately costs far more than the disk; these rows tell the two apart.
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
    p.add_argument("--pause", type=float, default=5.0, help="seconds between the rounds of drop-pause")
    p.add_argument("--pause-rounds", type=int, default=8)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    info = machine_info()
    print(f"machine: {describe(info)}", flush=True)
    segments = np.random.default_rng(0).standard_normal((args.rows, args.dim)).astype(np.float32)
    moments = segments[: args.rows * 29 // 60].copy()
    mb = (segments.nbytes + moments.nbytes) / 2**20
    results = {}
    print(f"{mb:.0f} MB a round; seconds per round (write into the page cache + fsync)")
    from mmsearch.fileio import DirectFile

    modes = (("keep", args.rounds), ("drop", args.rounds), ("drop-pause", args.pause_rounds),
             ("direct", args.rounds), ("direct-pause", args.pause_rounds))
    for mode, rounds in modes:
        folder = Path(tempfile.mkdtemp(prefix="disk-write-"))
        rows = []
        try:
            for i in range(rounds):
                if mode.endswith("-pause") and i:
                    time.sleep(args.pause)
                write_s = fsync_s = 0.0
                t0 = time.perf_counter()
                for name, array in (("segments", segments), ("moments", moments)):
                    path = folder / f"{name}-{i:04d}.npy"
                    t1 = time.perf_counter()
                    if mode.startswith("direct"):  # as mmsearch.store._write_npy writes a large array
                        with DirectFile(path) as out:
                            np.lib.format.write_array_header_1_0(out, np.lib.format.header_data_from_array_1_0(array))
                            out.write(array)
                    with open(path, "ab") as fh:
                        if not mode.startswith("direct"):
                            np.save(fh, array)
                            fh.flush()
                        t2 = time.perf_counter()
                        os.fsync(fh.fileno())
                        if mode.startswith("drop"):
                            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                        write_s, fsync_s = write_s + t2 - t1, fsync_s + time.perf_counter() - t2
                    zlib.crc32(memoryview(array).cast("B"))  # the store's checksum, of what it wrote, from memory
                rows.append({"round_s": round(time.perf_counter() - t0, 6), "write_s": round(write_s, 6), "fsync_s": round(fsync_s, 6)})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        results[mode] = rows
        rounds_s = [r["round_s"] for r in rows]
        parts = " ".join("{:.2f}+{:.2f}".format(r["write_s"], r["fsync_s"]) for r in rows)
        print(f"{mode:>10}: {parts}")
        print(f"{'':>10}  round: first {rounds_s[0]:.2f} s, median {float(np.median(rounds_s)):.2f} s, max {max(rounds_s):.2f} s")
    if args.json:
        write_json(args.json, {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "mb_per_round": round(mb, 1),
                               "seconds": [r["round_s"] for r in results["keep"]], "modes": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
