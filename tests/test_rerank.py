"""Cross-attention re-ranking (issue #19): the BLIP image-text matcher, its tiny trained version, `query --rerank`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import mmsearch
from mmsearch.errors import EncoderError, UsageError

SEED = 3201  # an evaluation seed (>= 1000), not a training stream


@pytest.fixture(scope="module")
def together(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Videos in which most shapes share the screen with a second one (issue #19's harder world)."""
    from mmsearch.synth import SynthConfig, generate_corpus

    root = tmp_path_factory.mktemp("together")
    media = root / "media"
    truth = generate_corpus(media, videos=4, audio=0, seed=SEED,
                            config=SynthConfig(max_size=(480, 270), companion_probability=0.8, events_per_video=(3, 3)))
    index = root / "index"
    mmsearch.index_paths([media], index, model="synth-clip", audio=False, speech=False, ocr=False, device="cpu", freeze_text=False)
    return {"media": media, "index": index, "truth": truth}


def _p_at_1(idx, truth: list[dict], media: Path, *, rerank: bool) -> float:
    from mmsearch.metrics import temporal_iou

    captions = sorted({r["caption"] for r in truth})
    right = 0
    for caption in captions:
        hit = idx.search(caption, modality="video", k=1, rerank=rerank)[0]
        file = os.path.relpath(hit.path, media)
        right += any(temporal_iou((hit.start, hit.end), (r["start"], r["end"])) >= 0.5
                     for r in truth if r["file"] == file and r["caption"] == caption)
    return right / len(captions)


def test_companions_are_drawn_beside_their_event_and_listed_in_the_truth(together: dict) -> None:
    from mmsearch.media import picture_at

    truth = together["truth"]
    by_time: dict[tuple, list[str]] = {}
    for r in truth:
        by_time.setdefault((r["file"], r["start"], r["end"]), []).append(r["caption"])
    pairs = [(key, caps) for key, caps in by_time.items() if len(caps) == 2]
    assert pairs and all(a != b for _, (a, b) in pairs)
    (file, start, end), _ = pairs[0]
    frame = picture_at(together["media"] / file, (start + end) / 2).astype(int)
    background = np.median(frame.reshape(-1, 3), axis=0)
    lit = np.abs(frame - background).sum(-1) > 60  # shape pixels
    half = frame.shape[1] // 2
    assert lit[:, :half].mean() > 0.01 and lit[:, half:].mean() > 0.01  # a shape in each half


def test_rerank_raises_p_at_1_where_shapes_appear_together(together: dict) -> None:
    idx = mmsearch.open_index(together["index"], device="cpu")
    plain = _p_at_1(idx, together["truth"], together["media"], rerank=False)
    reranked = _p_at_1(idx, together["truth"], together["media"], rerank=True)
    assert reranked > plain, (plain, reranked)


def test_reranked_results_carry_the_match_score_and_are_ordered_by_the_new_score(together: dict) -> None:
    from mmsearch.api import RERANK_WEIGHT

    idx = mmsearch.open_index(together["index"], device="cpu")
    caption = together["truth"][0]["caption"]
    plain = idx.search(caption, modality="video", k=20)
    found = idx.search(caption, modality="video", k=20, rerank=True)
    assert len(found) == len(plain) and all(r.match_score is not None and 0.0 <= r.match_score <= 1.0 for r in found)
    assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)
    lo, hi = min(r.score for r in plain), max(r.score for r in plain)
    before = {(r.path, r.start, r.end): (r.score - lo) / (hi - lo) for r in plain}
    for r in found:  # the documented mix of the matcher's probability and the scaled retrieval score
        assert r.score == pytest.approx(RERANK_WEIGHT * r.match_score + (1 - RERANK_WEIGHT) * before[(r.path, r.start, r.end)], abs=1e-6)
    assert [r.path for r in idx.search(caption, modality="video", k=3, rerank=True)] == [r.path for r in found[:3]]
    with pytest.raises(UsageError, match="query text"):
        idx.search(image=str(together["media"] / "video_000.mp4"), rerank=True)


