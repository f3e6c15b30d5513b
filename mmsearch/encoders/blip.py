"""BLIP through transformers: cross-attention re-ranking and moment captions (issue #19).

BLIP (Li et al., "BLIP: Bootstrapping Language-Image Pre-training", ICML 2022) pairs a ViT with
a BERT whose every layer cross-attends from the text tokens to the image's patch embeddings
(the co-attention idea of ViLBERT and VL-BERT). Two of its heads serve mmsearch:

* :class:`ImageTextMatcher` (``BlipForImageTextRetrieval``): the *image-grounded text encoder*
  topped by a binary head, *image-text matching* (ITM), that says whether a text describes an
  image. A dual encoder such as CLIP compares two pooled vectors and cannot tell "a red circle
  beside a blue square" from "a blue circle beside a red square"; a matcher that reads the words
  against the patches can. ``Salesforce/blip-itm-base-coco`` is the default (``--rerank-model``).
* :class:`BlipCaptioner` (``BlipForConditionalGeneration``): the *image-grounded text decoder*,
  which writes a caption token by token (the Show-Attend-Tell lineage: a decoder attending to the
  image's regions). ``Salesforce/blip-image-captioning-base`` is the default (``--captions blip``).

``spec.pretrained`` (when set) or else ``spec.model`` names the weights, as for CLAP and AST: a
Hugging Face hub id, a local directory written by the model's and ``BlipProcessor``'s
``save_pretrained``, or ``mmsearch:<name>`` / ``<name>`` for a directory shipped in
``mmsearch/assets`` (the tiny ``synth-itm`` and ``synth-blip``, trained on the synthetic world by
:mod:`mmsearch.train.synth_itm` and :mod:`mmsearch.train.synth_blip`). All load through the same
``from_pretrained`` calls, and a directory saved from the other head is refused (its weights for
this head would be random).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import EncoderError
from .base import EncoderSpec, resolve_device
from .clap import _offline_message, hub_source, load_pretrained
from .clip import preprocess_frames

__all__ = ["BLIP_CAPTIONER_ALIASES", "BlipCaptioner", "DEFAULT_BLIP_CAPTIONER", "DEFAULT_MATCHER", "ImageTextMatcher", "MATCHER_ALIASES"]

DEFAULT_MATCHER = "Salesforce/blip-itm-base-coco"
MATCHER_ALIASES = {"blip": DEFAULT_MATCHER}  # what --rerank-model takes besides hub ids, directories and synth-itm
DEFAULT_BLIP_CAPTIONER = "Salesforce/blip-image-captioning-base"
BLIP_CAPTIONER_ALIASES = {"blip": DEFAULT_BLIP_CAPTIONER}  # what --captions takes for BLIP besides hub ids, directories and synth-blip


class _Blip:
    """What every BLIP head shares: weights found and loaded (:func:`~mmsearch.encoders.clap.hub_source`,
    :func:`~mmsearch.encoders.clap.load_pretrained`), a saved head of another kind refused, and BLIP's
    preprocessing. Subclasses name the transformers class, the flag, the family and the offline demo model."""

    model_class = ""  # the transformers class of this head
    family = ""
    flag = ""  # the option that names the weights
    what = ""  # the kind of model, for messages
    offline_model = ""  # the shipped tiny model to name when the hub cannot be reached
    default = ""

    def __init__(self, spec: EncoderSpec, *, device: Any = "auto", batch_size: int | None = None) -> None:
        import torch

        self.spec = spec
        self.device = resolve_device(device)
        self.batch_size = batch_size or (64 if self.device.type == "cuda" else 16)
        where = hub_source(spec.pretrained or spec.model or self.default, flag=self.flag,
                           what=f"a {self.what}", message=self.offline_message)
        self._weights_id, self._revision, self.source = where.weights_id, where.revision, where.path
        self.processor, model = load_pretrained(
            where, "BlipProcessor", self.model_class, what=f"the {self.what}", model_type="blip",
            expected="BLIP", message=self.offline_message, check=lambda config: self._check_head(config, where.path),
        )
        self._dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = model.eval().to(self.device, self._dtype)
        ip = self.processor.image_processor
        self.input_size = int(ip.size["height"])
        self.mean, self.std = tuple(float(v) for v in ip.image_mean), tuple(float(v) for v in ip.image_std)

    @classmethod
    def offline_message(cls, model: str, reason: str) -> str:
        """What to do when hub weights are neither cached nor downloadable (one paragraph)."""
        return _offline_message(model, reason, kind="BLIP", flag=cls.flag, offline=cls.offline_model)

    def _check_head(self, config: Any, path: str) -> None:
        """Refuse, before its weights load, a BLIP saved with another head (its weights for this one would be random)."""
        saved_as = [a for a in (getattr(config, "architectures", None) or []) if a.startswith("Blip")]
        if saved_as and self.model_class not in saved_as:  # e.g. a matcher's directory given to --captions
            other = {"BlipForImageTextRetrieval": "an image-text matcher (--rerank-model)",
                     "BlipForConditionalGeneration": "a captioner (--captions)"}.get(saved_as[0], saved_as[0])
            raise EncoderError(f"{self.flag} {path}: this BLIP model was saved as {saved_as[0]}, {other}, "
                               f"not a {self.what}; its {self.model_class} weights would be random. Give {self.flag} "
                               f"a {self.what} (blip, {self.offline_model} offline, or such a directory)")

    def identity(self) -> dict[str, Any]:
        """What makes two models of this head give the same output."""
        import transformers

        return {"family": self.family, "model": self.spec.model, "pretrained": self._weights_id, "input_size": self.input_size,
                "transformers": transformers.__version__}

    def preprocess(self, frames: np.ndarray) -> Any:
        """uint8 ``(N, H, W, 3)`` frames of one size -> the model's normalised ``(N, 3, S, S)`` pixels
        (resized to the square input without cropping, as BLIP's processor does)."""
        return preprocess_frames(frames, size=self.input_size, resize_mode="squash", interpolation="bicubic",
                                 mean=self.mean, std=self.std, device=self.device)

    def _pixels(self, frames: np.ndarray | list[np.ndarray]) -> Any:
        import torch

        pixels = [self.preprocess(f[None]) for f in frames] if isinstance(frames, list) else [self.preprocess(np.asarray(frames))]
        return torch.cat(pixels) if pixels else torch.zeros((0, 3, self.input_size, self.input_size))


class ImageTextMatcher(_Blip):
    """transformers ``BlipForImageTextRetrieval``: the probability that a text describes each of some frames.

    :meth:`match` takes uint8 ``(N, H, W, 3)`` frames (or a list of differently sized ones) and one
    text and returns float32 ``(N,)`` probabilities (the softmax of the ITM head's "match" logit).
    Frames are resized to the model's square input without cropping (BLIP's processor resizes so)
    and normalised with its mean and std. Raises :class:`EncoderError` for weights that cannot be
    loaded, a model that is not BLIP or a BLIP saved as a captioner, :class:`UsageError` for a path
    that does not exist.
    """

    model_class, family, flag, what = "BlipForImageTextRetrieval", "blip-itm", "--rerank-model", "BLIP image-text matching model"
    offline_model, default = "synth-itm", DEFAULT_MATCHER

    def match(self, frames: np.ndarray | list[np.ndarray], text: str) -> np.ndarray:
        """float32 ``(N,)``: the probability that ``text`` describes each frame."""
        import torch

        images = self._pixels(frames)
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), self.batch_size):
                batch = images[s : s + self.batch_size].to(self._dtype)
                tokens = self.processor.tokenizer([text] * len(batch), return_tensors="pt", padding=True, truncation=True)
                logits = self.model(input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device),
                                    pixel_values=batch, use_itm_head=True).itm_score
                out.append(torch.softmax(logits.float(), dim=-1)[:, 1].cpu())
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)


