"""The ``mmsearch`` command line: a thin typer layer over :mod:`mmsearch.api`.

User mistakes (a missing path, no index, an empty query, weights that cannot
be fetched) print one clear message and exit non-zero, never a stack trace.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from mmsearch.bench import TASKS as BENCH_TASKS
from mmsearch.errors import MMSearchError, UsageError
from mmsearch.spaces import DEFAULT_AUDIO_WEIGHT

app = typer.Typer(
    name="mmsearch",
    help="Search your own videos and images by meaning: index a folder, then query by text or example image.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _reader_gone() -> NoReturn:
    """Standard output's reader went away (`mmsearch info | head -1`): stop quietly with 141, as a program
    killed by SIGPIPE does, standard output pointed at /dev/null so Python's flush at exit cannot fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(128 + signal.SIGPIPE)


console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # messages: one line each, however long (the terminal wraps it, grep finds it)

IndexOpt = Annotated[
    Optional[Path],
    typer.Option("--index", help="Index directory \\[default: $MMSEARCH_INDEX or ~/.local/share/mmsearch/index]."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda (auto = cuda when available, fp16 there).")]


def _index_dir(index: Path | None) -> Path:
    from mmsearch.fileio import index_dir

    return index_dir(index)


class _Progress:
    """Rich progress bar fed by the ingest runner's events."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = (
            Progress(
                TextColumn("[bold]indexing"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[frames]} frames"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[current]}"),
                console=err_console,
                transient=False,
            )
            if enabled
            else None
        )
        self.task: Any = None

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if self.progress is None:
            return
        if event == "plan":
            self.progress.start()
            self.task = self.progress.add_task("index", total=data["total"], frames=0, current="")
        elif event == "start":
            self.progress.update(self.task, current=Path(data["path"]).name[:40])
        elif event == "frames":
            frames = self.progress.tasks[0].fields["frames"] + data["n"]
            self.progress.update(self.task, frames=frames)
        elif event == "file":
            self.progress.advance(self.task)

    def close(self) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.stop()


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders of videos and images.", show_default=False)],
    index: IndexOpt = None,
    model: Annotated[Optional[str], typer.Option(help="Encoder: an open_clip model name (ViT-B-32) or synth-clip.")] = None,
    pretrained: Annotated[
        Optional[str], typer.Option(help="open_clip pretrained tag, or a local checkpoint FILE.")
    ] = None,
    fps: Annotated[Optional[float], typer.Option(help="Frames sampled per second of video \\[default: 1].")] = None,
    window: Annotated[Optional[float], typer.Option(help="Moment window in seconds \\[default: 4].")] = None,
    stride: Annotated[Optional[float], typer.Option(help="Moment stride in seconds \\[default: 2].")] = None,
    backend: Annotated[Optional[str], typer.Option(help="Video decoder: pyav or decord \\[default: pyav].")] = None,
    audio: Annotated[bool, typer.Option("--audio/--no-audio", help="Embed sound: audio files and video soundtracks.")] = True,
    audio_model: Annotated[
        Optional[str], typer.Option("--audio-model", help="CLAP checkpoint id, local directory, or general | music \\[default: laion/larger_clap_general; an existing index keeps its own].")
    ] = None,
    sound_tags: Annotated[
        Optional[str], typer.Option("--sound-tags", help="Tag each window of sound with an Audio Spectrogram Transformer: audioset (MIT/ast-finetuned-audioset-10-10-0.4593), a hub id or directory, or synth-ast \\[default: none; an index with tags keeps its tagger].")
    ] = None,
    speech: Annotated[bool, typer.Option("--speech/--no-speech", help="Index what is said: speech (Whisper) and subtitles.")] = True,
    ocr: Annotated[bool, typer.Option("--ocr/--no-ocr", help="Index text on screen (RapidOCR) in videos and images.")] = True,
    captions: Annotated[
        Optional[str], typer.Option("--captions", help="Caption each moment window (its middle frame) and each image: CoCa (coca = coca_ViT-B-32 mscoco_finetuned_laion2b_s13b_b90k, an open_clip coca_* model, NAME:CHECKPOINT, synth-coca) or BLIP (blip = Salesforce/blip-image-captioning-base, a BLIP captioning hub id or save_pretrained directory, synth-blip); searchable with --modality caption \\[default: none; an index with captions keeps its captioner].")
    ] = None,
    asr_model: Annotated[
        Optional[str], typer.Option("--asr-model", help="faster-whisper model name (base, small, large-v3) or directory \\[default: base].")
    ] = None,
    text_model: Annotated[
        Optional[str], typer.Option("--text-model", help="sentence-transformers model name or directory for what is said or written \\[default: all-MiniLM-L6-v2].")
    ] = None,
    ocr_interval: Annotated[Optional[float], typer.Option("--ocr-interval", help="Seconds between frames read for text on screen \\[default: 2].")] = None,
    skip_similar: Annotated[
        Optional[bool], typer.Option("--skip-similar/--keep-similar", help="Embed a sampled frame only when it differs from the last one embedded (static shots, talking heads, slides) \\[default: skip].", show_default=False)
    ] = None,
    skip_nonref: Annotated[
        Optional[bool], typer.Option("--skip-nonref/--decode-all", help="PyAV: leave undecoded the frames no other frame refers to (most B-frames) \\[default: skip].", show_default=False)
    ] = None,
    skip_loop_filter: Annotated[
        Optional[bool], typer.Option("--skip-loop-filter/--loop-filter", help="PyAV: decode without in-loop deblocking (FFmpeg's skip_loop_filter=all): decoding costs less, pictures are slightly blockier \\[default: loop-filter].", show_default=False)
    ] = None,
    image_runtime: Annotated[
        Optional[str], typer.Option("--image-runtime", help="CLIP image tower on a CPU: torch (fp32) or onnx-int8 (ONNX Runtime, int8: faster, cosine >= 0.99 to fp32 checked at build) \\[default: torch].")
    ] = None,
    audio_window: Annotated[Optional[float], typer.Option(help="Audio window in seconds \\[default: the model's, 10 for CLAP].")] = None,
    audio_hop: Annotated[Optional[float], typer.Option(help="Audio hop in seconds \\[default: half the window].")] = None,
    device: DeviceOpt = "auto",
    workers: Annotated[
        Optional[int], typer.Option(help="Decoder processes \\[default: 2 when encoding on the CPU (1 on a single core); beside a CUDA GPU one per 4 CPU cores, at most 8].")
    ] = None,
    decoder_threads: Annotated[
        Optional[int], typer.Option("--decoder-threads", help="Video decoding threads in each decoder process, 0 to 64; 0: FFmpeg's choice (cores + 1) \\[default: the cores shared among the decoder processes].")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds a decoder may stall on one file before it is killed.")] = 120.0,
    commit_every: Annotated[float, typer.Option(help="Commit to the index at least every N seconds.")] = 30.0,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Try files that failed before again.")] = False,
    max_memory: Annotated[
        Optional[int], typer.Option("--max-memory", help="Memory budget of each vector index in MB \\[default: half of the available memory].")
    ] = None,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", help="Single-query latency target of each vector index: exact search while it meets it, else a tuned approximate index.")
    ] = 10.0,
    shards: Annotated[
        Optional[int], typer.Option("--shards", help="Split a new index into N shards by media id (searched together, merged top-k); an existing index keeps its own \\[default: 1].")
    ] = None,
    executor: Annotated[
        str, typer.Option("--executor", help="Where files are decoded and embedded: local (processes on this machine) or ray (a Ray Data pipeline; pip install \"mmsearch\\[ray]\").")
    ] = "local",
    ray_address: Annotated[
        Optional[str], typer.Option("--ray-address", help="With --executor ray: the cluster (auto: the one `ray start` runs here; ray://HOST:10001) \\[default: start a local one].")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Index (or update) the media under PATHS. Re-running only embeds what is new or changed."""
    from mmsearch.fileio import display_path as shown
    from mmsearch.api import index_paths, ingest_config

    root = _index_dir(index)
    config = ingest_config(  # what the index was built with, the options given here on top
        root, fps=fps, backend=backend, window=window, stride=stride, workers=workers, stall_timeout=timeout,
        commit_seconds=commit_every, retry_failed=retry_failed, max_memory_mb=max_memory, latency_ms=latency_ms,
        audio_window=audio_window, audio_hop=audio_hop, asr_model=asr_model, ocr_interval=ocr_interval,
        skip_similar=skip_similar, skip_nonref=skip_nonref, skip_loop_filter=skip_loop_filter, image_runtime=image_runtime,
        decoder_threads=decoder_threads,
    )
    progress = _Progress(enabled=not quiet and sys.stderr.isatty())
    global _interrupt_hint
    _interrupt_hint = "; the index keeps everything committed so far, run the same command to resume"
    try:
        report = index_paths(
            paths, root, model=model, pretrained=pretrained, audio=audio, audio_model=audio_model, sound_tags=sound_tags,
            speech=speech, ocr=ocr, captions=captions, asr_model=asr_model, text_model=text_model, device=device, config=config,
            progress=progress, shards=shards, executor=executor, ray_address=ray_address,
        )
    finally:
        progress.close()
    if report.upgraded_from is not None:
        err_console.print(f"converted the index at {shown(str(root))} from format {report.upgraded_from} (embeddings kept)", highlight=False)
    for path, stage, reason in report.failed:
        err_console.print(f"[yellow]skipped[/] {_plain(path)}: {stage} failed: {_plain(reason)}", highlight=False)
    for path, damage in report.damaged:
        err_console.print(f"[yellow]damaged[/] {_plain(path)}: {_plain(damage)}; indexed for what decoded (mmsearch info --failures lists it)",
                          highlight=False)
    for path, note in report.no_audio:
        err_console.print(f"[dim]no sound indexed for {_plain(path)}: {_plain(note)}[/]", highlight=False)
    for path, stage, reason in report.partial:
        err_console.print(f"[yellow]indexed without {stage}[/] {_plain(path)}: {_plain(reason)} (mmsearch info --failures lists it)", highlight=False)
    for path, note in report.notes:
        err_console.print(f"[yellow]note[/] {_plain(path)}: {_plain(note)}", highlight=False)
    summary = (
        f"indexed {len(report.indexed)}, unchanged {report.unchanged}, moved {len(report.moved)}, "
        f"duplicates {len(report.duplicates)}, removed {len(report.removed)}, failed {len(report.failed)}"
    )
    if report.damaged:
        summary += f", damaged {len(report.damaged)}"
    if report.skipped_failed:
        summary += f", skipped {report.skipped_failed} that failed before (--retry-failed to retry)"
    if report.not_media:
        counts = ", ".join(f"{ext} {n}" for ext, n in report.not_media.items())
        summary += f"; not media (or not a kind asked for), passed over: {sum(report.not_media.values())} ({counts})"
    t = report.timings
    console.print(
        f"{summary}; {report.frames} frames"
        + (f" ({report.repeated_frames} repeated frames skipped)" if report.repeated_frames else "")
        + f", {report.audio_windows} audio windows" + (f" ({report.sound_tags} sound tags)" if report.sound_tags else "")
        + f", {report.text_segments} segment{'s' * (report.text_segments != 1)} of words (said, subtitled, on screen or captioned) "
        f"-> {root} (generation {report.generation})",
        highlight=False, soft_wrap=True,
    )
    console.print(
        f"timings: hash {t['hash']:.1f}s, waiting for decode {t['decode_wait']:.1f}s, encode {t['encode']:.1f}s, "
        f"commit {t['commit']:.1f}s",
        style="dim",
        highlight=False, soft_wrap=True,
    )


FILTER_HELP = "Filters (applied inside the search)"


@app.command()
def query(
    text: Annotated[Optional[str], typer.Argument(help="What to look for, in words.", show_default=False)] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="Query by an example image file.")] = None,
    audio: Annotated[Optional[Path], typer.Option("--audio", help="Query by an example sound file.")] = None,
    modality: Annotated[
        Optional[str],
        typer.Option("--modality", help="What to find: video | audio | speech (what is said, subtitles too) | text (written on screen) | caption (what a captioner said is seen, index --captions) | all "
                     "\\[default: for text, pictures and words fused per moment; video for images, audio for sound]."),
    ] = None,
    batch: Annotated[
        Optional[Path], typer.Option("--batch", help="Many queries: a file with one per line, or a JSON list (- reads standard input); prints JSON lines.")
    ] = None,
    index: IndexOpt = None,
    k: Annotated[int, typer.Option("-k", help="Number of moments to return.")] = 10,
    videos: Annotated[int, typer.Option("--videos", help="Stage 1: videos ranked before moments are localized.")] = 20,
    exhaustive: Annotated[bool, typer.Option("--exhaustive", help="Search every moment of the corpus in one stage.")] = False,
    audio_weight: Annotated[
        Optional[float], typer.Option("--audio-weight", help="--modality all: weight of the sound in a moment's score (pictures and words: 1 - this) [default: 0.5].")
    ] = None,
    path: Annotated[
        Optional[str], typer.Option("--path", help="Only files under this path prefix, or matching this glob ('*.mov', '*/2019/*').",
                                    rich_help_panel=FILTER_HELP)
    ] = None,
    kind: Annotated[
        Optional[list[str]], typer.Option("--kind", help="Only this kind of media: video | image | audio (repeat or comma-separate).",
                                          rich_help_panel=FILTER_HELP)
    ] = None,
    min_duration: Annotated[Optional[float], typer.Option("--min-duration", help="Only media at least this long (seconds).",
                                                          rich_help_panel=FILTER_HELP)] = None,
    max_duration: Annotated[Optional[float], typer.Option("--max-duration", help="Only media at most this long (seconds).",
                                                          rich_help_panel=FILTER_HELP)] = None,
    modified_after: Annotated[Optional[str], typer.Option("--modified-after", help="Only files modified on or after this date (2024-05-01).",
                                                          rich_help_panel=FILTER_HELP)] = None,
    modified_before: Annotated[Optional[str], typer.Option("--modified-before", help="Only files modified on or before this date.",
                                                           rich_help_panel=FILTER_HELP)] = None,
    language: Annotated[
        Optional[list[str]], typer.Option("--language", help="Only media where this language is said (ISO 639-1: en, de; repeatable).",
                                          rich_help_panel=FILTER_HELP)
    ] = None,
    tag: Annotated[
        Optional[list[str]], typer.Option("--tag", help="Only the stretches where the sound is tagged so (mmsearch index --sound-tags; any case; repeat for any of several); a text without --modality then searches the sound.",
                                          rich_help_panel=FILTER_HELP)
    ] = None,
    rerank: Annotated[bool, typer.Option("--rerank", help="Score the best 20 moments again with an image-text matcher whose words attend to the picture (BLIP ITM; slower, better at which colour goes with which thing).")] = False,
    rerank_model: Annotated[Optional[str], typer.Option("--rerank-model", help="The --rerank matcher: blip (Salesforce/blip-itm-base-coco), a BLIP hub id or directory, or synth-itm \\[default: synth-itm for a synth-clip index, else blip].")] = None,
    local: Annotated[bool, typer.Option("--local", help="Search in this process even when a server for the index is running.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Find the moments that match TEXT (or --image FILE), best first.

    When `mmsearch serve` runs for the same index, the query is sent there (answered at once,
    the models already loaded); --local searches here instead.
    """
    from mmsearch.filters import GLOB_CHARS, check_query, media_filter

    if path is not None and path and not any(c in path for c in GLOB_CHARS):  # a prefix: absolute, as indexed paths are
        path = os.path.abspath(os.path.expanduser(path)) + ("/" if path.endswith(("/", os.sep)) else "")
    options = {"path": path, "kinds": kind, "min_duration": min_duration, "max_duration": max_duration,
               "modified_after": modified_after, "modified_before": modified_before, "languages": language, "tags": tag}
    where = media_filter(**options)
    if audio_weight is not None and modality != "all":
        raise UsageError("--audio-weight weighs the sound against the other spaces of --modality all: add --modality all, or leave it out")
    audio_weight = DEFAULT_AUDIO_WEIGHT if audio_weight is None else audio_weight
    if batch is not None:
        if rerank:
            raise UsageError("--rerank is for one query at a time, not --batch")
        if any(q is not None for q in (text, image, audio)):
            raise UsageError("give a query text, --image FILE or --audio FILE, or --batch FILE with many queries, not both")
        _query_batch(batch, index=index, modality=modality, k=k, videos=videos, exhaustive=exhaustive, device=device, where=where,
                     audio_weight=audio_weight)
        return
    given = [q for q in (text, image, audio) if q is not None]
    if not given:
        raise UsageError('give a query text (mmsearch query "a dog on a beach"), --image FILE or --audio FILE')
    if len(given) > 1:
        raise UsageError("give one of a query text, --image FILE or --audio FILE, not several")
    for flag, value in (("--image", image), ("--audio", audio)):
        if value is not None and not value.is_file():
            raise UsageError(f"{flag} {value}: no such file")
    check_query(text, k, videos, audio_weight)
    if rerank_model is not None and not rerank:
        raise UsageError("--rerank-model names the matcher of --rerank: add --rerank")
    if rerank and text is None:
        raise UsageError("--rerank re-scores the moments a text finds: give a query text")
    example = image or audio
    answer = None if local or rerank_model is not None else _remote_query(  # a server re-ranks with its default matcher only
        _index_dir(index), text=text, upload=example, example="image" if image is not None else "audio" if audio is not None else None,
        params={"q": text, "k": k, "videos": videos, "modality": modality, "exhaustive": exhaustive,
                "audio_weight": audio_weight if modality == "all" else None, "path": path, "kind": where.kinds or None,
                "min_duration": min_duration, "max_duration": max_duration, "modified_after": where.modified_after,
                "modified_before": where.modified_before, "language": where.languages or None, "tag": where.tags or None,
                "rerank": rerank or None},
    )
    if answer is None:
        from mmsearch.api import open_index, query_answer

        idx = open_index(_index_dir(index), device=device)
        results = idx.search(  # type: ignore[arg-type]
            text, image=image, audio=audio, modality=modality, k=k, videos=videos, exhaustive=exhaustive,
            audio_weight=audio_weight, where=where, rerank=rerank, rerank_model=rerank_model,
        )
        answer = query_answer(idx, results, text=text, image=image and str(image), audio=audio and str(audio), modality=modality,
                              k=k, videos=videos, exhaustive=exhaustive, where=where, rerank=rerank, audio_weight=audio_weight)
    if example is not None:  # the file as given here, not as uploaded
        answer["query"]["image" if image is not None else "audio"] = str(example.absolute())
    gone = _gone(answer["results"])
    if as_json:
        _write_json_line(answer)
    else:
        _print_results(answer, text=text, image=image, audio=audio, gone=gone)
    _warn_gone(gone)


def _remote_query(
    root: Path, *, text: str | None, upload: Path | None, example: str | None, params: dict[str, Any]
) -> dict[str, Any] | None:
    """The answer of a server running for ``root`` (see :mod:`mmsearch.client`), or None when none runs."""
    from mmsearch.client import MAX_K, MAX_TEXT, MAX_VIDEOS, find_server, remote_search

    server = find_server(root)
    if server is None or params["k"] > MAX_K or params["videos"] > MAX_VIDEOS or len(text or "") > MAX_TEXT:
        return None  # none runs, or a query larger than a server takes: in-process
    if upload is not None:
        params = {**{k: v for k, v in params.items() if k != "q"}, "example": example}
    answer = remote_search(server, params, upload=upload)
    if answer is not None:
        logging.getLogger("mmsearch").info("answered by the server at %s", server["url"])
    return answer


def _gone(results: list[dict[str, Any]]) -> list[str]:
    """The paths (as shown) of results whose files are no longer where they were indexed, once each."""
    return list(dict.fromkeys(r["path"] for r in results if not os.path.lexists(_real_path(r))))


def _warn_gone(gone: list[str]) -> None:
    """One line on stderr when results name files that are no longer where they were indexed (:func:`_gone`)."""
    if gone:
        which = _plain(gone[0]) + (f" and {len(gone) - 1} more" if len(gone) > 1 else "")
        err_console.print(f"note: {which} {'is' if len(gone) == 1 else 'are'} gone since indexing (moved or deleted); "
                          f"run mmsearch index on {'its' if len(gone) == 1 else 'their'} folder again to update the index", markup=False, highlight=False)


def _real_path(result: dict[str, Any]) -> str | bytes:
    """A result's file name as the file system has it (``path_bytes`` where the name is not UTF-8)."""
    return base64.b64decode(result["path_bytes"]) if result.get("path_bytes") else result["path"]


def _print_results(answer: dict[str, Any], *, text: str | None, image: Path | None, audio: Path | None,
                   gone: Iterable[str] = ()) -> None:
    results = answer["results"]
    if not results:
        said = {"speech": "says", "text": "shows"}.get(answer["query"].get("modality") or "", "says or shows")
        console.print("no results" + (f": nothing {said} the quoted words" if text and '"' in text
                                      else ": nothing passes the filters" if answer["query"].get("filter")
                                      else " (is the index empty?)"))
        return
    table = Table(title=_plain(repr(text)) if text else f"{'image' if image else 'sound'} {image or audio}", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("file", overflow="fold")  # never cut a path short
    for col in ("start", "end", "score", "media"):  # media: the whole file's score (stage 1, `video_score` in --json)
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("modality")
    words = any(r.get("text") for r in results)
    if words:
        table.add_column("words", overflow="fold")
    tagged = any(r.get("tags") for r in results)
    if tagged:
        table.add_column("sound tags", overflow="fold")
    captioned = any(r.get("caption") for r in results)
    if captioned:
        table.add_column("caption", overflow="fold")
    matched = answer["query"].get("rerank")
    if matched:
        table.add_column("match", justify="right", no_wrap=True)  # --rerank: the matcher's probability
    for i, r in enumerate(results, 1):
        cells = [
            str(i), _plain(r["path"]) + (" (gone)" if r["path"] in gone else ""), _clock(r["start"]), _clock(r["end"]), f"{r['score']:.3f}",
            "" if r.get("video_score") is None else f"{r['video_score']:.3f}", r["modality"],
        ]
        match = ["–" if r.get("match_score") is None else f"{r['match_score']:.3f}"] if matched else []
        table.add_row(*cells, *_described(r, words=words, tagged=tagged, captioned=captioned), *match)
    if console.is_terminal or os.environ.get("COLUMNS"):
        console.print(table)
    else:  # piped (rich would assume 80 columns): as wide as the rows need, a path or a sentence never folded over lines
        from rich.measure import Measurement

        Console(width=Measurement.get(console, console.options.update_width(100_000), table).maximum).print(table)


def _described(result: dict[str, Any], *, words: bool, tagged: bool, captioned: bool) -> list[str]:
    """A result's cells after the usual ones: the words that matched, its sound tags, its caption (each when its column
    is shown; a caption that is the words that matched, a result of the caption space, as a ditto mark)."""
    tags = ", ".join(f"{t['label']} {t['score']:.2f}" for t in result.get("tags") or ())
    return ([_plain(result.get("text") or "")] if words else []) + ([_plain(tags)] if tagged else []) \
        + (["〃" if result.get("caption") is not None and result.get("caption") == result.get("text")
            else _plain(result.get("caption") or "")] if captioned else [])


def _query_batch(
    path: Path, *, index: Path | None, modality: str | None, k: int, videos: int, exhaustive: bool, device: str, where: Any = None,
    audio_weight: float = DEFAULT_AUDIO_WEIGHT,
) -> None:
    """One JSON line per query, in input order: {"query": {...}, "results": [...]}."""
    from mmsearch.api import open_index, query_answer

    if str(path) != "-" and (not path.exists() or path.is_dir()):
        raise UsageError(f"--batch {path}: no such file" + (" (a folder)" if path.is_dir() else ""))
    try:
        raw = (sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()).decode("utf-8-sig")  # - : standard input
    except OSError as exc:
        raise UsageError(f"--batch {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"--batch {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8, one query per line") from None
    try:
        loaded = json.loads(raw)
    except json.JSONDecodeError as exc:
        if raw.lstrip().startswith(("[\"", "[{", "[\n", "[ ", "[]")):  # meant as a JSON list: say where it breaks
            raise UsageError(f"--batch {path}: not a valid JSON list ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                             "fix it, or give one query per line") from None
        loaded = None
    texts = None
    if isinstance(loaded, list):
        texts = [q.get("text") if isinstance(q, dict) else q for q in loaded]
        if not all(isinstance(t, str) for t in texts):
            raise UsageError(f'--batch {path}: a JSON list must hold strings or {{"text": "..."}} objects')
    if texts is None:
        texts = [line.strip() for line in raw.splitlines() if line.strip()]
    if not texts:
        raise UsageError(f"--batch {path}: no queries in it (one per line, or a JSON list of strings)")
    idx = open_index(_index_dir(index), device=device)
    results = idx.search_batch(texts, modality=modality, k=k, videos=videos, exhaustive=exhaustive, where=where,  # type: ignore[arg-type]
                               audio_weight=audio_weight)
    for text, hits in zip(texts, results):  # each line as `mmsearch query TEXT --json` prints it
        _write_json_line(query_answer(idx, hits, text=text, modality=modality, k=k, videos=videos, exhaustive=exhaustive, where=where,
                                      audio_weight=audio_weight))


def _plain(value: Any) -> str:
    """A value shown on the console as it is: valid Unicode (see :func:`_text_safe`), its square
    brackets kept rather than read as rich markup ("[applause]", "pip install 'mmsearch[speech]'")."""
    from rich.markup import escape

    return escape(str(_text_safe(value)))


def _text_safe(value: Any) -> Any:
    """``value`` with every string valid Unicode: file names that are not UTF-8 get \\xNN for those bytes
    (a lone surrogate in JSON is rejected by strict parsers). Results keep the exact bytes in ``path_bytes``."""
    from mmsearch.fileio import display_path

    if isinstance(value, str):
        return display_path(value)
    if isinstance(value, dict):
        return {_text_safe(k): _text_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_text_safe(v) for v in value]
    return value


def _write_json_line(data: Any) -> None:
    """``data`` as one line of JSON on standard output, valid Unicode, ending in a newline."""
    sys.stdout.write(json.dumps(_text_safe(data), default=str) + "\n")


def _clock(seconds: float) -> str:
    minutes, sec = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{sec:05.2f}" if hours else f"{minutes}:{sec:05.2f}"


def _describe_recipe(recipe: dict) -> str:
    """`IVF2048,PQ128x4fs,RFlat (nprobe=16, k_factor_rf=8; recall@10 0.96 in 0.5 ms; chosen for 1000000 vectors)`."""
    params = recipe.get("params", {})
    shown = ", ".join(f"{k}={params[k]}" for k in ("nprobe", "efSearch", "k_factor_rf") if k in params)
    measured = f"recall@10 {params['recall_at_10']}" if "recall_at_10" in params else "exact"
    if "query_recall_at_10" in params:  # on the query probes (mmsearch.probes); recall_at_10 is the lower of the two
        measured += f" (on query probes {params['query_recall_at_10']})"
    if "tuned_ms" in params:
        measured += f" in {params['tuned_ms']} ms"
    return f"{recipe.get('factory')} ({shown + '; ' if shown else ''}{measured}; chosen for {recipe.get('chosen_for', 0)} vectors)"


def _describe_indexes(space: dict) -> str:
    """A space's vector index; of a sharded index, each shard's (once when they are alike)."""
    per_shard = space.get("shard_indexes")
    if not per_shard:
        return _describe_recipe(space["index"])
    described = [_describe_recipe(r) if r else "none yet" for r in per_shard]
    if len(set(described)) == 1:
        return f"{described[0]} on each of {len(described)} shards"
    return "per shard: " + "; ".join(f"{i}: {d}" for i, d in enumerate(described))


@app.command()
def info(
    index: IndexOpt = None,
    failures: Annotated[
        bool, typer.Option("--failures", help="List the files that could not be indexed, and the damaged ones indexed for what decoded.")
    ] = False,
    check: Annotated[bool, typer.Option("--check", help="Verify every file of the index against its checksum.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What is in an index: media counts, encoder, index type, failures."""
    from mmsearch.api import open_index, verify_index

    root = _index_dir(index)
    if check:
        verify_index(root)
    idx = open_index(root)
    data = idx.info()
    if failures:
        data["failed_files"] = idx.failures()
        data["damaged_files"] = idx.damaged()
    if as_json:
        _write_json_line(data)
        return
    shards = f", {data['shards']} shards" if data.get("shards", 1) > 1 else ""
    console.print(f"[bold]index[/] {data['index']} (generation {data['generation']}, format {data['format_version']}{shards})", highlight=False, soft_wrap=True)
    console.print(
        f"media: {', '.join(f'{kind} {n}' for kind, n in data['media'].items()) or 'none'}; paths {data['paths']}; "
        f"failures {data['failures']}; damaged {data['damaged']}"
        + (" (--failures lists them)" if (data["failures"] or data["damaged"]) and not failures else ""),
        highlight=False, soft_wrap=True,
    )
    console.print("config: " + (", ".join(f"{k}={v}" for k, v in data["config"].items()) or "defaults"), highlight=False, soft_wrap=True)
    if data.get("sound_tags"):
        tags = data["sound_tags"]
        console.print(f"sound tags: {tags['tags']} (window, label) pairs from {tags['tagger'].get('model')} ({tags['tagger'].get('pretrained')}, "
                      f"threshold {tags['tagger'].get('threshold')})" + (": " + ", ".join(f"{label} {n}" for label, n in tags["labels"].items())
                                                                           if tags["labels"] else ""), highlight=False, soft_wrap=True)
    if data.get("languages"):
        console.print("languages said: " + ", ".join(f"{lang} {n}" for lang, n in data["languages"].items()), highlight=False, soft_wrap=True)
    for name, space in data["spaces"].items():
        enc = space["encoder"]
        console.print(
            f"space [bold]{name}[/]: {enc.get('model')} ({enc.get('pretrained')}), dim {enc.get('dim')}; "
            + {"speech": f"{space['frames']} sentences and subtitles", "text": f"{space['frames']} lines on screen",
               "caption": f"{space['frames']} captions",
               "audio": f"{space['frames']} sound windows"}.get(name, f"{space['frames']} frames")
            + f", {space['moments']} moment{'' if space['moments'] == 1 else 's'}; index {_describe_indexes(space)}"
            + (f"; {space['moments_exact']} newest moments searched exactly until the index takes them" if space["moments_exact"] else "")
            + (f"; {space['removed_media']} removed or replaced media skipped until compaction" if space["removed_media"] else ""),
            highlight=False, soft_wrap=True,  # one line per space, however long: the terminal wraps it, grep finds it
        )
    if check:
        console.print("[green]check passed[/]: every file matches its checksum")
    if failures:
        for f in data["failed_files"]:
            console.print(f"  failed {_plain(f['path'])}: {f['stage']}: {_plain(f['reason'])}", highlight=False, soft_wrap=True)
        for f in data["damaged_files"]:
            console.print(f"  damaged {_plain(f['path'])}: {_plain(f['damage'])} (indexed for what decoded)", highlight=False, soft_wrap=True)
        if not data["failed_files"] and not data["damaged_files"]:
            console.print("no file failed or was damaged")


_interrupt_hint = ""  # what to do after Ctrl-C, said by a command that knows (index: run it again to resume)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@app.command()
def serve(
    index: IndexOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on; beyond loopback a token is required.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8321,
    token: Annotated[
        Optional[str], typer.Option("--token", help="Require this token \\[default: none on loopback; elsewhere one is generated and printed].",
                                    envvar="MMSEARCH_TOKEN")
    ] = None,
    device: DeviceOpt = "auto",
    ray: Annotated[bool, typer.Option("--ray", help="Serve a sharded index on Ray Serve: one deployment per shard and a router (text queries of pictures and sound).")] = False,
    ray_address: Annotated[
        Optional[str], typer.Option("--ray-address", help="With --ray: the cluster (auto: the one `ray start` runs here) \\[default: start a local one].")
    ] = None,
) -> None:
    """Serve the index over HTTP: a search page that plays the moment it found, and a JSON API."""
    from mmsearch.server import ServeConfig, serve as run_server

    root = _index_dir(index)
    if not 0 < port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {port}")
    if ray_address is not None and not ray:
        raise UsageError("--ray-address is for --ray (a sharded index on Ray Serve): add --ray, or leave out --ray-address")
    if ray:
        import signal
        import time

        from mmsearch.serve_ray import serving

        try:
            with serving(ServeConfig(index=root, host=host, port=port, token=token or None, device=device), address=ray_address) as (url, needed):
                console.print(f"mmsearch serving {_plain(os.path.abspath(root))} on Ray Serve at [bold]{url}api/search?q=...[/] (Ctrl-C stops it)"
                              + (f"; send the header 'Authorization: Bearer {needed}'" if needed else ""), highlight=False, soft_wrap=True)
                sys.stdout.flush()  # the address, at once, also into a pipe
                signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as Ctrl-C does (Ray's own handler dumps a stack)
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM, also while Ray stops: stopped, as mmsearch serve stops
            pass
        return

    def ready(url: str) -> None:
        console.print(f"mmsearch serving {_plain(os.path.abspath(root))} at [bold]{url}[/] (Ctrl-C stops it)", highlight=False, soft_wrap=True)
        sys.stdout.flush()

    run_server(ServeConfig(index=root, host=host, port=port, token=token or None, device=device), on_ready=ready)


@app.command()
def upgrade(index: IndexOpt = None) -> None:
    """Convert an index written by an earlier mmsearch to this version's format, in place (embeddings kept)."""
    from mmsearch.api import index_format, upgrade_index

    root = _index_dir(index)
    before = index_format(root)
    generation = upgrade_index(root)
    after = index_format(root)
    done = f"converted from format {before} to {after}" if before != after else f"already format {after}, nothing to do"
    console.print(f"{root}: {done} (generation {generation})", highlight=False, soft_wrap=True)


@app.command()
def remove(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to drop from the index.", show_default=False)],
    index: IndexOpt = None,
) -> None:
    """Drop files from the index (the files themselves are not touched)."""
    from mmsearch.api import remove_paths

    removed = remove_paths(list(paths), _index_dir(index))
    if not removed:
        raise UsageError(f"none of {', '.join(map(str, paths))} is in the index")
    console.print(f"removed {len(removed)} file(s) from the index", highlight=False)


@app.command("train-space")
def train_space_cmd(
    index: IndexOpt = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the (frames, sound) pairs of the index.")] = 30,
    dim: Annotated[int, typer.Option(min=1, help="Dimension of the common space.")] = 128,
    seed: Annotated[int, typer.Option(help="Random seed of the heads' initialisation and batches.")] = 0,
    untrained: Annotated[bool, typer.Option("--untrained", help="Keep randomly initialised heads (a baseline).")] = False,
) -> None:
    """Learn a VATT-style common space from the index's own videos (no captions needed)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mmsearch.api import HeadConfig, train_space

    root = _index_dir(index)
    config = HeadConfig(common_dim=dim, epochs=epochs, seed=seed)
    with Progress(
        TextColumn("[bold]training heads"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(), console=err_console, disable=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("train", total=None, loss="-")

        def progress(step: int, loss: float, scale: float) -> None:
            bar.update(task, completed=step + 1, loss=f"{loss:.3f}")

        report = train_space(root, config=config, progress=progress, untrained=untrained)
    final = f"{report.losses[-1]:.3f}" if report.losses else "n/a (untrained)"
    console.print(
        f"common space v{report.heads_version}: {report.pairs} (frames, sound) pairs from {report.videos} videos, "
        f"{report.steps} steps in {report.seconds:.1f}s, final loss {final}",
        highlight=False,
    )
    if report.loss_plot:
        console.print(f"loss curve: {report.loss_plot}", highlight=False)


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the corpus and ground_truth.json/.parquet into.")],
    videos: Annotated[int, typer.Option(help="Number of videos.")] = 20,
    audio: Annotated[int, typer.Option(help="Number of audio-only files.")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same corpus.")] = 0,
    paired: Annotated[
        int, typer.Option(help="Pair N visual classes one-to-one with N sound classes (a common-space corpus; 0 = off).")
    ] = 0,
    max_width: Annotated[int, typer.Option(help="Largest frame width (the world allows up to 1280).")] = 1280,
    max_height: Annotated[int, typer.Option(help="Largest frame height (the world allows up to 720).")] = 720,
    together: Annotated[
        float, typer.Option("--together", help="Probability that a shape shares the screen with a second one (issue #19's harder world for --rerank).")
    ] = 0.0,
) -> None:
    """Generate a synthetic corpus with known ground truth (coloured shapes, tones and beats)."""
    from dataclasses import replace

    from mmsearch.synth import SynthConfig, generate_corpus, paired_config

    if not 0.0 <= together <= 1.0:
        raise UsageError(f"--together is a probability between 0 and 1, got {together}")
    config = SynthConfig(max_size=(max_width, max_height), companion_probability=together)
    if paired:
        config = replace(paired_config(seed, paired, max_size=(max_width, max_height)), companion_probability=together)
    rows = generate_corpus(out_dir, videos=videos, audio=audio, seed=seed, config=config)
    console.print(f"wrote {videos} video{'s' * (videos != 1)}, {audio} audio file{'s' * (audio != 1)} and {len(rows)} ground-truth "
                  f"event{'s' * (len(rows) != 1)} to {out_dir}", highlight=False)


@app.command()
def demo(
    out_dir: Annotated[Optional[Path], typer.Argument(help="Working folder \\[default: a temporary folder].")] = None,
    videos: Annotated[int, typer.Option(help="Number of synthetic videos.")] = 8,
    quick: Annotated[bool, typer.Option("--quick", help="Fewer videos (for CI smoke runs).")] = False,
) -> None:
    """Offline demo: generate a small world, index it with the shipped tiny models, query, compare with ground truth."""
    import tempfile

    from mmsearch.demo import run_demo

    with tempfile.TemporaryDirectory(prefix="mmsearch-demo-") as tmp:
        target = out_dir or Path(tmp)
        result = run_demo(
            target, videos=4 if quick else videos, audio=2 if quick else 4, log=lambda m: console.print(m, highlight=False)
        )
        correct = 0
        asked = 0
        for row in result.rows:
            if not row["in_corpus"]:
                console.print(f"[dim]{row['query']!r}: not in this corpus, skipped[/]")
                continue
            asked += 1
            flag = f" --modality {row['modality']}" if row["modality"] != "video" else ""
            flag += f" --tag {row['tag']!r}" if row.get("tag") else ""
            table = Table(title=f"mmsearch query {row['query']!r}{flag}", title_justify="left")
            table.add_column("#", justify="right")
            table.add_column("file")
            table.add_column("moment", justify="right")
            table.add_column("score", justify="right")
            table.add_column("ground truth", justify="left")
            words = any(hit.get("text") for hit in row["hits"])
            if words:
                table.add_column("words", justify="left")
            tagged = any(hit.get("tags") for hit in row["hits"])
            if tagged:
                table.add_column("sound tags (synth-ast)", justify="left")
            captioned = any(hit.get("caption") for hit in row["hits"])
            if captioned:
                table.add_column("caption (synth-coca)", justify="left")
            for i, hit in enumerate(row["hits"], 1):
                truth = hit["truth"]
                verdict = (
                    f"[green]✓[/] {truth['start']:.1f}-{truth['end']:.1f}s (IoU {hit['iou']:.2f})"
                    if truth and hit["iou"] >= 0.5
                    else ("[yellow]~[/] overlaps weakly" if truth and hit["iou"] > 0 else "[red]✗[/] no such event here")
                )
                cells = [str(i), Path(hit["path"]).name, f"{hit['start']:.1f}-{hit['end']:.1f}s", f"{hit['score']:.3f}", verdict]
                table.add_row(*cells, *_described(hit, words=words, tagged=tagged, captioned=captioned))
                if i == 1 and truth and hit["iou"] >= 0.5:
                    correct += 1
            console.print(table)
        s = result.seconds
        console.print(
            f"top-1 right file and moment (IoU >= 0.5) for {correct} of {asked} queries; "
            f"generate {s['generate']:.1f}s, index {s['index']:.1f}s, query {s['query']:.1f}s",
            highlight=False,
        )
        if out_dir is None:
            console.print("(pass a folder, e.g. `mmsearch demo ./demo`, to keep the corpus and index)")


@app.command("bench")
def bench(
    task: Annotated[str, typer.Argument(help=f"Benchmark: {', '.join(BENCH_TASKS)}.", show_default=False)],
    data: Annotated[Path, typer.Option("--data", help="Folder with the official annotation file (or the file itself).", show_default=False)],
    media: Annotated[Optional[Path], typer.Option("--media", help="Folder holding videos/ or audio/ (default: --data).")] = None,
    index: Annotated[Optional[Path], typer.Option("--index", help="Index to (re)use and keep (default: a temporary one).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Visual encoder (ViT-B-32, synth-clip, ...).")] = None,
    pretrained: Annotated[Optional[str], typer.Option("--pretrained", help="open_clip pretrained tag or checkpoint FILE.")] = None,
    audio_model: Annotated[Optional[str], typer.Option("--audio-model", help="CLAP checkpoint id or directory (sound tasks).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N queries (and the media they need).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the result JSON here.")] = None,
    per_query: Annotated[Optional[Path], typer.Option("--per-query", help="Write one JSON line per query here.")] = None,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Write a markdown report here.")] = None,
    device: DeviceOpt = "auto",
    videos: Annotated[int, typer.Option("--videos", help="Stage 1: media ranked before moments are localized (as mmsearch query).")] = 20,
) -> None:
    """Score retrieval on a published benchmark (MSR-VTT, TVR, AudioCaps, ...) from its official annotation file."""
    from mmsearch.bench import encoder_label, metric_rows, run_bench

    result = run_bench(
        task, data, media_dir=media, index_dir=index, model=model, pretrained=pretrained, audio_model=audio_model,
        limit=limit, device=device, out=out, per_query=per_query, markdown=markdown, videos=videos,
        log=lambda message: err_console.print(f"[dim]{message}[/]", highlight=False),
    )
    header, rows = metric_rows(result)
    table = Table(title=f"{result['task']}: {result['n_queries']} queries, {result['n_candidates']} candidates, "
                        f"{encoder_label(result['encoder'])}")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 and "VCMR" in result["metrics"] else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    missing = result["missing_media"]
    if missing["items"]:
        err_console.print(f"[yellow]{missing['items']} media files not found[/] (e.g. {', '.join(missing['examples'][:3])}); "
                          f"their {missing['queries']} queries were left out", highlight=False)
    if result["not_indexed"]["items"]:
        err_console.print(f"[yellow]{result['not_indexed']['items']} files could not be indexed[/]; their queries count as "
                          f"not retrieved (rank {result['rank_of_not_retrieved']})", highlight=False)
    s = result["seconds"]
    console.print(f"index {s['index']:.1f}s, encode {s['encode']:.1f}s, score {s['score']:.1f}s, total {s['total']:.1f}s",
                  style="dim", highlight=False)
    for label, path in (("result", out), ("per-query", per_query), ("markdown", markdown)):
        if path is not None:
            console.print(f"{label}: {path}", highlight=False)


def main() -> None:
    """Entry point: run the app, turning mmsearch errors into one message and an exit code."""
    # Libraries log download retries and fallbacks; mmsearch reports what matters itself.
    level = os.environ.get("MMSEARCH_LOG", "CRITICAL").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("huggingface_hub", "transformers", "open_clip"):
        logging.getLogger(noisy).setLevel(level)
    terminated: list[int] = []

    def on_sigterm(signum: int, frame: Any) -> None:  # `kill`, a service manager stopping it: as Ctrl-C, exit 143
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        returned = app(standalone_mode=False)
        sys.stdout.flush()  # inside the try: a reader gone by now is a broken pipe here, not at exit
    except BrokenPipeError:  # a reader gone by the last flush
        _reader_gone()
    except SystemExit as exc:  # rich's consoles (ours, typer's help) and click exit 1 when they see the pipe break
        if isinstance(exc.__context__, BrokenPipeError):
            _reader_gone()
        raise
    except MMSearchError as exc:
        err_console.print(f"[red]error:[/] {_plain(exc)}", highlight=False)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        returned = 130
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # usage errors, from click or from the copy of click typer bundles
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    # Without standalone mode, an interrupt (Ctrl-C) and typer's own exits come back as a return code.
    if returned == 130:
        err_console.print("interrupted" + _interrupt_hint)
        returned = 128 + signal.SIGTERM if terminated else 130
    if isinstance(returned, int) and returned:
        sys.exit(returned)


if __name__ == "__main__":
    main()
