"""What is said and what is written, end to end (issue #15): speech (real Whisper base), subtitles and
on-screen text (real PP-OCRv4) indexed as spaces of words, found by meaning and by exact words.

The voices are espeak-ng sentences shipped in mmsearch/assets/speech (so no espeak-ng is needed here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # real Whisper base and PP-OCRv4 on talking videos

import mmsearch
from mmsearch.errors import UsageError
from mmsearch.metrics import temporal_iou
from mmsearch.textsearch import LexicalIndex, phrases_of

from mmsearch.synth.talking import VOICES as SPEECH
from mmsearch.synth.talking import onset_seconds as onset
from mmsearch.synth.talking import packaged_voice


def voice(name: str) -> np.ndarray:
    return packaged_voice(name)[0]


BOAT_AT, UMBRELLA_AT, EXAM_AT = 3.0, 14.0, 6.0


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    from mmsearch.synth.talking import Caption, Voice, write_talking_video

    root = tmp_path_factory.mktemp("words")
    media = root / "media"
    write_talking_video(
        media / "family.mp4", seconds=24, voices=[Voice(voice("boat"), BOAT_AT), Voice(voice("umbrella"), UMBRELLA_AT)],
        captions=[Caption("HARBOUR LIGHTS", 0, 8), Caption("Chapter two: the garden", 12, 20)],
    )
    write_talking_video(media / "school.mp4", seconds=16, voices=[Voice(voice("exam"), EXAM_AT)],
                        captions=[Caption("Science fair 2024", 2, 10)])
    write_talking_video(media / "quiet.mp4", seconds=8, captions=[])  # nothing said or written
    (media / "quiet.en.srt").write_text("1\n00:00:04,500 --> 00:00:06,000\nThe lighthouse keeper waves goodbye\n\n", encoding="utf-8")
    (media / "school.srt").write_bytes(b"\x00\x01\x02garbage\xff\xfe" * 20)  # a broken sidecar: reported, video kept
    (media / "garden.flac").write_bytes((SPEECH / "tomatoes.flac").read_bytes())
    index = root / "index"
    report = mmsearch.index_paths([media], index, model="synth-clip")
    return media, index, report


def test_report_counts_words_and_a_broken_sidecar_costs_nothing_else(library):
    media, index, report = library
    assert sorted(Path(p).name for p in report.indexed) == ["family.mp4", "garden.flac", "quiet.mp4", "school.mp4"]
    assert not report.failed and not report.partial
    assert any(Path(p).name == "school.mp4" and "school.srt" in note for p, note in report.notes)
    # 4 sentences said, 1 subtitle, 3 lines on screen
    assert report.text_segments >= 8


def test_speech_finds_the_sentence_where_it_starts(library):
    media, index, _ = library
    idx = mmsearch.open_index(index)
    results = idx.search("the story about the boat", modality="speech", k=3)
    top = results[0]
    assert Path(top.path).name == "family.mp4" and top.modality == "speech"
    assert abs(top.start - (BOAT_AT + onset(voice("boat")))) <= 0.5
    assert top.end <= UMBRELLA_AT and "story" in top.text.lower()
    # an audio file's speech is found too, at its own seconds
    garden = idx.search("we planted tomatoes", modality="speech", k=1)[0]
    assert Path(garden.path).name == "garden.flac" and abs(garden.start - onset(voice("tomatoes"))) <= 0.5


def test_a_paraphrase_finds_what_was_said(library):
    media, index, _ = library
    idx = mmsearch.open_index(index)
    top = idx.search("pupils completed a science test", modality="speech", k=1)[0]
    assert Path(top.path).name == "school.mp4"
    assert abs(top.start - (EXAM_AT + onset(voice("exam")))) <= 0.5


def test_quoted_words_must_be_said(library):
    media, index, _ = library
    idx = mmsearch.open_index(index)
    found = idx.search('"told the story"', modality="speech", k=5)
    assert [Path(r.path).name for r in found] == ["family.mp4"]
    # five words with one misheard (Whisper may hear "boat" as "road"): still found, scored below exact
    near = idx.search('"the story about the ship"', modality="speech", k=5)
    assert [Path(r.path).name for r in near] == ["family.mp4"] and near[0].score < found[0].score
    assert idx.search('"a glory about the ship"', modality="speech", k=5) == []


def test_quoted_words_must_be_said_or_written_in_a_default_query_too(library):
    """Without --modality the pictures are searched too, but quotes still mean words said or written
    (as a search engine reads them): only moments that hold them, and nothing when nothing does."""
    media, index, _ = library
    idx = mmsearch.open_index(index)
    found = idx.search('"told the story"', k=5)
    assert [Path(r.path).name for r in found] == ["family.mp4"] and "told the story" in found[0].text.lower()
    assert found[0].start <= BOAT_AT + onset(voice("boat")) + 0.5 < found[0].end
    assert idx.search('"a glory about the ship"', k=5) == []
    assert idx.search('"science fair"', k=5)[0].modality == "text"  # written on screen counts as well
    assert len(idx.search("a glory about the ship", k=5)) == 5  # unquoted, the pictures answer as before


def test_subtitles_are_what_is_said(library):
    media, index, _ = library
    idx = mmsearch.open_index(index)
    top = idx.search("lighthouse keeper", modality="speech", k=1)[0]
    assert Path(top.path).name == "quiet.mp4" and (top.start, top.end) == (4.5, 6.0)


def test_text_on_screen_is_found_with_its_interval(library):
    media, index, _ = library
    idx = mmsearch.open_index(index)
    top = idx.search("science fair", modality="text", k=1)[0]
    assert Path(top.path).name == "school.mp4" and top.modality == "text" and "science" in top.text.lower()
    assert temporal_iou((top.start, top.end), (2.0, 10.0)) >= 0.5


def test_a_default_query_fuses_pictures_and_words(library):
    media, index, _ = library
    idx = mmsearch.open_index(index)
    top = idx.search("the story about the boat", k=3)[0]
    assert Path(top.path).name == "family.mp4" and top.modality == "speech"
    assert top.start <= BOAT_AT + onset(voice("boat")) + 0.5 and top.end > BOAT_AT + 1.0
    assert all(r.start >= 0 for r in idx.search("chapter two the garden", k=5))
    # a batch answers as single queries do
    batch = idx.search_batch(["the story about the boat"], k=3)[0]
    assert [(r.path, r.start, r.end) for r in batch] == [(r.path, r.start, r.end) for r in idx.search("the story about the boat", k=3)]


def test_modality_all_adds_the_sound_and_still_shows_what_is_said(library):
    """``--modality all`` is the default's fusion with the sound added: a spoken sentence is still found
    where it is said, with its words; quotes still mean words; the sound's weight moves the ranking."""
    media, index, _ = library
    idx = mmsearch.open_index(index)
    assert "audio" in idx.snapshot.spaces
    top = idx.search("the story about the boat", modality="all", k=3)[0]
    assert Path(top.path).name == "family.mp4" and top.modality == "speech" and "story" in top.text.lower()
    assert top.start <= BOAT_AT + onset(voice("boat")) + 0.5 and top.end > BOAT_AT + 1.0
    found = idx.search('"told the story"', modality="all", k=5)
    assert [Path(r.path).name for r in found] == ["family.mp4"] and "told the story" in found[0].text.lower()
    assert idx.search('"a glory about the ship"', modality="all", k=5) == []
    # the whole weight on the sound: its moments in its own order; none on it: the default's answer
    sound = idx.search("a glory about the ship", modality="all", audio_weight=1.0, k=3)
    alone = idx.search("a glory about the ship", modality="audio", k=3)
    assert [(r.path, r.start, r.modality) for r in sound] == [(r.path, r.start, "audio") for r in alone]
    for q in ("a glory about the ship", '"told the story"'):  # no weight on the sound: the default's answer, scores too
        assert idx.search(q, modality="all", audio_weight=0.0, k=3) == idx.search(q, k=3)
    # a batch answers as single queries do, with the weight given
    for weight in (1.0, 0.5):
        batch = idx.search_batch(["a glory about the ship", "the story about the boat"], modality="all", audio_weight=weight, k=3)
        assert batch == [idx.search(q, modality="all", audio_weight=weight, k=3) for q in ("a glory about the ship", "the story about the boat")]
    assert batch[0] != idx.search("a glory about the ship", modality="all", audio_weight=1.0, k=3)
    with pytest.raises(UsageError, match="--audio-weight must be between 0 and 1, got 2"):
        idx.search_batch(["a boat"], modality="all", audio_weight=2.0)
    # the JSON answer says which weight made it (query --json, each --batch line, the server)
    from mmsearch.api import query_answer

    assert query_answer(idx, sound, text="a glory about the ship", modality="all", audio_weight=1.0)["query"]["audio_weight"] == 1.0
    assert "audio_weight" not in query_answer(idx, sound, text="a glory about the ship")["query"]


