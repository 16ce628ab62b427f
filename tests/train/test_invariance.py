from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from imr_outcome.data.model_input import ModelInput
from imr_outcome.errors import InvalidInputError
from imr_outcome.train.invariance import flatten_report, invariance_report

REQUESTS = ["MRI of the knee", "Physical therapy", "Acupuncture", "Lumbar fusion"]
SUMMARIES = [
    "The injured worker is a 40-year-old man. He fell on 3/17/14.",
    "The patient is a 52-year-old woman. She fell.",
    "Knee pain after a fall.",
    "The injured worker reported back pain.",
]
LABELS = [1, 0, 0, 1]


def style_sensitive(inputs: list[ModelInput]) -> NDArray[np.float64]:
    """P = 0.2, plus 0.3 for "injured worker" in the caller's summary, plus 0.1 for a male
    prefix. Reads the caller's text, past the style-blind model input, so that the report's
    arithmetic has deltas to count."""
    return np.array(
        [
            0.2
            + 0.3 * ("injured worker" in item.caller_summary)
            + 0.1 * item.text.startswith("male patient")
            for item in inputs
        ]
    )


def reads_the_model_input(inputs: list[ModelInput]) -> NDArray[np.float64]:
    """The same cues, read where every model kind reads: the model input itself."""
    return np.array(
        [
            0.2 + 0.3 * ("injured worker" in item.text_pair) + 0.2 * ("She" in item.text_pair)
            for item in inputs
        ]
    )


def test_a_model_reading_the_model_input_cannot_move_with_style_sex_or_dates() -> None:
    report = invariance_report(reads_the_model_input, REQUESTS, SUMMARIES, labels=LABELS)

    changed = {name for name, figure in report.items() if figure.n_changed > 0}
    assert changed >= {
        "house_style_to_patient",
        "house_style_to_injured_worker",
        "house_style_to_applicant",
        "sex_swap",
    }
    assert "dates_to_long" in changed
    assert all(report[name].max_abs_delta == 0.0 for name in changed)


def test_deltas_count_only_changed_items() -> None:
    report = invariance_report(
        style_sensitive,
        REQUESTS,
        SUMMARIES,
        [{"patient_sex": "male"}, None, None, None],
        labels=LABELS,
    )
    to_patient = report["house_style_to_patient"]
    assert to_patient.n_items == 4
    assert to_patient.n_changed == 2  # items 0 and 3
    assert to_patient.mean_abs_delta == pytest.approx(0.3)
    assert to_patient.max_abs_delta == pytest.approx(0.3)
    assert to_patient.mean_abs_delta_all == pytest.approx(0.15)
    assert to_patient.auroc_before == pytest.approx(1.0)
    # After: every item scores 0.2 (the prefix no longer names the sex) -> all ties.
    assert to_patient.auroc_after == pytest.approx(0.5)
    to_worker = report["house_style_to_injured_worker"]
    assert to_worker.n_changed == 1  # item 1
    assert to_worker.mean_abs_delta == pytest.approx(0.3)
    # The sex swap rewrites metadata too, but the model input never names the patient's
    # sex (build_model_input), so a model keyed on a "male patient" prefix cannot move.
    sex = report["sex_swap"]
    assert sex.n_changed == 2
    assert sex.mean_abs_delta == pytest.approx(0.0)
    assert sex.max_abs_delta == pytest.approx(0.0)
    assert report["dates_to_long"].n_changed == 1
    assert report["dates_to_long"].mean_abs_delta == pytest.approx(0.0)


def test_a_rewrite_that_changes_nothing_has_no_mean() -> None:
    report = invariance_report(style_sensitive, ["MRI"], ["Knee pain."], None)
    figure = report["sex_swap"]
    assert figure.n_changed == 0
    assert math.isnan(figure.mean_abs_delta)
    assert figure.max_abs_delta == 0.0
    assert figure.auroc_before is None and figure.auroc_after is None


def test_only_changed_items_are_scored_again() -> None:
    calls: list[int] = []

    def counting(inputs: list[ModelInput]) -> NDArray[np.float64]:
        calls.append(len(inputs))
        return np.full(len(inputs), 0.5)

    invariance_report(
        counting,
        REQUESTS,
        SUMMARIES,
        rewrites={"to_patient": lambda t: t.replace("injured worker", "patient")},
    )
    assert calls == [4, 2]


def test_flatten_report_gives_mlflow_keys() -> None:
    report = invariance_report(style_sensitive, REQUESTS, SUMMARIES, labels=LABELS)
    flat = flatten_report(report)
    assert flat["invariance.house_style_to_patient.mean_abs_delta"] == pytest.approx(0.3)
    assert flat["invariance.sex_swap.n_changed"] == 2.0
    assert flat["invariance.sex_swap.auroc_after"] == pytest.approx(1.0)
    assert len(flat) == 6 * 7
    no_labels = flatten_report(invariance_report(style_sensitive, REQUESTS, SUMMARIES))
    assert "invariance.sex_swap.auroc_before" not in no_labels


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="summaries: has 1 items, requests has 4"):
        invariance_report(style_sensitive, REQUESTS, SUMMARIES[:1])
    with pytest.raises(InvalidInputError, match="requests: is empty"):
        invariance_report(style_sensitive, [], [])
    with pytest.raises(
        InvalidInputError, match=r"predict_overturned: expected P\(Overturned\) of shape \(4,\)"
    ):
        invariance_report(lambda inputs: np.zeros((len(inputs), 2)), REQUESTS, SUMMARIES)
