"""``mmsearch serve --ray``: a sharded index served by Ray Serve, one deployment per shard and a router.

Each shard deployment (:class:`ShardSearcher`) opens one shard directory (``shard-NNN/``) of a
sharded index, so shards can live on different machines (each with its shard's files) and be
replicated independently; it reopens its shard when a new generation is committed. The router
(:class:`Router`, the HTTP entry) embeds the query and runs the two retrieval stages across the
shards (:func:`sharded_search`), in two rounds of calls that carry top lists only:

1. every shard ranks its own media (stage 1; for ``exhaustive``, its best moment windows); the
   router merges the lists and keeps the ``videos`` best media of all shards;
2. every shard localizes moments in its share of those media (stage 2), each media keeping its
   rank over all shards; the router merges the moments by the order one index uses
   (:func:`mmsearch.retrieval.hit_order`) and keeps ``k``.

So the answers are those of the same sharded index searched in one process (and of one unsharded
index, within float rounding). Spaces of vectors (pictures, sound: ``modality`` ``video`` or
``audio``) are served this way; queries over the spaces of words and fused queries need corpus
statistics (BM25) and per-moment fusion over all candidates, which this router does not gather
yet: they answer 501 and are served by ``mmsearch serve`` (one process over the whole index).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .api import MODALITIES, Index, SearchResult, open_index, query_answer
from .errors import MMSearchError, UsageError
from .filters import MediaFilter, check_query
from .retrieval import Hit, LocalizeConfig, hit_order, localize_candidates, moment_candidates, stage1
from .spaces import AUDIO, VISUAL
from .client import MAX_K, MAX_TEXT, MAX_VIDEOS
from .server import ServeConfig, is_loopback
from .store import FAILURE_SCHEMA, MEDIA_SCHEMA, Snapshot, manifest_stamp, read_manifest, shard_count, shard_dirs, shard_of

__all__ = ["LocalShard", "NotServedError", "Router", "ShardSearcher", "serving", "sharded_search"]

SPACE_OF = {"video": VISUAL, "audio": AUDIO}
RELOAD_SECONDS = 1.0


class NotServedError(UsageError):
    """A query this router does not serve (the spaces of words, fused queries): HTTP 501."""


class ShardSearcher:
    """One shard of a sharded index, searched for the router: stage 1, the best moment windows, media
    scores and stage 2, each over this shard's media only. Plain Python: Ray Serve deploys it, and a
    router in one process can call it directly (:class:`LocalShard`)."""

    def __init__(self, shard_dir: str, device: str = "cpu") -> None:
        self.root = Path(shard_dir)
        self.device = device
        self.index = open_index(self.root, device=device)
        self._stamp = manifest_stamp(self.root)
        self._checked = 0.0

    def _current(self) -> Index:
        now = time.monotonic()
        if now - self._checked >= RELOAD_SECONDS:
            self._checked = now
            stamp = manifest_stamp(self.root)
            if stamp != self._stamp:
                self.index, self._stamp = self.index.reopened(), stamp
        return self.index

    def manifest(self) -> dict[str, Any]:
        return self._current().manifest

    def _space_and_allowed(self, space: str, where: MediaFilter | None) -> tuple[Any, np.ndarray | None, dict | None]:
        idx = self._current()
        allowed, paths = idx._allowed(where)
        return idx.snapshot.spaces.get(space), allowed, paths

    def stage1(self, space: str, queries: np.ndarray, videos: int, where: MediaFilter | None = None) -> list[list[tuple[int, float]]]:
        """This shard's ``videos`` best media per query: (media_id, score) best first."""
        data, allowed, _ = self._space_and_allowed(space, where)
        if data is None or data.media_index is None or data.media_index.ntotal == 0:
            return [[] for _ in queries]
        return stage1(data, queries, videos, allowed=allowed)

    def moment_candidates(self, space: str, queries: np.ndarray, k: int, where: MediaFilter | None = None) -> list[list[tuple[float, int]]]:
        """This shard's best moment windows per query: (score, media_id) best first."""
        data, allowed, _ = self._space_and_allowed(space, where)
        if data is None or data.moment_index is None:
            return [[] for _ in queries]
        scores, owners = moment_candidates(data, queries, k=k, allowed=allowed)
        return [[(float(s), int(m)) for s, m in zip(srow, orow) if m >= 0] for srow, orow in zip(scores, owners)]

    def media_scores(self, space: str, queries: np.ndarray, media: list[list[int]]) -> list[dict[int, float]]:
        """The media-level score of each given media item (of this shard) per query."""
        data = self._current().snapshot.spaces.get(space)
        out = []
        for q, ids in zip(queries, media):
            found, vectors = data.media_vectors(ids) if data is not None else (np.zeros(0, np.int64), np.zeros((0, 1)))
            out.append({int(m): float(v @ q) for m, v in zip(found, vectors)})
        return out

    def localize(
        self, space: str, queries: np.ndarray, candidates: list[list[tuple[int, float, int]]], k: int,
        config: LocalizeConfig, where: MediaFilter | None = None,
    ) -> list[list[tuple[Hit, int, dict[str, Any]]]]:
        """Stage 2 over this shard's candidates, (media_id, media score, rank over all shards) per
        query: the top ``k`` moments as (hit, rank, the result as JSON)."""
        data, _, paths = self._space_and_allowed(space, where)
        if data is None:
            return [[] for _ in queries]
        idx = self._current()
        pairs = [[(m, s) for m, s, _ in row] for row in candidates]
        ranks = [[r for _, _, r in row] for row in candidates]
        found = localize_candidates(data, queries, pairs, k=k, config=config, ranks=ranks)
        out = []
        for row, hits in zip(candidates, found):
            rank_of = {m: r for m, _, r in row}
            results = idx._with_paths([idx._result(h, space) for h in hits], paths)
            out.append([(h, rank_of[h.media_id], r.to_dict()) for h, r in zip(hits, results)])
        return out


