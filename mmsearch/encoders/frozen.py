"""Text towers frozen for queries: the text side of an encoder saved as TorchScript with its tokenizer.

A text query needs only an encoder's text tower, yet building the encoder imports open_clip (which
imports torchvision, torch._dynamo and transformers' generation code) or sentence-transformers
(transformers, scikit-learn): seconds before a search that takes milliseconds. :func:`freeze`
saves the text tower of a built encoder beside a tokenizer that loads without those libraries:
open_clip's CLIP text transformer traced to TorchScript (``torch.jit.trace``) with open_clip's own
``tokenizer.py`` module (BPE with ftfy and regex); a sentence-transformers pipeline exported to
ONNX (``torch.onnx.export``) for ONNX Runtime, which runs a small BERT on one thread in half
TorchScript's time, with the model's HF ``tokenizers`` JSON. :func:`load_frozen` gives a :class:`FrozenTextTower` that
encodes as the full encoder does.

A tower is written only when it is faithful: at freeze time its tokens must equal the encoder's
and its vectors must match to :data:`TOLERANCE` (max abs difference of L2-normalised vectors) on
probe texts of every length, batch sizes 1 and several, else nothing is written and queries build
the full encoder as before. A tower is used only for the encoder identity it was frozen from, and only while it still gives the
vectors it gave when written: its files' CRC-32 and two check texts, encoded again at every load.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np

from ..fileio import file_crc32
from .base import l2_normalize

TOLERANCE = 1e-4
FORMAT = 1
META = "tower.json"
MODULE = "tower.pt"  # TorchScript
ONNX = "tower.onnx"  # a sentence model, run by ONNX Runtime
TOKENIZER = "tokenizer.json"  # a sentence model's tokenizers JSON
PROBES = [
    "a",
    "a dog catching a frisbee on the beach",
    "Where does GRANDPA tell the story about the boat?",
    "Ünïcödé — ﬁre & ice: 42 °C, naïve café, 東京の夜景",
    "\"quoted words\" and punctuation!!! (brackets) [applause]",
    " ".join(["a long description of everything on screen"] * 40),  # past every context length
]
CHECKS = [PROBES[1], PROBES[5]]  # encoded again at every load: a short text and one past the context length


@dataclass
class FrozenTextTower:
    """The text side of an encoder: ``encode_text(texts)`` gives ``(n, dim)`` float32 L2-normalised
    vectors, as the encoder it was frozen from does; ``identity()`` is that encoder's identity.
    ``run`` maps what ``tokenize`` gives to ``(n, dim)`` vectors (a TorchScript module, or an ONNX
    Runtime session)."""

    run: Callable[[tuple[Any, ...]], np.ndarray]
    tokenize: Callable[[list[str]], tuple[Any, ...]]
    meta: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def identity(self) -> dict[str, Any]:
        return self.meta["identity"]

    def encode_text(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = [self.run(self.tokenize(list(texts[start : start + 64]))) for start in range(0, len(texts), 64)]
        return l2_normalize(np.concatenate(out).astype(np.float32))


def freeze(encoder: Any, directory: str | os.PathLike) -> bool:
    """Trace ``encoder``'s text tower into ``directory`` (written whole under a temporary name, then
    renamed). Returns False, writing nothing, for an encoder whose text side cannot be frozen
    faithfully (a family without a recipe here, another tokenizer, vectors that differ)."""
    family = encoder.identity().get("family")
    recipe = {"clip": _clip_parts, "sentence": _sentence_parts}.get(family)
    if recipe is None or getattr(encoder, "device", None) is None or encoder.device.type != "cpu":
        return False
    try:
        parts = recipe(encoder)
    except Exception:  # noqa: BLE001 - a model this recipe does not know: queries use the full encoder
        return False
    if parts is None:
        return False
    write, extra = parts
    meta = {"format": FORMAT, "family": family, "dim": int(encoder.dim), "identity": encoder.identity(),
            "torch": _torch_version(), **extra}
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-tower-", dir=directory.parent))
    try:
        with _quiet():
            write(tmp)
        if "tokenizer_json" in extra:
            (tmp / TOKENIZER).write_text(meta.pop("tokenizer_json"), encoding="utf-8")
        frozen = _load(tmp, meta)
        if not _faithful(encoder, frozen):
            return False
        # what the tower must still say when loaded: a file damaged since (a flipped byte in the
        # weights, a changed length in this JSON) gives other vectors, and is not used
        meta["check"] = frozen.encode_text(CHECKS).round(6).tolist()
        meta["crc32"] = {name: file_crc32(tmp / name) for name in (MODULE, ONNX, TOKENIZER) if (tmp / name).exists()}
        (tmp / META).write_text(json.dumps(meta), encoding="utf-8")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
        return True
    except Exception:  # noqa: BLE001 - anything the tracer or the file system refuses: no tower, queries as before
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _quiet() -> Iterator[None]:
    """TorchScript's tracer and loader warn (shape-dependent Python branches, which the probes check;
    ``torch.jit`` being deprecated in favour of ``torch.export``, whose loader takes seconds and
    imports torch._dynamo, the import this module exists to avoid)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def load_frozen(directory: str | os.PathLike, identity: dict[str, Any]) -> FrozenTextTower | None:
    """The tower in ``directory`` when it was frozen from an encoder of exactly ``identity`` with this
    torch, else None (the caller builds the full encoder)."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT or meta.get("identity") != identity or meta.get("torch") != _torch_version():
        return None
    try:
        if any(file_crc32(directory / name) != crc for name, crc in meta["crc32"].items()):
            return None  # damaged since it was written (TorchScript does not check its archive)
        tower = _load(directory, meta)
        if np.abs(tower.encode_text(CHECKS) - np.asarray(meta["check"], np.float32)).max() > TOLERANCE:
            return None
        return tower
    except Exception:  # noqa: BLE001 - a damaged or foreign file: the full encoder answers instead
        return None


def _torch_version() -> str:
    """The installed torch's version, without importing torch (an ONNX tower needs none)."""
    from importlib.metadata import version

    return version("torch")


