"""Searching the spaces of words (what is said, what is written): semantic and lexical, fused.

Each segment of a text space (a sentence, a subtitle, a line on screen) has a sentence vector
(:mod:`mmsearch.encoders.text`) and its words. A query is scored against a segment two ways:

* **semantic**: the cosine of the query's sentence vector with the segment's (finds paraphrases);
* **lexical**: Okapi BM25 over the segments' words (bm25s; Lucene's variant, k1 = 1.5, b = 0.75,
  English stopwords left out), divided by the BM25 score the segment would get if it held each
  word of the query once, so it reads as the share of the query's (IDF-weighted) words the
  segment holds, in [0, 1].

A segment's score is ``(1 - LEXICAL_WEIGHT) * semantic + LEXICAL_WEIGHT * lexical``. Candidates
are the union of the best segments of each (the moment index for the semantic side, BM25 for the
lexical side). Words in double quotes are a phrase the segment must hold (case and punctuation
aside; a phrase may run on into the next segment of the same media): word for word, or
approximately, since a transcript mishears words (Whisper base heard "reversed" for "rehearsed"
and "the maker sells fresh dread" for "the baker sells fresh bread" here). Approximately means a
word may be a near miss, within Elasticsearch's ``fuzziness: AUTO`` of the quoted one (optimal
string alignment distance, transpositions counting one edit: none for words of 1-2 letters, one
for 3-5, two for longer; rapidfuzz computes it), and, for a phrase of five words or more, one
word in five may be wrong altogether. An exact match scores above an approximate one.

The lexical index is built from the committed words of a snapshot (the ``text`` column of the
space's segments) when the first query needs it, so it always belongs to the generation being
searched and has nothing of its own to corrupt; building it took about 2 s per 100k segments on
2 cores (``benchmarks/words.py``), paid once per opened index (a server keeps it).

bm25s (https://github.com/xhluca/bm25s) was chosen over tantivy: it is pure Python and numpy,
reads the words straight from the generation's parquet rows, and phrase matching over the few
candidate segments is a string test; tantivy's own on-disk segments would need a second commit
protocol beside the manifest's.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
from rapidfuzz.distance import OSA

from .retrieval import Hit, overlaps
from .store import SpaceData

__all__ = ["LEXICAL_WEIGHT", "LexicalIndex", "TextQuery", "phrases_of", "search_text", "words_of"]

LEXICAL_WEIGHT = 0.3
CANDIDATES = 100  # segments taken from each side before fusing
PHRASE_CANDIDATES = 1000  # segments checked for a quoted phrase: the best for its words
K1, B = 1.5, 0.75  # bm25s's defaults


def words_of(text: str) -> list[str]:
    """Lower-cased words (letters, digits, apostrophes) of ``text``."""
    return re.findall(r"[\w']+", text.lower())


def phrases_of(query: str) -> list[str]:
    """The phrases in double quotes (straight or curly) of a query, as space-joined words."""
    return [" ".join(words_of(p)) for p in re.findall(r'["\u201c\u201d]([^"\u201c\u201d]+)["\u201c\u201d]', query) if words_of(p)]


class LexicalIndex:
    """BM25 over the words of one text space's segment rows (row ``i`` = segment row ``i``)."""

    def __init__(self, texts: list[str]) -> None:
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import and logs every build

        self.texts = texts
        self.n = len(texts)
        tokens = bm25s.tokenize(texts or [""], stopwords="en", show_progress=False)
        self.vocab: dict[str, int] = {t: i for t, i in tokens.vocab.items() if t}
        self.retriever = None
        if self.vocab:  # bm25s cannot index a corpus without a word (all stopwords, or nothing but marks)
            self.retriever = bm25s.BM25(k1=K1, b=B)
            self.retriever.index(tokens, show_progress=False)
        self.lengths = np.asarray([len(ids) for ids in tokens.ids], np.float64)[: self.n]
        self.avgdl = float(self.lengths.mean()) if len(self.lengths) and self.lengths.mean() > 0 else 1.0
        df = np.zeros(len(tokens.vocab) + 1, np.int64)
        for ids in tokens.ids:
            df[np.unique(np.asarray(ids, np.int64))] += 1
        self.idf = np.log(1.0 + (self.n - df + 0.5) / (df + 0.5))
        self._normalised: list[str] | None = None
        self._words: list[str] | None = None  # the vocabulary as a list, for near misses; built on first use

    def near_words(self, words: list[str]) -> list[str]:
        """Words some segment holds that are near misses of ``words`` (:func:`fuzziness`), not the words themselves:
        also two neighbouring words written as one ("smoke stack" heard as "smokestack") and one word written
        as two that some segment holds ("smokestack" heard as "smoke stack")."""
        from rapidfuzz import process

        if self._words is None:
            self._words = list(self.vocab)
        near: list[str] = []
        for word in dict.fromkeys(words):
            limit = fuzziness(word)
            if limit:
                near += [t for t, _, _ in process.extract(word, self._words, scorer=OSA.distance, score_cutoff=limit, limit=None) if t != word]
            near += [part for k in range(2, len(word) - 1) if word[:k] in self.vocab and word[k:] in self.vocab for part in (word[:k], word[k:])]
        near += [a + b for a, b in zip(words, words[1:]) if a + b in self.vocab]
        return list(dict.fromkeys(near))

    def query_tokens(self, query: str) -> tuple[list[str], list[str]]:
        """The query's words as BM25 reads them (stopwords out): (those some segment holds, all of them)."""
        import bm25s

        found = bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)[0]
        return [t for t in found if t in self.vocab], list(found)

    def bm25(self, query: str) -> tuple[np.ndarray | None, list[str]]:
        """BM25 of every segment row for ``query`` (None when no segment holds one of its words), and
        the query's words; what :meth:`top` and :meth:`normalised` read, computed once a query."""
        known, every = self.query_tokens(query)
        if not known or self.retriever is None:
            return None, every
        return self.retriever.get_scores(known)[: self.n], every

    def top(self, bm25: tuple[np.ndarray | None, list[str]], n: int) -> np.ndarray:
        """Rows of the ``n`` best segments holding a word of the query (of :meth:`bm25`)."""
        scores, _ = bm25
        if scores is None:
            return np.zeros(0, np.int64)
        top = np.argsort(-scores, kind="stable")[: min(n, self.n)]
        return top[scores[top] > 0].astype(np.int64)

    def normalised(self, bm25: tuple[np.ndarray | None, list[str]], rows: np.ndarray) -> np.ndarray:
        """Lexical scores in [0, 1] of given segment rows (see :meth:`_normalise`)."""
        scores, every = bm25
        rows = np.asarray(rows, np.int64)
        if scores is None or not len(rows):
            return np.zeros(len(rows), np.float32)
        return self._normalise(scores[rows], rows, every)

    def search(self, query: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, lexical scores in [0, 1]) of the ``n`` best segments holding a word of ``query``."""
        bm25 = self.bm25(query)
        rows = self.top(bm25, n)
        return rows, self.normalised(bm25, rows)

    def scores(self, query: str, rows: np.ndarray) -> np.ndarray:
        """Lexical scores in [0, 1] of given segment rows."""
        return self.normalised(self.bm25(query), rows)

    def _normalise(self, scores: np.ndarray, rows: np.ndarray, tokens: list[str]) -> np.ndarray:
        """BM25 divided by what each row would score holding every query word once (its own length
        kept): the IDF-weighted share of the query's words the row holds, in [0, 1]. A query word no
        segment holds counts with the IDF of a word never seen, so "a blue square" is not fully
        matched by "the blue umbrella" because no segment says "square"."""
        unseen = float(np.log(1.0 + (self.n + 0.5) / 0.5))
        idf = sum(float(self.idf[self.vocab[t]]) if t in self.vocab else unseen for t in dict.fromkeys(tokens))
        norm = K1 * (1 - B + B * self.lengths[rows] / self.avgdl)
        best = idf / (1.0 + norm)
        return (scores / np.maximum(best, 1e-9)).clip(0, 1).astype(np.float32)

    def rows_with(self, phrases: list[str], media_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows holding every phrase, alone or run on into the next row of the same media, word for word
        or approximately (near misses, and one word in five wrong: see the module): (rows, True where
        every phrase is word for word). Only rows BM25 ranks among the best for the phrase's words, or
        for the near misses of them that some segment holds, are checked."""
        found: dict[int, bool] = {}
        for p_i, phrase in enumerate(phrases):
            target = phrase.split()
            allowed = len(target) // 5  # 0 for phrases under 5 words, 1 for 5-9
            rows, _ = self.search(phrase, PHRASE_CANDIDATES)
            near = self.near_words(target)
            if near:  # segments that hold only near misses of the phrase's words ("umbrela" for "umbrella")
                rows = np.union1d(rows, self.search(" ".join(near), PHRASE_CANDIDATES)[0])
            if not len(rows):  # only stopwords ("the"), which BM25 leaves out: the rows that hold it as it is
                if self._normalised is None:
                    self._normalised = [" " + " ".join(words_of(t)) + " " for t in self.texts]
                rows = np.asarray([i for i, t in enumerate(self._normalised) if f" {phrase} " in t], np.int64)
            candidates = set(rows.tolist())
            candidates |= {r - 1 for r in candidates if r > 0 and media_ids[r - 1] == media_ids[r]}  # a phrase running on
            matched: dict[int, bool] = {}
            for r in sorted(candidates):
                words = words_of(self.texts[r])
                following = words_of(self.texts[r + 1]) if r + 1 < self.n and media_ids[r + 1] == media_ids[r] else []
                wrong, near = _phrase_errors(target, words, following)
                if wrong <= allowed:
                    matched[r] = wrong == near == 0
            found = matched if p_i == 0 else {r: exact and matched[r] for r, exact in found.items() if r in matched}
        rows = np.asarray(sorted(found), np.int64)
        return rows, np.asarray([found[int(r)] for r in rows], bool)


