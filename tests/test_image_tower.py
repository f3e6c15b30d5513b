"""The int8 ONNX Runtime image tower (issue #18): it agrees with torch fp32, is really used, and is cached safely.

The agreement is measured on frames, not on the probe images the tower was verified with when built:
distinct frames (test_gpu's generator) and shots of two takes each (a frame and the same scene moved
a few pixels, as consecutive video frames are). Among distinct frames a few have two neighbours
within 1e-4 cosine of each other, which int8 rounding may swap: there every disagreement must be such
a near-tie; in shots the nearest neighbour is the other take, and int8 must keep it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_gpu import _frames, _rowwise_cosine

from mmsearch.encoders import PRESETS
from mmsearch.encoders.base import EncoderSpec
from mmsearch.errors import EncoderError, UsageError

TIE = 2e-3  # fp32 cosines closer than this are a near-tie, which int8 rounding may swap


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path) -> Path:
    """The towers go to this test's folder, never to the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "mmsearch" / "image-towers"


def _shots(frames: np.ndarray, seed: int = 11) -> np.ndarray:
    """Each frame followed by a second take of it: moved a pixel, with fresh grain (a still shot)."""
    rng = np.random.default_rng(seed)
    out = []
    for frame in frames:
        dy, dx = rng.integers(-1, 2, 2)
        take = np.roll(frame.astype(np.float32), (int(dy), int(dx)), axis=(0, 1)) + rng.normal(0, 2, frame.shape)
        out += [frame, np.clip(take, 0, 255).astype(np.uint8)]
    return np.stack(out)


def _synth_frames(n: int, seed: int) -> np.ndarray:
    """Frames of synth-clip's own world (shapes on backgrounds), 160x96."""
    from mmsearch.synth.pairs import sample_image_caption_pairs

    return sample_image_caption_pairs(np.random.default_rng(seed), n, (160, 96))[0]


def _spy_on_session(encoder) -> list[int]:
    """Count the batches the encoder's ONNX Runtime session really runs."""
    tower = encoder._image_tower
    real, runs = tower.session, []

    class Spy:
        def run(self, *args, **kwargs):
            runs.append(len(next(iter(args[1].values()))))
            return real.run(*args, **kwargs)

    tower.session = Spy()
    return runs


def _assert_agrees(int8, fp32, distinct: np.ndarray, shots: np.ndarray) -> dict[str, float]:
    assert int8.image_runtime == "onnx-int8" and fp32.image_runtime == "torch"
    assert int8.identity() == fp32.identity()  # the same vector space: an index needs no rebuild
    runs = _spy_on_session(int8)
    figures = {}
    for name, frames in (("distinct", distinct), ("shots", shots)):
        a, b = fp32.encode_images(frames), int8.encode_images(frames)
        assert b.dtype == np.float32 and b.shape == (len(frames), fp32.dim)
        np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
        assert not np.array_equal(a, b)  # not torch fp32 under another name
        cosine = _rowwise_cosine(a, b)
        assert cosine.min() >= 0.99, f"{name}: lowest cosine {cosine.min():.4f}"
        n = len(frames)
        sim_a, sim_b = a @ a.T - 2 * np.eye(n), b @ b.T - 2 * np.eye(n)
        want, got = sim_a.argmax(1), sim_b.argmax(1)
        top1 = float(np.mean(want == got))
        ranked = np.sort(sim_a, axis=1)
        clear = ranked[:, -1] - ranked[:, -2] >= TIE  # frames whose nearest neighbour is clear of the next
        clear_top1 = float(np.mean(want[clear] == got[clear]))
        figures[name] = {"min_cosine": round(float(cosine.min()), 5), "top1": round(top1, 4),
                         "clear_top1": round(clear_top1, 4), "clear": int(clear.sum())}
        if name == "shots":  # each frame's nearest is its other take
            assert top1 >= 0.99, figures
        else:  # near-ties may swap, nothing else
            assert clear_top1 >= 0.99 and clear.sum() >= n // 4 and top1 >= 0.95, figures
    assert sum(runs) == len(distinct) + len(shots)  # every frame went through the ONNX session
    print(figures)
    return figures


@pytest.mark.slow
def test_vit_b_32_int8_tower_agrees_with_torch_fp32(vit_b_32_checkpoint, cache) -> None:
    from mmsearch.encoders.clip import ClipEncoder

    spec = EncoderSpec("clip", "ViT-B-32", str(vit_b_32_checkpoint))
    int8 = ClipEncoder(spec, device="cpu", image_runtime="onnx-int8")
    fp32 = ClipEncoder(spec, device="cpu")
    _assert_agrees(int8, fp32, _frames(160, 180, 320), _shots(_frames(48, 180, 320, seed=11)))
    meta = json.loads(next(cache.glob("*-onnx-int8/tower.json")).read_text())
    assert meta["agreement"]["min_cosine"] >= 0.99 and meta["agreement"]["top1"] >= 0.99
    # differently sized images go through the tower too
    mixed = [_frames(1, 240, 200, seed=7)[0], _frames(1, 100, 150, seed=8)[0]]
    assert _rowwise_cosine(int8.encode_images(mixed), fp32.encode_images(mixed)).min() >= 0.99


def test_synth_clip_int8_tower_agrees_with_torch_fp32(cache) -> None:
    from mmsearch.encoders.clip import ClipEncoder

    spec = PRESETS["synth-clip"]
    int8 = ClipEncoder(spec, device="cpu", image_runtime="onnx-int8")
    fp32 = ClipEncoder(spec, device="cpu")
    _assert_agrees(int8, fp32, _synth_frames(300, seed=0), _shots(_synth_frames(100, seed=1)))
    assert int8.encode_images(np.zeros((0, 96, 160, 3), np.uint8)).shape == (0, int8.dim)


