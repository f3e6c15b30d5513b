"""Sending a query to a running ``mmsearch serve`` of the same index (what ``mmsearch query`` does
first): the answer in milliseconds, where loading the models in a fresh process takes seconds.

Imports nothing heavy: the standard library, and httpx when a server is found.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import UsageError

ADDRESS_FILE = "server.json"  # as mmsearch.server writes it
CONNECT_SECONDS = 0.5
# what a server takes (larger queries are answered in-process, as a server would refuse them)
MAX_K, MAX_VIDEOS, MAX_TEXT = 1000, 10000, 2000


def find_server(root: str | os.PathLike) -> dict[str, Any] | None:
    """The record of a server running for the index at ``root`` (``url``, ``token``, ``pid``), or None
    when none is recorded, its process is gone, or it serves another index."""
    try:
        record = json.loads((Path(root) / ADDRESS_FILE).read_text())
        pid = int(record["pid"])
        if record.get("index") != os.path.abspath(root) or not isinstance(record.get("url"), str):
            return None
        os.kill(pid, 0)  # raises when no such process
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def server_answers(server: dict[str, Any]) -> bool:
    """Whether the recorded server answers for its index now (a record can outlive a killed server)."""
    import httpx

    headers = {"Authorization": f"Bearer {server['token']}"} if server.get("token") else {}
    try:
        response = httpx.get(server["url"] + "/api/health", headers=headers, timeout=CONNECT_SECONDS * 4)
        return response.status_code == 200 and response.json().get("index") == server.get("index")
    except (httpx.HTTPError, ValueError, UnicodeError, AttributeError):
        return False


def remote_search(
    server: dict[str, Any], params: dict[str, Any], *, upload: str | os.PathLike | None = None, timeout: float = 120.0
) -> dict[str, Any] | None:
    """``GET /api/search`` (``POST`` with ``upload``, a query image or sound file) on ``server``.

    Returns the answer, or None when the server cannot be reached (the caller searches in-process).
    Raises :class:`UsageError` with the server's message when it refuses the query (4xx).
    """
    import httpx

    if not server_answers(server):  # a stopped (SIGSTOP), foreign or other index's server: in-process
        return None
    headers = {"Authorization": f"Bearer {server['token']}"} if server.get("token") else {}
    query = [(key, v) for key, value in params.items() if value is not None
             for v in (value if isinstance(value, (list, tuple)) else [value])]
    query = [(key, str(v).lower() if isinstance(v, bool) else v) for key, v in query]
    timeouts = httpx.Timeout(timeout, connect=CONNECT_SECONDS)
    try:
        with httpx.Client(base_url=server["url"], headers=headers, timeout=timeouts) as client:
            if upload is None:
                response = client.get("/api/search", params=query)
            else:
                with open(upload, "rb") as f:
                    response = client.post("/api/search", params=query,
                                           files={"file": (os.path.basename(upload), f, "application/octet-stream")})
        body = response.json()
    except (httpx.HTTPError, ValueError, UnicodeError):  # unreachable, not JSON, a token no header can carry
        return None
    if response.status_code in (400, 413, 415, 422) and isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):  # FastAPI's validation errors
            detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail)
        raise UsageError(str(detail))
    if response.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("results"), list):
        return None  # a server in trouble, or not ours: answer in-process
    if body.get("query", {}).get("index") != server.get("index"):
        return None
    for row in body["results"]:
        row.pop("media_url", None)
        row.pop("thumbnail_url", None)
    return body
