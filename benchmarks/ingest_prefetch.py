"""Prototype fix for mmsearch/ingest.py, measured by ``benchmarks/ingest.py --prototype``.

The problem: ``_run`` hands a decoder its next file only after it has read that
worker's ``("done", ...)`` message, and it reads that message only after encoding
the file's last chunk. At 1 fps a 30 s video is a single 30-frame chunk (chunk_frames
is 32), so the decoder sits idle while a file is encoded and the encoder sits idle
while the next file is decoded: decode and encode never overlap, and end-to-end is
the serial bound minus the per-file overheads.

The fix: keep up to ``PREFETCH`` (2) files queued at each decoder. The worker already
handles tasks one after another from its socket, so the next DecodeTask simply waits
in the socket buffer and the worker starts on it the moment it has sent "done" for
the current one, while the main process is still encoding. Messages arrive in task
order, so they always belong to the head of the worker's deque. When a worker dies or
hangs, its head file fails as before and the files queued behind it go back to the
front of the queue for the replacement worker.

This module loads a private copy of the *current* mmsearch/ingest.py (so
mmsearch.ingest itself is untouched) and replaces only its ``_run``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import mmsearch

PREFETCH = 2  # files outstanding per decoder: the one being decoded and the next
# Experiment knob (benchmark --decoder-threads): pin FFmpeg's decoding threads in the worker.
DECODER_THREADS = os.environ.get("BENCH_DECODER_THREADS")

_spec = importlib.util.spec_from_file_location("mmsearch._ingest_prefetch_copy", Path(mmsearch.__file__).parent / "ingest.py")
_mod = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _mod  # dataclasses look their module up there
_spec.loader.exec_module(_mod)  # package "mmsearch", so its relative imports resolve

IngestConfig = _mod.IngestConfig
IngestReport = _mod.IngestReport


def _worker(memory_limit_mb: int) -> Any:
    if not DECODER_THREADS:
        return _mod.DecodeWorker(memory_limit_mb)
    # mmsearch's DecodeWorker, started on benchmarks/_decode_worker_threads.py instead of mmsearch.decode_worker
    import socket
    from multiprocessing.connection import Connection

    worker = _mod.DecodeWorker.__new__(_mod.DecodeWorker)
    parent, child = socket.socketpair()
    script = str(Path(__file__).with_name("_decode_worker_threads.py"))
    worker.process = subprocess.Popen(
        [sys.executable, script, str(child.fileno()), str(memory_limit_mb)],
        pass_fds=(child.fileno(),),
        stdin=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
    )
    child.close()
    worker.conn = Connection(parent.detach())
    worker.task = None
    worker.last_seen = time.monotonic()
    return worker


def _run(plan: list[Any], writer: Any, encoders: dict[str, Any], config: Any, report: Any, notify: Any,
         heads: Any = None) -> None:
    """mmsearch.ingest._run (as of this writing) with up to PREFETCH files queued at each decoder."""
    m = _mod
    workers = [_worker(config.memory_limit_mb) for _ in range(max(1, config.workers))]
    queue = list(reversed(plan))  # pop() takes the next file
    active: dict[int, deque] = {i: deque() for i in range(len(workers))}  # files sent to worker i, in order
    last_commit = time.monotonic()
    moment_config = m.MomentConfig(config.window, config.stride)

    def head_started(i: int) -> None:
        workers[i].last_seen = time.monotonic()  # the stall clock runs for the file being decoded
        notify("start", {"path": active[i][0].path})

    try:
        while queue or any(active.values()):
            for i, worker in enumerate(workers):
                while queue and len(active[i]) < PREFETCH:
                    item = queue.pop()
                    try:
                        worker.conn.send(m._task(item, encoders, config))  # waits in the socket until the worker is free
                    except OSError:  # died before it could take work: the read side reports it
                        pass
                    active[i].append(item)
                    if len(active[i]) == 1:
                        head_started(i)
            busy = [i for i in active if active[i]]
            t0 = time.perf_counter()
            ready = m.wait([workers[i].conn for i in busy], timeout=1.0)
            report.timings["decode_wait"] += time.perf_counter() - t0
            now = time.monotonic()
            for i in busy:
                worker, item = workers[i], active[i][0]  # messages come in task order: they are the head's
                if worker.conn in ready:
                    worker.last_seen = now
                    try:
                        message = worker.conn.recv()
                    except (EOFError, OSError):
                        message = None
                    if message is not None:
                        kind = message[0]
                        if kind in ("chunk", "audio"):
                            m._encode_chunk(item, message, encoders, report)
                            notify("frames", {"path": item.path, "n": len(message[2])})
                            continue
                        if kind == "done":
                            m._finish(writer, report, item, message[1], heads)
                        else:
                            m._fail(writer, report, item.path, item, message[1], message[2])
                        active[i].popleft()
                        notify("file", {"path": item.path})
                        if active[i]:
                            head_started(i)
                        continue
                if worker.conn in ready:  # readable but nothing to read: the process is gone
                    worker.kill()
                    reason = f"decoder process crashed ({worker.describe_exit()})"
                elif now - worker.last_seen > config.stall_timeout:
                    worker.kill()
                    reason = f"decoder made no progress for {config.stall_timeout:.0f} s (hung); killed"
                else:
                    continue
                workers[i] = _worker(config.memory_limit_mb)
                active[i].popleft()
                m._fail(writer, report, item.path, item, "decode", reason)
                notify("file", {"path": item.path})
                while active[i]:  # sent to the dead worker, never started: back to the front of the queue
                    queue.append(active[i].pop())
            if writer.dirty and time.monotonic() - last_commit >= config.commit_seconds:
                # Commit between files only, so a generation never holds half a file.
                t1 = time.perf_counter()
                writer.commit(moment_config=moment_config, recipe_for=m._recipe_chooser(config))
                report.timings["commit"] += time.perf_counter() - t1
                last_commit = time.monotonic()
    finally:
        for worker in workers:
            worker.stop()


_EXPECTED = ("_task", "_encode_chunk", "_finish", "_fail", "_recipe_chooser", "DecodeWorker", "MomentConfig", "wait")
_missing = [name for name in _EXPECTED if not hasattr(_mod, name)]
if _missing:
    raise ImportError(f"mmsearch/ingest.py changed (no {', '.join(_missing)}): update benchmarks/ingest_prefetch.py")

_mod._run = _run
index_paths = _mod.index_paths