def test_language_is_stored_per_file(library):
    media, index, _ = library
    idx = mmsearch.open_index(index)
    langs = {Path(r["path"]).name: r["language"] for r in idx.snapshot.media.to_pylist()}
    assert langs["family.mp4"] == "en" and langs["garden.flac"] == "en"
    assert langs["quiet.mp4"] == "en"  # nothing said: the language of its subtitles (quiet.en.srt)
    assert {Path(r.path).name for r in idx.search("the story about the boat", modality="speech", k=5, where={"languages": "en"})} >= {"family.mp4"}
    # a language nothing is said in, or a name that is not a code: one line that says what there is or what to give
    with pytest.raises(mmsearch.UsageError, match=r"nothing in the index .* is said in de; languages said: en \(4\)"):
        idx.search("the story about the boat", k=5, where={"languages": "de"})
    with pytest.raises(mmsearch.UsageError, match="--language english: give language codes such as en"):
        idx.search("the story about the boat", k=5, where={"languages": "english"})


def test_without_words_the_spaces_are_absent_and_say_so(tmp_path):
    from mmsearch.synth.talking import Caption, Voice, write_talking_video

    write_talking_video(tmp_path / "m" / "a.mp4", seconds=8, voices=[Voice(voice("boat"), 1.0)], captions=[Caption("HELLO", 0, 4)])
    mmsearch.index_paths([tmp_path / "m"], tmp_path / "i", model="synth-clip", speech=False, ocr=False)
    idx = mmsearch.open_index(tmp_path / "i")
    assert not {"speech", "text"} & set(idx.snapshot.spaces)
    with pytest.raises(UsageError, match=r"no speech space \(what is said\): its files were indexed with --no-speech or none"):
        idx.search("the boat", modality="speech")
    with pytest.raises(UsageError, match=r"no text space \(what is written on screen\): its files were indexed with --no-ocr or none shows"):
        idx.search("hello", modality="text")
    assert idx.search("the boat", k=1)[0].modality == "video"  # a default query searches what there is
    assert "audio" in idx.snapshot.spaces  # --modality all with no weight on the sound: the default's answer
    for q in ("the boat", '"the boat"'):
        assert idx.search(q, modality="all", audio_weight=0.0, k=3) == idx.search(q, k=3)


