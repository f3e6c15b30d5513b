"""Decoder processes: a crash, a hang or a memory blow-up in FFmpeg costs one file, not the run.

A worker is a fresh ``python -m mmsearch.decode_worker`` process talking over a
socket pair, so it never depends on how the parent was started (a script, a
notebook, stdin, a forked child). It receives :class:`DecodeTask` objects (plain
data, never a live decoder) and streams back::

    ("chunk", frames uint8 (N, H, W, 3), timestamps float64 (N,))   any number of times
    ("audio", [mono float32 clips], starts (N,), ends (N,))         any number of times
    ("text", space, starts (N,), ends (N,), [str] * N)              words said (speech, subtitles) or written (OCR)
    ("alive",)                                                      a long stage (speech, OCR) still working
    ("done", {"kind": ..., "duration": ..., "width": ..., "height": ..., "video_end"?: ..., "damaged_packets"?: ...,
              "lost_seconds"?: ..., "audio_damaged_packets"?: ..., "audio_lost_seconds"?: ..., "audio_note"?: ...,
              "language"?: ..., "stage_failures"?: [(stage, reason)], "notes"?: [str]})
    ("error", stage, reason)

Speech (Whisper), subtitles and OCR run here too, after the pictures and the sound, each with its
model loaded once per process. A failure of one of them costs that file its words only: it is
reported in ``stage_failures`` and the file is indexed for the rest.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from .avutil import quiet_ffmpeg
from .errors import DecodeError, MediaError, MMSearchError, NoVideoError
from .frameskip import FrameSkipper
from .media import Animation, get_backend, image_batch, is_animation, open_image


@dataclass(frozen=True)
class AudioSpec:
    """How to cut a soundtrack into windows for the audio encoder."""

    sample_rate: int
    window: float
    hop: float
    windows_per_message: int = 8


@dataclass(frozen=True)
class DecodeTask:
    path: str
    kind: str  # video | image | audio
    fps: float
    short_side: int | None
    backend: str
    chunk_frames: int
    visual: bool = True  # decode frames (videos, images)
    audio: AudioSpec | None = None  # decode sound (videos, audio files)
    speech: str | None = None  # transcribe with this faster-whisper model (name or directory); also reads subtitles
    ocr_interval: float | None = None  # read on-screen text every this many seconds (videos, images)
    captions: str | None = None  # caption frames with this captioner (mmsearch.captions.captioner_spec); None: no captions
    caption_stride: float = 2.0  # seconds between the frames captioned (the moment windows' stride)
    asr_device: str = "cpu"  # where the decoder's models run (Whisper, the captioner): "cuda" beside a GPU encoder
    skip_similar: bool = False  # leave out sampled frames that repeat the last one sent (mmsearch.frameskip)
    skip_nonref: bool = False  # PyAV decodes no non-reference frame (FFmpeg's skip_frame=NONREF)
    skip_loop_filter: bool = False  # PyAV skips in-loop deblocking (FFmpeg's skip_loop_filter=all)
    decoder_threads: int = 0  # the video decoder's threads; 0: the decoder's choice (FFmpeg: cores + 1)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the platform says, else the machine's)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


_MODELS: dict[tuple[str, ...], Any] = {}  # speech and OCR models, loaded once per process


def _model(key: tuple[str, ...], load: Any) -> Any:
    if key not in _MODELS:
        _MODELS[key] = load()
    return _MODELS[key]


def _limit_memory(megabytes: int) -> None:
    """Cap this process's address space so a runaway decode raises MemoryError instead of swapping the machine."""
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = megabytes << 20
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):  # not every platform allows it
        pass


