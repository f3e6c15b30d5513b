"""CLAP through transformers: audio clips and text in one space.

``spec.pretrained`` (when set) or else ``spec.model`` names the weights: a
Hugging Face hub id (default ``laion/larger_clap_general``; ``laion/larger_clap_music`` for music), a local directory
written by ``ClapModel.save_pretrained`` + ``ClapProcessor.save_pretrained``,
or ``mmsearch:<name>`` (or just ``<name>``) for a directory shipped in
``mmsearch/assets`` (the tiny ``synth-clap``). All three load through the very same
``ClapModel.from_pretrained`` / ``ClapProcessor.from_pretrained`` calls.

Audio goes in as 1-D float32 arrays at :attr:`ClapEncoder.sample_rate` (the
feature extractor's rate; other rates are resampled when ``sample_rate=`` is
passed). Clips shorter than the model's ``max_length_s`` are repeat-padded,
as CLAP was trained; longer ones are centre-cropped (unfused models) or go
through feature fusion with pinned random crops (fused models), so the same
clip always gives the same vector. Unfused models (``laion/larger_clap_general`` and ``_music``,
``synth-clap``) get their log-mel features from :class:`MelFrontEnd`, a batched
torch port of ``ClapFeatureExtractor`` that matches it to float32 rounding.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import EncoderError, UsageError
from .base import (
    DEFAULT_CLAP_MODEL,
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

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _offline_message(model: str, reason: str, kind: str = "CLAP", flag: str = "--audio-model", offline: str = "synth-clap") -> str:
    return (
        f"Could not load the weights of {kind} model {model!r}: they are not in the local Hugging Face cache "
        f"and could not be downloaded ({reason}). Connect to the internet once so transformers can fetch and "
        f"cache them, or download the model directory elsewhere (config.json, model.safetensors and the "
        f"processor files, e.g. `hf download {model} --local-dir /path/to/dir`) and point "
        f"{flag} at it (`{flag} /path/to/dir`), or use the offline demo model "
        f"with `{flag} {offline}`."
    )


def _cached_config(repo_id: str) -> str | None:
    """Path of the cached config.json of a hub repo, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # a malformed repo id: let from_pretrained explain
        return None
    return found if isinstance(found, str) else None


def _check_weights_reachable(repo_id: str, message: Callable[[str, str], str] = _offline_message) -> None:
    """Fail at once, with the offline ``message(repo_id, reason)``, when a hub model is neither cached nor downloadable."""
    if _cached_config(repo_id):
        return
    if hub_offline():
        raise EncoderError(message(repo_id, "HF_HUB_OFFLINE is set"))
    require_reachable(hub_host(), lambda reason: message(repo_id, reason))


@dataclass(frozen=True)
class HubSource:
    """Where a transformers model directory comes from: ``path`` to pass to ``from_pretrained``,
    ``weights_id`` to record in an index (a packaged name or a local directory with the sha256 of its
    weights, or the hub id), ``local`` (no download involved) and ``revision`` (the cached hub commit)."""

    path: str
    weights_id: str
    local: bool
    revision: str | None = None


def hub_source(raw: str, *, flag: str, what: str, message: Callable[[str, str], str] = _offline_message) -> HubSource:
    """Resolve a model a user named (a hub id, a local directory written by ``save_pretrained``,
    ``mmsearch:<name>`` or a bare ``<name>`` shipped in ``mmsearch/assets``), as CLAP and AST load them.

    Raises :class:`UsageError` for a path that does not exist (``flag`` and ``what``, with its article,
    name the option and the directory expected) and :class:`EncoderError` (``message``) for a hub model that is
    neither cached nor downloadable.
    """
    if "/" not in raw and not raw.startswith(PACKAGED_PREFIX) and _is_packaged_dir(raw):
        raw = PACKAGED_PREFIX + raw  # a bare packaged name (``synth-clap``) means the shipped directory
    source = resolve_weights(raw)
    assert source is not None
    if raw.startswith(PACKAGED_PREFIX):
        return HubSource(source, raw + "@sha256:" + directory_sha256(source), True)
    if os.path.isdir(source):
        return HubSource(source, "sha256:" + directory_sha256(source), True)
    if _looks_like_path(source):
        found = "a file, not a model directory" if os.path.exists(source) else "no such directory"
        raise UsageError(
            f"{flag} {source}: {found} ({what} directory holds config.json, "
            "model.safetensors and the processor files written by save_pretrained)"
        )
    _check_weights_reachable(source, message)
    cached = _cached_config(source)  # .../snapshots/<commit>/config.json
    return HubSource(source, source, False, os.path.basename(os.path.dirname(cached)) if cached else None)


