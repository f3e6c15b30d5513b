"""``mmsearch serve`` (issue #16): the HTTP API over one index, its filters, its file and thumbnail
routes, its token, and ``mmsearch query`` answered by a running server. FastAPI's test client for the
routes; a real uvicorn process for the server a user starts."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import mmsearch  # noqa: E402
from mmsearch.api import query_answer  # noqa: E402
from mmsearch.config import IngestConfig  # noqa: E402
from mmsearch.filters import MediaFilter, allowed_media  # noqa: E402
from mmsearch.server import ADDRESS_FILE, ServeConfig, create_app  # noqa: E402

from conftest import BLUE, RED, write_video  # noqa: E402

URL_KEYS = ("media_url", "thumbnail_url")


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """Four synthetic videos and two sound files (synth-clip, synth-clap), a video whose container
    starts at 5 s (red for 2 s, then blue), a still and a video in which English is said."""
    from PIL import Image

    from mmsearch.demo import _talking_video
    from mmsearch.synth import SynthConfig, generate_corpus

    root = tmp_path_factory.mktemp("serve")
    media = root / "media"
    config = SynthConfig(max_size=(320, 180), events_per_video=(2, 3), event_seconds=(3.0, 6.0), gap_seconds=(1.0, 2.0),
                         audio_in_video_probability=0.0, events_per_audio=(2, 2))
    truth = generate_corpus(media, videos=4, audio=2, seed=2026, config=config)
    write_video(media / "clips" / "offset.mp4", [(RED, 2.0), (BLUE, 3.0)], start=5.0)
    still = np.zeros((120, 160, 3), np.uint8)
    still[:] = (40, 80, 230)
    Image.fromarray(still).save(media / "clips" / "still.png")
    truth += _talking_video(media / "talk.mp4")
    index = root / "index"
    mmsearch.index_paths([media], index, model="synth-clip", device="cpu", config=IngestConfig(commit_seconds=600))
    return {"root": root, "media": media, "index": index, "truth": truth}


@pytest.fixture(scope="module")
def client(library):
    app = create_app(ServeConfig(extra_hosts=("testserver",), index=library["index"], device="cpu"))
    with TestClient(app) as c:
        yield c


def _visual_query(library) -> str:
    return next(r["caption"] for r in library["truth"] if r["modality"] == "video")


def test_search_answers_with_the_json_of_query_json_and_urls(client, library):
    q = _visual_query(library)
    got = client.get("/api/search", params={"q": q, "k": 5}).json()
    idx = mmsearch.open_index(library["index"], device="cpu")
    expected = query_answer(idx, idx.search(q, k=5), text=q, k=5)
    assert [{k: v for k, v in r.items() if k not in URL_KEYS} for r in got["results"]] == expected["results"]
    assert got["query"] == expected["query"]
    for r in got["results"]:
        assert r["media_url"] == f"/media/{r['media_id']}#t={r['start']:.3f},{r['end']:.3f}"
        assert r["thumbnail_url"].startswith(f"/thumbnail/{r['media_id']}?t=")


def test_cli_json_is_the_servers_json_without_urls(client, library):
    q = _visual_query(library)
    env = {**os.environ, "MMSEARCH_INDEX": str(library["index"])}
    out = subprocess.run([sys.executable, "-m", "mmsearch.cli", "query", q, "-k", "4", "--json", "--local", "--device", "cpu"],
                         capture_output=True, text=True, env=env, check=True)
    served = client.get("/api/search", params={"q": q, "k": 4}).json()
    for r in served["results"]:
        for key in URL_KEYS:
            r.pop(key)
    assert json.loads(out.stdout) == served


def _passes(row: dict, where: MediaFilter) -> bool:
    return (
        (not where.kinds or row["kind"] in where.kinds)
        and (where.min_duration is None or row["duration"] >= where.min_duration)
        and (where.max_duration is None or row["duration"] <= where.max_duration)
        and (not where.languages or row["language"] in where.languages)
        and where.path_matches(row["path"])
    )


@pytest.mark.parametrize(
    "params, where",
    [
        ({"kind": "image"}, MediaFilter(kinds=("image",))),
        ({"path": "*/clips/*"}, MediaFilter(path="*/clips/*")),
        ({"path": "*.png"}, MediaFilter(path="*.png")),
        ({"language": "en"}, MediaFilter(languages=("en",))),
        ({"min_duration": 19, "kind": ["video", "audio"]}, MediaFilter(min_duration=19, kinds=("video", "audio"))),
    ],
)
def test_filters_apply_inside_the_search(client, library, params, where):
    """Every result passes the filter, and results come back although the unfiltered top-k holds
    none of them (a filter that cut the top-k afterwards would return nothing)."""
    q = _visual_query(library)
    idx = mmsearch.open_index(library["index"], device="cpu")
    rows = {int(r["media_id"]): r for r in mmsearch.store.table_to_rows(idx.snapshot.media)}
    allowed, _ = allowed_media(idx.snapshot.media, where)
    assert len(allowed) and set(allowed) == {m for m, r in rows.items() if _passes(r, where)}
    unfiltered = client.get("/api/search", params={"q": q, "k": 2, "videos": 2}).json()["results"]
    got = client.get("/api/search", params={"q": q, "k": 2, "videos": 2, **params}).json()
    assert got["results"], got
    assert all(r["media_id"] in set(allowed.tolist()) for r in got["results"])
    assert all(_passes({**rows[r["media_id"]], "path": r["path"]}, where) for r in got["results"])
    if not any(r["media_id"] in set(allowed.tolist()) for r in unfiltered):
        assert got["results"]  # found inside the search, not cut from the unfiltered top 2
    assert got["query"]["filter"] == where.to_dict()


def test_modified_date_filter_and_its_bad_value(client, library):
    q = _visual_query(library)
    idx = mmsearch.open_index(library["index"], device="cpu")
    mtimes = sorted(idx.snapshot.media.column("mtime").to_pylist())
    cut = mtimes[-1] + 1
    assert client.get("/api/search", params={"q": q, "modified_after": str(cut)}).json()["results"] == []
    assert client.get("/api/search", params={"q": q, "modified_before": str(cut)}).json()["results"]
    bad = client.get("/api/search", params={"q": q, "modified_after": "last tuesday"})
    assert bad.status_code == 400 and "modified-after" in bad.json()["detail"]


def test_filter_values_read_as_a_user_means_them(client, library):
    """A date alone is local time and "before" includes that day; kinds and languages may be
    comma-separated; a relative path prefix is refused (the server cannot know the client's folder),
    and so is a date range that nothing could pass."""
    import datetime as dt

    from mmsearch.errors import UsageError
    from mmsearch.filters import media_filter

    day = dt.date(2021, 7, 1)
    before = media_filter(modified_before=day.isoformat()).modified_before
    noon = dt.datetime(2021, 7, 1, 12, 30).timestamp()
    assert before >= noon and before < dt.datetime(2021, 7, 2).timestamp()
    assert media_filter(modified_after=day.isoformat()).modified_after == dt.datetime(2021, 7, 1).timestamp()
    assert media_filter(kinds="video,image", languages=["EN", "de"]) == MediaFilter(kinds=("video", "image"), languages=("en", "de"))
    for bad in ({"path": "media/clips/"}, {"modified_after": "2021-07-02", "modified_before": "2021-07-01"},
                {"modified_after": "nan"}, {"kinds": "video,hologram"}):
        with pytest.raises(UsageError):
            media_filter(**bad)
    q = _visual_query(library)
    both = client.get("/api/search", params={"q": q, "kind": "image,audio", "k": 20}).json()["results"]
    assert both and {r["modality"] for r in both} <= {"image", "audio"}
    relative = client.get("/api/search", params={"q": q, "path": "media/clips/"})
    assert relative.status_code == 400 and "absolute" in relative.json()["detail"]
    idx = mmsearch.open_index(library["index"], device="cpu")
    assert idx.search(q, k=3, where={"kinds": "image"}) == idx.search(q, k=3, where=MediaFilter(kinds=("image",)))
    with pytest.raises(UsageError):
        idx.search(q, k=0)


def test_a_filter_passing_many_media_is_masked_in_the_index_with_the_same_answer(client, library, monkeypatch):
    """Few allowed rows are scored exactly; many are searched in the FAISS index with the rest masked:
    both give the same moments."""
    import mmsearch.indexes as indexes

    q = _visual_query(library)
    exact = client.get("/api/search", params={"q": q, "k": 5, "videos": 3, "kind": "video"}).json()["results"]
    monkeypatch.setattr(indexes, "MASK_EXACT", -1)
    masked = client.get("/api/search", params={"q": q, "k": 5, "videos": 3, "kind": "video"}).json()["results"]
    assert [(r["media_id"], r["start"], r["end"]) for r in masked] == [(r["media_id"], r["start"], r["end"]) for r in exact]
    assert len({r["media_id"] for r in exact}) == 3  # three videos ranked, each with its moments


def test_media_is_served_with_ranges_and_its_content_type(client, library):
    path = library["media"] / "clips" / "offset.mp4"
    data = path.read_bytes()
    media_id = mmsearch.open_index(library["index"], device="cpu").media_ids()[str(path)]
    whole = client.get(f"/media/{media_id}")
    assert whole.status_code == 200 and whole.content == data and whole.headers["content-type"] == "video/mp4"
    part = client.get(f"/media/{media_id}", headers={"Range": "bytes=100-299"})
    assert part.status_code == 206 and part.content == data[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(data)}"
    tail = client.get(f"/media/{media_id}", headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    assert client.get(f"/media/{media_id}", headers={"Range": f"bytes={len(data)}-"}).status_code == 416


@pytest.mark.parametrize(
    "url",
    ["/media/999999", "/media/-1", "/media/..%2F..%2Fetc%2Fpasswd", "/media/1%2F..%2F..%2Fetc%2Fpasswd", "/media/%2Fetc%2Fpasswd",
     "/media/../../etc/passwd", "/thumbnail/999999?t=1", "/thumbnail/..%2Fmanifest.json", "/media/１"],
)
def test_unknown_ids_and_traversal_are_404(client, url):
    response = client.get(url)
    assert response.status_code == 404, (url, response.status_code, response.text[:200])
    assert b"root:" not in response.content


def test_thumbnail_shows_the_picture_at_that_second_from_the_media_start(client, library):
    """The video's container starts at 5 s: red is on screen 0-2 s as a player counts, blue after."""
    from PIL import Image

    media_id = mmsearch.open_index(library["index"], device="cpu").media_ids()[str(library["media"] / "clips" / "offset.mp4")]
    colours = {}
    for t in (1.0, 3.5):
        response = client.get(f"/thumbnail/{media_id}", params={"t": t})
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        im = Image.open(io.BytesIO(response.content))
        assert im.format == "JPEG" and min(im.size) <= 240
        colours[t] = np.median(np.asarray(im.convert("RGB"), np.float64).reshape(-1, 3), axis=0)  # not the stripe
    assert colours[1.0][0] > 150 and colours[1.0][2] < 100, colours  # red
    assert colours[3.5][2] > 150 and colours[3.5][0] < 100, colours  # blue
    cached = list((library["index"] / "cache" / "thumbnails").glob(f"{media_id}-*.jpg"))
    assert len(cached) == 2
    again = client.get(f"/thumbnail/{media_id}", params={"t": 1.0})
    assert again.content == cached[0].read_bytes() or again.content == cached[1].read_bytes()


def test_thumbnails_of_a_still_and_a_sound_are_jpegs(client, library):
    from PIL import Image

    idx = mmsearch.open_index(library["index"], device="cpu")
    kinds = {}
    for r in mmsearch.store.table_to_rows(idx.snapshot.media):
        kinds.setdefault(r["kind"], r["media_id"])
    for kind in ("image", "audio"):
        response = client.get(f"/thumbnail/{kinds[kind]}", params={"t": 1.0})
        assert response.status_code == 200, (kind, response.text[:200])
        assert Image.open(io.BytesIO(response.content)).format == "JPEG"


def test_the_thumbnail_cache_is_bounded(library, tmp_path):
    from mmsearch.server import ThumbnailCache

    cache = ThumbnailCache(tmp_path / "thumbs", limit_bytes=6000)
    video = str(library["media"] / "clips" / "offset.mp4")
    for i in range(40):
        cache.get(1, i * 0.1, video, "video")
    total = sum(p.stat().st_size for p in (tmp_path / "thumbs").glob("*.jpg"))
    assert total <= 6000 + 40 * 2000  # trimmed every 32 writes; never the 40 files' whole size
    assert len(list((tmp_path / "thumbs").glob("*.jpg"))) < 40


def test_info_is_what_info_json_says(client, library):
    env = {**os.environ, "MMSEARCH_INDEX": str(library["index"])}
    out = subprocess.run([sys.executable, "-m", "mmsearch.cli", "info", "--json"], capture_output=True, text=True, env=env, check=True)
    assert client.get("/api/info").json() == json.loads(out.stdout)


def test_upload_an_image_finds_where_it_appears(client, library):
    from PIL import Image

    buf = io.BytesIO()
    Image.open(library["media"] / "clips" / "still.png").save(buf, format="PNG")
    response = client.post("/api/search", params={"k": 3}, files={"file": ("probe.png", buf.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["query"]["image"] == "probe.png" and answer["query"]["modality"] == "video"
    assert Path(answer["results"][0]["path"]).name == "still.png"


def test_uploads_of_the_wrong_type_or_size_are_refused_clearly(library):
    app = create_app(ServeConfig(extra_hosts=("testserver",), index=library["index"], device="cpu", max_upload_bytes=1000))
    with TestClient(app) as c:
        wrong = c.post("/api/search", files={"file": ("notes.txt", b"hello", "text/plain")})
        assert wrong.status_code == 415 and "notes.txt" in wrong.json()["detail"]
        big = c.post("/api/search", files={"file": ("big.png", b"\x89PNG" + b"0" * 5000, "image/png")})
        assert big.status_code == 413 and "MiB" in big.json()["detail"]

        def chunks():  # no Content-Length: counted as it arrives
            yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n"
            for _ in range(10):
                yield b"0" * 500
            yield b"\r\n--b--\r\n"

        chunked = c.post("/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert chunked.status_code == 413
        broken = c.post("/api/search", files={"file": ("broken.png", b"\x89PNG not really", "image/png")})
        detail = broken.json()["detail"]
        assert broken.status_code == 415 and "broken.png" in detail and "mmsearch-upload" not in detail  # the upload's name
        both = c.post("/api/search", params={"q": "blue"}, files={"file": ("still.png", b"\x89PNG", "image/png")})
        assert both.status_code == 400 and "not both" in both.json()["detail"]  # the text was left out without a word


def test_bad_queries_are_4xx_with_a_reason(client):
    assert client.get("/api/search", params={"q": ""}).status_code == 422
    assert client.get("/api/search", params={"q": '""'}).status_code == 400
    assert client.get("/api/search", params={"q": "x", "k": 0}).status_code == 422
    assert client.get("/api/search", params={"q": "x", "modality": "smell"}).status_code == 422
    hologram = client.get("/api/search", params={"q": "x", "kind": "hologram"})
    assert hologram.status_code == 400 and "hologram" in hologram.json()["detail"]
    assert client.get("/api/search", params={"q": "x", "min_duration": 5, "max_duration": 1}).status_code == 400
    assert client.get("/api/timeline", params={"q": "x", "media": 999999}).status_code == 404


def test_timeline_scores_every_segment_of_the_file(client, library):
    idx = mmsearch.open_index(library["index"], device="cpu")
    media_id = idx.media_ids()[str(library["media"] / "talk.mp4")]
    body = client.get("/api/timeline", params={"q": "the story about the boat", "media": media_id}).json()
    spaces = body["spaces"]
    assert {"visual", "speech"} <= set(spaces)
    starts, _, _ = idx.snapshot.spaces["visual"].segments_of(media_id)
    assert len(spaces["visual"]["score"]) == len(starts)
    speech = spaces["speech"]
    best = int(np.argmax(speech["score"]))
    boat = next(r for r in library["truth"] if r["modality"] == "speech")
    assert speech["start"][best] <= boat["start"] + 0.5 and speech["end"][best] >= boat["start"]


def test_without_a_token_only_this_machines_names_are_answered_and_other_sites_cannot_post(library):
    """DNS rebinding (another site's name resolved to 127.0.0.1) sends that name as Host; a page of
    another site posting a form sends its Origin."""
    with TestClient(create_app(ServeConfig(index=library["index"], device="cpu")), base_url="http://127.0.0.1:8321") as c:
        assert c.get("/api/health").status_code == 200
        assert c.get("/api/health", headers={"host": "localhost:8321"}).status_code == 200
        assert c.get("/api/health", headers={"host": "[::1]:8321"}).status_code == 200
        rebound = c.get("/api/search", params={"q": "red"}, headers={"host": "attacker.example:8321"})
        assert rebound.status_code == 400 and "attacker" not in rebound.text
        png = (library["media"] / "clips" / "still.png").read_bytes()
        foreign = c.post("/api/search", files={"file": ("x.png", png, "image/png")}, headers={"origin": "http://evil.example"})
        assert foreign.status_code == 403
        own = c.post("/api/search", files={"file": ("x.png", png, "image/png")}, headers={"origin": "http://127.0.0.1:8321"})
        assert own.status_code == 200


def test_a_file_replaced_since_indexing_is_not_served(library, tmp_path):
    """Replaced by other bytes, or by a link to another file (/etc/passwd): 404, not what is there now."""
    media = tmp_path / "media"
    write_video(media / "a.mp4", [(RED, 2.0)])
    write_video(media / "b.mp4", [(BLUE, 2.0)])
    index = tmp_path / "index"
    mmsearch.index_paths([media], index, model="synth-clip", device="cpu", audio=False, speech=False, ocr=False, freeze_text=False)
    ids = mmsearch.open_index(index, device="cpu").media_ids()
    with TestClient(create_app(ServeConfig(extra_hosts=("testserver",), index=index, device="cpu"))) as c:
        assert c.get(f"/media/{ids[str(media / 'a.mp4')]}").status_code == 200
        (media / "a.mp4").unlink()
        (media / "a.mp4").symlink_to("/etc/passwd")
        swapped = c.get(f"/media/{ids[str(media / 'a.mp4')]}")
        assert swapped.status_code == 404 and b"root:" not in swapped.content
        assert c.get(f"/thumbnail/{ids[str(media / 'a.mp4')]}").status_code == 404
        with open(media / "b.mp4", "ab") as f:
            f.write(b"appended")
        assert c.get(f"/media/{ids[str(media / 'b.mp4')]}").status_code == 404


def test_odd_uploads_cost_little_and_are_refused_or_answered(client, library):
    """A 100000x1 PNG of a few bytes is not scaled up to gigabytes; a picture of too many pixels is
    refused from its header; a file without an extension is read as what the client says it is."""
    import resource

    from PIL import Image

    banner = io.BytesIO()
    Image.new("1", (100000, 1)).save(banner, format="PNG")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    thin = client.post("/api/search", files={"file": ("banner.png", banner.getvalue(), "image/png")})
    assert thin.status_code == 200 and time.perf_counter() - started < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500 * 1024  # KiB: under 500 MB more
    huge = io.BytesIO()
    Image.new("1", (8000, 8000)).save(huge, format="PNG")
    assert client.post("/api/search", files={"file": ("huge.png", huge.getvalue(), "image/png")}).status_code == 413
    still = (library["media"] / "clips" / "still.png").read_bytes()
    bare = client.post("/api/search", params={"example": "image"}, files={"file": ("noext", still, "application/octet-stream")})
    assert bare.status_code == 200 and Path(bare.json()["results"][0]["path"]).name == "still.png"
    assert client.get("/api/search", params={"q": "x", "min_duration": "inf"}).status_code == 422
    edge = client.get("/api/search", params={"q": "x", "modified_after": "0001-01-01", "modified_before": "9999-12-31"})
    assert edge.status_code == 200 and edge.json()["results"]
    assert client.head(f"/media/{bare.json()['results'][0]['media_id']}").status_code == 200


def test_an_index_deleted_under_the_server_is_a_503_that_says_so_and_health_tells(library, tmp_path, monkeypatch):
    """`rm -rf` of the index a server answers from: each request says in one line that it is gone (503), health
    too, not a 500 from a missing .npy; put back, it is answered again."""
    import shutil

    with _serving_a_copy(library, tmp_path, monkeypatch) as (copy, c, q, good):
        shutil.move(copy, tmp_path / "moved")
        for url in ("/api/search?q=" + q, "/api/health", "/api/info"):
            gone = c.get(url)
            assert gone.status_code == 503 and "is gone since this server opened it" in gone.json()["detail"], (url, gone.text)
        shutil.move(tmp_path / "moved", copy)
        assert c.get("/api/search", params={"q": q}).json()["results"] == good and c.get("/api/health").status_code == 200
        for data in (copy / "data").glob("*.npy"):  # its files deleted, the manifest left: still one line, 503
            data.unlink()
        broken = c.get("/api/timeline", params={"q": q, "media": 0})
        assert broken.status_code == 503 and "cannot read or write" in broken.json()["detail"], broken.text


@contextlib.contextmanager
def _serving_a_copy(library, tmp_path, monkeypatch):
    """A server over a copy of the library's index that looks for new generations at every request:
    (the copy's folder, its client, a visual query, that query's results)."""
    import shutil

    import mmsearch.server as server

    monkeypatch.setattr(server, "RELOAD_SECONDS", 0.0)
    copy = tmp_path / "index"
    shutil.copytree(library["index"], copy, ignore=shutil.ignore_patterns("server.json"))
    with TestClient(create_app(ServeConfig(extra_hosts=("testserver",), index=copy, device="cpu"))) as c:
        q = _visual_query(library)
        yield copy, c, q, c.get("/api/search", params={"q": q}).json()["results"]


def test_a_generation_that_does_not_open_leaves_the_last_good_one_serving(library, tmp_path, monkeypatch):
    import shutil

    with _serving_a_copy(library, tmp_path, monkeypatch) as (copy, c, q, good):
        manifest = (copy / "manifest.json").read_text()
        (copy / "manifest.json").write_text(manifest[: len(manifest) // 2])  # a broken commit
        assert c.get("/api/search", params={"q": q}).json()["results"] == good
        assert c.get("/api/health").status_code == 200
        thumbs = copy / "cache" / "thumbnails"
        shutil.rmtree(thumbs, ignore_errors=True)
        thumbs.parent.mkdir(parents=True, exist_ok=True)
        thumbs.write_text("not a folder")  # the cache cannot be written: thumbnails are still answered
        assert c.get(good[0]["thumbnail_url"]).status_code == 200


def test_a_token_is_required_when_set(library):
    app = create_app(ServeConfig(extra_hosts=("testserver",), index=library["index"], device="cpu", token="s3cret"))
    with TestClient(app) as c:
        for url in ("/api/info", "/api/search?q=red", "/api/health", "/media/1", "/thumbnail/1", "/openapi.json", "/docs"):
            assert c.get(url).status_code == 401, url
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200  # no data: it says what to do
        assert c.get("/api/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        page = c.get("/?token=s3cret&q=a+red+circle", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/?q=a+red+circle"  # the link's search kept
        assert "httponly" in page.headers["set-cookie"].lower()
        assert c.get("/api/info").status_code == 200  # the cookie the page set


def test_a_file_whose_name_is_not_utf8_is_found_served_and_filtered(tmp_path):
    media = tmp_path / "media"
    write_video(media / "plain.mp4", [(RED, 2.0)])
    odd = os.path.join(os.fsencode(media), b"caf\xe9.mp4")
    os.rename(os.fsencode(media / "plain.mp4"), odd)
    write_video(media / "other.mp4", [(BLUE, 2.0)])
    index = tmp_path / "index"
    mmsearch.index_paths([media], index, model="synth-clip", device="cpu", audio=False, speech=False, ocr=False)
    with TestClient(create_app(ServeConfig(extra_hosts=("testserver",), index=index, device="cpu"))) as c:
        hits = c.get("/api/search", params={"q": "red", "path": "*caf*"}).json()["results"]
        assert len(hits) == 1 and hits[0]["path"].endswith("caf\\xe9.mp4") and "path_bytes" in hits[0]
        served = c.get(f"/media/{hits[0]['media_id']}")
        assert served.status_code == 200 and served.content == open(odd, "rb").read()
        assert c.get(hits[0]["thumbnail_url"]).status_code == 200


def test_a_new_generation_is_picked_up_while_serving(library, tmp_path, monkeypatch):
    import shutil

    import mmsearch.server as server

    monkeypatch.setattr(server, "RELOAD_SECONDS", 0.0)
    media = tmp_path / "media"
    write_video(media / "first.mp4", [(RED, 3.0)])
    index = tmp_path / "index"
    mmsearch.index_paths([media], index, model="synth-clip", device="cpu", audio=False, speech=False, ocr=False)
    with TestClient(create_app(ServeConfig(extra_hosts=("testserver",), index=index, device="cpu"))) as c:
        before = c.get("/api/health").json()["generation"]
        assert {Path(r["path"]).name for r in c.get("/api/search", params={"q": "a blue screen"}).json()["results"]} == {"first.mp4"}
        shutil.copy(library["media"] / "clips" / "offset.mp4", media / "second.mp4")
        mmsearch.index_paths([media], index, device="cpu", audio=False, speech=False, ocr=False)
        assert c.get("/api/health").json()["generation"] > before
        found = {Path(r["path"]).name for r in c.get("/api/search", params={"q": "a blue screen"}).json()["results"]}
        assert found == {"first.mp4", "second.mp4"}


@pytest.mark.slow
def test_the_openapi_schema_fuzzed_gives_no_server_error(library):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, settings

    app = create_app(ServeConfig(extra_hosts=("testserver",), index=library["index"], device="cpu"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    from hypothesis import given

    failures, calls = [], []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(op.as_strategy())
        def check(case):  # noqa: ANN001
            response = case.call()
            calls.append((case.method, case.path, response.status_code))
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, case.query, response.status_code, response.text[:200]))

        check()
    assert not failures, failures[:5]
    tried = {(method, path) for method, path, _ in calls}
    assert {("GET", "/api/search"), ("POST", "/api/search"), ("GET", "/media/{media_id}"), ("GET", "/api/timeline")} <= tried
    assert sum(status == 200 for _, _, status in calls) >= 5  # not only refusals


# ------------------------------------------------------------------------------- a real server process
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict, ready: Path | None, timeout: float = 90.0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "mmsearch.cli", "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stderr.read()}")
        try:
            if ready is not None and json.loads(ready.read_text())["pid"] == proc.pid:
                return proc
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("serve did not start")


@pytest.mark.slow
def test_query_goes_to_a_running_server_and_prints_the_same(library):
    """``mmsearch serve`` in a real uvicorn process: its address is recorded in the index, ``mmsearch
    query`` sends its query there (the log says so) and prints what an in-process query prints;
    after the server stops, the record is gone and the query runs in-process again."""
    import httpx

    env = {**os.environ, "MMSEARCH_INDEX": str(library["index"]), "MMSEARCH_LOG": "INFO"}
    port = _free_port()
    record = library["index"] / ADDRESS_FILE
    proc = _start(["--port", str(port), "--device", "cpu"], env, record)
    try:
        assert json.loads(record.read_text())["url"] == f"http://127.0.0.1:{port}"
        assert oct(record.stat().st_mode & 0o777) == "0o600"
        q = _visual_query(library)
        args = [sys.executable, "-m", "mmsearch.cli", "query", q, "-k", "3", "--json", "--kind", "video"]
        remote = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
        assert f"answered by the server at http://127.0.0.1:{port}" in remote.stderr
        local = subprocess.run([*args, "--local"], capture_output=True, text=True, env=env, check=True)
        assert "answered by the server" not in local.stderr
        assert json.loads(remote.stdout) == json.loads(local.stdout)
        table = subprocess.run(args[:-3] + ["--path", "*.png"], capture_output=True, text=True, env=env, check=True)
        assert "still.png" in table.stdout
        image = subprocess.run([sys.executable, "-m", "mmsearch.cli", "query", "--image", str(library["media"] / "clips" / "still.png"),
                                "--json", "-k", "2"], capture_output=True, text=True, env=env, check=True)
        assert "answered by the server" in image.stderr
        assert json.loads(image.stdout)["query"]["image"] == str(library["media"] / "clips" / "still.png")
        assert httpx.get(f"http://127.0.0.1:{port}/api/health").json()["index"] == str(library["index"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not record.exists()
    after = subprocess.run([sys.executable, "-m", "mmsearch.cli", "query", _visual_query(library), "-k", "1", "--json"],
                           capture_output=True, text=True, env=env, check=True)
    assert "answered by the server" not in after.stderr and json.loads(after.stdout)["results"]


@pytest.mark.slow
def test_one_server_per_index_and_a_busy_port_are_refused_clearly(library):
    env = {**os.environ, "MMSEARCH_INDEX": str(library["index"])}
    record = library["index"] / ADDRESS_FILE
    port = _free_port()
    proc = _start(["--port", str(port), "--device", "cpu"], env, record)
    try:
        again = subprocess.run([sys.executable, "-m", "mmsearch.cli", "serve", "--port", str(_free_port())],
                               capture_output=True, text=True, env=env, timeout=120)
        assert again.returncode == 2 and "already runs" in again.stderr and "Traceback" not in again.stderr
        assert json.loads(record.read_text())["pid"] == proc.pid  # the first one's record kept
        other = library["root"] / "other-index"
        mmsearch.index_paths([library["media"] / "clips"], other, model="synth-clip", device="cpu", audio=False,
                             speech=False, ocr=False, freeze_text=False)
        busy = subprocess.run([sys.executable, "-m", "mmsearch.cli", "serve", "--index", str(other), "--port", str(port)],
                              capture_output=True, text=True, env=env, timeout=120)
        assert busy.returncode == 2 and f"127.0.0.1:{port}" in busy.stderr and "Traceback" not in busy.stderr
        empty = subprocess.run([sys.executable, "-m", "mmsearch.cli", "query", '""'], capture_output=True, text=True, env=env)
        local = subprocess.run([sys.executable, "-m", "mmsearch.cli", "query", '""', "--local"], capture_output=True, text=True, env=env)
        assert empty.returncode == local.returncode == 2 and empty.stderr == local.stderr  # the same words either way
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_a_recorded_address_where_something_else_answers_is_not_trusted(library, tmp_path):
    """server.json of this index naming a live process whose port serves something else (a plain
    HTTP server, or a recorded server that hangs): mmsearch query answers in-process, quickly."""
    port = _free_port()
    other = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = library["index"] / ADDRESS_FILE
    try:
        time.sleep(1.0)
        record.write_text(json.dumps({"url": f"http://127.0.0.1:{port}", "token": "é", "pid": other.pid,
                                      "index": str(library["index"])}))
        env = {**os.environ, "MMSEARCH_INDEX": str(library["index"]), "MMSEARCH_LOG": "INFO"}
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "mmsearch.cli", "query", _visual_query(library), "--json", "-k", "2"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0 and "answered by the server" not in out.stderr, out.stderr[-500:]
        assert json.loads(out.stdout)["results"] and time.perf_counter() - started < 60
    finally:
        record.unlink(missing_ok=True)
        other.terminate()
        other.wait(timeout=30)


@pytest.mark.slow
def test_beyond_loopback_a_token_is_generated_and_required(library, tmp_path):
    import httpx

    port = _free_port()
    env = {**os.environ, "MMSEARCH_INDEX": str(library["index"])}
    record = library["index"] / ADDRESS_FILE
    proc = _start(["--host", "0.0.0.0", "--port", str(port), "--device", "cpu"], env, record)
    try:
        token = json.loads(record.read_text())["token"]
        assert token and len(token) >= 24
        assert httpx.get(f"http://127.0.0.1:{port}/api/info").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/api/info", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"?token={token}" in out  # the address to open, printed


@pytest.mark.slow
def test_cli_filters_and_their_errors(library):
    env = {**os.environ, "MMSEARCH_INDEX": str(library["index"])}
    base = [sys.executable, "-m", "mmsearch.cli", "query", _visual_query(library), "--json", "--local", "--device", "cpu"]
    under = subprocess.run([*base, "--path", str(library["media"] / "clips") + "/"], capture_output=True, text=True, env=env,
                           check=True, cwd=library["root"])
    paths = [r["path"] for r in json.loads(under.stdout)["results"]]
    assert paths and all(p.startswith(str(library["media"] / "clips") + "/") for p in paths)
    relative = subprocess.run([*base, "--path", "media/clips/"], capture_output=True, text=True, env=env, check=True, cwd=library["root"])
    assert json.loads(relative.stdout)["results"] == json.loads(under.stdout)["results"]
    bad = subprocess.run([*base, "--modified-after", "yesterday-ish"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "modified-after" in bad.stderr and "Traceback" not in bad.stderr
    kind = subprocess.run([*base, "--kind", "sculpture"], capture_output=True, text=True, env=env)
    assert kind.returncode == 2 and "sculpture" in kind.stderr and "Traceback" not in kind.stderr
