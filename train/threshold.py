"""Choosing the decision threshold on P(Overturned).

The threshold is a fitted parameter like any weight: choose it on out-of-fold predictions
of the TRAINING folds (or the validation fold), then apply it unchanged to the test fold.
Choosing it on the test fold inflates every thresholded test metric.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Literal

import numpy as np
import numpy.typing as npt

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.arrays import as_labels, as_probabilities

Objective = Literal["bayes", "f1", "cost"]

#: Threshold objectives by the name used in experiment configs.
OBJECTIVES: tuple[str, ...] = ("bayes", "f1", "cost")

#: Scores within this relative distance of the best count as a tie.
_TIE_RTOL = 1e-12


def choose_threshold(
    y_true: npt.ArrayLike,
    p_overturned: npt.ArrayLike,
    *,
    objective: Objective = "f1",
    cost_ratio: float | None = None,
) -> float:
    """The threshold on P(Overturned) that is best for ``objective`` on the data given.

    Call this on TRAINING-fold (out-of-fold or validation) predictions only, never on the
    test fold. An item is predicted Overturned when ``p >= threshold``.

    Candidates are the distinct predicted probabilities plus 0.5 and 1.0 (1.0 flags
    nothing unless some p is 1; it can only win for ``"cost"``).

    - ``"bayes"``: the fixed threshold ``1 / (1 + cost_ratio)`` (``cost_ratio`` default
      1, i.e. 0.5: "more likely than not"). It is Bayes-optimal for calibrated p (Elkan
      2001) and does not move when the model is refitted, unlike an F1 maximum over a
      handful of positives; ``y_true`` is only validated.
    - ``"f1"``: maximize the F1 of Overturned, ``2 TP / (2 TP + FP + FN)``; ties go to the
      candidate closest to 0.5 (then the lower one).
    - ``"cost"``: minimize ``FP + cost_ratio * FN``, a missed Overturned costing
      ``cost_ratio`` false alarms. For calibrated p the Bayes-optimal threshold is
      ``1 / (1 + cost_ratio)`` (Elkan 2001, "The Foundations of Cost-Sensitive
      Learning"); here it is chosen empirically, and ties go to the candidate closest to
      that value (then the lower one).

    Args:
        y_true: shape (n,), labels 0 (Upheld) or 1 (Overturned).
        p_overturned: shape (n,), probabilities of Overturned in [0, 1].
        objective: ``"bayes"``, ``"f1"`` or ``"cost"``.
        cost_ratio: for ``"cost"`` (required) and ``"bayes"`` (default 1), the cost of a
            false negative in units of a false positive; a positive finite number.

    Returns:
        The chosen threshold, in [0, 1].

    Raises:
        InvalidInputError: bad labels or probabilities, an unknown objective, a missing or
            invalid ``cost_ratio`` for ``"cost"``, a ``cost_ratio`` given with ``"f1"``, or
            no Overturned label for ``"f1"``.
    """
    y = as_labels(y_true)
    p = as_probabilities(p_overturned, y.size, "p_overturned")
    if objective not in OBJECTIVES:
        raise InvalidInputError(
            "objective", f"expected one of {list(OBJECTIVES)}, found {objective!r}"
        )
    if objective == "bayes":
        ratio = 1.0 if cost_ratio is None else _check_cost_ratio("cost", cost_ratio)
        assert ratio is not None
        return 1.0 / (1.0 + ratio)
    ratio = _check_cost_ratio(objective, cost_ratio)
    if objective == "f1" and not y.any():
        raise InvalidInputError(
            "y_true", "expected at least one Overturned (1) label to choose an F1 threshold"
        )

    candidates = np.union1d(p, [0.5, 1.0])
    tp, fp, fn = _counts_at(y, p, candidates)
    if ratio is None:
        score = 2 * tp / (2 * tp + fp + fn)  # 2 TP + FP + FN >= n_overturned > 0
        target = 0.5
    else:
        score = -(fp + ratio * fn)
        target = 1.0 / (1.0 + ratio)
    best = np.flatnonzero(np.isclose(score, score.max(), rtol=_TIE_RTOL, atol=0.0))
    # argmin returns the first of equal distances, and candidates ascend: the lower one.
    return float(candidates[best[np.argmin(np.abs(candidates[best] - target))]])


def _counts_at(
    y: npt.NDArray[np.int64], p: npt.NDArray[np.float64], thresholds: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """TP, FP and FN at each threshold (predicted Overturned when p >= threshold)."""
    p_pos = np.sort(p[y == 1])
    p_neg = np.sort(p[y == 0])
    tp = p_pos.size - np.searchsorted(p_pos, thresholds, side="left")
    fp = p_neg.size - np.searchsorted(p_neg, thresholds, side="left")
    fn = p_pos.size - tp
    return tp.astype(np.float64), fp.astype(np.float64), fn.astype(np.float64)


def _check_cost_ratio(objective: str, cost_ratio: float | None) -> float | None:
    """The cost ratio as a float for ``"cost"``, None for ``"f1"``; rejects contradictions."""
    if objective == "f1":
        if cost_ratio is not None:
            raise InvalidInputError(
                "cost_ratio",
                f"applies only to objective='cost', found {cost_ratio!r} with objective='f1'; "
                "drop it or set objective='cost'",
            )
        return None
    if (
        isinstance(cost_ratio, bool)
        or not isinstance(cost_ratio, Real)
        or not math.isfinite(float(cost_ratio))
        or float(cost_ratio) <= 0
    ):
        raise InvalidInputError(
            "cost_ratio", f"expected a positive number with objective='cost', found {cost_ratio!r}"
        )
    return float(cost_ratio)
