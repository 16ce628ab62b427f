from __future__ import annotations

import pytest

from imr_outcome.data.model_input import (
    build_model_input,
    coerce_metadata_value,
    metadata_prefix,
    record_model_input,
)
from imr_outcome.data.schema import ItemRecord, OutcomeText
from imr_outcome.errors import InvalidInputError, LeakageError


def test_prefix_renders_prefiling_metadata_and_offset_points_at_the_request() -> None:
    request = "MRI of the right shoulder without contrast"
    model_input = build_model_input(
        request,
        "The injured worker is a 48 year old male.",
        {"patient_age": 48, "patient_sex": "male"},
    )

    assert model_input.text == "48-year-old patient. MRI of the right shoulder without contrast"
    assert model_input.text[model_input.request_offset :] == request
    assert model_input.text_pair == "The patient is a 48 year old male."
    assert model_input.caller_summary == "The injured worker is a 48 year old male."
    assert model_input.caller_request == request


@pytest.mark.parametrize(
    "summary",
    [
        "The injured worker is a 52-year-old woman injured on 03/04/2014. She fell.",
        "The applicant is a 52-year-old man injured on March 4, 2014. He fell.",
        "The claimant is a 52-year-old woman injured on 3/4/2014. She fell.",
        "The patient is a 52-year-old man injured on March 4, 2014. He fell.",
    ],
)
def test_every_house_style_sex_and_date_format_gives_one_model_input(summary: str) -> None:
    model_input = build_model_input("Physical therapy x 6 for the applicant", summary)

    assert model_input.text_pair == (
        "The patient is a 52-year-old man injured on March 4, 2014. He fell."
    )
    assert model_input.text == "Physical therapy x 6 for the patient"
    assert model_input.caller_summary == summary


def test_spans_of_the_model_s_text_map_back_to_the_caller_s_string() -> None:
    summary = "The applicant was seen 01/02/2013; the applicant's knee is swollen."
    model_input = build_model_input("Knee MRI", summary)
    read = model_input.text_pair

    for phrase, expected in [
        ("patient", "applicant"),
        ("January 2, 2013", "01/02/2013"),
        ("knee is swollen", "knee is swollen"),
    ]:
        start = read.index(phrase)
        caller = model_input.to_caller_span("summary", start, start + len(phrase))
        assert summary[caller[0] : caller[1]] == expected
    with pytest.raises(InvalidInputError, match="'request' or 'summary'"):
        model_input.to_caller_span("metadata", 0, 1)


def test_dmhc_metadata_prefix() -> None:
    prefix = metadata_prefix(
        {
            "age_range": "41-50",
            "patient_sex": "female",
            "imr_type": "Medical Necessity",
            "diagnosis_category": "Cancer",
            "diagnosis_subcategory": "Breast",
        }
    )

    assert prefix == ("age 41-50. Medical Necessity review. diagnosis Cancer / Breast. ")


def test_no_metadata_gives_no_prefix() -> None:
    assert build_model_input("Norco 10/325mg #60", "").text == "Norco 10/325mg #60"
    assert metadata_prefix({"patient_age": None, "patient_sex": None}) == ""


def test_outcome_text_cannot_become_model_input() -> None:
    rationale = OutcomeText("Therefore, the request is not medically necessary.", 10, 60)

    with pytest.raises(LeakageError, match=r"^summary: expected plain text, got OutcomeText"):
        build_model_input("TENS unit", rationale)  # type: ignore[arg-type]
    assert "medically" not in str(rationale) and "medically" not in f"{rationale}"


def test_post_filing_metadata_is_rejected_by_name() -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        metadata_prefix({"reviewer_specialty": "Family Practice"})

    assert excinfo.value.field == "metadata"
    assert "['reviewer_specialty']" in excinfo.value.reason


@pytest.mark.parametrize("age", [-1, 121, "48"])
def test_age_out_of_range_is_rejected(age: object) -> None:
    with pytest.raises(
        InvalidInputError, match=r"metadata\.patient_age: expected an integer 0-120"
    ):
        metadata_prefix({"patient_age": age})  # type: ignore[dict-item]


def test_empty_request_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match=r"^request: is empty"):
        build_model_input("   ", "summary")


def test_record_model_input_uses_only_prefiling_fields() -> None:
    record = ItemRecord(
        id="CM99-0000001#0",
        group_id="CM99-0000001",
        source="dwc",
        source_file="x.pdf",
        request="Acupuncture 6 sessions",
        summary="A 52 year old female with neck pain.",
        label=1,
        patient_age=52,
        patient_sex="female",
        reviewer_specialty="Family Practice",
        request_category="physical medicine",
    )

    model_input = record_model_input(record)

    assert model_input.text == "52-year-old patient. Acupuncture 6 sessions"
    assert "Family Practice" not in model_input.text + model_input.text_pair


@pytest.mark.parametrize(
    ("value", "expected"),
    [(47, 47), (47.0, 47), (" 47 ", 47), ("", None), (None, None), (float("nan"), None)],
)
def test_age_from_a_table_cell_becomes_whole_years(value: object, expected: int | None) -> None:
    assert coerce_metadata_value("patient_age", value) == expected


@pytest.mark.parametrize("value", [44.7, "forty", True, [47]])
def test_age_that_is_not_whole_years_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(InvalidInputError, match=r"metadata\.patient_age"):
        coerce_metadata_value("patient_age", value)


def test_other_fields_keep_text_and_refuse_other_types() -> None:
    assert coerce_metadata_value("patient_sex", "female") == "female"
    with pytest.raises(InvalidInputError, match=r"metadata\.patient_sex.*bool"):
        coerce_metadata_value("patient_sex", False)
