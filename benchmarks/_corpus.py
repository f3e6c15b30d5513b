"""A synthetic visual space shaped like users' libraries, and an index of it written as ``mmsearch index`` would.

Shared by ``shard_search.py`` and ``two_stage.py``.

Corpus: ``media`` items of varied length (log-normal, median 35 s, mean ~48 s, clipped to 3-400 s),
one segment per second. A segment's vector is ``0.55 g + 0.45 theme + 0.5 topic + 0.45 shot +
drift``, L2-normalised: ``g`` a direction every image vector shares (CLIP image vectors of
unrelated pictures sit at cosine ~0.3), ``theme`` one of ``themes`` shared by many media, ``topic``
the media item's own, ``shot`` one of its 1-4 shots (cut at random seconds), ``drift`` an AR(1)
walk along the seconds (coefficient 0.9, stationary length 0.3) so neighbouring seconds are close
and distant ones drift apart. Unrelated segments sit at cosine ~0.3, the same theme ~0.5, the same
media ~0.7, the same shot >0.9. Each media item's vectors are made from its own seed when asked
for, so a corpus of millions of segments is never held in memory.

Queries are text-like, not copies of indexed vectors: CLIP's text vectors lie in a cone apart from
its image vectors (the modality gap), so a query is ``0.8 t + 0.6 c + 0.7 n`` normalised, with
``t`` a fixed text-modality direction (shared by all queries, orthogonal to ``g``), ``c`` the
content of a random second of a random media item without the shared image direction (its theme
+ topic + shot + drift, normalised) and ``n`` isotropic noise: its best segment answers at cosine
~0.4, as a caption matches its picture, and unrelated media at ~0.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import lfilter

RHO, SIGMA = 0.9, 0.3  # the drift's AR(1) coefficient and stationary length
FLUSH_MEDIA = 2000  # media whose rows are written to shard files at a time
PROBES, PROBE_SEED = 200, 1_000_003  # query probes an index is tuned on; their seed, apart from the benchmarks' query seeds


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Corpus:
    """The segment vectors of ``media`` items (``segments(m)``, made on demand), and text-like queries."""

    def __init__(self, media: int, dim: int, *, themes: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.seed = dim, seed
        lengths = np.exp(rng.normal(np.log(35.0), 0.8, media))
        self.lengths = np.clip(np.round(lengths), 3, 400).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        self.shared = unit(rng.standard_normal(dim))  # g
        self.themes = unit(rng.standard_normal((themes, dim)))

    @property
    def media(self) -> int:
        return len(self.lengths)

    @property
    def segment_count(self) -> int:
        return int(self.offsets[-1])

    def content(self, m: int) -> np.ndarray:
        """``(length, dim)`` float32: media item ``m``'s segments without the shared image direction."""
        rng = np.random.default_rng([self.seed, m])
        length = int(self.lengths[m])
        theme = self.themes[rng.integers(len(self.themes))]
        topic = unit(rng.standard_normal(self.dim))
        shots = int(rng.integers(1, 5))
        cuts = rng.choice(np.arange(1, length), size=min(shots - 1, length - 1), replace=False) if length > 1 else []
        shot_of = np.zeros(length, np.int64)
        for c in cuts:
            shot_of[c:] += 1
        shot_vecs = unit(rng.standard_normal((shot_of[-1] + 1, self.dim)))
        noise = rng.standard_normal((length, self.dim)) / np.sqrt(self.dim)
        noise[0] /= np.sqrt(1 - RHO**2)  # the walk starts at its stationary spread (SIGMA)
        drift = lfilter([SIGMA * np.sqrt(1 - RHO**2)], [1.0, -RHO], noise, axis=0)  # d[t] = rho d[t-1] + step n[t]
        return (0.45 * theme + 0.5 * topic + 0.45 * shot_vecs[shot_of] + drift).astype(np.float32)

    def segments(self, m: int) -> np.ndarray:
        """``(length, dim)`` float32 unit vectors: media item ``m``'s segments, one a second."""
        return unit(0.55 * self.shared + self.content(m))

    def queries(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` text-like query vectors (see the module), the cosine of each with the segment it was
        made from, and that segment as (media id, second): ``(n, 2)`` int64."""
        rng = np.random.default_rng(seed)
        text_dir = rng.standard_normal(self.dim)
        text_dir = unit(text_dir - (text_dir @ self.shared) * self.shared)  # t, orthogonal to g
        media = rng.integers(0, self.media, n)
        seconds = (rng.random(n) * self.lengths[media]).astype(np.int64)
        content = np.stack([self.content(int(m))[s] for m, s in zip(media, seconds)])
        source = unit(0.55 * self.shared + content)
        noise = unit(rng.standard_normal((n, self.dim)))
        q = unit(0.8 * text_dir + 0.6 * unit(content) + 0.7 * noise)
        return q, np.einsum("ij,ij->i", q, source), np.stack([media, seconds], axis=1)


def add_corpus_args(parser: Any, *, media: int) -> None:
    """The options that make a :class:`Corpus`: ``--media`` (default ``media``), ``--dim``, ``--themes``, ``--seed``."""
    parser.add_argument("--media", type=int, default=media, help="media items (about 48 one-second segments each)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--themes", type=int, default=200, help="topics shared by many media")
    parser.add_argument("--seed", type=int, default=0)


def build_index(root: Path, corpus: Corpus, *, shards: int = 1, exact: bool = False, probes: int = PROBES) -> dict[str, Any]:
    """Write ``corpus`` to a new index at ``root`` (``shards`` > 1: sharded) as ``mmsearch index`` would:
    ``IndexWriter.put_path`` and ``Deriver.add_segments`` per media item, one final
    ``commit(wait=True)``, each vector index the recipe ``mmsearch index`` chooses for its size
    (``exact``: forced to ``Flat``) and tuned on ``probes`` text-like query probes too (held out
    from the measured queries; ``mmsearch index`` keeps its encoder's text vectors of generic
    captions, :mod:`mmsearch.probes`; 0: none, as before issue #18). Returns timings in seconds."""
    from mmsearch.derive import frame_segments
    from mmsearch.indexes import IndexRecipe
    from mmsearch.ingest import IngestConfig, _recipe_chooser, open_writer
    from mmsearch.sharding import open_deriver

    config = IngestConfig()
    recipe_for = (lambda n, dim: IndexRecipe("Flat", {}, n)) if exact else _recipe_chooser(config, shards)
    encoder = {"spec": {"family": "bench", "model": "synthetic", "pretrained": None, "options": {}},
               "identity": {"model": "synthetic", "dim": corpus.dim}}
    t0 = time.perf_counter()
    with open_writer(root, config, shards=shards) as writer, open_deriver(writer, moments=config.moments, recipe_for=recipe_for) as deriver:
        writer.ensure_space("visual", encoder, corpus.dim, anchor="start")
        if probes:
            writer.set_query_probes("visual", corpus.queries(probes, seed=PROBE_SEED)[0])
        for m in range(corpus.media):
            duration = float(corpus.lengths[m])
            writer.put_path({
                "media_id": m, "path": f"/bench/{m:08d}.mp4", "size": 1, "mtime": 0.0, "content_hash": f"{m:040x}",
                "kind": "video", "duration": duration, "width": 1280, "height": 720, "spaces": "visual",
            })
            starts, ends = frame_segments(np.arange(corpus.lengths[m], dtype=np.float64), duration=duration)
            deriver.add_segments("visual", m, starts, ends, corpus.segments(m), duration=duration)
            if (m + 1) % FLUSH_MEDIA == 0:  # rows to shard files as they come, as ingest's commits do: memory stays bounded
                for w in getattr(writer, "shards", [writer]):
                    w.flush()
        t1 = time.perf_counter()
        deriver.commit(wait=True)
        t2 = time.perf_counter()
    return {"add_s": round(t1 - t0, 2), "commit_s": round(t2 - t1, 2), "build_s": round(t2 - t0, 2)}


def index_state(idx: Any) -> dict[str, Any]:
    """Rows and recipe (factory and tuned search parameters) of each shard's moment and media index."""
    from mmsearch.indexes import ShardedRowIndex

    space = idx.snapshot.spaces["visual"]
    out: dict[str, Any] = {}
    for name, index in (("moment_index", space.moment_index), ("media_index", space.media_index)):
        parts = index.shards if isinstance(index, ShardedRowIndex) else [index]
        out[name] = [{"rows": int(p.ntotal), **p.recipe.to_dict()} for p in parts]
    out["segments"] = int(len(space.segment_rows))
    out["moments"] = int(len(space.moments))
    return out
