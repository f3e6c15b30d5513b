"""Ingestion on a Ray cluster (``mmsearch index --executor ray``): the local runner's stages as a
Ray Data pipeline.

    plan (driver) -> decode (Ray tasks, CPU) -> embed (an actor pool, GPUs when the cluster has
    them) -> one committer (driver): the derive stage and the same crash-safe commits as local runs

* **Plan** stays on the driver, unchanged: discovery, content hashes, moved files and duplicates
  (:func:`mmsearch.ingest.index_paths`). Each planned file becomes one row of a dataset.
* **Decode**: a ``flat_map`` task per file runs mmsearch's own decoders (not Ray's
  ``read_videos``, which samples by frame index and ignores rotation and start offsets) in an
  mmsearch decoder process (:class:`mmsearch.decode_worker.DecodeWorker`, reused by the Ray worker
  across files), so a file that crashes or hangs its decoder costs that file and is recorded, as
  locally. Whisper and OCR run here too, as in the local runner. The task streams its messages
  (frame chunks, sound windows, sentences) as rows, numbered.
* **Embed**: ``map_batches`` with an actor pool (:class:`EmbedStage`); each actor builds the run's
  encoders once (CLIP, CLAP, the sentence model: all of one run share the actor and, with
  ``gpus_per_actor`` < 1, a GPU with other actors).
* **Commit**: the driver gathers each file's rows; when a file's last message and every row before
  it arrived, its segments go through the derive stage (:func:`mmsearch.ingest._finish`) into the
  index writer, which writes them as shard files (npy + parquet) and commits generations every
  ``commit_seconds``, between files only, as the local runner does.

A Ray worker or node that dies costs only the files in flight: Ray runs their decode tasks again
and restarts embedding actors; rows a retried task sends a second time are
recognised by their number and dropped, so nothing is embedded or stored twice. (Ray retries a
task whose worker died up to 3 times, its default; Ray Data restarts its actors without limit.) A driver that is
killed leaves the last committed generation; the next run resumes from it like a local one.
Needs ``pip install "mmsearch[ray]"``.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .config import encoder_options
from .decode_worker import DecodeWorker, usable_cores
from .encoders import EncoderSpec
from .errors import UsageError
from .ingest import IngestConfig, IngestReport, ProgressFn, Runner, _finish, _Pending, _task, add_embedded, embed_message, _fail_item

__all__ = ["EmbedStage", "FileRows", "check_ray", "decode_file", "ray_runner", "ray_session"]

log = logging.getLogger("mmsearch.distributed")

RAY_EXTRA = 'pip install "mmsearch[ray]"'
# the planned files are split into at most this many blocks: one decode task per file up to it (the
# finest scheduling), several files one after another per task beyond (Ray Data's bookkeeping grows per block)
MAX_BLOCKS = 2048


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the part the pipeline needs
    except ImportError:
        raise UsageError(f"--executor ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, connected: to the cluster at ``address`` (``auto``: the one running on this machine, as
    ``ray start`` left it; ``ray://host:10001``: through Ray Client), or with ``address`` None to a
    local cluster of ``num_cpus`` CPUs (default: the cores this process may use) started here and
    stopped afterwards. A session already open in this process is used as it is.

    Raises :class:`UsageError` when Ray is missing or no cluster answers at ``address``.
    """
    ray = _ray()
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        if address is None:
            options["num_cpus"] = num_cpus or usable_cores()
        _check_reachable(address)
        if address is not None:
            # Ray retries a cluster that does not answer for ~20 s (1 s apart); 5 s is enough for one that
            # runs, and the user's own setting wins (Ray's "explicit operator budget", ray/_private/node.py)
            os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "5")
        try:
            with warnings.catch_warnings():  # Ray Client's own timeout warning repeats the error below
                warnings.simplefilter("ignore", UserWarning)
                ray.init(address=address, **options)
        except ConnectionError as exc:
            if "auth" in str(exc.__cause__ or "").lower():  # Ray's token authentication (on by default since 2.5x)
                raise UsageError(
                    f"the Ray cluster at --ray-address {address} asks for its authentication token: give it as "
                    "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (see https://docs.ray.io/en/latest/ray-security/token-auth.html), "
                    "or use --ray-address auto on a node of the cluster"
                ) from None
            raise UsageError(
                f"no Ray cluster answers at --ray-address {address} ({exc}): start one with `ray start --head`, "
                "or leave out --ray-address to start a local one"
            ) from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def check_ray(address: str | None) -> None:
    """Raise :class:`UsageError` at once when Ray is not installed or nothing answers at ``address``
    (see :func:`ray_session`), before a run does any work."""
    _ray()
    _check_reachable(address)


