"""Tests for imr_outcome.data.dmhc_findings: every Findings shape, sentence by sentence.

The fixture rows in ``tests/fixtures/dmhc/imr_portal_findings.csv`` are invented; they
copy the structure of real DMHC portal ``Findings`` (request sentence, facts, guideline
statements, judgements, "Findings:", "Final Result:", "Credentials/Qualifications:").
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from imr_outcome.data.audit import audit_dmhc_reasoning, audit_outcome_language
from imr_outcome.data.dmhc import ExcludedRow, load_dmhc
from imr_outcome.data.dmhc_findings import (
    EMPTY_REASON,
    NO_REQUEST_REASON,
    REQUEST_CUE_REASON,
    FindingsStats,
    clean_findings,
    split_findings,
    split_sentences,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "dmhc" / "imr_portal_findings.csv"
START = "Nature of Statutory Criteria/Case Summary:"
SHARED_SAMPLE = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "dmhc-portal-sample"
    / "dmhc-portal-sample-20.csv"
)


def _findings() -> dict[str, str]:
    with FIXTURE.open(encoding="utf-8", newline="") as f:
        return {row["ReferenceID"]: row["Findings"] for row in csv.DictReader(f)}


def _verdict(x: str, outcome: str) -> list[tuple[str, str]]:
    necessary = "medically necessary" if outcome == "overturned" else "not medically necessary"
    return [
        (
            "section",
            f"Final Result: The reviewer determined that the requested {x} is {necessary} "
            "for the treatment of the patient's medical condition.",
        ),
        ("section", f"Therefore, the Health Plan's denial should be {outcome}."),
    ]


def _credentials(specialty: str) -> list[tuple[str, str]]:
    return [
        (
            "section",
            f"Credentials/Qualifications: The reviewer is board certified in {specialty} "
            "and is actively practicing.",
        )
    ]


#: Every sentence of every fixture row, with the label the split must give it.
EXPECTED: dict[str, list[tuple[str, str]]] = {
    # request only, then the verdict and credentials
    "MN24-91001": [
        (
            "request",
            "The patient has requested authorization and coverage for a continuous glucose "
            "monitor.",
        ),
        *_verdict("device", "overturned"),
        *_credentials("endocrinology"),
    ],
    # facts, then the reviewer's first evaluative sentence ends the background
    "MN24-91002": [
        (
            "request",
            "An enrollee has requested reimbursement for inpatient rehabilitation services.",
        ),
        (
            "fact",
            "The records indicate that this patient presents with a history of a left "
            "hemispheric stroke.",
        ),
        ("fact", "The patient reports weakness of the right arm and leg."),
        ("fact", "She was discharged from the acute hospital after six days."),
        ("connective", "However, the patient was walking 150 feet with a walker at discharge."),
        (
            "after_reasoning",
            "Based on the available documentation, there is a lack of indication for "
            "inpatient rehabilitation.",
        ),
        *_verdict("service", "upheld"),
        *_credentials("physical medicine and rehabilitation"),
    ],
    # reasoning only: no request sentence, so the row is excluded
    "MN25-91003": [
        (
            "before_request",
            "Per ASAM criteria, residential treatment is appropriate for patients with severe "
            "withdrawal risk.",
        ),
        ("before_request", "Current guidelines recommend a trial of outpatient care first."),
        *_verdict("service", "upheld"),
    ],
    # "Findings: The physician reviewer found that Nature of ..." order; guideline and
    # literature sentences dropped between facts; a fact repeating the guideline's
    # threshold is the reviewer applying the criterion, so it ends the background
    "MN25-91004": [
        (
            "request",
            "The parent of a patient has requested authorization and coverage for growth "
            "hormone therapy.",
        ),
        (
            "literature",
            "Current guidelines recommend growth hormone therapy for children with a height "
            "z-score below -2.25.",
        ),
        (
            "fact",
            "The records indicate that this patient was born at term after an uncomplicated "
            "pregnancy.",
        ),
        (
            "literature",
            'Researchers explain, "Most short children have a normal variant of growth. '
            'Testing rarely changes management."',
        ),
        ("fact", "The patient's bone age was read as equal to his chronological age."),
        (
            "threshold",
            "The records indicate that this patient's height z-score remained above -2.25 on "
            "three assessments.",
        ),
        ("after_reasoning", "His growth has been consistent with the familial pattern."),
        *_verdict("medication", "upheld"),
        *_credentials("pediatric endocrinology"),
    ],
    # no marker at all
    "MN23-91005": [
        (
            "request",
            "The patient has requested authorization and coverage for an MRI of the left knee.",
        ),
        ("fact", "The patient reports knee pain and locking after a fall in March."),
        ("fact", "He completed six weeks of physical therapy without relief."),
        (
            "judgement",
            "The requested MRI is medically necessary to evaluate a suspected meniscal tear.",
        ),
        *_verdict("imaging", "overturned"),
    ],
    # mojibake: UTF-8 read as Windows-1252 once (â€™) and twice (Ã¢Â€Â™)
    "MN24-91006": [
        (
            "request",
            "The patient's parent has requested authorization and coverage for adalimumab.",
        ),
        (
            "fact",
            "The patient's gastroenterologist documented a flare with bloody diarrhea in May.",
        ),
        ("connective", "Therefore, adalimumab is medically necessary."),
        *_verdict("medication", "overturned"),
    ],
    # HTML entities (&#8217; &amp; &#8209; &#39;), no Nature marker after "Findings:"
    "MN26-91007": [
        (
            "request",
            "The patient's parent has requested authorization and coverage for Xeljanz liquid "
            "solution.",
        ),
        (
            "fact",
            "The patient has polyarticular arthritis of the knees & wrists and took "
            "methotrexate for two years.",
        ),
        ("general", "Xeljanz is indicated only after failure of an anti-TNF agent."),
        ("judgement", "The patient has no documented trial of an anti-TNF agent."),
        *_verdict("medication", "upheld"),
        *_credentials("pediatric rheumatology"),
    ],
    # three reviewers (older format): the parties' positions are kept
    "MN09-91008": [
        ("request", "An enrollee has requested proton beam therapy for prostate cancer."),
        (
            "fact",
            "The enrollee's radiation oncologist states that proton therapy would spare the "
            "rectum.",
        ),
        ("fact", "The health plan denied the request as not medically necessary."),
        (
            "section",
            "Findings: Two of the three physician reviewers found that proton beam therapy is "
            "not likely to be more beneficial than intensity-modulated radiation therapy.",
        ),
        ("section", "Reviewer #1 noted that no randomized trial shows a benefit."),
        ("section", "Reviewer #2 found the request appropriate."),
        ("section", "Reviewer #3 agreed with the first reviewer."),
    ],
    # Final Result and credentials glued to the sentence before them
    "MN25-91009": [
        (
            "request",
            "A patient has requested authorization and coverage for a right shoulder MRI "
            "arthrogram.",
        ),
        ("fact", "The records document shoulder pain for four years."),
        ("fact", "Physical therapy notes were from 2021."),
        (
            "connective",
            "Accordingly, the MRI arthrogram is not medically necessary for this patient.",
        ),
        (
            "section",
            "Final Result: The reviewer determined that the requested imaging is not medically "
            "necessary.",
        ),
        ("section", "Therefore, the Health Plan's denial is upheld."),
        (
            "section",
            "Credentials/Qualifications:The reviewer is board-certified in orthopedic surgery.",
        ),
    ],
    "MN20-91010": [],
}
EXCLUDED = {"MN25-91003": NO_REQUEST_REASON, "MN20-91010": EMPTY_REASON}


@pytest.mark.parametrize("reference_id", sorted(EXPECTED))
def test_every_sentence_of_every_fixture_shape(reference_id: str) -> None:
    split = split_findings(_findings()[reference_id])

    assert [(s.label, s.text) for s in split.sentences] == EXPECTED[reference_id]
    assert split.reason == EXCLUDED.get(reference_id, "")
    if reference_id in EXCLUDED:
        assert split.background is None
    else:
        kept = [text for label, text in EXPECTED[reference_id] if label in ("request", "fact")]
        assert split.background == " ".join(kept)


def test_kept_sentences_of_the_fixtures_pass_the_dmhc_audit() -> None:
    records = load_dmhc(FIXTURE).records

    assert audit_dmhc_reasoning(records) == []
    assert audit_outcome_language(records) == []


def test_load_reports_exclusions_and_counts_for_the_fixture() -> None:
    result = load_dmhc(FIXTURE)

    assert result.excluded == [
        ExcludedRow("MN25-91003", NO_REQUEST_REASON),
        ExcludedRow("MN20-91010", EMPTY_REASON),
    ]
    assert [r.id for r in result.records] == [
        "MN24-91001",
        "MN24-91002",
        "MN25-91004",
        "MN23-91005",
        "MN24-91006",
        "MN26-91007",
        "MN09-91008",
        "MN25-91009",
    ]
    dropped = Counter(
        label
        for sentences in EXPECTED.values()
        for label, _ in sentences
        if label not in ("request", "fact")
    )
    assert result.findings.to_json() == {
        "rows_with_findings": 10,
        "rows_kept": 8,
        "rows_request_only": 1,
        "rows_excluded": {EMPTY_REASON: 1, NO_REQUEST_REASON: 1},
        "sentences_kept": 21,
        "sentences_dropped": 38,
        "sentences_dropped_by_label": dict(sorted(dropped.items())),
        # numpy's linear percentiles of the word counts below
        "background_words": {"p5": 15, "p25": 25, "p50": 30, "p75": 36, "p95": 42, "max": 44},
    }
    assert result.findings.background_words == [12, 44, 40, 35, 21, 28, 32, 27]
    assert sum(dropped.values()) == 38


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("the patient\u00e2\u20ac\u2122s knee", "the patient's knee"),  # â€™
        ("the patient\u00c3\u00a2\u00c2\u20ac\u00c2\u2122s knee", "the patient's knee"),  # Ã¢Â€Â™
        ("knees &amp; wrists, anti&#8209;TNF, Crohn&#39;s", "knees & wrists, anti-TNF, Crohn's"),
        ("double &amp;#8217; escaped", "double ' escaped"),
        ("tablets.A federal agency", "tablets. A federal agency"),
        ("Xeljanz tablets.Obesity is", "Xeljanz tablets. Obesity is"),
        ("in the U.S. and 2.25 SDs", "in the U.S. and 2.25 SDs"),
        ("  many\r\n  spaces\t", "many spaces"),
    ],
)
def test_clean_findings_repairs_text_before_splitting(raw: str, clean: str) -> None:
    assert clean_findings(raw) == clean


def test_pysbd_keeps_abbreviations_decimals_and_quotations_whole() -> None:
    text = (
        "Dr. Lee saw the patient in the U.S. on 09/05/25. The z-score was -2.25 SDs. "
        'Experts noted, "Imaging is rarely needed. Rest helps." The patient improved.'
    )
    assert split_sentences(text) == [
        "Dr. Lee saw the patient in the U.S. on 09/05/25.",
        "The z-score was -2.25 SDs.",
        'Experts noted, "Imaging is rarely needed. Rest helps."',
        "The patient improved.",
    ]


@pytest.mark.parametrize(
    "findings",
    [
        "Nature of Statutory Criteria/Case Summary: The requested surgery is not medically "
        "necessary. Final Result: upheld.",
        "Findings: Two of the three physician reviewers found that the surgery is appropriate.",
        "   ",
    ],
)
def test_rows_without_a_request_sentence_are_excluded(findings: str) -> None:
    split = split_findings(findings)
    assert split.background is None
    assert split.reason in (NO_REQUEST_REASON, EMPTY_REASON)


def test_a_request_sentence_with_a_connective_cue_excludes_the_row() -> None:
    split = split_findings(
        f"{START} Therefore, the enrollee has requested the surgery. Final Result: x"
    )
    assert (split.background, split.reason) == (None, REQUEST_CUE_REASON)
    assert (split.sentences[0].label, split.sentences[0].cue) == ("request", "therefore")


def test_request_sentence_may_name_a_benefit_or_a_study() -> None:
    split = split_findings(
        f"{START} The enrollee has requested coverage for a sleep study under her pharmacy "
        "benefit. Findings: x"
    )
    assert split.background == (
        "The enrollee has requested coverage for a sleep study under her pharmacy benefit."
    )


def test_parallel_split_gives_the_same_records_and_counts() -> None:
    one, two = load_dmhc(FIXTURE, n_jobs=1), load_dmhc(FIXTURE, n_jobs=2)

    assert two.records == one.records
    assert two.excluded == one.excluded
    assert two.findings == one.findings


def test_stats_merge_and_empty_json() -> None:
    a, b = FindingsStats(), FindingsStats()
    a.add(split_findings(f"{START} An enrollee has requested an MRI. The patient fell."))
    b.add(split_findings(""))

    merged = a.merge(b).to_json()

    assert merged["rows_with_findings"] == 2
    assert merged["rows_kept"] == 1
    assert merged["rows_excluded"] == {EMPTY_REASON: 1}
    assert merged["sentences_kept"] == 2
    assert merged["background_words"]["max"] == 9  # 6 + 3 words
    assert FindingsStats().to_json()["background_words"] == {
        "p5": 0,
        "p25": 0,
        "p50": 0,
        "p75": 0,
        "p95": 0,
        "max": 0,
    }


@pytest.mark.real_data
@pytest.mark.skipif(not SHARED_SAMPLE.is_file(), reason=f"{SHARED_SAMPLE} is absent")
def test_real_portal_sample_keeps_90_percent_and_passes_the_audit() -> None:
    result = load_dmhc(SHARED_SAMPLE)

    assert len(result.records) >= 18  # >= 90% of the 20 rows
    assert audit_outcome_language(result.records) == []
    assert all(r.summary for r in result.records)
