from __future__ import annotations

import dataclasses

from imr_outcome.data.audit import (
    audit_outcome_language,
    folds_straddled,
    near_duplicate_groups,
)

from records import make_record


def test_clean_inputs_have_no_findings_even_when_they_report_the_ur_denial() -> None:
    record = make_record(
        1,
        summary="On 11-3-16, utilization review determined the MRI of the cervical spine was not "
        "medically necessary. Regarding the MRI, the request is not medically necessary given "
        "the prior denial letter. " * 3,
    )

    assert audit_outcome_language([record]) == []


def test_outcome_words_and_conclusions_are_found_with_offsets() -> None:
    summary = (
        "Neck pain since 2014. The prior denial was Upheld. "
        "Therefore, the request is not medically necessary."
    )
    record = make_record(2, summary=summary, request="TENS unit: Overturned")

    findings = audit_outcome_language([record])

    found = {
        (f.segment, f.pattern, summary[f.start : f.end] if f.segment == "text_pair" else None)
        for f in findings
    }
    assert found == {
        ("text", "decision word 'Overturned'", None),
        ("text_pair", "decision word 'Upheld'", "Upheld"),
        (
            "text_pair",
            "medical-necessity conclusion",
            "Therefore, the request is not medically necessary",
        ),
    }


def test_section_labels_are_found() -> None:
    record = make_record(3, summary="Decision rationale: MAXIMUS guideline: cited.")

    patterns = [f.pattern for f in audit_outcome_language([record])]

    assert patterns == [
        "section label 'Decision rationale'",
        "section label 'MAXIMUS guideline'",
    ]


def test_near_duplicate_summaries_merge_their_groups() -> None:
    a = make_record(10)
    b = dataclasses.replace(
        make_record(11), summary=a.summary.replace("boxes", "crates")
    )  # one word changed: same case, another letter
    c = make_record(12)

    merged = near_duplicate_groups([a, b, c])

    assert merged == {a.group_id: a.group_id, b.group_id: a.group_id, c.group_id: c.group_id}


def test_short_summaries_are_not_compared() -> None:
    a = make_record(20, summary="")
    b = make_record(21, summary="")

    assert near_duplicate_groups([a, b]) == {a.group_id: a.group_id, b.group_id: b.group_id}


def test_straddling_groups_are_reported() -> None:
    a = make_record(30)
    b = dataclasses.replace(make_record(31), summary=a.summary)

    assert folds_straddled([a, b], [0, 1]) == [a.group_id]
    assert folds_straddled([a, b], [2, 2]) == []
