"""House-style rewrites of case summaries, and a normalisation that keeps offsets.

DWC IMR case summaries are written in a few house styles that say the same thing in
different words. A model that scores the style instead of the case is unfair to a user
whose own summary follows neither, so the styles are rewritten here by exact rules:

* **Person nouns.** "injured worker(s)" (also "injured worker (IW)", "the IW", "the
  worker(s)"), "applicant(s)" and "claimant(s)" are one house style each; "patient(s)"
  is another.
  Whole words only (a hyphen counts as part of a word, so "patient-reported" and
  "inpatient" are left alone), case preserved ("The injured worker" <-> "The patient",
  "INJURED WORKER" <-> "PATIENT"), possessives and plurals kept ("injured workers'" <->
  "patients'"), and an article just before is fixed ("a patient" <-> "an injured
  worker").
* **Openers.** Sentence-initial phrases that only say "the records show" (the list is
  :data:`OPENER_VARIANTS`, found in the DWC letters' summaries) are replaced by the
  style's canonical opener: :data:`PATIENT_OPENER` ("According to the records,") or
  :data:`INJURED_WORKER_OPENER` ("The records presented for review indicate"). A
  trailing "that" is part of the opener. "Sentence-initial" means at the start of the
  text or a line, or after ".", "!" or "?" and one whitespace character.

:func:`normalize_house_style` rewrites to the patient style and keeps a character map
back to the input, so spans found on the normalised text (evidence offsets) can be
reported on the caller's string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from imr_outcome.errors import InvalidInputError

Style = Literal["patient", "injured_worker", "applicant"]

PATIENT_OPENER = "According to the records,"
INJURED_WORKER_OPENER = "The records presented for review indicate"

#: The opener variants (regular expressions, without the optional trailing "that").
OPENER_VARIANTS: tuple[str, ...] = (
    r"The\s+records\s+presented\s+for\s+review\s+indicates?",
    r"A\s+review\s+of\s+(?:the\s+)?medical\s+records\s+(?:indicates|shows|reveals?)",
    r"Review\s+of\s+(?:the\s+)?(?:medical\s+)?records\s+(?:indicates|shows|reveals)",
    r"Medical\s+record\s+review\s+indicates",
    r"(?:The\s+)?[Mm]edical\s+records\s+(?:indicated?|show(?:ed)?|reveal(?:ed)?)",
    r"The\s+records?\s+(?:indicate[sd]?|show(?:s|ed)?)",
    r"According\s+to\s+(?:the\s+)?(?:medical\s+)?records(?:\s+available\s+for\s+review)?,",
)

_SENTENCE_START = r"(?:(?m:^)|(?<=[.!?]\s))"


#: The non-ASCII letters that ``re.IGNORECASE`` matches to ASCII ones (Python ``re``
#: docs: capital I with dot, dotless i, long s and the Kelvin sign).
_FOLDED_TO_ASCII = "\u0130\u0131\u017f\u212a"


def first_char_guard(pattern: str, first_letters: str) -> re.Pattern[str]:
    """Compile ``pattern`` behind a lookahead for the letters its matches can start
    with: the same matches, found 2-3x faster on case summaries, because ``re`` then
    gives up at other positions at once (300-word summaries, best of 5 in one run: the
    person-noun rule 2.1x, the sex-word rule 3.1x faster).

    Args:
        pattern: a regular expression; every match starts with a letter that equals one
            of ``first_letters`` ignoring case.
        first_letters: those letters. The guard admits each in either case and the
            non-ASCII letters ``re.IGNORECASE`` equates with them, so a case-insensitive
            part of ``pattern`` loses no match.

    Returns:
        The compiled, guarded pattern (groups unchanged).
    """
    candidates = {*first_letters, *first_letters.upper(), *first_letters.lower()}
    candidates |= {
        char
        for char in _FOLDED_TO_ASCII
        if any(re.fullmatch(letter, char, re.IGNORECASE) for letter in first_letters)
    }
    guard = "".join(sorted(candidates))
    return re.compile(f"(?=[{re.escape(guard)}])(?:{pattern})")


OPENER_PATTERN = _SENTENCE_START + r"(?:" + "|".join(OPENER_VARIANTS) + r")(?:\s+that\b)?(?=\s)"
#: Every variant starts with "The", "A", "Review", "Medical" or "According".
_OPENER = first_char_guard(OPENER_PATTERN, "tarm")
NOUN_PATTERN = (
    r"(?P<article>\b(?:an?|An?|AN?)\s+)?"
    r"(?<![\w-])(?:"
    r"(?P<iw>(?i:injured\s+worker(?P<iw_pl>s)?)(?:\s*\(IW\))?)"
    r"|(?P<pt>(?i:patient(?P<pt_pl>s)?))"
    r"|(?P<app>(?i:applicant(?P<app_pl>s)?))"
    r"|(?P<clm>(?i:claimant(?P<clm_pl>s)?))"
    r"|(?<=[Tt]he\s)(?P<w>(?i:worker(?P<w_pl>s)?))"
    r"|(?<=[Tt]he\s)(?P<abbr>IW)"
    r")(?![\w-])"
)
#: Matches start with an article ("a", "an") or a person noun: injured worker, IW,
#: patient, applicant, claimant, worker, in any case.
_NOUN = first_char_guard(NOUN_PATTERN, "aipcw")
_NOUN_TARGET: dict[Style, str] = {
    "patient": "patient",
    "injured_worker": "injured worker",
    "applicant": "applicant",
}
_NOUN_STYLE: dict[str, str] = {
    "iw": "injured_worker",
    "w": "injured_worker",
    "abbr": "injured_worker",
    "pt": "patient",
    "app": "applicant",
    "clm": "claimant",
}


@dataclass(frozen=True)
class Edit:
    """Replace ``source[start:end]`` by ``replacement`` (0 <= start <= end <= len)."""

    start: int
    end: int
    replacement: str


@dataclass(frozen=True)
class NormalizedText:
    """A rewritten string and the map from its characters back to the source.

    Attributes:
        text: the rewritten string.
        source: the string that was rewritten.
        edits: the applied edits, in text order, non-overlapping.
        start_map: ``len(text) + 1`` source offsets; ``start_map[i]`` is where a span
            starting at ``text[i]`` starts in ``source`` (the start of the replaced
            phrase when ``i`` lies inside a replacement). Built on first use: scoring
            never needs it, evidence does.
        end_map: ``len(text) + 1`` source offsets; ``end_map[j]`` is where a span ending
            (exclusive) at ``j`` ends in ``source`` (the end of the replaced phrase when
            ``j`` lies inside or at the end of a replacement). Built on first use.
    """

    text: str
    source: str
    edits: tuple[Edit, ...]

    @cached_property
    def start_map(self) -> tuple[int, ...]:
        """See the class docstring."""
        return self._maps[0]

    @cached_property
    def end_map(self) -> tuple[int, ...]:
        """See the class docstring."""
        return self._maps[1]

    @cached_property
    def _maps(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        start_map: list[int] = []
        end_map: list[int] = [0]
        position = 0
        for edit in self.edits:
            start_map.extend(range(position, edit.start))
            end_map.extend(range(position + 1, edit.start + 1))
            start_map.extend([edit.start] * len(edit.replacement))
            end_map.extend([edit.end] * len(edit.replacement))
            position = edit.end
        start_map.extend(range(position, len(self.source) + 1))
        end_map.extend(range(position + 1, len(self.source) + 1))
        return tuple(start_map), tuple(end_map)

    def to_source_span(self, start: int, end: int) -> tuple[int, int]:
        """Map a span ``text[start:end]`` to the span of ``source`` it came from.

        Outside replaced phrases the map is exact (``text[start:end] ==
        source[s:e]``); a span that touches a replaced phrase grows to cover the whole
        original phrase.

        Args:
            start: span start in ``text``, 0 <= start <= end.
            end: span end (exclusive) in ``text``, end <= len(text).

        Returns:
            ``(s, e)`` offsets into ``source``; an empty span maps to an empty span.

        Raises:
            InvalidInputError: for a span outside ``text`` or with ``start > end``.
        """
        if not 0 <= start <= end <= len(self.text):
            raise InvalidInputError(
                "span",
                f"expected 0 <= start <= end <= {len(self.text)}, got ({start}, {end})",
            )
        if start == end:
            return self.start_map[start], self.start_map[start]
        return self.start_map[start], self.end_map[end]


def apply_edits(source: str, edits: Iterable[Edit]) -> NormalizedText:
    """Apply non-overlapping edits; the offset maps are built when first read.

    Args:
        source: the text to rewrite.
        edits: replacements on ``source``; any order, must not overlap.

    Returns:
        The :class:`NormalizedText`.

    Raises:
        InvalidInputError: for overlapping or out-of-range edits.
    """
    ordered = tuple(sorted(edits, key=lambda edit: (edit.start, edit.end)))
    parts: list[str] = []
    position = 0
    for edit in ordered:
        if not position <= edit.start <= edit.end <= len(source):
            raise InvalidInputError(
                "edits", f"overlapping or out-of-range edit {edit} at offset {position}"
            )
        parts.append(source[position : edit.start])
        parts.append(edit.replacement)
        position = edit.end
    parts.append(source[position:])
    return NormalizedText("".join(parts), source, ordered)


def match_case(source: str, target: str) -> str:
    """Give ``target`` the letter case of ``source``.

    Rules, in order: all-upper source (two letters or more) -> upper target; a source of
    several words that are all capitalised -> title-case target; capitalised first letter
    -> capitalised first letter; otherwise ``target`` as given.

    Args:
        source: the phrase being replaced, non-empty.
        target: the replacement, in lower case.

    Returns:
        ``target`` in ``source``'s case.
    """
    letters = [char for char in source if char.isalpha()]
    if len(letters) > 1 and all(char.isupper() for char in letters):
        return target.upper()
    words = source.split()
    if len(words) > 1 and all(word[:1].isupper() for word in words):
        return " ".join(word[:1].upper() + word[1:] for word in target.split())
    if source[:1].isupper():
        return target[:1].upper() + target[1:]
    return target


def regex_edits(
    text: str, pattern: re.Pattern[str], replace: Callable[[re.Match[str]], str]
) -> list[Edit]:
    """Edits for every match of ``pattern`` whose replacement differs from the match.

    Args:
        text: the text to scan.
        pattern: the rule; matches are found left to right and never overlap.
        replace: the replacement of one match.

    Returns:
        The edits, in text order.
    """
    edits: list[Edit] = []
    for match in pattern.finditer(text):
        replacement = replace(match)
        if replacement != match.group(0):
            edits.append(Edit(match.start(), match.end(), replacement))
    return edits


def _noun_replacement(match: re.Match[str], style: Style) -> str:
    kind = next(name for name in _NOUN_STYLE if match.group(name) is not None)
    if _NOUN_STYLE[kind] == style:
        return match.group(0)
    plural = kind != "abbr" and match.group(f"{kind}_pl") is not None
    target = _NOUN_TARGET[style] + ("s" if plural else "")
    # "IW" is an abbreviation, not shouting, and "the worker" keeps its lower-case "the".
    noun = target if kind in ("abbr", "w") else match_case(match.group(kind), target)
    article = match.group("article")
    if article is None:
        return noun
    word = article.rstrip()
    new_word = "an" if target[0] in "aeiou" else "a"
    # "A" is capitalised, "AN" upper case: match_case needs two letters to see upper case.
    if len(word) > 1 or not word.isupper():
        new_word = match_case(word, new_word)
    else:
        new_word = new_word.capitalize()
    return new_word + article[len(word) :] + noun


def house_style_edits(text: str, style: Style) -> list[Edit]:
    """The edits that rewrite ``text`` into ``style`` (see the module docstring).

    Args:
        text: a request or case summary.
        style: ``"patient"`` or ``"injured_worker"``.

    Returns:
        Non-overlapping edits in text order (empty when ``text`` is already in style).

    Raises:
        InvalidInputError: for an unknown style.
    """
    if style not in _NOUN_TARGET:
        raise InvalidInputError(
            "style", f"expected 'patient', 'injured_worker' or 'applicant', got {style!r}"
        )
    opener = INJURED_WORKER_OPENER if style == "injured_worker" else PATIENT_OPENER
    edits = regex_edits(text, _OPENER, lambda match: opener)
    edits += regex_edits(text, _NOUN, lambda match: _noun_replacement(match, style))
    return sorted(edits, key=lambda edit: edit.start)


def _rewrite(text: str, style: Style) -> str:
    return apply_edits(text, house_style_edits(text, style)).text


def to_patient_style(text: str) -> str:
    """Rewrite into the "patient" house style ("the patient", "According to the records,").

    Args:
        text: a request or case summary.

    Returns:
        The rewritten text; ``text`` itself when nothing matched.
    """
    return _rewrite(text, "patient")


def to_injured_worker_style(text: str) -> str:
    """Rewrite into the "injured worker" house style ("the injured worker", "The records
    presented for review indicate").

    Args:
        text: a request or case summary.

    Returns:
        The rewritten text; ``text`` itself when nothing matched.
    """
    return _rewrite(text, "injured_worker")


def to_applicant_style(text: str) -> str:
    """Rewrite into the "applicant" house style ("the applicant", "According to the
    records,"), a third style of the DWC letters (e.g. CM16-0219557).

    Args:
        text: a request or case summary.

    Returns:
        The rewritten text; ``text`` itself when nothing matched.
    """
    return _rewrite(text, "applicant")


def normalize_house_style(text: str) -> NormalizedText:
    """Normalise house style to the patient style, keeping a map to ``text``'s offsets.

    The same rules as :func:`to_patient_style`, so every house-style variant of one
    summary normalises to the same string. Use ``result.text`` as model input and
    ``result.to_source_span`` to report spans found on it as offsets into ``text``.

    Args:
        text: a request or case summary as the caller sent it.

    Returns:
        The :class:`NormalizedText` (``result.source is text``).
    """
    return apply_edits(text, house_style_edits(text, "patient"))


def normalize_all(texts: Sequence[str]) -> list[str]:
    """Normalised text of each input (a convenience for vectorisers); see
    :func:`normalize_house_style`."""
    return [normalize_house_style(text).text for text in texts]
