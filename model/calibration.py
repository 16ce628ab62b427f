"""Post-hoc probability calibration, fitted on held-out predictions and saved as JSON.

Every calibrator maps model outputs to calibrated ``[P(Upheld), P(Overturned)]`` and takes
the same input: class logits of shape (n, 2) in label order [Upheld, Overturned], or a
score of shape (n,) that increases with Overturned. Class logits are reduced to the
log-odds of Overturned, ``z_1 - z_0``, which is all a binary softmax depends on.

- ``"temperature"``: :class:`TemperatureScaler` (Guo et al. 2017) - one parameter, keeps
  the ranking, the usual choice for a fine-tuned transformer.
- ``"platt"``: :class:`PlattCalibrator` (Platt 1999) - a slope and an intercept.
- ``"isotonic"``: :class:`IsotonicCalibrator` (Zadrozny & Elkan 2002) - a monotone step
  function; flexible, but needs a few hundred held-out items and creates ties.
- ``"none"``: :class:`IdentityCalibrator` - the model's own softmax.

Fit on a validation fold, never on the test fold. State is saved with ``to_dict()`` as
plain JSON (no pickle) and restored with :func:`calibrator_from_dict`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit
from sklearn.exceptions import NotFittedError
from sklearn.isotonic import IsotonicRegression

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.arrays import as_labels

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: Search range for the temperature T; a fitted T at either end is logged as a warning.
TEMPERATURE_BOUNDS: tuple[float, float] = (1e-2, 1e2)


# --------------------------------------------------------------------------- helpers


def _log_odds(logits: npt.ArrayLike, field: str = "logits") -> FloatArray:
    """Reduce (n, 2) class logits to ``z_1 - z_0``, or validate an (n,) score."""
    a = np.asarray(logits)
    if a.dtype.kind not in "biuf":
        raise InvalidInputError(field, f"expected numbers, found dtype {a.dtype}")
    if not (a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 2)):
        raise InvalidInputError(
            field,
            "expected class logits of shape (n, 2) [Upheld, Overturned] or scores of shape "
            f"(n,), found shape {a.shape}",
        )
    if a.shape[0] == 0:
        raise InvalidInputError(field, "expected at least one row, found none")
    values = a.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise InvalidInputError(field, "expected finite values, found NaN or infinity")
    return values[:, 1] - values[:, 0] if values.ndim == 2 else values


def _fit_inputs(logits: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Validate a calibration set: scores (n,) and float labels (n,) holding both classes."""
    scores = _log_odds(logits)
    labels = as_labels(y, field="y")
    if labels.size != scores.size:
        raise InvalidInputError(
            "y", f"expected one label per row of logits ({scores.size}), found {labels.size}"
        )
    if labels.min() == labels.max():
        raise InvalidInputError(
            "y",
            f"expected both Upheld (0) and Overturned (1) labels to fit a calibrator, found "
            f"only {int(labels[0])}; use a larger calibration fold",
        )
    return scores, labels.astype(np.float64)


def _two_columns(p_overturned: FloatArray) -> FloatArray:
    """Stack P(Overturned) of shape (n,) into (n, 2) columns [Upheld, Overturned]."""
    return np.column_stack([1.0 - p_overturned, p_overturned])


def _check_method(state: Mapping[str, Any], method: str) -> None:
    found = state.get("method")
    if found != method:
        raise InvalidInputError("calibrator.method", f"expected {method!r}, found {found!r}")


def _finite_float(state: Mapping[str, Any], key: str, *, positive: bool = False) -> float:
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"calibrator.{key}", f"expected a number, found {value!r}")
    if not math.isfinite(value) or (positive and value <= 0):
        kind = "positive finite" if positive else "finite"
        raise InvalidInputError(f"calibrator.{key}", f"expected a {kind} number, found {value!r}")
    return float(value)


def _not_fitted(owner: object) -> NotFittedError:
    name = type(owner).__name__
    return NotFittedError(f"{name} is not fitted; call fit(logits, y) or {name}.from_dict(...)")


# ----------------------------------------------------------------------- calibrators


class Calibrator(Protocol):
    """What every calibrator offers; :func:`make_calibrator` returns one by name."""

    method: ClassVar[str]

    def fit(self, logits: npt.ArrayLike, y: npt.ArrayLike) -> Self:
        """Fit on held-out logits (n, 2) or scores (n,) and labels (n,)."""
        ...

    def predict_proba(self, logits: npt.ArrayLike) -> FloatArray:
        """Calibrated probabilities, shape (n, 2), columns [Upheld, Overturned]."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The fitted state as a JSON-serializable dict with a ``method`` key."""
        ...


