"""Word n-grams as scikit-learn's ``TfidfVectorizer`` reads them, and where they occur.

The TF-IDF kind (:class:`imr_outcome.model.baselines.TfidfLogReg`) builds its vocabulary
with :data:`TOKEN_PATTERN` and :class:`JointAnalyzer`; the evidence code finds each
n-gram of a prediction in the caller's text with :func:`ngram_spans`, tokenizing exactly
as the model did.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from sklearn.feature_extraction.text import TfidfVectorizer

from imr_outcome.data.counterfactuals import normalize_text
from imr_outcome.errors import InvalidInputError

#: The word pattern of scikit-learn's ``CountVectorizer``/``TfidfVectorizer`` default:
#: runs of two or more word characters. Set explicitly on the vectorizer so that
#: :func:`ngram_spans` tokenizes exactly as the model does.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
_TOKEN_RE = re.compile(TOKEN_PATTERN)


def _tokens_with_offsets(text: str) -> list[tuple[str, int, int]]:
    """The analyzer's words of ``text`` with their character offsets in ``text``.

    The vectorizer lowercases the whole string, then finds :data:`TOKEN_PATTERN`.
    Lowercasing can lengthen a character (``"İ"`` becomes ``"i̇"``, two code points), so
    each lowered character is mapped back to the original character it came from.

    Returns:
        ``(word, start, end)`` per word, in text order: ``word`` is lowercase as the
        analyzer sees it, and ``text[start:end]`` is the original text it was read from.
    """
    parts = [char.lower() for char in text]
    lowered = text.lower()
    if len(lowered) != sum(len(part) for part in parts):  # context rules; not in CPython
        lowered = "".join(parts)
    origin = [i for i, part in enumerate(parts) for _ in part]
    return [
        (m.group(), origin[m.start()], origin[m.end() - 1] + 1) for m in _TOKEN_RE.finditer(lowered)
    ]


def ngram_spans(text: str, ngram: str) -> list[tuple[int, int]]:
    """Character spans of every occurrence of a TF-IDF n-gram in ``text``.

    Words are found as :class:`TfidfVectorizer` finds them (lowercase, then
    :data:`TOKEN_PATTERN`), so an n-gram matches wherever the model counted it: across
    any whitespace, punctuation or one-letter words between its words, and overlapping
    occurrences are all returned.

    Args:
        text: a model-input segment (``ModelInput.text`` or ``ModelInput.text_pair``).
        ngram: a feature's n-gram, its words separated by single spaces (as in
            :meth:`~imr_outcome.model.baselines.TfidfLogReg.feature_contributions`); case
            does not matter.

    Returns:
        ``(start, end)`` character offsets into ``text``, in text order; ``text[start:end]``
        runs from the first character of the first word to the last character of the
        last word. When the n-gram is not in ``text`` itself, it is looked up in the
        normalised text of :func:`normalized_lowercase` and each match is mapped back with
        ``NormalizedText.to_source_span`` (a span covering a rewritten phrase covers the
        whole original phrase). Empty when the n-gram occurs in neither.

    Raises:
        InvalidInputError: ``ngram`` holds no word of two or more word characters.
    """
    wanted = [word for word, _, _ in _tokens_with_offsets(ngram)]
    if not wanted:
        raise InvalidInputError(
            "ngram", f"expected words of two or more letters or digits, found {ngram!r}"
        )
    found = _find_words(text, wanted)
    if found:
        return found
    # A feature of a normalising model (model.normalize): find it in the normalised text
    # and map it back, so "patient" highlights the caller's "injured worker".
    normalized = normalize_text(text, dates=True, sex=True)
    if normalized.text == text:
        return []
    spans = {normalized.to_source_span(*span) for span in _find_words(normalized.text, wanted)}
    return sorted(spans)


def _find_words(text: str, wanted: list[str]) -> list[tuple[int, int]]:
    """Spans of every run of tokens of ``text`` equal to ``wanted``."""
    tokens = _tokens_with_offsets(text)
    words = [word for word, _, _ in tokens]
    n = len(wanted)
    return [
        (tokens[i][1], tokens[i + n - 1][2])
        for i in range(len(tokens) - n + 1)
        if words[i : i + n] == wanted
    ]


@functools.lru_cache(maxsize=8192)
def normalized_lowercase(text: str) -> str:
    """The TF-IDF preprocessor of ``model.normalize``: house style, date formats and the
    patient's sex normalised (:func:`imr_outcome.data.counterfactuals.normalize_text` with
    ``dates=True, sex=True``), then lowercased.

    The normalisation lives in the vectorizer, not in ``build_model_input``, so the text
    and offsets every other kind and the evidence code see are the caller's own. Evidence
    n-grams that exist only in normalised form (e.g. "patient" for "injured worker") are
    not found in the caller's text and give no span. Cached: cross-validation tokenizes
    the same items many times.
    """
    return normalize_text(text, dates=True, sex=True).text.lower()


#: Joins the request and the summary in the joint column; n-grams never cross it.
SEGMENT_SEPARATOR = "\x1e"


class JointAnalyzer:
    """Word 1..``ngram_max``-grams of each segment of a joined document, pooled.

    The segments (split on :data:`SEGMENT_SEPARATOR`) are analyzed exactly as a
    ``TfidfVectorizer`` with :data:`TOKEN_PATTERN` (lowercase, optionally
    :func:`normalized_lowercase`) would, so no n-gram spans the request/summary border
    and :func:`ngram_spans` finds every feature in one segment. Picklable.
    """

    def __init__(self, ngram_max: int, normalize: bool) -> None:
        self.ngram_max = ngram_max
        self.normalize = normalize

    def __getstate__(self) -> dict[str, Any]:
        return {"ngram_max": self.ngram_max, "normalize": self.normalize}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["ngram_max"], state["normalize"])  # type: ignore[misc]

    def __call__(self, document: str) -> list[str]:
        analyze = getattr(self, "_analyze", None)
        if analyze is None:
            analyze = self._analyze = TfidfVectorizer(
                lowercase=True,
                preprocessor=normalized_lowercase if self.normalize else None,
                token_pattern=TOKEN_PATTERN,
                ngram_range=(1, self.ngram_max),
            ).build_analyzer()
        return [gram for part in document.split(SEGMENT_SEPARATOR) for gram in analyze(part)]
