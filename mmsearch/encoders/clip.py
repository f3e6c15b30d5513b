"""CLIP through open_clip: frames, images and text in one space.

Any model name and pretrained tag open_clip knows works, as does a local
checkpoint file. The tiny ``synth-clip`` shipped with mmsearch is an ordinary
open_clip model config plus checkpoint, registered with
``open_clip.add_model_config`` and loaded by the very same
``create_model_and_transforms`` call as ``ViT-B-32``.
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Any

import numpy as np

from ..errors import EncoderError, UnknownModelError, UsageError
from .base import (
    PACKAGED_PREFIX,
    EncoderSpec,
    encode_in_batches,
    file_sha256,
    hub_host,
    hub_offline,
    l2_normalize,
    require_reachable,
    resolve_device,
    resolve_weights,
)
from .image_tower import check_image_runtime

DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "laion2b_s34b_b79k"

_registered_configs = False


def check_known_model(model: str) -> None:
    """Raise :class:`UnknownModelError` (exit 2) when open_clip knows no model named ``model`` (after
    mmsearch's packaged configs are registered)."""
    import open_clip

    register_packaged_configs()
    if model not in open_clip.list_models():
        raise UnknownModelError(
            f"open_clip does not know a model named {model!r}. "
            "List the names with `python -c \"import open_clip; print(open_clip.list_models())\"`."
        )


def register_packaged_configs() -> None:
    """Make open_clip know the model configs shipped in ``mmsearch/assets`` (idempotent)."""
    global _registered_configs
    if _registered_configs:
        return
    import open_clip

    assets = resources.files("mmsearch") / "assets"
    for entry in assets.iterdir():
        if entry.name.endswith(".json") and entry.name.startswith("synth-"):
            with resources.as_file(entry) as path:
                open_clip.add_model_config(path)
    _registered_configs = True


def preprocess_frames(
    frames: np.ndarray,
    *,
    size: int,
    resize_mode: str = "shortest",
    interpolation: str = "bicubic",
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: Any = None,
) -> "Any":
    """uint8 (N, H, W, 3) frames of one size to a normalised (N, 3, size, size) tensor, as open_clip's transform does.

    The same function serves indexing, querying and training, so all three see identical pixels.
    With ``device`` (a CUDA device, say) the uint8 frames are uploaded first and every step runs
    there: a quarter of the bytes over the bus that float32 would need, and no CPU resize.
    """
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    x = torch.from_numpy(np.ascontiguousarray(frames))
    if device is not None and torch.device(device).type != "cpu":
        x = x.pin_memory().to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    interp = InterpolationMode.BICUBIC if interpolation == "bicubic" else InterpolationMode.BILINEAR
    if resize_mode == "squash":
        x = TF.resize(x, [size, size], interpolation=interp, antialias=True)
    elif resize_mode == "longest":
        h, w = x.shape[-2:]
        scale = size / max(h, w)
        x = TF.resize(x, [max(1, round(h * scale)), max(1, round(w * scale))], interpolation=interp, antialias=True)
        x = TF.center_crop(x, [size, size])  # pads with zeros where smaller
    else:
        if min(x.shape[-2:]) != size:
            x = TF.resize(x, size, interpolation=interp, antialias=True)
        x = TF.center_crop(x, [size, size])
    x = x.clamp_(0.0, 1.0)
    return TF.normalize(x, list(mean), list(std))


def _offline_message(model: str, pretrained: str, reason: str) -> str:
    return (
        f"Could not load the weights of CLIP model {model!r} with pretrained tag {pretrained!r}: "
        f"they are not in the local cache and could not be downloaded ({reason}). "
        "Connect to the internet once so open_clip can fetch and cache them, or point "
        f"--pretrained at a local checkpoint file for {model} (for example "
        f"`mmsearch index DIR --model {model} --pretrained /path/to/open_clip_pytorch_model.bin`), "
        "or use the offline demo model with `--model synth-clip`."
    )


def _check_weights_reachable(model: str, tag: str) -> None:
    """Fail at once, with the offline message, when a tag's weights are neither cached nor downloadable."""
    from urllib.parse import urlparse

    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag) or {}
    hub = (cfg.get("hf_hub") or "").strip("/")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id = "/".join(hub.split("/")[:2])
        prefix = "/".join(hub.split("/")[2:])
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            filename = f"{prefix}/{name}" if prefix else name
            if isinstance(try_to_load_from_cache(repo_id, filename), str):
                return
        if hub_offline():
            raise EncoderError(_offline_message(model, tag, "HF_HUB_OFFLINE is set"))
        host = hub_host()
    elif cfg.get("url"):
        host = urlparse(cfg["url"]).hostname or ""
        cached = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
        if os.path.isfile(cached):
            return
    else:
        return  # let open_clip explain
    require_reachable(host, lambda reason: _offline_message(model, tag, reason))


