"""Tests for the CLAP encoder (mmsearch.encoders.clap) and the packaged synth-clap (mmsearch.train.synth_clap)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mmsearch.encoders.base import EncoderSpec
from mmsearch.errors import EncoderError, UsageError

SYNTH_CLAP_DIR = Path(__file__).resolve().parents[1] / "mmsearch" / "assets" / "synth-clap"


def _tiny_clap(directory: Path, *, fusion: bool) -> Path:
    """A random CLAP with the real checkpoint's 48 kHz / 64-mel feature extractor, saved with save_pretrained."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    from mmsearch.train.synth_clap import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    config = ClapConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=34,
        ),
        audio_config=dict(
            num_mel_bins=64, spec_size=256, patch_size=16, patch_stride=16, patch_embeds_hidden_size=16,
            depths=[1, 1, 1], num_attention_heads=[1, 2, 4], window_size=4, hidden_size=64,
            enable_fusion=fusion,
        ),
        projection_dim=24,
    )
    ClapModel(config).save_pretrained(directory)
    extractor = ClapFeatureExtractor(truncation="fusion" if fusion else "rand_trunc")
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def random_clap_dir(tmp_path_factory) -> Path:
    return _tiny_clap(tmp_path_factory.mktemp("clap") / "random-clap", fusion=False)


@pytest.fixture(scope="module")
def random_clap(random_clap_dir: Path):
    from mmsearch.encoders.clap import ClapEncoder

    return ClapEncoder(EncoderSpec("clap", str(random_clap_dir)), device="cpu")


@pytest.fixture(scope="module")
def synth_clap():
    from mmsearch.encoders.clap import ClapEncoder

    return ClapEncoder(EncoderSpec("clap", "synth-clap", "mmsearch:synth-clap"), device="cpu")


def _noise(seconds: float, sr: int, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


# --------------------------------------------------------------------------- the encoder on random weights
def test_random_clap_loads_and_encodes(random_clap) -> None:
    enc = random_clap
    assert enc.dim == 24 and enc.sample_rate == 48000
    clips = [_noise(2.0, 48000, 1), _noise(10.0, 48000, 2), _noise(12.5, 48000, 3)]  # short, exact, too long
    vecs = enc.encode_audio(clips)
    assert vecs.shape == (3, 24) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # identical audio -> identical vector, whatever the batch around it and however often
    again = enc.encode_audio([clips[2], clips[0], clips[1], clips[0]])
    np.testing.assert_allclose(again[[1, 2, 0]], vecs, atol=1e-5)
    np.testing.assert_allclose(again[3], vecs[0], atol=1e-5)
    text = enc.encode_text(["a high tone", "noise", "something unheard-of"])
    assert text.shape == (3, 24)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(enc.encode_text(["noise"])[0], text[1], atol=1e-5)
    assert enc.encode_audio([]).shape == (0, 24) and enc.encode_text([]).shape == (0, 24)
    with pytest.raises(UsageError):
        enc.encode_audio([np.zeros(0, np.float32)])


def test_random_clap_identity(random_clap, random_clap_dir: Path) -> None:
    import transformers

    from mmsearch.encoders.clap import directory_sha256

    ident = random_clap.identity()
    assert ident["family"] == "clap" and ident["dim"] == 24 and ident["sample_rate"] == 48000
    assert ident["pretrained"] == "sha256:" + directory_sha256(str(random_clap_dir))
    assert len(ident["pretrained"]) == len("sha256:") + 64
    assert ident["preprocess"]["feature_size"] == 64 and ident["preprocess"]["hop_length"] == 480
    assert ident["preprocess"]["truncation"] == "rand_trunc"
    assert ident["transformers"] == transformers.__version__


def test_encode_audio_resamples_other_rates(random_clap) -> None:
    from mmsearch.encoders.clap import resample

    sr = 16000
    clip = (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * sr) / sr)).astype(np.float32)
    direct = random_clap.encode_audio([clip], sample_rate=sr)
    manual = random_clap.encode_audio([resample(clip, sr, 48000)])
    np.testing.assert_allclose(direct, manual, atol=1e-6)


