"""The web page of ``mmsearch serve`` in a real browser (Debian's chromium driven by Playwright).

A small synthetic world (four videos of coloured shapes, one sound file, one still image) is indexed
offline with the shipped tiny models and served by uvicorn in a thread; the page is then used as a
person would: a query typed and submitted, a result clicked and played at its moment, the
similarity strip drawn and clicked, an image dropped on the page, the filters ticked.

Screenshots go to ``$MMSEARCH_SCREENSHOTS`` (else the test's temporary folder); with that variable
set, the page after a click is also copied to ``benchmarks/results/serve_page.png``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

pytestmark = pytest.mark.slow  # a real browser

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium): the web page needs a real browser",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

REPO = Path(__file__).resolve().parents[1]
SEED = 1234
TIMEOUT_MS = 30_000


def _midpoint(row: dict) -> float:
    return (row["start"] + row["end"]) / 2


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Four videos and a sound file from the synthetic world, plus a still image cut from one video's
    event; indexed with synth-clip and synth-clap (no speech, no OCR: nothing is said or written)."""
    import numpy as np
    from PIL import Image

    import mmsearch
    from mmsearch.media import picture_at
    from mmsearch.synth import SynthConfig, generate_corpus

    root = tmp_path_factory.mktemp("web-world")
    media = root / "media"
    config = SynthConfig(min_size=(160, 120), max_size=(320, 240), fps_range=(10, 10), events_per_video=(2, 2),
                         event_seconds=(3.0, 5.0), gap_seconds=(1.0, 2.0), audio_in_video_probability=0.0,
                         webm_probability=0.0)
    rows = generate_corpus(media, videos=4, audio=1, seed=SEED, config=config)
    visual = [r for r in rows if r["modality"] == "video"]
    # the still: the last event of the last video, as a PNG of its own
    still_event = visual[-1]
    still = media / "still.png"
    Image.fromarray(picture_at(str(media / still_event["file"]), _midpoint(still_event))).save(still)
    # the query: a caption shown in exactly one video (and not in the still), preferably video_001
    counts = {c: sum(r["caption"] == c for r in visual) for c in {r["caption"] for r in visual}}
    unique = [r for r in visual if counts[r["caption"]] == 1 and r["caption"] != still_event["caption"]]
    target = next((r for r in unique if r["file"] == "video_001.mp4"), unique[0])
    # the example to drop: a frame of another video's event whose caption is nowhere else
    dropped = next(r for r in unique if r["file"] not in (target["file"], still_event["file"]))
    frame = picture_at(str(media / dropped["file"]), _midpoint(dropped))
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="PNG")
    report = mmsearch.index_paths([media], root / "index", model="synth-clip", sound_tags="synth-ast", device="cpu",
                                  speech=False, ocr=False)
    assert report.failed == [] and len(report.indexed) == 6
    return {"root": root, "media": media, "index": root / "index", "rows": rows, "target": target,
            "still": still, "still_event": still_event, "dropped": dropped, "dropped_png": buffer.getvalue()}


@pytest.fixture(scope="module")
def server(world):
    """``mmsearch serve`` on a free loopback port, in a thread; its base URL."""
    with _serving(world["index"]) as url:
        yield url


@contextlib.contextmanager
def _serving(index: Path):
    """``mmsearch serve`` of ``index`` on a free loopback port, in a thread; its base URL."""
    import uvicorn

    from mmsearch.server import ServeConfig, create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(ServeConfig(index=index, port=port, device="cpu"))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, name="mmsearch-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"errors in the page's script: {errors}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("MMSEARCH_SCREENSHOTS")
    out = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _cards(page) -> list[dict]:
    return page.eval_on_selector_all(".result", "els => els.map(e => ({...e.dataset, name: e.querySelector('.name').textContent}))")


def _search(page, text: str) -> None:
    page.fill("#q", text)
    page.press("#q", "Enter")
    page.wait_for_selector(".result, #no-results, #status.error")