def fuzziness(word: str) -> int:
    """Edits a word of a quoted phrase may be away from the word heard and still be a near miss:
    Elasticsearch's ``AUTO`` (0 for 1-2 characters, 1 for 3-5, 2 for more)."""
    return 0 if len(word) <= 2 else 1 if len(word) <= 5 else 2


def _word_cost(wanted: str, heard: str, wrong: int) -> int:
    """0 for the same word, 1 for a near miss (:func:`fuzziness`), ``wrong`` for another word."""
    if wanted == heard:
        return 0
    limit = fuzziness(wanted)
    return 1 if limit and OSA.distance(wanted, heard, score_cutoff=limit) <= limit else wrong


def _phrase_errors(target: list[str], words: list[str], following: list[str]) -> tuple[int, int]:
    """(words wrong, near misses) of the best alignment of ``target`` with a stretch of ``words``
    that starts in ``words`` (and may run on into ``following``): semi-global alignment, free to
    start and end anywhere; a word wrong, left out or added costs more than every near miss
    together, so the alignment has the fewest words wrong, then the fewest near misses. Two
    neighbouring words heard as one ("smoke stack", "smokestack"), or one as two, are a near miss."""
    text = words + following
    n = len(target)
    wrong = n + 1  # the cost of one word wrong: more than n near misses
    if not text:
        return n, 0
    best = n * wrong
    # prev[j]: cost of aligning target[:i] to a stretch ending at text[j-1] (any start); older: target[:i-1]
    prev = np.zeros(len(text) + 1, np.int64)
    starts = np.arange(len(text) + 1)
    older, older_starts = prev, starts
    for i in range(1, n + 1):
        cur = np.empty_like(prev)
        cur[0] = i * wrong
        cur_start = np.empty_like(starts)
        cur_start[0] = 0
        for j in range(1, len(text) + 1):
            options = [(prev[j - 1] + _word_cost(target[i - 1], text[j - 1], wrong), starts[j - 1]),
                       (prev[j] + wrong, starts[j]), (cur[j - 1] + wrong, cur_start[j - 1])]
            if i >= 2 and target[i - 2] + target[i - 1] == text[j - 1]:  # two words heard as one
                options.append((older[j - 1] + 1, older_starts[j - 1]))
            if j >= 2 and target[i - 1] == text[j - 2] + text[j - 1]:  # one word heard as two
                options.append((prev[j - 2] + 1, starts[j - 2]))
            cur[j], cur_start[j] = min(options)
        older, older_starts = prev, starts
        prev, starts = cur, cur_start
    for j in range(1, len(text) + 1):
        if starts[j] < len(words) and prev[j] < best:
            best = int(prev[j])
    return divmod(best, wrong)


