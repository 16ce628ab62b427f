"""Evaluation metrics for Overturned-vs-Upheld predictions (point estimates).

Labels are 0 = Upheld and 1 = Overturned (see ``imr_outcome.data.schema.LABELS``), and
Overturned is the positive class everywhere: ``p`` is always the probability of Overturned
and an item is predicted Overturned when ``p >= threshold``.

A ratio whose denominator is zero is undefined and reported as NaN, never as an exception
or as a silent 0: AUROC, AUPRC and balanced accuracy need both classes, precision needs a
predicted Overturned, recall needs a true Overturned. The bootstrap skips such resamples
for that metric only.

Point estimates use scikit-learn; the cluster-bootstrap intervals are in
:mod:`imr_outcome.train.bootstrap`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import TypeGuard

import numpy as np
import numpy.typing as npt
from sklearn import metrics as skm

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.arrays import as_labels, as_probabilities

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Every metric :func:`binary_metrics` returns, in this order.
METRIC_NAMES: tuple[str, ...] = (
    "auroc",
    "auprc",
    "brier",
    "log_loss",
    "ece",
    "balanced_accuracy",
    "macro_f1",
    "f1_overturned",
    "precision_overturned",
    "recall_overturned",
    "tn",
    "fp",
    "fn",
    "tp",
)

#: Equal-width bins for the expected calibration error (Guo et al. 2017 use 15; 10 is the
#: common choice for a few hundred items, leaving enough items per bin).
DEFAULT_N_BINS = 10


#: Characters MLflow accepts in a metric key; anything else is replaced by "_".
_MLFLOW_KEY_UNSAFE = re.compile(r"[^\w./\- ]")


# --------------------------------------------------------------------------- validation


def as_threshold(threshold: float, field: str = "threshold") -> float:
    """Validate a decision threshold on the probability of Overturned.

    Args:
        threshold: a real number in [0, 1].
        field: the argument name used in error messages.

    Returns:
        The threshold as a float.

    Raises:
        InvalidInputError: ``threshold`` is not a real number in [0, 1].
    """
    if isinstance(threshold, bool) or not isinstance(threshold, Real):
        raise InvalidInputError(field, f"expected a number in [0, 1], found {threshold!r}")
    value = float(threshold)
    if not 0.0 <= value <= 1.0:
        raise InvalidInputError(field, f"expected a number in [0, 1], found {value:g}")
    return value


def _as_n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise InvalidInputError("n_bins", f"expected a positive integer, found {n_bins!r}")
    return int(n_bins)


# ------------------------------------------------------------------------ calibration


def _bin_ids(p: FloatArray, n_bins: int) -> IntArray:
    """Equal-width bins on [0, 1], closed on the right: bin k is (k/M, (k+1)/M], bin 0 also
    holds 0 (Guo et al. 2017; the same as ``sklearn.calibration.calibration_curve``)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], p, side="left").astype(np.int64)


def expected_calibration_error(
    y_true: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = DEFAULT_N_BINS
) -> float:
    """Expected calibration error with equal-width bins, weighted by bin size.

    ``ECE = sum_b |B_b| / n * |mean(y in B_b) - mean(p in B_b)|`` (Naeini, Cooper &
    Hauskrecht 2015, "Obtaining Well Calibrated Probabilities Using Bayesian Binning";
    Guo et al. 2017, "On Calibration of Modern Neural Networks"). Empty bins add nothing.

    Args:
        y_true: shape (n,), labels 0 (Upheld) or 1 (Overturned).
        p: shape (n,), probabilities of Overturned in [0, 1].
        n_bins: the number M of bins; bin k is (k/M, (k+1)/M], bin 0 also holds 0.

    Returns:
        The ECE, in [0, 1] (a probability gap; 0 is perfect calibration).

    Raises:
        InvalidInputError: bad labels, probabilities or ``n_bins``.
    """
    y = as_labels(y_true)
    probs = as_probabilities(p, y.size, "p")
    return _ece(y, probs, _as_n_bins(n_bins))


def _ece(y: IntArray, p: FloatArray, n_bins: int) -> float:
    gap = np.bincount(_bin_ids(p, n_bins), weights=y - p, minlength=n_bins)
    return float(np.abs(gap).sum() / y.size)


