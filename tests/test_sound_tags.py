"""Sound tags (issue #19): the AST tagger, its tiny trained version, tags stored with the index, the tag filter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mmsearch
from mmsearch.errors import EncoderError, EncoderMismatchError, UsageError

SR = 16_000


def _sound(path: Path, parts: list[tuple[str, float]], seed: int = 0) -> list[tuple[str, float, float]]:
    """A WAV of world sounds back to back (``(class, seconds)``); returns (class, start, end) of each."""
    from mmsearch.synth import synth_audio_event, write_wav

    rng = np.random.default_rng(seed)
    pieces, events, t = [], [], 0.0
    for cls, seconds in parts:
        pieces.append(synth_audio_event(rng, cls, SR, seconds, amplitude=0.5))
        events.append((cls, t, t + seconds))
        t += seconds
    write_wav(path, np.concatenate(pieces), SR)
    return events


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tags")
    media = root / "media"
    media.mkdir()
    events = {
        "chord_noise.wav": _sound(media / "chord_noise.wav", [("chord", 8.0), ("noise", 8.0)], seed=1),
        "high.wav": _sound(media / "high.wav", [("high tone", 10.0)], seed=2),
    }
    index = root / "index"
    report = mmsearch.index_paths([media], index, model="synth-clip", sound_tags="synth-ast", speech=False, ocr=False,
                                  device="cpu", freeze_text=False)
    assert report.sound_tags >= report.audio_windows // 2 > 0
    return {"root": root, "media": media, "index": index, "events": events, "report": report}


def _class_at(events: list[tuple[str, float, float]], start: float, end: float) -> set[str]:
    """Classes filling at least half of [start, end)."""
    return {c for c, s, e in events if min(e, end) - max(s, start) >= 0.5 * (end - start)}


def test_stored_tags_name_the_sounds_of_their_windows(tagged: dict) -> None:
    idx = mmsearch.open_index(tagged["index"])
    info = idx.info()["sound_tags"]
    assert info["tagger"]["model"] == "synth-ast" and info["tagger"]["threshold"] == 0.5
    assert info["tags"] > 0
    rows = idx.snapshot.tags.to_pylist()
    paths = {int(r["media_id"]): Path(r["path"]).name for r in mmsearch.open_index(tagged["index"]).snapshot.media.to_pylist()}
    right = total = 0
    for row in rows:  # every stored tag of a window that one class fills names that class
        truth = _class_at(tagged["events"][paths[row["media_id"]]], row["start"], row["end"])
        if len(truth) == 1:
            total += 1
            right += row["label"] in truth
    assert total >= 15 and right / total >= 0.9, (right, total)
    # windows of one class: the tag is there (recall), checked on the middle of each sound
    assert [t["label"] for t in idx.tags_at(_media_id(idx, "high.wav"), 4.0, 6.0)][:1] == ["high tone"]
    assert [t["label"] for t in idx.tags_at(_media_id(idx, "chord_noise.wav"), 3.0, 5.0)][:1] == ["chord"]
    assert [t["label"] for t in idx.tags_at(_media_id(idx, "chord_noise.wav"), 11.0, 13.0)][:1] == ["noise"]


def _media_id(idx: mmsearch.Index, name: str) -> int:
    return next(int(r["media_id"]) for r in idx.snapshot.media.to_pylist() if Path(r["path"]).name == name)


def test_audio_results_carry_tags_and_the_tag_filter_keeps_only_tagged_moments(tagged: dict) -> None:
    idx = mmsearch.open_index(tagged["index"])
    results = idx.search("a chord", modality="audio", k=5)
    assert results and all(r.tags for r in results if r.modality == "audio")
    assert all(set(t) == {"label", "score"} for r in results for t in r.tags or ())
    noisy = idx.search("a high tone", modality="audio", k=5, where={"tags": ["NOISE"]})  # any case
    assert noisy, "the noise half of chord_noise.wav is tagged noise"
    for r in noisy:
        assert Path(r.path).name == "chord_noise.wav"
        assert r.start >= 6.0, f"{r.start}-{r.end} s: cut to the windows tagged noise, it starts near the noise (8-16 s)"
        assert "noise" in [t["label"] for t in r.tags]
    with pytest.raises(UsageError, match="its tags: chord, high tone, noise"):  # no window is a fast beat
        idx.search("a chord", modality="audio", k=5, where={"tags": ["fast beat"]})
    with pytest.raises(UsageError, match="empty --tag"):
        idx.search("a chord", k=5, where={"tags": [" "]})
    # a text without --modality: tags describe the sound, so the sound is searched
    default = idx.search("a chord", k=3, where={"tags": ["chord"]})
    assert default and all(r.modality == "audio" and Path(r.path).name == "chord_noise.wav" and r.end <= 9.0 for r in default)
    # --modality all: the moments localized for the query, each cut to its tagged stretch (or dropped)
    fused = idx.search("a chord", modality="all", k=5, where={"tags": ["noise"]})
    assert fused and all(Path(r.path).name == "chord_noise.wav" and r.start >= 6.0 for r in fused), fused
    # a moment is cut to the run of windows tagged so: noise fills 8-16 s of chord_noise.wav
    both = _media_id(idx, "chord_noise.wav")
    start, end = idx.tagged_span(both, 0.0, 16.0, ("noise",))
    assert 6.0 <= start <= 8.0 and end == 16.0
    assert idx.tagged_span(both, 0.0, 5.0, ("noise",)) is None and idx.tagged_span(both, 2.0, 5.0, ("chord",)) == (2.0, 5.0)
    # the JSON a user gets
    assert "tags" in results[0].to_dict()


def test_a_later_run_keeps_the_tagger_and_refuses_another(tagged: dict, tmp_path: Path) -> None:
    import shutil

    index = tmp_path / "index"
    shutil.copytree(tagged["index"], index)
    media = tmp_path / "more"
    media.mkdir()
    _sound(media / "beat.wav", [("slow beat", 10.0)], seed=3)
    mmsearch.index_paths([media], index, speech=False, ocr=False, device="cpu", freeze_text=False)  # no --sound-tags: the index's own
    idx = mmsearch.open_index(index)
    assert "slow beat" in [t["label"] for t in idx.tags_at(_media_id(idx, "beat.wav"), 3.0, 7.0)]
    from mmsearch.api import verify_index

    verify_index(index)  # the tag shards are in the manifest's checksummed files
    other = tmp_path / "other-ast"
    _random_ast(other)
    _sound(media / "tone.wav", [("low tone", 6.0)], seed=4)
    with pytest.raises(EncoderMismatchError, match="sound tags"):
        mmsearch.index_paths([media], index, sound_tags=str(other), speech=False, ocr=False, device="cpu", freeze_text=False)
    (media / "tone.wav").unlink()  # nothing to index: a tagger named is still checked
    with pytest.raises(EncoderMismatchError, match="sound tags"):
        mmsearch.index_paths([media], index, sound_tags=str(other), speech=False, ocr=False, device="cpu", freeze_text=False)
    # removed files lose their tags at search, and their rows when the audio space is compacted
    beat = _media_id(mmsearch.open_index(index), "beat.wav")
    mmsearch.remove_paths([media / "beat.wav"], index)
    idx = mmsearch.open_index(index)
    assert idx.tagged_media(("slow beat",)).size == 0
    assert idx.info()["spaces"]["audio"]["removed_media"] == 0, "9 of 33 windows removed: over COMPACT_SHARE, compacted"
    media_ids = set(idx.snapshot.tags.column("media_id").to_pylist())
    assert beat not in media_ids and media_ids == {_media_id(idx, "chord_noise.wav"), _media_id(idx, "high.wav")}
    verify_index(index)


def test_a_tagger_named_before_any_sound_is_kept_for_the_sound_that_comes(tmp_path: Path) -> None:
    """--sound-tags on a first run of pictures only: the tagger is recorded (and checked), so the sound of a
    later run without the option is tagged, as the README says of an index with tags (it was forgotten)."""
    from PIL import Image

    media = tmp_path / "media"
    media.mkdir()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(media / "still.png")
    options = dict(model="synth-clip", speech=False, ocr=False, device="cpu", freeze_text=False)
    mmsearch.index_paths([media], tmp_path / "index", sound_tags="synth-ast", **options)
    assert mmsearch.open_index(tmp_path / "index").info()["sound_tags"]["tagger"]["model"]
    _sound(media / "beat.wav", [("slow beat", 10.0)], seed=3)
    mmsearch.index_paths([media], tmp_path / "index", **options)
    idx = mmsearch.open_index(tmp_path / "index")
    assert "slow beat" in [t["label"] for t in idx.tags_at(_media_id(idx, "beat.wav"), 3.0, 7.0)]
    with pytest.raises(mmsearch.EncoderError, match="no-such-tagger"):  # a tagger that cannot load: refused at once, sound or not
        mmsearch.index_paths([media], tmp_path / "other", sound_tags="no-such-tagger", **options)


def test_sharded_index_keeps_tags_on_every_shard(tagged: dict, tmp_path: Path) -> None:
    mmsearch.index_paths([tagged["media"]], tmp_path / "sharded", model="synth-clip", sound_tags="synth-ast", shards=2,
                         speech=False, ocr=False, device="cpu", freeze_text=False)
    idx = mmsearch.open_index(tmp_path / "sharded")
    assert idx.info()["sound_tags"]["tagger"]["model"] == "synth-ast"
    assert set(idx.tagged_media(("chord", "high tone")).tolist()) == {_media_id(idx, "chord_noise.wav"), _media_id(idx, "high.wav")}


def _random_ast(path: Path, labels: tuple[str, ...] = ("Dog", "Speech", "Music")) -> Path:
    """AST's architecture, tiny, random weights, saved as a user's model directory."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(0)
    config = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_mel_bins=32,
                       max_length=128, id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)})
    ASTForAudioClassification(config).save_pretrained(path)
    ASTFeatureExtractor(num_mel_bins=32, max_length=128).save_pretrained(path)
    return path