def test_a_failing_speech_model_costs_only_the_words(tmp_path):
    from mmsearch.synth.talking import Voice, write_talking_video

    write_talking_video(tmp_path / "m" / "a.mp4", seconds=6, voices=[Voice(voice("boat"), 1.0)])
    report = mmsearch.index_paths([tmp_path / "m"], tmp_path / "i", model="synth-clip", ocr=False, asr_model=str(tmp_path / "no-such-model"))
    assert [Path(p).name for p in report.indexed] == ["a.mp4"] and not report.failed
    assert [(Path(p).name, stage) for p, stage, _ in report.partial] == [("a.mp4", "speech")]
    idx = mmsearch.open_index(tmp_path / "i")
    assert [f["stage"] for f in idx.failures()] == ["speech"]
    assert idx.search("a", modality="video", k=1)  # its pictures are searchable


def test_lexical_scores_read_as_the_share_of_the_query():
    texts = ["grandfather told the story about the boat", "the boat", "please bring the blue umbrella", ""]
    lexical = LexicalIndex(texts)
    rows, scores = lexical.search("story about the boat", 10)
    assert list(rows[:2]) == [0, 1]
    assert 0.9 <= scores[0] <= 1.0 and 0.0 < scores[1] < scores[0]
    assert lexical.scores("umbrella", np.array([0, 2])).tolist()[0] == 0.0
    assert lexical.search("zebra", 10)[0].size == 0


