"""Post-hoc probability calibration of a classifier's log-odds, by scikit-learn.

Every calibrator maps model outputs to calibrated ``[P(Upheld), P(Overturned)]`` and takes
the same input: class logits of shape (n, 2) in label order [Upheld, Overturned], or a
score of shape (n,) that increases with Overturned. Class logits are reduced to the
log-odds of Overturned, ``z_1 - z_0``, which is all a binary softmax depends on.

The log-odds are the one feature of :class:`LogOdds`, an already fitted identity
classifier; ``CalibratedClassifierCV(FrozenEstimator(LogOdds()), method=...)`` fits the
map on held-out (or out-of-fold) log-odds, so every kind, the transformer included, is
calibrated by scikit-learn's own code:

- ``"temperature"``: ``softmax(z / T)``, one parameter (Guo et al. 2017), keeps the
  ranking; the usual choice for a fine-tuned transformer (scikit-learn >= 1.8).
- ``"platt"``: ``sigmoid(a z + b)`` (Platt 1999; scikit-learn's ``method="sigmoid"``, with
  Platt's smoothed targets).
- ``"isotonic"``: a monotone step function (Zadrozny & Elkan 2002); needs a few hundred
  held-out items and creates ties.
- ``"none"``: the model's own ``sigmoid(z)``.

Fit on a validation fold or out-of-fold scores, never on the test fold. A fitted
:class:`Calibrator` is saved with joblib (``calibrator.joblib``, see
:mod:`imr_outcome.model.artifact`); loading unpickles code, so load only trusted models.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Literal, Self, cast

import numpy as np
import numpy.typing as npt
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import FixedThresholdClassifier

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.arrays import as_labels

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
Method = Literal["temperature", "platt", "isotonic", "none"]

#: Calibration methods by config name -> scikit-learn's ``CalibratedClassifierCV`` method
#: (None: no calibration).
METHODS: dict[str, str | None] = {
    "temperature": "temperature",
    "platt": "sigmoid",
    "isotonic": "isotonic",
    "none": None,
}


def log_odds(logits: npt.ArrayLike, field: str = "logits") -> FloatArray:
    """Reduce class logits (n, 2) to ``z_1 - z_0``, or validate scores (n,).

    Returns:
        Shape (n,), finite.

    Raises:
        InvalidInputError: non-numbers, another shape, no rows, or NaN/infinity.
    """
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


class LogOdds(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """The identity classifier on one column of log-odds of Overturned.

    ``decision_function(X) = X[:, 0]`` and ``predict_proba`` is its sigmoid, so wrapped in
    ``FrozenEstimator`` it lets ``CalibratedClassifierCV`` calibrate any kind's scores, and
    ``FixedThresholdClassifier`` threshold a column of probabilities (:func:`threshold_rule`).
    """

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike | None = None) -> Self:
        """Nothing to learn; sets ``classes_ = [0, 1]``."""
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, X: npt.ArrayLike) -> FloatArray:
        """The log-odds, shape (n,), from X of shape (n, 1)."""
        return np.asarray(X, dtype=np.float64)[:, 0]

    def predict_proba(self, X: npt.ArrayLike) -> FloatArray:
        """``[1 - sigmoid(z), sigmoid(z)]``, shape (n, 2)."""
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """1 (Overturned) where the log-odds are positive, else 0."""
        return (self.decision_function(X) > 0).astype(np.int64)


class Calibrator:
    """A calibration map of log-odds, fitted by scikit-learn.

    Args:
        method: ``"temperature"``, ``"platt"``, ``"isotonic"`` or ``"none"``.

    Attributes:
        estimator_: the fitted scikit-learn classifier over the (n, 1) log-odds column
            (a ``CalibratedClassifierCV``, or for models of saved format 1 a
            ``LogisticRegression`` holding their slope and intercept); None before
            :meth:`fit`.

    Raises:
        InvalidInputError: an unknown method (field ``calibration``), listing the choices.
    """

    def __init__(self, method: str) -> None:
        if method not in METHODS:
            choices = ", ".join(repr(name) for name in METHODS)
            raise InvalidInputError("calibration", f"expected one of {choices}, found {method!r}")
        self.method = cast(Method, method)
        self.estimator_: Any | None = LogOdds().fit(np.zeros((1, 1))) if method == "none" else None

    def fit(self, logits: npt.ArrayLike, y: npt.ArrayLike) -> Self:
        """Fit on held-out logits (n, 2) or scores (n,) and labels (n,).

        Args:
            logits: class logits [Upheld, Overturned] or log-odds of Overturned; finite.
            y: labels, shape (n,), 0 (Upheld) or 1 (Overturned), both present.

        Returns:
            self, fitted. A map that would decrease with the log-odds (held-out scores that
            rank Overturned items lower) is replaced by the constant base rate, with a
            warning: the calibrator never inverts the model's ranking.

        Raises:
            InvalidInputError: bad shapes, non-finite logits, a label count other than n,
                or labels of one class.
        """
        z = log_odds(logits)
        labels = as_labels(y, field="y")
        if labels.size != z.size:
            raise InvalidInputError(
                "y", f"expected one label per row of logits ({z.size}), found {labels.size}"
            )
        if labels.min() == labels.max():
            raise InvalidInputError(
                "y",
                "expected both Upheld (0) and Overturned (1) labels to fit a calibrator, found "
                f"only {int(labels[0])}; use a larger calibration fold",
            )
        method = METHODS[self.method]
        if method is not None:
            column = z.reshape(-1, 1)
            frozen = FrozenEstimator(LogOdds().fit(column))
            self.estimator_ = CalibratedClassifierCV(frozen, method=method).fit(column, labels)
            ends = self.predict_proba(np.array([z.min(), z.max()]))[:, 1]
            if ends[1] < ends[0]:
                # A decreasing map would rank items against the model (and against its
                # evidence): the held-out scores carry no direction that holds, so every
                # item gets the base rate instead.
                base_rate = float(labels.mean())
                logger.warning(
                    "the %s calibrator would invert the model's ranking (held-out scores "
                    "rank Overturned items lower); every item gets the base rate %.3f",
                    self.method,
                    base_rate,
                )
                self.estimator_ = Calibrator.linear(
                    self.method, 0.0, float(np.log(base_rate / (1.0 - base_rate)))
                ).estimator_
        return self

    def predict_proba(self, logits: npt.ArrayLike) -> FloatArray:
        """Calibrated probabilities, shape (n, 2), columns [Upheld, Overturned].

        Raises:
            InvalidInputError: bad shapes or non-finite logits.
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
        """
        if self.estimator_ is None:
            raise NotFittedError(f"the {self.method} calibrator is not fitted; call fit(logits, y)")
        proba = self.estimator_.predict_proba(log_odds(logits).reshape(-1, 1))
        return np.asarray(proba, dtype=np.float64)

    @classmethod
    def linear(cls, method: str, slope: float, intercept: float) -> Calibrator:
        """A fitted ``sigmoid(slope * z + intercept)`` map (Platt's form; temperature T is
        ``slope = 1 / T``), as a ``LogisticRegression`` over the log-odds column.

        Used to read the JSON calibrators of saved format 1.

        Raises:
            InvalidInputError: a slope or intercept that is not finite.
        """
        if not (np.isfinite(slope) and np.isfinite(intercept)):
            raise InvalidInputError(
                "calibrator", f"expected a finite slope and intercept, found {slope}, {intercept}"
            )
        regression = LogisticRegression()
        regression.classes_ = np.array([0, 1])
        regression.coef_ = np.array([[float(slope)]])
        regression.intercept_ = np.array([float(intercept)])
        regression.n_features_in_ = 1
        calibrator = cls(method)
        calibrator.estimator_ = regression
        return calibrator


def make_calibrator(name: str) -> Calibrator:
    """A new, unfitted :class:`Calibrator` by config name (see :data:`METHODS`).

    Raises:
        InvalidInputError: an unknown name (field ``calibration``), listing the choices.
    """
    return Calibrator(name)


@functools.lru_cache(maxsize=64)
def threshold_rule(threshold: float) -> FixedThresholdClassifier:
    """The label rule at ``threshold``: scikit-learn's ``FixedThresholdClassifier`` over
    P(Overturned) (as the :class:`LogOdds` column's ``decision_function``), which predicts 1
    (Overturned) where ``p >= threshold`` (a p equal to the threshold is Overturned), else 0.

    Args:
        threshold: in [0, 1].

    Returns:
        The fitted rule; ``predict(p.reshape(-1, 1))`` gives labels 0/1, shape (n,).
    """
    rule = FixedThresholdClassifier(
        FrozenEstimator(LogOdds().fit(np.zeros((1, 1)))),
        threshold=threshold,
        response_method="decision_function",
    )
    return rule.fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
