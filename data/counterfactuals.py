"""Counterfactual rewrites of a request or case summary, and training augmentation.

Each rewrite is a pure function ``str -> str`` that changes wording a fair model must
ignore and leaves everything else byte for byte. :data:`REWRITES` names them:

* ``house_style_to_patient`` / ``house_style_to_injured_worker`` /
  ``house_style_to_applicant``: the house-style rules
  of :mod:`imr_outcome.data.house_style` (person nouns and "the records show" openers).
* ``sex_swap``: the patient's sex, both directions in one pass (rules in :func:`sex_swap`).
* ``dates_to_long`` / ``dates_to_numeric``: "3/17/14", "03-17-2014" <-> "March 17, 2014"
  (rules in :func:`dates_to_long` and :func:`dates_to_numeric`).

:func:`augment_rows` turns training rows into their house-style (and optionally sex)
counterparts, so a model can be taught the invariance as well as tested for it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from imr_outcome.data.house_style import (
    Edit,
    NormalizedText,
    apply_edits,
    first_char_guard,
    house_style_edits,
    match_case,
    regex_edits,
    to_applicant_style,
    to_injured_worker_style,
    to_patient_style,
)
from imr_outcome.errors import InvalidInputError

Rewrite = Callable[[str], str]

#: Sex-marked words and their counterparts (lower case). "her" is resolved by
#: :func:`_her_replacement`; "hers" becomes "his".
SEX_PAIRS: dict[str, str] = {
    "he": "she",
    "she": "he",
    "him": "her",
    "his": "her",
    "hers": "his",
    "himself": "herself",
    "herself": "himself",
    "male": "female",
    "female": "male",
    "males": "females",
    "females": "males",
    "man": "woman",
    "woman": "man",
    "men": "women",
    "women": "men",
    "gentleman": "lady",
    "lady": "gentleman",
    "gentlemen": "ladies",
    "ladies": "gentlemen",
}

#: Words after which "her" is an object ("him"), not a possessive ("his"): prepositions,
#: conjunctions, determiners, adverbs and auxiliaries that cannot follow a possessive.
# fmt: off
HER_OBJECT_FOLLOWERS: frozenset[str] = frozenset((
    "to", "for", "with", "at", "on", "in", "into", "onto", "of", "from", "by", "about",
    "and", "or", "but", "nor", "that", "the", "a", "an", "as", "than", "back", "up", "down",
    "out", "off", "over", "again", "after", "before", "because", "if", "since", "until",
    "when", "while", "who", "whom", "which", "this", "these", "those", "some", "any", "no",
    "home", "today", "yesterday", "now", "then", "there", "here", "all", "both", "is", "was",
    "has", "had", "not", "so", "per", "via", "through", "during", "without", "under",
    "around", "regarding", "further", "well",
))
# fmt: on

SEX_WORD_PATTERN = (
    r"\b(?P<word>(?i:" + "|".join(sorted([*SEX_PAIRS, "her"], key=len, reverse=True)) + r"))\b"
    r"|(?<![\w.])(?P<title>Mrs|Mr|Ms)(?=\.|\s+[A-Z])"
)
_SEX_WORD = first_char_guard(SEX_WORD_PATTERN, "".join({word[0] for word in SEX_PAIRS}) + "m")
_NEXT_TOKEN = re.compile(r"\s*([A-Za-z]+|[0-9]|\S)?")
_TITLES = {"Mr": "Ms", "Ms": "Mr", "Mrs": "Mr"}

MONTHS: tuple[str, ...] = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MONTH_NUMBER = {name: number for number, name in enumerate(MONTHS, start=1)}
_MONTH_NUMBER.update({name[:3]: number for name, number in list(_MONTH_NUMBER.items())})
_MONTH_NUMBER["Sept"] = 9

_NUMERIC_DATE = re.compile(
    r"(?<![\w/.-])(?P<month>\d{1,2})(?P<sep>[/-])(?P<day>\d{1,2})(?P=sep)"
    r"(?P<year>\d{4}|\d{2})(?![\w/-]|\.\d)"
)
_LONG_DATE = re.compile(
    r"\b(?P<month>" + "|".join(sorted(_MONTH_NUMBER, key=len, reverse=True)) + r")\.?"
    r"\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<year>\d{4})(?!\w)"
)


def _her_replacement(text: str, end: int) -> str:
    following = _NEXT_TOKEN.match(text, end)
    token = following.group(1) if following else None
    if token is None or not (token[0].isalnum()) or token.lower() in HER_OBJECT_FOLLOWERS:
        return "him"
    return "his"


_FEMALE_WORDS = frozenset(
    {
        "she",
        "her",
        "hers",
        "herself",
        "female",
        "females",
        "woman",
        "women",
        "lady",
        "ladies",
        "Ms",
        "Mrs",
    }
)


def sex_edits(text: str, *, to_male_only: bool = False) -> list[Edit]:
    """The edits of :func:`sex_swap`; with ``to_male_only`` only female-marked words are
    rewritten (to their male counterparts), which normalises sex instead of swapping it.

    Args:
        text: a request or case summary.
        to_male_only: rewrite female words only.

    Returns:
        Non-overlapping edits in text order.
    """

    def replace(match: re.Match[str]) -> str:
        title = match.group("title")
        word = title if title is not None else match.group("word")
        if to_male_only and (word if title is not None else word.lower()) not in _FEMALE_WORDS:
            return word
        if title is not None:
            return _TITLES[title]
        lower = word.lower()
        target = _her_replacement(text, match.end()) if lower == "her" else SEX_PAIRS[lower]
        return match_case(word, target)

    return regex_edits(text, _SEX_WORD, replace)


def sex_swap(text: str) -> str:
    """Swap the sex of every sex-marked word, both directions in one pass.

    Rules: the whole words of :data:`SEX_PAIRS` (he <-> she, him -> her, his -> her,
    hers -> his, himself <-> herself, male <-> female, man <-> woman, men <-> women,
    gentleman <-> lady, with plurals) and the titles Mr. <-> Ms. (Mrs. -> Mr.; a title
    is "Mr"/"Ms"/"Mrs" in that exact case followed by "." or by a capitalised name).
    "her" becomes "him" when it ends the text or is followed by punctuation or by a word
    of :data:`HER_OBJECT_FOLLOWERS` ("told her that", "for her."), and "his" otherwise
    ("her left knee", "her 2 sessions"). The rule misreads "her" before a bare verb
    ("helped her walk" -> "helped his walk"), which is rare in case summaries. Letter
    case is kept (:func:`imr_outcome.data.house_style.match_case`). Because "his" and
    "hers" both map to one word, the swap is not exactly its own inverse.

    Args:
        text: a request or case summary.

    Returns:
        The rewritten text.
    """
    return apply_edits(text, sex_edits(text)).text


def two_digit_year(year: int) -> int:
    """Expand a two-digit year by the POSIX ``strptime %y`` pivot: 69-99 -> 1969-1999,
    00-68 -> 2000-2068 (the same as Python's ``datetime.strptime``).

    Args:
        year: 0-99.

    Returns:
        The four-digit year.
    """
    return 1900 + year if year >= 69 else 2000 + year


def _valid_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _long_date(match: re.Match[str]) -> str:
    year = int(match.group("year"))
    if len(match.group("year")) == 2:
        year = two_digit_year(year)
    value = _valid_date(year, int(match.group("month")), int(match.group("day")))
    if value is None:
        return match.group(0)
    return f"{MONTHS[value.month - 1]} {value.day}, {value.year}"


def _numeric_date(match: re.Match[str]) -> str:
    month = _MONTH_NUMBER[match.group("month")]
    value = _valid_date(int(match.group("year")), month, int(match.group("day")))
    if value is None:
        return match.group(0)
    return f"{value.month}/{value.day}/{value.year}"


def date_edits(text: str, *, to: Literal["long", "numeric"]) -> list[Edit]:
    """The edits of :func:`dates_to_long` (``to="long"``) or :func:`dates_to_numeric`.

    Args:
        text: a request or case summary.
        to: the target format.

    Returns:
        Non-overlapping edits in text order.
    """
    if to == "long":
        return regex_edits(text, _NUMERIC_DATE, _long_date)
    return regex_edits(text, _LONG_DATE, _numeric_date)


def dates_to_long(text: str) -> str:
    """Rewrite numeric dates as "March 17, 2014".

    A numeric date is month, day and year separated by one kind of separator, "/" or "-"
    ("3/17/14", "03-17-2014"), not touching other digits, letters, slashes or hyphens
    (so "7/10" pain scores, "1/2/3/4" and "L4-5" stay). Two-digit years follow
    :func:`two_digit_year`. Month-first (US) order; an impossible date ("13/02/2014",
    "2/30/16") is left as it is. The day is written without a leading zero.

    Args:
        text: a request or case summary.

    Returns:
        The rewritten text.
    """

    return apply_edits(text, date_edits(text, to="long")).text


def dates_to_numeric(text: str) -> str:
    """Rewrite long dates as "3/17/2014" (no leading zeros, four-digit year).

    A long date is a capitalised month name or its three-letter abbreviation ("Sept"
    too, with an optional ".") followed by the day (optional "st"/"nd"/"rd"/"th"), an
    optional comma and a four-digit year: "March 17, 2014", "Mar. 17th 2014". An
    impossible date is left as it is; "March 2014" (no day) is not a date here.

    Args:
        text: a request or case summary.

    Returns:
        The rewritten text.
    """

    return apply_edits(text, date_edits(text, to="numeric")).text


def normalize_text(text: str, *, dates: bool = True, sex: bool = False) -> NormalizedText:
    """Normalise wording a model must ignore, keeping a map to ``text``'s offsets.

    Always the house style (as :func:`imr_outcome.data.house_style.normalize_house_style`);
    with ``dates`` numeric dates become long dates (:func:`dates_to_long`); with ``sex``
    female-marked words become male-marked (:func:`sex_edits` with ``to_male_only``), so
    a sex swap cannot move the score (the metadata ``patient_sex`` is not touched here).
    The rules never overlap (their phrases share no words), so all edits apply at once.

    Args:
        text: a request or case summary as the caller sent it.
        dates: normalise date formats.
        sex: normalise the patient's sex.

    Returns:
        The :class:`NormalizedText`; ``to_source_span`` maps spans back to ``text``.
    """
    edits = house_style_edits(text, "patient")
    if dates:
        edits += date_edits(text, to="long")
    if sex:
        edits += sex_edits(text, to_male_only=True)
    return apply_edits(text, edits)


#: The named counterfactual rewrites, each ``str -> str``.
REWRITES: dict[str, Rewrite] = {
    "house_style_to_patient": to_patient_style,
    "house_style_to_injured_worker": to_injured_worker_style,
    "house_style_to_applicant": to_applicant_style,
    "sex_swap": sex_swap,
    "dates_to_long": dates_to_long,
    "dates_to_numeric": dates_to_numeric,
}


@dataclass(frozen=True)
class AugmentedRow:
    """A counterfactual copy of a training row.

    Attributes:
        request: the rewritten request.
        summary: the rewritten summary.
        label: the source row's label, unchanged.
        source_index: index of the source row; keep the copy in the source's fold group.
        rewrites: names (keys of :data:`REWRITES`) applied, in order.
    """

    request: str
    summary: str
    label: int
    source_index: int
    rewrites: tuple[str, ...]


def augment_rows(
    rows: Sequence[tuple[str, str, int]], *, seed: int = 0, sex_swap_fraction: float = 0.5
) -> list[AugmentedRow]:
    """Counterfactual copies of training rows with the other house style (and sex).

    Each row is rewritten into the house style it is not in: ``house_style_to_patient``
    when that changes it, else ``house_style_to_injured_worker``. With probability
    ``sex_swap_fraction`` (drawn from ``random.Random(seed)``, one draw per row in
    order) the copy is also sex-swapped. Rows that no rewrite changes give no copy.
    A sex-swapped copy contradicts a ``patient_sex`` metadata value of its source: swap
    that value too (``sex_swap("male") == "female"``) when building its model input.

    Args:
        rows: ``(request, summary, label)`` triples.
        seed: the random seed; the same rows and seed give the same copies.
        sex_swap_fraction: share of copies that are also sex-swapped, 0-1.

    Returns:
        The copies, in row order; at most one per row.

    Raises:
        InvalidInputError: for a ``sex_swap_fraction`` outside 0-1.
    """
    if not 0.0 <= sex_swap_fraction <= 1.0:
        raise InvalidInputError(
            "sex_swap_fraction", f"expected a share between 0 and 1, got {sex_swap_fraction}"
        )
    rng = random.Random(seed)
    copies: list[AugmentedRow] = []
    for index, (request, summary, label) in enumerate(rows):
        swap_sex = rng.random() < sex_swap_fraction
        names: list[str] = []
        new_request, new_summary = request, summary
        for name in ("house_style_to_patient", "house_style_to_injured_worker"):
            rewrite = REWRITES[name]
            new_request, new_summary = rewrite(request), rewrite(summary)
            if (new_request, new_summary) != (request, summary):
                names.append(name)
                break
        if swap_sex:
            swapped = sex_swap(new_request), sex_swap(new_summary)
            if swapped != (new_request, new_summary):
                new_request, new_summary = swapped
                names.append("sex_swap")
        if names:
            copies.append(AugmentedRow(new_request, new_summary, label, index, tuple(names)))
    return copies
