"""Tests for the DMHC reasoning audit (imr_outcome.data.audit.audit_dmhc_reasoning)."""

from __future__ import annotations

import pytest

from imr_outcome.data.audit import LeakageFinding, audit_dmhc_reasoning, audit_outcome_language
from imr_outcome.data.dataset import BuildConfig
from imr_outcome.data.dataset_build import build_dataset
from imr_outcome.data.schema import ItemRecord
from imr_outcome.errors import LeakageError

from records import make_record

REQUEST = "The patient has requested authorization and coverage for an insulin pump."


def _dmhc(n: int, summary: str, label: int = 0) -> ItemRecord:
    record: ItemRecord = make_record(
        n,
        source="dmhc",
        id=f"MN24-{n:05d}",
        group_id=f"MN24-{n:05d}",
        summary=summary,
        label=label,
        request="Durable Medical Equipment: Insulin Pump",
    )
    return record


def test_clean_dmhc_summary_has_no_finding() -> None:
    record = _dmhc(
        1,
        f"{REQUEST} The records indicate that she has type 1 diabetes. The health plan denied "
        "the request as not medically necessary.",
    )
    assert audit_dmhc_reasoning([record]) == []


def test_reasoning_in_a_dmhc_summary_is_found_with_offsets() -> None:
    summary = f"{REQUEST} She has type 1 diabetes. However, the pump is not indicated."
    record = _dmhc(2, summary)

    findings = audit_dmhc_reasoning([record])

    start = summary.index("However")
    judged = summary.index("not indicated")
    assert findings == [
        LeakageFinding("MN24-00002", "text_pair", "DMHC reasoning cue 'however'", start, start + 7),
        LeakageFinding(
            "MN24-00002",
            "text_pair",
            "DMHC reasoning cue 'indicated / appropriate'",
            judged,
            judged + len("not indicated"),
        ),
    ]
    assert audit_outcome_language([record]) == findings


def test_request_sentence_may_hold_judgement_words_but_a_later_sentence_may_not() -> None:
    request = "The enrollee has requested a sleep study under her pharmacy benefit."
    assert audit_dmhc_reasoning([_dmhc(3, request)]) == []
    findings = audit_dmhc_reasoning([_dmhc(4, f"{REQUEST} {request}")])
    assert [f.pattern for f in findings] == ["DMHC reasoning cue 'benefit / likelihood'"]


def test_dwc_summaries_are_not_held_to_the_dmhc_cues() -> None:
    record = make_record(5, summary="However, the claimant's pain persisted despite therapy.")
    assert audit_dmhc_reasoning([record]) == []
    assert audit_outcome_language([record]) == []


def test_dmhc_reasoning_fails_the_build() -> None:
    records = [
        _dmhc(10 + i, f"{REQUEST} She has type 1 diabetes since age {10 + i}.", label=i % 2)
        for i in range(10)
    ]
    build_dataset(records, BuildConfig(n_folds=2))

    records[3] = _dmhc(13, f"{REQUEST} Based on the records, the pump is appropriate.", 1)
    with pytest.raises(LeakageError, match=r"MN24-00013 text_pair: DMHC reasoning cue 'based on'"):
        build_dataset(records, BuildConfig(n_folds=2))