def test_shipped_synth_itm_tells_which_colour_goes_with_which_shape() -> None:
    from mmsearch.encoders import create_encoder, resolve_spec
    from mmsearch.train.synth_itm import match_accuracy

    matcher = create_encoder(resolve_spec("synth-itm", family="blip-itm"), device="cpu")
    score = match_accuracy(matcher, seed=21, n=200, family="default")
    assert score["accuracy"] >= 0.85 and score["positives"] >= 0.8 and score["negatives"] >= 0.8, score


def test_matcher_loads_a_saved_blip_directory_as_users_do(tmp_path: Path) -> None:
    """BLIP's architecture (tiny, random weights) written by save_pretrained and loaded through the
    same path `--rerank-model DIR` takes; a directory of another kind of model is refused."""
    import torch

    from mmsearch.encoders import create_encoder, packaged_asset, resolve_spec
    from mmsearch.train.synth_itm import build_model

    torch.manual_seed(0)
    model, processor = build_model()
    model.save_pretrained(tmp_path / "blip")
    processor.save_pretrained(tmp_path / "blip")
    matcher = create_encoder(resolve_spec(str(tmp_path / "blip"), family="blip-itm"), device="cpu")
    assert matcher.identity()["family"] == "blip-itm" and matcher.identity()["pretrained"].startswith("sha256:")
    frames = [np.random.default_rng(i).integers(0, 255, (90 + i, 160, 3), dtype=np.uint8) for i in range(3)]
    p = matcher.match(frames, "a red circle")
    assert p.shape == (3,) and p.dtype == np.float32 and np.all((p > 0) & (p < 1))
    with pytest.raises(UsageError, match="pass it with --sound-tags"):
        resolve_spec("synth-ast", family="blip-itm")
    with pytest.raises(EncoderError):  # the directory of an AST, not a BLIP
        create_encoder(resolve_spec(str(packaged_asset("synth-ast")), family="blip-itm"), device="cpu")


def test_blip_offline_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from mmsearch.encoders import create_encoder, resolve_spec

    with pytest.raises(EncoderError, match="--rerank-model synth-itm"):
        create_encoder(resolve_spec("blip", family="blip-itm"), device="cpu")


def test_cli_rerank_json_and_its_errors(together: dict) -> None:
    from typer.testing import CliRunner

    from cli import app

    caption = together["truth"][0]["caption"]
    out = CliRunner().invoke(app, ["query", caption, "--rerank", "--index", str(together["index"]), "--local", "--json", "-k", "2"])
    assert out.exit_code == 0, out.output
    answer = json.loads(out.stdout)
    assert answer["query"]["rerank"] is True and all(r["match_score"] is not None for r in answer["results"])
    table = CliRunner().invoke(app, ["query", caption, "--rerank", "--index", str(together["index"]), "--local", "-k", "2"])
    assert table.exit_code == 0 and "match" in table.stdout
    bad = CliRunner().invoke(app, ["query", caption, "--rerank-model", "synth-itm", "--index", str(together["index"]), "--local"])
    assert isinstance(bad.exception, UsageError) and "add --rerank" in str(bad.exception)
    queries = together["index"].parent / "queries.txt"
    queries.write_text(caption + "\n")
    batch = CliRunner().invoke(app, ["query", "--batch", str(queries), "--rerank", "--index", str(together["index"]), "--local"])
    assert isinstance(batch.exception, UsageError) and "--batch" in str(batch.exception)


def test_server_reranks_when_asked(together: dict) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmsearch.server import ServeConfig, create_app

    caption = together["truth"][0]["caption"]
    with TestClient(create_app(ServeConfig(extra_hosts=("testserver",), index=together["index"], device="cpu"))) as client:
        plain = client.get("/api/search", params={"q": caption, "modality": "video", "k": 3}).json()
        body = client.get("/api/search", params={"q": caption, "modality": "video", "k": 3, "rerank": "true"}).json()
    assert body["query"]["rerank"] is True and all(r["match_score"] is not None for r in body["results"])
    assert "rerank" not in plain["query"] and all(r["match_score"] is None for r in plain["results"])
