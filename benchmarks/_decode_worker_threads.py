"""``python benchmarks/_decode_worker_threads.py FD MEMORY_MB``: mmsearch's decoder worker with its thread count pinned.

Used by benchmarks/ingest_prefetch.py when BENCH_DECODER_THREADS is set, to measure what limiting
FFmpeg's decoding threads (PyAV ``thread_count``, decord ``num_threads``) does while the main process
encodes at the same time. Behaviour is otherwise exactly ``python -m mmsearch.decode_worker``.
"""

from __future__ import annotations

import os
import sys


def _pin_threads(n: int) -> None:
    import mmsearch.media as media

    open_container = media.PyAVBackend._open

    def _open(self, path):  # noqa: ANN001, ANN202
        container = open_container(self, path)
        for stream in container.streams.video:
            stream.thread_count = n  # iter_frames then sets thread_type AUTO; the count stays
        return container

    media.PyAVBackend._open = _open
    try:
        import decord
    except ImportError:
        return
    reader = decord.VideoReader

    def video_reader(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        kwargs["num_threads"] = n
        return reader(*args, **kwargs)

    decord.VideoReader = video_reader


if __name__ == "__main__":
    _pin_threads(int(os.environ["BENCH_DECODER_THREADS"]))
    from mmsearch.decode_worker import main

    main(sys.argv[1:])
