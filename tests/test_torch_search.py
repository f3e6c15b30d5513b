"""Exact search and re-ranking with torch (mmsearch.indexes.torch_exact): the GPU path where FAISS's
GPU build is absent, checked here on the CPU against FAISS (tests/test_gpu.py runs it on CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmsearch.indexes import RowIndex, RowVectors, exact_search
from mmsearch.indexes import _rerank
from mmsearch.indexes.torch_exact import TorchFlat, torch_rerank


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_flat_search_in_blocks_equals_faiss() -> None:
    vectors, queries = _unit(5000, 64, 0), _unit(37, 64, 1)
    flat = TorchFlat(RowVectors([vectors[:1234], vectors[1234:]], 64), device="cpu", block_rows=700)  # blocks cross parts
    for k in (1, 10, 100):
        s1, i1 = exact_search(queries, vectors, k)
        s2, i2 = flat.search(queries, k)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_allclose(s1, s2, atol=1e-5)
    s, i = TorchFlat(vectors[:3], device="cpu").search(queries, 5)  # fewer rows than k: padded as FAISS pads
    assert (i[:, 3:] == -1).all() and np.isinf(s[:, 3:]).all() and (i[:, :3] >= 0).all()


def test_half_precision_scores_are_rescored_exactly() -> None:
    """fp16 products pick the candidates; their scores come back as float32 inner products, in exact order."""
    vectors, queries = _unit(3000, 64, 2), _unit(20, 64, 3)
    flat = TorchFlat(vectors, device="cpu", dtype=torch.float16, block_rows=1024)
    s_exact, i_exact = exact_search(queries, vectors, 10)
    s, i = flat.search(queries, 10)
    np.testing.assert_allclose(s, (queries[:, None, :] * vectors[i]).sum(-1), atol=1e-6)  # float32 scores of what it returns
    assert np.all(np.diff(s, axis=1) <= 0)
    assert (i == i_exact).mean() >= 0.99  # only near-ties within fp16's resolution may differ
    np.testing.assert_allclose(s[:, 0], s_exact[:, 0], atol=1e-6)


def test_rerank_equals_the_cpu_rerank() -> None:
    vectors, queries = _unit(800, 32, 4), _unit(9, 32, 5)
    rng = np.random.default_rng(6)
    candidates = rng.integers(0, 800, (9, 40))
    candidates[:, -5:] = -1  # fewer candidates than asked for
    s1, i1 = _rerank(queries, candidates, vectors, 12)
    s2, i2 = torch_rerank(queries, candidates, vectors, 12)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-6)


def test_a_row_index_searches_the_same_on_a_torch_device() -> None:
    """RowIndex.use_device: the exact rows go through torch; tombstones and masks as before."""
    vectors, queries = _unit(2000, 32, 7), _unit(15, 32, 8)
    alive = np.ones(2000, bool)
    alive[::7] = False
    keep = np.random.default_rng(9).random(2000) < 0.6
    plain = RowIndex(RowVectors([vectors], 32), None, alive=alive)
    on_torch = RowIndex(RowVectors([vectors], 32), None, alive=alive)
    on_torch.use_device("cpu")
    for mask in (None, keep):
        s1, i1 = plain.search(queries, 25, keep=mask)
        s2, i2 = on_torch.search(queries, 25, keep=mask)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert on_torch._flat is not None  # the torch path ran