class LocalShard:
    """A :class:`ShardSearcher` called as a Ray Serve handle is (``await shard.call(method, ...)``)."""

    def __init__(self, searcher: ShardSearcher) -> None:
        self.searcher = searcher

    async def call(self, method: str, *args: Any) -> Any:
        return getattr(self.searcher, method)(*args)


class _ServeShard:
    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def call(self, method: str, *args: Any) -> Any:
        return await getattr(self.handle, method).remote(*args)


async def sharded_search(
    shards: list[Any], queries: np.ndarray, *, space: str, k: int = 10, videos: int = 20, exhaustive: bool = False,
    config: LocalizeConfig = LocalizeConfig(), where: MediaFilter | None = None,
) -> list[list[dict[str, Any]]]:
    """Two-stage search of ``queries`` (``(n, dim)`` float32) over shards (objects with an async
    ``call(method, *args)`` on a :class:`ShardSearcher`), in two rounds (see the module): per query,
    the top ``k`` results as JSON (:meth:`mmsearch.api.SearchResult.to_dict`), best first."""
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    if exhaustive:
        lists = await asyncio.gather(*(s.call("moment_candidates", space, queries, k, where) for s in shards))
        owners = []
        for qi in range(len(queries)):
            merged = sorted(((score, i, j, m) for i, per in enumerate(lists) for j, (score, m) in enumerate(per[qi])),
                            key=lambda t: (-t[0], t[1], t[2]))
            owners.append(list(dict.fromkeys(m for *_, m in merged[: max(50, 20 * k)])))
        n = len(shards)
        asked = [[[m for m in row if shard_of(m, n) == i] for row in owners] for i in range(n)]
        scored = await asyncio.gather(*(s.call("media_scores", space, queries, asked[i]) for i, s in enumerate(shards)))
        candidates = [[(m, scored[shard_of(m, n)][qi][m]) for m in row if m in scored[shard_of(m, n)][qi]] for qi, row in enumerate(owners)]
    else:
        lists = await asyncio.gather(*(s.call("stage1", space, queries, videos, where) for s in shards))
        candidates = []
        for qi in range(len(queries)):
            merged = sorted(((score, i, j, m) for i, per in enumerate(lists) for j, (m, score) in enumerate(per[qi])),
                            key=lambda t: (-t[0], t[1], t[2]))
            candidates.append([(m, score) for score, _, _, m in merged[:videos]])
    n = len(shards)
    shares = [[[(m, score, rank) for rank, (m, score) in enumerate(row) if shard_of(m, n) == i] for row in candidates] for i in range(n)]
    found = await asyncio.gather(
        *(s.call("localize", space, queries, shares[i], k, config, where) for i, s in enumerate(shards) if any(shares[i]))
    )
    out = []
    for qi in range(len(queries)):
        hits = [(hit_order(h, rank), result) for per in found for h, rank, result in per[qi]]
        hits.sort(key=lambda t: t[0])
        out.append([result for _, result in hits[:k]])
    return out