class BlipCaptioner(_Blip):
    """transformers ``BlipForConditionalGeneration``: one caption per frame, decoded greedily.

    :meth:`caption` takes uint8 ``(N, H, W, 3)`` frames (or a list of differently sized ones) and
    returns one caption per frame, lower-case words: ``generate`` with one beam, no sampling and at
    most ``max_tokens`` new tokens (:data:`~mmsearch.encoders.coca.MAX_CAPTION_TOKENS`, as for CoCa),
    unconditional (no text prompt). Raises :class:`EncoderError` for weights that cannot be loaded,
    a model that is not BLIP or a BLIP saved as a matcher, :class:`UsageError` for a path that does
    not exist.
    """

    model_class, family, flag, what = "BlipForConditionalGeneration", "blip-caption", "--captions", "BLIP captioning model"
    offline_model, default = "synth-blip", DEFAULT_BLIP_CAPTIONER

    def __init__(self, spec: EncoderSpec, *, device: Any = "auto", batch_size: int | None = None, max_tokens: int | None = None) -> None:
        from .coca import MAX_CAPTION_TOKENS

        super().__init__(spec, device=device, batch_size=batch_size)
        self.max_tokens = int(max_tokens or MAX_CAPTION_TOKENS)

    def identity(self) -> dict[str, Any]:
        """What makes two captioners write the same captions (the index records the captioner by the name given)."""
        return {**super().identity(), "decoding": "greedy", "max_tokens": self.max_tokens}

    def caption(self, frames: np.ndarray | list[np.ndarray], *, stop_at_end: bool = True) -> list[str]:
        """One caption per frame (``stop_at_end=False`` decodes every caption to ``max_tokens``, to time the longest)."""
        import torch

        images = self._pixels(frames)
        texts: list[str] = []
        with torch.inference_mode():
            for s in range(0, len(images), self.batch_size):
                batch = images[s : s + self.batch_size].to(self._dtype)
                limits = {"max_new_tokens": self.max_tokens} | ({} if stop_at_end else {"min_new_tokens": self.max_tokens})
                ids = self.model.generate(pixel_values=batch, num_beams=1, do_sample=False, **limits)
                texts += [" ".join(t.lower().split()) for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
        return texts
