"""Cross-attention re-ranking: BLIP's image-text matching head through transformers (issue #19).

BLIP (Li et al., "BLIP: Bootstrapping Language-Image Pre-training", ICML 2022) has an
image-grounded text encoder: a BERT whose every layer cross-attends from the text tokens to
the image's patch embeddings (the co-attention idea of ViLBERT and VL-BERT), topped by a
binary head, *image-text matching* (ITM), that says whether the text describes the image. A
dual encoder such as CLIP compares two pooled vectors and cannot tell "a red circle beside a
blue square" from "a blue circle beside a red square"; a matcher that reads the words against
the patches can. ``Salesforce/blip-itm-base-coco`` is the default (``BlipForImageTextRetrieval``).

``spec.pretrained`` (when set) or else ``spec.model`` names the weights, as for CLAP and AST: a
Hugging Face hub id, a local directory written by ``BlipForImageTextRetrieval.save_pretrained``
+ ``BlipProcessor.save_pretrained``, or ``mmsearch:<name>`` / ``<name>`` for a directory shipped
in ``mmsearch/assets`` (the tiny ``synth-itm``, trained on the synthetic world by
:mod:`mmsearch.train.synth_itm`). All load through the same ``from_pretrained`` calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import EncoderSpec, resolve_device
from .clap import hub_source, load_pretrained
from .clip import preprocess_frames

__all__ = ["DEFAULT_MATCHER", "ImageTextMatcher", "MATCHER_ALIASES"]

DEFAULT_MATCHER = "Salesforce/blip-itm-base-coco"
MATCHER_ALIASES = {"blip": DEFAULT_MATCHER}  # what --rerank-model takes besides hub ids, directories and synth-itm


def _matcher_offline_message(model: str, reason: str) -> str:
    return (
        f"Could not load the weights of BLIP model {model!r}: they are not in the local Hugging Face cache "
        f"and could not be downloaded ({reason}). Connect to the internet once so transformers can fetch and "
        f"cache them, or download the model directory elsewhere (`huggingface-cli download {model} --local-dir "
        f"/path/to/dir`) and point --rerank-model at it (`mmsearch query TEXT --rerank --rerank-model /path/to/dir`), "
        f"or use the offline demo model with `--rerank-model synth-itm`."
    )


class ImageTextMatcher:
    """transformers ``BlipForImageTextRetrieval``: the probability that a text describes each of some frames.

    :meth:`match` takes uint8 ``(N, H, W, 3)`` frames (or a list of differently sized ones) and one
    text and returns float32 ``(N,)`` probabilities (the softmax of the ITM head's "match" logit).
    Frames are resized to the model's square input without cropping (BLIP's processor resizes so)
    and normalised with its mean and std. Raises :class:`EncoderError` for weights that cannot be
    loaded or a model that is not BLIP, :class:`UsageError` for a path that does not exist.
    """

    def __init__(self, spec: EncoderSpec, *, device: Any = "auto", batch_size: int | None = None) -> None:
        import torch

        self.spec = spec
        self.device = resolve_device(device)
        self.batch_size = batch_size or (64 if self.device.type == "cuda" else 16)
        where = hub_source(spec.pretrained or spec.model or DEFAULT_MATCHER, flag="--rerank-model",
                           what="a BLIP image-text matching model", message=_matcher_offline_message)
        self._weights_id, self._revision, self.source = where.weights_id, where.revision, where.path
        self.processor, model = load_pretrained(
            where, "BlipProcessor", "BlipForImageTextRetrieval", what="the BLIP matching model", model_type="blip",
            expected="BLIP", message=_matcher_offline_message,
        )
        self._dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = model.eval().to(self.device, self._dtype)
        ip = self.processor.image_processor
        self.input_size = int(ip.size["height"])
        self.mean, self.std = tuple(float(v) for v in ip.image_mean), tuple(float(v) for v in ip.image_std)

    def identity(self) -> dict[str, Any]:
        """What makes two matchers give the same probabilities."""
        import transformers

        return {"family": "blip-itm", "model": self.spec.model, "pretrained": self._weights_id, "input_size": self.input_size,
                "transformers": transformers.__version__}

    def preprocess(self, frames: np.ndarray) -> Any:
        """uint8 ``(N, H, W, 3)`` frames of one size -> the model's normalised ``(N, 3, S, S)`` pixels."""
        return preprocess_frames(frames, size=self.input_size, resize_mode="squash", interpolation="bicubic",
                                 mean=self.mean, std=self.std, device=self.device)

    def match(self, frames: np.ndarray | list[np.ndarray], text: str) -> np.ndarray:
        """float32 ``(N,)``: the probability that ``text`` describes each frame."""
        import torch

        pixels = [self.preprocess(f[None]) for f in frames] if isinstance(frames, list) else [self.preprocess(np.asarray(frames))]
        images = torch.cat(pixels) if pixels else torch.zeros((0, 3, self.input_size, self.input_size))
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), self.batch_size):
                batch = images[s : s + self.batch_size].to(self._dtype)
                tokens = self.processor.tokenizer([text] * len(batch), return_tensors="pt", padding=True, truncation=True)
                logits = self.model(input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device),
                                    pixel_values=batch, use_itm_head=True).itm_score
                out.append(torch.softmax(logits.float(), dim=-1)[:, 1].cpu())
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)
