"""The vector-index layer: FAISS indexes chosen by size and budget, saved atomically.

This layer deals in float32 vectors and integer row ids only; it knows nothing
of media or encoders. Vectors are L2-normalised upstream, so inner product is
cosine similarity.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mmsearch.errors import IndexCorruptError, UsageError

__all__ = ["IndexRecipe", "VectorIndex", "choose_recipe", "gpu_available", "measure_recall"]

FLAT_MAX = 200_000  # exact search stays fast enough below this many vectors


@dataclass(frozen=True)
class IndexRecipe:
    """A FAISS factory string plus its search-time parameters: data, so the manifest can record it."""

    factory: str = "Flat"
    params: dict[str, Any] = field(default_factory=dict)
    chosen_for: int = 0  # number of vectors the choice was made for

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IndexRecipe":
        return cls(factory=data["factory"], params=dict(data.get("params", {})), chosen_for=int(data.get("chosen_for", 0)))


def choose_recipe(n: int, dim: int, *, max_memory_bytes: int | None = None) -> IndexRecipe:
    """Pick an index for ``n`` vectors of ``dim`` as FAISS's guidelines suggest.

    Exact search while it is cheap; HNSW over full vectors while they fit the
    memory budget; IVF-PQ (with OPQ rotation and exact re-ranking) beyond.
    """
    raw_bytes = n * dim * 4
    budget = max_memory_bytes if max_memory_bytes is not None else _spare_memory()
    if n < 10_000 or (n <= FLAT_MAX and raw_bytes <= budget):  # too few to train a quantizer anyway
        return IndexRecipe("Flat", {}, n)
    if raw_bytes * 1.3 <= budget:
        return IndexRecipe("HNSW32,Flat", {"efSearch": 128, "efConstruction": 80}, n)
    nlist = int(2 ** round(np.log2(max(64.0, 4 * np.sqrt(n)))))
    m = 64 if dim % 64 == 0 else max(d for d in (8, 16, 32, 48) if dim % d == 0)
    return IndexRecipe(f"OPQ{m},IVF{nlist},PQ{m}", {"nprobe": 32}, n)


def _spare_memory() -> int:
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        return int(pages * os.sysconf("SC_PAGE_SIZE") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def measure_recall(index: "VectorIndex", vectors: np.ndarray, *, queries: int = 200, k: int = 10, seed: int = 0) -> float:
    """recall@k of ``index`` against exact search, for queries drawn from the indexed vectors themselves."""
    import faiss

    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(len(vectors), size=min(queries, len(vectors)), replace=False)]
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    k = min(k, len(vectors))
    _, truth = exact.search(sample, k)
    _, got = index.search(sample, k)
    hits = sum(len(set(t) & set(g)) for t, g in zip(truth.tolist(), got.tolist()))
    return round(hits / truth.size, 4)


class VectorIndex:
    """One FAISS index over row ids 0..n-1, inner-product metric."""

    def __init__(self, index: Any, recipe: IndexRecipe) -> None:
        self.index = index
        self.recipe = recipe
        self._gpu_index: Any = None

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @classmethod
    def build(cls, vectors: np.ndarray, *, recipe: IndexRecipe | None = None) -> "VectorIndex":
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise UsageError(f"vectors must be a 2-d array, got shape {vectors.shape}")
        n, dim = vectors.shape
        recipe = recipe or choose_recipe(n, dim)
        index = faiss.index_factory(dim, recipe.factory, faiss.METRIC_INNER_PRODUCT)
        if "efConstruction" in recipe.params:
            index.hnsw.efConstruction = int(recipe.params["efConstruction"])
        if not index.is_trained:
            index.train(vectors)
        if n:
            index.add(vectors)
        out = cls(index, recipe)
        out._apply_params()
        if recipe.factory != "Flat" and n > 10:
            recall = measure_recall(out, vectors)
            out.recipe = IndexRecipe(recipe.factory, {**recipe.params, "recall_at_10": recall}, recipe.chosen_for)
        return out

    def _apply_params(self) -> None:
        import faiss

        params = {k: v for k, v in self.recipe.params.items() if k in {"efSearch", "nprobe"}}
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
        scores, ids = index.search(queries, k)
        return scores, ids

    def _gpu(self) -> Any:
        if self._gpu_index is None and gpu_available() and os.environ.get("MMSEARCH_FAISS_GPU", "1") != "0":
            import faiss

            try:
                self._gpu_index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, self.index)
            except RuntimeError:  # this index type has no GPU implementation: stay on CPU
                self._gpu_index = False
        return self._gpu_index or None

    def reconstruct_all(self) -> np.ndarray:
        return self.index.reconstruct_n(0, self.ntotal) if self.ntotal else np.zeros((0, self.dim), np.float32)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write to a temporary file in the same directory, fsync, then rename into place."""
        import faiss

        path = os.fspath(path)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".faiss", dir=os.path.dirname(path) or ".")
        os.close(fd)
        try:
            faiss.write_index(self.index, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike, recipe: IndexRecipe, *, mmap: bool = True) -> "VectorIndex":
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
        out = cls(index, recipe)
        out._apply_params()
        return out
