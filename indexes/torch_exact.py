"""Exact search and re-ranking with torch, for a CUDA GPU where FAISS's GPU build is absent.

FAISS's GPU wheel is far larger than torch's CUDA build that mmsearch already needs, so on a GPU
machine the flat (exact) path and re-ranking run on torch instead: the vectors stay on the device
in ``float16`` (half the bytes to stream: exact search is bound by memory bandwidth, a batch of
``q`` queries reads every vector once), the queries are multiplied with them a block at a time
(``matmul`` on tensor cores, accumulated in float32), and a running top-k is kept on the device.
The last step re-scores each query's candidates in float32 from the vectors as stored, so the
scores returned are float32 inner products and the order among them is exact; only a true
top-k row whose fp16 score fell below ``k + rerank`` others (a difference under fp16's ~1e-3
resolution of a cosine) can be missed. The same code runs on the CPU (float32) for testing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TorchFlat", "torch_rerank"]

BLOCK_ROWS = 1 << 20  # vectors per matrix product: 1M x 512 fp16 = 1 GiB
QUERY_BATCH = 1024  # queries per pass (a 1024 x 1M fp32 score block is 4 GiB)
RERANK = 16  # candidates re-scored in float32 beyond k


def _torch() -> Any:
    import torch

    return torch


class TorchFlat:
    """An exact inner-product index of ``vectors`` (``(n, dim)`` float32, an array or a
    :class:`mmsearch.indexes.RowVectors`) held on a torch ``device`` in ``dtype`` (default:
    float16 on CUDA, float32 elsewhere). :meth:`search` answers as ``IndexFlatIP`` does.

    Raises :class:`torch.cuda.OutOfMemoryError` when the vectors do not fit on the device (10M x 512
    in fp16 takes 10 GiB).
    """

    def __init__(self, vectors: Any, *, device: str = "cuda", dtype: Any = None, block_rows: int = BLOCK_ROWS) -> None:
        torch = _torch()
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.source = vectors  # float32 rows for the final re-scoring
        self.blocks = []
        for start in range(0, len(vectors), block_rows):
            part = np.ascontiguousarray(vectors[start : start + block_rows], dtype=np.float32)
            self.blocks.append(torch.from_numpy(part).to(self.device, dtype=self.dtype))
        self.ntotal = len(vectors)
        self.dim = int(vectors.shape[1])

    def search(self, queries: np.ndarray, k: int, *, rerank: int = RERANK) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores ``(n, k)`` float32, row ids ``(n, k)`` int64) by inner product, best first;
        ``-inf``/``-1`` where fewer rows exist."""
        torch = _torch()
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, int(k))
        out_s = np.full((len(queries), k), -np.inf, np.float32)
        out_i = np.full((len(queries), k), -1, np.int64)
        if not self.ntotal:
            return out_s, out_i
        wide = min(self.ntotal, k + rerank if self.dtype != torch.float32 else k)
        for a in range(0, len(queries), QUERY_BATCH):
            q = torch.from_numpy(queries[a : a + QUERY_BATCH]).to(self.device)
            best_s = torch.full((len(q), 0), float("-inf"), device=self.device)
            best_i = torch.zeros((len(q), 0), dtype=torch.int64, device=self.device)
            offset = 0
            for block in self.blocks:
                scores = (q.to(self.dtype) @ block.T).float()
                s, i = torch.topk(scores, min(wide, block.shape[0]), dim=1)
                best_s, order = torch.topk(torch.cat([best_s, s], 1), min(wide, best_s.shape[1] + s.shape[1]), dim=1)
                best_i = torch.gather(torch.cat([best_i, i + offset], 1), 1, order)
                offset += block.shape[0]
            ids = best_i.cpu().numpy()
            scores, ids = torch_rerank(queries[a : a + QUERY_BATCH], ids, self.source, min(k, ids.shape[1]), device=self.device)
            out_s[a : a + len(q), : scores.shape[1]] = scores
            out_i[a : a + len(q), : ids.shape[1]] = ids
        return out_s, out_i


def torch_rerank(queries: np.ndarray, candidates: np.ndarray, vectors: Any, k: int, *, device: Any = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Re-score ``candidates`` (``(n, c)`` int64 row ids of ``vectors``, ``-1`` for none) by exact
    float32 inner product on ``device`` and keep the best ``k`` of each row: (scores, ids), best
    first, ties by the lower id. The re-ranking step of an approximate index (``RFlat``)."""
    torch = _torch()
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    candidates = np.asarray(candidates, np.int64)
    valid = candidates >= 0
    flat = np.unique(candidates[valid])
    rows = np.asarray(vectors[flat], np.float32) if len(flat) else np.zeros((0, queries.shape[1]), np.float32)
    where = np.searchsorted(flat, np.where(valid, candidates, flat[0] if len(flat) else 0))
    gathered = torch.from_numpy(rows).to(device)[torch.from_numpy(where).to(device)]  # (n, c, dim)
    scores = torch.einsum("nd,ncd->nc", torch.from_numpy(queries).to(device), gathered)
    scores = torch.where(torch.from_numpy(valid).to(device), scores, torch.tensor(float("-inf"), device=device))
    from . import merge_top_k  # best first, ties by the lower id, padded: as shards' lists are merged

    return merge_top_k([(scores.cpu().numpy(), np.where(valid, candidates, -1))], k)
