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
lexical side). Words in double quotes are a phrase the segment must hold word for word (case and
punctuation aside); a phrase may run on into the next segment of the same media.

The lexical index is built from the committed words of a snapshot (the ``text`` column of the
space's segments) when the first query needs it, so it always belongs to the generation being
searched and has nothing of its own to corrupt; building it costs about 1 s per 100k segments
(benchmarks/speech_search.py).

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

from .retrieval import Hit
from .store import SpaceData

__all__ = ["LEXICAL_WEIGHT", "LexicalIndex", "TextQuery", "phrases_of", "search_text", "words_of"]

logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs each index build at DEBUG on the root handler

LEXICAL_WEIGHT = 0.3
CANDIDATES = 100  # segments taken from each side before fusing
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

    def query_tokens(self, query: str) -> list[str]:
        import bm25s

        found = bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)[0]
        return [t for t in found if t in self.vocab]

    def search(self, query: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, lexical scores in [0, 1]) of the ``n`` best segments holding a word of ``query``."""
        tokens = self.query_tokens(query)
        if not tokens or self.retriever is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = self.retriever.get_scores(tokens)[: self.n]
        top = np.argsort(-scores, kind="stable")[: min(n, self.n)]
        top = top[scores[top] > 0].astype(np.int64)
        return top, self._normalise(scores[top], top, tokens)

    def scores(self, query: str, rows: np.ndarray) -> np.ndarray:
        """Lexical scores in [0, 1] of given segment rows."""
        tokens = self.query_tokens(query)
        rows = np.asarray(rows, np.int64)
        if not tokens or not len(rows) or self.retriever is None:
            return np.zeros(len(rows), np.float32)
        return self._normalise(self.retriever.get_scores(tokens)[rows], rows, tokens)

    def _normalise(self, scores: np.ndarray, rows: np.ndarray, tokens: list[str]) -> np.ndarray:
        """BM25 divided by what each row would score holding every query word once (its own length
        kept): the IDF-weighted share of the query's words the row holds, in [0, 1]."""
        ids = np.asarray([self.vocab[t] for t in dict.fromkeys(tokens)], np.int64)
        norm = K1 * (1 - B + B * self.lengths[rows] / self.avgdl)
        best = float(np.sum(self.idf[ids])) / (1.0 + norm)
        return (scores / np.maximum(best, 1e-9)).clip(0, 1).astype(np.float32)

    def rows_with(self, phrases: list[str], media_ids: np.ndarray) -> np.ndarray:
        """Rows whose words hold every phrase, alone or run on into the next row of the same media."""
        if self._normalised is None:
            self._normalised = [" " + " ".join(words_of(t)) + " " for t in self.texts]
        norm = self._normalised
        out = []
        wanted = [f" {p} " for p in phrases]
        for i, text in enumerate(norm):
            following = norm[i + 1] if i + 1 < self.n and media_ids[i + 1] == media_ids[i] else " "
            joined = text + following.lstrip()
            # the phrase is in this row, or starts in it and runs on into the next
            if all(p in text or (p in joined and p not in following) for p in wanted):
                out.append(i)
        return np.asarray(out, np.int64)


@dataclass
class TextQuery:
    """One text query against one text space: its sentence vector ``(dim,)`` float32 and its words."""

    space: SpaceData
    vector: np.ndarray
    text: str
    lexical: LexicalIndex

    def __post_init__(self) -> None:
        self.phrases = phrases_of(self.text)
        self._segment_media = self.space.segment_rows.column("media_id").to_numpy()
        self._live = np.isin(self._segment_media, self.space.live_media_ids())
        self._phrase_rows = self.lexical.rows_with(self.phrases, self._segment_media) if self.phrases else None

    def candidates(self, n: int = CANDIDATES) -> np.ndarray:
        """Segment rows worth scoring: the best by meaning and the best by words (those holding every phrase)."""
        if self._phrase_rows is not None:
            return self._phrase_rows[self._live[self._phrase_rows]]
        rows = [self.lexical.search(self.text, n)[0]]
        index = self.space.moment_index  # a text space's moment row i is its segment row i
        if index is not None and index.ntotal:
            _, found = index.search(self.vector[None].astype(np.float32), min(n, index.ntotal))
            rows.append(found[0][found[0] >= 0].astype(np.int64))
        merged = np.unique(np.concatenate(rows))
        return merged[self._live[merged]]

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Fused scores of segment rows (see the module); 0 for a row without a quoted phrase it needs."""
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return np.zeros(0, np.float32)
        semantic = np.asarray(self.space.segment_vectors[rows], np.float32) @ self.vector
        lexical = self.lexical.scores(self.text, rows)
        fused = (1 - LEXICAL_WEIGHT) * semantic + LEXICAL_WEIGHT * lexical
        if self._phrase_rows is not None:
            fused = np.where(np.isin(rows, self._phrase_rows), fused, 0.0)
        return fused.astype(np.float32)


def search_text(query: TextQuery, *, k: int, media: list[int] | None = None) -> list[tuple[Hit, str]]:
    """The best ``k`` segments for ``query`` as moments, with their words, best first.

    ``media``: only segments of these media ids. A moment is a segment: its start and end are
    those of the sentence, subtitle or line. Equal scores rank by media id, then start.
    """
    rows = query.candidates(max(CANDIDATES, 5 * k))
    if media is not None:
        rows = rows[np.isin(query._segment_media[rows], np.asarray(list(media), np.int64))]
    scores = query.scores(rows)
    starts = query.space.segment_rows.column("start").to_numpy()
    ends = query.space.segment_rows.column("end").to_numpy()
    texts = query.lexical.texts
    order = sorted(range(len(rows)), key=lambda i: (-round(float(scores[i]), 6), int(query._segment_media[rows[i]]), float(starts[rows[i]])))
    out = []
    for i in order[:k]:
        r = int(rows[i])
        score = float(scores[i])
        out.append((Hit(int(query._segment_media[r]), float(starts[r]), float(ends[r]), score, None, score), texts[r]))
    return out