def directory_sha256(path: str) -> str:
    """sha256 of a model directory's weights (one file: its digest; several: digest of their names+digests)."""
    files = sorted(
        name for name in os.listdir(path) if name.endswith(WEIGHT_SUFFIXES) and os.path.isfile(os.path.join(path, name))
    )
    if not files:
        raise EncoderError(f"{path}: no weights file (model.safetensors or pytorch_model.bin) in this directory; give the "
                           "directory a model's save_pretrained wrote (config.json, weights and processor files)")
    if len(files) == 1:
        return file_sha256(os.path.join(path, files[0]))
    digest = hashlib.sha256()
    for name in files:
        digest.update(f"{name}\0{file_sha256(os.path.join(path, name))}\n".encode())
    return digest.hexdigest()


def load_pretrained(
    where: HubSource, processor_class: str, model_class: str, *, what: str, model_type: str, expected: str,
    message: Callable[[str, str], str] = _offline_message, check: Callable[[Any], None] | None = None,
) -> tuple[Any, Any]:
    """``(processor, model)``: transformers' ``processor_class`` and ``model_class`` (names in
    ``transformers``) loaded with ``from_pretrained`` from ``where`` (:func:`hub_source`), as CLAP,
    AST and BLIP load. The config is read first: "... not {expected}" for a model whose ``model_type``
    is not ``model_type``, and ``check(config)`` may refuse it too (raising :class:`EncoderError`),
    before any weights load. Raises :class:`EncoderError`: ``message`` for a hub model that could not
    be fetched, "could not load {what} in ..." for a local one."""
    import transformers

    whole = "give the directory a model's save_pretrained wrote (config.json, weights and processor files)"

    def fetch(load: Callable[[], Any], part: str = "") -> Any:
        try:
            with _quiet_loading():
                return load()
        except Exception as exc:  # download, cache or file failure: one clear paragraph
            if not where.local:
                raise EncoderError(message(where.path, _short(exc))) from None
            raise EncoderError(f"could not load {what}{part} in {where.path}: {_short(exc)}; its files may be damaged or "
                               "incomplete: save or copy the model directory again, or give another") from None

    if where.local and not os.path.isfile(os.path.join(where.path, "config.json")):
        raise EncoderError(f"could not load {what} in {where.path}: no config.json there; {whole}")
    config = fetch(lambda: transformers.AutoConfig.from_pretrained(where.path))
    if getattr(config, "model_type", None) != model_type:
        raise EncoderError(f"{where.path} is a {getattr(config, 'model_type', None)!r} model, not {expected}; {whole}")
    if check is not None:
        check(config)
    processor = fetch(lambda: getattr(transformers, processor_class).from_pretrained(where.path),
                      f"'s processor (the tokenizer and preprocessor files {processor_class}.save_pretrained writes; missing?)")
    model = fetch(lambda: getattr(transformers, model_class).from_pretrained(where.path, config=config))
    return processor, model


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No progress bars while weights load (the CLI draws its own)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _fixed_numpy_seed(seed: int = 0) -> Iterator[None]:
    """The feature extractor draws crops from numpy's global RNG: pin it, then restore the caller's state."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


class MelFrontEnd:
    """``ClapFeatureExtractor`` for unfused models (one crop), batched in torch, on any device.

    Computes what the numpy extractor computes with ``truncation="rand_trunc"``:
    the clip padded to ``max_length_s`` as ``padding`` says (``repeatpad``:
    repeated whole, then zero-padded), a centred Hann-window power STFT, the
    extractor's own (Slaney) mel filters, then dB. The numbers agree to float32
    rounding (about 1e-4 dB; a few hundredths of a dB near the -100 dB floor) at
    a fraction of the cost. Clips longer than ``max_length_s`` are
    centre-cropped instead of randomly cropped, so a clip always gives the same
    features. Training (:mod:`mmsearch.train.synth_clap`) uses it too.
    """

    def __init__(self, feature_extractor: Any) -> None:
        import torch

        fe = feature_extractor
        if getattr(fe, "padding", "repeatpad") not in ("repeatpad", "repeat", "pad"):
            raise EncoderError(f"unknown CLAP padding mode {fe.padding!r}")
        self.padding = str(fe.padding)
        self.n_fft = int(fe.fft_window_size)
        self.hop = int(fe.hop_length)
        self.max_samples = int(fe.nb_max_samples)
        self.filters = torch.tensor(np.asarray(fe.mel_filters_slaney), dtype=torch.float32)  # (freq, mels)
        self.window = torch.hann_window(self.n_fft, periodic=True)

    def pad(self, clip: np.ndarray) -> np.ndarray:
        x = np.asarray(clip, dtype=np.float32).reshape(-1)
        n = self.max_samples
        if x.size > n:
            start = (x.size - n) // 2
            return x[start : start + n]
        if x.size < n:
            if self.padding == "repeat":
                return np.tile(x, n // x.size + 1)[:n]
            if self.padding == "repeatpad":
                x = np.tile(x, n // x.size)
            x = np.pad(x, (0, n - x.size))
        return x

    def __call__(self, clips: list[np.ndarray], device: Any = None) -> Any:
        """(B, 1, frames, mels) float32 log-mel features of mono clips."""
        import torch

        x = torch.from_numpy(np.stack([self.pad(c) for c in clips]))
        window, filters = self.window, self.filters
        if device is not None:
            x, window, filters = x.to(device), window.to(device), filters.to(device)
        spec = torch.stft(
            x, self.n_fft, self.hop, window=window, center=True, pad_mode="reflect", return_complex=True
        ).abs().pow(2)
        mel = torch.matmul(spec.transpose(1, 2), filters).clamp_min(1e-10)
        return (10.0 * torch.log10(mel))[:, None]


class ClapEncoder:
    """transformers ``ClapModel`` wrapper: batched, L2-normalised float32 output, fp16 on CUDA."""

    def __init__(self, spec: EncoderSpec, *, device: Any = "auto", batch_size: int | None = None) -> None:
        import torch

        self.spec = spec
        self.device = resolve_device(device)
        self.batch_size = batch_size or (64 if self.device.type == "cuda" else 8)
        where = hub_source(spec.pretrained or spec.model or DEFAULT_CLAP_MODEL, flag="--audio-model", what="a CLAP model")
        self._weights_id, self._revision, self.source = where.weights_id, where.revision, where.path
        processor, model = load_pretrained(where, "ClapProcessor", "ClapModel", what="the CLAP model", model_type="clap",
                                           expected="a CLAP model")
        self._dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        model.eval().to(self.device, self._dtype)
        self.model = model
        self.processor = processor
        self.feature_extractor = processor.feature_extractor
        self.tokenizer = processor.tokenizer
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.fusion = bool(getattr(model.config.audio_config, "enable_fusion", False))
        # An unfused model takes one mel crop, a fused one four: the feature extractor must agree.
        self.truncation = "fusion" if self.fusion else "rand_trunc"
        self.max_samples = int(round(float(self.feature_extractor.max_length_s) * self.sample_rate))
        # Unfused models: batched torch features (same numbers, much faster); fused ones: the extractor itself.
        self.front_end = None if self.fusion else MelFrontEnd(self.feature_extractor)
        self.text_max_length = int(min(getattr(self.tokenizer, "model_max_length", 512) or 512, _text_positions(model)))
        with torch.inference_mode():
            self.dim = int(self._text_features(["a"]).shape[-1])

    # -- identity ---------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        import transformers

        fe = self.feature_extractor
        ident: dict[str, Any] = {
            "family": "clap",
            "model": self.spec.model,
            "pretrained": self._weights_id,
            "dim": self.dim,
            "sample_rate": self.sample_rate,
            "preprocess": {
                "feature_size": int(fe.feature_size),
                "sampling_rate": int(fe.sampling_rate),
                "hop_length": int(fe.hop_length),
                "fft_window_size": int(fe.fft_window_size),
                "max_length_s": float(fe.max_length_s),
                "frequency_min": float(fe.frequency_min),
                "frequency_max": float(fe.frequency_max),
                "top_db": fe.top_db,
                "truncation": self.truncation,
                "padding": str(fe.padding),
            },
            "transformers": transformers.__version__,
        }
        if self._revision:
            ident["revision"] = self._revision
        return ident

    # -- audio ------------------------------------------------------------------------------
    def _prepare(self, clip: np.ndarray) -> tuple[np.ndarray, bool]:
        """Fused models: mel features (4, frames, mels) of one clip, and whether it is longer than max_length_s."""
        x = clip
        longer = x.size > self.max_samples
        with _fixed_numpy_seed():  # the fusion crops are random: the same clip must give the same crops
            feats = self.feature_extractor(
                [x], sampling_rate=self.sample_rate, truncation=self.truncation, return_tensors="np"
            )
        # For short clips the fusion extractor marks a random clip "longer" (a training trick): use the truth.
        return np.asarray(feats["input_features"][0], dtype=np.float32), longer

    def encode_audio(self, clips: list[np.ndarray] | np.ndarray, *, sample_rate: int | None = None) -> np.ndarray:
        """Mono float32 clips (a list of 1-D arrays, or a 2-D array) to (N, dim) unit vectors.

        ``sample_rate`` is the clips' rate when it is not :attr:`sample_rate`; they are resampled.
        """
        import torch

        clips = prepared_clips(clips, sample_rate, self.sample_rate)
        if not clips:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        with torch.inference_mode():
            for start in range(0, len(clips), self.batch_size):
                batch = clips[start : start + self.batch_size]
                kwargs: dict[str, Any] = {}
                if self.front_end is not None:
                    kwargs["input_features"] = self.front_end(batch, self.device).to(self._dtype)
                else:
                    prepared = [self._prepare(c) for c in batch]
                    feats = torch.from_numpy(np.stack([p[0] for p in prepared]))
                    kwargs["input_features"] = feats.to(self.device, self._dtype)
                    kwargs["is_longer"] = torch.tensor([[p[1]] for p in prepared], device=self.device)
                out.append(_features(self.model.get_audio_features(**kwargs)).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))

    # -- text -------------------------------------------------------------------------------
    def _text_features(self, texts: list[str]) -> Any:
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.text_max_length, return_tensors="pt"
        )
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return _features(self.model.get_text_features(**tokens)).float()

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return encode_in_batches(list(texts), self.batch_size, self.dim, lambda batch: self._text_features(batch).cpu().numpy())


def _clean(clip: np.ndarray) -> np.ndarray:
    x = np.asarray(clip, dtype=np.float32).reshape(-1)
    if x.size == 0:
        raise UsageError("cannot embed an empty audio clip")
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return x


def prepared_clips(clips: list[np.ndarray] | np.ndarray, sample_rate: int | None, model_rate: int) -> list[np.ndarray]:
    """Mono clips as a model takes them: 1-D float32, non-finite samples replaced, resampled from
    ``sample_rate`` (Hz; None: already at it) to ``model_rate``. Raises UsageError for an empty clip."""
    out = [_clean(c) for c in clips]
    if sample_rate is not None and int(sample_rate) != model_rate:
        out = [resample(c, int(sample_rate), model_rate) for c in out]
    return out


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of a 1-D float32 clip (torchaudio's sinc interpolation)."""
    import torch
    import torchaudio.functional as AF

    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if orig_rate == new_rate or x.size == 0:
        return x
    return AF.resample(torch.from_numpy(x), orig_rate, new_rate).numpy()


def _features(output: Any) -> Any:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output is it (5)."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        pooled = output[0]
    return pooled


def _text_positions(model: Any) -> int:
    """Longest token sequence the text tower takes (RoBERTa positions start after the padding index)."""
    cfg = model.config.text_config
    pad = int(getattr(cfg, "pad_token_id", 1) or 0)
    return max(2, int(cfg.max_position_embeddings) - pad - 1)


def _is_packaged_dir(name: str) -> bool:
    from importlib import resources

    try:
        return (resources.files("mmsearch") / "assets" / name / "config.json").is_file()
    except Exception:
        return False


def _looks_like_path(value: str) -> bool:
    return (
        value.startswith((".", "~", os.sep))
        or (os.altsep is not None and os.altsep in value)
        or value.count("/") > 1
        or os.path.exists(value)
    )


def _short(exc: BaseException, limit: int = 240) -> str:
    """The first line of an error, cut after a sentence (or a word) within ``limit`` characters."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if len(line) <= limit:
        return line
    cut = line[:limit]
    end = cut.rfind(". ")
    return cut[: end + 1] if end > limit // 3 else cut[: cut.rfind(" ")] + " ..."