def query_index(root: str | os.PathLike, manifest: dict[str, Any], *, device: str = "cpu") -> Index:
    """An :class:`Index` that embeds queries as the index at ``root`` was built (its manifest's encoders)
    and holds no rows: the router's, which keeps no shard's data."""
    empty = Snapshot(Path(root), manifest, MEDIA_SCHEMA.empty_table(), FAILURE_SCHEMA.empty_table(), {})
    return Index(empty, device=device)


class Router:
    """The HTTP entry of ``mmsearch serve --ray``: ``GET /api/search?q=...&modality=video|audio&k=&videos=&exhaustive=``
    (filters as ``mmsearch serve``'s), ``GET /api/health``. Ray Serve deploys it with
    :func:`deploy`; :meth:`search` is the whole of a search, also callable in one process."""

    def __init__(self, shards: list[Any], root: str, device: str = "cpu") -> None:
        self.shards = shards
        self.root = root
        self.device = device
        self._embedder: Index | None = None

    async def _embedder_index(self) -> Index:
        if self._embedder is None:
            manifest = await self.shards[0].call("manifest")
            self._embedder = query_index(self.root, manifest, device=self.device)
        return self._embedder

    async def search(self, text: str, *, modality: str | None = None, k: int = 10, videos: int = 20, exhaustive: bool = False,
                     where: MediaFilter | None = None) -> dict[str, Any]:
        """One text query: the JSON ``mmsearch query --json`` prints. ``modality`` None (the default
        of ``mmsearch serve``: all spaces fused) and the spaces of words raise :class:`NotServedError`
        (see the module); an unknown modality or a bad query, :class:`UsageError`."""
        check_query(text, k, videos)
        if modality not in SPACE_OF:
            if modality is not None and modality not in MODALITIES:
                raise UsageError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")
            raise NotServedError(
                f"mmsearch serve --ray searches the spaces of pictures and sound (modality=video or audio), not "
                f"{modality or 'all spaces fused (no modality)'}: what is said or written, and fused queries, are served by mmsearch serve"
            )
        embedder = await self._embedder_index()
        space = SPACE_OF[modality]
        queries = await asyncio.to_thread(embedder.embed_queries, text=[text], space=space)
        rows = (await sharded_search(self.shards, queries, space=space, k=k, videos=videos, exhaustive=exhaustive, where=where))[0]
        results = [SearchResult(**{f.name: row.get(f.name) for f in dataclasses.fields(SearchResult)}) for row in rows]
        return query_answer(embedder, results, text=text, modality=modality, k=k, videos=videos, exhaustive=exhaustive, where=where)


