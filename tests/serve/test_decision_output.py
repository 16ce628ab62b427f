"""The decision output of the Predictor: band, base rate, relative risk, abstention."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imr_outcome.cli import app
from imr_outcome.errors import InvalidInputError
from imr_outcome.serve.batch import score_file
from imr_outcome.serve.predictor import Predictor

from model_factory import registered_tfidf_store

SUMMARY = (
    "The injured worker is a 44 year old male with chronic low back pain radiating to the "
    "left leg after lifting boxes at work. Examination showed lumbar tenderness and a "
    "positive straight leg raise. Treatment to date included medications and a home "
    "exercise program. The physician requested physical therapy for the lumbar spine. "
)
REQUEST = "Physical therapy 6 sessions for the lumbar spine"


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Predictor]:
    root: Path = tmp_path_factory.mktemp("store")
    with registered_tfidf_store(root):
        yield Predictor.load("models:/imr-outcome@champion")


def test_a_full_input_gets_a_score_band_and_the_base_rate(predictor: Predictor) -> None:
    prediction = predictor.predict(REQUEST, SUMMARY, explain=False)
    rule = predictor.decision
    assert rule is not None
    assert prediction.band in {"likely upheld", "uncertain", "likely overturned"}
    assert prediction.band == rule.band(prediction.p_overturned)
    assert prediction.base_rate == pytest.approx(rule.base_rate)
    assert 0 < rule.base_rate < 1
    assert prediction.relative_risk == pytest.approx(prediction.p_overturned / rule.base_rate)
    assert prediction.band_reason


def test_a_short_summary_is_insufficient_information_with_the_probability(
    predictor: Predictor,
) -> None:
    prediction = predictor.predict(REQUEST, "Lumbar pain after a fall.", explain=False)
    assert prediction.band == "insufficient information"
    assert prediction.band_reason == "the case summary has 5 words; at least 20 are needed"
    assert 0 <= prediction.p_overturned <= 1
    assert prediction.band_accuracy is None


def test_text_without_clinical_vocabulary_is_insufficient_information(
    predictor: Predictor,
) -> None:
    filler = " ".join(["the weather was fine and the meeting went on as planned"] * 3)
    prediction = predictor.predict("Something for the thing", filler, explain=False)
    assert prediction.band == "insufficient information"
    assert prediction.band_reason == "the request and summary use no clinical vocabulary"


@pytest.mark.parametrize(
    ("request_text", "summary", "field"),
    [
        (REQUEST, "   \n\t", "summary"),
        (REQUEST, "\x00\x01 ?!", "summary"),
        ("12/3 --", SUMMARY, "request"),
    ],
)
def test_text_without_letters_is_invalid_input(
    predictor: Predictor, request_text: str, summary: str, field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        predictor.predict(request_text, summary, explain=False)
    assert caught.value.field == field


def test_batch_scoring_gives_an_error_row_for_a_summary_without_letters(
    predictor: Predictor, tmp_path: Path
) -> None:
    source = tmp_path / "items.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", "item", "background"])
        writer.writerow(["good", REQUEST, SUMMARY])
        writer.writerow(["blank", REQUEST, "  \t "])
        writer.writerow(["symbols", REQUEST, "?! -- 12/3"])
    target = tmp_path / "scored.csv"
    score_file(
        source,
        target,
        predictor,
        id_column="case_id",
        request_column="item",
        summary_column="background",
    )
    with target.open(encoding="utf-8") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert rows["good"]["error"] == ""
    assert rows["blank"]["error"] == "summary: is empty; write it out in words"
    assert rows["symbols"]["error"].startswith("summary: has no letters")
    assert rows["symbols"]["p_overturned"] == ""


def test_the_cli_exits_2_for_a_summary_without_letters(predictor: Predictor) -> None:
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "--model",
            "models:/imr-outcome@champion",
            "--request",
            REQUEST,
            "--summary",
            " \x01 ?!",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "summary" in result.output
