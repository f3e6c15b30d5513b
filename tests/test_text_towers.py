"""Text towers frozen for queries (issue #16, "queries that answer at once"): a query in a fresh process
loads TorchScript and a tokenizer, never open_clip or sentence-transformers, and answers exactly as
the full encoders do."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mmsearch
from mmsearch.api import TEXT_TOWERS, freeze_text_towers, tower_dir
from mmsearch.encoders import create_encoder, resolve_spec
from mmsearch.encoders.frozen import FrozenTextTower, freeze, load_frozen

from conftest import BLUE, GREEN, RED, write_video

QUERIES = ["a red circle", "A BLUE SQUARE on the left", "  the story about the boat  ", "x", "long " * 200]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    from mmsearch.demo import _talking_video

    root = tmp_path_factory.mktemp("towers")
    write_video(root / "media" / "a.mp4", [(RED, 3.0), (GREEN, 3.0)])
    write_video(root / "media" / "b.mp4", [(BLUE, 4.0)])
    _talking_video(root / "media" / "talk.mp4")
    index = root / "index"
    mmsearch.index_paths([root / "media"], index, model="synth-clip", device="cpu", audio=False)
    return index


def test_indexing_freezes_the_towers_a_text_query_reads(library):
    spaces = json.loads((library / "manifest.json").read_text())["spaces"]
    for space in ("visual", "speech", "text"):
        identity = spaces[space]["encoder"]["identity"]
        assert isinstance(load_frozen(tower_dir(library, identity), identity), FrozenTextTower), space
    assert len(list((library / TEXT_TOWERS).iterdir())) == 2  # speech and text share the sentence model's tower
    sentence = json.loads((tower_dir(library, spaces["speech"]["encoder"]["identity"]) / "tower.json").read_text())
    assert sentence["runtime"] == "onnx" and json.loads((tower_dir(library, spaces["visual"]["encoder"]["identity"])
                                                        / "tower.json").read_text())["runtime"] == "torchscript"
    assert freeze_text_towers(library) == {"visual": True, "speech": True, "text": True}  # already there: kept


def test_queries_through_the_towers_answer_as_the_encoders_do(library, monkeypatch):
    towers = mmsearch.open_index(library, device="cpu")
    assert isinstance(towers.text_encoder("visual"), FrozenTextTower)
    monkeypatch.setenv("MMSEARCH_TEXT_TOWERS", "0")
    full = mmsearch.open_index(library, device="cpu")
    assert not isinstance(full.text_encoder("visual"), FrozenTextTower)
    for space in ("visual", "speech"):
        got, want = towers.embed_queries(text=QUERIES, space=space), full.embed_queries(text=QUERIES, space=space)
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-5, space
    for q in ("a red circle", "the story about the boat", '"harbour lights"'):
        assert towers.search(q, k=5) == full.search(q, k=5)


def test_a_fresh_process_queries_without_open_clip_or_sentence_transformers(library):
    code = (
        "import sys, json, mmsearch\n"
        f"idx = mmsearch.open_index({str(library)!r}, device='cpu')\n"
        "hits = idx.search('the story about the boat', k=3)\n"
        "heavy = [m for m in ('open_clip', 'sentence_transformers', 'transformers', 'torchvision', 'torch._dynamo') if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'top': hits[0].path}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["heavy"] == [] and answer["top"].endswith("talk.mp4")


def test_a_tower_of_another_encoder_or_a_damaged_one_is_not_used(library, tmp_path):
    spaces = json.loads((library / "manifest.json").read_text())["spaces"]
    identity = spaces["visual"]["encoder"]["identity"]
    assert load_frozen(tower_dir(library, identity), {**identity, "pretrained": "sha256:other"}) is None
    import shutil

    copy = tmp_path / "index"
    shutil.copytree(library, copy)
    (tower_dir(copy, identity) / "tower.pt").write_bytes(b"not a TorchScript archive")
    idx = mmsearch.open_index(copy, device="cpu")
    assert not isinstance(idx.text_encoder("visual"), FrozenTextTower)  # the full encoder answers instead
    assert idx.search("a red circle", k=3) == mmsearch.open_index(library, device="cpu").search("a red circle", k=3)
    assert freeze_text_towers(copy)["visual"] is True  # and the next freeze mends it
    assert isinstance(mmsearch.open_index(copy, device="cpu").text_encoder("visual"), FrozenTextTower)


def test_an_unfaithful_tower_is_never_written(tmp_path):
    encoder = create_encoder(resolve_spec("synth-clip", None, family="clip"), device="cpu")

    class Drifting:  # an encoder whose text vectors the traced tower would not reproduce
        def __init__(self, inner):
            self.inner, self.device, self.dim, self.tokenizer, self.model = inner, inner.device, inner.dim, inner.tokenizer, inner.model

        def identity(self):
            return self.inner.identity()

        def encode_text(self, texts):
            out = self.inner.encode_text(texts)
            return out + 0.01 * np.sign(out)

    assert freeze(Drifting(encoder), tmp_path / "tower") is False
    assert not (tmp_path / "tower").exists() and not list(tmp_path.glob(".tmp-*"))
    assert freeze(encoder, tmp_path / "tower") is True


def test_the_sentence_tower_reads_as_sentence_transformers_does(tmp_path):
    """Real all-MiniLM-L6-v2 weights: lower-casing, stripping, padding and truncation at 256 tokens."""
    encoder = create_encoder(resolve_spec(None, None, family="sentence"), device="cpu")
    assert freeze(encoder, tmp_path / "minilm")
    tower = load_frozen(tmp_path / "minilm", encoder.identity())
    assert tower.meta["runtime"] == "onnx"
    texts = ["Where does Grandpa tell the STORY?", "  padded  ", "word " * 600, "東京", "a"]
    assert np.abs(tower.encode_text(texts) - encoder.encode_text(texts)).max() < 1e-5


def test_a_tower_damaged_inside_is_caught_by_its_check_vectors(library, tmp_path):
    """Bytes flipped inside the weights (TorchScript does not check its archive's CRCs) or a changed
    length in tower.json still load, but give other vectors: the check at load refuses the tower."""
    import shutil
    import struct
    import zipfile

    copy = tmp_path / "index"
    shutil.copytree(library, copy)
    spaces = json.loads((copy / "manifest.json").read_text())["spaces"]
    visual = tower_dir(copy, spaces["visual"]["encoder"]["identity"])
    with zipfile.ZipFile(visual / "tower.pt") as archive:
        biggest = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(visual / "tower.pt", "r+b") as f:
        f.seek(biggest.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        middle = biggest.header_offset + 30 + name_len + extra_len + biggest.file_size // 2
        f.seek(middle)
        chunk = bytearray(f.read(256))
        f.seek(middle)
        f.write(bytes(b ^ 0x40 for b in chunk))
    sentence = tower_dir(copy, spaces["speech"]["encoder"]["identity"])
    meta = json.loads((sentence / "tower.json").read_text())
    (sentence / "tower.json").write_text(json.dumps({**meta, "max_length": 8}))
    idx = mmsearch.open_index(copy, device="cpu")
    assert not isinstance(idx.text_encoder("visual"), FrozenTextTower)
    assert not isinstance(idx.text_encoder("speech"), FrozenTextTower)
    original = mmsearch.open_index(library, device="cpu")
    for q in ("a red circle", "the story about the boat"):
        assert idx.search(q, k=5) == original.search(q, k=5)