def test_query_click_plays_the_moment_and_draws_the_strip(page, server, world, shots):
    target = world["target"]
    page.goto(server + "/")
    assert page.title() == "mmsearch"
    _search(page, target["caption"])
    cards = _cards(page)
    assert cards, page.text_content("#status")
    first = cards[0]
    assert first["name"] == target["file"], (target, cards[:3])
    start, end = float(first["start"]), float(first["end"])
    assert start < end and max(start, target["start"]) < min(end, target["end"])  # the right moment, roughly
    card = page.locator(".result").first
    assert card.locator("img.thumb").get_attribute("loading") == "lazy"
    assert card.locator(".name").get_attribute("title").endswith(target["file"])
    assert "–" in card.locator(".range").text_content()
    assert len(card.locator(".score").text_content().split(".")[-1]) == 3
    query = parse_qs(urlparse(page.url).query)
    assert query["q"] == [target["caption"]]
    page.wait_for_function("[...document.querySelectorAll('.result img.thumb')].slice(0, 4).every(i => i.complete)")
    page.screenshot(path=str(shots / "serve_page_results.png"))

    card.click()
    player = page.locator("#player")
    assert player.evaluate("p => p.tagName") == "VIDEO"
    assert "#t=" in player.evaluate("p => p.currentSrc || p.src")
    page.wait_for_function(
        """([s, e]) => { const p = document.querySelector('#player');
             return p && p.readyState >= 1 && p.currentTime >= s - 0.05 && p.currentTime <= e + 0.05; }""",
        arg=[start, end])
    assert player.evaluate("p => p.error") is None
    # the similarity strip: one row per space of the file (pictures; this video has no sound), painted
    page.wait_for_selector("#strip[data-spaces]")
    strip = page.locator("#strip")
    assert int(strip.get_attribute("data-spaces")) >= 1
    assert strip.get_attribute("data-media") == first["mediaId"]
    painted = strip.evaluate("""c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                                   let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n / (c.width * c.height); }""")
    assert painted > 0.3
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / "serve_page_playing.png"))
    if os.environ.get("MMSEARCH_SCREENSHOTS"):
        (REPO / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shots / "serve_page_playing.png", REPO / "benchmarks" / "results" / "serve_page.png")

    # clicking the strip seeks the player there (a second outside the moment)
    duration = float(strip.get_attribute("data-duration"))
    label = float(strip.get_attribute("data-label-width"))
    box = strip.bounding_box()
    wanted = 0.5 if start > 2 else min(duration - 0.5, end + 1.5)
    strip.click(position={"x": label + wanted / duration * (box["width"] - label), "y": 10})
    page.wait_for_function(
        "t => { const p = document.querySelector('#player'); return !p.seeking && Math.abs(p.currentTime - t) < 1.0; }", arg=wanted)


def test_dropping_an_image_searches_by_example(page, server, world, shots):
    page.goto(server + "/")
    page.wait_for_function("document.querySelector('#index-info').textContent.length > 0")
    transfer = page.evaluate_handle(
        """([b64, name]) => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
             const dt = new DataTransfer(); dt.items.add(new File([bytes], name, {type: 'image/png'})); return dt; }""",
        [base64.b64encode(world["dropped_png"]).decode(), "a-frame.png"])
    page.dispatch_event("body", "dragenter", {"dataTransfer": transfer})
    page.dispatch_event("body", "dragover", {"dataTransfer": transfer})
    assert page.is_visible("#drop-overlay")
    page.dispatch_event("body", "drop", {"dataTransfer": transfer})
    page.wait_for_selector(".result")
    assert page.is_hidden("#drop-overlay")
    assert page.text_content("#example-name") == "a-frame.png"
    cards = _cards(page)
    dropped = world["dropped"]
    assert cards[0]["name"] == dropped["file"], (dropped, cards[:3])
    assert max(float(cards[0]["start"]), dropped["start"]) < min(float(cards[0]["end"]), dropped["end"])
    page.screenshot(path=str(shots / "serve_page_example.png"))
    # the same card plays; the strip says it needs words
    page.locator(".result").first.click()
    page.wait_for_function("document.querySelector('#player') && document.querySelector('#player').readyState >= 1")
    assert "words" in page.text_content("#strip-note")


