"""Sound tags: the Audio Spectrogram Transformer through transformers (issue #19).

AST (Gong, Chung and Glass, "AST: Audio Spectrogram Transformer", Interspeech 2021) is a ViT
over 16x16 patches of a log-mel filterbank; its AudioSet checkpoint
(``MIT/ast-finetuned-audioset-10-10-0.4593``, the default) scores the 527 AudioSet labels of a
clip of up to 10.24 s. AudioSet is multi-label, so a label's probability is the sigmoid of its
logit, as the model was trained (binary cross-entropy per label).

``spec.pretrained`` (when set) or else ``spec.model`` names the weights, as for CLAP: a Hugging
Face hub id, a local directory written by ``ASTForAudioClassification.save_pretrained`` +
``ASTFeatureExtractor.save_pretrained``, or ``mmsearch:<name>`` / ``<name>`` for a directory
shipped in ``mmsearch/assets`` (the tiny ``synth-ast``, trained on the synthetic world's six
sound classes by :mod:`mmsearch.train.synth_ast`). All load through the same
``ASTForAudioClassification.from_pretrained`` / ``ASTFeatureExtractor.from_pretrained`` calls.

A label is a tag of a window when its probability is at least ``threshold`` (the spec's
``threshold`` option, else :data:`DEFAULT_TAG_THRESHOLD`); at most :data:`MAX_TAGS` per window.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import EncoderError
from .base import EncoderSpec, resolve_device
from .clap import _offline_message, hub_source, load_pretrained, prepared_clips

DEFAULT_TAGGER = "MIT/ast-finetuned-audioset-10-10-0.4593"
TAGGER_ALIASES = {"audioset": DEFAULT_TAGGER}  # what --sound-tags takes besides hub ids, directories and synth-ast
DEFAULT_TAG_THRESHOLD = 0.3  # AudioSet probabilities: a label at 0.3 or more is a tag (not measured on the real weights here)
MAX_TAGS = 5  # tags kept per window, the most probable first


def _tagger_offline_message(model: str, reason: str) -> str:
    return _offline_message(model, reason, kind="AST", flag="--sound-tags", offline="synth-ast")


class SoundTagger:
    """transformers ``ASTForAudioClassification``: per-label probabilities of sound clips, and their tags.

    Audio goes in as mono float32 clips at :attr:`sample_rate` (16000 Hz for AST; pass
    ``sample_rate=`` for others, they are resampled). Clips longer than the feature extractor's
    ``max_length`` frames (10 ms each) are truncated to their start, shorter ones zero-padded, as
    AST was trained. Raises :class:`EncoderError` for weights that cannot be loaded or a model that
    is not an audio classifier, :class:`UsageError` for a path that does not exist.
    """

    def __init__(self, spec: EncoderSpec, *, device: Any = "auto", batch_size: int | None = None) -> None:
        import torch

        self.spec = spec
        self.device = resolve_device(device)
        self.batch_size = batch_size or (64 if self.device.type == "cuda" else 16)
        where = hub_source(spec.pretrained or spec.model or DEFAULT_TAGGER, flag="--sound-tags",
                           what="an AST model", message=_tagger_offline_message)
        self._weights_id, self._revision, self.source = where.weights_id, where.revision, where.path
        self.feature_extractor, model = load_pretrained(
            where, "ASTFeatureExtractor", "ASTForAudioClassification", what="the AST model",
            model_type="audio-spectrogram-transformer", expected="an Audio Spectrogram Transformer", message=_tagger_offline_message,
        )
        self._dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = model.eval().to(self.device, self._dtype)
        self.labels: list[str] = [str(model.config.id2label[i]) for i in range(int(model.config.num_labels))]
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.threshold = float(spec.options.get("threshold", DEFAULT_TAG_THRESHOLD))
        if not 0.0 < self.threshold < 1.0:
            raise EncoderError(f"a tag threshold is a probability between 0 and 1, got {self.threshold}")

    def identity(self) -> dict[str, Any]:
        """What makes two taggers give the same tags (recorded in the index)."""
        import transformers

        fe = self.feature_extractor
        ident: dict[str, Any] = {
            "family": "ast", "model": self.spec.model, "pretrained": self._weights_id, "labels": len(self.labels),
            "threshold": self.threshold, "sample_rate": self.sample_rate,
            "preprocess": {"num_mel_bins": int(fe.num_mel_bins), "max_length": int(fe.max_length),
                           "mean": float(fe.mean), "std": float(fe.std)},
            "transformers": transformers.__version__,
        }
        if self._revision:
            ident["revision"] = self._revision
        return ident

    def predict(self, clips: list[np.ndarray] | np.ndarray, *, sample_rate: int | None = None) -> np.ndarray:
        """Probabilities ``(N, len(labels))`` float32 in [0, 1] of mono clips (1-D float32 arrays)."""
        import torch

        clips = prepared_clips(clips, sample_rate, self.sample_rate)
        if not clips:
            return np.zeros((0, len(self.labels)), np.float32)
        out = []
        with torch.inference_mode():
            for start in range(0, len(clips), self.batch_size):
                batch = clips[start : start + self.batch_size]
                feats = self.feature_extractor(batch, sampling_rate=self.sample_rate, return_tensors="pt")["input_values"]
                logits = self.model(input_values=feats.to(self.device, self._dtype)).logits
                out.append(torch.sigmoid(logits.float()).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def tag(self, clips: list[np.ndarray] | np.ndarray, *, sample_rate: int | None = None) -> list[list[tuple[str, float]]]:
        """Each clip's tags: ``(label, probability)`` pairs at or above :attr:`threshold`, most probable
        first, at most :data:`MAX_TAGS`."""
        return tags_of(self.predict(clips, sample_rate=sample_rate), self.labels, self.threshold)


def tags_of(probs: np.ndarray, labels: list[str], threshold: float) -> list[list[tuple[str, float]]]:
    """Rows of label probabilities ``(N, L)`` to tags: pairs at or above ``threshold``, most probable first."""
    out = []
    for row in np.asarray(probs, np.float32):
        top = np.argsort(-row, kind="stable")[:MAX_TAGS]
        out.append([(labels[int(i)], round(float(row[i]), 4)) for i in top if row[i] >= threshold])
    return out