class TemperatureScaler:
    """Temperature scaling: ``softmax(z / T)`` with one T > 0 fitted by minimum NLL.

    Guo, Pleiss, Sun & Weinberger 2017, "On Calibration of Modern Neural Networks" (ICML).
    Dividing every logit by T keeps the argmax and the ranking (AUROC unchanged); T > 1
    softens an overconfident model. T is found by bounded Brent search on log T in
    :data:`TEMPERATURE_BOUNDS`; the negative log-likelihood is unimodal in log T.

    Attributes:
        temperature_: the fitted T (> 0, unitless); None before fitting.
    """

    method: ClassVar[str] = "temperature"

    def __init__(self) -> None:
        self.temperature_: float | None = None

    def fit(self, logits: npt.ArrayLike, y: npt.ArrayLike) -> Self:
        """Fit T by minimizing the mean negative log-likelihood of ``y``.

        Args:
            logits: class logits, shape (n, 2) [Upheld, Overturned], or log-odds of
                Overturned, shape (n,); finite.
            y: labels, shape (n,), 0 (Upheld) or 1 (Overturned), both present.

        Returns:
            self, with ``temperature_`` set.

        Raises:
            InvalidInputError: bad shapes, non-finite logits, or labels of one class.
        """
        z, labels = _fit_inputs(logits, y)

        def nll(log_t: float) -> float:
            scaled = z / math.exp(log_t)
            # -log p(y | z / T) for a Bernoulli with log-odds z / T, computed stably.
            return float(np.mean(np.logaddexp(0.0, scaled) - labels * scaled))

        low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
        result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-8})
        self.temperature_ = float(math.exp(result.x))
        if not low + 1e-3 < result.x < high - 1e-3:
            logger.warning("fitted temperature %.4g is at its search bound", self.temperature_)
        return self

    def predict_proba(self, logits: npt.ArrayLike) -> FloatArray:
        """Calibrated probabilities ``softmax(logits / T)``.

        Args:
            logits: shape (n, 2) or (n,), as for :meth:`fit`.

        Returns:
            Shape (n, 2), columns [Upheld, Overturned], rows summing to 1.

        Raises:
            InvalidInputError: bad shapes or non-finite logits.
            sklearn.exceptions.NotFittedError: before :meth:`fit` or :meth:`from_dict`.
        """
        if self.temperature_ is None:
            raise _not_fitted(self)
        return _two_columns(expit(_log_odds(logits) / self.temperature_))

    def to_dict(self) -> dict[str, Any]:
        """``{"method": "temperature", "temperature": T}``."""
        if self.temperature_ is None:
            raise _not_fitted(self)
        return {"method": self.method, "temperature": self.temperature_}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Self:
        """Restore from :meth:`to_dict` output.

        Raises:
            InvalidInputError: wrong ``method`` or a temperature that is not a positive
                finite number.
        """
        _check_method(state, cls.method)
        scaler = cls()
        scaler.temperature_ = _finite_float(state, "temperature", positive=True)
        return scaler