def test_filters_apply_and_travel_in_the_url(page, server, world, shots):
    caption = world["still_event"]["caption"]
    page.goto(server + "/")
    page.click("#filters summary")
    page.check("#kind-image")
    _search(page, caption)
    cards = _cards(page)
    assert cards and all(c["kind"] == "image" and c["modality"] == "image" for c in cards), cards
    assert cards[0]["name"] == "still.png"
    query = parse_qs(urlparse(page.url).query)
    assert query["kind"] == ["image"] and query["q"] == [caption]
    page.screenshot(path=str(shots / "serve_page_filters.png"))
    page.locator(".result").first.click()
    assert page.locator("#player").evaluate("p => p.tagName") == "IMG"
    assert page.is_hidden("#strip-box")

    # a shared link repeats the search: a glob on the name, in a narrow window
    page.set_viewport_size({"width": 420, "height": 900})
    page.goto(server + "/?q=" + caption.replace(" ", "+") + "&path=video_00%5B02%5D.mp4&k=5")
    page.wait_for_selector(".result")
    assert page.input_value("#path") == "video_00[02].mp4"
    names = {c["name"] for c in _cards(page)}
    assert names and names <= {"video_000.mp4", "video_002.mp4"}, names
    assert len(_cards(page)) <= 5
    page.screenshot(path=str(shots / "serve_page_narrow.png"), full_page=True)
    page.locator(".result").first.click()  # the player comes above the results in a narrow window
    page.wait_for_selector("#strip[data-spaces]")
    assert page.locator("#viewer").bounding_box()["y"] < page.locator(".result").first.bounding_box()["y"]
    page.screenshot(path=str(shots / "serve_page_narrow_playing.png"), full_page=True)


def test_sound_results_play_in_an_audio_element(page, server, world, shots):
    sounds = [r for r in world["rows"] if r["modality"] == "audio"]
    caption = sounds[0]["caption"]
    page.goto(server + "/?modality=audio")
    assert page.input_value("#modality") == "audio"
    _search(page, caption)
    first = _cards(page)[0]
    assert first["name"] == sounds[0]["file"] and first["kind"] == "audio" and first["modality"] == "audio", first
    start, end = float(first["start"]), float(first["end"])
    assert any(max(start, r["start"]) < min(end, r["end"]) for r in sounds if r["caption"] == caption), (first, sounds)
    page.locator(".result").first.click()
    assert page.locator("#player").evaluate("p => p.tagName") == "AUDIO"
    page.wait_for_function(
        """([s, e]) => { const p = document.querySelector('#player');
             return p.readyState >= 1 && p.currentTime >= s - 0.05 && p.currentTime <= e + 0.05; }""", arg=[start, end])
    page.wait_for_selector("#strip[data-spaces='1']")  # the sound space only: the search was in sound
    page.screenshot(path=str(shots / "serve_page_sound.png"))

    # sound tags (synth-ast): chips on the card, and a filter listing the index's labels
    from mmsearch.synth.vocabulary import _audio_class

    label = _audio_class(caption)
    chips = page.locator(".result").first.locator(".tag").all_text_contents()
    assert any(c.startswith(label + " ") for c in chips), chips
    page.click("#filters summary")
    assert label in page.eval_on_selector_all("#tag option", "os => os.map(o => o.value)")
    with page.expect_response(lambda r: "/api/search" in r.url and parse_qs(urlparse(r.url).query).get("tag") == [label]) as answer:
        page.select_option("#tag", label)
    results = answer.value.json()["results"]
    assert results and all(label in [t["label"] for t in r["tags"]] for r in results), results
    page.wait_for_function(  # the page shows that answer: every card carries the chip
        """(label) => { const cards = [...document.querySelectorAll('.result')];
             return cards.length > 0 && cards.every(c => [...c.querySelectorAll('.tag')].some(t => t.textContent.startsWith(label + ' '))); }""",
        arg=label)
    assert parse_qs(urlparse(page.url).query)["tag"] == [label]