def test_a_quoted_phrase_may_run_on_into_the_next_segment():
    texts = ["and then he told the story", "about the boat we sailed", "about the boat"]
    media = np.array([1, 1, 2])
    lexical = LexicalIndex(texts)
    assert phrases_of('where "the story about the boat" is told') == ["the story about the boat"]
    rows, exact = lexical.rows_with(["the story about the boat"], media)
    assert rows.tolist() == [0] and exact.tolist() == [True]
    assert lexical.rows_with(["about the boat"], media)[0].tolist() == [1, 2]
    assert lexical.rows_with(["the boat we"], np.array([1, 2, 2]))[0].tolist() == [1]
    # a five-word phrase with one word misheard still matches, as approximate; two words wrong do not
    rows, exact = lexical.rows_with(["told the story about a"], media)
    assert rows.tolist() == [0] and exact.tolist() == [False]
    assert lexical.rows_with(["sold the glory about a"], media)[0].tolist() == []
    assert lexical.rows_with(["the story about the"], media)[0].tolist() == [0]  # four words: exact only


def test_a_quoted_phrase_finds_what_was_misheard_as_a_near_miss():
    """Whisper base heard "the maker sells fresh dread and remorning" for "the baker sells fresh
    bread every morning": near misses (Elasticsearch's AUTO fuzziness) match, as approximate, and
    rank below the words themselves; words further off, or of two letters, do not."""
    from mmsearch.textsearch import fuzziness

    texts = ["The maker sells fresh dread and remorning.", "the baker sells fresh bread", "an old clock on the wall"]
    media = np.array([1, 2, 3])
    lexical = LexicalIndex(texts)
    assert [fuzziness(w) for w in ("on", "old", "bread", "morning")] == [0, 1, 1, 2]
    rows, exact = lexical.rows_with(["baker sells fresh bread every"], media)  # two near misses, one word wrong
    assert rows.tolist() == [0, 1] and exact.tolist() == [False, False]
    rows, exact = lexical.rows_with(["sells fresh bread"], media)  # three words: near misses only
    assert rows.tolist() == [0, 1] and exact.tolist() == [False, True]
    assert lexical.rows_with(["sells fresh breakfast"], media)[0].tolist() == []  # "bread" is 4 edits away
    assert lexical.rows_with(["in old clock"], media)[0].tolist() == []  # "in"/"an": two letters, no fuzziness
    assert lexical.rows_with(["all clock on"], media)[0].tolist() == []  # "all"/"old": 2 edits, 3 letters allow 1
    # a segment that holds only near misses of the phrase is found too, not only those BM25 finds by the words quoted
    rows, exact = lexical.rows_with(["baker"], media)
    assert rows.tolist() == [0, 1] and exact.tolist() == [False, True]
    umbrella = LexicalIndex(["please bring the blue umbrella tomorrow", "a purple coat"])
    rows, exact = umbrella.rows_with(["blu umbrela"], np.array([1, 2]))
    assert rows.tolist() == [0] and exact.tolist() == [False]
    assert umbrella.rows_with(["umbrela"], np.array([1, 2]))[0].tolist() == [0]
    assert umbrella.rows_with(["purpel umbrela"], np.array([1, 2]))[0].tolist() == []  # near misses of words in two segments


def test_two_words_quoted_heard_as_one_or_one_as_two_are_a_near_miss():
    """LibriSpeech's reference says "scarlet smoke stack", Whisper writes "smokestack": the quoted phrase finds it,
    as approximate, either way round; words that do not make up the other are still wrong."""
    from mmsearch.textsearch import _phrase_errors

    media = np.array([1, 2])
    heard_one = LexicalIndex(["With her white paint and her scarlet smokestack, the steamer", "a purple coat"])
    rows, exact = heard_one.rows_with(["her scarlet smoke stack"], media)
    assert rows.tolist() == [0] and exact.tolist() == [False]
    heard_two = LexicalIndex(["her scarlet smoke stack was seen", "a purple coat"])
    assert heard_two.rows_with(["scarlet smokestack"], media)[0].tolist() == [0]
    assert heard_two.rows_with(["scarlet smoke stack"], media)[1].tolist() == [True]  # as it is: exact
    assert _phrase_errors(["scarlet", "smoke", "stack"], ["scarlet", "smokestack"], []) == (0, 1)
    assert _phrase_errors(["scarlet", "smoke", "tower"], ["scarlet", "smokestack"], []) == (2, 0)  # not a compound of these
    assert heard_one.rows_with(["scarlet smoke tower"], media)[0].tolist() == []