def _check_reachable(address: str | None, timeout: float = 3.0) -> None:
    """UsageError when ``address`` names a host and port (``HOST:PORT``, ``ray://HOST:PORT``) where
    no gRPC server (Ray's GCS and Ray Client speak gRPC) answers within ``timeout`` seconds: Ray
    itself would retry for 20 s to minutes. A TCP connection alone proves nothing where a proxy
    accepts every connection, so the check sends HTTP/2's connection preface and waits for the
    server's SETTINGS frame (RFC 9113, section 3.4)."""
    if not address or address in ("auto", "local"):
        return
    bare = address.removeprefix("ray://")
    host, _, port = (bare if ":" in bare or bare == address else f"{bare}:10001").rpartition(":")  # Ray Client's port
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # preface, empty SETTINGS
            header = b""
            while len(header) < 9:
                got = conn.recv(9 - len(header))
                if not got:
                    break
                header += got
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
    else:
        if len(header) == 9 and header[3] == 4:  # a SETTINGS frame: an HTTP/2 (gRPC) server
            return
        reason = "something answers there, but not Ray"
    raise UsageError(
        f"no Ray cluster answers at --ray-address {address} ({reason}): start one with `ray start --head` there, "
        "or leave out --ray-address to start a local one"
    )


_DECODER: DecodeWorker | None = None  # this Ray worker's decoder process, reused across files


def decode_file(row: dict[str, Any], *, memory_limit_mb: int, stall_timeout: float) -> Iterator[dict[str, Any]]:
    """The decode stage (a Ray Data ``flat_map``): one planned file (``row["task"]``, a pickled
    :class:`~mmsearch.decode_worker.DecodeTask`) decoded in an mmsearch decoder process; yields its
    messages as rows ``{key, seq, message}`` (``seq`` counts from 0; the last message is ``done``
    or ``failed``)."""
    global _DECODER
    task = pickle.loads(row["task"])
    if _DECODER is None or _DECODER.dead:
        _DECODER = DecodeWorker(memory_limit_mb)
    for seq, message in enumerate(_DECODER.messages(task, stall_timeout=stall_timeout)):
        yield {"key": row["key"], "seq": seq, "message": pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)}


