"""Parse DWC IMR final determination letters (MAXIMUS Federal Services) into items.

A letter has three parts (see ``../shared/data/dwc-imr-letters/SOURCE.md``):

1. a header (case number, dates, priority) and "HOW THE IMR FINAL DETERMINATION WAS
   MADE" with the expert reviewer's credentials;
2. "CLINICAL CASE SUMMARY": the pre-filing background, a model input;
3. "IMR ISSUES, DECISIONS AND RATIONALES": one block per disputed item -- a request
   line ending in ``: Upheld`` or ``: Overturned`` (the word may sit on the next line),
   then "Claims Administrator guideline:", "MAXIMUS guideline:" and "Decision
   rationale:" paragraphs. This part is outcome and is held as :class:`OutcomeText`.

The letter format is fixed by the DWC IMR regulations (Cal. Code Regs., tit. 8,
§ 9792.10.6) and Cal. Labor Code § 4610.6, which require the determination to state the
reviewer's qualifications, the case summary and a rationale for each disputed item.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imr_outcome.data.extract import read_letter_text
from imr_outcome.data.schema import (
    Decision,
    Item,
    Letter,
    Located,
    Outcome,
    OutcomeText,
    Reviewer,
)
from imr_outcome.errors import ParseError

_HOW_MADE = re.compile(r"^[ \t]*HOW THE IMR FINAL DETERMINATION WAS MADE[ \t]*$", re.M)
_SUMMARY_HEADING = re.compile(r"^[ \t]*CLINICAL CASE SUMMARY[ \t]*$", re.M)
_ISSUES_HEADING = re.compile(r"^[ \t]*IMR ISSUES,? DECISIONS,? AND RATIONALES?[ \t]*$", re.M)
_SUMMARY_PREAMBLE = re.compile(
    r"\s*The\s+expert\s+reviewer\s+developed\s+the\s+following\s+clinical\s+case\s+"
    r"summary\s+based\s+on\s+a\s+review\s+of\s+the\s+case\s+file,\s+including\s+all\s+"
    r"medical\s+records\s*:"
)
_SET_FORTH = re.compile(
    r"The\s+Final\s+Determination\s+was\s+based\s+on\s+decisions\s+for\s+the\s+disputed\s+"
    r"items/services\s+set\s+forth\s+below\s*:"
)
_DECISION_SAME_LINE = re.compile(r":[ \t]*(Upheld|Overturned)[ \t]*$")
_DECISION_ALONE = re.compile(r"^[ \t]*(Upheld|Overturned)[ \t]*$")
_OUTCOME_LABELS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("claims_administrator_guideline", re.compile(r"Claims\s+Administrator\s+guideline\s*:")),
    ("maximus_guideline", re.compile(r"MAXIMUS\s+guideline\s*:")),
    ("rationale", re.compile(r"Decision\s+rationale\s*:")),
)
_OUTCOME_LINE = re.compile(
    r"^\s*(?:Claims\s+Administrator\s+guideline|MAXIMUS\s+guideline|Decision\s+rationale)\s*:"
)

_CASE_NUMBER = re.compile(r"Case\s+Number:\s*([A-Z]{2}\d{2}-\d{5,8})")
_HEADER_DATES = {
    "date_assigned": re.compile(r"Date\s+Assigned:\s*(\d{1,2}/\d{1,2}/\d{4})"),
    "decision_date": re.compile(r"Decision\s+Date:\s*(\d{1,2}/\d{1,2}/\d{4})"),
    "ur_denial_date": re.compile(r"UR\s+Denial\s+Date:\s*(\d{1,2}/\d{1,2}/\d{4})"),
    "date_received": re.compile(r"Received:\s*(\d{1,2}/\d{1,2}/\d{4})"),
}
_PRIORITY = re.compile(r"Priority:[ \t]*(\S[^\n]*?)[ \t]*$", re.M)
# A credentials value may wrap onto following lines; it ends at a blank line or the next
# label/heading.
_CREDENTIAL_VALUE = r"(?P<v>[^\n]*(?:\n(?![ \t]*\n|[ \t]*(?:State|Certification|CLINICAL))[^\n]*)*)"
_LICENSURE = re.compile(r"State\(s\)\s+of\s+Licensure:" + _CREDENTIAL_VALUE)
_SPECIALTY = re.compile(r"Certification\(s\)/Specialty:" + _CREDENTIAL_VALUE)
_INLINE_CREDENTIALS = re.compile(
    r"Board\s+Certified\s+in\s+(?P<specialty>.+?)\s+and\s+is\s+licensed\s+to\s+practice\s+in\s+"
    r"(?P<states>.+?)\s*\.",
    re.S,
)
_AGE_SEX = re.compile(
    r"\b(?P<age>\d{1,3})[- ]years?[- ]old\b(?:[\s,]+(?:[a-z]+\s+){0,2}?"
    r"(?P<sex>female|male|woman|man|gentleman|lady)\b)?",
    re.I,
)
_DATE = (
    r"(?:\d{1,2}[-/]\d{1,2}[-/]\s?(?:\d{4}|\d{2})"
    r"|(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?\s+\d{1,2},?\s+\d{4})"
)
_INJURY_DATE = re.compile(
    rf"(?:(?:injury|(?:occupational|outpatient)\s+claim)(?:\s+date)?(?:\s+(?:on|of|from))?"
    rf"|date\s+of\s+(?:industrial\s+)?injury(?:\s+(?:on|of))?)\s*(?P<date>{_DATE})",
    re.I,
)
_PARTIAL_REMAINDER = re.compile(
    r"\bwas\s+the\s+original\s+request\b.*?"
    r"(?:remaining\s+IMR\s+eligible\s+portion\s+of\s+the\s+original\s+request|"
    r"The\s+original\s+request\s*,)\s*,?\s*(?:is\s+)?(?P<rest>.+?)(?:\s+is)?\s*$",
    re.S | re.I,
)
_PARTIAL_ORIGINAL = re.compile(r"^(?P<orig>.+?)\s+was\s+the\s+original\s+request\b", re.S | re.I)
_PARTIAL_HINT = re.compile(r"original\s+request|IMR\s+eligible", re.I)
_WAS_ORIGINAL = re.compile(r"was\s+the\s+original\s+request", re.I)
_SEX_WORDS = {
    "female": "female",
    "woman": "female",
    "lady": "female",
    "male": "male",
    "man": "male",
    "gentleman": "male",
}


@dataclass(frozen=True)
class _Line:
    start: int
    end: int
    text: str

    @property
    def blank(self) -> bool:
        return not self.text.strip()


def parse_letter_file(path: Path) -> Letter:
    """Read and parse one letter file.

    Args:
        path: a ``.pdf`` or ``.txt`` letter.

    Returns:
        The parsed :class:`Letter` with at least one item.

    Raises:
        ParseError: naming the file and the section that failed (see
            :func:`imr_outcome.data.extract.read_letter_text` and :func:`parse_letter`).
    """
    return parse_letter(read_letter_text(path), str(path))


def parse_letter(text: str, source: str) -> Letter:
    """Parse normalized letter text into a :class:`Letter`.

    Args:
        text: the letter text as returned by ``read_letter_text``.
        source: the file name or label, used in provenance and errors.

    Returns:
        The letter; every ``Located`` offset indexes into ``text``.

    Raises:
        ParseError: section ``"document"`` when the text is not an IMR final
            determination letter, ``"clinical case summary"`` when the summary is missing
            or empty, ``"decisions"`` when the decisions section is missing (truncated
            file) or holds no decided item.
    """
    how = _HOW_MADE.search(text)
    summary_heading = _SUMMARY_HEADING.search(text)
    issues_heading = _ISSUES_HEADING.search(text)
    if how is None and summary_heading is None and issues_heading is None:
        raise ParseError(
            source,
            "document",
            "not an IMR final determination letter: none of the headings 'HOW THE IMR FINAL "
            "DETERMINATION WAS MADE', 'CLINICAL CASE SUMMARY', 'IMR ISSUES, DECISIONS AND "
            "RATIONALES' was found",
        )
    if summary_heading is None:
        raise ParseError(
            source, "clinical case summary", "heading 'CLINICAL CASE SUMMARY' not found"
        )
    if issues_heading is None or issues_heading.start() < summary_heading.end():
        raise ParseError(
            source,
            "decisions",
            "heading 'IMR ISSUES, DECISIONS AND RATIONALES' not found after the case summary; "
            "the file looks truncated",
        )
    summary = _summary(text, summary_heading.end(), issues_heading.start(), source)
    front = text[: summary_heading.start()]
    items = _items(text, issues_heading.end(), source)
    age, sex = _age_sex(text, summary)
    return Letter(
        source=source,
        text=text,
        case_number=_search(_CASE_NUMBER, front),
        date_assigned=_date_field(_HEADER_DATES["date_assigned"], front),
        decision_date=_date_field(_HEADER_DATES["decision_date"], front),
        ur_denial_date=_date_field(_HEADER_DATES["ur_denial_date"], front),
        date_received=_date_field(_HEADER_DATES["date_received"], front),
        priority=_search(_PRIORITY, front),
        reviewer=_reviewer(front),
        patient_age=age,
        patient_sex=sex,
        injury_date=_injury_date(text, summary),
        summary=summary,
        items=items,
    )


def _lines(text: str, start: int, end: int) -> list[_Line]:
    lines: list[_Line] = []
    pos = start
    while pos < end:
        nl = text.find("\n", pos, end)
        stop = end if nl < 0 else nl
        lines.append(_Line(pos, stop, text[pos:stop]))
        pos = stop + 1
    return lines


def collapse_whitespace(raw: str, base: int = 0) -> tuple[str, list[int]]:
    """Join wrapped lines: collapse every whitespace run to one space, strip the ends.

    Args:
        raw: the raw text.
        base: offset of ``raw`` in the letter text.

    Returns:
        ``(text, offsets)`` where ``offsets[i]`` is the letter offset of ``text[i]``.
    """
    out: list[str] = []
    offsets: list[int] = []
    for m in re.finditer(r"\S+", raw):
        if out:
            out.append(" ")
            offsets.append(base + m.start() - 1)
        out.append(m.group(0))
        offsets.extend(range(base + m.start(), base + m.end()))
    return "".join(out), offsets


def _located_text(text: str, start: int, end: int) -> Located[str]:
    value, offsets = collapse_whitespace(text[start:end], start)
    if not offsets:
        return Located("", start, start)
    return Located(value, offsets[0], offsets[-1] + 1)


def _summary(text: str, start: int, end: int, source: str) -> Located[str]:
    preamble = _SUMMARY_PREAMBLE.match(text, start, end)
    if preamble is not None:
        start = preamble.end()
    summary = _located_text(text, start, end)
    if not summary.value:
        raise ParseError(source, "clinical case summary", "the summary is empty")
    return summary


def _search(pattern: re.Pattern[str], text: str, offset: int = 0) -> Located[str] | None:
    m = pattern.search(text)
    if m is None:
        return None
    return Located(m.group(1).strip(), offset + m.start(1), offset + m.end(1))


def _date_field(pattern: re.Pattern[str], text: str) -> Located[dt.date] | None:
    found = _search(pattern, text)
    if found is None:
        return None
    value = parse_date(found.value)
    return None if value is None else Located(value, found.start, found.end)


def parse_date(raw: str) -> dt.date | None:
    """Parse the date forms letters use: ``11/03/2016``, ``10-13-16``, ``May 15, 2009``.

    Args:
        raw: the date text.

    Returns:
        The date, or None when the text is not a valid date in one of those forms.
    """
    cleaned = re.sub(r"\s+", " ", raw.strip().replace(".", "")).replace("Sept ", "Sep ")
    cleaned = cleaned.replace("-", "/")
    for fmt in ("%m/%d/%Y", "%m/%d/%y", "%B %d, %Y", "%B %d %Y", "%b %d, %Y", "%b %d %Y"):
        try:
            return dt.datetime.strptime(cleaned, fmt).date()
        except ValueError:
            continue
    return None


def _split_list(raw: str, *, split_and: bool) -> tuple[str, ...]:
    pattern = r",|;|\band\b" if split_and else r",|;"
    parts = re.split(pattern, " ".join(raw.split()))
    return tuple(part.strip() for part in parts if part.strip())


def _reviewer(front: str) -> Reviewer:
    states = _LICENSURE.search(front)
    specialty = _SPECIALTY.search(front)
    if states is not None or specialty is not None:
        return Reviewer(
            licensure_states=_split_list(states.group("v"), split_and=True) if states else (),
            specialties=_split_list(specialty.group("v"), split_and=False) if specialty else (),
        )
    inline = _INLINE_CREDENTIALS.search(front)
    if inline is None:
        return Reviewer()
    return Reviewer(
        licensure_states=_split_list(" ".join(inline.group("states").split()), split_and=True),
        specialties=_split_list(" ".join(inline.group("specialty").split()), split_and=False),
    )


def _age_sex(text: str, summary: Located[str]) -> tuple[Located[int] | None, Located[str] | None]:
    region = text[summary.start : summary.end]
    for m in _AGE_SEX.finditer(region):
        age = int(m.group("age"))
        if not 0 < age <= 120:
            continue
        age_field = Located(age, summary.start + m.start("age"), summary.start + m.end("age"))
        if m.group("sex") is None:
            return age_field, None
        sex = _SEX_WORDS[m.group("sex").lower()]
        return age_field, Located(sex, summary.start + m.start("sex"), summary.start + m.end("sex"))
    return None, None


def _injury_date(text: str, summary: Located[str]) -> Located[dt.date] | None:
    m = _INJURY_DATE.search(text, summary.start, summary.end)
    if m is None:
        return None
    value = parse_date(m.group("date"))
    return None if value is None else Located(value, m.start("date"), m.end("date"))


@dataclass(frozen=True)
class _Marker:
    """A decision found in the text: the header ends at ``colon``; outcome follows ``after``."""

    line_index: int
    colon: int
    decision: Located[Decision]
    after: int


def _markers(lines: list[_Line]) -> Iterator[_Marker]:
    for i, line in enumerate(lines):
        if _OUTCOME_LINE.match(line.text):
            continue
        same = _DECISION_SAME_LINE.search(line.text)
        if same is not None:
            word = Located(
                Decision(same.group(1)), line.start + same.start(1), line.start + same.end(1)
            )
            yield _Marker(i, line.start + same.start(), word, line.end)
            continue
        alone = _DECISION_ALONE.match(line.text)
        if alone is None:
            continue
        prev = next((j for j in range(i - 1, -1, -1) if not lines[j].blank), None)
        if prev is None or not lines[prev].text.rstrip().endswith(":"):
            continue
        colon = lines[prev].start + lines[prev].text.rstrip().rfind(":")
        word = Located(
            Decision(alone.group(1)), line.start + alone.start(1), line.start + alone.end(1)
        )
        yield _Marker(prev, colon, word, line.end)


def _paragraph_start(lines: list[_Line], last: int, floor: int) -> int:
    first = last
    while first - 1 >= floor and not lines[first - 1].blank:
        first -= 1
    return first


def _header_start(lines: list[_Line], last: int, floor: int) -> int:
    """Index of the first line of the request header ending at line ``last``.

    The header is the paragraph above the decision. A partial authorization's header
    ("X was the original request. ...") may be split by a page-break blank line, so
    when the paragraph mentions the original request but not where it began, climb
    one paragraph more if that one says "was the original request".
    """
    first = _paragraph_start(lines, last, floor)
    paragraph = " ".join(line.text for line in lines[first : last + 1])
    if not _PARTIAL_HINT.search(paragraph) or _WAS_ORIGINAL.search(paragraph):
        return first
    above = next((j for j in range(first - 1, floor - 1, -1) if not lines[j].blank), None)
    if above is None:
        return first
    candidate = _paragraph_start(lines, above, floor)
    block = lines[candidate : above + 1]
    if _WAS_ORIGINAL.search(" ".join(line.text for line in block)) and not any(
        _OUTCOME_LINE.match(line.text) for line in block
    ):
        return candidate
    return first


def _items(text: str, issues_end: int, source: str) -> tuple[Item, ...]:
    set_forth = _SET_FORTH.search(text, issues_end)
    body_start = set_forth.end() if set_forth is not None else issues_end
    lines = _lines(text, body_start, len(text))
    markers = list(_markers(lines))
    if not markers:
        raise ParseError(
            source,
            "decisions",
            "no decided items: no request line ends in ': Upheld' or ': Overturned'",
        )
    starts: list[int] = []
    floor = 0
    for marker in markers:
        starts.append(_header_start(lines, marker.line_index, floor))
        floor = marker.line_index + 1
    items: list[Item] = []
    for n, marker in enumerate(markers):
        header_start = lines[starts[n]].start
        block_end = lines[starts[n + 1]].start if n + 1 < len(markers) else len(text)
        items.append(_item(text, n, header_start, marker, block_end, source))
    return tuple(items)


def _item(
    text: str, index: int, header_start: int, marker: _Marker, block_end: int, source: str
) -> Item:
    header = _located_text(text, header_start, marker.colon)
    if not header.value:
        raise ParseError(
            source, "decisions", f"item {index + 1}: empty request before its decision"
        )
    request, original = _partial(text, header_start, marker.colon)
    return Item(
        index=index,
        request=request if request is not None else header,
        partial_authorization=request is not None,
        original_request=original,
        outcome=_outcome(text, marker, block_end),
    )


def _partial(text: str, start: int, end: int) -> tuple[Located[str] | None, Located[str] | None]:
    value, offsets = collapse_whitespace(text[start:end], start)
    remainder = _PARTIAL_REMAINDER.search(value)
    original = _PARTIAL_ORIGINAL.match(value)
    if remainder is None or original is None:
        return None, None

    def located(m: re.Match[str], group: str) -> Located[str]:
        a, b = m.start(group), m.end(group)
        return Located(m.group(group), offsets[a], offsets[b - 1] + 1)

    return located(remainder, "rest"), located(original, "orig")


def _outcome(text: str, marker: _Marker, block_end: int) -> Outcome:
    found: list[tuple[int, int, str]] = []
    for name, pattern in _OUTCOME_LABELS:
        m = pattern.search(text, marker.after, block_end)
        if m is not None:
            found.append((m.start(), m.end(), name))
    found.sort()
    paragraphs: dict[str, OutcomeText] = {}
    for k, (_, label_end, name) in enumerate(found):
        stop = found[k + 1][0] if k + 1 < len(found) else block_end
        located = _located_text(text, label_end, stop)
        paragraphs[name] = OutcomeText(located.value, located.start, located.end)
    return Outcome(
        decision=marker.decision,
        claims_administrator_guideline=paragraphs.get("claims_administrator_guideline"),
        maximus_guideline=paragraphs.get("maximus_guideline"),
        rationale=paragraphs.get("rationale"),
    )
