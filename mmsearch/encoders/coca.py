"""Moment captions: open_clip's CoCa, decoded greedily (issue #19).

CoCa (Yu et al., "CoCa: Contrastive Captioners are Image-Text Foundation Models", 2022) is a
CLIP whose text tower goes on into a multimodal decoder that cross-attends to the image's
tokens and predicts the caption token by token; open_clip trains and ships it
(``coca_ViT-B-32`` with ``mscoco_finetuned_laion2b_s13b_b90k``, the default here: LAION-2B
weights fine-tuned to write COCO-style captions).

A :class:`Captioner` loads any open_clip CoCa exactly as :class:`~mmsearch.encoders.clip.ClipEncoder`
loads a CLIP (a model name and pretrained tag, a local checkpoint file, or the tiny packaged
``synth-coca`` trained by :mod:`mmsearch.train.synth_coca`), so the same offline, cache and
checkpoint rules apply. open_clip's own ``CoCa.generate`` needs transformers' ``BeamSearchScorer``,
which transformers 5 no longer has; :func:`greedy_captions` is its ``top_k=1`` loop (argmax
at every step, stop at the end-of-text token) written against the model's forward pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import EncoderError
from .base import EncoderSpec
from .clip import ClipEncoder

__all__ = ["CAPTIONER_ALIASES", "Captioner", "DEFAULT_CAPTIONER", "MAX_CAPTION_TOKENS", "greedy_captions"]

DEFAULT_CAPTIONER = ("coca_ViT-B-32", "mscoco_finetuned_laion2b_s13b_b90k")
CAPTIONER_ALIASES = {"coca": DEFAULT_CAPTIONER}  # what --captions takes besides presets and open_clip CoCa names
MAX_CAPTION_TOKENS = 20  # tokens decoded per caption at most (COCO captions are about 10 words)
_SOT, _EOT = 49406, 49407  # open_clip's SimpleTokenizer: start and end of text


def greedy_captions(model: Any, images: Any, *, max_tokens: int = MAX_CAPTION_TOKENS, stop_at_end: bool = True) -> list[list[int]]:
    """Greedy decoding of an open_clip ``CoCa``: the token ids of one caption per image.

    ``images``: a preprocessed float tensor ``(N, 3, S, S)`` on the model's device. At each step
    the decoder sees the image tokens and the caption so far and the most probable next token is
    taken (open_clip's ``CoCa.generate`` with ``generation_type="top_k", top_k=1``); a caption ends
    at the end-of-text token or after ``max_tokens`` tokens (fewer when the model's context is
    shorter; ``stop_at_end=False`` always decodes ``max_tokens`` steps, to time the longest caption).
    Returns the ids between start and end of text, as Python lists.
    """
    import torch

    context = int(getattr(model.text, "context_length", max_tokens + 2))
    steps = max(1, min(int(max_tokens), context - 2))  # the text tower appends its class token
    n = int(images.shape[0])
    with torch.inference_mode():
        image_latent, image_embs = model._encode_image(images)
        out = torch.full((n, 1), _SOT, dtype=torch.long, device=images.device)
        done = torch.zeros(n, dtype=torch.bool, device=images.device)
        for _ in range(steps):
            logits = model(images, out, image_latent=image_latent, image_embs=image_embs, output_labels=False)["logits"]
            nxt = logits[:, -1].float().argmax(dim=-1)
            nxt = torch.where(done, torch.full_like(nxt, _EOT), nxt)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == _EOT
            if stop_at_end and bool(done.all()):
                break
    captions = []
    for row in out[:, 1:].tolist():
        captions.append(row[: row.index(_EOT)] if _EOT in row else row)
    return captions


class Captioner(ClipEncoder):
    """An open_clip CoCa that writes captions of frames; loaded as :class:`ClipEncoder` loads CLIP.

    :meth:`caption` takes uint8 ``(N, H, W, 3)`` frames of one size (or a list of differently sized
    ones) and returns one caption per frame, lower-case words. Raises :class:`EncoderError` for a
    model that is not a CoCa (it has no caption decoder) and as :class:`ClipEncoder` does for weights
    that cannot be loaded.
    """

    def __init__(self, spec: EncoderSpec, *, device: Any = "auto", batch_size: int | None = None,
                 max_tokens: int = MAX_CAPTION_TOKENS) -> None:
        super().__init__(spec, device=device, batch_size=batch_size or 16)
        if not hasattr(self.model, "text_decoder"):
            raise EncoderError(f"{spec.model!r} is not a CoCa model (it has no caption decoder); "
                               f"--captions takes coca, synth-coca or an open_clip coca_* model")
        self.max_tokens = int(max_tokens)

    def identity(self) -> dict[str, Any]:
        """What makes two captioners write the same captions (the index records the captioner by the name given)."""
        return {**super().identity(), "family": "coca", "decoding": "greedy", "max_tokens": self.max_tokens}

    def caption(self, frames: np.ndarray | list[np.ndarray]) -> list[str]:
        """One caption per frame: greedy decoding (:func:`greedy_captions`) of the preprocessed frames."""
        import open_clip
        import torch

        if isinstance(frames, np.ndarray):
            batches = [frames[s : s + self.batch_size] for s in range(0, len(frames), self.batch_size)]
            inputs = (self.preprocess(b) for b in batches)
        else:
            tensors = [self.preprocess(f[None]) for f in frames]
            inputs = (torch.cat(tensors[s : s + self.batch_size]) for s in range(0, len(tensors), self.batch_size))
        texts: list[str] = []
        for batch in inputs:
            for ids in greedy_captions(self.model, batch.to(self._dtype), max_tokens=self.max_tokens):
                texts.append(" ".join(open_clip.decode(torch.tensor(ids)).split()))
        return texts