def decode_into(conn: Connection, task: DecodeTask, memory_limit_mb: int) -> None:
    """Decode one task, sending chunks then "done", or "error" with the stage and reason.

    The "done" info holds ``kind`` (what the file turned out to be: an animated image is a
    ``video``, a video container with sound only is ``audio``), ``duration`` (seconds, the
    longest stream as decoded), ``video_end`` (where the last picture stops being shown), and
    for damaged streams ``damaged_packets`` and ``lost_seconds`` (``audio_`` ones for the sound).
    """
    try:
        info: dict[str, Any] = {"kind": task.kind, "duration": 0.0, "width": 0, "height": 0}
        no_picture: NoVideoError | None = None
        if task.visual and task.kind == "image":
            _send_image(conn, task, info)
        elif task.visual and task.kind == "video":
            try:
                _send_video(conn, task, info)
            except NoVideoError as exc:
                if task.audio is None:
                    raise
                info["kind"] = "audio"  # a sound-only .mp4/.mkv: indexed for the stream it has
                no_picture = exc
        if task.audio is not None and info["kind"] in ("video", "audio"):
            try:
                _send_audio(conn, task, info)
            except MediaError as exc:
                if no_picture is not None:  # neither pictures nor sound: say both, not only that sound is missing
                    raise DecodeError(task.path, f"{no_picture.reason}, and {exc.reason}") from None
                if info["kind"] == "audio":
                    raise
                info["audio_note"] = exc.reason  # a video without usable sound still has its pictures
        decoded_end = max(info.get("video_end", 0.0), info.get("audio_end", 0.0))
        if decoded_end > 0:  # what decoded, not what the container claims (an MKV counts its start in)
            info["duration"] = decoded_end
        _send_words(conn, task, info)
        conn.send(("done", info))
    except MediaError as exc:
        conn.send(("error", exc.stage, exc.reason))
    except MemoryError:
        conn.send(("error", "decode", f"exceeded the decoder memory limit of {memory_limit_mb} MB"))
    except Exception as exc:  # anything else a decoder throws is this file's failure
        conn.send(("error", "decode", f"{type(exc).__name__}: {exc}"[:500]))


def _send_image(conn: Connection, task: DecodeTask, info: dict[str, Any]) -> None:
    """A still as one frame at 0 s; an animated GIF, WebP or PNG as a short video."""
    with open_image(task.path) as im:
        info["width"], info["height"] = im.size
        animated = is_animation(im)
    if animated:
        info["kind"] = "video"
        _send_frames(conn, task, info, Animation())
        return
    batch = image_batch(task.path, short_side=task.short_side)
    conn.send(("chunk", batch.frames, batch.timestamps))


def _send_video(conn: Connection, task: DecodeTask, info: dict[str, Any]) -> None:
    backend = _video_backend(task)
    probe = backend.probe(task.path)
    info.update(duration=probe.duration, width=probe.width, height=probe.height)
    _send_frames(conn, task, info, backend)


def _video_backend(task: DecodeTask) -> Any:
    """The task's video decoder with its settings."""
    return get_backend(task.backend, skip_nonref=task.skip_nonref, skip_loop_filter=task.skip_loop_filter, threads=task.decoder_threads)


def _send_frames(conn: Connection, task: DecodeTask, info: dict[str, Any], decoder: Any) -> None:
    """Stream a video decoder's frames (without repeats when ``task.skip_similar``), then record where
    its pictures end, how many frames were skipped as repeats and what damage cost."""
    frames_sent = 0
    skipper = FrameSkipper() if task.skip_similar else None
    for batch in decoder.iter_frames(task.path, fps=task.fps, short_side=task.short_side, chunk_size=task.chunk_frames):
        frames, timestamps = batch.frames, batch.timestamps
        if skipper is not None:
            keep = skipper.filter(timestamps, frames)
            frames, timestamps = frames[keep], timestamps[keep]
        if len(timestamps):
            conn.send(("chunk", frames, timestamps))
        frames_sent += len(timestamps)
    if frames_sent == 0:
        raise DecodeError(task.path, "no frames")
    if skipper is not None and skipper.skipped:
        info["skipped_frames"] = skipper.skipped
    info["video_end"] = float(decoder.video_end)
    if decoder.damaged_packets:
        info["damaged_packets"] = int(decoder.damaged_packets)
        info["lost_seconds"] = float(decoder.lost_seconds)