def test_fused_clap_is_deterministic(tmp_path: Path) -> None:
    from mmsearch.encoders.clap import ClapEncoder

    enc = ClapEncoder(EncoderSpec("clap", str(_tiny_clap(tmp_path / "fused", fusion=True))), device="cpu")
    assert enc.identity()["preprocess"]["truncation"] == "fusion"
    clips = [_noise(3.0, 48000, 4), _noise(14.0, 48000, 5)]  # the long one goes through feature fusion
    a = enc.encode_audio(clips)
    b = enc.encode_audio(clips[::-1])[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(enc.encode_audio(clips[1:]), a[1:], atol=1e-5)


# --------------------------------------------------------------------------- failures
def test_uncached_hub_model_fails_fast_offline(monkeypatch, tmp_path: Path) -> None:
    import time

    from mmsearch.encoders.clap import ClapEncoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"), raising=False)
    t0 = time.monotonic()
    with pytest.raises(EncoderError) as err:
        ClapEncoder(EncoderSpec("clap", "laion/larger_clap_music"), device="cpu")
    assert time.monotonic() - t0 < 10
    message = str(err.value)
    assert "laion/larger_clap_music" in message and "--audio-model /path/to/dir" in message
    assert "\n" not in message


def test_bad_local_paths(tmp_path: Path) -> None:
    from mmsearch.encoders.clap import ClapEncoder

    with pytest.raises(UsageError, match="no such directory"):
        ClapEncoder(EncoderSpec("clap", str(tmp_path / "nowhere")), device="cpu")
    weights = tmp_path / "model.safetensors"  # a file where a model directory belongs
    weights.write_bytes(b"x")
    with pytest.raises(UsageError, match="model.safetensors: a file, not a model directory"):
        ClapEncoder(EncoderSpec("clap", str(weights)), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EncoderError, match="no weights file"):
        ClapEncoder(EncoderSpec("clap", str(empty)), device="cpu")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderError, match="could not load the CLAP model"):
        ClapEncoder(EncoderSpec("clap", str(broken)), device="cpu")


def test_registered_family_builds_clap(random_clap_dir: Path) -> None:
    from mmsearch.encoders import FAMILIES, create_encoder

    if "clap" not in FAMILIES:
        pytest.skip("the clap family is not registered in mmsearch.encoders yet")
    enc = create_encoder(EncoderSpec("clap", str(random_clap_dir)), device="cpu")
    assert enc.identity()["family"] == "clap"


# --------------------------------------------------------------------------- synth-clap, its recipe and pieces
def test_tokenizer_has_roberta_special_ids() -> None:
    from mmsearch.train.synth_clap import build_tokenizer

    tok = build_tokenizer()
    ids = tok(["A high tone", "zzz"])["input_ids"]
    assert ids[0][0] == 0 and ids[0][-1] == 2 and len(ids[0]) == 5  # <s> a high tone </s>
    assert ids[1] == [0, 3, 2]  # unknown word -> <unk>
    assert tok.pad_token_id == 1 and tok.mask_token_id == 4


@pytest.mark.parametrize("which", ["synth-clap", "larger_clap_music"])
def test_mel_front_end_matches_feature_extractor(which: str) -> None:
    from transformers import ClapFeatureExtractor

    from mmsearch.encoders.clap import MelFrontEnd
    from mmsearch.synth import sample_audio_caption_pairs
    from mmsearch.train.synth_clap import build_feature_extractor

    if which == "synth-clap":
        fe, frames, mels = build_feature_extractor(), 501, 32
    else:  # the real checkpoint's settings: 48 kHz, hop 480, 64 mels from 50 Hz
        fe, frames, mels = ClapFeatureExtractor(truncation="rand_trunc", frequency_min=50, frequency_max=14000), 1001, 64
    sr = fe.sampling_rate
    front = MelFrontEnd(fe)
    audio, _ = sample_audio_caption_pairs(np.random.default_rng(3), 3, sr, 3.0)
    clips = list(audio) + [_noise(10.0, sr, 6), _noise(0.5, sr, 7)]  # repeat-padded, exact, very short
    mine = front(clips).numpy()
    ref = np.stack([fe(c, sampling_rate=sr, return_tensors="np")["input_features"][0] for c in clips])
    assert mine.shape == ref.shape == (5, 1, frames, mels)
    np.testing.assert_allclose(mine, ref, atol=0.02, rtol=1e-3)  # float32 rounding, visible only near -100 dB


