"""Weights that are neither cached nor downloadable fail at once with one clear message, for both towers."""

from __future__ import annotations

import time

import pytest

from mmsearch.encoders.base import EncoderSpec
from mmsearch.errors import EncoderError


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """Online mode, an empty cache and a hub endpoint nothing listens on."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"), raising=False)


def test_clip_weights_unreachable_fail_fast(unreachable_hub):
    import open_clip  # noqa: F401  (imported before the clock starts: the check is what is timed)

    from mmsearch.encoders.clip import ClipEncoder

    t0 = time.monotonic()
    with pytest.raises(EncoderError) as err:
        ClipEncoder(EncoderSpec("clip", "ViT-B-32", "laion2b_s34b_b79k"), device="cpu")
    assert time.monotonic() - t0 < 10
    message = str(err.value)
    assert "127.0.0.1 is unreachable" in message and "--pretrained" in message and "ViT-B-32" in message


def test_clap_weights_unreachable_fail_fast(unreachable_hub):
    import transformers  # noqa: F401

    from mmsearch.encoders.clap import ClapEncoder

    t0 = time.monotonic()
    with pytest.raises(EncoderError) as err:
        ClapEncoder(EncoderSpec("clap", "laion/larger_clap_music"), device="cpu")
    assert time.monotonic() - t0 < 10
    message = str(err.value)
    assert "127.0.0.1 is unreachable" in message and "--audio-model /path/to/dir" in message


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_clip_offline_flag_is_respected(unreachable_hub, monkeypatch, variable):
    from mmsearch.encoders.clip import ClipEncoder

    monkeypatch.setenv(variable, "1")
    with pytest.raises(EncoderError, match="HF_HUB_OFFLINE is set"):
        ClipEncoder(EncoderSpec("clip", "ViT-B-32", "laion2b_s34b_b79k"), device="cpu")