class PlattCalibrator:
    """Platt scaling: ``P(Overturned) = sigmoid(a * s + b)`` on a score s.

    Platt 1999, "Probabilistic Outputs for Support Vector Machines and Comparisons to
    Regularized Likelihood Methods". As in the paper, the targets are smoothed to
    ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)``, which keeps a and b finite when the
    scores separate the classes; a and b minimize the cross-entropy by L-BFGS.

    Attributes:
        slope_: the fitted a (per unit of score); None before fitting.
        intercept_: the fitted b (log-odds); None before fitting.
    """

    method: ClassVar[str] = "platt"

    def __init__(self) -> None:
        self.slope_: float | None = None
        self.intercept_: float | None = None

    def fit(self, scores: npt.ArrayLike, y: npt.ArrayLike) -> Self:
        """Fit a and b.

        Args:
            scores: shape (n,), any finite score increasing with Overturned (best: the
                log-odds); or class logits (n, 2), reduced to ``z_1 - z_0``.
            y: labels, shape (n,), 0 (Upheld) or 1 (Overturned), both present.

        Returns:
            self, with ``slope_`` and ``intercept_`` set.

        Raises:
            InvalidInputError: bad shapes, non-finite scores, or labels of one class.
        """
        s, labels = _fit_inputs(scores, y)
        n_pos = float(labels.sum())
        n_neg = labels.size - n_pos
        target = np.where(labels == 1.0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

        def loss_and_grad(params: FloatArray) -> tuple[float, FloatArray]:
            z = params[0] * s + params[1]
            residual = expit(z) - target
            loss = float(np.mean(np.logaddexp(0.0, z) - target * z))
            return loss, np.array([np.mean(residual * s), np.mean(residual)])

        start = np.array([0.0, math.log((n_pos + 1) / (n_neg + 1))])
        result = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B")
        if not result.success:
            logger.warning("Platt scaling did not converge: %s", result.message)
        self.slope_, self.intercept_ = (float(v) for v in result.x)
        return self

    def predict_proba(self, scores: npt.ArrayLike) -> FloatArray:
        """Calibrated probabilities ``sigmoid(a * s + b)``.

        Args:
            scores: shape (n,) or class logits (n, 2), as for :meth:`fit`.

        Returns:
            Shape (n, 2), columns [Upheld, Overturned].

        Raises:
            InvalidInputError: bad shapes or non-finite scores.
            sklearn.exceptions.NotFittedError: before :meth:`fit` or :meth:`from_dict`.
        """
        if self.slope_ is None or self.intercept_ is None:
            raise _not_fitted(self)
        return _two_columns(expit(self.slope_ * _log_odds(scores, "scores") + self.intercept_))

    def to_dict(self) -> dict[str, Any]:
        """``{"method": "platt", "slope": a, "intercept": b}``."""
        if self.slope_ is None or self.intercept_ is None:
            raise _not_fitted(self)
        return {"method": self.method, "slope": self.slope_, "intercept": self.intercept_}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Self:
        """Restore from :meth:`to_dict` output.

        Raises:
            InvalidInputError: wrong ``method`` or a non-finite slope or intercept.
        """
        _check_method(state, cls.method)
        calibrator = cls()
        calibrator.slope_ = _finite_float(state, "slope")
        calibrator.intercept_ = _finite_float(state, "intercept")
        return calibrator


class IsotonicCalibrator:
    """Isotonic regression: the non-decreasing step function of the score that best fits y.

    Zadrozny & Elkan 2002, "Transforming Classifier Scores into Accurate Multiclass
    Probability Estimates" (KDD); fitted with ``sklearn.isotonic.IsotonicRegression``
    (pool-adjacent-violators) and ``out_of_bounds="clip"``. Between the fitted knots the
    map is linear, beyond them constant, exactly as scikit-learn predicts; the knots are
    the saved state.

    Attributes:
        x_thresholds_: knot scores, shape (k,), non-decreasing; None before fitting.
        y_thresholds_: P(Overturned) at the knots, shape (k,), in [0, 1]; None before
            fitting.
    """

    method: ClassVar[str] = "isotonic"

    def __init__(self) -> None:
        self.x_thresholds_: FloatArray | None = None
        self.y_thresholds_: FloatArray | None = None

    def fit(self, scores: npt.ArrayLike, y: npt.ArrayLike) -> Self:
        """Fit the monotone map.

        Args:
            scores: shape (n,), any finite score increasing with Overturned; or class
                logits (n, 2), reduced to ``z_1 - z_0``.
            y: labels, shape (n,), 0 (Upheld) or 1 (Overturned), both present.

        Returns:
            self, with ``x_thresholds_`` and ``y_thresholds_`` set.

        Raises:
            InvalidInputError: bad shapes, non-finite scores, or labels of one class.
        """
        s, labels = _fit_inputs(scores, y)
        regression = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, labels)
        self.x_thresholds_ = np.asarray(regression.X_thresholds_, dtype=np.float64)
        self.y_thresholds_ = np.asarray(regression.y_thresholds_, dtype=np.float64)
        return self

    def predict_proba(self, scores: npt.ArrayLike) -> FloatArray:
        """Calibrated probabilities from the fitted step function.

        Args:
            scores: shape (n,) or class logits (n, 2), as for :meth:`fit`.

        Returns:
            Shape (n, 2), columns [Upheld, Overturned].

        Raises:
            InvalidInputError: bad shapes or non-finite scores.
            sklearn.exceptions.NotFittedError: before :meth:`fit` or :meth:`from_dict`.
        """
        if self.x_thresholds_ is None or self.y_thresholds_ is None:
            raise _not_fitted(self)
        s = _log_odds(scores, "scores")
        return _two_columns(np.interp(s, self.x_thresholds_, self.y_thresholds_))

    def to_dict(self) -> dict[str, Any]:
        """``{"method": "isotonic", "x_thresholds": [...], "y_thresholds": [...]}``."""
        if self.x_thresholds_ is None or self.y_thresholds_ is None:
            raise _not_fitted(self)
        return {
            "method": self.method,
            "x_thresholds": self.x_thresholds_.tolist(),
            "y_thresholds": self.y_thresholds_.tolist(),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Self:
        """Restore from :meth:`to_dict` output.

        Raises:
            InvalidInputError: wrong ``method``, knot lists that are empty, of unequal
                length or non-numeric, x knots that decrease, or y knots outside [0, 1].
        """
        _check_method(state, cls.method)
        knots = []
        for key in ("x_thresholds", "y_thresholds"):
            try:
                values = np.asarray(state.get(key), dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"calibrator.{key}", f"expected numbers: {exc}") from exc
            if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
                raise InvalidInputError(
                    f"calibrator.{key}", "expected a non-empty list of finite numbers"
                )
            knots.append(values)
        x, y = knots
        if x.size != y.size:
            raise InvalidInputError(
                "calibrator.y_thresholds",
                f"expected one value per x threshold ({x.size}), found {y.size}",
            )
        if np.any(np.diff(x) < 0):
            raise InvalidInputError("calibrator.x_thresholds", "expected non-decreasing values")
        if y.min() < 0 or y.max() > 1:
            raise InvalidInputError("calibrator.y_thresholds", "expected values in [0, 1]")
        calibrator = cls()
        calibrator.x_thresholds_, calibrator.y_thresholds_ = x, y
        return calibrator


class IdentityCalibrator:
    """No calibration: the model's own ``softmax(z)`` (``sigmoid`` of (n,) log-odds)."""

    method: ClassVar[str] = "none"

    def fit(self, logits: npt.ArrayLike, y: npt.ArrayLike) -> Self:
        """Validate the inputs and fit nothing; returns self."""
        _fit_inputs(logits, y)
        return self

    def predict_proba(self, logits: npt.ArrayLike) -> FloatArray:
        """``softmax(logits)``, shape (n, 2), columns [Upheld, Overturned].

        Args:
            logits: class logits (n, 2), or log-odds of Overturned (n,).

        Raises:
            InvalidInputError: bad shapes or non-finite logits.
        """
        return _two_columns(expit(_log_odds(logits)))

    def to_dict(self) -> dict[str, Any]:
        """``{"method": "none"}``."""
        return {"method": self.method}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Self:
        """Restore from :meth:`to_dict` output.

        Raises:
            InvalidInputError: wrong ``method``.
        """
        _check_method(state, cls.method)
        return cls()


# --------------------------------------------------------------------------- by name

_CalibratorClass = (
    type[TemperatureScaler]
    | type[PlattCalibrator]
    | type[IsotonicCalibrator]
    | type[IdentityCalibrator]
)

#: Calibrator classes by the name used in experiment configs (``calibration: <name>``).
CALIBRATORS: Mapping[str, _CalibratorClass] = {
    cls.method: cls
    for cls in (TemperatureScaler, PlattCalibrator, IsotonicCalibrator, IdentityCalibrator)
}


def _lookup(name: object, field: str) -> _CalibratorClass:
    if not isinstance(name, str) or name not in CALIBRATORS:
        choices = ", ".join(repr(n) for n in CALIBRATORS)
        raise InvalidInputError(field, f"expected one of {choices}, found {name!r}")
    return CALIBRATORS[name]


def make_calibrator(name: str) -> Calibrator:
    """A new, unfitted calibrator by config name.

    Args:
        name: ``"temperature"``, ``"platt"``, ``"isotonic"`` or ``"none"``.

    Returns:
        The calibrator; call ``fit(logits, y)`` on held-out predictions.

    Raises:
        InvalidInputError: an unknown name (field ``calibration``), listing the choices.
    """
    return _lookup(name, "calibration")()


def calibrator_from_dict(state: Mapping[str, Any]) -> Calibrator:
    """Restore a fitted calibrator saved with ``to_dict()``, dispatching on ``method``.

    Args:
        state: the saved dict, e.g. ``{"method": "temperature", "temperature": 1.8}``.

    Returns:
        The fitted calibrator.

    Raises:
        InvalidInputError: an unknown ``method`` or invalid state.
    """
    return _lookup(state.get("method"), "calibrator.method").from_dict(state)
