from __future__ import annotations

import re

import pytest

from imr_outcome.data.counterfactuals import _SEX_WORD, SEX_WORD_PATTERN
from imr_outcome.data.house_style import (
    _NOUN,
    _OPENER,
    NOUN_PATTERN,
    OPENER_PATTERN,
    Edit,
    apply_edits,
    match_case,
    normalize_house_style,
    to_injured_worker_style,
    to_patient_style,
)
from imr_outcome.errors import InvalidInputError

# Invented sentences in the shape of DWC case summaries.
WORKER_STYLE = (
    "The injured worker is a 51 year old who fell from a ladder. Medical record review "
    "indicates the injured worker (IW) is being treated for knee pain. Per the note, the IW "
    "has not returned to work and the worker's pain is 6/10."
)
PATIENT_STYLE = (
    "The patient is a 51 year old who fell from a ladder. According to the records, the "
    "patient is being treated for knee pain. Per the note, the patient has not returned to "
    "work and the patient's pain is 6/10."
)


def test_worker_style_rewrites_to_patient_style_exactly() -> None:
    assert to_patient_style(WORKER_STYLE) == PATIENT_STYLE


def test_patient_style_rewrites_to_worker_style_exactly() -> None:
    assert to_injured_worker_style(PATIENT_STYLE) == (
        "The injured worker is a 51 year old who fell from a ladder. The records presented "
        "for review indicate the injured worker is being treated for knee pain. Per the note, "
        "the injured worker has not returned to work and the injured worker's pain is 6/10."
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("An injured worker's claim.", "A patient's claim."),
        ("Two injured workers' claims.", "Two patients' claims."),
        ("INJURED WORKER NAME", "PATIENT NAME"),
        ("The Injured Worker signed.", "The Patient signed."),
        (
            "The applicant appealed; applicants often do.",
            "The patient appealed; patients often do.",
        ),
        ("An applicant appealed.", "A patient appealed."),
        (
            "The claimant's knee; claimants often appeal.",
            "The patient's knee; patients often appeal.",
        ),
        ("A claimant appealed.", "A patient appealed."),
        (
            "A review of the medical records indicates that the injured worker fell.",
            "According to the records, the patient fell.",
        ),
        ("Medical records indicated that she fell.", "According to the records, she fell."),
        ("A review of the medical records shows a fall.", "According to the records, a fall."),
    ],
)
def test_to_patient_style_cases(text: str, expected: str) -> None:
    assert to_patient_style(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A patient's knee.", "An injured worker's knee."),
        ("Both patients' knees.", "Both injured workers' knees."),
        (
            "According to the records, she fell.",
            "The records presented for review indicate she fell.",
        ),
        (
            "According to medical records available for review, she fell.",
            "The records presented for review indicate she fell.",
        ),
    ],
)
def test_to_injured_worker_style_cases(text: str, expected: str) -> None:
    assert to_injured_worker_style(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "A patient-reported outcome score and inpatient stay.",
        "The social worker and a co-worker visited.",
        "She reported that medical records indicate nothing new.",  # opener not at sentence start
        "The medical records do not reveal a fall.",  # a negated finding is not an opener
    ],
)
def test_phrases_outside_the_rules_are_left_alone(text: str) -> None:
    assert to_patient_style(text) == text
    assert to_injured_worker_style(text) == text


def test_both_styles_normalize_to_the_same_text() -> None:
    assert normalize_house_style(WORKER_STYLE).text == normalize_house_style(PATIENT_STYLE).text


