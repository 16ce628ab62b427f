"""Attributions as character stretches of the caller's text: words, phrases, the strongest.

An :class:`Attribution` is a signed score on a stretch of the ``request`` or ``summary``
string the caller passed (offsets index that exact string). Explainers score word pieces
(:class:`TokenAttribution`, :mod:`imr_outcome.model.attribution_tokens`) or n-grams; this
module sums them into words (:func:`word_scores`), merges same-sign words into phrases
(:func:`phrase_spans`) or keeps the strongest of overlapping stretches
(:func:`strongest_disjoint`), and keeps the strongest per direction
(:func:`top_attributions`). Pure text arithmetic: no model, no torch.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Field = Literal["request", "summary"]

#: Longest phrase, in words, that adjacent same-sign words are merged into.
MAX_SPAN_WORDS = 8

#: A word is a maximal run of non-whitespace characters (Python's ``str.isspace``, which
#: includes tabs, newlines, no-break and ideographic spaces).
_WORD_RE = re.compile(r"\S+")

#: Characters that end a sentence when they end a word (after closing quotes/brackets):
#: . ! ? and the ellipsis, ideographic full stop, fullwidth exclamation and question marks.
_SENTENCE_END = frozenset(".!?\u2026\u3002\uff01\uff1f")
_CLOSERS = "\"')]}»”’"


@dataclass(frozen=True)
class Attribution:
    """A scored stretch of one input field.

    Attributes:
        field: ``"request"`` or ``"summary"``: the caller's string the offsets index.
        start: first character, 0-based.
        end: one past the last character, ``end > start``.
        score: signed attribution in the explainer's units (logit-margin units for
            integrated gradients, log-odds for TF-IDF); positive pushes toward Overturned.
    """

    field: Field
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class TokenAttribution(Attribution):
    """One word piece: its character stretch and its integrated-gradients attribution.

    Overlapping windows of a chunked input each attribute the tokens they share; the score
    is the mean over the windows holding the token (a request token sits in every window).
    """


@dataclass(frozen=True)
class WordAttribution(Attribution):
    """One whitespace-delimited word and the summed attribution of its pieces (0 if none)."""


def words(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of ``text`` (maximal runs of non-whitespace).

    Args:
        text: any string.

    Returns:
        ``(start, end)`` per word, in text order; ``text[start:end]`` holds no whitespace.
    """
    return [match.span() for match in _WORD_RE.finditer(text)]


def field_text(field: Field, request: str, summary: str) -> str:
    return request if field == "request" else summary


def word_scores(
    attributions: Iterable[Attribution], request: str, summary: str
) -> list[WordAttribution]:
    """Sum token (or n-gram) attributions into the words of ``request`` and ``summary``.

    A stretch's score is split evenly among the words it overlaps: a word piece lies in one
    word (whitespace around it is ignored), a TF-IDF n-gram may span several.

    Args:
        attributions: scored stretches of either field.
        request: the caller's request string.
        summary: the caller's summary string.

    Returns:
        Every word of the request, then every word of the summary, in text order, each
        with its summed score (0.0 for a word no stretch touches).
    """
    by_field: dict[Field, list[Attribution]] = {"request": [], "summary": []}
    for attribution in attributions:
        by_field[attribution.field].append(attribution)
    result: list[WordAttribution] = []
    for field in ("request", "summary"):
        text = field_text(field, request, summary)
        spans = words(text)
        starts = [start for start, _ in spans]
        scores = np.zeros(len(spans), dtype=np.float64)
        for item in by_field[field]:
            first = bisect.bisect_right(starts, item.start) - 1
            if first < 0 or item.start >= spans[first][1]:
                first += 1  # the stretch starts in whitespace: the next word
            last = bisect.bisect_left(starts, item.end) - 1  # last word starting before end
            if first > last:
                continue  # whitespace only
            scores[first : last + 1] += item.score / (last - first + 1)
        result.extend(
            WordAttribution(field, start, end, float(score))
            for (start, end), score in zip(spans, scores, strict=True)
        )
    return result


def _ends_sentence(word: str) -> bool:
    stripped = word.rstrip(_CLOSERS)
    return bool(stripped) and stripped[-1] in _SENTENCE_END


def phrase_spans(
    word_attributions: Sequence[WordAttribution], text: str, *, max_words: int = MAX_SPAN_WORDS
) -> list[Attribution]:
    """Merge adjacent words of one field with the same sign into phrases.

    A phrase never crosses a sentence end (a word ending in ``. ! ? …`` or their CJK forms,
    or a line break between words), a zero-score word, or ``max_words`` words.

    Args:
        word_attributions: the words of one field, in text order.
        text: that field's string (the one the offsets index).
        max_words: longest phrase in words, >= 1.

    Returns:
        Phrases in text order; score = the sum of their words' scores (never 0).
    """
    phrases: list[Attribution] = []
    run: list[WordAttribution] = []

    def flush() -> None:
        if run:
            total = float(sum(word.score for word in run))
            phrases.append(Attribution(run[0].field, run[0].start, run[-1].end, total))
            run.clear()

    for word in word_attributions:
        sign = np.sign(word.score)
        if run:
            previous = run[-1]
            if (
                sign != np.sign(previous.score)
                or len(run) >= max_words
                or _ends_sentence(text[previous.start : previous.end])
                or "\n" in text[previous.end : word.start]
            ):
                flush()
        if sign == 0:
            flush()
        else:
            run.append(word)
    flush()
    return phrases


def top_attributions(candidates: Iterable[Attribution], top_k: int) -> list[Attribution]:
    """The ``top_k`` strongest non-zero candidates per direction, strongest first overall
    (positive scores push toward Overturned, negative toward Upheld)."""
    ranked = sorted(
        (item for item in candidates if item.score != 0),
        key=lambda item: (-abs(item.score), item.field, item.start),
    )
    chosen: list[Attribution] = []
    taken = {True: 0, False: 0}
    for item in ranked:
        if taken[item.score > 0] >= top_k:
            continue
        taken[item.score > 0] += 1
        chosen.append(item)
    return chosen


def strongest_disjoint(spans: Iterable[Attribution]) -> list[Attribution]:
    """The strongest stretches that do not overlap: each is kept unless a stronger kept
    stretch of the same field overlaps it (greedy by ``|score|``, ties by position).

    Used for n-gram evidence, where every overlapping word and bigram is a feature: merging
    overlaps would chain a whole summary into one stretch, while this keeps each stretch
    one n-gram a person can check.

    Args:
        spans: scored stretches of either field.

    Returns:
        Non-overlapping stretches, by field then start.
    """
    covered: dict[str, list[tuple[int, int]]] = {}
    kept: list[Attribution] = []
    for span in sorted(spans, key=lambda item: (-abs(item.score), item.field, item.start)):
        taken = covered.setdefault(span.field, [])
        at = bisect.bisect_left(taken, (span.start, span.end))
        neighbours = taken[max(at - 1, 0) : at + 1]
        if any(start < span.end and span.start < end for start, end in neighbours):
            continue
        taken.insert(at, (span.start, span.end))
        kept.append(span)
    return sorted(kept, key=lambda item: (item.field, item.start, item.end))
