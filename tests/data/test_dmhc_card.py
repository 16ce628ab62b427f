"""The dataset card reports the DMHC Findings split (rows, sentences, background lengths)."""

from __future__ import annotations

from pathlib import Path

from imr_outcome.data.card import build_card, render_markdown
from imr_outcome.data.dataset import BuildConfig
from imr_outcome.data.dataset_build import build_dataset
from imr_outcome.data.dmhc import load_dmhc
from imr_outcome.data.dmhc_findings import EMPTY_REASON, NO_REQUEST_REASON
from imr_outcome.data.ingest import IngestedRows, ingest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dmhc"


def test_card_counts_text_and_no_text_rows_in_one_dmhc_split() -> None:
    portal = load_dmhc(FIXTURES / "imr_portal_findings.csv")
    table = load_dmhc(FIXTURES / "imr_2016_small.csv")
    report = IngestedRows(
        records=[*portal.records, *table.records],
        excluded_rows=[
            {"source": "x", "id": row.reference_id, "reason": row.reason}
            for row in [*portal.excluded, *table.excluded]
        ],
        files_read=2,
    )
    built = build_dataset(report.records, BuildConfig(n_folds=2))

    card = build_card(built, report, ["tests"], dmhc_findings=portal.findings.merge(table.findings))

    assert list(card["splits"]) == ["dmhc"]
    dmhc = card["splits"]["dmhc"]
    assert (dmhc["items"], dmhc["with_summary"]) == (
        len(portal.records) + len(table.records),
        len(portal.records),
    )
    assert card["excluded_rows_by_reason"] == {
        EMPTY_REASON: 1,
        NO_REQUEST_REASON: 1,
        "no treatment category or subcategory": 1,
    }
    assert card["dmhc_findings"] == portal.findings.to_json()
    markdown = render_markdown(card)
    assert "- Rows with Findings: 10; kept 8 (1 with the request sentence only)" in markdown
    assert "- Sentences kept 21, dropped 38: after_reasoning 2, before_request 2," in markdown
    assert "- Background words p5/p25/p50/p75/p95/max: 15/25/30/36/42/44" in markdown
    assert f"- Excluded (1): {NO_REQUEST_REASON}" in markdown


def test_card_without_findings_counts_has_no_findings_section() -> None:
    table = load_dmhc(FIXTURES / "imr_2016_small.csv")
    built = build_dataset(table.records, BuildConfig(n_folds=2))

    card = build_card(built, IngestedRows(records=table.records), ["tests"])

    assert "dmhc_findings" not in card
    assert card["splits"]["dmhc"]["with_summary"] == 0
    assert "Findings split" not in render_markdown(card)


def test_ingest_sums_the_findings_split_of_every_dmhc_table() -> None:
    portal = load_dmhc(FIXTURES / "imr_portal_findings.csv")
    table = load_dmhc(FIXTURES / "imr_2016_small.csv")

    report = ingest([FIXTURES / "imr_portal_findings.csv", FIXTURES / "imr_2016_small.csv"])

    expected = portal.findings.merge(table.findings).to_json()
    assert report.dmhc_findings.to_json() == expected
    assert report.to_json()["dmhc_findings"] == expected
    assert expected["rows_kept"] == portal.findings.kept > 0
