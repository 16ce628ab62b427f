"""Acceptance on the real letters in ../shared/data (skipped where it is absent)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from imr_outcome.data.audit import audit_outcome_language
from imr_outcome.data.ingest import IngestedRows, ingest
from imr_outcome.data.schema import Decision

from conftest import SHARED_DATA

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def pdf_report() -> IngestedRows:
    """The 194 real PDF letters, parsed once for the module."""
    folder = SHARED_DATA / "dwc-imr-letters" / "pdf"
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder}")
    return ingest([folder])


def test_real_pdf_letters_yield_the_published_item_counts(pdf_report: IngestedRows) -> None:
    report = pdf_report
    assert report.failures == []
    assert len(report.letters) == 194
    items = [item for letter in report.letters for item in letter.items]
    decisions = Counter(item.outcome.decision.value for item in items)
    assert len(items) == 439
    assert decisions == {Decision.UPHELD: 390, Decision.OVERTURNED: 49}
    assert sum(item.partial_authorization for item in items) == 47
    per_letter = Counter(len(letter.items) for letter in report.letters)
    assert per_letter[1] == 115 and per_letter[2] == 34 and per_letter[3] == 12
    assert max(per_letter) == 21


def test_real_letters_have_every_outcome_paragraph_and_clean_inputs(
    pdf_report: IngestedRows,
) -> None:
    report = pdf_report
    for letter in report.letters:
        assert letter.case_number is not None
        assert letter.reviewer.licensure_states and letter.reviewer.specialties
        assert not letter.summary.value.startswith("The expert reviewer developed")
        for item in letter.items:
            assert item.outcome.rationale is not None
            assert item.outcome.maximus_guideline is not None
            assert item.outcome.claims_administrator_guideline is not None
            assert "Upheld" not in item.request.value
            assert "Overturned" not in item.request.value
    assert audit_outcome_language(report.records) == []


def test_real_text_exports_yield_five_items(shared_data: Path) -> None:
    report = ingest([shared_data / "seed-letters"])

    assert report.failures == []
    assert [len(letter.items) for letter in report.letters] == [1, 1, 3]
    wrapped = report.letters[1].items[0].request.value
    assert wrapped.startswith("Lumbar sympathetic blocks") and wrapped.endswith("foot surgeries")
    assert report.skipped == [str(shared_data / "seed-letters" / "README.md")]