def test_errors_and_empty_answers_are_shown(page, server):
    page.goto(server + "/?q=a+red+circle&min_duration=1000")  # no file lasts that long
    page.wait_for_selector("#no-results")
    assert "No results" in page.text_content("#status")
    page.fill("#min-duration", "")
    page.fill("#max-duration", "-1")
    page.dispatch_event("#max-duration", "change")
    page.wait_for_selector("#status.error")
    assert "max_duration" in page.text_content("#status")
    page.route("**/api/search?*", lambda route: route.fulfill(
        status=401, content_type="application/json", body='{"detail": "a token is required"}'))
    _search(page, "a blue circle")
    assert "open the address mmsearch serve printed" in page.text_content("#status.error")


def test_cards_show_the_caption_of_their_moment(page, tmp_path):
    """An index with captions (synth-coca): a picture card carries the caption of its moment, and the
    modality switch searches the captions, whose cards show the caption as the words that matched."""
    import mmsearch
    from mmsearch.synth import SynthConfig, generate_corpus

    config = SynthConfig(max_size=(320, 180), events_per_video=(2, 2), event_seconds=(4.0, 6.0), webm_probability=0.0)
    rows = [r for r in generate_corpus(tmp_path / "media", videos=1, audio=0, seed=SEED + 7, config=config) if r["modality"] == "video"]
    mmsearch.index_paths([tmp_path / "media"], tmp_path / "index", model="synth-clip", audio=False, speech=False, ocr=False,
                         captions="synth-coca", device="cpu")
    target = rows[0]
    with _serving(tmp_path / "index") as url:
        page.goto(url + "/?modality=video&q=" + target["caption"].replace(" ", "+"))
        page.wait_for_selector(".result")
        card = page.locator(".result").first
        assert card.get_attribute("data-modality") == "video"
        assert card.locator(".caption").text_content() == target["caption"]  # what synth-coca said the moment shows
        assert "caption" in page.eval_on_selector_all("#modality option", "os => os.map(o => o.value)")
        page.select_option("#modality", "caption")
        page.wait_for_selector(".result[data-modality='caption']")
        card = page.locator(".result").first
        assert card.locator(".words").text_content() == f"“{target['caption']}”" and card.locator(".caption").count() == 0


def test_rerank_switch_scores_the_best_moments_again_and_travels_in_the_url(page, server, world, shots):
    """The Re-rank switch asks the server for `rerank=true` (synth-itm, the matcher of a synth-clip index):
    each card shows the matcher's probability, the same as the API's; switched off, the plain answer returns."""
    import json
    from urllib.request import urlopen

    caption = world["target"]["caption"]
    with page.expect_request(lambda r: "/api/search" in r.url and "rerank=true" in r.url) as asked:
        page.goto(server + "/?q=" + caption.replace(" ", "+") + "&rerank=true&k=5")
    page.wait_for_selector(".result .match")
    assert page.is_checked("#rerank") and page.is_visible("#rerank")  # the filters open to show the switch
    shown = page.eval_on_selector_all(".result .match", "els => els.map(e => e.textContent)")
    answer = json.loads(urlopen(asked.value.url).read())
    assert answer["results"] and all(r["match_score"] is not None for r in answer["results"] if r["modality"] == "video")
    assert shown == [f"match {r['match_score']:.2f}" for r in answer["results"] if r["match_score"] is not None], (shown, answer)
    assert "re-ranked" in page.text_content("#status")
    page.screenshot(path=str(shots / "serve_page_rerank.png"))
    with page.expect_request(lambda r: "/api/search" in r.url and "rerank" not in r.url):
        page.uncheck("#rerank")
    page.wait_for_selector(".result")
    page.wait_for_function("() => !document.querySelector('#status').textContent.includes('re-ranked')")
    assert page.locator(".result .match").count() == 0 and "rerank" not in parse_qs(urlparse(page.url).query)
