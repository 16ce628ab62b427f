"""The `predict` and `score` commands end to end on fixture letters and small files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from imr_outcome.cli import app
from imr_outcome.data.letters import parse_letter_file
from imr_outcome.data.model_input import MetadataValue, ModelInput, build_model_input
from imr_outcome.data.schema import Letter
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.prediction import EvidenceSpan
from imr_outcome.model.warnings import WARN_SHORT_SUMMARY
from imr_outcome.train.run import TrainResult

from conftest import LETTER_FIXTURES
from model_factory import registered_tfidf_store

LETTER = LETTER_FIXTURES / "mixed_multi.txt"
#: A wide console, so that Rich does not wrap what the tests look for.
WIDE = {"COLUMNS": "250"}

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainResult]:
    """A tfidf model trained and registered (@champion) in a temporary SQLite store."""
    with registered_tfidf_store(tmp_path_factory.mktemp("store")) as result:
        yield result


@pytest.fixture(scope="module")
def letter() -> Letter:
    return parse_letter_file(LETTER)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _letter_probabilities(model: OutcomeModel, letter: Letter) -> list[float]:
    """P(Overturned) of each item from its request, the summary and age/sex only."""
    assert letter.patient_age is not None and letter.patient_sex is not None
    metadata: dict[str, MetadataValue] = {
        "patient_age": letter.patient_age.value,
        "patient_sex": letter.patient_sex.value,
    }
    inputs = [
        build_model_input(item.request.value, letter.summary.value, metadata)
        for item in letter.items
    ]
    return [float(p) for p in model.predict_proba(inputs, [metadata] * len(inputs))[:, 1]]


# -------------------------------------------------------------------------- predict


def test_predict_a_letter_shows_each_prediction_beside_the_decision(
    store: TrainResult, letter: Letter
) -> None:
    result = runner.invoke(app, ["predict", "--letter", str(LETTER), "--no-evidence"], env=WIDE)

    assert result.exit_code == 0, result.output
    output = _flat(result.output)
    p = _letter_probabilities(store.model, letter)
    labels = ["Overturned" if x >= store.model.threshold else "Upheld" for x in p]
    for item, label, p_item in zip(letter.items, labels, p, strict=True):
        decision = item.outcome.decision.value.value
        mark = "match" if decision == label else "miss"
        assert _flat(item.request.value) in output
        assert f"to be overturned, {p_item:.0%} (usual: " in output  # the headline
        threshold = store.model.threshold
        assert f"label {label} at threshold {threshold:.3f} actual: {decision} {mark}" in output
    matches = sum(
        i.outcome.decision.value.value == label
        for i, label in zip(letter.items, labels, strict=True)
    )
    assert f"{matches} of {len(letter.items)} predictions match the letter's decisions" in output
    assert "model imr-outcome version 1" in output


def test_predict_a_letter_as_json(store: TrainResult, letter: Letter) -> None:
    pytest.importorskip("imr_outcome.serve.evidence")

    result = runner.invoke(app, ["predict", "--letter", str(LETTER), "--json", "--top-k", "2"])

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [p["item"] for p in payload] == list(range(len(letter.items)))
    assert [p["request"] for p in payload] == [i.request.value for i in letter.items]
    assert [p["actual"] for p in payload] == [i.outcome.decision.value.value for i in letter.items]
    np.testing.assert_allclose(
        [p["p_overturned"] for p in payload], _letter_probabilities(store.model, letter), atol=1e-12
    )
    for prediction in payload:
        assert prediction["p_overturned"] + prediction["p_upheld"] == pytest.approx(1.0)
        assert (prediction["model_name"], prediction["model_version"]) == ("imr-outcome", "1")
        texts = {"request": prediction["request"], "summary": letter.summary.value}
        assert prediction["evidence"]
        for span in prediction["evidence"]:
            assert texts[span["field"]][span["start"] : span["end"]] == span["text"]


def _fake_explain(
    model: OutcomeModel,
    model_input: ModelInput,
    request: str,
    summary: str,
    *,
    top_k: int = 5,
    n_steps: int = 32,
    deadline: float | None = None,
) -> list[EvidenceSpan]:
    return [
        EvidenceSpan(
            field="request", start=0, end=3, text=request[:3], weight=0.5, direction="Overturned"
        ),
        EvidenceSpan(
            field="summary", start=0, end=7, text=summary[:7], weight=0.25, direction="Upheld"
        ),
    ]


def test_predict_free_text_with_a_summary_file(
    store: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("imr_outcome.serve.evidence")
    monkeypatch.setattr("imr_outcome.serve.evidence.explain", _fake_explain)
    summary_file = tmp_path / "summary.txt"
    summary_file.write_text("Chronic neck pain after a fall at work.", encoding="utf-8")
    arguments = [
        "predict",
        "--request",
        "MRI of the cervical spine",
        "--summary-file",
        str(summary_file),
    ]

    shown = runner.invoke(app, arguments, env=WIDE)
    as_json = runner.invoke(app, [*arguments, "--json"])

    assert shown.exit_code == 0, shown.output
    output = _flat(shown.output)
    assert "toward Overturned 0.500 request: 'MRI'" in output
    assert "toward Upheld 0.250 summary: 'Chronic'" in output
    assert f"warning: {WARN_SHORT_SUMMARY}" in output
    (prediction,) = json.loads(as_json.stdout)
    assert prediction["actual"] is None
    assert [s["text"] for s in prediction["evidence"]] == ["MRI", "Chronic"]
    assert prediction["warnings"] == [WARN_SHORT_SUMMARY]
    assert [w["code"] for w in prediction["warning_details"]] == ["short_summary"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "give either --letter FILE or --request TEXT"),
        (
            ["--letter", str(LETTER), "--request", "MRI"],
            "give either --letter FILE or --request TEXT",
        ),
        (
            ["--request", "MRI", "--summary", "a", "--summary-file", "b"],
            "give --summary or --summary-file, not both",
        ),
        (["--letter", str(LETTER), "--summary", "a"], "--letter brings its own case summary"),
        (["--request", "  "], "request: is empty; give the requested treatment or item"),
        (
            ["--request", "MRI", "--summary-file", "missing.txt"],
            "--summary-file: cannot read missing.txt",
        ),
        (
            ["--request", "MRI", "--model", "models:/nope@champion"],
            "models:/nope@champion: no registered model named 'nope'",
        ),
        (
            ["--letter", str(LETTER_FIXTURES / "not_a_letter.txt")],
            f"{LETTER_FIXTURES / 'not_a_letter.txt'}: document:",
        ),
    ],
)
def test_predict_refuses_bad_arguments_with_exit_2(
    store: TrainResult, arguments: list[str], message: str
) -> None:
    result = runner.invoke(app, ["predict", *arguments], env=WIDE)

    assert result.exit_code == 2, result.output
    assert message in _flat(result.output)


# ---------------------------------------------------------------------------- score


def _write_items(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


GOOD_ROWS = [
    {
        "id": f"r{n}",
        "request": "Physical therapy 6 sessions",
        "summary": "Low back pain.",
        "age": 40 + n,
    }
    for n in range(3)
]


def test_score_exits_0_when_every_row_is_scored(store: TrainResult, tmp_path: Path) -> None:
    source = _write_items(tmp_path / "items.jsonl", GOOD_ROWS)
    out = tmp_path / "scored.csv"

    result = runner.invoke(
        app,
        ["score", str(source), "--out", str(out), "--metadata-column", "patient_age=age"],
        env=WIDE,
    )

    assert result.exit_code == 0, result.output
    assert (
        f"3 rows: 3 scored, 0 failed, 0 already in the output (0 of them failed) -> {out}"
        in _flat(result.output)
    )
    assert out.read_text().count("\n") == 4


def test_score_exits_1_when_a_row_failed(store: TrainResult, tmp_path: Path) -> None:
    source = _write_items(tmp_path / "items.jsonl", [*GOOD_ROWS, {"id": "r9", "request": ""}])
    out = tmp_path / "scored.jsonl"

    result = runner.invoke(app, ["score", str(source), "--out", str(out)], env=WIDE)
    again = runner.invoke(app, ["score", str(source), "--out", str(out), "--resume"], env=WIDE)

    assert result.exit_code == 1, result.output
    assert "4 rows: 3 scored, 1 failed" in _flat(result.output)
    assert "1 row(s) failed; see the error column of" in _flat(result.output)
    assert again.exit_code == 1, again.output  # the output still holds a failed row
    assert "4 rows: 0 scored, 0 failed, 4 already in the output (1 of them failed)" in _flat(
        again.output
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--metadata-column", "age"], "--metadata-column: expected FIELD=COLUMN, got 'age'"),
        (["--request-column", "text"], "request_column: column 'text' is not in"),
        (
            ["--model", "models:/imr-outcome/7"],
            "models:/imr-outcome/7: registered model 'imr-outcome' has no version 7",
        ),
    ],
)
def test_score_refuses_bad_arguments_with_exit_2(
    store: TrainResult, tmp_path: Path, extra: list[str], message: str
) -> None:
    source = tmp_path / "items.csv"
    source.write_text("id,request,summary\nr1,MRI,Neck pain.\n", encoding="utf-8")
    out = tmp_path / "scored.csv"

    result = runner.invoke(app, ["score", str(source), "--out", str(out), *extra], env=WIDE)

    assert result.exit_code == 2, result.output
    assert message in _flat(result.output)
    assert not out.exists()