def test_fusion_keeps_the_pictures_order_without_words_and_lets_strong_words_lead():
    from mmsearch.retrieval import WORDS_GATE, Hit, fuse_moments

    pictures = [Hit(1, 0.0, 4.0, 0.40, 0.3), Hit(2, 10.0, 14.0, 0.35, 0.3), Hit(3, 2.0, 6.0, 0.30, 0.3), Hit(4, 0.0, 2.0, 0.10, 0.1)]
    alone = fuse_moments(pictures, [], k=4)
    assert [h.media_id for h, _, _ in alone] == [1, 2, 3, 4]
    unrelated = [(Hit(m, 1.0, 2.0, s, None, s), "an unrelated line") for m, s in ((3, WORDS_GATE - 0.01), (6, 0.05), (7, 0.04))]
    assert [h.media_id for h, _, _ in fuse_moments(pictures, [("speech", unrelated, (0.05, 0.05, 30))], k=4)] == [1, 2, 3, 4]  # under the gate
    lines = [(Hit(3, 3.0, 5.0, 0.9, None, 0.9), "the story about the boat"), (Hit(5, 1.0, 2.0, 0.5, None, 0.5), "a boat"),
             *[(Hit(10 + m, 0.0, 1.0, 0.1, None, 0.1), "other") for m in range(6)]]
    fused = fuse_moments(pictures, [("speech", lines, (0.25, 0.29, 30))], k=5)
    # 0.5 is far from the baseline (z 0.9) but a good match by itself (words_evidence 2.9): above picture 1 (z 1.0)
    assert [(h.media_id, space) for h, space, _ in fused][:3] == [(3, "speech"), (5, "speech"), (1, None)]
    top = fused[0][0]
    assert (top.start, top.end) == (3.0, 5.0) and fused[0][2] == "the story about the boat"  # where the words are said
    assert sum(h.media_id == 3 for h, _, _ in fused) == 1  # the segment inside it is the same moment



def test_fusion_of_a_quoted_query_keeps_only_moments_that_hold_the_words():
    """words_only (the query quotes words): a picture moment stays only where a segment holding the words
    lies within it, and such a segment counts even when its score is under the gate."""
    from mmsearch.retrieval import WORDS_GATE, Hit, fuse_moments

    pictures = [Hit(1, 0.0, 4.0, 0.40, 0.3), Hit(2, 10.0, 14.0, 0.35, 0.3), Hit(3, 2.0, 6.0, 0.30, 0.3)]
    weak = [(Hit(3, 3.0, 5.0, WORDS_GATE - 0.05, None, WORDS_GATE - 0.05), "the quoted words, misheard a little")]
    words = [("speech", weak, (0.05, 0.05, 30))]
    assert [h.media_id for h, _, _ in fuse_moments(pictures, words, k=3)] == [1, 2, 3]  # unquoted: pictures as before
    quoted = fuse_moments(pictures, words, k=3, words_only=True)
    assert [(h.media_id, text) for h, _, text in quoted] == [(3, "the quoted words, misheard a little")]
    assert fuse_moments(pictures, [("speech", [], (0.0, 1.0, 0))], k=3, words_only=True) == []
    # a strong moment (of pictures or sound) keeps its seconds when the quoted words lie within it, and
    # becomes their seconds when it holds them only in part
    for segment, kept in (((1.0, 3.0), (0.0, 4.0)), ((3.0, 6.5), (3.0, 6.5))):
        said = [(Hit(1, *segment, WORDS_GATE - 0.05, None, WORDS_GATE - 0.05), "a sentence holding the quoted words")]
        for kw in ({}, {"sounds": pictures, "sound_weight": 1.0}):
            found = fuse_moments(pictures, [("speech", said, (0.05, 0.05, 30))], k=3, words_only=True, **kw)
            assert [(h.media_id, h.start, h.end) for h, _, _ in found] == [(1, *kept)], (segment, kw)


def test_cohort_z_measures_a_score_against_what_unrelated_queries_give_the_same_candidate():
    from mmsearch.retrieval import cohort_z

    cohort = np.array([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])  # a candidate every query scores alike has no spread
    z = cohort_z(np.array([0.4, 0.6]), cohort)
    assert z == pytest.approx([(0.4 - 0.2) / np.std([0.1, 0.2, 0.3]), 0.1])