def test_the_tower_is_built_once_then_loaded(cache, monkeypatch) -> None:
    from mmsearch.encoders import image_tower
    from mmsearch.encoders.clip import ClipEncoder
    from mmsearch.fileio import file_crc32

    first = ClipEncoder(PRESETS["synth-clip"], device="cpu", image_runtime="onnx-int8")
    (folder,) = cache.iterdir()
    assert folder.name.endswith("-onnx-int8") and len(folder.name.split("-")[0]) == 16
    meta = json.loads((folder / image_tower.META).read_text())
    import onnxruntime

    assert meta["format"] == image_tower.FORMAT and meta["runtime"] == "onnx-int8"
    assert meta["onnxruntime"] == onnxruntime.__version__
    assert meta["crc32"] == file_crc32(folder / image_tower.ONNX)
    assert meta["agreement"]["probes"] >= 64 and meta["agreement"]["min_cosine"] >= 0.99
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".tmp")]  # no temporary left behind
    mtime = (folder / image_tower.ONNX).stat().st_mtime_ns

    def no_build(*args, **kwargs):
        raise AssertionError("the cached tower should have been loaded, not built again")

    monkeypatch.setattr(image_tower, "build_image_tower", no_build)
    second = ClipEncoder(PRESETS["synth-clip"], device="cpu", image_runtime="onnx-int8")
    assert second.image_runtime == "onnx-int8" and (folder / image_tower.ONNX).stat().st_mtime_ns == mtime
    frames = _frames(8, 64, 64, seed=3)
    np.testing.assert_allclose(second.encode_images(frames), first.encode_images(frames), atol=1e-6)


def test_a_corrupt_tower_is_rebuilt_not_used(cache, monkeypatch) -> None:
    from mmsearch.encoders import image_tower
    from mmsearch.encoders.clip import ClipEncoder
    from mmsearch.fileio import file_crc32

    spec = PRESETS["synth-clip"]
    ClipEncoder(spec, device="cpu", image_runtime="onnx-int8")
    (folder,) = cache.iterdir()
    onnx = folder / image_tower.ONNX
    data = bytearray(onnx.read_bytes())
    middle = len(data) // 2  # inside the weights
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    onnx.write_bytes(bytes(data))
    assert image_tower.load_image_tower(folder) is None  # the loader refuses it

    builds = []
    real_build = image_tower.build_image_tower
    monkeypatch.setattr(image_tower, "build_image_tower", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    encoder = ClipEncoder(spec, device="cpu", image_runtime="onnx-int8")
    assert builds == [1] and encoder.image_runtime == "onnx-int8"
    meta = json.loads((folder / image_tower.META).read_text())
    assert file_crc32(onnx) == meta["crc32"]
    frames = _frames(40, 96, 160, seed=5)
    cosine = _rowwise_cosine(encoder.encode_images(frames), ClipEncoder(spec, device="cpu").encode_images(frames))
    assert cosine.min() >= 0.99


def test_a_tower_that_misses_the_bar_is_refused_and_not_written(cache, monkeypatch) -> None:
    from mmsearch.encoders import image_tower
    from mmsearch.encoders.clip import ClipEncoder

    monkeypatch.setattr(image_tower, "MIN_COSINE", 1.0001)  # no int8 tower can meet this
    with pytest.raises(EncoderError, match="--image-runtime torch") as err:
        ClipEncoder(PRESETS["synth-clip"], device="cpu", image_runtime="onnx-int8")
    assert "\n" not in str(err.value) and "cosine" in str(err.value)
    assert not cache.exists() or not os.listdir(cache)


def test_missing_files_load_as_none(tmp_path) -> None:
    from mmsearch.encoders.image_tower import load_image_tower

    assert load_image_tower(tmp_path / "nothing-here") is None


@pytest.mark.parametrize("runtime", ["onnx", "int8", "ONNX-INT8", ""])
def test_an_unknown_image_runtime_is_a_usage_error(runtime) -> None:
    from mmsearch.encoders.clip import ClipEncoder

    with pytest.raises(UsageError, match="image runtime"):
        ClipEncoder(PRESETS["synth-clip"], device="cpu", image_runtime=runtime)


def test_agreement_forgives_a_swap_among_near_ties_only_when_asked() -> None:
    """Three takes of one still shot (near-identical) and two other scenes: a candidate whose nearest
    take is another take agrees within a tie of 0.001, not strictly; one whose nearest row is
    another scene disagrees either way."""
    from mmsearch.encoders.image_tower import agreement

    rng = np.random.default_rng(0)
    shot, u1, u2 = rng.standard_normal((3, 64))
    v, w = rng.standard_normal((2, 64))
    others = np.vstack([0.5 * v + w, v])  # scene 3's nearest row is scene 4 (cosine ~0.45), far from the shot

    def takes(e1: float, e2: float) -> np.ndarray:
        return np.vstack([shot, shot + e1 * u1, shot + e2 * u2])

    ref = np.vstack([takes(0.01, 0.02), others]).astype(np.float32)  # take 0's nearest: take 1
    swapped = np.vstack([takes(0.02, 0.01), others]).astype(np.float32)  # now take 2
    strict, tied = agreement(ref, swapped), agreement(ref, swapped, tie=1e-3)
    assert strict["top1"] == pytest.approx(0.8) and tied["top1"] == 1.0
    far = ref.copy()
    far[3] = shot + 0.05 * rng.standard_normal(64)  # scene 3 now looks like the shot: its nearest row is a take
    assert agreement(ref, far, tie=1e-3)["top1"] < 1.0
