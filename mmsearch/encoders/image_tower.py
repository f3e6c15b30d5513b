"""A CLIP image tower for the CPU: open_clip's visual tower run by ONNX Runtime with int8 weights.

ViT-B-32 in torch fp32 is the indexing bottleneck on a small CPU. :func:`build_image_tower` exports
``model.visual`` to ONNX (``torch.onnx.export``) and quantises it with ONNX Runtime's dynamic
quantisation (``onnxruntime.quantization.quantize_dynamic``; see "Quantize ONNX models",
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html): the weights of the
MatMul and Gemm nodes (the attention projections, the MLPs, the final projection) become int8 with
one scale per output channel, activations are quantised on the fly per tensor, and the patch
convolution stays fp32. On a 2-core AVX-512 VNNI machine ViT-B-32 encodes about 3.4x as many
frames per second as torch fp32 (batch 32, 2 threads); QUInt8 weights or an int8 patch convolution
were slower, one scale per weight tensor less exact.

A tower is written only when it is faithful (as the text towers of :mod:`.frozen` are): on
:data:`N_PROBES` deterministic probe images (gradients, blocks, noise and mixtures, each scene in
two takes: :func:`probe_pixels`) every int8 vector must have cosine >= :data:`MIN_COSINE` with
torch's fp32 vector, and each probe's nearest other probe must be the same by both in at least
:data:`MIN_TOP1` of them; otherwise
:class:`~mmsearch.errors.EncoderError` says so and nothing is written. A tower is used only while
its file has the CRC-32 it was written with and this ONNX Runtime is the one that verified it;
else :func:`load_image_tower` answers None and the caller builds it again (a damaged cache is
rebuilt, never used).

Dynamic quantisation computes each activation's scale over the whole batch, so a frame's int8
vector depends very slightly on the frames encoded with it (well inside the bars above).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EncoderError, UsageError
from ..fileio import cache_dir, file_crc32
from .base import l2_normalize
from .frozen import _quiet

FORMAT = 1
META = "tower.json"
ONNX = "tower.onnx"
RUNTIMES = ("onnx-int8",)  # towers this module builds
IMAGE_RUNTIMES = ("torch", *RUNTIMES)  # what --image-runtime takes
N_PROBES = 96
MIN_COSINE = 0.99
MIN_TOP1 = 0.99
# the variant chosen (issue #18): QInt8 weights, per channel, MatMul/Gemm only
QUANTISATION = {"weight_type": "QInt8", "per_channel": True, "op_types": ["MatMul", "Gemm"]}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_FALLBACK = "pass --image-runtime torch to encode with torch fp32 instead"


class ImageTower:
    """An image tower in an ONNX Runtime session.

    ``encode(pixels)`` maps float32 ``(N, 3, S, S)`` pixels, normalised as the encoder's
    preprocessing gives them, to float32 ``(N, dim)`` features, not normalised (what
    ``model.visual`` gives). ``meta`` is the JSON written beside the model; ``calls`` counts the
    batches run (what tests check to see the tower is really in use)."""

    def __init__(self, session: Any, meta: dict[str, Any]) -> None:
        self.session = session
        self.meta = meta
        self.input_name = session.get_inputs()[0].name
        self.calls = 0

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def input_size(self) -> int:
        return int(self.meta["input_size"])

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """float32 ``(N, 3, S, S)`` -> float32 ``(N, dim)``; raises ``ValueError`` for another shape."""
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        s = self.input_size
        if pixels.ndim != 4 or pixels.shape[1:] != (3, s, s):
            raise ValueError(f"the image tower takes (N, 3, {s}, {s}) pixels, not {pixels.shape}")
        if len(pixels) == 0:
            return np.zeros((0, self.dim), np.float32)
        self.calls += 1
        return np.asarray(self.session.run(None, {self.input_name: pixels})[0], dtype=np.float32)


# ------------------------------------------------------------------------------------------ cache
def check_image_runtime(runtime: str) -> str:
    """``runtime`` if it is one of :data:`IMAGE_RUNTIMES`, else :class:`~mmsearch.errors.UsageError`."""
    if runtime not in IMAGE_RUNTIMES:
        raise UsageError(f"unknown image runtime {runtime!r}: --image-runtime takes {' or '.join(IMAGE_RUNTIMES)}")
    return runtime


def image_tower_dir(identity: dict[str, Any], *, runtime: str = "onnx-int8") -> Path:
    """Where the tower of an encoder of ``identity`` is cached:
    ``image-towers/<key>-<runtime>`` in :func:`mmsearch.fileio.cache_dir` (where Whisper is kept too),
    ``<key>`` the first 16 hex digits of the SHA-256 of ``json.dumps(identity, sort_keys=True, default=str)``."""
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]
    return cache_dir() / "image-towers" / f"{key}-{runtime}"


def image_tower_for(model: Any, identity: dict[str, Any], *, input_size: int, mean: tuple[float, ...] = OPENAI_MEAN,
                    std: tuple[float, ...] = OPENAI_STD, runtime: str = "onnx-int8") -> ImageTower:
    """The cached tower of ``model`` (whose encoder has ``identity``), built first when there is
    none or the cached one is damaged. Raises :class:`~mmsearch.errors.EncoderError` when it cannot
    be built faithfully."""
    directory = image_tower_dir(identity, runtime=runtime)
    tower = load_image_tower(directory, runtime=runtime, identity=identity)
    if tower is None:
        build_image_tower(model, input_size=input_size, directory=directory, runtime=runtime,
                          mean=mean, std=std, identity=identity)
        tower = load_image_tower(directory, runtime=runtime, identity=identity)
    if tower is None:
        raise EncoderError(f"the {runtime} image tower written to {directory} could not be loaded back; {_FALLBACK}")
    return tower


# ------------------------------------------------------------------------------------------ build
def build_image_tower(model: Any, *, input_size: int, directory: str | os.PathLike, runtime: str = "onnx-int8",
                      mean: tuple[float, ...] = OPENAI_MEAN, std: tuple[float, ...] = OPENAI_STD,
                      identity: dict[str, Any] | None = None) -> Path:
    """Export ``model.visual`` (an fp32 open_clip model on the CPU) to ONNX, quantise its weights to
    int8 and write it, with ``tower.json``, into ``directory``; returns ``directory``.

    The tower takes float32 ``(N, 3, input_size, input_size)`` pixels, already normalised with
    ``mean`` and ``std`` (which also make the probe images), and gives float32 ``(N, dim)``
    unnormalised features; N is free. The directory is written whole under a temporary name beside
    it, then renamed over any old one. Raises :class:`~mmsearch.errors.UsageError` for an unknown
    ``runtime`` and :class:`~mmsearch.errors.EncoderError` when export or quantisation fails or the
    int8 vectors miss the agreement bars (:data:`MIN_COSINE`, :data:`MIN_TOP1`); then nothing is
    written."""
    import onnxruntime
    import torch

    if runtime not in RUNTIMES:
        check_image_runtime(runtime)  # names the choices
        raise UsageError(f"{runtime!r} is the image runtime without a tower to build")
    visual = model.visual
    if next(visual.parameters()).dtype != torch.float32 or next(visual.parameters()).device.type != "cpu":
        raise EncoderError(f"the {runtime} image tower is built from an fp32 model on the CPU; {_FALLBACK}")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-image-tower-", dir=directory.parent))
    try:
        try:
            _export_int8(visual, input_size, tmp)
        except Exception as exc:  # noqa: BLE001 - a tower the exporter or quantiser refuses: say so, in one line
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise EncoderError(f"could not build the {runtime} image tower ({reason}); {_FALLBACK}") from None
        pixels = probe_pixels(input_size, mean, std)
        with torch.inference_mode():
            want = np.concatenate([visual(torch.from_numpy(pixels[s : s + 32])).float().numpy()
                                   for s in range(0, len(pixels), 32)])
        tower = _session(tmp / ONNX, {"dim": want.shape[1], "input_size": input_size})
        got = np.concatenate([tower.encode(pixels[s : s + 32]) for s in range(0, len(pixels), 32)])
        figures = agreement(want, got)
        if figures["min_cosine"] < MIN_COSINE or figures["top1"] < MIN_TOP1:
            raise EncoderError(
                f"the {runtime} image tower does not agree with torch fp32 on {len(pixels)} probe images "
                f"(lowest cosine {figures['min_cosine']:.4f}, bar {MIN_COSINE}; nearest-neighbour agreement "
                f"{figures['top1']:.3f}, bar {MIN_TOP1}), so it is not used; {_FALLBACK}")
        meta = {
            "format": FORMAT,
            "runtime": runtime,
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
            "quantisation": QUANTISATION,
            "input_size": int(input_size),
            "dim": int(want.shape[1]),
            "identity": identity,
            "crc32": file_crc32(tmp / ONNX),
            "agreement": {"probes": len(pixels), **figures},
        }
        (tmp / META).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        if directory.exists():
            shutil.rmtree(directory)
        try:
            os.replace(tmp, directory)
        except OSError:
            if not directory.exists():
                raise  # not another process writing the same tower first: a real failure
        return directory
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_int8(visual: Any, input_size: int, tmp: Path) -> None:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = tmp / "fp32.onnx"
    example = torch.zeros(2, 3, input_size, input_size)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # its fused attention op has no ONNX export
    quant_log = logging.getLogger()
    level = quant_log.level
    quant_log.setLevel(logging.ERROR)  # quantize_dynamic logs advice on the root logger
    try:
        with torch.inference_mode(False), torch.no_grad(), _quiet():
            torch.onnx.export(visual.eval(), (example,), str(fp32), input_names=["pixels"], output_names=["features"],
                              dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                              opset_version=17, dynamo=False)
            quantize_dynamic(str(fp32), str(tmp / ONNX), weight_type=getattr(QuantType, QUANTISATION["weight_type"]),
                             per_channel=QUANTISATION["per_channel"], op_types_to_quantize=QUANTISATION["op_types"])
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        quant_log.setLevel(level)
        fp32.unlink(missing_ok=True)


def agreement(reference: np.ndarray, candidate: np.ndarray, *, tie: float = 0.0) -> dict[str, float]:
    """How well ``candidate`` (N, dim) vectors stand in for ``reference`` ones, both L2-normalised
    first: the lowest row-wise cosine, and the share of rows whose nearest other row is the same by
    both (``top1``). With ``tie`` > 0 a row also agrees when the candidates' nearest other row is,
    by the reference vectors, within ``tie`` cosine of the reference's nearest (frames of a still
    shot are near-identical, and which of them is nearest is a coin toss)."""
    a, b = l2_normalize(reference), l2_normalize(candidate)
    n = len(a)
    cosine = np.sum(a * b, axis=1)
    sim_a, sim_b = a @ a.T - 2 * np.eye(n, dtype=np.float32), b @ b.T - 2 * np.eye(n, dtype=np.float32)
    rows, near_a, near_b = np.arange(n), sim_a.argmax(1), sim_b.argmax(1)
    same = near_a == near_b
    if tie > 0:
        same |= sim_a[rows, near_b] >= sim_a[rows, near_a] - tie
    return {"min_cosine": round(float(cosine.min()), 6), "mean_cosine": round(float(cosine.mean()), 6),
            "top1": round(float(np.mean(same)), 6)}


def probe_pixels(size: int, mean: tuple[float, ...] = OPENAI_MEAN, std: tuple[float, ...] = OPENAI_STD,
                 n: int = N_PROBES) -> np.ndarray:
    """``n`` (even) deterministic probe images as normalised float32 ``(n, 3, size, size)`` pixels, the
    same on every machine: ``n // 2`` scenes (linear gradients between two colours, checkerboards
    with a block, coarse-to-fine noise, mixtures of a radial gradient, stripes and grain), each
    followed by a second take of it (a little brighter or darker, with fresh grain), as consecutive
    frames of a still shot are. Each probe's nearest neighbour is then its other take, well
    clear of the rest, so the neighbour check measures the tower rather than near-ties (among
    distinct scenes alone a few have two neighbours within 1e-4 cosine of each other, which int8's
    rounding swaps: strict agreement there was 0.97 for every int8 variant tried)."""
    rng = np.random.default_rng(20240518)
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(0, n, 2):
        c0, c1 = rng.random(3), rng.random(3)
        kind = (i // 2) % 4
        if kind == 0:  # a linear gradient in any direction
            angle = rng.random() * 2 * np.pi
            t = np.clip((np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) + 0.5, 0, 1)[..., None]
            img = c0 * (1 - t) + c1 * t
        elif kind == 1:  # a checkerboard, with a block of a third colour
            cell = int(rng.integers(2, max(3, size // 3)))
            board = ((np.arange(size)[:, None] // cell + np.arange(size)[None, :] // cell) % 2)[..., None]
            img = np.where(board == 1, c0, c1)
            h, w = rng.integers(size // 8, size // 2 + 1, 2)
            y0, x0 = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
            img[y0 : y0 + h, x0 : x0 + w] = rng.random(3)
        elif kind == 2:  # noise on a coarse grid, blown up (from blotches to per-pixel grain)
            grid = int(rng.choice([2, 4, 8, 16, 32, size]))
            coarse = rng.normal(0.5, rng.uniform(0.1, 0.35), (grid, grid, 3))
            reps = -(-size // grid)
            img = np.repeat(np.repeat(coarse, reps, 0), reps, 1)[:size, :size] * (0.5 + c0)
        else:  # a radial gradient with stripes and grain
            cy, cx = rng.random(2)
            r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)[..., None]
            stripes = (np.sin(2 * np.pi * (xx * rng.uniform(1, 12) + yy * rng.uniform(-6, 6))) > 0)[..., None]
            img = c0 * (1 - np.clip(r, 0, 1)) + c1 * np.clip(r, 0, 1) + 0.25 * stripes
            img = img + rng.normal(0, 0.05, img.shape)
        out[i] = np.clip(img, 0.0, 1.0)
        if i + 1 < n:  # the second take
            take = out[i] * rng.uniform(0.97, 1.03) + rng.normal(0, 0.01, img.shape)
            out[i + 1] = np.clip(take, 0.0, 1.0)
    pixels = (out - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32)


# ------------------------------------------------------------------------------------------ load
def load_image_tower(directory: str | os.PathLike, *, runtime: str = "onnx-int8",
                     identity: dict[str, Any] | None = None, threads: int | None = None) -> ImageTower | None:
    """The tower in ``directory``, in an ONNX Runtime session on ``threads`` intra-op threads
    (default ``torch.get_num_threads()``) with sequential execution; None (the caller encodes with
    torch, or builds the tower again) when a file is missing or unreadable, the model's CRC-32 is
    not the one written, or the tower was written for another format, runtime, ``identity`` (when
    given) or ONNX Runtime version."""
    import onnxruntime

    directory = Path(directory)
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
        if (meta.get("format") != FORMAT or meta.get("runtime") != runtime
                or meta.get("onnxruntime") != onnxruntime.__version__
                or (identity is not None and meta.get("identity") != json.loads(json.dumps(identity, default=str)))):
            return None
        if file_crc32(directory / ONNX) != meta["crc32"]:
            return None  # damaged since it was written
        return _session(directory / ONNX, meta, threads=threads)
    except Exception:  # noqa: BLE001 - missing, foreign or damaged files: no tower, the caller decides
        return None


def _session(path: Path, meta: dict[str, Any], *, threads: int | None = None) -> ImageTower:
    import onnxruntime as ort

    if threads is None:
        import torch

        threads = torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ImageTower(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), meta)
