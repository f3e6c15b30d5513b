"""``mmsearch serve``: an HTTP API (FastAPI under uvicorn) and a web page over one index.

Routes (OpenAPI at ``/openapi.json``):

- ``GET /api/search?q=...`` and ``POST /api/search`` (an uploaded image or sound file): exactly the
  JSON of ``mmsearch query --json``, each result adding ``media_url`` and ``thumbnail_url``. The
  filters of :class:`mmsearch.filters.MediaFilter` apply inside the search.
- ``GET /api/timeline?q=...&media=ID``: how well each moment of one media item matches the query
  (:meth:`mmsearch.api.Index.similarity_over_time`).
- ``GET /media/{id}``: the indexed file itself, with HTTP Range requests (Starlette's
  ``FileResponse``), so a player seeks to the moment; ids, never paths, in URLs.
- ``GET /thumbnail/{id}?t=SECONDS``: a JPEG of the picture at that second (a waveform for sound),
  cached inside the index directory (``cache/thumbnails``, bounded in size).
- ``GET /api/info``: what ``mmsearch info --json`` says; ``GET /api/health``: the index and generation.
- ``GET /``: the search page (``mmsearch/assets/web``: HTML and a little JavaScript, no build step).

The :class:`mmsearch.api.Index` is opened once and reopened when a new generation is committed
(checked at most every :data:`RELOAD_SECONDS`), so ``mmsearch index`` may run beside the server.
A token (``Authorization: Bearer``, or the cookie the page sets after ``/?token=...``) is required
whenever one is configured, and always when the server listens beyond loopback. While it runs, the
server's address is recorded in the index directory (:data:`ADDRESS_FILE`), where ``mmsearch
query`` finds it and sends its query there instead of loading the models itself.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import mimetypes
import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from .api import Index, SearchResult, freeze_text_towers, open_index, query_answer
from .client import ADDRESS_FILE, MAX_K, MAX_TEXT, MAX_VIDEOS, find_server, server_answers
from .decode_worker import usable_cores
from .errors import IndexNotFoundError, MediaError, MMSearchError, UsageError
from .fileio import atomic_write, display_path
from .filters import KINDS, MediaFilter, media_filter
from .media import media_kind
from .spaces import DEFAULT_AUDIO_WEIGHT, TEXT_SPACES
from .store import index_exists, manifest_stamp

THUMBNAILS = "cache/thumbnails"
THUMBNAIL_SIDE = 240  # pixels, the short side
THUMBNAIL_CACHE_BYTES = 256 * 2**20
MAX_UPLOAD_BYTES = 64 * 2**20
MAX_UPLOAD_PIXELS = 40_000_000  # an example picture; decoding one costs about 4 bytes a pixel, and more for 16-bit
RELOAD_SECONDS = 1.0
COOKIE = "mmsearch_token"
WEB = Path(__file__).parent / "assets" / "web"
# container types a browser's player should be told (mimetypes lacks some, varies by platform for others)
CONTENT_TYPES = {
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
    ".webm": "video/webm", ".ogv": "video/ogg", ".avi": "video/x-msvideo", ".ts": "video/mp2t", ".mts": "video/mp2t",
    ".m2ts": "video/mp2t", ".3gp": "video/3gpp", ".flv": "video/x-flv", ".wmv": "video/x-ms-wmv", ".mpg": "video/mpeg",
    ".mpeg": "video/mpeg", ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".wav": "audio/wav", ".flac": "audio/flac",
    ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg", ".aac": "audio/aac", ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".gif": "image/gif", ".heic": "image/heic",
    ".avif": "image/avif", ".tif": "image/tiff", ".tiff": "image/tiff", ".bmp": "image/bmp",
}
Modality = Literal["video", "audio", "speech", "text", "caption", "all"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address to bind) reaches this machine only."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class IndexHolder:
    """The index a server answers from: opened once, reopened when a new generation is committed.

    ``get()`` looks at the manifest file at most every ``RELOAD_SECONDS``; when it changed, the new
    generation is opened (keeping the encoders already built, :meth:`Index.reopened`) and swapped in
    for later requests, while requests under way finish on the snapshot they started with.
    """

    def __init__(self, root: str | os.PathLike, *, device: str = "auto") -> None:
        self.root = Path(root)
        self._index = open_index(self.root, device=device)
        self._stamp = self._manifest_stamp()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _manifest_stamp(self) -> tuple[int, ...]:
        return manifest_stamp(self.root)

    def get(self) -> Index:
        if time.monotonic() - self._checked < RELOAD_SECONDS:
            return self._index
        with self._lock:
            try:
                stamp = self._manifest_stamp()
            except OSError:
                if not index_exists(self.root):  # a commit replaces the manifest in one rename: the index is gone
                    raise IndexNotFoundError(
                        f"the index at {self.root} is gone since this server opened it (moved or deleted): index the "
                        "media again with mmsearch index, or restart mmsearch serve with --index where it is now"
                    ) from None
                return self._index
            self._checked = time.monotonic()  # not while it is gone: each request looks again
            if stamp != self._stamp:
                try:
                    self._index = self._index.reopened()
                except (MMSearchError, OSError, ValueError) as exc:  # a generation that does not open: keep the last good one
                    logging.getLogger("mmsearch").warning("serving generation %s: the newer one does not open (%s)",
                                                          self._index.manifest.get("generation"), exc)
                    return self._index  # the stamp is kept, so the next check tries again
                self._stamp = stamp
            return self._index

    def warm(self) -> None:
        """Freeze the text towers if the index lacks them, load them (or build the text encoders) now,
        not on the first query (errors wait for a query to show them), and give each request one CPU
        thread in torch and FAISS: concurrent requests are the parallelism (two threads per small
        query made it slower, and fought other requests)."""
        import faiss
        import torch

        torch.set_num_threads(1)
        faiss.omp_set_num_threads(1)
        try:  # an index written before text towers existed gets them now (once; a no-op when current)
            freeze_text_towers(self.root)
        except (MMSearchError, OSError):  # a read-only index, weights gone: queries build the encoders
            pass
        idx = self.get()
        idx.recheck_towers()
        for space in idx._text_query_spaces(None):
            try:
                idx.embed_queries(text=["warm up"], space=space)
                if space in TEXT_SPACES:
                    idx.text_query(space, "warm up")
            except MMSearchError:
                pass


@dataclass(frozen=True)
class ServeConfig:
    """What ``mmsearch serve`` was asked for; ``token`` None means no token is required."""

    index: Path
    host: str = "127.0.0.1"
    port: int = 8321
    token: str | None = None
    device: str = "auto"
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    thumbnail_cache_bytes: int = THUMBNAIL_CACHE_BYTES
    extra_hosts: tuple[str, ...] = ()  # Host names answered without a token besides this machine's loopback ones


def _where(
    path: Annotated[str | None, Query(description="A path prefix, or a glob (*.mov)")] = None,
    kind: Annotated[list[str] | None, Query(description="video, image or audio; repeat or comma-separate")] = None,
    min_duration: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    max_duration: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    modified_after: Annotated[str | None, Query(description="A date (2024-05-01, local time), a date-time or epoch seconds")] = None,
    modified_before: Annotated[str | None, Query(description="As modified_after; a date alone includes that day")] = None,
    language: Annotated[list[str] | None, Query(description="ISO 639-1 codes of what is said; repeat or comma-separate")] = None,
    tag: Annotated[list[str] | None, Query(description="Sound tags (any case): only moments whose sound was tagged so; repeat")] = None,
) -> MediaFilter:
    """The filter query parameters every search takes (a FastAPI dependency), as a :class:`MediaFilter`."""
    return media_filter(path=path, kinds=kind, min_duration=min_duration, max_duration=max_duration,
                        modified_after=modified_after, modified_before=modified_before, languages=language, tags=tag)


def create_app(config: ServeConfig, holder: IndexHolder | None = None) -> FastAPI:
    """The FastAPI application over ``config.index`` (``holder``: an index already opened)."""
    holder = holder or IndexHolder(config.index, device=config.device)
    trusted_hosts = {"localhost", "127.0.0.1", "::1", _host_name(config.host.lower())} | set(config.extra_hosts)
    # As many searches at once as there are cores, the rest wait their turn: more only share the cores
    # (and the GIL) and finish later, all of them (a long tail at 8 clients on 2 cores).
    searching = threading.BoundedSemaphore(usable_cores())
    thumbnails = ThumbnailCache(holder.root / THUMBNAILS, limit_bytes=config.thumbnail_cache_bytes)
    app = FastAPI(
        title="mmsearch",
        summary="Search your own videos, images and music by meaning: files and the exact seconds.",
        version=_version(),
    )
    app.state.holder = holder
    app.state.config = config

    app.add_middleware(Guard, config=config, trusted_hosts=trusted_hosts)

    @app.exception_handler(MMSearchError)
    async def mmsearch_error(request: Request, exc: MMSearchError) -> JSONResponse:
        status = 400 if isinstance(exc, UsageError) else 415 if isinstance(exc, MediaError) else 503 if isinstance(exc, IndexNotFoundError) else 500
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(OSError)
    async def unreadable(request: Request, exc: OSError) -> JSONResponse:
        """A file that cannot be read or written (one of the index's deleted under the server, a full disk): 503
        and which file and why, not a 500."""
        return JSONResponse({"detail": f"cannot read or write {exc.filename or 'a file'} ({exc.strerror or exc}); if the index "
                                       "was moved or deleted under this server, index again or restart mmsearch serve"}, status_code=503)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((WEB / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """The index this server answers from and its generation."""
        idx = holder.get()
        return {"status": "ok", "index": os.path.abspath(idx.root), "generation": idx.manifest["generation"]}

    @app.get("/api/info")
    def info(failures: bool = False) -> dict[str, Any]:
        """What ``mmsearch info --json`` says (``failures=true``: as ``--failures``)."""
        idx = holder.get()
        data = idx.info()
        if failures:
            data["failed_files"] = idx.failures()
            data["damaged_files"] = idx.damaged()
        return data

    @app.get("/api/search")
    def search_get(
        q: Annotated[str, Query(min_length=1, max_length=MAX_TEXT, description="What to look for, in words.")],
        where: Annotated[MediaFilter, Depends(_where)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        videos: Annotated[int, Query(ge=1, le=MAX_VIDEOS)] = 20,
        modality: Modality | None = None,
        exhaustive: bool = False,
        audio_weight: Annotated[float, Query(ge=0.0, le=1.0)] = DEFAULT_AUDIO_WEIGHT,
        rerank: bool = False,
        response: Response = None,  # type: ignore[assignment]  # FastAPI's: for the Server-Timing header
    ) -> dict[str, Any]:
        """Moments matching a text, best first: the JSON of ``mmsearch query --json`` with URLs. The
        ``Server-Timing`` header says how long the request waited for a turn and how long it searched.
        ``rerank``: the best moments scored again by the index's default image-text matcher (:meth:`Index.rerank`)."""
        idx = holder.get()
        queued = time.perf_counter()
        with searching:
            started = time.perf_counter()
            results = idx.search(q, modality=modality, k=k, videos=videos, exhaustive=exhaustive, audio_weight=audio_weight, where=where,
                                 rerank=rerank)
        response.headers["Server-Timing"] = (f"wait;dur={(started - queued) * 1000:.1f}, "
                                             f"search;dur={(time.perf_counter() - started) * 1000:.1f}")
        answer = query_answer(idx, results, text=q, modality=modality, k=k, videos=videos, exhaustive=exhaustive, where=where,
                              rerank=rerank, audio_weight=audio_weight)
        return _with_urls(answer, results)

    @app.post("/api/search")
    def search_post(
        file: Annotated[UploadFile, File(description="An image (finds pictures) or a sound file (finds sound)")],
        where: Annotated[MediaFilter, Depends(_where)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        videos: Annotated[int, Query(ge=1, le=MAX_VIDEOS)] = 20,
        modality: Literal["video", "audio"] | None = None,
        exhaustive: bool = False,
        example: Annotated[Literal["image", "audio"] | None, Query(description="What the file is [default: from its type or name]")] = None,
        q: Annotated[str | None, Query(include_in_schema=False)] = None,
    ) -> dict[str, Any]:
        """Moments like an example image or sound (uploaded as ``file``), best first; the other
        parameters go in the query string, as for ``GET``."""
        if q is not None:  # as the CLI refuses a text with --image: one query, not a text silently left out
            raise HTTPException(400, "give a query text (GET /api/search?q=...) or an uploaded file, not both")
        if file.size is not None and file.size > config.max_upload_bytes:
            raise HTTPException(413, f"the upload is larger than {config.max_upload_bytes // 2**20} MiB")
        name = os.path.basename((file.filename or "").rstrip("/")) or "upload"
        example = example or _example_kind(name, file.content_type)
        suffix = os.path.splitext(name)[1].lower()[:10] if os.path.splitext(name)[1].isascii() else ""
        with tempfile.TemporaryDirectory(prefix="mmsearch-upload-") as tmp:
            local = os.path.join(tmp, "example" + (suffix or (".png" if example == "image" else ".wav")))
            with open(local, "wb") as out:
                shutil.copyfileobj(file.file, out)
            if example == "image":
                _check_pixels(local, name)
            idx = holder.get()
            given = {"image": local} if example == "image" else {"audio": local}
            try:
                with searching:
                    results = idx.search(None, modality=modality, k=k, videos=videos, exhaustive=exhaustive, where=where, **given)
            except MediaError as exc:  # named by the upload, not by this server's temporary copy
                raise HTTPException(415, str(exc).replace(local, name)) from None
        shown = {example: name}
        answer = query_answer(idx, results, modality=modality, k=k, videos=videos, exhaustive=exhaustive, where=where, **shown)
        return _with_urls(answer, results)

    @app.get("/api/timeline")
    def timeline(
        q: Annotated[str, Query(min_length=1, max_length=2000)],
        media: int,
        modality: Modality | None = None,
    ) -> dict[str, Any]:
        """How well each segment of one media item matches ``q``, per space, in time order (seconds)."""
        idx = holder.get()
        row = idx.media_row(media)
        if row is None:
            raise HTTPException(404, f"no media item {media} in this index")
        with searching:
            spaces = idx.similarity_over_time(q, media, modality=modality)
        return {"media": media, "duration": row["duration"], "spaces": spaces}

    @app.get("/media/{media_id}", response_class=FileResponse, responses={206: {"description": "the bytes a Range asked for"}})
    @app.head("/media/{media_id}", include_in_schema=False)
    def media_file(media_id: str) -> FileResponse:
        """The indexed file (HTTP Range requests: 206 with those bytes, 416 outside the file)."""
        idx = holder.get()
        path = _existing_path(idx, media_id)
        return FileResponse(path, media_type=content_type(path), content_disposition_type="inline",
                            filename=display_path(os.path.basename(path)))  # a name that is not UTF-8 shown as \xNN

    @app.get("/thumbnail/{media_id}", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(media_id: str, t: Annotated[float, Query(ge=0, le=1e7)] = 0.0) -> Response:
        """A JPEG of the picture at ``t`` seconds (the short side 240 px; a waveform around ``t`` for sound)."""
        idx = holder.get()
        path = _existing_path(idx, media_id)
        row = idx.media_row(int(media_id))
        data = thumbnails.get(int(media_id), min(t, float(row.get("duration") or 0.0)), path, str(row["kind"]))
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    return app


def content_type(path: str) -> str:
    """The Content-Type a browser is told for an indexed file."""
    ext = os.path.splitext(path)[1].lower()
    return CONTENT_TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def _existing_path(idx: Index, media_id: str) -> str:
    """The first indexed path of ``media_id`` that is still a file; 404 for anything else (ids are
    digits only, so no path can be smuggled in)."""
    if not media_id.isascii() or not media_id.isdigit() or len(media_id) > 19:
        raise HTTPException(404, "no such media item")
    for path in idx.media_paths(int(media_id), unchanged=True):
        return path
    raise HTTPException(404, "no such media item, or its file is gone or changed since it was indexed (run mmsearch index again)")


def _with_urls(answer: dict[str, Any], results: list[SearchResult]) -> dict[str, Any]:
    for row, result in zip(answer["results"], results):
        row["media_url"] = f"/media/{result.media_id}#t={result.start:.3f},{result.end:.3f}"
        row["thumbnail_url"] = f"/thumbnail/{result.media_id}?t={(result.start + result.end) / 2:.1f}"
    return answer


def _example_kind(name: str, content_type: str | None) -> Literal["image", "audio"]:
    """An upload as a query image or a query sound, by its content type, else its file name; 415 otherwise."""
    major = (content_type or "").split("/")[0].lower()
    if major in ("image", "audio"):
        return major  # type: ignore[return-value]
    kind = media_kind(name) if (content_type or "application/octet-stream") == "application/octet-stream" else None
    if kind in ("image", "audio"):
        return kind  # type: ignore[return-value]
    raise HTTPException(415, f"{name}: upload an image (image/*) or a sound file (audio/*), not {content_type or 'this'}")


def _host_name(host: str) -> str:
    """``example.org:8321`` -> ``example.org``; ``[::1]:8321`` -> ``::1``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _check_pixels(path: str, name: str) -> None:
    """413 for an uploaded picture of more than :data:`MAX_UPLOAD_PIXELS` (read from its header, before decoding)."""
    from .media import open_image

    try:
        with open_image(path) as im:
            width, height = im.size
    except MMSearchError:
        return  # not readable: the search says so, naming the upload
    if width * height > MAX_UPLOAD_PIXELS:
        raise HTTPException(413, f"{name}: {width}x{height} pixels is more than a query image needs; send one under "
                                 f"{MAX_UPLOAD_PIXELS // 10**6} megapixels")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"the upload is larger than {limit // 2**20} MiB; send a smaller image or a shorter sound"},
                        status_code=413)


class Guard:
    """Every request's checks, as one ASGI middleware (Starlette's ``BaseHTTPMiddleware`` cost a few
    milliseconds a request each, and requests here take 15):

    - without a token, only this machine's names are answered as Host (a page of another site that
      rebinds its own name to 127.0.0.1 sends that name), and a POST from another site's page (its
      Origin) is refused;
    - with a token, it must come as ``Authorization: Bearer`` or the cookie ``/?token=`` sets (the
      page and its static files hold no data and load without it, to say what to do on a 401);
    - an upload past ``max_upload_bytes`` gets 413: by its Content-Length, or counted as it arrives.
    """

    def __init__(self, app: Any, *, config: ServeConfig, trusted_hosts: set[str]) -> None:
        self.app = app
        self.config = config
        self.trusted_hosts = trusted_hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        limit = self.config.max_upload_bytes
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                await _too_large(limit)(scope, receive, send)
                return
        seen, over = 0, False

        async def counted() -> Any:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:  # stop reading: the app answers the broken body, and that answer is replaced
                over = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def sending(message: Any) -> None:
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":
                await _too_large(limit)(scope, receive, send)

        await self.app(scope, counted if request.method == "POST" else receive, sending)

    def _refusal(self, request: Request) -> Response | None:
        token = self.config.token
        host = request.headers.get("host", "").lower()
        if token is None and _host_name(host) not in self.trusted_hosts:
            return JSONResponse({"detail": f"this server answers for {', '.join(sorted(self.trusted_hosts))} only"}, status_code=400)
        origin = request.headers.get("origin")
        if request.method == "POST" and origin and origin.split("://", 1)[-1].lower() != host:
            return JSONResponse({"detail": "a request from another site's page is refused"}, status_code=403)
        if token is None:
            return None
        path = request.url.path
        if path == "/" and hmac.compare_digest(request.query_params.get("token", "").encode(), token.encode()):
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            page = RedirectResponse("/" + (f"?{rest}" if rest else ""), status_code=303)  # the token leaves the address bar
            page.set_cookie(COOKIE, token, httponly=True, samesite="strict")  # and the cookie keeps it
            return page
        given = _bearer(request) or request.cookies.get(COOKIE) or ""
        if hmac.compare_digest(given.encode(errors="replace"), token.encode()) or path == "/" or path.startswith("/static/"):
            return None
        return JSONResponse({"detail": "a token is required: open the address mmsearch serve printed, "
                             "or send Authorization: Bearer TOKEN"}, status_code=401)


class ThumbnailCache:
    """JPEG thumbnails on disk (``directory``), by media id and tenth of a second; the oldest files
    are removed when the folder passes ``limit_bytes``."""

    def __init__(self, directory: Path, *, limit_bytes: int) -> None:
        self.directory = directory
        self.limit_bytes = limit_bytes
        self._written = 0
        self._lock = threading.Lock()

    def get(self, media_id: int, seconds: float, path: str, kind: str) -> bytes:
        seconds = round(seconds, 1)
        target = self.directory / f"{media_id}-{int(round(seconds * 10))}.jpg"
        try:
            return target.read_bytes()
        except OSError:
            pass
        data = render_thumbnail(path, seconds, kind)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda tmp: tmp.write_bytes(data), suffix=".part", fsync=False)
        except OSError:  # a read-only index, a full disk: the thumbnail is still answered, just not kept
            return data
        with self._lock:
            self._written += 1
            if self._written % 32 == 1:
                self._trim()
        return data

    def _trim(self) -> None:
        files = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".jpg"):
                st = entry.stat()
                files.append((st.st_mtime, st.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        for _, size, name in sorted(files):
            if total <= self.limit_bytes:
                break
            Path(name).unlink(missing_ok=True)
            total -= size


def render_thumbnail(path: str, seconds: float, kind: str) -> bytes:
    """A JPEG of the picture at ``seconds`` (short side :data:`THUMBNAIL_SIDE`), or for sound the
    waveform of the 10 s around it, the moment marked."""
    import io

    from PIL import Image, ImageDraw

    if kind == "audio":
        import numpy as np

        from .audio import load_audio

        rate = 16000
        samples, offset = load_audio(path, sample_rate=rate, max_seconds=seconds + 5.0)
        lo = max(0, int((seconds - 5.0 - offset) * rate))
        part = samples[lo : lo + 10 * rate]
        w, h = 2 * THUMBNAIL_SIDE * 16 // 9 // 2, THUMBNAIL_SIDE
        im = Image.new("RGB", (w, h), (24, 28, 36))
        draw = ImageDraw.Draw(im)
        if len(part):
            columns = np.array_split(np.abs(part), w)
            peak = max(float(np.abs(part).max()), 1e-6)
            for x, col in enumerate(columns):
                v = float(col.max()) / peak if len(col) else 0.0
                draw.line([(x, h / 2 - v * h * 0.45), (x, h / 2 + v * h * 0.45)], fill=(120, 190, 255))
        mark = w * (seconds - max(0.0, seconds - 5.0)) / 10.0
        draw.line([(mark, 0), (mark, h)], fill=(255, 200, 60), width=2)
    else:
        from .media import picture_at

        im = Image.fromarray(picture_at(path, seconds, short_side=THUMBNAIL_SIDE))
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=82)
    return out.getvalue()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mmsearch")
    except Exception:  # pragma: no cover - not installed
        return "0"


# ---------------------------------------------------------------------------------------- running
def write_address(root: Path, url: str, token: str | None) -> Path:
    """Record a running server in the index directory (readable by its owner only)."""
    record = {"url": url, "token": token, "pid": os.getpid(), "index": os.path.abspath(root)}
    target = root / ADDRESS_FILE
    # the token is its owner's only
    atomic_write(target, lambda tmp: tmp.write_text(json.dumps(record)), suffix=".json", fsync=False, mode=0o600)
    return target


def _check_port(host: str, port: int) -> None:
    """UsageError when ``host:port`` cannot be listened on (in use, or an address not of this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or --host") from None


def remove_address(root: Path) -> None:
    """Remove the address record if it is this process's."""
    target = root / ADDRESS_FILE
    try:
        if json.loads(target.read_text()).get("pid") == os.getpid():
            target.unlink()
    except (OSError, ValueError):
        pass


def serve(config: ServeConfig, *, on_ready: Any = None) -> None:
    """Run the server until interrupted (Ctrl-C). Beyond loopback a token is required: the one
    given, or a new one (``config.token`` None), which ``on_ready(url)`` shows in the URL it gets."""
    import uvicorn

    if config.token is not None and not (config.token.isascii() and config.token.isprintable() and " " not in config.token):
        raise UsageError("--token must be printable ASCII without spaces (it travels in an HTTP header)")
    if not is_loopback(config.host) and not config.token:
        config = ServeConfig(**{**config.__dict__, "token": secrets.token_urlsafe(24)})
    running = find_server(config.index)
    if running is not None and server_answers(running):
        raise UsageError(f"a server for {config.index} already runs at {running['url']} (pid {running['pid']}); "
                         "stop it first, or query it")
    _check_port(config.host, config.port)
    holder = IndexHolder(config.index, device=config.device)
    app = create_app(config, holder)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", access_log=False))
    wildcard = config.host in ("0.0.0.0", "::", "")
    bracket = (lambda h: f"[{h}]" if ":" in h else h)  # noqa: E731 - an IPv6 address in a URL
    local_host = "127.0.0.1" if wildcard else bracket(config.host)  # where mmsearch query on this machine finds it
    url = f"http://{socket.gethostname() if wildcard else bracket(config.host)}:{config.port}/"  # where others do
    started = server.startup

    async def startup(sockets: Any = None) -> None:
        await started(sockets=sockets)
        if server.started:
            threading.Thread(target=holder.warm, name="mmsearch-warm", daemon=True).start()
            write_address(holder.root, f"http://{local_host}:{config.port}", config.token)
            if on_ready is not None:
                on_ready(url + (f"?token={config.token}" if config.token else ""))

    server.startup = startup  # type: ignore[method-assign]

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    # uvicorn stops on SIGTERM and SIGINT, then raises the signal again under the handler it found:
    # a Python one, so the address record is removed on the way out
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped, not an error
        pass
    finally:
        remove_address(holder.root)
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise UsageError(f"cannot listen on {config.host}:{config.port} (in use? try --port)")


__all__ = ["ADDRESS_FILE", "IndexHolder", "KINDS", "MediaFilter", "ServeConfig", "create_app", "is_loopback", "serve"]