def test_normalized_offsets_map_back_exactly() -> None:
    normalized = normalize_house_style(WORKER_STYLE)
    text = normalized.text
    # Text that the rules do not touch maps to the same characters of the source.
    for phrase in ("fell from a ladder", "knee pain", "has not returned to work", "6/10"):
        start = text.index(phrase)
        source_start, source_end = normalized.to_source_span(start, start + len(phrase))
        assert WORKER_STYLE[source_start:source_end] == phrase
    # A span on a replaced phrase covers the whole original phrase.
    start = text.index("According to the records,")
    span = normalized.to_source_span(start, start + len("According to the records,"))
    assert WORKER_STYLE[span[0] : span[1]] == "Medical record review indicates"
    start = text.index("the patient is being")
    span = normalized.to_source_span(start + 4, start + 11)
    assert WORKER_STYLE[span[0] : span[1]] == "injured worker (IW)"
    # Part of a replacement maps to the whole of it; a span across one covers it.
    assert normalized.to_source_span(4, 6) == (4, len("The injured worker"))
    end = text.index(" is a 51")
    assert normalized.to_source_span(0, end + 5) == (0, WORKER_STYLE.index(" is a 51") + 5)
    assert normalized.to_source_span(0, len(text)) == (0, len(WORKER_STYLE))
    assert normalized.to_source_span(3, 3) == (3, 3)


def test_every_normalized_character_maps_into_the_source() -> None:
    normalized = normalize_house_style(WORKER_STYLE)
    assert len(normalized.start_map) == len(normalized.end_map) == len(normalized.text) + 1
    assert list(normalized.start_map) == sorted(normalized.start_map)
    assert list(normalized.end_map) == sorted(normalized.end_map)
    assert normalized.start_map[-1] == normalized.end_map[-1] == len(WORKER_STYLE)


def test_text_without_house_style_is_the_identity_map() -> None:
    text = "MRI of the right knee."
    normalized = normalize_house_style(text)
    assert normalized.text == text
    assert normalized.start_map == tuple(range(len(text) + 1))
    assert normalized.end_map == tuple(range(len(text) + 1))


def test_bad_spans_and_overlapping_edits_are_refused() -> None:
    normalized = normalize_house_style("The patient fell.")
    with pytest.raises(InvalidInputError, match="span: expected 0 <= start <= end <= 17"):
        normalized.to_source_span(5, 40)
    with pytest.raises(InvalidInputError, match="edits: overlapping"):
        apply_edits("abcdef", [Edit(0, 3, "x"), Edit(2, 4, "y")])


@pytest.mark.parametrize(
    ("source", "expected"),
    [("patient", "injured worker"), ("Patient", "Injured worker"), ("PATIENT", "INJURED WORKER")],
)
def test_match_case(source: str, expected: str) -> None:
    assert match_case(source, "injured worker") == expected


def test_the_applicant_style_is_a_third_target() -> None:
    from imr_outcome.data.house_style import to_applicant_style

    assert to_applicant_style("The injured worker's knee. A patient fell.") == (
        "The applicant's knee. An applicant fell."
    )


GUARD_TEXTS = (
    WORKER_STYLE + " She said her knee hurt.",
    "A patient and an Injured Worker (IW); the IW's applicants. CLAIMANT, the worker-owned"
    " shop. According to the records, she saw Mrs. Lee. The records show that he fell.",
    # Letters that re.IGNORECASE equates with ASCII: dotless i, dotted I, long s.
    "\u0131njured worker, \u0130NJURED WORKER, \u017fhe and \u017fHE; Review of records"
    " shows pain. Medical records revealed it.",
)


@pytest.mark.parametrize(
    ("pattern", "guarded"),
    [(NOUN_PATTERN, _NOUN), (SEX_WORD_PATTERN, _SEX_WORD), (OPENER_PATTERN, _OPENER)],
    ids=["noun", "sex", "opener"],
)
@pytest.mark.parametrize("text", GUARD_TEXTS)
def test_first_char_guard_finds_exactly_the_plain_patterns_matches(
    pattern: str, guarded: re.Pattern[str], text: str
) -> None:
    plain = [(m.span(), m.groupdict()) for m in re.finditer(pattern, text)]
    assert plain  # every text exercises every rule
    assert [(m.span(), m.groupdict()) for m in guarded.finditer(text)] == plain