class EmbedStage:
    """The embed stage (a Ray Data ``map_batches`` actor): builds the run's encoders once (one per
    distinct spec: the spaces of words share the sentence model) and turns decoded messages into
    ``("embedded", space, starts, ends, vectors, texts, tags)``; ``done``/``failed`` pass through.
    A subclass sets ``specs`` (the encoder of each space) and ``device``."""

    specs: dict[str, EncoderSpec] = {}
    options: dict[str, dict[str, Any]] = {}  # create_encoder's keyword options by space (mmsearch.config.encoder_options)
    device: str = "cpu"

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)  # one CPU per actor (two threads were ten times slower under load)
        from .encoders import create_encoder

        built: dict[str, Any] = {}
        self.encoders = {}
        for space, spec in self.specs.items():
            options = self.options.get(space, {})
            key = repr((spec, sorted(options.items())))
            if key not in built:
                built[key] = create_encoder(spec, device=self.device, **options)
            self.encoders[space] = built[key]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out, seconds = [], []
        for raw in batch["message"]:
            message = pickle.loads(raw)
            t0 = time.perf_counter()
            if message[0] in ("chunk", "audio", "text"):
                message = ("embedded", *embed_message(message, self.encoders))
            seconds.append(time.perf_counter() - t0)
            out.append(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        return {"key": batch["key"], "seq": batch["seq"], "message": out, "seconds": seconds}


def ray_runner(
    specs: dict[str, EncoderSpec],
    *,
    device: str = "auto",
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
    gpus_per_actor: float | None = None,
) -> Runner:
    """A runner for :func:`mmsearch.ingest.index_paths` that decodes and embeds on Ray (see the module).

    ``specs``: the encoder of each space to fill (built again inside each actor); ``address``,
    ``num_cpus``: as :func:`ray_session`. ``actors``: embedding actors (default: one per GPU of the
    cluster, else one); ``gpus_per_actor``: default 1 where the cluster has GPUs (0.5 lets two
    actors share one). Decode tasks take one CPU each and run as many at once as CPUs are free
    (``IngestConfig.workers`` caps them).
    """

    def run(
        plan: list[_Pending], deriver: Any, encoders: dict[str, Any], config: IngestConfig, report: IngestReport,
        notify: ProgressFn, heads: Any = None,
    ) -> None:
        # every space the plan fills: the spaces of words too, whose encoder the driver builds only when words arrive
        spaces = {s for item in plan for s in item.spaces} | set(encoders)
        with ray_session(address, num_cpus=num_cpus) as ray:
            _run(ray, plan, deriver, encoders, config, report, notify, heads, specs={s: specs[s] for s in sorted(spaces) if s in specs},
                 device=device, actors=actors, gpus_per_actor=gpus_per_actor)

    return run


def _run(
    ray: Any, plan: list[_Pending], deriver: Any, encoders: dict[str, Any], config: IngestConfig, report: IngestReport,
    notify: ProgressFn, heads: Any, *, specs: dict[str, EncoderSpec], device: str, actors: int | None, gpus_per_actor: float | None,
) -> None:
    writer = deriver.writer
    items = dict(enumerate(plan))
    rows = [{"key": key, "task": pickle.dumps(_task(item, encoders, config))} for key, item in items.items()]
    gpus = 0 if str(device) == "cpu" else int(ray.cluster_resources().get("GPU", 0))  # --device cpu: no GPU asked for
    per_actor = gpus_per_actor if gpus_per_actor is not None else (1.0 if gpus else 0.0)
    pool = actors or max(1, int(gpus / per_actor) if per_actor else 1)
    actor_device = device if per_actor else "cpu"
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # mmsearch reports progress and failures itself
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # the encoders' specs travel with the actor class, not as constructor arguments in the object
    # store, which a restarted actor could find lost (ray-project/ray#53727)
    options = {space: encoder_options(spec.family, config) for space, spec in specs.items()}
    stage = type("EmbedStage", (EmbedStage,), {"specs": specs, "options": options, "device": actor_device})
    dataset = (
        ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
        .flat_map(
            decode_file, fn_kwargs={"memory_limit_mb": config.memory_limit_mb, "stall_timeout": config.stall_timeout},
            compute=ray.data.TaskPoolStrategy(size=config.workers), num_cpus=1,
        )
        .map_batches(
            stage,
            batch_size=1, compute=ray.data.ActorPoolStrategy(size=pool), num_cpus=0 if per_actor else 1, num_gpus=per_actor or None,
        )
    )
    rows_of = FileRows()
    last_commit = time.monotonic()
    for row in dataset.iter_rows():
        key, seq = int(row["key"]), int(row["seq"])
        if not rows_of.take(key, seq):  # sent again by a task Ray ran again
            continue
        item = items[key]
        if rows_of.count(key) == 1:
            notify("start", {"path": item.path})
        message = pickle.loads(row["message"])
        report.timings["encode"] += float(row["seconds"])
        if message[0] == "embedded":
            encoders[message[1]]  # the driver records a space of words in the index when its first words arrive
            add_embedded(item, message[1:], report)
            notify("frames", {"path": item.path, "n": len(message[2])})
        else:
            rows_of.end(key, seq, message)
        final = rows_of.complete(key)
        if final is None:
            continue
        if final[0] == "done":
            _finish(deriver, report, item, final[1], heads)
        else:
            _fail_item(writer, report, item, final[1], final[2])
        item.buffers.clear()
        notify("file", {"path": item.path})
        if writer.dirty and time.monotonic() - last_commit >= config.commit_seconds:
            t0 = time.perf_counter()
            deriver.commit(wait=False)  # between files only, as the local runner
            report.timings["commit"] += time.perf_counter() - t0
            last_commit = time.monotonic()
    for key, item in items.items():
        if key not in rows_of.finished:  # not expected: every task ends with done or failed, or Ray raises
            _fail_item(writer, report, item, "decode", "the Ray pipeline ended before the file was done")


class FileRows:
    """The message rows of each file as they come out of the pipeline: in any order, and some twice
    (a task Ray ran again sends its rows again). A file is complete once its final message
    (``done``/``failed``, the highest number) and every row numbered before it have arrived."""

    def __init__(self) -> None:
        self._seen: dict[int, set[int]] = {}
        self._final: dict[int, tuple[int, tuple]] = {}  # key -> (number of its rows, its final message)
        self.finished: set[int] = set()

    def take(self, key: int, seq: int) -> bool:
        """Record row ``seq`` of file ``key``; False when it came before (or the file is complete): drop it."""
        seen = self._seen.setdefault(key, set())
        if key in self.finished or seq in seen:
            return False
        seen.add(seq)
        return True

    def count(self, key: int) -> int:
        """Rows of file ``key`` taken so far."""
        return len(self._seen.get(key, ()))

    def end(self, key: int, seq: int, message: tuple) -> None:
        """Row ``seq`` of file ``key`` is its final message."""
        self._final[key] = (seq + 1, message)

    def complete(self, key: int) -> tuple | None:
        """The final message of file ``key`` once all its rows are in (then the file is finished), else None."""
        if key in self._final and len(self._seen[key]) == self._final[key][0]:
            self.finished.add(key)
            del self._seen[key]
            return self._final.pop(key)[1]
        return None
