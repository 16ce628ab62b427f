from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import numpy.typing as npt
import pytest
from scipy.special import expit
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.calibration import Calibrator, make_calibrator
from imr_outcome.train.metrics import expected_calibration_error

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _calibrated_logits(n: int, seed: int) -> tuple[FloatArray, IntArray]:
    """Class logits (n, 2) whose softmax is the true P(Overturned) of the drawn labels."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, (n, 2))
    y = (rng.random(n) < expit(logits[:, 1] - logits[:, 0])).astype(np.int64)
    return logits, y


def test_temperature_recovers_the_scale_of_overconfident_logits() -> None:
    logits, y = _calibrated_logits(20_000, seed=0)
    z = logits[:, 1] - logits[:, 0]

    p = make_calibrator("temperature").fit(4.0 * logits, y).predict_proba(4.0 * logits)[:, 1]

    # softmax(4z / T) with T close to 4 is close to the true sigmoid(z).
    assert np.abs(p - expit(z)).max() < 0.05


@pytest.mark.parametrize("name", ["temperature", "platt", "isotonic"])
def test_calibration_lowers_held_out_ece_of_overconfident_scores(name: str) -> None:
    logits, y = _calibrated_logits(6_000, seed=2)
    fit, held_out = slice(0, 3_000), slice(3_000, None)
    calibrator = make_calibrator(name).fit(4.0 * logits[fit], y[fit])

    p = calibrator.predict_proba(4.0 * logits[held_out])[:, 1]
    before = expit(4.0 * (logits[held_out, 1] - logits[held_out, 0]))

    assert expected_calibration_error(y[held_out], p) < 0.5 * expected_calibration_error(
        y[held_out], before
    )
    if name != "isotonic":  # monotone maps without ties keep the ranking
        assert roc_auc_score(y[held_out], p) == pytest.approx(roc_auc_score(y[held_out], before))


@pytest.mark.parametrize("name", ["temperature", "platt", "isotonic", "none"])
def test_every_calibrator_round_trips_through_joblib(name: str, tmp_path: Path) -> None:
    logits, y = _calibrated_logits(500, seed=6)
    calibrator = make_calibrator(name).fit(2.0 * logits, y)

    joblib.dump(calibrator, tmp_path / "calibrator.joblib")
    restored = joblib.load(tmp_path / "calibrator.joblib")

    original = calibrator.predict_proba(2.0 * logits)
    assert np.array_equal(restored.predict_proba(2.0 * logits), original)
    assert original.shape == (500, 2)
    assert original.sum(axis=1) == pytest.approx(np.ones(500))


def test_none_is_the_models_own_softmax() -> None:
    logits = np.array([[0.0, 0.0], [1.0, 3.0], [2.0, -1.0]])

    p = make_calibrator("none").predict_proba(logits)

    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert p == pytest.approx(softmax)


def test_a_linear_map_is_platt_s_sigmoid() -> None:
    calibrator = Calibrator.linear("platt", 2.0, -1.0)

    # sigmoid(2 * 0.5 - 1) = 1/2; sigmoid(2 * 1 - 1) = 1 / (1 + e^-1); scores of shape (n,).
    p = calibrator.predict_proba(np.array([0.5, 1.0]))[:, 1]

    assert p == pytest.approx([0.5, 1 / (1 + np.exp(-1))])


def test_unknown_calibration_name_lists_the_choices() -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        make_calibrator("beta")

    assert str(excinfo.value) == (
        "calibration: expected one of 'temperature', 'platt', 'isotonic', 'none', found 'beta'"
    )


def test_an_unfitted_calibrator_says_how_to_fit_it() -> None:
    with pytest.raises(NotFittedError) as excinfo:
        make_calibrator("temperature").predict_proba([[0.0, 1.0]])

    assert str(excinfo.value) == "the temperature calibrator is not fitted; call fit(logits, y)"


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


def _inverse_scores() -> tuple[FloatArray, IntArray]:
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.2).astype(np.int64)
    return rng.normal(size=400) - 2.0 * labels, labels  # Overturned items score lower


def test_platt_on_inversely_ranked_scores_gives_the_base_rate_not_an_inverted_map(
    caplog: pytest.LogCaptureFixture,
) -> None:
    z, labels = _inverse_scores()

    with caplog.at_level("WARNING"):
        p = make_calibrator("platt").fit(z, labels).predict_proba(np.array([-3.0, 0.0, 3.0]))

    np.testing.assert_allclose(p[:, 1], labels.mean())
    assert "would invert the model's ranking" in caplog.text


@pytest.mark.parametrize("name", ["temperature", "isotonic"])
def test_monotone_calibrators_never_decrease_on_inversely_ranked_scores(name: str) -> None:
    z, labels = _inverse_scores()

    p = make_calibrator(name).fit(z, labels).predict_proba(np.linspace(-3.0, 3.0, 13))[:, 1]

    assert (np.diff(p) >= 0).all()


def test_scores_that_rank_rightly_keep_their_order() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.2).astype(np.int64)
    z = rng.normal(size=400) + 2.0 * labels

    p = make_calibrator("platt").fit(z, labels).predict_proba(np.array([-3.0, 0.0, 3.0]))

    assert p[0, 1] < p[1, 1] < p[2, 1]
