"""End to end: the real CLI on fixture letters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from imr_outcome.cli import app
from imr_outcome.data.letters import parse_letter_file

from conftest import LETTER_FIXTURES

runner = CliRunner()


def _letters(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "letters"
    folder.mkdir()
    for name in names:
        shutil.copy(LETTER_FIXTURES / name, folder / name)
    return folder


GOOD = [
    "single_upheld.txt",
    "mixed_multi.txt",
    "partial_authorization.txt",
    "inline_credentials.txt",
    "many_items.txt",
    "double_spaced_export.txt",
]


def test_data_build_writes_dataset_card_and_report(tmp_path: Path) -> None:
    out = tmp_path / "dataset"

    result = runner.invoke(app, ["data", "build", str(_letters(tmp_path, GOOD)), "--out", str(out)])

    assert result.exit_code == 0, result.output
    card = json.loads((out / "card.json").read_text())
    assert card["splits"]["dwc"]["items"] == 32
    assert card["ingest"] == {
        "files_read": 6,
        "letters_parsed": 6,
        "failures": 0,
        "skipped_files": 0,
        "excluded_table_rows": 0,
    }
    assert card["leakage_audit"]["passed"] is True
    assert (out / "card.md").read_text().startswith("# Dataset card")
    assert (out / "items-dwc.parquet").is_file() and (out / "hf" / "dataset_dict.json").is_file()
    assert "Dataset card" in result.output


def test_data_build_exits_1_and_lists_failures(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    letters = _letters(tmp_path, [*GOOD, "truncated.txt"])

    result = runner.invoke(app, ["data", "build", str(letters), "--out", str(out)])

    assert result.exit_code == 1
    report = json.loads((out / "ingest_report.json").read_text())
    assert [(Path(f["source"]).name, f["section"]) for f in report["failures"]] == [
        ("truncated.txt", "decisions")
    ]
    assert (out / "card.json").is_file()


def test_data_build_rejects_a_bad_cutoff(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "data",
            "build",
            str(LETTER_FIXTURES),
            "--out",
            str(tmp_path),
            "--time-split-cutoff",
            "2017/01/01",
        ],
    )

    assert result.exit_code == 2
    assert "--time-split-cutoff: expected [SOURCE=]YYYY-MM-DD" in result.output


def test_data_parse_json(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["data", "parse", str(LETTER_FIXTURES / "partial_authorization.txt"), "--json"]
    )

    assert result.exit_code == 0, result.output
    parsed = json.loads(result.output)
    assert parsed["case_number"] == "CM99-0000103"
    assert [item["partial_authorization"] for item in parsed["items"]] == [True, True, True]
    assert "rationale" not in result.output.lower()
    # Each item carries the columns `score` reads, so letters become a batch file.
    letter = parse_letter_file(LETTER_FIXTURES / "partial_authorization.txt")
    ids = [f"{letter.letter_id}-{n}" for n in (1, 2, 3)]
    assert [item["id"] for item in parsed["items"]] == ids
    assert [item["request"] for item in parsed["items"]] == [i.request.value for i in letter.items]
    assert {item["summary"] for item in parsed["items"]} == {letter.summary.value}
    assert parsed["summary_words"] == len(letter.summary.value.split()) > 20


def test_retrain_needs_sources_and_reason_only_with_force(tmp_path: Path) -> None:
    no_sources = runner.invoke(app, ["retrain"])
    stray_reason = runner.invoke(app, ["retrain", str(tmp_path), "--reason", "why"])

    assert no_sources.exit_code == 2
    assert "--sources: give at least one file or folder" in no_sources.output
    assert stray_reason.exit_code == 2
    assert "--reason: only with --force" in stray_reason.output