@dataclass
class TextQuery:
    """One text query against one text space: its sentence vector ``(dim,)`` float32 and its words."""

    space: SpaceData
    vector: np.ndarray
    text: str
    lexical: LexicalIndex
    allowed: np.ndarray | None = None  # sorted int64 media ids a filter lets through; None: all

    def __post_init__(self) -> None:
        self.phrases = phrases_of(self.text)
        self._segment_media = self.space.segment_rows.column("media_id").to_numpy()
        self._live = np.isin(self._segment_media, self.space.live_media_ids())
        if self.allowed is not None:
            self._live &= np.isin(self._segment_media, self.allowed)
        self._phrase_rows, self._phrase_exact = (
            self.lexical.rows_with(self.phrases, self._segment_media) if self.phrases else (None, None)
        )
        self._bm25 = self.lexical.bm25(self.text)  # BM25 of every row, once for all that follows
        self._near: dict[int, np.ndarray] = {}

    def candidates(self, n: int = CANDIDATES) -> np.ndarray:
        """Segment rows worth scoring: the best by meaning and the best by words (those holding every phrase)."""
        if self._phrase_rows is not None:
            return self._phrase_rows[self._live[self._phrase_rows]]
        return self._nearest(n)

    def baseline(self, n: int = CANDIDATES) -> tuple[float, float, int]:
        """What a segment typically scores for the query, against which a found one is standardised
        (:func:`mmsearch.retrieval.fuse_moments`): mean, standard deviation and number of the scores
        of the ``n`` nearest segments by meaning and by words (quoted phrases or not)."""
        scores = self.scores(self._nearest(n)).astype(np.float64)
        if len(scores) < 2:
            return 0.0, 1.0, len(scores)
        return float(scores.mean()), float(scores.std()) or 1.0, len(scores)

    def _nearest(self, n: int) -> np.ndarray:
        if n not in self._near:  # candidates() and baseline() both ask
            bm25, keep = self._bm25, None
            if self.allowed is not None:  # the filter applies inside both searches, not to their top n
                keep = self._live
                bm25 = (None if bm25[0] is None else np.where(keep, bm25[0], 0.0), bm25[1])
            rows = [self.lexical.top(bm25, n)]
            index = self.space.moment_index  # a text space's moment row i is its segment row i
            if index is not None and index.ntotal:
                _, found = index.search(self.vector[None].astype(np.float32), min(n, index.ntotal), keep=keep)
                rows.append(found[0][found[0] >= 0].astype(np.int64))
            merged = np.unique(np.concatenate(rows))
            self._near[n] = merged[self._live[merged]]
        return self._near[n]

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Fused scores of segment rows (see the module); 0 for a row without a quoted phrase it needs."""
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return np.zeros(0, np.float32)
        semantic = np.asarray(self.space.segment_vectors[rows], np.float32) @ self.vector
        lexical = self.lexical.normalised(self._bm25, rows)
        if self._phrase_rows is not None:  # a phrase said word for word counts fully, with a word wrong as 0.8
            where = np.searchsorted(self._phrase_rows, rows).clip(0, max(0, len(self._phrase_rows) - 1))
            held = len(self._phrase_rows) > 0
            matched = (self._phrase_rows[where] == rows) if held else np.zeros(len(rows), bool)
            exact = matched & (self._phrase_exact[where] if held else False)
            lexical = np.where(exact, 1.0, np.where(matched, np.maximum(lexical, 0.8), 0.0))
            semantic = np.where(matched, semantic, 0.0)
        fused = (1 - LEXICAL_WEIGHT) * semantic + LEXICAL_WEIGHT * lexical
        return fused.astype(np.float32)


def search_text(query: TextQuery, *, k: int) -> list[tuple[Hit, str]]:
    """The best ``k`` segments for ``query`` as moments, with their words, best first.

    Only segments of the media ``query`` allows (its filter). A moment is a segment: its start and end are
    those of the sentence, subtitle or line; of segments that overlap in time (a sentence said and
    its subtitle, two lines on one slide) the best is the moment. Equal scores rank by media id,
    then start.
    """
    rows = query.candidates(max(CANDIDATES, 5 * k))
    scores = query.scores(rows)
    starts, ends = query.space.segment_bounds(rows)
    texts = query.lexical.texts
    order = sorted(range(len(rows)), key=lambda i: (-round(float(scores[i]), 6), int(query._segment_media[rows[i]]), float(starts[i])))
    out: list[tuple[Hit, str]] = []
    for i in order:
        r = int(rows[i])
        hit = Hit(int(query._segment_media[r]), float(starts[i]), float(ends[i]), float(scores[i]), None, float(scores[i]))
        if any(overlaps(hit, kept) for kept, _ in out):  # the same words twice: said and subtitled, or two lines
            continue
        out.append((hit, texts[r]))
        if len(out) == k:
            break
    return out

