"""The letter parser on invented fixture letters that cover every layout variant."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from imr_outcome.data.letters import parse_letter, parse_letter_file
from imr_outcome.data.schema import Letter, OutcomeText
from imr_outcome.errors import ParseError

from conftest import LETTER_FIXTURES
from pdf_factory import make_letter_pdf, make_scanned_pdf

EXPECTED: dict[str, Any] = json.loads((LETTER_FIXTURES / "EXPECTED.json").read_text())


def _iso(field: Any) -> str | None:
    return None if field is None else field.value.isoformat()


def _as_expected(letter: Letter) -> dict[str, Any]:
    return {
        "case_number": letter.case_number.value if letter.case_number else None,
        "date_assigned": _iso(letter.date_assigned),
        "decision_date": _iso(letter.decision_date),
        "ur_denial_date": _iso(letter.ur_denial_date),
        "date_received": _iso(letter.date_received),
        "licensure_states": list(letter.reviewer.licensure_states),
        "specialties": list(letter.reviewer.specialties),
        "patient_age": letter.patient_age.value if letter.patient_age else None,
        "patient_sex": letter.patient_sex.value if letter.patient_sex else None,
        "injury_date": _iso(letter.injury_date),
        "summary_first_words": " ".join(letter.summary.value.split()[:8]),
        "items": [
            {
                "request": item.request.value,
                "decision": item.outcome.decision.value.value,
                "partial_authorization": item.partial_authorization,
                "original_request": item.original_request.value if item.original_request else None,
            }
            for item in letter.items
        ],
    }


@pytest.mark.parametrize("name", sorted(EXPECTED["good"]))
def test_fixture_letter_parses_as_expected(name: str) -> None:
    letter = parse_letter_file(LETTER_FIXTURES / name)

    expected = {k: v for k, v in EXPECTED["good"][name].items() if not k.startswith("_")}
    assert _as_expected(letter) == {k: _as_expected(letter)[k] for k in expected} | expected


@pytest.mark.parametrize("name", sorted(EXPECTED["bad"]))
def test_bad_fixture_names_the_file_and_section(name: str) -> None:
    path = LETTER_FIXTURES / name

    with pytest.raises(ParseError) as excinfo:
        parse_letter_file(path)

    assert excinfo.value.source == str(path)
    assert excinfo.value.section == EXPECTED["bad"][name]
    assert str(excinfo.value).startswith(f"{path}: {EXPECTED['bad'][name]}: ")


@pytest.mark.parametrize("name", sorted(EXPECTED["good"]))
def test_provenance_offsets_point_at_the_raw_text(name: str) -> None:
    letter = parse_letter_file(LETTER_FIXTURES / name)

    def squash(raw: str) -> str:
        return " ".join(raw.split())

    assert squash(letter.text[letter.summary.start : letter.summary.end]) == letter.summary.value
    for item in letter.items:
        decision = item.outcome.decision
        assert letter.text[decision.start : decision.end] == decision.value.value
        assert squash(letter.text[item.request.start : item.request.end]) == item.request.value
        assert item.request.end <= decision.start
        for paragraph in (item.outcome.rationale, item.outcome.maximus_guideline):
            assert isinstance(paragraph, OutcomeText)
            raw = letter.text[paragraph.start : paragraph.end]
            assert squash(raw) == paragraph.reveal()
            assert paragraph.start > decision.end
    if letter.patient_age is not None:
        age = letter.patient_age
        assert letter.text[age.start : age.end] == str(age.value)


def test_outcome_text_never_prints_its_content() -> None:
    letter = parse_letter_file(LETTER_FIXTURES / "single_upheld.txt")
    rationale = letter.items[0].outcome.rationale

    assert rationale is not None and len(rationale) > 50
    assert re.fullmatch(r"<OutcomeText \d+ chars at \d+:\d+>", str(rationale))
    assert rationale.reveal() not in repr(letter.items[0])


def test_encrypted_pdf_gives_the_same_items_as_its_text(tmp_path: Path) -> None:
    source = LETTER_FIXTURES / "mixed_multi.txt"
    pdf = make_letter_pdf(source.read_text(encoding="utf-8"), tmp_path / "mixed_multi.pdf")

    from_pdf = parse_letter_file(pdf)
    from_text = parse_letter_file(source)

    assert _as_expected(from_pdf) == _as_expected(from_text)
    assert from_pdf.source == str(pdf)


def test_scanned_pdf_without_text_layer_is_reported(tmp_path: Path) -> None:
    pdf = make_scanned_pdf(tmp_path / "scan.pdf")

    with pytest.raises(ParseError) as excinfo:
        parse_letter_file(pdf)

    assert excinfo.value.section == "pdf text layer"
    assert "run OCR first" in excinfo.value.reason


def test_decision_on_the_line_after_the_colon() -> None:
    text = (LETTER_FIXTURES / "single_upheld.txt").read_text(encoding="utf-8")
    moved = re.sub(r"(:)[ \t]*(Upheld)[ \t]*\n", r"\1 \n\2 \n", text, count=1)
    assert moved != text

    letter = parse_letter(moved, "moved.txt")

    assert [item.outcome.decision.value.value for item in letter.items] == ["Upheld"]
    assert letter.items[0].request.value == "TENS unit rental for 30 days for the right knee"
