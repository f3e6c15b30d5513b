"""Moment captions (issue #19): the CoCa captioner, its tiny trained version, the caption space of words."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mmsearch
from mmsearch.errors import EncoderError, UsageError

SEED = 3101  # an evaluation seed (>= 1000), not a training stream


@pytest.fixture(scope="module")
def captioned(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from mmsearch.synth import SynthConfig, generate_corpus

    root = tmp_path_factory.mktemp("captions")
    media = root / "media"
    truth = generate_corpus(media, videos=3, audio=0, seed=SEED,
                            config=SynthConfig(max_size=(480, 270), events_per_video=(2, 3), event_seconds=(4.0, 8.0)))
    index = root / "index"
    report = mmsearch.index_paths([media], index, model="synth-clip", audio=False, speech=False, ocr=False,
                                  captions="synth-coca", device="cpu", freeze_text=False)
    assert not report.failed and not report.partial
    return {"root": root, "media": media, "index": index, "truth": truth, "report": report}


def _events(truth: list[dict], name: str) -> list[dict]:
    return [r for r in truth if r["modality"] == "video" and Path(r["file"]).name == name]


def _shape_at(truth: list[dict], name: str, t: float) -> str | None:
    """The caption of the event shown at second ``t`` of file ``name`` (None: background)."""
    return next((r["caption"] for r in _events(truth, name) if r["start"] <= t < r["end"]), None)


def test_stored_captions_name_the_shape_on_screen(captioned: dict) -> None:
    from mmsearch.train.synth_coca import GAP_CAPTION

    idx = mmsearch.open_index(captioned["index"])
    assert idx.info()["config"]["captions"] == "synth-coca"
    space = idx.snapshot.spaces["caption"]
    right = total = 0
    for media_id, row in idx._rows.items():
        starts, ends, _ = space.segments_of(media_id)
        texts = space.texts_of(media_id)
        assert len(texts) == len(starts) > 0 and np.all(np.diff(starts) > 0)  # runs of one caption merged, in time order
        assert all(a != b for a, b in zip(texts, texts[1:]))
        for start, end, text in zip(starts, ends, texts):
            middle = (start + end) / 2
            want = _shape_at(captioned["truth"], Path(row["path"]).name, middle)
            if want is None and text != GAP_CAPTION and not any(
                    _shape_at(captioned["truth"], Path(row["path"]).name, t) for t in (start, end - 1e-3)):
                continue  # a segment that only touches an event at its edges
            total += 1
            right += text == (want or GAP_CAPTION)
    assert total >= 10 and right >= 0.8 * total, (right, total)


def test_caption_query_finds_the_moment_and_results_carry_captions(captioned: dict) -> None:
    truth = captioned["truth"]
    idx = mmsearch.open_index(captioned["index"])
    with pytest.raises(UsageError, match=r"has no audio space; index some .* first \(an index built with --no-audio has none\)"):
        idx.search("a dog barking", modality="audio")  # built with audio=False
    shown = sorted({r["caption"] for r in truth if r["modality"] == "video"})
    found = 0
    for query in shown:
        hits = idx.search(query, modality="caption", k=1)
        assert hits and hits[0].modality == "caption" and hits[0].caption == hits[0].text
        hit = hits[0]
        found += any(r["caption"] == query and min(r["end"], hit.end) > max(r["start"], hit.start)
                     for r in _events(truth, Path(hit.path).name))
    assert found >= 0.8 * len(shown), (found, len(shown))
    # a picture result carries the caption of its moment, naming what the moment shows
    query = shown[0]
    pictures = idx.search(query, modality="video", k=3)
    named = [h for h in pictures if h.caption is not None]
    assert named and all(isinstance(h.caption, str) for h in named)
    top = pictures[0]
    assert top.caption == idx.caption_at(top.media_id, top.start, top.end)
    assert _shape_at(truth, Path(top.path).name, (top.start + top.end) / 2) == top.caption == query


def test_captions_are_kept_by_later_runs_and_added_to_an_index_without_them(captioned: dict, tmp_path: Path) -> None:
    from mmsearch.synth import SynthConfig, generate_corpus

    media = tmp_path / "media"
    generate_corpus(media, videos=1, audio=0, seed=SEED + 1, config=SynthConfig(max_size=(320, 180), events_per_video=(2, 2)))
    index = tmp_path / "index"
    mmsearch.index_paths([media], index, model="synth-clip", audio=False, speech=False, ocr=False, device="cpu", freeze_text=False)
    assert "caption" not in mmsearch.open_index(index).snapshot.spaces
    report = mmsearch.index_paths([media], index, audio=False, speech=False, ocr=False, captions="synth-coca", device="cpu",
                                  freeze_text=False)  # the file indexed before is captioned now, its frames kept
    assert report.frames == 0 and report.text_segments > 0
    generate_corpus(tmp_path / "more", videos=1, audio=0, seed=SEED + 2, config=SynthConfig(max_size=(320, 180)))
    made = next((tmp_path / "more").glob("video_000.*"))
    made.rename(media / f"later{made.suffix}")
    later = mmsearch.index_paths([media], index, audio=False, speech=False, ocr=False, device="cpu", freeze_text=False)
    assert later.frames > 0 and later.text_segments > 0  # no --captions: the index keeps captioning
    idx = mmsearch.open_index(index)
    assert len(idx.snapshot.spaces["caption"].live_media_ids()) == 2


def test_a_captioner_that_fails_costs_a_file_its_captions_only(tmp_path: Path) -> None:
    from mmsearch.synth import SynthConfig, generate_corpus

    from mmsearch.encoders import packaged_asset

    weights = tmp_path / "coca.pt"  # the index's captioner: a checkpoint file that later goes bad
    weights.write_bytes(Path(packaged_asset("synth-coca.pt")).read_bytes())
    generate_corpus(tmp_path / "first", videos=1, audio=0, seed=SEED + 3, config=SynthConfig(max_size=(320, 180)))
    index = tmp_path / "index"
    mmsearch.index_paths([tmp_path / "first"], index, model="synth-clip", audio=False, speech=False, ocr=False,
                         captions=f"synth-coca:{weights}", device="cpu", freeze_text=False)
    captioned = len(mmsearch.open_index(index).snapshot.spaces["caption"].live_media_ids())
    weights.write_bytes(b"not a checkpoint")
    generate_corpus(tmp_path / "second", videos=1, audio=0, seed=SEED + 5, config=SynthConfig(max_size=(320, 180)))
    report = mmsearch.index_paths([tmp_path / "first", tmp_path / "second"], index, audio=False, speech=False, ocr=False,
                                  device="cpu", freeze_text=False)
    assert report.frames > 0 and not report.failed and len(report.indexed) == 1
    assert [stage for _, stage, _ in report.partial] == ["captions"]
    idx = mmsearch.open_index(index)
    assert captioned == 1 and len(idx.snapshot.spaces["caption"].live_media_ids()) == 1 and len(idx._rows) == 2


def test_captions_that_cannot_be_written_are_refused_before_any_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a CoCa"):
        mmsearch.index_paths([tmp_path], tmp_path / "i", model="synth-clip", captions="ViT-B-32", device="cpu")
    with pytest.raises(UsageError, match=r"synth-clip is a CLIP image-text model, not a captioner \(CoCa or BLIP\) \(--captions\): pass it with --model"):
        mmsearch.index_paths([tmp_path], tmp_path / "i", model="synth-clip", captions="synth-clip", device="cpu")
    with pytest.raises(UsageError, match="no such checkpoint"):
        mmsearch.index_paths([tmp_path], tmp_path / "i", model="synth-clip", captions="synth-coca:/no/such/file.pt", device="cpu")
    with pytest.raises(UsageError, match="no such captioner.*coca_ViT-B-32"):
        mmsearch.index_paths([tmp_path], tmp_path / "i", model="synth-clip", captions="foo", device="cpu")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderError, match="--captions synth-coca:.*synth-coca offline"):  # named: loaded once before any file is read
        mmsearch.index_paths([tmp_path], tmp_path / "i", model="synth-clip", captions=f"synth-coca:{broken}", device="cpu")
    with pytest.raises(EncoderError, match="--captions coca: .*HF_HUB_OFFLINE.*coca_ViT-B-32:/path/to/file"):
        mmsearch.index_paths([tmp_path], tmp_path / "i", model="synth-clip", captions="coca", device="cpu")
    assert not (tmp_path / "i").exists()


def test_a_caption_query_on_an_index_without_captions_says_how_to_get_them(tmp_path: Path) -> None:
    from mmsearch.synth import SynthConfig, generate_corpus

    generate_corpus(tmp_path / "m", videos=1, audio=0, seed=SEED + 4, config=SynthConfig(max_size=(160, 120)))
    mmsearch.index_paths([tmp_path / "m"], tmp_path / "i", model="synth-clip", audio=False, speech=False, ocr=False, device="cpu",
                         freeze_text=False)
    with pytest.raises(UsageError, match="no caption space.*without --captions"):
        mmsearch.open_index(tmp_path / "i").search("a red circle", modality="caption")


def test_caption_segments_merge_runs_and_stay_inside_the_media() -> None:
    from mmsearch.captions import _segments

    found = [(0.0, "a red circle"), (2.0, "a red circle"), (4.0, "an empty background"), (6.0, "a red circle"), (8.0, "")]
    got = [(s.start, s.end, s.text) for s in _segments(found, stride=2.0, end=7.5)]
    assert got == [(0.0, 3.0, "a red circle"), (3.0, 5.0, "an empty background"), (5.0, 7.0, "a red circle")]
    tail = [(s.start, s.end) for s in _segments([(0.0, "a"), (2.0, "a")], stride=2.0, end=3.6)]
    assert tail == [(0.0, 3.6)]  # the last frame read stands until the end, when that is within a stride


def test_shipped_synth_coca_captions_fresh_frames() -> None:
    from mmsearch.encoders import create_encoder, resolve_spec
    from mmsearch.train.synth_coca import caption_accuracy

    captioner = create_encoder(resolve_spec("synth-coca", family="coca"), device="cpu")
    score = caption_accuracy(captioner, seed=11, per_caption=4, family="train")
    assert score["names_colour_and_shape"] >= 0.9 and score["background_right"] >= 0.75, score


@pytest.mark.slow
def test_captioner_loads_a_saved_coca_checkpoint_as_users_do(tmp_path: Path) -> None:
    """open_clip's coca_ViT-B-32 architecture, random weights, saved as a checkpoint file and loaded
    by the path `--captions coca_ViT-B-32:FILE` takes; greedy decoding stops at the token limit."""
    import open_clip
    import torch

    from mmsearch.captions import load_captioner

    torch.manual_seed(0)
    model = open_clip.create_model("coca_ViT-B-32")
    path = tmp_path / "coca.pt"
    torch.save({"state_dict": {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}}, path)
    captioner = load_captioner(f"coca_ViT-B-32:{path}", device="cpu")
    assert captioner.identity()["family"] == "coca" and captioner.identity()["pretrained"].startswith("sha256:")
    assert captioner.input_size == 224
    captioner.max_tokens = 5
    frames = np.random.default_rng(0).integers(0, 255, (2, 240, 320, 3), dtype=np.uint8)
    said = captioner.caption(frames)
    assert len(said) == 2 and all(isinstance(s, str) for s in said)
    assert all(len(open_clip.get_tokenizer("coca_ViT-B-32")([s])[0].nonzero()) <= 5 + 2 for s in said)
    with pytest.raises(EncoderError, match="not a CoCa"):
        from mmsearch.encoders.base import EncoderSpec
        from mmsearch.encoders.coca import Captioner

        Captioner(EncoderSpec("coca", "synth-clip", "mmsearch:synth-clip.pt"), device="cpu")


def test_cli_caption_query_json_and_table(captioned: dict) -> None:
    from typer.testing import CliRunner

    from cli import app

    query = next(r["caption"] for r in captioned["truth"] if r["modality"] == "video")
    out = CliRunner().invoke(app, ["query", query, "--modality", "caption", "--index", str(captioned["index"]), "--local", "--json", "-k", "2"])
    assert out.exit_code == 0, out.output
    results = json.loads(out.stdout)["results"]
    assert results and results[0]["modality"] == "caption" and results[0]["caption"] == results[0]["text"]
    table = CliRunner().invoke(app, ["query", query, "--modality", "video", "--index", str(captioned["index"]), "--local"])
    assert table.exit_code == 0 and "caption" in table.stdout
    shown = CliRunner().invoke(app, ["info", "--index", str(captioned["index"])])
    assert "captions=synth-coca" in shown.stdout and "space caption" in shown.stdout


def _tiny_blip(directory: Path, head: str = "BlipForConditionalGeneration") -> Path:
    """BLIP's layout made small, random weights, written by save_pretrained as a user's model directory is."""
    import torch

    from mmsearch.train.synth_itm import build_model, save_model_dir

    torch.manual_seed(0)
    model, processor = build_model(32, head=head, positions=32)
    return save_model_dir(model, processor, directory)


def test_blip_captioner_loads_a_saved_directory_as_users_do(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """transformers' BlipForConditionalGeneration, random weights saved with save_pretrained, loaded by the
    path `--captions DIR` takes; a BLIP saved with the other head is refused by both flags."""

    from mmsearch.captions import check_captioner, load_captioner
    from mmsearch.encoders import EncoderSpec, create_encoder

    directory = _tiny_blip(tmp_path / "blip-cap")
    assert check_captioner(str(directory), load=True) == str(directory)
    captioner = load_captioner(str(directory), device="cpu")
    identity = captioner.identity()
    assert identity["family"] == "blip-caption" and identity["pretrained"].startswith("sha256:") and captioner.input_size == 64
    captioner.max_tokens = 5
    rng = np.random.default_rng(0)
    said = captioner.caption([rng.integers(0, 255, (90, 160, 3), dtype=np.uint8), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)])
    assert len(said) == 2 and all(isinstance(s, str) for s in said)
    assert all(len(captioner.processor.tokenizer(s, add_special_tokens=False)["input_ids"]) <= 5 for s in said)
    longest = captioner.caption(rng.integers(0, 255, (2, 90, 160, 3), dtype=np.uint8), stop_at_end=False)
    assert all(len(captioner.processor.tokenizer(s, add_special_tokens=False)["input_ids"]) >= 4 for s in longest), longest
    matcher_dir = _tiny_blip(tmp_path / "blip-itm", head="BlipForImageTextRetrieval")
    capfd.readouterr()
    with pytest.raises(EncoderError, match="--captions .*saved as BlipForImageTextRetrieval, an image-text matcher.*Give --captions a BLIP "
                                           "captioning model \\(blip, synth-blip offline"):
        load_captioner(str(matcher_dir), device="cpu")
    assert capfd.readouterr().err == ""  # refused from its config, before transformers reports the weights it could not place
    with pytest.raises(EncoderError, match="--rerank-model .*saved as BlipForConditionalGeneration, a captioner"):
        create_encoder(EncoderSpec("blip-itm", str(directory)), device="cpu")


def test_blip_captions_that_cannot_be_loaded_are_refused_before_any_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="BLIP model 'Salesforce/blip-image-captioning-base'.*--captions synth-blip"):
        mmsearch.index_paths([tmp_path], tmp_path / "i", model="synth-clip", captions="blip", device="cpu")
    with pytest.raises(UsageError, match="--captions /no/such/dir: no such directory"):
        mmsearch.index_paths([tmp_path], tmp_path / "i", model="synth-clip", captions="/no/such/dir", device="cpu")
    with pytest.raises(UsageError, match=r"synth-itm is a BLIP image-text matcher, not a captioner \(CoCa or BLIP\) \(--captions\): pass it with --rerank-model"):
        mmsearch.index_paths([tmp_path], tmp_path / "i", model="synth-clip", captions="synth-itm", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match="empty: no weights file .* in this directory; give the directory a model's save_pretrained wrote"):
        mmsearch.index_paths([tmp_path], tmp_path / "i", model="synth-clip", captions=str(tmp_path / "empty"), device="cpu")
    unconfigured = _tiny_blip(tmp_path / "unconfigured")
    (unconfigured / "config.json").unlink()
    with pytest.raises(EncoderError, match="could not load the BLIP captioning model in .*unconfigured: no config.json there; give"):
        mmsearch.index_paths([tmp_path], tmp_path / "i", model="synth-clip", captions=str(unconfigured), device="cpu")
    unprocessed = _tiny_blip(tmp_path / "unprocessed")
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        (unprocessed / name).unlink()
    with pytest.raises(EncoderError, match="could not load the BLIP captioning model's processor .*files BlipProcessor.save_pretrained writes"):
        mmsearch.index_paths([tmp_path], tmp_path / "i", model="synth-clip", captions=str(unprocessed), device="cpu")
    bert = _tiny_blip(tmp_path / "bert")
    (bert / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(EncoderError, match="bert is a 'bert' model, not BLIP; give the directory a model's save_pretrained wrote"):
        mmsearch.index_paths([tmp_path], tmp_path / "i", model="synth-clip", captions=str(bert), device="cpu")
    broken = _tiny_blip(tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(EncoderError, match="could not load the BLIP captioning model in .*broken: .*damaged or incomplete: save or copy"):
        mmsearch.index_paths([tmp_path], tmp_path / "i", model="synth-clip", captions=str(broken), device="cpu")
    assert not (tmp_path / "i").exists()


def test_shipped_synth_blip_captions_fresh_frames() -> None:
    from mmsearch.captions import load_captioner
    from mmsearch.train.synth_coca import caption_accuracy

    captioner = load_captioner("synth-blip", device="cpu")
    assert type(captioner).__name__ == "BlipCaptioner"
    score = caption_accuracy(captioner, seed=11, per_caption=4, family="train")
    assert score["names_colour_and_shape"] >= 0.9 and score["background_right"] >= 0.75, score


@pytest.mark.slow  # end to end through the command line: index with captions, then a query per caption (about 10 s)
def test_cli_indexes_with_blip_captions_and_finds_the_moment_by_its_words(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app
    from mmsearch.synth import SynthConfig, generate_corpus

    truth = generate_corpus(tmp_path / "media", videos=2, audio=0, seed=SEED + 6,
                            config=SynthConfig(max_size=(320, 180), events_per_video=(2, 2), event_seconds=(4.0, 8.0)))
    index = tmp_path / "index"
    made = CliRunner().invoke(app, ["index", str(tmp_path / "media"), "--index", str(index), "--model", "synth-clip", "--no-audio",
                                    "--no-speech", "--no-ocr", "--captions", "synth-blip", "--device", "cpu"])
    assert made.exit_code == 0, made.output
    assert "captions=synth-blip" in CliRunner().invoke(app, ["info", "--index", str(index)]).stdout
    shown = sorted({r["caption"] for r in truth if r["modality"] == "video"})
    found = 0
    for query in shown:
        out = CliRunner().invoke(app, ["query", query, "--modality", "caption", "--index", str(index), "--local", "--json", "-k", "1"])
        assert out.exit_code == 0, out.output
        hit = json.loads(out.stdout)["results"][0]
        found += hit["caption"] == query and any(
            r["caption"] == query and min(r["end"], hit["end"]) > max(r["start"], hit["start"]) for r in _events(truth, Path(hit["path"]).name))
    assert found >= 0.75 * len(shown), (found, shown)


@pytest.mark.slow
def test_synth_blip_recipe_trains_and_writes_a_directory_users_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A few steps of the recipe that made synth-blip: the loss falls, the directory it writes loads through
    `--captions DIR`, and nothing is left in the temporary folder it stages the files in."""
    import tempfile

    from mmsearch.captions import load_captioner
    from mmsearch.train.synth_blip import train_synth_blip

    staging = tmp_path / "tmp"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    losses = train_synth_blip(tmp_path / "out", steps=40, batch_size=16, seed=0, width=32)
    assert len(losses) == 40 and np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5]), losses  # untrained: about 1.0
    captioner = load_captioner(str(tmp_path / "out"), device="cpu")
    assert type(captioner).__name__ == "BlipCaptioner" and captioner.input_size == 64
    assert all(isinstance(s, str) for s in captioner.caption(np.zeros((2, 64, 64, 3), np.uint8)))
    assert not list(staging.glob("mmsearch-model-*")), list(staging.iterdir())  # the staged files went away with their folder


def test_decoders_find_the_installed_package_from_a_folder_holding_one_named_mmsearch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the folder a clone sits in (a folder ``mmsearch`` without ``__init__.py`` beside the
    current directory), the decoder processes still import the installed package: the captioner's
    shipped weights are found, so every file gets its captions."""
    from mmsearch.synth import SynthConfig, generate_corpus

    (tmp_path / "mmsearch").mkdir()  # what `git clone .../mmsearch` leaves in the current directory
    generate_corpus(tmp_path / "media", videos=1, audio=0, seed=SEED + 8, config=SynthConfig(max_size=(320, 180)))
    monkeypatch.chdir(tmp_path)
    report = mmsearch.index_paths(["media"], "index", model="synth-clip", audio=False, speech=False, ocr=False,
                                  captions="synth-coca", device="cpu", freeze_text=False)
    assert report.partial == [] and report.text_segments > 0, report.partial
    assert mmsearch.open_index(tmp_path / "index").snapshot.spaces["caption"].live_media_ids().size == 1