def test_a_picture_every_caption_matches_does_not_outvote_what_was_said():
    """A slide of text that stands out in the query's own list (z 1.8) but not against the generic captions of
    the index's query probes (cohort z 0.3) claims only its cohort z; the sentence said (evidence 1.2) leads.
    Pictures that do stand out against the cohort keep their list z: the order of a visual query stays."""
    from mmsearch.retrieval import Hit, fuse_moments

    pictures = [Hit(1, 0.0, 8.0, 0.40, 0.3), *[Hit(10 + m, 0.0, 4.0, 0.1 + 0.01 * m, 0.1) for m in range(6)]]
    said = [(Hit(2, 3.0, 5.0, 0.30, None, 0.30), "it befell in the month of may"),
            *[(Hit(20 + m, 0.0, 1.0, 0.1, None, 0.1), "other") for m in range(10)]]
    words = [("speech", said, (0.15, 0.125, 30))]  # the sentence: z 1.2
    plain = fuse_moments(pictures, words, k=3)
    assert plain[0][0].media_id == 1  # the slide's z over its list (about 2.4) outvotes the sentence
    cohort = np.array([0.3, *[5.0] * 6])
    calibrated = fuse_moments(pictures, words, k=3, cohort=cohort)
    assert [(h.media_id, space) for h, space, _ in calibrated][:2] == [(2, "speech"), (1, None)]
    visual = fuse_moments(pictures, [], k=7, cohort=np.full(7, 9.0))
    assert [h.media_id for h, _, _ in visual] == [h.media_id for h, _, _ in fuse_moments(pictures, [], k=7)]


def test_an_index_with_words_keeps_query_probes_for_its_pictures(library):
    from mmsearch.probes import probe_captions

    _, index, _ = library
    idx = mmsearch.open_index(index)
    probes = idx.snapshot.spaces["visual"].query_probes
    assert probes is not None and probes.shape == (len(probe_captions("visual")), idx.snapshot.spaces["visual"].dim)
    assert np.allclose(probes[:3], idx.embed_queries(text=probe_captions("visual")[:3]), atol=1e-5)


def test_fusion_gives_a_segment_of_words_only_the_share_of_a_picture_moment_it_covers():
    """A caption that touches a strong picture moment for half a second (31-44.7 s against 17.5-31.5 s)
    does not borrow that moment's score: the two moments that show the query lead, not the neighbour
    whose words say almost as much (both capped as "as good as it gets")."""
    from mmsearch.retrieval import Hit, fuse_moments, overlap_coefficient

    pictures = [Hit(1, 17.5, 31.5, 0.90, 0.9), Hit(2, 3.0, 11.0, 0.80, 0.8), Hit(1, 31.5, 44.5, 0.30, 0.9),
                *[Hit(10 + m, 0.0, 4.0, 0.25, 0.2) for m in range(5)]]
    captions = [(Hit(1, 17.0, 31.0, 1.0, None, 1.0), "a green circle"), (Hit(1, 31.0, 44.7, 0.85, None, 0.85), "a white circle"),
                (Hit(2, 3.0, 11.0, 1.0, None, 1.0), "a green circle")]
    fused = fuse_moments(pictures, [("caption", captions, (0.5, 0.2, 3))], k=3)
    assert [(h.media_id, text) for h, _, text in fused][:2] == [(1, "a green circle"), (2, "a green circle")], fused
    assert overlap_coefficient(captions[1][0], pictures[0]) == pytest.approx(0.5 / 13.7)
    assert overlap_coefficient(Hit(1, 20.0, 24.0, 0.9, None), captions[0][0]) == 1.0  # a window within a caption's stretch
    assert overlap_coefficient(Hit(3, 0.0, 0.0, 1.0, None), Hit(3, 0.0, 0.0, 1.0, None)) == 1.0  # an image's caption and picture

def _one_talking_video(folder: Path, name: str = "a.mp4", seconds: float = 6.0) -> Path:
    from mmsearch.synth.talking import Voice, write_talking_video

    return write_talking_video(folder / name, seconds=seconds, voices=[Voice(voice("boat"), 1.0)])