def _send_audio(conn: Connection, task: DecodeTask, info: dict[str, Any]) -> None:
    """Stream the non-silent windows of the soundtrack; silent ones are counted, never embedded."""
    from .audio import AudioDamage, iter_audio_windows

    spec = task.audio
    assert spec is not None  # checked by the caller (the duration comes from the windows' end: decode_into)
    clips: list[np.ndarray] = []
    starts: list[float] = []
    ends: list[float] = []
    silent = 0

    def flush() -> None:
        if clips:
            conn.send(("audio", list(clips), np.asarray(starts), np.asarray(ends)))
            clips.clear()
            starts.clear()
            ends.clear()

    damage = AudioDamage()
    for window in iter_audio_windows(task.path, sample_rate=spec.sample_rate, window=spec.window, hop=spec.hop, damage=damage):
        info["audio_end"] = max(info.get("audio_end", 0.0), window.end)
        if window.silent:
            silent += 1
            continue
        clips.append(window.samples)
        starts.append(window.start)
        ends.append(window.end)
        if len(clips) >= spec.windows_per_message:
            flush()
    flush()
    if silent:
        info["audio_silent_windows"] = silent
    if damage.damaged_packets:
        info["audio_damaged_packets"] = damage.damaged_packets
        info["audio_lost_seconds"] = damage.lost_seconds


def _send_words(conn: Connection, task: DecodeTask, info: dict[str, Any]) -> None:
    """Speech and subtitles (the speech space), on-screen text (the text space), then captions (the
    caption space); a failure of one costs only its words and is recorded in ``info["stage_failures"]``."""
    from .spaces import CAPTION, SPEECH, TEXT

    failures: list[tuple[str, str]] = []
    kind = info["kind"]

    def send(space: str, segments: list[Any]) -> None:
        if segments:
            conn.send(("text", space, np.asarray([s.start for s in segments], np.float64),
                       np.asarray([s.end for s in segments], np.float64), [s.text for s in segments]))

    def attempt(stage: str, run: Any) -> None:
        try:
            run()
        except MemoryError:
            raise
        except MediaError as exc:
            failures.append((stage, exc.reason))
        except MMSearchError as exc:  # our own one-line message (a model gone since the index recorded it): as it is
            failures.append((stage, str(exc)[:300]))
        except Exception as exc:  # noqa: BLE001 - a model or decoder failing costs this stage only
            failures.append((stage, f"{type(exc).__name__}: {exc}"[:300]))

    if task.speech and kind in ("video", "audio") and not info.get("audio_note"):
        attempt("speech", lambda: _transcribe(conn, task, info, send))
    if task.speech and kind == "video":
        def subtitles() -> None:
            from .subtitles import read_subtitles

            segments, problems = read_subtitles(task.path)
            send(SPEECH, segments)
            tagged = [s.language for s in segments if s.language]
            if tagged and not info.get("language"):  # nothing said (or not transcribed): the subtitles' language
                info["language"] = max(set(tagged), key=tagged.count)
            if problems:
                info.setdefault("notes", []).extend(problems)
        attempt("subtitles", subtitles)
    if task.ocr_interval and kind in ("video", "image"):
        def read_text() -> None:
            from . import ocr

            engine = _model(("ocr",), ocr.OcrEngine)
            if kind == "image":
                send(TEXT, ocr.ocr_image(task.path, engine=engine))
            else:
                send(TEXT, ocr.ocr_video(
                    task.path, backend=task.backend, interval=float(task.ocr_interval or ocr.OCR_INTERVAL), engine=engine,
                    duration=info.get("video_end") or None, on_frame=lambda: conn.send(("alive",)),
                    decoder=_frame_decoder(task),
                ))
        attempt("ocr", read_text)
    if task.captions and kind in ("video", "image"):
        def write_captions() -> None:
            from . import captions

            def load() -> Any:
                import torch

                torch.set_num_threads(1)  # beside the encoder and the other decoders (see the README)
                return captions.load_captioner(task.captions, device=task.asr_device)

            captioner = _model(("captions", task.captions, task.asr_device), load)
            if kind == "image":
                send(CAPTION, captions.caption_image(task.path, captioner))
            else:
                send(CAPTION, captions.caption_video(
                    task.path, captioner, stride=task.caption_stride, duration=info.get("video_end") or None,
                    on_frame=lambda: conn.send(("alive",)), decoder=_frame_decoder(task),
                ))
        attempt("captions", write_captions)
    if failures:
        info["stage_failures"] = failures


def _frame_decoder(task: DecodeTask) -> Any:
    """What reads a file's frames again for its words (OCR, captions): an animated GIF, WebP or PNG
    (a file planned as an image that turned out to move), else the video's own decoder, with its settings."""
    return Animation() if task.kind == "image" else _video_backend(task)


