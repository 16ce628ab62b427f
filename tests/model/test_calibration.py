from __future__ import annotations

import json
import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy.special import expit
from sklearn.exceptions import NotFittedError
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.calibration import (
    IsotonicCalibrator,
    PlattCalibrator,
    TemperatureScaler,
    calibrator_from_dict,
    make_calibrator,
)
from imr_outcome.train.metrics import expected_calibration_error

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _calibrated_logits(n: int, seed: int) -> tuple[FloatArray, IntArray]:
    """Class logits (n, 2) whose softmax is the true P(Overturned) of the drawn labels."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, (n, 2))
    y = (rng.random(n) < expit(logits[:, 1] - logits[:, 0])).astype(np.int64)
    return logits, y


def _ece_of_logits(y: IntArray, logits: FloatArray) -> float:
    return expected_calibration_error(y, expit(logits[:, 1] - logits[:, 0]))


# ----------------------------------------------------------------------- temperature


def test_temperature_recovers_the_scale_of_overconfident_logits() -> None:
    logits, y = _calibrated_logits(20_000, seed=0)

    scaler = TemperatureScaler().fit(4.0 * logits, y)

    assert scaler.temperature_ == pytest.approx(4.0, rel=0.1)


def test_temperature_leaves_calibrated_logits_alone() -> None:
    logits, y = _calibrated_logits(20_000, seed=1)

    assert TemperatureScaler().fit(logits, y).temperature_ == pytest.approx(1.0, rel=0.1)


def test_temperature_lowers_held_out_ece_and_keeps_the_ranking() -> None:
    logits, y = _calibrated_logits(6_000, seed=2)
    fit, held_out = slice(0, 3_000), slice(3_000, None)
    scaler = TemperatureScaler().fit(4.0 * logits[fit], y[fit])

    p = scaler.predict_proba(4.0 * logits[held_out])

    before = _ece_of_logits(y[held_out], 4.0 * logits[held_out])
    after = expected_calibration_error(y[held_out], p[:, 1])
    assert before > 0.1
    assert after < 0.04
    assert roc_auc_score(y[held_out], p[:, 1]) == pytest.approx(
        roc_auc_score(y[held_out], logits[held_out, 1] - logits[held_out, 0])
    )


def test_temperature_prediction_matches_hand_computed_softmax() -> None:
    scaler = TemperatureScaler.from_dict({"method": "temperature", "temperature": 2.0})

    # Log-odds 2 ln 3, divided by T = 2, is ln 3: P(Overturned) = 3 / (1 + 3) = 3/4.
    p = scaler.predict_proba([[0.0, 2 * math.log(3)], [1.0, 1.0]])

    assert p == pytest.approx(np.array([[0.25, 0.75], [0.5, 0.5]]))
    # (n,) log-odds give the same as (n, 2) logits with that difference.
    assert scaler.predict_proba([2 * math.log(3), 0.0]) == pytest.approx(p)


# ---------------------------------------------------------------------- platt, isotonic


def _overconfident_scores(n: int, seed: int) -> tuple[FloatArray, IntArray]:
    """Scores 3x the true log-odds of the drawn labels (too confident), as (n,)."""
    logits, y = _calibrated_logits(n, seed)
    return 3.0 * (logits[:, 1] - logits[:, 0]), y


@pytest.mark.parametrize("name", ["platt", "isotonic"])
def test_platt_and_isotonic_lower_held_out_ece_on_overconfident_scores(name: str) -> None:
    scores, y = _overconfident_scores(6_000, seed=3)
    fit, held_out = slice(0, 3_000), slice(3_000, None)
    calibrator = make_calibrator(name).fit(scores[fit], y[fit])

    after = expected_calibration_error(
        y[held_out], calibrator.predict_proba(scores[held_out])[:, 1]
    )

    before = expected_calibration_error(y[held_out], expit(scores[held_out]))
    assert before > 0.1
    assert after < 0.04


def test_platt_slope_undoes_the_overconfidence() -> None:
    scores, y = _overconfident_scores(20_000, seed=4)

    platt = PlattCalibrator().fit(scores, y)

    assert platt.slope_ == pytest.approx(1 / 3, rel=0.1)
    assert platt.intercept_ == pytest.approx(0.0, abs=0.05)


def test_platt_stays_finite_on_separable_scores() -> None:
    # Plain maximum likelihood would send the slope to infinity here; Platt's smoothed
    # targets (N+ + 1)/(N+ + 2) = 3/4 and 1/(N- + 2) = 1/4 keep it finite.
    platt = PlattCalibrator().fit([-2.0, -1.0, 1.0, 2.0], [0, 0, 1, 1])

    p = platt.predict_proba([-2.0, 2.0])[:, 1]

    assert platt.slope_ is not None and 0 < platt.slope_ < 5
    assert 0.05 < p[0] < 0.5 < p[1] < 0.95


def test_platt_prediction_matches_hand_computed_sigmoid() -> None:
    platt = PlattCalibrator.from_dict({"method": "platt", "slope": 2.0, "intercept": -1.0})

    # sigmoid(2 * 0.5 - 1) = sigmoid(0) = 1/2; sigmoid(2 * 1 - 1) = 1 / (1 + e^-1).
    p = platt.predict_proba([0.5, 1.0])[:, 1]

    assert p == pytest.approx([0.5, 1 / (1 + math.exp(-1))])


def test_isotonic_predicts_like_sklearn_including_outside_the_fitted_range() -> None:
    scores, y = _overconfident_scores(2_000, seed=5)
    ours = IsotonicCalibrator().fit(scores, y)
    reference = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, y)

    probe = np.concatenate([np.linspace(-40, 40, 1_001), scores[:100]])

    assert ours.predict_proba(probe)[:, 1] == pytest.approx(reference.predict(probe), abs=1e-12)


# ------------------------------------------------------------------- all calibrators


@pytest.mark.parametrize("name", ["temperature", "platt", "isotonic", "none"])
def test_every_calibrator_round_trips_through_json(name: str) -> None:
    logits, y = _calibrated_logits(500, seed=6)
    calibrator = make_calibrator(name).fit(2.0 * logits, y)

    restored = calibrator_from_dict(json.loads(json.dumps(calibrator.to_dict())))

    assert type(restored) is type(calibrator)
    original = calibrator.predict_proba(2.0 * logits)
    assert np.array_equal(restored.predict_proba(2.0 * logits), original)
    assert original.shape == (500, 2)
    assert original.sum(axis=1) == pytest.approx(np.ones(500))


def test_none_is_the_models_own_softmax() -> None:
    logits = np.array([[0.0, 0.0], [1.0, 3.0], [2.0, -1.0]])

    p = make_calibrator("none").predict_proba(logits)

    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert p == pytest.approx(softmax)


def test_unknown_calibration_name_lists_the_choices() -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        make_calibrator("beta")

    assert str(excinfo.value) == (
        "calibration: expected one of 'temperature', 'platt', 'isotonic', 'none', found 'beta'"
    )


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            {"method": "beta"},
            "calibrator.method: expected one of 'temperature', 'platt', 'isotonic', 'none', "
            "found 'beta'",
        ),
        (
            {"method": "temperature", "temperature": -1.0},
            "calibrator.temperature: expected a positive finite number, found -1.0",
        ),
        (
            {"method": "platt", "slope": "1"},
            "calibrator.slope: expected a number, found '1'",
        ),
        (
            {"method": "isotonic", "x_thresholds": [0.0, 1.0], "y_thresholds": [0.2]},
            "calibrator.y_thresholds: expected one value per x threshold (2), found 1",
        ),
        (
            {"method": "isotonic", "x_thresholds": [1.0, 0.0], "y_thresholds": [0.2, 0.3]},
            "calibrator.x_thresholds: expected non-decreasing values",
        ),
    ],
)
def test_invalid_saved_state_is_rejected(state: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        calibrator_from_dict(state)

    assert str(excinfo.value) == message


def test_from_dict_of_another_method_is_rejected() -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        TemperatureScaler.from_dict({"method": "platt", "slope": 1.0, "intercept": 0.0})

    assert str(excinfo.value) == "calibrator.method: expected 'temperature', found 'platt'"


def test_an_unfitted_calibrator_says_how_to_fit_it() -> None:
    with pytest.raises(NotFittedError) as excinfo:
        TemperatureScaler().predict_proba([[0.0, 1.0]])

    assert str(excinfo.value) == (
        "TemperatureScaler is not fitted; call fit(logits, y) or TemperatureScaler.from_dict(...)"
    )


@pytest.mark.parametrize(
    ("logits", "y", "message"),
    [
        (
            np.zeros((4, 3)),
            [0, 1, 0, 1],
            "logits: expected class logits of shape (n, 2) [Upheld, Overturned] or scores of "
            "shape (n,), found shape (4, 3)",
        ),
        (np.zeros((4, 2)), [0, 1, 0], "y: expected one label per row of logits (4), found 3"),
        (
            np.zeros((3, 2)),
            [0, 0, 0],
            "y: expected both Upheld (0) and Overturned (1) labels to fit a calibrator, found "
            "only 0; use a larger calibration fold",
        ),
        (
            np.array([[0.0, np.inf], [0.0, 1.0]]),
            [0, 1],
            "logits: expected finite values, found NaN or infinity",
        ),
    ],
)
@pytest.mark.parametrize("name", ["temperature", "platt", "isotonic", "none"])
def test_bad_fit_inputs_are_rejected(
    name: str, logits: FloatArray, y: list[int], message: str
) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        make_calibrator(name).fit(logits, y)

    assert str(excinfo.value) == message