def test_tagger_loads_a_saved_ast_directory_as_users_do(tmp_path: Path) -> None:
    from mmsearch.encoders import EncoderSpec, create_encoder, resolve_spec

    tagger = create_encoder(resolve_spec(str(_random_ast(tmp_path / "ast")), None, family="ast"), device="cpu")
    assert tagger.labels == ["Dog", "Speech", "Music"] and tagger.sample_rate == 16000
    clips = [np.sin(np.linspace(0, 800, 22050)).astype(np.float32), np.zeros(8000, np.float32)]
    probs = tagger.predict(clips, sample_rate=22050)  # resampled to 16 kHz
    assert probs.shape == (2, 3) and probs.dtype == np.float32 and ((probs >= 0) & (probs <= 1)).all()
    again = create_encoder(resolve_spec(str(tmp_path / "ast"), None, family="ast"), device="cpu")
    assert np.allclose(again.predict(clips, sample_rate=22050), probs, atol=1e-6)
    assert tagger.identity()["pretrained"].startswith("sha256:")
    with pytest.raises(UsageError, match="--sound-tags"):
        create_encoder(resolve_spec(str(tmp_path / "missing"), None, family="ast"))
    with pytest.raises(EncoderError, match="not an Audio Spectrogram Transformer"):
        create_encoder(EncoderSpec("ast", "synth-clap", "mmsearch:synth-clap"), device="cpu")  # a CLAP directory


