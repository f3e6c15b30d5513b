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


def test_default_audio_model_is_general_sound_and_music_is_a_name_away(tmp_path):
    """New indexes get LAION's general CLAP; "music" names the music one; an index keeps its own model."""
    import json

    import mmsearch
    from mmsearch.api import _stored_spec
    from mmsearch.encoders import resolve_spec

    assert resolve_spec(None, family="clap").model == "laion/larger_clap_general"
    assert resolve_spec("music", family="clap").model == "laion/larger_clap_music"
    assert resolve_spec("general", family="clap").model == "laion/larger_clap_general"
    from conftest import RED, write_video

    write_video(tmp_path / "media" / "a.mp4", [(RED, 1.0)], audio=True)
    mmsearch.index_paths([tmp_path / "media"], tmp_path / "index", model="synth-clip", audio_model="synth-clap", device="cpu")
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["spaces"]["audio"]["encoder"]["spec"]["model"] == "synth-clap"
    assert _stored_spec(tmp_path / "index", "audio").model == "synth-clap"  # what a later run without --audio-model uses

