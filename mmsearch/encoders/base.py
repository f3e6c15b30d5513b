"""What every encoder offers, and the device handling they share."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol

import numpy as np

from ..errors import EncoderError, UsageError

DeviceArg = Literal["auto", "cpu", "cuda"] | str

# LAION's general-sound CLAP (sound events, music and speech): what personal recordings hold. The
# music checkpoint is a name away (``--audio-model music``); an index keeps the model it was built with.
DEFAULT_CLAP_MODEL = "laion/larger_clap_general"
CLAP_ALIASES = {"general": "laion/larger_clap_general", "music": "laion/larger_clap_music"}


def resolve_device(device: "DeviceArg | Any" = "auto") -> "Any":
    """Normalise ``auto|cpu|cuda[:N]`` (or a torch.device) once; auto means cuda when available."""
    import torch

    if isinstance(device, torch.device):
        return device
    name = str(device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu" or name.startswith("cuda"):
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
        return torch.device(name)
    raise UsageError(f"unknown device {device!r}; choose one of auto, cpu, cuda")


PACKAGED_PREFIX = "mmsearch:"  # a pretrained value naming a file shipped in mmsearch/assets


def packaged_asset(name: str) -> str:
    """Filesystem path of a file or directory shipped in ``mmsearch/assets``."""
    from importlib import resources

    path = resources.files("mmsearch") / "assets" / name
    if not path.is_file() and not path.is_dir():
        raise EncoderError(f"the packaged model file {name!r} is missing from this mmsearch install; reinstall mmsearch")
    return str(path)


def resolve_weights(pretrained: str | None) -> str | None:
    """A pretrained value as the loader needs it: packaged names become real paths, the rest pass through."""
    if pretrained and pretrained.startswith(PACKAGED_PREFIX):
        return packaged_asset(pretrained[len(PACKAGED_PREFIX) :])
    return pretrained


def file_sha256(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hub_offline() -> bool:
    """Whether the user told Hugging Face libraries to stay offline."""
    return any(
        os.environ.get(name, "0").strip().lower() in {"1", "true", "yes", "on"}
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_host() -> str:
    from urllib.parse import urlparse

    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def require_reachable(host: str, message: Callable[[str], str]) -> None:
    """Fail at once with ``message(reason)`` when ``host`` cannot be reached.

    Without this, a download library retries with back-off for about a minute
    before giving up on weights that are neither cached nor downloadable.
    """
    import socket

    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as exc:
        raise EncoderError(message(f"{host} is unreachable: {exc.strerror or exc}")) from None


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def encode_in_batches(items: Any, batch_size: int, dim: int, encode_batch: Any) -> np.ndarray:
    """Run ``encode_batch`` over slices of ``items`` without autograd; L2-normalised float32 (N, dim)."""
    import torch

    if len(items) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    with torch.inference_mode():
        out = [encode_batch(items[start : start + batch_size]) for start in range(0, len(items), batch_size)]
    return l2_normalize(np.concatenate(out))


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder to build: configs as data, so an index can record and rebuild it.

    ``family`` selects the registry entry (``clip``, ``clap``); ``model`` and
    ``pretrained`` are that family's model name and weights (a tag the family
    knows, a local file or directory, or None for random weights).
    """

    family: str
    model: str
    pretrained: str | None = None
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class Encoder(Protocol):
    """An encoder embeds a batch of inputs into L2-normalised float32 vectors of size ``dim``."""

    spec: EncoderSpec
    dim: int

    def identity(self) -> dict[str, Any]:
        """What makes two encoders produce the same vectors (recorded in the manifest)."""
        ...

    def encode_text(self, texts: list[str]) -> np.ndarray: ...


class VisualEncoder(Encoder, Protocol):
    input_size: int  # decoders downscale frames so their short side is this many pixels

    def encode_images(self, frames: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """RGB uint8 frames (N, H, W, 3), or a list of differently sized ones, to (N, dim)."""
        ...
