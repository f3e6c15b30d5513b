"""The CUDA paths: fp16 encoders on the GPU agree with fp32 on the CPU, and indexing and search run there.

They need a CUDA GPU, which the CI machines do not have: there they skip and say so. The figures
from a run on an H100 are in the README ("GPU").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ORANGE, WHITE, YELLOW

from mmsearch.encoders.base import EncoderSpec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none")


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Distinct images (gradients, blocks and noise), so a wrong resize or colour order shows."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        a, b, c = rng.random(3) * 6
        img = np.stack([np.sin(xx / (20 + 10 * a) + b), np.cos(yy / (15 + 10 * b) + c), np.sin((xx + yy) / (30 + 5 * c))], -1)
        img = 127 + 100 * img + rng.normal(0, 10, img.shape)
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0 : y0 + h // 3, x0 : x0 + w // 3] = rng.integers(0, 255, 3)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_clip_runs_in_fp16_on_the_gpu_and_agrees_with_the_cpu(vit_b_32_checkpoint) -> None:
    from mmsearch.encoders.clip import ClipEncoder

    spec = EncoderSpec("clip", "ViT-B-32", str(vit_b_32_checkpoint))
    gpu = ClipEncoder(spec, device="cuda")
    cpu = ClipEncoder(spec, device="cpu")
    # open_clip's fp16 casts the matrices (convolutions, linear layers, attention), keeps norms in fp32
    assert gpu.model.visual.conv1.weight.dtype == torch.float16 and gpu.model.visual.conv1.weight.is_cuda
    assert gpu.batch_size >= 256  # batches that keep the GPU busy
    assert gpu.identity() == cpu.identity()  # an index built on either can be searched with the other

    frames = _frames(300, 180, 320)  # 300 > one batch, and not square: resize + crop on the GPU
    g, c = gpu.encode_images(frames), cpu.encode_images(frames)
    assert g.dtype == np.float32 and g.shape == (300, gpu.dim)
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-4)
    assert _rowwise_cosine(g, c).min() > 0.99
    # the nearest neighbours agree: each frame's best match among the others is the same
    sim_g, sim_c = g @ g.T - 2 * np.eye(300), c @ c.T - 2 * np.eye(300)
    assert np.mean(sim_g.argmax(1) == sim_c.argmax(1)) >= 0.95

    mixed = [frames[0], _frames(1, 240, 200, seed=7)[0], frames[1][:100, :150]]  # differently sized images
    np.testing.assert_allclose(gpu.encode_images(mixed), cpu.encode_images(mixed), atol=0.02)

    texts = [f"a photo of {n} {w}" for n in ("one", "two", "three") for w in ("dog", "car", "tree", "onion")]
    assert _rowwise_cosine(gpu.encode_text(texts), cpu.encode_text(texts)).min() > 0.99


def test_clap_runs_in_fp16_on_the_gpu_and_agrees_with_the_cpu(tmp_path) -> None:
    from test_clap import _tiny_clap

    from mmsearch.encoders.clap import ClapEncoder

    spec = EncoderSpec("clap", str(_tiny_clap(tmp_path / "clap", fusion=False)))
    gpu, cpu = ClapEncoder(spec, device="cuda"), ClapEncoder(spec, device="cpu")
    assert next(gpu.model.parameters()).dtype == torch.float16 and next(gpu.model.parameters()).is_cuda
    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 0.1, int(cpu.sample_rate * s)).astype(np.float32) for s in (1.0, 3.0, 7.5, 10.0)]
    assert _rowwise_cosine(gpu.encode_audio(clips), cpu.encode_audio(clips)).min() > 0.99
    texts = ["upbeat jazz piano", "rain on a window", "a dog barking"]
    assert _rowwise_cosine(gpu.encode_text(texts), cpu.encode_text(texts)).min() > 0.99


def test_index_and_search_on_the_gpu_equal_the_cpu(video_corpus, tmp_path) -> None:
    """The whole path with device=cuda: the same files and seconds as a CPU build of the same index."""
    from mmsearch.api import index_paths, open_index

    root = video_corpus["root"]
    answers = {}
    for device in ("cuda", "cpu"):
        report = index_paths([root], tmp_path / device, model="synth-clip", device=device)
        assert not report.failed and report.frames > 0
        index = open_index(tmp_path / device, device=device)
        answers[device] = [
            [(Path(r.path).name, r.start, r.end) for r in index.search(image=_query_image(tmp_path / f"{name}.png", colour), k=3)]
            for name, colour in (("yellow", YELLOW), ("white", WHITE), ("orange", ORANGE))
        ]
    for on_gpu, on_cpu in zip(answers["cuda"], answers["cpu"]):
        assert [hit[0] for hit in on_gpu] == [hit[0] for hit in on_cpu]
        for (_, s1, e1), (_, s2, e2) in zip(on_gpu, on_cpu):
            assert abs(s1 - s2) <= 1.0 and abs(e1 - e2) <= 1.0
    # and right, not merely equal: the top moment is the colour's own segment (yellow 0-5 s and
    # white 5-10 s of b.mp4, orange 4-8 s of c.webm)
    for (name, start, end), (want, inside) in zip([hits[0] for hits in answers["cuda"]], [("b.mp4", 2.5), ("b.mp4", 7.5), ("c.webm", 6.0)]):
        assert name == want and start <= inside <= end


@pytest.mark.parametrize("factory", ["Flat", "IVF64,Flat"])
def test_faiss_search_on_the_gpu_equals_the_cpu(factory, monkeypatch) -> None:
    """Only with the faiss GPU build (``pip install mmsearch[gpu]``); faiss-cpu has no GPU to move to."""
    from mmsearch.indexes import IndexRecipe, VectorIndex, gpu_available

    if not gpu_available():
        pytest.skip("the faiss GPU build is not installed (pip install 'mmsearch[gpu]')")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:100] + 0.05 * rng.standard_normal((100, 64)).astype(np.float32)
    recipe = IndexRecipe(factory, {"nprobe": 8} if factory != "Flat" else {}, 20000)
    index = VectorIndex.build(x, recipe=recipe, tune=False)
    monkeypatch.setenv("MMSEARCH_FAISS_GPU", "0")
    _, cpu_ids = index.search(q, 10)
    assert index._gpu_index is None
    monkeypatch.setenv("MMSEARCH_FAISS_GPU", "1")
    _, gpu_ids = index.search(q, 10)
    assert index._gpu_index  # it really ran on the GPU
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(cpu_ids, gpu_ids)]) >= 0.98
    index._apply_params()  # new search parameters reach the GPU copy too
    _, again = index.search(q, 10)
    assert np.array_equal(again, gpu_ids)


def _query_image(path: Path, colour: tuple[int, int, int]) -> Path:
    from PIL import Image

    img = np.zeros((120, 160, 3), np.uint8)
    img[:] = colour
    Image.fromarray(img).save(path)
    return path


def test_exact_search_with_torch_on_the_gpu_equals_faiss_on_the_cpu() -> None:
    """mmsearch.indexes.torch_exact on CUDA (fp16 products, float32 re-scoring) against IndexFlatIP."""
    from mmsearch.indexes import RowIndex, RowVectors, exact_search
    from mmsearch.indexes.torch_exact import TorchFlat

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((200_000, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.integers(0, len(vectors), 64)] + 0.05 * rng.standard_normal((64, 512)).astype(np.float32)
    s_cpu, i_cpu = exact_search(queries, vectors, 10)
    s_gpu, i_gpu = TorchFlat(vectors, device="cuda", block_rows=1 << 16).search(queries, 10)
    assert np.mean(i_cpu == i_gpu) >= 0.99
    np.testing.assert_allclose(s_gpu[:, 0], s_cpu[:, 0], atol=1e-5)
    rows = RowIndex(RowVectors([vectors], 512), None)
    rows.use_device("cuda")
    np.testing.assert_array_equal(rows.search(queries, 10)[1][:, 0], i_cpu[:, 0])