def _load(directory: Path, meta: dict[str, Any]) -> FrozenTextTower:
    onnx = meta.get("runtime") == "onnx"
    run = _onnx_runner(directory / ONNX, meta["inputs"]) if onnx else _torchscript_runner(directory / MODULE)
    if meta["family"] == "clip":
        tokenizer = _clip_tokenizer_class(meta["tokenizer_module"])(context_length=int(meta["context_length"]))

        def tokenize(texts: list[str]) -> tuple[Any, ...]:
            return (tokenizer(texts),)

    else:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(directory / TOKENIZER))
        tok.enable_truncation(max_length=int(meta["max_length"]))
        tok.enable_padding(pad_id=int(meta["pad_id"]), pad_token=meta["pad_token"])
        names, lower = meta["inputs"], bool(meta.get("lower"))

        def tokenize(texts: list[str]) -> tuple[Any, ...]:
            texts = [t.strip().lower() if lower else t.strip() for t in texts]  # as sentence-transformers does
            encoded = tok.encode_batch(texts)
            columns = {"input_ids": [e.ids for e in encoded], "attention_mask": [e.attention_mask for e in encoded],
                       "token_type_ids": [e.type_ids for e in encoded]}
            arrays = tuple(np.asarray(columns[name], np.int64) for name in names)
            if onnx:
                return arrays
            import torch

            return tuple(torch.from_numpy(a) for a in arrays)

    return FrozenTextTower(run, tokenize, meta)


def _torchscript_runner(path: Path) -> Callable[[tuple[Any, ...]], np.ndarray]:
    import torch

    with _quiet():
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def run(inputs: tuple[Any, ...]) -> np.ndarray:
        small = len(inputs[0]) < 64  # one torch thread for small CPU batches (as the encoders do)
        threads = torch.get_num_threads()
        if small:
            torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return module(*inputs).float().numpy()
        finally:
            if small:
                torch.set_num_threads(threads)

    return run


