"""The vector-index layer: FAISS indexes chosen by size and budget, saved atomically.

This layer deals in float32 vectors and integer row ids only; it knows nothing
of media or encoders. Vectors are L2-normalised upstream, so inner product is
cosine similarity.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from mmsearch.errors import IndexCorruptError, UsageError
from mmsearch.fileio import atomic_write

__all__ = [
    "IndexRecipe", "PreparedFile", "RowIndex", "RowVectors", "ShardedRowIndex", "VectorIndex", "choose_recipe", "exact_search", "exact_top_k",
    "gpu_available", "measure_recall", "nlist_for", "split_refine",
]

MIN_TRAIN = 10_000  # below this many vectors a quantizer cannot be trained well: always exact
DEFAULT_LATENCY_MS = 10.0  # single-query latency target of the auto-selected index
DEFAULT_RECALL = 0.95  # recall@10 against exact search that tuning aims for
SCAN_BYTES_PER_MS = 8e6  # one core streams ~8 GB/s of float32 in exact search (1M x 512 takes ~250 ms here)
SMALL_NLIST_MAX = 4096  # up to here ~2*sqrt(n) lists; beyond, ~4*sqrt(n)
MAX_NLIST = 16384  # what flat k-means and a flat coarse quantizer afford on a CPU (10M x 512: ~1 hour on 2 cores)
TRAIN_POINTS_PER_LIST = 48  # k-means sample per list (FAISS warns below 39)
KMEANS_ITERATIONS = 10
ADD_CHUNK = 1 << 16  # rows per add and per exact-search pass: 128 MB of 512-d float32, whatever the set's size
PAUSE_CHUNK = 1 << 13  # rows per step of a build that can pause (a fraction of a second on one core)
SEARCH_PARAMS = {"nprobe", "efSearch", "k_factor_rf", "quantizer_efSearch"}  # what ParameterSpace sets at search time


@dataclass(frozen=True)
class IndexRecipe:
    """A FAISS factory string plus its search-time parameters: data, so the manifest can record it."""

    factory: str = "Flat"
    params: dict[str, Any] = field(default_factory=dict)
    chosen_for: int = 0  # number of vectors the choice was made for; retrain outside [chosen_for/2, 2*chosen_for]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IndexRecipe":
        return cls(factory=data["factory"], params=dict(data.get("params", {})), chosen_for=int(data.get("chosen_for", 0)))

    def covers(self, n: int) -> bool:
        """Whether an index trained for ``chosen_for`` vectors still suits ``n`` (no retraining needed)."""
        return self.chosen_for // 2 <= n <= 2 * max(self.chosen_for, 1)


def nlist_for(n: int) -> int:
    """Inverted lists for ``n`` vectors: a power of two near 2*sqrt(n) up to 4096; beyond,
    near 4*sqrt(n), at most 16384. The coarse quantizer is always flat (exact).

    Lists must outnumber the natural clusters of the data, or k-means splits along the
    directions all clusters share and scatters each cluster's members over many lists: on the
    10M x 512 set of ``benchmarks/search.py`` (20000 clusters) 4096 lists keep 0.61 of the true
    top-10 in the 16 probed lists, 16384 keep 0.93 (``benchmarks/ivf_partition.py``).
    (Two-level k-means was tried at 1M x 512 and lost recall: the top level, with fewer lists
    than clusters, splits along the shared directions; see the README.)

    An HNSW coarse quantizer (FAISS's advice past ~1M vectors) was tried and dropped: over the
    centroids of such data, all at about the same angle from each other, its greedy search
    finds a point's nearest centroid for only 48% (efSearch 16) to 88% (efSearch 128) of the
    points, no faster than a flat assignment (1M x 512, 2048 lists,
    ``benchmarks/coarse_quantizer.py``), and recall fell with it (0.47 at 10M). A flat
    quantizer assigns exactly; 16384 centroids of 512-d are 32 MB, which one query scans in
    about 5 ms here.
    """
    nlist = int(max(64, 2 ** round(np.log2(2 * np.sqrt(max(n, 1))))))
    if nlist <= SMALL_NLIST_MAX:
        return nlist
    return int(min(MAX_NLIST, 2 ** round(np.log2(4 * np.sqrt(n)))))


def choose_recipe(
    n: int,
    dim: int,
    *,
    max_memory_bytes: int | None = None,
    latency_ms: float = DEFAULT_LATENCY_MS,
    target_recall: float = DEFAULT_RECALL,
) -> IndexRecipe:
    """Pick an index for ``n`` vectors of ``dim`` from a memory budget and a latency target.

    Following FAISS's guidelines (and autofaiss): exact search while one query scans
    the vectors within ``latency_ms`` (or there are too few to train a quantizer);
    beyond that an inverted file whose lists hold 4-bit fast-scan PQ codes, the
    candidates re-ranked with the exact vectors while they fit the memory budget,
    else with 8-bit or 4-bit scalar-quantised vectors (about a quarter or an eighth
    of the memory); plain fast-scan IVF-PQ with as many bytes as the budget allows
    when even that does not fit. ``nprobe`` and the re-ranking depth are tuned after
    the build to reach ``target_recall`` within ``latency_ms`` (see
    :meth:`VectorIndex.build`). On 1M x 512 this family answered in 0.47 ms at
    recall@10 0.951 where IVF-Flat took 8 ms for 0.978 (``benchmarks/search.py``).
    """
    if n < 0 or dim <= 0:
        raise UsageError(f"cannot index {n} vectors of dimension {dim}")
    raw_bytes = n * dim * 4
    budget = max_memory_bytes if max_memory_bytes is not None else _spare_memory()
    targets = {"target_recall": target_recall, "latency_ms": latency_ms}
    nlist = nlist_for(n)
    if n < max(MIN_TRAIN, nlist) or (raw_bytes / SCAN_BYTES_PER_MS <= latency_ms and raw_bytes <= budget):
        return IndexRecipe("Flat", {}, n)  # (k-means needs at least nlist points)
    quantizer = f"IVF{nlist}"
    tuning = {"nprobe": 16, "k_factor_rf": 8, **targets}
    # Candidates from 4-bit fast-scan PQ codes (dim/8 bytes, scanned in SIMD registers), re-ranked
    # with the exact vectors while they fit, else with 8-bit or 4-bit scalar-quantised ones.
    for refine, bytes_per_dim in (("RFlat", 4.0), ("Refine(SQ8)", 1.0), ("Refine(SQ4)", 0.5)):
        if dim % 4 == 0 and n * (dim * bytes_per_dim + dim // 8) * 1.05 <= budget:
            return IndexRecipe(f"{quantizer},PQ{dim // 4}x4fs,{refine}", dict(tuning), n)
    if raw_bytes * 1.05 <= budget:  # a dimension fast-scan PQ cannot split
        return IndexRecipe(f"{quantizer},Flat", {"nprobe": 16, **targets}, n)
    for m in (dim // 2, dim // 4, dim // 8, dim // 16, dim // 32):
        if m >= 2 and m % 2 == 0 and dim % m == 0 and n * (m / 2) * 1.05 <= budget:
            return IndexRecipe(f"{quantizer},PQ{m}x4fs", {"nprobe": 16, **targets}, n)
    raise UsageError(
        f"{n} vectors of dimension {dim} do not fit a memory budget of {budget >> 20} MB even as "
        "compressed codes: raise --max-memory"
    )


def _search_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k in SEARCH_PARAMS}


def _spare_memory() -> int:
    """Half of the memory the machine has available (MemAvailable counts reclaimable page cache)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 4 << 30


_GPU_RESOURCES: Any = None


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def exact_search(
    queries: np.ndarray, vectors: Any, k: int, *, chunk: int = ADD_CHUNK, pause: Callable[[], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (scores, ids) by inner product of ``queries`` over ``vectors``, streamed in chunks.

    ``vectors``: an ``(n, dim)`` array, a memory-mapped one or a :class:`RowVectors`; only one
    chunk is in memory at a time. Rows past ``n`` are ``-1`` with score ``-inf``. ``pause``:
    called before each chunk.
    """
    import faiss

    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    k = max(1, min(k, len(vectors)))
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for start in range(0, len(vectors), chunk):
        if pause is not None:
            pause()
        part = np.ascontiguousarray(vectors[start:start + chunk], dtype=np.float32)
        scores, ids = faiss.knn(queries, part, min(k, len(part)), metric=faiss.METRIC_INNER_PRODUCT)
        both_s = np.concatenate([best_s, scores], axis=1)
        both_i = np.concatenate([best_i, ids + start], axis=1)
        order = np.argsort(-both_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(both_s, order, axis=1)
        best_i = np.take_along_axis(both_i, order, axis=1)
    return best_s, best_i


def exact_top_k(queries: np.ndarray, vectors: Any, k: int, *, chunk: int = ADD_CHUNK) -> np.ndarray:
    """Exact top-k ids of ``queries`` over ``vectors`` (see :func:`exact_search`)."""
    return exact_search(queries, vectors, k, chunk=chunk)[1]


def _kmeans(sample: np.ndarray, k: int, params: Any, metric: int, pause: Callable[[], None]) -> np.ndarray:
    """FAISS k-means with the IVF's clustering parameters, run one iteration per call so ``pause`` can
    run between iterations; each call starts from the previous centroids. Returns ``(k, dim)`` float32."""
    import faiss

    dim = sample.shape[1]
    centroids = None
    for _ in range(max(1, int(params.niter))):
        pause()
        cp = faiss.ClusteringParameters()
        cp.niter, cp.spherical, cp.seed = 1, params.spherical, params.seed
        cp.max_points_per_centroid = max(int(params.max_points_per_centroid), len(sample) // k + 1)
        clustering = faiss.Clustering(dim, k, cp)
        if centroids is not None:  # FAISS starts from centroids given in advance
            faiss.copy_array_to_vector(centroids.ravel(), clustering.centroids)
        assign = faiss.IndexFlatIP(dim) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dim)
        clustering.train(sample, assign)
        centroids = faiss.vector_to_array(clustering.centroids).reshape(k, dim)
    return centroids


def split_refine(factory: str) -> tuple[str, str | None]:
    """``"IVF2048,PQ128x4fs,RFlat"`` -> ``("IVF2048,PQ128x4fs", "RFlat")``; no refine stage -> ``(factory, None)``."""
    head, _, last = factory.rpartition(",")
    if head and (last == "RFlat" or last.startswith("Refine(")):
        return head, last
    return factory, None


def _release_pages(part: np.ndarray) -> None:
    """Drop the mapped pages of ``part``'s file from this process's resident set (``MADV_DONTNEED``).

    The file is read-only, so nothing is lost: the pages stay in the page cache and a later access
    maps them again. Without this, a large gather (a k-means sample, tuning's re-ranking) leaves
    every touched page counted in the process's memory.
    """
    import mmap

    root = part
    while isinstance(getattr(root, "base", None), np.memmap):
        root = root.base
    handle = getattr(root, "_mmap", None)
    if handle is not None and hasattr(handle, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            handle.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


def _read_rows(part: np.ndarray) -> np.ndarray:
    """A float32 copy of ``part``; a memory-mapped one is read with plain file reads, so streaming
    through a set larger than memory leaves its pages in the page cache, not in this process."""
    if isinstance(part, np.memmap) and part.filename and part.flags.c_contiguous and part.dtype == np.float32:
        offset = part.offset + _byte_offset(part)
        return np.fromfile(part.filename, dtype=np.float32, count=part.size, offset=offset).reshape(part.shape)
    return np.array(part, dtype=np.float32)


def _byte_offset(view: np.memmap) -> int:
    """Bytes from the start of the mapping to the first element of ``view`` (a row slice of a mapped file)."""
    root = view
    while isinstance(root.base, np.memmap):
        root = root.base
    return int(view.__array_interface__["data"][0] - root.__array_interface__["data"][0])


class RowVectors:
    """Several ``(n_i, dim)`` arrays (memory-mapped ``.npy`` shards, typically) read as one ``(n, dim)`` float32 array.

    Nothing is concatenated: a slice ``[a:b]`` or an integer array of rows reads just those
    rows from the parts that hold them. This is what index builds, re-ranking and exact
    search take, so a set of vectors larger than memory is never loaded whole.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, parts: list[np.ndarray], dim: int, *, release_after: int | None = None, in_place: bool = False) -> None:
        self.parts = [p for p in parts if len(p)]
        self.dim = int(dim)
        # a gather of this many rows from one memory-mapped part drops the part's pages from the
        # process afterwards (None: never); for long jobs that touch much of a large set
        self.release_after = release_after
        # slices within one part are views of its mapping (see in_place()), not copies read from the file
        self.in_place = in_place
        for p in self.parts:
            if p.ndim != 2 or p.shape[1] != self.dim:
                raise UsageError(f"a part of shape {p.shape} does not hold vectors of dimension {self.dim}")
        self.offsets = np.concatenate([[0], np.cumsum([len(p) for p in self.parts])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.dim)

    def view(self, start: int, stop: int | None = None) -> "RowVectors":
        """Rows ``[start, stop)`` as another :class:`RowVectors` (no copy)."""
        stop = len(self) if stop is None else min(stop, len(self))
        parts = []
        for part, lo in zip(self.parts, self.offsets[:-1]):
            a, b = max(start - lo, 0), min(stop - lo, len(part))
            if a < b:
                parts.append(part[a:b])
        return RowVectors(parts, self.dim, release_after=self.release_after, in_place=self.in_place)

    def releasing(self, after: int = 1) -> "RowVectors":
        """The same rows, read by a job that should not keep the pages it gathers (see ``release_after``)."""
        return RowVectors(self.parts, self.dim, release_after=after)

    def read_in_place(self) -> "RowVectors":
        """The same rows, sliced as views of the memory-mapped parts: for searches that come back to
        the same rows (a query's exact search over rows not yet in an index: about 3x faster than
        reading a copy each time), not for streaming through a set larger than memory."""
        return RowVectors(self.parts, self.dim, in_place=True)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise UsageError("RowVectors slices take a step of 1")
            pieces = [np.asarray(p, np.float32) if self.in_place else _read_rows(p) for p in self.view(start, stop).parts]
            if not pieces:
                return np.zeros((0, self.dim), np.float32)
            return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        rows = np.asarray(key, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), self.dim), np.float32)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row out of range 0..{len(self) - 1}")
        part_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for p in np.unique(part_of):
            sel = np.flatnonzero(part_of == p)
            local = rows[sel] - self.offsets[p]
            order = np.argsort(local, kind="stable")  # ascending reads are kind to memory-mapped files
            out[sel[order]] = self.parts[p][local[order]]
            if self.release_after is not None and len(sel) >= self.release_after:
                _release_pages(self.parts[p])
        return out


class _Probe:
    """Indexed vectors used as queries, leave-one-out: each query's own row counts neither as truth nor as a hit.

    (A query that is in the index finds itself first in almost any index; counting
    that free hit would overstate recall@10 by up to 0.1 for queries from outside.)
    With ``external`` (``(m, dim)`` float32), those vectors are the queries instead: queries
    from outside the index (text vectors searched against image vectors), nothing left out.
    """

    def __init__(
        self, vectors: np.ndarray, queries: int, k: int, seed: int, pause: Callable[[], None] | None = None,
        external: np.ndarray | None = None,
    ) -> None:
        rng = np.random.default_rng(seed)
        if external is None:
            self.rows = np.sort(rng.choice(len(vectors), size=min(queries, len(vectors)), replace=False))
            self.queries = np.ascontiguousarray(vectors[self.rows], dtype=np.float32)
        else:
            self.queries = np.ascontiguousarray(np.atleast_2d(external)[:queries], dtype=np.float32)
            self.rows = np.full(len(self.queries), -1, np.int64)  # no row of their own (-1: padding, never a hit)
        self.k = max(1, min(k, len(vectors) - 1))
        chunk = ADD_CHUNK if pause is None else PAUSE_CHUNK
        self.truth = self._drop_self(exact_search(self.queries, vectors, self.k + 1, chunk=chunk, pause=pause)[1])

    def _drop_self(self, ids: np.ndarray) -> list[list[int]]:
        return [[i for i in row if i != own][: self.k] for row, own in zip(ids.tolist(), self.rows.tolist())]

    def recall(self, index: "VectorIndex", *, batch: int = 16) -> float:
        # in small batches: a fast-scan search with a deep re-ranking keeps per-query buffers of nprobe lists
        got = np.concatenate([index.search(self.queries[i:i + batch], self.k + 1)[1] for i in range(0, len(self.queries), batch)])
        found = self._drop_self(got)
        hits = sum(len(set(t) & set(g)) for t, g in zip(self.truth, found))
        return hits / (len(self.truth) * self.k) if self.truth else 1.0


def measure_recall(index: "VectorIndex", vectors: np.ndarray, *, queries: int = 200, k: int = 10, seed: int = 0) -> float:
    """recall@k of ``index`` against exact search, indexed vectors as queries (leave-one-out)."""
    return round(_Probe(vectors, queries, k, seed).recall(index), 4)


class VectorIndex:
    """One FAISS index over row ids 0..n-1, inner-product metric."""

    def __init__(self, index: Any, recipe: IndexRecipe, *, refine: Any = None) -> None:
        self.device: str | None = None  # re-rank with torch there (RowIndex.use_device)
        self.index = index
        self.recipe = recipe
        # Vectors the recipe's refine stage re-ranks with when they live outside FAISS (see ``build``).
        self.refine = refine
        self._gpu_index: Any = None

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        *,
        recipe: IndexRecipe | None = None,
        trained: "VectorIndex | None" = None,
        tune: bool = True,
        refine_outside: bool = False,
        pause: Callable[[], None] | None = None,
        queries: np.ndarray | None = None,
    ) -> "VectorIndex":
        """Build (train, add, tune) an index over ``vectors``; rows are ids 0..n-1.

        ``vectors``: ``(n, dim)`` float32, possibly memory-mapped or a :class:`RowVectors`
        larger than memory: it is read in chunks.
        ``trained``: an earlier index of the same recipe whose trained quantizer and
        codebooks are reused (its vectors are dropped), so a growing index is not
        retrained at every commit while the set stays in the recipe's range.
        ``tune=False`` keeps the recipe's search parameters as given.
        ``refine_outside``: FAISS keeps only the recipe's compressed codes and the refine stage
        (``RFlat``, ``Refine(SQ8)``) re-ranks with ``vectors`` themselves, exactly, as LanceDB's
        ``refine_factor`` re-ranks with the table's vectors. The index file then holds codes
        only (dim/8 + 8 bytes a vector for 4-bit PQ), so it can be rewritten at every commit.
        ``pause``: called between steps (each k-means iteration, each chunk added, each tuning
        measurement), where a build running beside other work may wait for it to finish.
        ``queries``: ``(m, dim)`` float32 vectors like the queries the index will get (text
        vectors against an image space sit apart from the indexed vectors: CLIP's modality gap);
        tuning then reaches the target recall on them as well as on indexed vectors (see :meth:`_tune`).
        """
        import faiss

        if isinstance(vectors, np.ndarray) and not isinstance(vectors, np.memmap):
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise UsageError(f"vectors must be a 2-d array, got shape {vectors.shape}")
        n, dim = vectors.shape
        recipe = recipe or choose_recipe(n, dim)
        started = time.perf_counter()
        base, refine_stage = split_refine(recipe.factory)
        outside = refine_outside and refine_stage is not None
        reused = trained is not None and trained.recipe.factory == recipe.factory and trained.dim == dim
        if reused:
            index = faiss.clone_index(trained.index)
            index.reset()
            recipe = IndexRecipe(recipe.factory, {**recipe.params, **_search_params(trained.recipe.params)}, trained.recipe.chosen_for)
        else:
            index = faiss.index_factory(dim, base if outside else recipe.factory, faiss.METRIC_INNER_PRODUCT)
        if "efConstruction" in recipe.params:
            faiss.downcast_index(index).hnsw.efConstruction = int(recipe.params["efConstruction"])
        if not index.is_trained:
            sample = vectors
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None:  # k-means on a sample, few iterations: what a 2-core build can afford
                ivf.cp.niter = KMEANS_ITERATIONS
                if ivf.metric_type == faiss.METRIC_INNER_PRODUCT and isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexFlat):
                    # Maximum-inner-product k-means: each centroid the plain mean of its members, each
                    # point to the centroid of largest inner product (its list's average similarity).
                    # FAISS's default for inner product normalises the centroids (spherical), which
                    # on clustered data mixes clusters in lists: at 1M x 512 with 2000 clusters and
                    # 2048 lists the share of the true top-10 in the query's best list fell from
                    # 0.97 to 0.89 (benchmarks/coarse_quantizer.py).
                    ivf.cp.spherical = False
                limit = TRAIN_POINTS_PER_LIST * ivf.nlist
                if n > limit:
                    sample = vectors[np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))]
                if pause is not None and isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexFlat):
                    # the same k-means, one iteration per call, so the build can wait between them;
                    # a quantizer holding nlist centroids is not trained again by index.train
                    sample = np.ascontiguousarray(sample if isinstance(sample, np.ndarray) else sample[0:len(sample)], dtype=np.float32)
                    ivf.quantizer.add(_kmeans(sample, ivf.nlist, ivf.cp, ivf.metric_type, pause))
            if not isinstance(sample, np.ndarray):  # a RowVectors small enough to train on whole
                sample = sample[0:len(sample)]
            index.train(np.ascontiguousarray(sample, dtype=np.float32))
        codes_only = (trained.refine is not None) if reused else outside
        out = cls(index, recipe, refine=vectors if codes_only else None)
        out.add(vectors, pause=pause)
        out._apply_params()
        if tune and recipe.factory != "Flat" and n > 10:
            out._tune(vectors, pause=pause, query_probes=queries)
        out.recipe = IndexRecipe(
            out.recipe.factory,
            {**out.recipe.params, "build_s": round(time.perf_counter() - started, 3), "retrained": not reused},
            out.recipe.chosen_for,
        )
        return out

    def _tune(
        self, vectors: np.ndarray, *, queries: int = 200, k: int = 10, pause: Callable[[], None] | None = None,
        query_probes: np.ndarray | None = None,
    ) -> None:
        """Greedy search over the search-time knobs until recall@k reaches the recipe's target.

        Starting cheap (nprobe 1, efSearch 16, re-ranking depth 8), each step doubles the
        one knob that gains most recall, skipping settings whose single-query latency
        exceeds the recipe's target, and stops at the target or when no doubling gains
        0.002. (Tuning one knob to exhaustion first fails: with fast-scan codes the
        re-ranking depth, not nprobe, is often what limits recall.) Recall is measured on
        ``queries`` indexed vectors (leave-one-out) and, given ``query_probes`` (vectors like
        the real queries), on up to ``queries`` of those too: the lower of the two must reach
        the target, and latency is timed on both. (Tuned on indexed vectors alone, the auto index
        of 1M x 512 image-like vectors found 0.886 of text-like queries' top 10; tuned on 200
        text-like probes too, 0.974: ``benchmarks/search.py``.) The recipe records the recall and latency reached
        (``mmsearch info`` shows them): ``recall_at_10`` the lower, ``query_recall_at_10`` on
        the query probes.
        """
        params = dict(self.recipe.params)
        target = float(params.get("target_recall", DEFAULT_RECALL))
        budget_ms = float(params.get("latency_ms", DEFAULT_LATENCY_MS))
        probes = [_Probe(vectors, queries, k, seed=0, pause=pause)]
        if query_probes is not None and len(query_probes):
            probes.append(_Probe(vectors, queries, k, seed=0, pause=pause, external=query_probes))
        timed = np.concatenate([p.queries[: 50 // len(probes)] for p in probes])
        limits = {"nprobe": (1, max(1, min(self._nlist(), 1024))), "efSearch": (16, 1024), "k_factor_rf": (8, 256)}
        knobs = {key: lo for key, (lo, _) in limits.items() if key in params}

        def measure(setting: dict[str, int]) -> tuple[float, float]:
            if pause is not None:
                pause()  # before, not inside, the timed queries
            self.recipe = IndexRecipe(self.recipe.factory, {**params, **setting}, self.recipe.chosen_for)
            self._apply_params()
            t0 = time.perf_counter()
            for q in timed:
                self.search(q[None], probes[0].k)
            ms = (time.perf_counter() - t0) * 1000 / len(timed)
            recalls[:] = [p.recall(self) for p in probes]
            return min(recalls), ms

        recalls: list[float] = []
        recall, ms = measure(knobs)
        kept = list(recalls)
        while recall < target:
            options = []
            for key in knobs:
                if knobs[key] * 2 <= limits[key][1]:
                    trial = {**knobs, key: knobs[key] * 2}
                    r, t = measure(trial)
                    if t <= budget_ms:
                        options.append((r, -t, trial, list(recalls)))
            if not options or max(options, key=lambda o: o[:2])[0] < recall + 0.002:
                break
            recall, neg_ms, knobs, kept = max(options, key=lambda o: o[:2])
            ms = -neg_ms
        params.update(knobs)
        params.update(recall_at_10=round(recall, 4), tuned_ms=round(ms, 3))
        if len(probes) > 1:
            params.update(query_recall_at_10=round(kept[1], 4), query_probes=len(probes[1].queries))
        self.recipe = IndexRecipe(self.recipe.factory, params, self.recipe.chosen_for)
        self._apply_params()

    def add(self, vectors: Any, *, refine: Any = None, pause: Callable[[], None] | None = None) -> None:
        """Append ``vectors`` (rows ``ntotal``, ``ntotal + 1``, ...) in chunks, without retraining.

        ``refine``: with the refine stage outside FAISS, every vector the ids point into,
        the new ones included (a :class:`RowVectors` over all rows, typically). ``pause``:
        called before each chunk (see :meth:`build`).
        """
        chunk = ADD_CHUNK if pause is None else PAUSE_CHUNK
        for start in range(0, len(vectors), chunk):  # in pieces: memory-mapped vectors never load whole
            if pause is not None:
                pause()
            self.index.add(np.ascontiguousarray(vectors[start:start + chunk], dtype=np.float32))
        if refine is not None:
            self.refine = refine
        self._gpu_index = None if self._gpu_index is not False else False

    def _nlist(self) -> int:
        import faiss

        ivf = faiss.try_extract_index_ivf(self.index)
        return int(ivf.nlist) if ivf is not None else 0

    def _apply_params(self) -> None:
        import faiss

        if self._gpu_index is not False:  # False: no GPU implementation, nothing to redo
            self._gpu_index = None  # the GPU copy is made again, with these parameters, at the next search
        params = {k: v for k, v in self.recipe.params.items() if k in SEARCH_PARAMS}
        if self.refine is not None:
            params.pop("k_factor_rf", None)  # the refine stage is ours, not FAISS's
        if params:
            ps = faiss.ParameterSpace()
            for key, value in params.items():
                ps.set_index_parameter(self.index, key, value)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query; ids are -1 where fewer than k vectors exist."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise UsageError(f"query dimension {queries.shape[1]} does not match index dimension {self.dim}")
        k = max(1, min(int(k), max(self.ntotal, 1)))
        if self.ntotal == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        index = self._gpu() or self.index
        if self.refine is None:
            return self._search_filled(index, queries, k)
        depth = min(self.ntotal, refine_depth(k, int(self.recipe.params.get("k_factor_rf", 1))))
        _, candidates = self._search_filled(index, queries, depth)
        if self.device is not None:
            from .torch_exact import torch_rerank

            return torch_rerank(queries, candidates, self.refine, k, device=self.device)
        return _rerank(queries, candidates, self.refine, k)

    def _search_filled(self, index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``index.search``, and for an inverted file whose probed lists held fewer than ``k`` rows
        (a deep search with a small tuned ``nprobe``), those queries again with 4x the lists, until
        ``k`` come back or every list was probed: an IVF answer is never short while rows remain."""
        import faiss

        scores, ids = index.search(queries, k)
        nlist = self._nlist()
        outer = faiss.downcast_index(self.index)
        refined = isinstance(outer, faiss.IndexRefine)
        if not nlist or index is not self.index or not (refined or isinstance(outer, faiss.IndexIVF)):
            return scores, ids  # not an inverted file at the top (or FAISS's GPU copy): searched as it is
        want = min(k, self.ntotal)
        short = (ids >= 0).sum(axis=1) < want
        nprobe = int(faiss.extract_index_ivf(self.index).nprobe)
        while short.any() and nprobe < nlist:
            nprobe = min(nlist, nprobe * 4)
            rows = np.flatnonzero(short)
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            if refined:  # Refine(SQ8): the inverted file is its base index
                params = faiss.IndexRefineSearchParameters(k_factor=float(outer.k_factor), base_index_params=params)
            s2, i2 = index.search(queries[rows], k, params=params)
            scores[rows], ids[rows] = s2, i2
            short[rows] = (i2 >= 0).sum(axis=1) < want
        return scores, ids

    def _gpu(self) -> Any:
        global _GPU_RESOURCES
        if self._gpu_index is None and gpu_available() and os.environ.get("MMSEARCH_FAISS_GPU", "1") != "0":
            import faiss

            try:
                if _GPU_RESOURCES is None:  # one set of GPU buffers for every index of the process
                    _GPU_RESOURCES = faiss.StandardGpuResources()
                self._gpu_index = faiss.index_cpu_to_gpu(_GPU_RESOURCES, 0, self.index)
            except RuntimeError:  # this index type has no GPU implementation: stay on CPU
                self._gpu_index = False
        return self._gpu_index or None

    def reconstruct_all(self) -> np.ndarray:
        return self.index.reconstruct_n(0, self.ntotal) if self.ntotal else np.zeros((0, self.dim), np.float32)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write to a temporary file in the same directory, fsync, then rename into place."""
        import faiss

        # the index directory's temporary prefix: a crash leaves nothing its clean-up does not find
        atomic_write(path, lambda tmp: faiss.write_index(self.index, str(tmp)), prefix=".tmp-", suffix=".faiss")

    def write_prepared(self, directory: str | os.PathLike) -> "PreparedFile":
        """Write the index to a new temporary file (``.tmp-*`` in ``directory``), fsynced, and checksum it.

        The caller renames it into place later (:meth:`PreparedFile.install`), so the writing can
        happen on another thread than the commit that publishes it.
        """
        import tempfile
        import zlib

        import faiss

        fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".faiss", dir=directory)
        os.close(fd)
        try:
            faiss.write_index(self.index, name)
            crc = 0
            with open(name, "rb+") as fh:
                while block := fh.read(1 << 20):
                    crc = zlib.crc32(block, crc)
                os.fsync(fh.fileno())
            return PreparedFile(name, os.path.getsize(name), crc)
        except BaseException:
            os.unlink(name)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike, recipe: IndexRecipe, *, mmap: bool = True, refine: Any = None) -> "VectorIndex":
        """Read an index written by :meth:`save`; ``refine``: the vectors of a refine stage kept outside FAISS."""
        import faiss

        path = os.fspath(path)
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            index = faiss.read_index(path, flags)
        except RuntimeError:
            try:  # not every index type can be memory-mapped
                index = faiss.read_index(path)
            except RuntimeError as exc:
                raise IndexCorruptError(path, f"FAISS cannot read it ({str(exc).splitlines()[0][:200]})") from None
        out = cls(index, recipe, refine=refine)
        out._apply_params()
        return out


@dataclass(frozen=True)
class PreparedFile:
    """A file written and fsynced under a temporary name, with its size and CRC32, waiting to be renamed into place."""

    path: str
    size: int
    crc32: int

    def install(self, path: str | os.PathLike) -> None:
        os.replace(self.path, path)

    def discard(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


MAX_RERANK = 4096  # candidates a deep search re-ranks at most, unless k x DEEP_FACTOR asks for more
DEEP_FACTOR = 16  # candidates per result a deep search re-ranks at least


def refine_depth(k: int, factor: int) -> int:
    """Candidates to re-rank for a top-``k`` search of an index tuned to re-rank ``factor`` per result:
    ``k x factor``, capped at :data:`MAX_RERANK` (but never below ``k x`` :data:`DEEP_FACTOR`).

    Tuning measures recall@10 and latency at k=10, so a factor tuned high under a tight latency
    target (128 on each shard of a 4-shard index, to reach 0.95 on query probes) made a deep
    search (exhaustive search asks a moment index for 200) re-rank 25,600 candidates per shard;
    the searches users run by default (k up to a few dozen) keep the tuned depth.
    """
    factor = max(1, factor)
    return min(k * factor, max(MAX_RERANK, k * DEEP_FACTOR))


RERANK_ROWS = 1 << 15  # candidate rows gathered at once when re-ranking (64 MB of 512-d float32)


def _rerank(queries: np.ndarray, candidates: np.ndarray, vectors: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of each query with its candidate rows of ``vectors``; the best ``k`` per query.

    Queries are taken in groups whose candidates fit :data:`RERANK_ROWS`, so memory stays bounded
    however many queries and candidates (tuning re-ranks 200 queries x 11 x 256 candidates).
    """
    nq, depth = candidates.shape
    scores = np.full((nq, depth), -np.inf, np.float32)
    step = max(1, RERANK_ROWS // max(depth, 1))
    for lo in range(0, nq, step):
        block = candidates[lo:lo + step]
        flat = block.reshape(-1)
        valid = flat >= 0
        rows, inverse = np.unique(flat[valid], return_inverse=True)
        gathered = vectors[rows]  # each candidate row read once, in ascending order
        per_row = gathered @ queries[lo:lo + step].T  # (unique rows, queries of the block)
        owners = np.repeat(np.arange(len(block)), depth)[valid]
        part = np.full(flat.shape, -np.inf, np.float32)
        part[valid] = per_row[inverse, owners]
        scores[lo:lo + step] = part.reshape(block.shape)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_s = np.take_along_axis(scores, order, axis=1)
    top_i = np.where(np.isfinite(top_s), np.take_along_axis(candidates, order, axis=1), -1)
    return pad_top_k(top_s, top_i, k)


MASK_EXACT = 4096  # a search mask keeping at most this many rows is scored exactly over them


class RowIndex:
    """Search over every row of a growing set of vectors, some of them deleted.

    A FAISS index (``index``, possibly None) covers rows ``[0, index.ntotal)``; the rows added
    after it (before an index was worth training, or while a new one is trained) are searched
    exactly, and the two result lists merged by score. Rows whose ``alive`` flag is False
    (tombstones: media removed since the rows were written) are skipped: the search asks for
    more candidates until ``k`` live rows are found or every row has been seen.
    """

    def __init__(self, vectors: RowVectors, index: VectorIndex | None, *, alive: np.ndarray | None = None) -> None:
        self.vectors = vectors
        self.index = index
        self.alive = alive
        self.device: str | None = None  # a torch device for the exact rows and re-ranking (see use_device)
        self._flat: Any = None  # those rows on it (:class:`mmsearch.indexes.torch_exact.TorchFlat`), built on first use
        if index is not None and index.ntotal > len(vectors):
            raise IndexCorruptError("<index>", f"the index holds {index.ntotal} rows but only {len(vectors)} vectors exist")

    def use_device(self, device: str | None) -> None:
        """Search the rows no FAISS index covers (all of them for a flat index), and re-rank, with torch
        on ``device`` (``cuda``: :mod:`mmsearch.indexes.torch_exact`); None: FAISS on the CPU."""
        self.device = device
        self._flat = None
        if self.index is not None:
            self.index.device = device

    @property
    def recipe(self) -> IndexRecipe:
        return self.index.recipe if self.index is not None else IndexRecipe("Flat", {}, len(self.vectors))

    @property
    def ntotal(self) -> int:
        """Live rows."""
        return int(self.alive.sum()) if self.alive is not None else len(self.vectors)

    @property
    def dim(self) -> int:
        return self.vectors.dim

    def search(self, queries: np.ndarray, k: int, *, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row ids) per query among live rows; ``-1`` where fewer exist.

        ``keep``: a bool mask over the rows (a search filter): only rows it keeps are returned. When
        it keeps at most :data:`MASK_EXACT` rows or a quarter of them, those rows are scored exactly;
        else the index is searched as for tombstoned rows, asking for more until ``k`` pass.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise UsageError(f"query dimension {queries.shape[1]} does not match index dimension {self.dim}")
        n = len(self.vectors)
        k = max(1, int(k))
        alive = self.alive
        if keep is not None:
            alive = keep[:n] if alive is None else alive & keep[:n]
            rows = np.flatnonzero(alive)
            if len(rows) <= MASK_EXACT or 4 * len(rows) <= n:
                return self._search_rows(queries, rows, k)
        fetch = k if alive is None else min(n, 2 * k + 16)
        available = n if alive is None else int(alive.sum())
        while True:
            scores, ids = self._search_all(queries, max(fetch, 1))
            if alive is not None:
                dead = (ids >= 0) & ~alive[np.maximum(ids, 0)]
                scores = np.where(dead, -np.inf, scores)
                ids = np.where(dead, -1, ids)
                order = np.argsort(-scores, axis=1, kind="stable")
                scores, ids = np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)
            found = (ids >= 0).sum(axis=1)
            if fetch >= n or (found >= min(k, available)).all():
                break
            fetch = min(n, fetch * 4)
        return pad_top_k(scores[:, :k], ids[:, :k], k)

    def _search_rows(self, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the given rows only; ``-1`` (score ``-inf``) where fewer exist."""
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        for start in range(0, len(rows), ADD_CHUNK):  # the kept rows, gathered a chunk at a time
            part = rows[start : start + ADD_CHUNK]
            s, i = exact_search(queries, self.vectors[part], k)
            both_s = np.concatenate([scores, s], axis=1)
            both_i = np.concatenate([ids, np.where(i >= 0, part[np.maximum(i, 0)], -1)], axis=1)
            order = np.argsort(-both_s, axis=1, kind="stable")[:, :k]
            scores, ids = np.take_along_axis(both_s, order, axis=1), np.take_along_axis(both_i, order, axis=1)
        return scores, ids

    def _search_all(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        indexed = self.index.ntotal if self.index is not None else 0
        lists = []
        if indexed:
            lists.append(self.index.search(queries, min(k, indexed)))
        if len(self.vectors) > indexed:
            if self.device is not None:
                if self._flat is None:
                    from .torch_exact import TorchFlat

                    self._flat = TorchFlat(self.vectors.view(indexed), device=self.device)
                s, i = self._flat.search(queries, min(k, len(self.vectors) - indexed))
            else:
                s, i = exact_search(queries, self.vectors.view(indexed).read_in_place(), k)
            lists.append((s, np.where(i >= 0, i + indexed, -1)))
        if not lists:
            return np.full((len(queries), 1), -np.inf, np.float32), np.full((len(queries), 1), -1, np.int64)
        scores = np.concatenate([s for s, _ in lists], axis=1)
        ids = np.concatenate([i for _, i in lists], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


class ShardedRowIndex:
    """Several :class:`RowIndex` (one per shard of a sharded index) searched as one: their rows
    follow each other (shard 0's first), each shard is searched on its own, and only the top-k
    lists are merged by score (ties: the lower row first, as one exact search orders them).

    It answers as one :class:`RowIndex` over all the rows would, up to the recall of each shard's
    own vector index; with exact search (below :data:`MIN_TRAIN` rows per shard, or a mask that
    keeps few rows) the same rows and scores come back. The shards' own indexes are trained apart,
    each on its own rows: the recipes :func:`choose_recipe` picks without a memory budget score
    exactly (``Flat``) or re-rank their candidates with the full vectors (``RFlat``), so the
    scores of different shards are exact cosines and compare; only under a tight memory budget
    (``Refine(SQ8)``, plain PQ) are they each quantizer's approximation.
    """

    def __init__(self, shards: list[RowIndex]) -> None:
        if not shards:
            raise UsageError("a sharded index needs at least one shard")
        self.shards = shards
        self.offsets = np.concatenate([[0], np.cumsum([len(s.vectors) for s in shards])]).astype(np.int64)
        self.vectors = RowVectors([p for s in shards for p in s.vectors.parts], shards[0].dim)
        alive = [s.alive for s in shards]
        self.alive = None if all(a is None for a in alive) else np.concatenate(
            [np.ones(len(s.vectors), bool) if a is None else a for s, a in zip(shards, alive)]
        )

    @property
    def recipe(self) -> IndexRecipe:
        return self.shards[0].recipe

    def use_device(self, device: str | None) -> None:
        """Every shard's exact rows and re-ranking with torch on ``device`` (see :meth:`RowIndex.use_device`)."""
        for shard in self.shards:
            shard.use_device(device)

    @property
    def ntotal(self) -> int:
        """Live rows of every shard."""
        return sum(s.ntotal for s in self.shards)

    @property
    def dim(self) -> int:
        return self.vectors.dim

    def search(self, queries: np.ndarray, k: int, *, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row ids over all shards) per query, as :meth:`RowIndex.search`; ``keep``: a bool
        mask over all rows, split by shard."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, int(k))
        lists = []
        for shard, lo, hi in zip(self.shards, self.offsets[:-1], self.offsets[1:]):
            if hi == lo:
                continue
            part = None if keep is None else keep[lo:hi]
            if part is not None and not part.any():
                continue
            scores, ids = shard.search(queries, min(k, int(hi - lo)), keep=part)
            lists.append((scores, np.where(ids >= 0, ids + lo, -1)))
        if not lists:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        return merge_top_k(lists, k)


def merge_top_k(lists: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (scores, ids) top lists (``(n, k_i)`` each, ids ``-1`` where empty) into one
    ``(n, k)`` top-k: higher score first, of equal scores the lower id; ``-1``/``-inf`` pad."""
    scores = np.concatenate([s for s, _ in lists], axis=1).astype(np.float32)
    ids = np.concatenate([i for _, i in lists], axis=1).astype(np.int64)
    scores = np.where(ids >= 0, scores, -np.inf)
    order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), -scores), axis=1)[:, :k]
    return pad_top_k(np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1), k)


def pad_top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k lists narrower than ``k`` padded to ``(n, k)``: score ``-inf``, id ``-1``, as FAISS pads."""
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return scores, ids