def _transcribe(conn: Connection, task: DecodeTask, info: dict[str, Any], send: Any) -> None:
    from .errors import EncoderError, NoAudioError
    from .spaces import SPEECH
    from .speech import load_asr_model, transcribe

    assert task.speech is not None
    threads = min(4, usable_cores())

    def load() -> Any:
        try:
            return load_asr_model(task.speech, device=task.asr_device, threads=threads)
        except EncoderError:
            if task.asr_device == "cpu":
                raise
            return load_asr_model(task.speech, device="cpu", threads=threads)  # CTranslate2 without its CUDA libraries

    model = _model(("asr", task.speech, task.asr_device), load)
    batch: list[Any] = []

    def found(segment: Any) -> None:
        batch.append(segment)
        if len(batch) >= 8:
            send(SPEECH, batch)
            batch.clear()
        else:
            conn.send(("alive",))

    try:
        conn.send(("alive",))  # the model is loaded; the sound is decoded next
        transcript = transcribe(task.path, model, on_segment=found, on_progress=lambda: conn.send(("alive",)))
    except NoAudioError:
        return  # no sound: nothing said
    send(SPEECH, batch)
    if transcript.segments:
        info["language"] = transcript.language


def main(argv: list[str]) -> None:
    # Ctrl-C reaches the whole process group: the parent handles it (and stops this process)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_ffmpeg()  # what FFmpeg says about a file is measured (damage), not printed over the progress bar
    fd, memory_limit_mb = int(argv[0]), int(argv[1])
    _limit_memory(memory_limit_mb)
    conn = Connection(fd)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        decode_into(conn, task, memory_limit_mb)


class DecodeWorker:
    """The parent's handle on one decoder process and the file it is working on."""

    def __init__(self, memory_limit_mb: int) -> None:
        parent, child = socket.socketpair()
        self.process = subprocess.Popen(
            # -P: the current directory is not put first on the import path, so a folder named mmsearch
            # there (a clone's root, seen from the folder it sits in) cannot shadow the installed package
            [sys.executable, "-P", "-m", "mmsearch.decode_worker", str(child.fileno()), str(memory_limit_mb)],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
        )
        child.close()
        self.conn = Connection(parent.detach())
        self.task: DecodeTask | None = None
        self.last_seen = time.monotonic()

    def start(self, task: DecodeTask) -> None:
        self.task = task
        self.last_seen = time.monotonic()
        try:
            self.conn.send(task)
        except OSError:  # died before it could take work: the read side reports it
            pass

    def describe_exit(self) -> str:
        code = self.process.poll()
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def crashed(self) -> str:
        """The reason to record for a file whose decoder process died (the process is reaped)."""
        self.kill()
        return f"decoder process crashed ({self.describe_exit()})"

    def hung(self, stall_timeout: float) -> str:
        """Kill a decoder that made no progress for ``stall_timeout`` seconds; the reason to record."""
        self.kill()
        return f"decoder made no progress for {stall_timeout:.0f} s (hung); killed"

    def messages(self, task: DecodeTask, *, stall_timeout: float) -> Iterator[tuple]:
        """Decode one file: the messages of :func:`decode_into` (``chunk``, ``audio``, ``text``, ending
        with ``("done", info)`` or ``("failed", stage, reason)``: its ``error``), "alive" ones left out.
        A process that dies or hangs ends it with ``("failed", "decode", reason)``; then this worker is
        dead (:attr:`dead`) and a new one is needed."""
        self.start(task)
        while True:
            if not wait([self.conn], timeout=min(1.0, stall_timeout)):
                if time.monotonic() - self.last_seen > stall_timeout:
                    yield ("failed", "decode", self.hung(stall_timeout))
                    return
                continue
            self.last_seen = time.monotonic()
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                yield ("failed", "decode", self.crashed())
                return
            if message[0] == "alive":
                continue
            if message[0] == "error":  # the decoder's own verdict on the file (it waits for the next one)
                yield ("failed", *message[1:])
                return
            yield message
            if message[0] == "done":
                return

    @property
    def dead(self) -> bool:
        return self.process.poll() is not None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        if not self.conn.closed:
            self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if not self.conn.closed:
            self.conn.close()


if __name__ == "__main__":
    main(sys.argv[1:])