def test_audioset_tagger_offline_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmsearch.encoders import create_encoder, resolve_spec

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = resolve_spec("audioset", None, family="ast")
    assert spec.model == "MIT/ast-finetuned-audioset-10-10-0.4593"
    with pytest.raises(EncoderError, match="--sound-tags synth-ast"):
        create_encoder(spec, device="cpu")


def test_tags_of_keeps_labels_over_the_threshold_best_first() -> None:
    from mmsearch.encoders.ast import MAX_TAGS, tags_of

    labels = [f"l{i}" for i in range(8)]
    probs = np.array([[0.1, 0.9, 0.5, 0.49, 0.7, 0.6, 0.8, 0.95], [0.0] * 8], np.float32)
    got = tags_of(probs, labels, 0.5)
    assert [name for name, _ in got[0]] == ["l7", "l1", "l6", "l4", "l5"][:MAX_TAGS] and got[1] == []


def test_f1_scores_count_pairs() -> None:
    from mmsearch.train.synth_ast import f1_scores

    cover = np.array([[1.0, 0.0], [0.6, 0.4], [0.0, 1.0]], np.float32)
    probs = np.array([[0.9, 0.1], [0.2, 0.7], [0.1, 0.8]], np.float32)  # tp 2, fp 1, fn 1
    s = f1_scores(probs, cover, 0.5, ["a", "b"])
    assert s["precision"] == pytest.approx(2 / 3, abs=1e-4) and s["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["per_class_f1"] == {"a": pytest.approx(2 / 3, abs=1e-4), "b": pytest.approx(2 / 3, abs=1e-4)}


def test_cli_query_tag_filter_and_json(tagged: dict) -> None:
    from typer.testing import CliRunner

    from cli import app

    out = CliRunner().invoke(app, ["query", "a sound", "--modality", "audio", "--tag", "chord", "--index", str(tagged["index"]),
                                   "--local", "--json", "-k", "3"])
    assert out.exit_code == 0, out.output
    answer = json.loads(out.stdout)
    assert answer["query"]["filter"]["tags"] == ["chord"]
    assert answer["results"] and all("chord" in [t["label"] for t in r["tags"]] for r in answer["results"])
    shown = CliRunner().invoke(app, ["info", "--index", str(tagged["index"])])
    assert "sound tags:" in shown.stdout and "synth-ast" in shown.stdout


def test_server_returns_tags_and_takes_the_tag_filter(tagged: dict) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmsearch.server import ServeConfig, create_app

    with TestClient(create_app(ServeConfig(extra_hosts=("testserver",), index=tagged["index"], device="cpu"))) as client:
        body = client.get("/api/search", params={"q": "a sound", "modality": "audio", "k": 3, "tag": "High Tone"}).json()
    assert body["query"]["filter"]["tags"] == ["High Tone"]
    assert body["results"] and all(Path(r["path"]).name == "high.wav" for r in body["results"])
    assert all(r["tags"][0]["label"] == "high tone" for r in body["results"])