def reliability_curve(
    y_true: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = DEFAULT_N_BINS
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Per-bin mean predicted probability and observed Overturned rate (a reliability diagram).

    Bins as in :func:`expected_calibration_error` (DeGroot & Fienberg 1983; Niculescu-Mizil &
    Caruana 2005). Every bin is returned, empty ones with NaN means, so index k is always
    the bin (k/M, (k+1)/M].

    Args:
        y_true: shape (n,), labels 0 (Upheld) or 1 (Overturned).
        p: shape (n,), probabilities of Overturned in [0, 1].
        n_bins: the number M of equal-width bins.

    Returns:
        ``(bin_mean_p, bin_frac_pos, bin_count)``, each of shape (M,): the mean predicted
        probability (NaN when empty), the fraction Overturned (NaN when empty), and the
        number of items (int64).

    Raises:
        InvalidInputError: bad labels, probabilities or ``n_bins``.
    """
    y = as_labels(y_true)
    probs = as_probabilities(p, y.size, "p")
    m = _as_n_bins(n_bins)
    bins = _bin_ids(probs, m)
    count = np.bincount(bins, minlength=m)
    sum_p = np.bincount(bins, weights=probs, minlength=m)
    sum_y = np.bincount(bins, weights=y.astype(np.float64), minlength=m)
    return _ratio(sum_p, count), _ratio(sum_y, count), count.astype(np.int64)


# ------------------------------------------------------------------------ point metrics


def binary_metrics(
    y_true: npt.ArrayLike, p_overturned: npt.ArrayLike, threshold: float
) -> dict[str, float]:
    """Discrimination, calibration and thresholded metrics for Overturned predictions.

    Args:
        y_true: shape (n,), labels 0 (Upheld) or 1 (Overturned).
        p_overturned: shape (n,), probabilities of Overturned in [0, 1].
        threshold: predict Overturned when ``p_overturned >= threshold``; in [0, 1].

    Returns:
        One float per name in :data:`METRIC_NAMES`: ``auroc`` (Hanley & McNeil 1982) and
        ``auprc`` (average precision, the step-wise area under the precision-recall curve),
        both NaN unless both classes are present; ``brier`` (mean squared error of p,
        Brier 1950); ``log_loss`` (mean negative log-likelihood in nats, p clipped to
        [eps, 1 - eps]); ``ece`` (10 bins, see :func:`expected_calibration_error`);
        ``balanced_accuracy`` (mean of the two class recalls, NaN unless both classes are
        present); ``macro_f1`` (mean of the two class F1 scores); ``f1_overturned``,
        ``precision_overturned``, ``recall_overturned`` (NaN on a zero denominator); and the
        confusion counts ``tn``, ``fp``, ``fn``, ``tp`` at ``threshold``.

    Raises:
        InvalidInputError: mismatched lengths, labels outside {0, 1}, probabilities outside
            [0, 1], or a threshold outside [0, 1]; the message names the argument.
    """
    y = as_labels(y_true)
    p = as_probabilities(p_overturned, y.size, "p_overturned")
    return _point_metrics(y, p, as_threshold(threshold))


def _point_metrics(y: IntArray, p: FloatArray, threshold: float) -> dict[str, float]:
    both_classes = 0 < int(y.sum()) < y.size
    pred = (p >= threshold).astype(np.int64)
    tn, fp, fn, tp = (int(c) for c in skm.confusion_matrix(y, pred, labels=[0, 1]).ravel())
    f1_per_class = skm.f1_score(y, pred, labels=[0, 1], average=None, zero_division=np.nan)
    nan = math.nan
    return {
        "auroc": float(skm.roc_auc_score(y, p)) if both_classes else nan,
        "auprc": float(skm.average_precision_score(y, p)) if both_classes else nan,
        "brier": float(skm.brier_score_loss(y, p, pos_label=1)),
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
        "ece": _ece(y, p, DEFAULT_N_BINS),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)) if both_classes else nan,
        "macro_f1": float(np.mean(f1_per_class)),
        "f1_overturned": float(f1_per_class[1]),
        "precision_overturned": float(skm.precision_score(y, pred, zero_division=np.nan)),
        "recall_overturned": float(skm.recall_score(y, pred, zero_division=np.nan)),
        "tn": float(tn),
        "fp": float(fp),
        "fn": float(fn),
        "tp": float(tp),
    }


# ---------------------------------------------------------------------------- helpers


def _ratio(num: npt.ArrayLike, den: npt.ArrayLike) -> FloatArray:
    """num / den elementwise, NaN where den == 0."""
    n = np.asarray(num, dtype=np.float64)
    d = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(n, d).shape, np.nan)
    np.divide(n, d, out=out, where=d != 0)
    return out


# --------------------------------------------------------------------------- subgroups


def subgroup_metrics(
    y_true: npt.ArrayLike,
    p: npt.ArrayLike,
    subgroup_labels: Sequence[str | None],
    threshold: float,
    min_size: int = 10,
) -> dict[str, dict[str, float]]:
    """Metrics per subgroup (e.g. request category), for fairness and error analysis.

    Args:
        y_true: shape (n,), labels 0 (Upheld) or 1 (Overturned).
        p: shape (n,), probabilities of Overturned in [0, 1].
        subgroup_labels: length n, the subgroup of each item; None is reported as
            ``"unknown"`` (a subgroup literally named "unknown" is merged with it).
        threshold: predict Overturned when ``p >= threshold``; in [0, 1].
        min_size: subgroups with fewer items are reported with ``n`` only, since their
            metrics would be noise.

    Returns:
        Subgroup name -> metrics, names sorted: ``n``, ``n_overturned``, ``auroc`` (NaN on
        one class), ``brier``, ``ece`` (10 bins), and ``precision_overturned`` and
        ``recall_overturned`` at ``threshold`` (NaN on a zero denominator); only ``n`` for
        subgroups smaller than ``min_size``. All values are floats.

    Raises:
        InvalidInputError: bad labels, probabilities, threshold, ``subgroup_labels`` length
            or ``min_size``.
    """
    y = as_labels(y_true)
    probs = as_probabilities(p, y.size, "p")
    t = as_threshold(threshold)
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
        raise InvalidInputError("min_size", f"expected a positive integer, found {min_size!r}")
    names = ["unknown" if s is None else str(s) for s in subgroup_labels]
    if len(names) != y.size:
        raise InvalidInputError(
            "subgroup_labels", f"expected one subgroup per label ({y.size}), found {len(names)}"
        )

    name_array = np.asarray(names, dtype=object)
    result: dict[str, dict[str, float]] = {}
    for name in sorted(set(names)):
        mask = name_array == name
        n = int(mask.sum())
        if n < min_size:
            result[name] = {"n": float(n)}
            continue
        full = _point_metrics(y[mask], probs[mask], t)
        result[name] = {
            "n": float(n),
            "n_overturned": float(y[mask].sum()),
            "auroc": full["auroc"],
            "brier": full["brier"],
            "ece": full["ece"],
            "precision_overturned": full["precision_overturned"],
            "recall_overturned": full["recall_overturned"],
        }
    return result


# ------------------------------------------------------------------------------ MLflow


def flatten_metrics(prefix: str, metrics: Mapping[str, object]) -> dict[str, float]:
    """Flatten nested metric results into MLflow metric keys with float values.

    Nested mappings join with ".", and a ``(point, lower, upper)`` triple from
    :func:`bootstrap_ci` becomes ``key``, ``key.ci_low`` and ``key.ci_high``. Characters
    MLflow rejects in keys (anything but letters, digits, ``_ - . /`` and space) become
    ``_``. NaN stays a float NaN.

    Example:
        ``flatten_metrics("test", {"auroc": (0.8, 0.7, 0.9)})`` ->
        ``{"test.auroc": 0.8, "test.auroc.ci_low": 0.7, "test.auroc.ci_high": 0.9}``.

    Args:
        prefix: the key prefix, e.g. ``"test"``; ``""`` for none.
        metrics: name -> a number, a (point, lower, upper) triple, or a nested mapping
            (e.g. the result of :func:`subgroup_metrics`).

    Returns:
        Flat key -> float.

    Raises:
        InvalidInputError: a value is none of the above (field: its flat key).
    """
    flat: dict[str, float] = {}
    for name, value in metrics.items():
        key = _MLFLOW_KEY_UNSAFE.sub("_", f"{prefix}.{name}" if prefix else str(name))
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(key, value))
        elif _is_number(value):
            flat[key] = float(value)
        elif isinstance(value, tuple) and len(value) == 3 and all(_is_number(v) for v in value):
            point, lower, upper = (float(v) for v in value)
            flat.update({key: point, f"{key}.ci_low": lower, f"{key}.ci_high": upper})
        else:
            raise InvalidInputError(
                key,
                "expected a number, a (point, lower, upper) triple or a mapping, found "
                f"{type(value).__name__}",
            )
    return flat


def _is_number(value: object) -> TypeGuard[Real]:
    return isinstance(value, Real) and not isinstance(value, bool)
