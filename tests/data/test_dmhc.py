"""Tests for imr_outcome.data.dmhc (DMHC IMR determinations loader)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from imr_outcome.data.dmhc import ExcludedRow, load_dmhc
from imr_outcome.data.dmhc_findings import EMPTY_REASON, NO_REQUEST_REASON, split_findings
from imr_outcome.data.schema import ItemRecord
from imr_outcome.errors import InvalidInputError, ParseError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dmhc"
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REAL_2016 = (
    SHARED_DATA
    / "dmhc-imr-structured-2001-2016"
    / "Independent_Medical_Review__IMR__Determinations__Trend.csv"
)
PORTAL_HEADER = (
    '"ReferenceID","ReportYear","DiagnosisCategory","DiagnosisSubCategory",'
    '"TreatmentCategory","TreatmentSubCategory","Determination","Type","AgeRange",'
    '"PatientGender","IMRType","DaysToReview","DaysToAdopt","Findings"'
)
START = "Nature of Statutory Criteria/Case Summary:"


# --- split_findings(...).background --------------------------------------------------------


@pytest.mark.parametrize(
    "end",
    [
        "Findings:",
        "The physician reviewer found",
        "The reviewer found",
        "Final Result",
        "The reviewer determined",
        "Three physician reviewers determined",
        "Credentials/Qualifications",
        "FINDINGS:",
        "the  physician\nreviewer found",
    ],
)
def test_background_ends_at_each_marker(end: str) -> None:
    findings = f"{START} An enrollee has requested an MRI of the knee. {end} that it helps."
    assert split_findings(findings).background == "An enrollee has requested an MRI of the knee."


def test_background_ends_at_the_earliest_marker_present() -> None:
    findings = (
        f"  {START}\r\n An enrollee,  aged 40,\nhas requested an MRI. "
        "Final Result: The reviewer determined that the MRI is medically necessary. "
        "Findings: The physician reviewer found that the MRI is appropriate."
    )
    assert split_findings(findings).background == "An enrollee, aged 40, has requested an MRI."


def test_background_keeps_the_parties_positions() -> None:
    findings = (
        f"{START} An enrollee has requested an MRI. The health plan denied the request as not "
        "medically necessary. Her physician believes the MRI should be done now. "
        "Findings: The physician reviewer found that the MRI is appropriate."
    )
    assert split_findings(findings).background == (
        "An enrollee has requested an MRI. The health plan denied the request as not "
        "medically necessary. Her physician believes the MRI should be done now."
    )


@pytest.mark.parametrize(
    ("findings", "background"),
    [
        (
            "An enrollee has requested an MRI. Findings: The reviewer found it appropriate.",
            "An enrollee has requested an MRI.",
        ),
        (  # a general statement: dropped, the row kept
            f"{START} An enrollee has requested an MRI. The MRI is appropriate.",
            "An enrollee has requested an MRI.",
        ),
        (
            f"{START} An enrollee has requested an MRI. The denial was overturned. Findings: x",
            "An enrollee has requested an MRI.",
        ),
        (
            f"{START} An enrollee has requested an MRI. It was upheld on appeal. Findings: x",
            "An enrollee has requested an MRI.",
        ),
        (
            f"{START} An enrollee has requested an MRI. The MRI should be covered. Findings: x",
            "An enrollee has requested an MRI.",
        ),
        (
            f"{START} An enrollee has requested an MRI. It is medically necessary. Findings: x",
            "An enrollee has requested an MRI.",
        ),
    ],
)
def test_outcome_sentences_are_dropped_and_the_request_kept(findings: str, background: str) -> None:
    assert split_findings(findings).background == background


@pytest.mark.parametrize(
    "findings",
    [
        "",
        "   ",
        f"{START}   Findings: The physician reviewer found the MRI appropriate.",
    ],
)
def test_background_is_none_without_a_request_sentence(findings: str) -> None:
    assert split_findings(findings).background is None


# --- 2016 structured schema --------------------------------------------------------


def test_load_2016_schema_maps_every_field() -> None:
    path = FIXTURES / "imr_2016_small.csv"
    result = load_dmhc(path)

    assert result.schema == "2016-structured"
    assert result.excluded == [ExcludedRow("UR13-90004", "no treatment category or subcategory")]
    assert result.records[0] == ItemRecord(
        id="MN16-90001",
        group_id="MN16-90001",
        source="dmhc",
        source_file=str(path),
        request="Pharmacy/Prescription Drugs: Anti-virals",
        summary="",
        label=1,
        patient_sex="male",
        age_range="41-50",
        imr_type="Medical Necessity",
        diagnosis_category="Infectious",
        diagnosis_subcategory="Hepatitis",
        request_category="Pharmacy/Prescription Drugs",
        event_date="2016-12-31",
        report_year=2016,
    )
    rows = [
        (r.id, r.label, r.request, r.request_category, r.age_range, r.patient_sex, r.report_year)
        for r in result.records
    ]
    assert rows == [
        (
            "MN16-90001",
            1,
            "Pharmacy/Prescription Drugs: Anti-virals",
            "Pharmacy/Prescription Drugs",
            "41-50",
            "male",
            2016,
        ),
        ("EI15-90002", 0, "Cancer Care: Chemotherapy", "Cancer Care", "51-64", "female", 2015),
        (
            "MN14-90003",
            0,
            "Residential Treatment Center - Admission",
            None,
            "11-20",
            "female",
            2014,
        ),
        (
            "MN12-90005",
            0,
            "Diagnostic Imaging, Screening and Testing: MRI",
            "Diagnostic Imaging, Screening and Testing",
            "0-10",
            "male",
            2012,
        ),
    ]
    assert [r.imr_type for r in result.records] == [
        "Medical Necessity",
        "Experimental/Investigational",
        "Medical Necessity",
        "Medical Necessity",
    ]
    assert result.records[3].diagnosis_category is None


# --- portal schema -----------------------------------------------------------------


def test_load_portal_schema_decodes_and_isolates_backgrounds() -> None:
    path = FIXTURES / "imr_portal_small.csv"
    result = load_dmhc(path)

    assert result.schema == "portal"
    assert result.records[0] == ItemRecord(
        id="MN23-90001",
        group_id="MN23-90001",
        source="dmhc",
        source_file=str(path),
        request="Pharmacy/Prescription Drugs: Biologics & Immunologics",
        summary=(
            "An enrollee has requested adalimumab for her Crohn's disease. The health plan "
            "denied the request as not medically necessary. The patient's gastroenterologist "
            "reports a flare despite mesalamine \u2013 she has lost 6 kg."
        ),
        label=1,
        patient_sex="female",
        age_range="41-50",
        imr_type="Medical Necessity",
        diagnosis_category="Digestive System/ Gastrointestinal",
        diagnosis_subcategory="Crohn's Disease",
        request_category="Pharmacy/Prescription Drugs",
        event_date="2023-12-31",
        report_year=2023,
    )
    kept = [(r.id, r.label, r.summary) for r in result.records[1:]]
    assert kept == [
        (
            "EI22-90002",
            0,
            "A 67-year-old male enrollee has requested a PSMA PET scan to stage his prostate "
            "cancer. His urologist states that the scan should be covered because a bone scan "
            'was negative. The plan called the scan "investigational."',
        ),
        ("MN22-90003", 1, "An enrollee has requested physical therapy for low back pain."),
        (
            "MN22-90004",
            1,
            "An enrollee has requested reimbursement for a three-day hospital admission.",
        ),
        ("UR21-90005", 1, "An enrollee has requested knee arthroscopy for a locked knee."),
        (
            "MN21-90006",
            0,
            "The parent of a 6-year-old boy has requested 40 hours per week of applied "
            "behavior analysis.",
        ),
        (
            "MN19-90009",
            0,
            "A 15-year-old enrollee has requested braces for crowded teeth. Her dentist "
            "believes the braces are medically necessary.",
        ),
    ]
    last = result.records[-1]
    assert (last.request, last.request_category, last.age_range, last.patient_sex) == (
        "Orthodontia",
        None,
        "11-20",
        None,
    )


def test_load_portal_schema_reports_excluded_rows_with_reasons() -> None:
    result = load_dmhc(FIXTURES / "imr_portal_small.csv")

    assert result.excluded == [
        ExcludedRow("MN20-90007", EMPTY_REASON),
        ExcludedRow("MN20-90008", NO_REQUEST_REASON),
    ]
    kept = {r.id for r in result.records}
    assert kept.isdisjoint(row.reference_id for row in result.excluded)
    assert len(kept) + len(result.excluded) == 9


def test_load_portal_schema_accepts_utf8(tmp_path: Path) -> None:
    path = tmp_path / "portal_utf8.csv"
    row = (
        '"MN24-00001","2024","Cancer","Lung","Cancer Care","Radiation &amp; Proton Therapy",'
        '"Overturned","Medical Necessity","65+","Female","Standard","30","3",'
        f'"{START} An enrollee\u2019s oncologist requested proton therapy. Findings: x"'
    )
    path.write_text(f"\ufeff{PORTAL_HEADER}\n{row}\n", encoding="utf-8")

    (record,) = load_dmhc(path).records

    assert record.request == "Cancer Care: Radiation & Proton Therapy"
    assert record.summary == "An enrollee's oncologist requested proton therapy."


def test_unknown_determination_is_an_error_naming_the_row() -> None:
    path = FIXTURES / "imr_portal_bad_determination.csv"
    with pytest.raises(ParseError) as excinfo:
        load_dmhc(path)

    error = excinfo.value
    assert (error.source, error.section) == (str(path), "row MN23-90102")
    assert error.reason == (
        "column Determination: unknown value 'Pending Review'; expected one of "
        "'Upheld Decision of Health Plan', 'Overturned Decision of Health Plan', "
        "'Upheld', 'Overturned' (2 row(s) in the file have unknown values)"
    )


# --- malformed files ---------------------------------------------------------------


def test_unknown_header_is_a_parse_error(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("id,year,outcome\nX1,2020,Upheld\n", encoding="utf-8")

    with pytest.raises(ParseError) as excinfo:
        load_dmhc(path)

    assert str(excinfo.value) == (
        f"{path}: header: not a DMHC IMR export header; expected the columns of "
        "2016-structured (';'-separated): Reference ID, Report Year, Diagnosis Category, "
        "Diagnosis Sub Category, Treatment Category, Treatment Sub Category, Determination, "
        "Type, Age Range, Patient Gender; portal (','-separated): ReferenceID, ReportYear, "
        "DiagnosisCategory, DiagnosisSubCategory, TreatmentCategory, TreatmentSubCategory, "
        "Determination, Type, AgeRange, PatientGender, IMRType, DaysToReview, DaysToAdopt, "
        "Findings; found 'id,year,outcome'"
    )


def test_empty_file_is_a_parse_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(
        ParseError, match=r": header: the file is empty or its first line is blank$"
    ):
        load_dmhc(path)


def _write_2016(tmp_path: Path, *rows: str) -> Path:
    header = (FIXTURES / "imr_2016_small.csv").read_text().splitlines()[0]
    path = tmp_path / "imr_2016.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="ascii")
    return path


GOOD_ROW = "MN16-00001;2016;Cancer;Breast;Cancer Care;Chemotherapy;Upheld;Medical Necessity;;"


@pytest.mark.parametrize(
    ("rows", "section", "reason"),
    [
        (
            (GOOD_ROW, GOOD_ROW),
            "row MN16-00001",
            "column Reference ID: reference id appears more than once; ids must be unique, "
            "drop the duplicate rows",
        ),
        (
            (GOOD_ROW, ";2016;Cancer;;;;Upheld;Medical Necessity;;"),
            "data row 2",
            "column Reference ID is empty",
        ),
        (
            (GOOD_ROW.replace("2016", "16", 1),),
            "row MN16-00001",
            "column Report Year: expected a four-digit year, found '16'",
        ),
    ],
)
def test_bad_2016_rows_are_parse_errors(
    tmp_path: Path, rows: tuple[str, ...], section: str, reason: str
) -> None:
    with pytest.raises(ParseError) as excinfo:
        load_dmhc(_write_2016(tmp_path, *rows))
    assert (excinfo.value.section, excinfo.value.reason) == (section, reason)


def test_row_with_an_extra_separator_is_a_parse_error(tmp_path: Path) -> None:
    path = _write_2016(tmp_path, GOOD_ROW, GOOD_ROW.replace("Breast", "Breast;Left"))
    with pytest.raises(ParseError) as excinfo:
        load_dmhc(path)
    assert excinfo.value.section == "rows"
    assert excinfo.value.reason == (
        "Error tokenizing data. C error: Expected 10 fields in line 3, saw 11; "
        "a value with an unquoted separator splits the row"
    )


def test_missing_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        load_dmhc(tmp_path / "absent.csv")
    assert str(excinfo.value) == (
        f"path: {tmp_path / 'absent.csv'} is not a file; download the export with "
        "imr_outcome.data.download.download(DMHC_EXPORT_URL, dest)"
    )


# --- real data ---------------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.skipif(not REAL_2016.parent.is_dir(), reason=f"{REAL_2016.parent} is absent")
def test_real_2016_export_counts() -> None:
    result = load_dmhc(REAL_2016)

    assert result.schema == "2016-structured"
    # 19,228 rows: 140 name no treatment at all, so there is no request to predict.
    assert len(result.records) == 19_088
    assert Counter(r.label for r in result.records) == {0: 10_702, 1: 8_386}
    assert {r.summary for r in result.records} == {""}
    assert Counter(row.reason for row in result.excluded) == {
        "no treatment category or subcategory": 140
    }
    assert len({r.id for r in result.records} | {r.reference_id for r in result.excluded}) == 19_228
    assert "11_20" not in {r.age_range for r in result.records}