def test_encoder_features_equal_the_stock_extractor_path(random_clap) -> None:
    import torch

    enc = random_clap
    clips = [_noise(4.0, 48000, 8), _noise(10.0, 48000, 9)]
    feats = enc.feature_extractor(clips, sampling_rate=48000, return_tensors="pt")
    with torch.inference_mode():
        out = enc.model.get_audio_features(input_features=feats["input_features"])
    ref = out if isinstance(out, torch.Tensor) else out.pooler_output
    np.testing.assert_allclose(enc.encode_audio(clips), ref.numpy(), atol=1e-4)


def test_soft_loss_equals_group_info_nce_for_hard_targets() -> None:
    import torch

    from mmsearch.train import info_nce_loss
    from mmsearch.train.synth_clap import soft_info_nce_loss

    gen = torch.Generator().manual_seed(0)
    audio, text = torch.randn(7, 5, generator=gen), torch.randn(3, 5, generator=gen)
    labels = [0, 2, 1, 1, -1, 0, 2]
    weights = torch.zeros(7, 3)
    for i, g in enumerate(labels):
        if g >= 0:
            weights[i, g] = 1.0
    ours = soft_info_nce_loss(audio, text, 20.0, weights)
    shared = info_nce_loss(audio, text, 20.0, labels, [0, 1, 2])
    assert float(ours) == pytest.approx(float(shared), rel=1e-5)


def test_save_clap_directory_replaces_atomically(tmp_path: Path) -> None:
    from transformers import ClapModel

    from mmsearch.train.synth_clap import build_config, build_processor, save_clap_directory

    out = tmp_path / "model"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    processor = build_processor()
    save_clap_directory(ClapModel(build_config(len(processor.tokenizer))), processor, out, info={"steps": 0})
    names = sorted(os.listdir(out))
    assert "stale.txt" not in names and "model.safetensors" in names and "training.json" in names
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no temp or old directory left behind


def test_synth_clap_is_shipped_small_and_loadable(synth_clap) -> None:
    assert SYNTH_CLAP_DIR.is_dir()
    files = {p.name: p.stat().st_size for p in SYNTH_CLAP_DIR.iterdir()}
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        assert name in files
    assert sum(files.values()) < 6_000_000
    ident = synth_clap.identity()
    assert ident["pretrained"].startswith("mmsearch:synth-clap@sha256:")
    assert synth_clap.sample_rate == 16000 and ident["sample_rate"] == 16000


@pytest.mark.parametrize("seconds", [10.0, 2.0])
def test_synth_clap_ranks_the_right_caption_first(synth_clap, seconds: float) -> None:
    from mmsearch.synth import AUDIO_CAPTIONS, sample_audio_caption_pairs

    # fresh sounds: a seed the training stream never used, generated at 44.1 kHz and resampled
    rng = np.random.default_rng(np.random.SeedSequence([424242, int(seconds)]))
    audio, labels = sample_audio_caption_pairs(rng, 36, 44100, seconds)
    vectors = synth_clap.encode_audio(list(audio), sample_rate=44100)
    text = synth_clap.encode_text(list(AUDIO_CAPTIONS))
    predicted = [AUDIO_CAPTIONS[i] for i in np.argmax(vectors @ text.T, axis=1)]
    accuracy = np.mean([p == t for p, t in zip(predicted, labels)])
    assert accuracy >= 0.9, list(zip(labels, predicted))
    # and text -> audio: every caption's best clip is one of its own
    for j, caption in enumerate(AUDIO_CAPTIONS):
        if caption in labels:
            assert labels[int(np.argmax(vectors @ text[j]))] == caption