def _onnx_runner(path: Path, names: list[str]) -> Callable[[tuple[Any, ...]], np.ndarray]:
    """An ONNX Runtime session on one thread (a query is a few tokens; concurrent queries are the parallelism)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(inputs: tuple[Any, ...]) -> np.ndarray:
        return session.run(None, dict(zip(names, inputs)))[0]

    return run


def _faithful(encoder: Any, frozen: FrozenTextTower) -> bool:
    """Same tokens (where comparable) and the same vectors on :data:`PROBES`, one by one and together."""
    if frozen.meta["family"] == "clip":
        import torch

        if not torch.equal(encoder.tokenizer(PROBES), frozen.tokenize(PROBES)[0]):
            return False
    want = encoder.encode_text(PROBES)
    got = np.concatenate([frozen.encode_text([p]) for p in PROBES])
    together = frozen.encode_text(PROBES)
    return bool(np.abs(got - want).max() <= TOLERANCE and np.abs(together - want).max() <= TOLERANCE)


# ------------------------------------------------------------------------------------------ CLIP
def _clip_tokenizer_class(path: str) -> Any:
    """open_clip's ``SimpleTokenizer`` from its own module file, loaded alone (it imports no other part
    of open_clip), so the package's heavy ``__init__`` never runs."""
    spec = importlib.util.spec_from_file_location("mmsearch_open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.SimpleTokenizer


def _clip_parts(encoder: Any) -> tuple[Any, dict[str, Any]] | None:
    import torch

    tokenizer = encoder.tokenizer
    if type(tokenizer).__name__ != "SimpleTokenizer":
        return None  # an HF or SigLIP tokenizer: not frozen here
    module_file = importlib.util.find_spec(type(tokenizer).__module__).origin
    alone = _clip_tokenizer_class(module_file)(context_length=tokenizer.context_length)
    if not torch.equal(alone(PROBES), tokenizer(PROBES)):
        return None  # options this copy does not take (another cleaning, a reduction mask)
    model = encoder.model

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: Any) -> Any:
            return self.model.encode_text(tokens)

    visual = model.visual
    model.visual = torch.nn.Identity()  # the traced module keeps the text tower's weights only
    try:
        with torch.inference_mode(False), torch.no_grad(), _quiet():
            traced = torch.jit.trace(TextTower().eval(), (tokenizer(PROBES[:2]),), check_trace=False)
    finally:
        model.visual = visual
    return (lambda tmp: torch.jit.save(traced, str(tmp / MODULE))), {
        "runtime": "torchscript", "tokenizer_module": module_file, "context_length": int(tokenizer.context_length)}


# -------------------------------------------------------------------------------- sentence models
def _sentence_parts(encoder: Any) -> tuple[Any, dict[str, Any]] | None:
    import torch

    st = encoder.model
    hf = st.tokenizer
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        return None  # a slow (Python) tokenizer: no JSON to save
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in hf.model_input_names]

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        def forward(self, *inputs: Any) -> Any:
            return self.st(dict(zip(names, inputs)))["sentence_embedding"]

    example = hf(PROBES[:2], padding=True, truncation=True, max_length=int(st.max_seq_length), return_tensors="pt")
    inputs = tuple(example[n] for n in names)

    def write(tmp: Path) -> None:  # ONNX Runtime runs a small BERT twice as fast as TorchScript here
        axes = {**{n: {0: "batch", 1: "tokens"} for n in names}, "vectors": {0: "batch"}}
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(TextTower().eval(), inputs, str(tmp / ONNX), input_names=names, output_names=["vectors"],
                              dynamic_axes=axes, opset_version=17, dynamo=False)

    return write, {
        "runtime": "onnx",
        "tokenizer_json": backend.to_str(),
        "max_length": int(st.max_seq_length),
        "pad_id": int(hf.pad_token_id or 0),
        "pad_token": str(hf.pad_token or "[PAD]"),
        "inputs": names,
        "lower": bool(getattr(st[0], "do_lower_case", False)),
    }