@contextmanager
def serving(config: ServeConfig, *, address: str | None = None) -> Iterator[tuple[str, str | None]]:
    """Serve the sharded index at ``config.index`` on Ray Serve while the block runs (one deployment
    per shard, the router on ``config.host:config.port`` behind ``mmsearch serve``'s checks: a token
    beyond loopback, loopback Host names without one); yields its URL. ``address``: the Ray cluster
    (None: start a local one; ``auto``: join one). Raises :class:`UsageError` for an index that is
    not sharded, a port in use, or without Ray Serve. Yields (its URL, the token it requires or None)."""
    from fastapi import Depends, FastAPI, HTTPException, Query

    from .distributed import check_ray, ray_session
    from .server import Guard, _check_port, _host_name, _where

    root = Path(config.index).absolute()
    if not is_loopback(config.host) and not config.token:
        config = dataclasses.replace(config, token=secrets.token_urlsafe(24))
    read_manifest(root)  # a clear error where there is no index, or no shard committed yet
    count = shard_count(root)
    if count is None:
        raise UsageError(f"the index at {root} is not sharded: serve it with `mmsearch serve` (or build one with --shards N)")
    # Ray Serve's proxy shares a port with any listener (SO_REUSEPORT): a second one would split the traffic
    _check_port(config.host, config.port)
    check_ray(address)
    try:
        from ray import serve
    except ImportError:
        raise UsageError('mmsearch serve --ray needs Ray Serve: pip install "mmsearch[ray]"') from None
    device = config.device if config.device != "auto" else "cpu"
    app = FastAPI(title="mmsearch (Ray Serve)")
    trusted = {"localhost", "127.0.0.1", "::1", _host_name(config.host.lower())} | set(config.extra_hosts)
    app.add_middleware(Guard, config=config, trusted_hosts=trusted)

    @serve.deployment(name="router", ray_actor_options={"num_cpus": 0})
    @serve.ingress(app)
    class _Router(Router):
        def __init__(self, handles: list[Any]) -> None:
            super().__init__([_ServeShard(h) for h in handles], str(root), device)

        @app.get("/api/search")
        # constraints as defaults and annotations of builtins only: annotations are strings here (PEP 563),
        # which FastAPI resolves in the globals Ray Serve's pickled copy of this function keeps (those its code names)
        async def http_search(
            self, q: str = Query(min_length=1, max_length=MAX_TEXT), where: MediaFilter = Depends(_where),
            k: int = Query(10, ge=1, le=MAX_K), videos: int = Query(20, ge=1, le=MAX_VIDEOS),
            modality: str | None = Query(None, pattern=f"^({'|'.join(MODALITIES)})$"), exhaustive: bool = False,
        ) -> dict[str, Any]:
            try:
                return await self.search(q, modality=modality, k=k, videos=videos, exhaustive=exhaustive, where=where)
            except NotServedError as exc:
                raise HTTPException(501, str(exc)) from None
            except UsageError as exc:
                raise HTTPException(400, str(exc)) from None
            except MMSearchError as exc:
                raise HTTPException(500, str(exc)) from None

        @app.get("/api/health")
        async def health(self) -> dict[str, Any]:
            manifests = await asyncio.gather(*(s.call("manifest") for s in self.shards))
            # the generation of the whole index, as read_manifest counts it: the sum of the shards'
            return {"status": "ok", "index": str(root), "shards": len(self.shards), "generation": sum(m["generation"] for m in manifests)}

    # replicas hold no CPU reservation: a local cluster of 2 CPUs places 4 shards and the router (each
    # replica is busy only while it answers); give them resources with .options on a real cluster
    shard = serve.deployment(ShardSearcher, ray_actor_options={"num_cpus": 0})
    handles = [shard.options(name=f"shard-{i:03d}").bind(str(d), device) for i, d in enumerate(shard_dirs(root, count))]
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # mmsearch says where it serves; Ray's INFO lines repeat it
    import ray

    own_cluster = address is None and not ray.is_initialized()  # started here, and stopped with all it runs
    with ray_session(address):
        serve.start(http_options={"host": config.host, "port": config.port})
        try:
            serve.run(_Router.bind(handles), name="mmsearch", route_prefix="/")
            yield f"http://{config.host}:{config.port}/", config.token
        finally:
            if not own_cluster:  # on a joined cluster Serve is stopped here (its shutdown logs a retried task)
                serve.shutdown()
