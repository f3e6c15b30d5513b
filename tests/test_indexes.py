"""The vector-index layer: choice by size, memory and latency; tuning to a recall target; reuse; persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mmsearch
from conftest import BLUE, GREEN, RED, WHITE, YELLOW, write_video
from test_index_and_search import _query_frame
from mmsearch.errors import UsageError
from mmsearch.indexes import IndexRecipe, VectorIndex, choose_recipe, exact_top_k, measure_recall
from mmsearch.ingest import IngestConfig
from mmsearch.store import MANIFEST


def _embeddings(n: int, dim: int = 32, *, clusters: int = 50, draw: int = 0) -> np.ndarray:
    """Unit vectors around cluster centres, varying along a shared low-rank subspace (like real embeddings).

    One fixed model; ``draw`` picks an independent sample from it.
    """
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((clusters, dim))
    basis = rng.standard_normal((8, dim))
    model = np.random.default_rng(1000 + draw)
    x = centres[model.integers(0, clusters, n)] + 0.4 * model.standard_normal((n, 8)) @ basis
    x += 0.2 * model.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _recall(index: VectorIndex, queries: np.ndarray, base: np.ndarray, k: int = 10) -> float:
    truth = exact_top_k(queries, base, k)
    _, got = index.search(queries, k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got.tolist(), truth.tolist())]))


# --------------------------------------------------------------------------- choice
def test_choice_follows_size_latency_and_memory():
    gb = 1 << 30
    assert choose_recipe(5_000, 512, max_memory_bytes=gb).factory == "Flat"  # too few to train a quantizer
    # 40k x 512 float32 = 82 MB: one exact query scans it in ~10 ms, inside a 20 ms target, over a 5 ms one
    assert choose_recipe(40_000, 512, max_memory_bytes=gb, latency_ms=20).factory == "Flat"
    assert choose_recipe(40_000, 512, max_memory_bytes=gb, latency_ms=5).factory == "IVF512,PQ128x4fs,RFlat"
    n = 1_000_000  # 2 GB of float32
    assert choose_recipe(n, 512, max_memory_bytes=4 * gb).factory == "IVF2048,PQ128x4fs,RFlat"  # 2112 B/vector
    assert choose_recipe(n, 512, max_memory_bytes=gb).factory == "IVF2048,PQ128x4fs,Refine(SQ8)"  # 576 B
    assert choose_recipe(n, 512, max_memory_bytes=400 << 20).factory == "IVF2048,PQ128x4fs,Refine(SQ4)"  # 320 B
    assert choose_recipe(n, 512, max_memory_bytes=200 << 20).factory == "IVF2048,PQ256x4fs"  # 128 B
    assert choose_recipe(n, 512, max_memory_bytes=20 << 20).factory == "IVF2048,PQ32x4fs"  # 16 B
    assert choose_recipe(n, 510, max_memory_bytes=4 * gb).factory == "IVF2048,Flat"  # 510 = 2*3*5*17: no 4-d sub-vectors
    big = choose_recipe(10_000_000, 512, max_memory_bytes=8 * gb)
    # beyond 4096 lists: ~4*sqrt(n) lists (more than the data's clusters), still a flat (exact) coarse quantizer
    assert big.factory == "IVF16384,PQ128x4fs,Refine(SQ8)" and big.chosen_for == 10_000_000
    assert choose_recipe(100_000_000, 512, max_memory_bytes=200 * gb).factory.startswith("IVF16384,")  # at most 16384
    assert choose_recipe(4_000_000, 512, max_memory_bytes=16 * gb).factory == "IVF4096,PQ128x4fs,RFlat"  # flat quantizer up to 4096
    with pytest.raises(UsageError, match="--max-memory"):
        choose_recipe(n, 512, max_memory_bytes=1 << 20)


def test_recipe_range_decides_retraining():
    recipe = IndexRecipe("IVF256,Flat", {"nprobe": 8}, chosen_for=20_000)
    assert recipe.covers(20_000) and recipe.covers(10_000) and recipe.covers(40_000)
    assert not recipe.covers(9_999) and not recipe.covers(40_001)
    assert IndexRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


# --------------------------------------------------------------------------- tuning
@pytest.mark.parametrize("factory", ["IVF256,Flat", "IVF256,PQ8x4fs,Refine(SQ8)"])
def test_build_tunes_to_the_recall_target_with_the_fewest_probes(factory):
    base = _embeddings(20_000)
    params = {"nprobe": 1, "target_recall": 0.95, "latency_ms": 1000.0}
    if "Refine" in factory:
        params["k_factor_rf"] = 8
    built = VectorIndex.build(base, recipe=IndexRecipe(factory, params, len(base)))
    p = built.recipe.params
    assert p["recall_at_10"] >= 0.95 and p["retrained"] is True and p["build_s"] > 0
    # the recorded recall is what the index does: measured again, independently of the tuner
    assert measure_recall(built, base, queries=200, seed=7) >= 0.93
    queries = _embeddings(200, draw=5)  # out-of-sample queries from the same model
    assert _recall(built, queries, base) >= 0.9
    # minimal: half the probes (the step below the chosen one) would miss the target
    if p["nprobe"] > 1:
        lower = VectorIndex(built.index, IndexRecipe(factory, {**p, "nprobe": p["nprobe"] // 2}, len(base)))
        lower._apply_params()
        assert measure_recall(lower, base, queries=200, seed=0) < 0.95
    assert p["nprobe"] < 256  # it did not simply scan everything


def test_flat_quantized_ivf_trains_maximum_inner_product_centroids():
    """With a flat coarse quantizer the centroids are the plain means of their lists (norm < 1), not
    FAISS's spherical default: on clustered data at scale spherical centroids mix clusters in lists
    (benchmarks/coarse_quantizer.py shows it at 1M x 512)."""
    import faiss

    base = _embeddings(20_000)
    built = VectorIndex.build(base, recipe=IndexRecipe("IVF256,Flat", {"nprobe": 1}, len(base)), tune=False)
    ivf = faiss.extract_index_ivf(built.index)
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    norms = np.linalg.norm(centroids, axis=1)
    assert norms.max() < 0.999 and norms.mean() > 0.5  # means of unit vectors that point roughly one way


def test_hnsw_quantized_ivf_searches_with_the_recipes_quantizer_setting(tmp_path):
    """A recipe with an HNSW coarse quantizer (given explicitly; auto never picks one) searches with its
    quantizer_efSearch, also after loading; FAISS trains the centroids spherically (unit norm)."""
    import faiss

    base = _embeddings(20_000)
    params = {"nprobe": 8, "k_factor_rf": 8, "quantizer_efSearch": 128, "target_recall": 0.95, "latency_ms": 1000.0}
    built = VectorIndex.build(base, recipe=IndexRecipe("IVF256_HNSW32,PQ8x4fs,RFlat", params, len(base)))
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(built.index).quantizer)
    centroids = quantizer.reconstruct_n(0, quantizer.ntotal)
    # FAISS trains these centroids apart from the quantizer (L2 assignment), spherical for inner products;
    # build() keeps that here: plain means are only used with a flat quantizer
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-4)
    assert quantizer.hnsw.efSearch == 128  # the recipe's setting, not FAISS's default (16)
    assert _recall(built, _embeddings(200, draw=5), base) >= 0.9
    built.index = faiss.clone_index(built.index)
    faiss.downcast_index(faiss.extract_index_ivf(built.index).quantizer).hnsw.efSearch = 16
    built.save(tmp_path / "h.faiss")
    loaded = VectorIndex.load(tmp_path / "h.faiss", built.recipe)
    assert faiss.downcast_index(faiss.extract_index_ivf(loaded.index).quantizer).hnsw.efSearch == 128


def test_tuning_respects_the_latency_target():
    base = _embeddings(20_000)
    # a latency target no probe setting can meet: tuning keeps the first (cheapest) value
    built = VectorIndex.build(base, recipe=IndexRecipe("IVF256,Flat", {"nprobe": 1, "target_recall": 1.0, "latency_ms": 1e-6}, len(base)))
    assert built.recipe.params["nprobe"] == 1
    assert built.recipe.params["recall_at_10"] < 1.0


def test_trained_index_is_reused_not_retrained():
    base = _embeddings(20_000)
    recipe = IndexRecipe("IVF256,Flat", {"nprobe": 4, "target_recall": 0.95, "latency_ms": 1000.0}, len(base))
    first = VectorIndex.build(base, recipe=recipe)
    grown = np.concatenate([base, _embeddings(5_000, draw=3)])
    second = VectorIndex.build(grown, recipe=recipe, trained=first)
    assert second.recipe.params["retrained"] is False and second.recipe.chosen_for == len(base)
    assert second.ntotal == len(grown) and first.ntotal == len(base)  # the earlier index is left as it was
    import faiss

    c1 = faiss.extract_index_ivf(first.index).quantizer.reconstruct_n(0, 256)
    c2 = faiss.extract_index_ivf(second.index).quantizer.reconstruct_n(0, 256)
    np.testing.assert_array_equal(c1, c2)
    assert measure_recall(second, grown) >= 0.93


def test_save_and_memory_mapped_load_answer_the_same(tmp_path):
    base = _embeddings(20_000)
    built = VectorIndex.build(base, recipe=IndexRecipe("IVF256,Flat", {"nprobe": 8}, len(base)), tune=False)
    built.save(tmp_path / "x.faiss")
    assert not list(tmp_path.glob(".tmp-*"))
    loaded = VectorIndex.load(tmp_path / "x.faiss", built.recipe, mmap=True)
    q = _embeddings(50, draw=9)
    s1, i1 = built.search(q, 10)
    s2, i2 = loaded.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2)


def test_exact_top_k_in_chunks_equals_one_pass():
    import faiss

    base = _embeddings(5_000)
    q = _embeddings(20, draw=4)
    _, want = faiss.knn(q, base, 10, metric=faiss.METRIC_INNER_PRODUCT)
    np.testing.assert_array_equal(exact_top_k(q, base, 10, chunk=777), want)
    mm = np.lib.format.open_memmap(str(_tmp_npy(base)), mode="r")
    np.testing.assert_array_equal(exact_top_k(q, mm, 10, chunk=1000), want)


def _tmp_npy(arr: np.ndarray):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "v.npy"
    np.save(path, arr)
    return path


# --------------------------------------------------------------------------- through ingestion
def test_ingestion_trains_an_approximate_index_once_and_reuses_it(tmp_path, random_clip_checkpoint, monkeypatch):
    """With a latency target exact search cannot meet, the moment index becomes IVF; growing reuses its training."""
    import mmsearch.indexes as indexes

    monkeypatch.setattr(indexes, "MIN_TRAIN", 0)  # test corpora are tiny; the rule is what is under test
    colours = [RED, GREEN, BLUE, YELLOW, WHITE]
    media = tmp_path / "media"
    for i in range(3):
        write_video(media / f"v{i}.mp4", [(colours[(i + j) % 5], 4.0) for j in range(5)], size=(64, 48), fps=4)
    config = IngestConfig(fps=2, window=1.0, stride=0.5, latency_ms=1e-6)
    kwargs = dict(model="synth-clip", pretrained=str(random_clip_checkpoint), device="cpu", audio_model=None)
    mmsearch.index_paths([media], tmp_path / "idx", config=config, **kwargs)
    recipe = json.loads((tmp_path / "idx" / MANIFEST).read_text())["spaces"]["visual"]["recipe"]
    assert recipe["factory"] == "IVF64,PQ16x4fs,RFlat" and recipe["params"]["retrained"] is True
    assert 0 < recipe["params"]["recall_at_10"] <= 1 and recipe["params"]["nprobe"] >= 1

    write_video(media / "v3.mp4", [(colours[(2 * j) % 5], 3.0) for j in range(6)], size=(80, 60), fps=4)  # new content
    mmsearch.index_paths([media], tmp_path / "idx", config=config, **kwargs)
    again = json.loads((tmp_path / "idx" / MANIFEST).read_text())["spaces"]["visual"]
    assert again["recipe"]["factory"] == "IVF64,PQ16x4fs,RFlat" and again["recipe"]["params"]["retrained"] is False
    assert again["recipe"]["chosen_for"] == recipe["chosen_for"] < again["derived"]["n_moments"]
    assert again["media_recipe"]["factory"] == "Flat"  # 4 media-level vectors: too few for k-means, whatever the target
    idx = mmsearch.open_index(tmp_path / "idx")
    info = idx.info()["spaces"]["visual"]["index"]
    assert info["factory"] == "IVF64,PQ16x4fs,RFlat"
    from typer.testing import CliRunner

    from mmsearch.cli import app

    shown = CliRunner().invoke(app, ["info", "--index", str(tmp_path / "idx")], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    params = again["recipe"]["params"]
    assert f"IVF64,PQ16x4fs,RFlat (nprobe={params['nprobe']}, k_factor_rf={params['k_factor_rf']}; recall@10 {params['recall_at_10']}" in shown.output
    assert f"chosen for {recipe['chosen_for']} vectors" in shown.output
    top = idx.search(image=_query_frame(media / "v3.mp4", 7.0, tmp_path / "q.png"), k=3, exhaustive=True)[0]
    assert top.path == str(media / "v3.mp4") and top.start <= 7.0 <= top.end  # found through the IVF moment index


@pytest.mark.parametrize("share", [0.002, 0.1, 0.6])
@pytest.mark.parametrize("tombstones", [False, True])
def test_a_masked_search_returns_the_best_rows_the_mask_keeps(share, tombstones, monkeypatch):
    """A search filter: exactly the top-k of the kept (and live) rows, whether those are scored
    exactly (few) or found in an IVF index with the others masked (many); rows the index has not
    taken yet (searched exactly) count too."""
    import mmsearch.indexes as indexes
    from mmsearch.indexes import RowIndex, RowVectors

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((6000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:5] + 0.1 * rng.standard_normal((5, 32)).astype(np.float32)
    built = VectorIndex.build(vectors[:5000], recipe=IndexRecipe("IVF16,Flat", {"nprobe": 16}, 5000), tune=False)
    alive = rng.random(6000) > 0.3 if tombstones else None
    index = RowIndex(RowVectors([vectors], 32), built, alive=alive)
    keep = rng.random(6000) < share
    if share > 0.5:
        monkeypatch.setattr(indexes, "MASK_EXACT", -1)  # the masked-index path, not the exact one
    scores, ids = index.search(queries, 10, keep=keep)
    passing = keep & (alive if alive is not None else True)
    rows = np.flatnonzero(passing)
    want = rows[np.argsort(-(queries @ vectors[rows].T), axis=1, kind="stable")[:, :10]]
    expected = min(10, len(rows))
    assert (ids[:, :expected] >= 0).all() and (ids[:, expected:] == -1).all()
    assert passing[ids[:, :expected]].all()
    assert [set(r[:expected]) for r in ids] == [set(r[:expected]) for r in want]  # nprobe covers every list: exact


def test_an_inverted_file_never_answers_short_while_rows_remain() -> None:
    """A deep search (exhaustive search asks for 200 moments) with a small tuned nprobe probes lists
    that hold fewer rows than asked for: the index probes more lists for those queries, never
    returning -1 while the index has rows left (60 of 300 exhaustive queries came back short)."""
    from mmsearch.indexes import IndexRecipe, VectorIndex

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((300, 64)).astype(np.float32)
    x = centers[rng.integers(0, 300, 30000)] + 0.3 * rng.standard_normal((30000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = VectorIndex.build(x, recipe=IndexRecipe("IVF256,Flat", {"nprobe": 1}, len(x)), tune=False)
    queries = rng.standard_normal((50, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    assert ((index.index.search(queries, 500)[1] >= 0).sum(axis=1) < 500).any()  # FAISS alone: short answers
    scores, ids = index.search(queries, 500)
    assert (ids >= 0).all() and all(len(set(row)) == 500 for row in ids)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # still best first
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, x[ids]), atol=1e-5)  # each row's own score


def test_row_vectors_read_in_place_are_views_of_the_mapping_with_the_same_rows(tmp_path) -> None:
    from mmsearch.indexes import RowVectors, exact_search

    rng = np.random.default_rng(3)
    parts = []
    for i, n in enumerate((300, 500)):
        np.save(tmp_path / f"p{i}.npy", rng.standard_normal((n, 16)).astype(np.float32))
        parts.append(np.load(tmp_path / f"p{i}.npy", mmap_mode="r"))
    copied, mapped = RowVectors(parts, 16), RowVectors(parts, 16).read_in_place()
    inside, across = mapped.view(100)[0:150], mapped[250:400]
    assert np.shares_memory(inside, parts[0]) and not np.shares_memory(copied.view(100)[0:150], parts[0])
    np.testing.assert_array_equal(inside, copied[100:250])
    np.testing.assert_array_equal(across, copied[250:400])  # two parts joined: a copy, the same rows
    queries = rng.standard_normal((3, 16)).astype(np.float32)
    for got, want in zip(exact_search(queries, mapped, 7, chunk=128), exact_search(queries, copied, 7, chunk=128)):
        np.testing.assert_array_equal(got, want)


def test_tuning_on_query_probes_reaches_the_target_recall_on_queries_from_outside_the_index() -> None:
    """Text-like queries sit apart from the indexed (image-like) vectors: tuned on indexed vectors
    alone, an inverted file stops at an nprobe that serves them poorly; given probes drawn like the
    queries, it tunes until held-out queries of that kind reach the target too (issue #18)."""
    from mmsearch.indexes import IndexRecipe, VectorIndex, exact_search

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    rng = np.random.default_rng(0)
    n, dim = 20000, 64
    shared = unit(rng.standard_normal(dim))  # the direction every image vector shares
    centres = unit(rng.standard_normal((200, dim)))
    content = 0.6 * centres[rng.integers(0, 200, n)] + 0.35 * unit(rng.standard_normal((n, dim)))
    base = unit(0.55 * shared + content)
    text = rng.standard_normal(dim)
    text = unit(text - (text @ shared) * shared)  # the text side of the modality gap

    def text_like(m: int, seed: int) -> np.ndarray:
        r = np.random.default_rng(seed)
        return unit(0.8 * text + 0.6 * unit(content[r.integers(0, n, m)]) + 0.7 * unit(r.standard_normal((m, dim))))

    held_out = text_like(300, seed=2)
    truth = exact_search(held_out, base, 10)[1]

    def recall(index: VectorIndex) -> float:
        got = index.search(held_out, 10)[1]
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)]))

    recipe = IndexRecipe("IVF256,Flat", {"nprobe": 1, "target_recall": 0.95, "latency_ms": 50}, n)
    plain = VectorIndex.build(base, recipe=recipe)
    probed = VectorIndex.build(base, recipe=recipe, queries=text_like(200, seed=1))
    assert plain.recipe.params["recall_at_10"] >= 0.95 and recall(plain) < 0.9  # in-distribution tuning misleads
    assert probed.recipe.params["query_probes"] == 200 and probed.recipe.params["query_recall_at_10"] >= 0.95
    assert probed.recipe.params["nprobe"] > plain.recipe.params["nprobe"]
    assert recall(probed) >= 0.93  # held-out queries of the same kind


def test_a_deep_search_re_ranks_at_most_max_rerank_candidates_and_the_default_ones_the_tuned_depth() -> None:
    from mmsearch.indexes import DEEP_FACTOR, MAX_RERANK, refine_depth

    assert (MAX_RERANK, DEEP_FACTOR) == (4096, 16)
    assert refine_depth(10, 128) == 1280 and refine_depth(20, 32) == 640  # the default searches: k x the tuned factor
    assert refine_depth(100, 32) == 3200
    # exhaustive search asks a moment index for 200: 4096 candidates, not 200 x 128 = 25,600
    assert refine_depth(200, 128) == MAX_RERANK and refine_depth(200, 32) == MAX_RERANK
    assert refine_depth(1000, 128) == 1000 * DEEP_FACTOR  # never fewer than DEEP_FACTOR a result
    assert refine_depth(200, 8) == 1600 and refine_depth(5, 0) == 5