class ClipEncoder:
    """open_clip model wrapper: batched, L2-normalised float32 output, fp16 on CUDA."""

    def __init__(
        self, spec: EncoderSpec, *, device: Any = "auto", batch_size: int | None = None, image_runtime: str = "torch"
    ) -> None:
        """``image_runtime``: ``"torch"``, or ``"onnx-int8"`` to encode images on the CPU with an int8
        ONNX Runtime tower (:mod:`.image_tower`; built once into the cache, then loaded; ignored on
        CUDA, which keeps fp16). ``self.image_runtime`` says which one is in use."""
        import open_clip
        import torch

        check_image_runtime(image_runtime)
        register_packaged_configs()
        self.spec = spec
        self.device = resolve_device(device)
        self.batch_size = batch_size or (256 if self.device.type == "cuda" else 32)
        check_known_model(spec.model)
        pretrained = resolve_weights(spec.pretrained)
        self._weights_id: str | None = pretrained
        if spec.pretrained and spec.pretrained.startswith(PACKAGED_PREFIX):
            self._weights_id = spec.pretrained + "@sha256:" + file_sha256(pretrained)
        elif pretrained and _looks_like_path(pretrained):
            if not os.path.isfile(pretrained):
                raise UsageError(f"--pretrained {pretrained}: no such checkpoint file")
            self._weights_id = "sha256:" + file_sha256(pretrained)
        precision = "fp16" if self.device.type == "cuda" else "fp32"
        if pretrained and not _looks_like_path(pretrained):
            _check_weights_reachable(spec.model, pretrained)
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                spec.model, pretrained=pretrained, device=self.device, precision=precision, **spec.options
            )
        except Exception as exc:  # download, cache or checkpoint failure: one clear paragraph
            if pretrained and not _looks_like_path(pretrained):
                raise EncoderError(_offline_message(spec.model, pretrained, _short(exc))) from None
            raise EncoderError(f"could not load CLIP {spec.model!r} from {pretrained}: {_short(exc)}") from None
        model.eval()
        self.model = model
        self.tokenizer = open_clip.get_tokenizer(spec.model)
        cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        size = cfg.get("size", model.visual.image_size)
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD))
        self.resize_mode = str(cfg.get("resize_mode", "shortest"))
        self.interpolation = str(cfg.get("interpolation", "bicubic"))
        with torch.inference_mode():
            probe = self.tokenizer(["a"]).to(self.device)
            self.dim = int(model.encode_text(probe).shape[-1])
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self.image_runtime, self._image_tower = "torch", None
        if image_runtime == "onnx-int8" and self.device.type == "cpu":
            from .image_tower import image_tower_for

            key = {**self.identity(), "options": spec.options}  # options that change the model change the tower
            self._image_tower = image_tower_for(model, key, input_size=self.input_size, mean=self.mean, std=self.std)
            self.image_runtime = "onnx-int8"

    def identity(self) -> dict[str, Any]:
        import open_clip

        return {
            "family": "clip",
            "model": self.spec.model,
            "pretrained": self._weights_id,
            "dim": self.dim,
            "preprocess": {
                "size": self.input_size,
                "resize_mode": self.resize_mode,
                "interpolation": self.interpolation,
                "mean": list(self.mean),
                "std": list(self.std),
            },
            "open_clip": open_clip.__version__,
        }

    # -- images ---------------------------------------------------------------------------
    def preprocess(self, frames: np.ndarray) -> "Any":
        """Normalised (N, 3, size, size) float32 tensor on this encoder's device."""
        return preprocess_frames(
            frames, size=self.input_size, resize_mode=self.resize_mode, interpolation=self.interpolation,
            mean=self.mean, std=self.std, device=self.device,
        )

    def encode_images(self, frames: np.ndarray | list[np.ndarray]) -> np.ndarray:
        import torch

        if isinstance(frames, np.ndarray):  # one size: preprocess and encode batch by batch
            batches = (frames[s : s + self.batch_size] for s in range(0, len(frames), self.batch_size))
            inputs = (self.preprocess(b) for b in batches)
        else:  # differently sized images: preprocess one at a time, encode together
            tensors = [self.preprocess(f[None]) for f in frames]
            inputs = (torch.cat(tensors[s : s + self.batch_size]) for s in range(0, len(tensors), self.batch_size))
        out = []
        with torch.inference_mode():
            for batch in inputs:
                if self._image_tower is not None:  # the same pixels, through the int8 tower
                    out.append(torch.from_numpy(self._image_tower.encode(batch.numpy())))
                else:
                    out.append(self.model.encode_image(batch.to(self._dtype)).float())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(torch.cat(out).cpu().numpy())

    # -- text -----------------------------------------------------------------------------
    def encode_text(self, texts: list[str]) -> np.ndarray:
        def encode(batch: list[str]) -> np.ndarray:
            tokens = self.tokenizer(list(batch)).to(self.device)
            return self.model.encode_text(tokens).float().cpu().numpy()

        return encode_in_batches(list(texts), self.batch_size, self.dim, encode)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors")) or os.path.exists(value)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