def test_new_or_changed_subtitles_are_read_on_the_next_run(tmp_path):
    media = tmp_path / "m"
    _one_talking_video(media)
    (media / "a.srt").write_text("1\n00:00:03,000 --> 00:00:04,000\nthe ocelot sleeps\n", encoding="utf-8")
    mmsearch.index_paths([media], tmp_path / "i", model="synth-clip", ocr=False)
    (media / "a.srt").write_text("1\n00:00:03,000 --> 00:00:04,000\nthe pangolin dances\n", encoding="utf-8")
    (media / "a.fr.srt").write_text("1\n00:00:05,000 --> 00:00:05,500\nle tatou chante\n", encoding="utf-8")
    report = mmsearch.index_paths([media], tmp_path / "i", model="synth-clip", ocr=False)
    assert [Path(p).name for p in report.indexed] == ["a.mp4"] and report.not_media == {}
    idx = mmsearch.open_index(tmp_path / "i")
    said = [r.text for r in idx.search('"pangolin dances"', modality="speech", k=5)] + \
           [r.text for r in idx.search('"tatou chante"', modality="speech", k=5)]
    assert said == ["the pangolin dances", "le tatou chante"]
    assert idx.search('"ocelot sleeps"', modality="speech", k=5) == []  # the old words are gone
    again = mmsearch.index_paths([media], tmp_path / "i", model="synth-clip", ocr=False)
    assert again.unchanged == 1 and not again.indexed


def test_a_failed_speech_stage_is_tried_again_with_retry_failed(tmp_path):
    media = tmp_path / "m"
    _one_talking_video(media)
    first = mmsearch.index_paths([media], tmp_path / "i", model="synth-clip", ocr=False, asr_model="/no/such/model")
    assert [stage for _, stage, _ in first.partial] == ["speech"]
    skipped = mmsearch.index_paths([media], tmp_path / "i", model="synth-clip", ocr=False, asr_model="base")
    assert skipped.skipped_failed == 1 and not skipped.indexed  # as failed files are: tried again when asked
    config = mmsearch.ingest_config(tmp_path / "i", retry_failed=True)
    second = mmsearch.index_paths([media], tmp_path / "i", model="synth-clip", ocr=False, asr_model="base", config=config)
    assert [Path(p).name for p in second.indexed] == ["a.mp4"] and not second.partial and second.text_segments >= 1
    idx = mmsearch.open_index(tmp_path / "i")
    assert idx.failures() == [] and "story" in idx.search("the story about the boat", modality="speech", k=1)[0].text.lower()


def test_cues_after_the_end_of_the_media_are_left_out_with_a_note(tmp_path):
    media = tmp_path / "m"
    _one_talking_video(media, seconds=4.0)
    (media / "a.srt").write_text(
        "1\n00:00:01,000 --> 00:00:09,000\nruns past the end\n\n2\n99:00:00,000 --> 99:00:10,000\nfar too late\n", encoding="utf-8"
    )
    report = mmsearch.index_paths([media], tmp_path / "i", model="synth-clip", ocr=False)
    assert any("1 speech segment(s) after the end" in note for _, note in report.notes)
    idx = mmsearch.open_index(tmp_path / "i")
    found = idx.search('"runs past the end"', modality="speech", k=5)
    duration = idx.snapshot.media.column("duration").to_pylist()[0]
    assert 4.0 <= duration < 4.1 and [(r.start, r.end) for r in found] == [(1.0, round(duration, 3))]
    assert idx.search('"far too late"', modality="speech", k=5) == []


def test_a_text_query_on_an_index_whose_every_file_was_removed_finds_nothing(tmp_path):
    """The spaces of words are emptied by compaction when the last file goes: a query answers with nothing."""
    from mmsearch.synth.talking import Caption, write_talking_video

    write_talking_video(tmp_path / "m" / "slide.mp4", seconds=6, captions=[Caption("Closing ceremony tonight", 0, 5)])
    mmsearch.index_paths([tmp_path / "m"], tmp_path / "i", model="synth-clip", speech=False)
    assert mmsearch.open_index(tmp_path / "i").search("closing ceremony", modality="text", k=3)  # it was there
    (tmp_path / "m" / "slide.mp4").unlink()
    mmsearch.index_paths([tmp_path / "m"], tmp_path / "i", model="synth-clip", speech=False)
    idx = mmsearch.open_index(tmp_path / "i")
    assert idx.search("closing ceremony", k=3) == [] and idx.search("closing ceremony", modality="text", k=3) == []


def test_quotes_around_nothing_are_an_empty_query(library):
    media, index, _ = library
    idx = mmsearch.open_index(index)
    for text in ('""', '"', '" "'):
        with pytest.raises(UsageError, match="empty query"):
            idx.search(text, k=1)
    assert [Path(r.path).name for r in idx.search('"the"', modality="speech", k=10)]  # a quoted stopword is said
