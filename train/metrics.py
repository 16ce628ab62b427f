"""Evaluation metrics for Overturned-vs-Upheld predictions, with cluster-bootstrap intervals.

Labels are 0 = Upheld and 1 = Overturned (see ``imr_outcome.data.schema.LABELS``), and
Overturned is the positive class everywhere: ``p`` is always the probability of Overturned
and an item is predicted Overturned when ``p >= threshold``.

A ratio whose denominator is zero is undefined and reported as NaN, never as an exception
or as a silent 0: AUROC, AUPRC and balanced accuracy need both classes, precision needs a
predicted Overturned, recall needs a true Overturned. The bootstrap skips such resamples
for that metric only.

Point estimates use scikit-learn. The bootstrap uses the same formulas written for integer
item weights (a resample is "item i drawn w_i times"), which makes 1000 resamples a few
matrix products; the tests check both paths agree exactly.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import TypeGuard

import numpy as np
import numpy.typing as npt
from sklearn import metrics as skm

from imr_outcome.errors import InvalidInputError

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

#: Upper bound on resamples x items held in memory at once by the bootstrap (float64 cells).
_MAX_WEIGHT_CELLS = 2_000_000

#: Characters MLflow accepts in a metric key; anything else is replaced by "_".
_MLFLOW_KEY_UNSAFE = re.compile(r"[^\w./\- ]")


# --------------------------------------------------------------------------- validation


def _preview(values: npt.NDArray[np.generic], limit: int = 5) -> str:
    shown = ", ".join(repr(v.item()) for v in values[:limit])
    return f"[{shown}{', ...' if values.size > limit else ''}]"


def as_labels(y_true: npt.ArrayLike, field: str = "y_true") -> IntArray:
    """Validate binary labels and return them as an int64 array.

    Args:
        y_true: shape (n,), n >= 1, values 0 (Upheld) or 1 (Overturned); bool and float
            0.0/1.0 are accepted.
        field: the argument name used in error messages.

    Returns:
        The labels, shape (n,), dtype int64.

    Raises:
        InvalidInputError: ``field`` is not 1-D, is empty, or holds other values.
    """
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise InvalidInputError(field, f"expected a 1-D array of labels, found shape {y.shape}")
    if y.size == 0:
        raise InvalidInputError(field, "expected at least one label, found none")
    if y.dtype.kind not in "biuf":
        raise InvalidInputError(
            field,
            f"expected integer labels 0 (Upheld) or 1 (Overturned), found dtype {y.dtype}; "
            "map label names to ids with imr_outcome.data.schema.LABELS first",
        )
    bad = np.setdiff1d(np.unique(y), [0, 1])
    if bad.size:
        raise InvalidInputError(
            field, f"expected labels 0 (Upheld) or 1 (Overturned), found {_preview(bad)}"
        )
    return y.astype(np.int64)


def as_probabilities(p: npt.ArrayLike, n: int, field: str) -> FloatArray:
    """Validate probabilities of Overturned and return them as a float64 array.

    Args:
        p: shape (n,), finite values in [0, 1].
        n: the expected length (the number of labels).
        field: the argument name used in error messages.

    Returns:
        The probabilities, shape (n,), dtype float64.

    Raises:
        InvalidInputError: ``field`` has the wrong shape or length, is not numeric, or
            holds NaN, infinity or values outside [0, 1].
    """
    a = np.asarray(p)
    if a.ndim != 1:
        raise InvalidInputError(
            field,
            f"expected a 1-D array of Overturned probabilities, found shape {a.shape}; "
            "pass the Overturned column, e.g. proba[:, 1]",
        )
    if a.dtype.kind not in "biuf":
        raise InvalidInputError(field, f"expected numbers, found dtype {a.dtype}")
    if a.shape[0] != n:
        raise InvalidInputError(
            field, f"expected one probability per label ({n} labels), found {a.shape[0]}"
        )
    values = a.astype(np.float64)
    not_finite = np.flatnonzero(~np.isfinite(values))
    if not_finite.size:
        raise InvalidInputError(
            field,
            f"expected finite probabilities, found {values[not_finite[0]]} at index "
            f"{not_finite[0]}",
        )
    if values.min() < 0.0 or values.max() > 1.0:
        raise InvalidInputError(
            field,
            f"expected probabilities in [0, 1], found values from {values.min():g} to "
            f"{values.max():g}; pass probabilities (predict_proba), not logits",
        )
    return values


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


def _group_codes(groups: Sequence[Hashable] | npt.ArrayLike, n: int) -> tuple[IntArray, int]:
    """Map group ids (letters) to codes 0..G-1 in order of first appearance."""
    a = np.asarray(groups, dtype=object)
    if a.ndim != 1 or a.shape[0] != n:
        raise InvalidInputError(
            "groups", f"expected one group id per label, shape ({n},), found shape {a.shape}"
        )
    index: dict[Hashable, int] = {}
    try:
        codes = np.array([index.setdefault(g, len(index)) for g in a.tolist()], dtype=np.int64)
    except TypeError as exc:
        raise InvalidInputError("groups", f"expected hashable group ids, found {exc}") from exc
    return codes, len(index)


def _check_n_boot(n_boot: int) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise InvalidInputError("n_boot", f"expected a positive integer, found {n_boot!r}")
    return int(n_boot)


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


# ------------------------------------------------------- weighted metrics (bootstrap)


def _ratio(num: npt.ArrayLike, den: npt.ArrayLike) -> FloatArray:
    """num / den elementwise, NaN where den == 0."""
    n = np.asarray(num, dtype=np.float64)
    d = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(n, d).shape, np.nan)
    np.divide(n, d, out=out, where=d != 0)
    return out


def _weighted_ranking(
    y: IntArray, p: FloatArray, weights: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """AUROC and average precision for each row of item weights.

    Ties count half in AUROC (Mann-Whitney), and average precision steps at distinct
    scores, exactly as scikit-learn does on the data with item i repeated w_i times.

    Args:
        y: shape (n,), labels.
        p: shape (n,), scores.
        weights: shape (B, n), non-negative item weights.

    Returns:
        ``(auroc, average_precision)``, each shape (B,), NaN where a class has no weight.
    """
    _, inverse = np.unique(p, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    sorted_w = weights[:, order]
    sorted_y = y[order].astype(np.float64)
    pos_at = np.add.reduceat(sorted_w * sorted_y, starts, axis=1)  # (B, K), ascending p
    neg_at = np.add.reduceat(sorted_w * (1.0 - sorted_y), starts, axis=1)
    n_pos = pos_at.sum(axis=1)
    n_neg = neg_at.sum(axis=1)
    defined = (n_pos > 0) & (n_neg > 0)

    neg_below = np.cumsum(neg_at, axis=1) - neg_at
    auroc = _ratio((pos_at * (neg_below + 0.5 * neg_at)).sum(axis=1), n_pos * n_neg)

    pos_desc = pos_at[:, ::-1]
    tp_cum = np.cumsum(pos_desc, axis=1)
    flagged = tp_cum + np.cumsum(neg_at[:, ::-1], axis=1)
    precision = np.zeros_like(tp_cum)
    np.divide(tp_cum, flagged, out=precision, where=flagged > 0)
    average_precision = _ratio((pos_desc * precision).sum(axis=1), n_pos)

    nan = np.full_like(auroc, np.nan)
    return np.where(defined, auroc, nan), np.where(defined, average_precision, nan)


def _weighted_metrics(
    y: IntArray, p: FloatArray, threshold: float, weights: FloatArray
) -> dict[str, FloatArray]:
    """Every metric of :func:`binary_metrics` for each row of item weights, shape (B, n).

    With integer weights, row b equals ``binary_metrics`` on the data with item i repeated
    ``weights[b, i]`` times.
    """
    yf = y.astype(np.float64)
    pred = p >= threshold
    pos = y == 1
    cells = np.stack([~pos & ~pred, ~pos & pred, pos & ~pred, pos & pred], axis=1)
    tn, fp, fn, tp = (weights @ cells.astype(np.float64)).T
    total = weights.sum(axis=1)

    eps = np.finfo(np.float64).eps
    item_log_loss = -(
        yf * np.log(np.clip(p, eps, 1 - eps)) + (1 - yf) * np.log(np.clip(1 - p, eps, 1 - eps))
    )
    bins = _bin_ids(p, DEFAULT_N_BINS)
    gap_by_bin = np.zeros((y.size, DEFAULT_N_BINS))
    gap_by_bin[np.arange(y.size), bins] = yf - p

    auroc, auprc = _weighted_ranking(y, p, weights)
    recall_1 = _ratio(tp, tp + fn)
    recall_0 = _ratio(tn, tn + fp)
    f1_1 = _ratio(2 * tp, 2 * tp + fp + fn)
    f1_0 = _ratio(2 * tn, 2 * tn + fn + fp)
    return {
        "auroc": auroc,
        "auprc": auprc,
        "brier": (weights @ (p - yf) ** 2) / total,
        "log_loss": (weights @ item_log_loss) / total,
        "ece": np.abs(weights @ gap_by_bin).sum(axis=1) / total,
        "balanced_accuracy": (recall_0 + recall_1) / 2,
        "macro_f1": (f1_0 + f1_1) / 2,
        "f1_overturned": f1_1,
        "precision_overturned": _ratio(tp, tp + fp),
        "recall_overturned": recall_1,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
    }


def _resample_weights(
    codes: IntArray, n_groups: int, n_boot: int, seed: int
) -> Iterator[FloatArray]:
    """Cluster-bootstrap item weights, in chunks of shape (b, n) with sum b = n_boot.

    Each resample draws ``n_groups`` groups with replacement (a multinomial count per
    group); every item of a group drawn k times gets weight k, so a group's items always
    enter and leave together.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_WEIGHT_CELLS // codes.size)
    uniform = np.full(n_groups, 1.0 / n_groups)
    for start in range(0, n_boot, chunk):
        counts = rng.multinomial(n_groups, uniform, size=min(chunk, n_boot - start))
        yield counts[:, codes].astype(np.float64)


# --------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    y_true: npt.ArrayLike,
    p: npt.ArrayLike,
    groups: Sequence[Hashable] | npt.ArrayLike,
    threshold: float,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """Point estimates and percentile intervals from a cluster (group) bootstrap.

    Items of one letter are correlated, so the resampling unit is the group: each resample
    draws as many groups as there are, with replacement, and takes every item of each
    drawn group (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13;
    Field & Welsh 2007, "Bootstrapping clustered data", JRSS B 69(3)). The interval is the
    percentile interval of the resampled metric. Resamples in which a metric is undefined
    (NaN, e.g. AUROC on one class) are skipped for that metric only.

    Args:
        y_true: shape (n,), labels 0 (Upheld) or 1 (Overturned).
        p: shape (n,), probabilities of Overturned in [0, 1].
        groups: shape (n,), hashable group ids (letter ids); items sharing an id are
            resampled together.
        threshold: predict Overturned when ``p >= threshold``; in [0, 1].
        n_boot: the number of resamples, >= 1.
        alpha: the interval covers ``1 - alpha``; in (0, 1).
        seed: seeds ``numpy.random.default_rng``; the same seed gives the same intervals.

    Returns:
        For each name in :data:`METRIC_NAMES`, ``(point, lower, upper)``: the point
        estimate of :func:`binary_metrics` on all items and the ``alpha / 2`` and
        ``1 - alpha / 2`` percentiles of the resamples (NaN when no resample defines the
        metric). Confusion counts vary with resample size, since groups differ in size.

    Raises:
        InvalidInputError: bad labels, probabilities, groups, threshold, ``n_boot`` or
            ``alpha``.
    """
    y = as_labels(y_true)
    probs = as_probabilities(p, y.size, "p")
    t = as_threshold(threshold)
    codes, n_groups = _group_codes(groups, y.size)
    n_boot = _check_n_boot(n_boot)
    if not 0.0 < alpha < 1.0:
        raise InvalidInputError("alpha", f"expected a number in (0, 1), found {alpha!r}")

    point = _point_metrics(y, probs, t)
    chunks = [
        _weighted_metrics(y, probs, t, w) for w in _resample_weights(codes, n_groups, n_boot, seed)
    ]
    result: dict[str, tuple[float, float, float]] = {}
    for name in METRIC_NAMES:
        values = np.concatenate([chunk[name] for chunk in chunks])
        defined = values[np.isfinite(values)]
        if defined.size < values.size:
            logger.debug(
                "%s undefined in %d of %d resamples", name, values.size - defined.size, values.size
            )
        if defined.size == 0:
            result[name] = (point[name], math.nan, math.nan)
            continue
        lower, upper = np.quantile(defined, [alpha / 2, 1 - alpha / 2])
        result[name] = (point[name], float(lower), float(upper))
    return result


@dataclass(frozen=True)
class FoldPredictions:
    """Held-out predictions of one cross-validation fold (one fitted model).

    Attributes:
        y_true: shape ``(n,)``, labels 0/1.
        p: shape ``(n,)``, P(Overturned) in [0, 1].
        groups: length n, the letter of each item.
        threshold: that fold's model threshold, in [0, 1].
    """

    y_true: npt.ArrayLike
    p: npt.ArrayLike
    groups: Sequence[Hashable] | npt.ArrayLike
    threshold: float


def fold_averaged_ci(
    folds: Sequence[FoldPredictions], *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Cross-validation estimate: metrics averaged over folds, with a cluster-bootstrap CI.

    Each fold is scored with its own model and threshold, and the fold scores are
    averaged (NaN folds skipped). Pooling out-of-fold scores of different models instead
    biases ranking metrics: a majority-class model, whose constant differs per fold, gets
    a pooled AUROC below 0.5 (Parker et al. 2007, "Stratification bias in low
    signal microarray studies"; Airola et al. 2011). The interval resamples letters
    within each fold independently, averages the resampled fold scores, and takes the
    percentiles (a stratified cluster bootstrap of the CV mean).

    Args:
        folds: the folds of one CV run; a single fold gives the same result as
            :func:`bootstrap_ci`.
        n_boot: resamples, >= 1.
        alpha: the interval covers ``1 - alpha``.
        seed: base seed; fold k uses ``seed + k``.

    Returns:
        For each name in :data:`METRIC_NAMES`, ``(fold mean, lower, upper)``.

    Raises:
        InvalidInputError: no folds, or bad inputs in a fold.
    """
    if not folds:
        raise InvalidInputError("folds", "expected at least one fold")
    n_boot = _check_n_boot(n_boot)
    points: list[dict[str, float]] = []
    draws: list[dict[str, FloatArray]] = []
    for k, fold in enumerate(folds):
        y = as_labels(fold.y_true)
        probs = as_probabilities(fold.p, y.size, "p")
        t = as_threshold(fold.threshold)
        codes, n_groups = _group_codes(fold.groups, y.size)
        points.append(_point_metrics(y, probs, t))
        chunks = [
            _weighted_metrics(y, probs, t, w)
            for w in _resample_weights(codes, n_groups, n_boot, seed + k)
        ]
        draws.append({name: np.concatenate([c[name] for c in chunks]) for name in METRIC_NAMES})
    result: dict[str, tuple[float, float, float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN, on purpose
        for name in METRIC_NAMES:
            point = float(np.nanmean([pt[name] for pt in points]))
            mean_draws = np.nanmean(np.stack([d[name] for d in draws]), axis=0)
            defined = mean_draws[np.isfinite(mean_draws)]
            if defined.size == 0:
                result[name] = (point, math.nan, math.nan)
                continue
            lower, upper = np.quantile(defined, [alpha / 2, 1 - alpha / 2])
            result[name] = (point, float(lower), float(upper))
    return result


def paired_bootstrap_auroc(
    y_true: npt.ArrayLike,
    p_a: npt.ArrayLike,
    p_b: npt.ArrayLike,
    groups: Sequence[Hashable] | npt.ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired cluster-bootstrap test that model B's AUROC beats model A's.

    Both models are scored on the same resamples of groups (as in :func:`bootstrap_ci`), so
    the test accounts for their correlation on shared items (a paired bootstrap; Efron &
    Tibshirani 1993, ch. 16).

    Args:
        y_true: shape (n,), labels 0 (Upheld) or 1 (Overturned).
        p_a: shape (n,), model A's (the champion's) probabilities of Overturned.
        p_b: shape (n,), model B's (the challenger's) probabilities of Overturned.
        groups: shape (n,), hashable group ids resampled together.
        n_boot: the number of resamples, >= 1.
        seed: seeds ``numpy.random.default_rng``.

    Returns:
        ``(delta, p_value)``: ``delta = AUROC(B) - AUROC(A)`` on all items, and the
        one-sided p-value of "B is not better than A": the fraction of resamples with
        ``delta <= 0`` (among resamples holding both classes). Both are NaN when ``y_true``
        holds one class. With few resamples the p-value can be exactly 0; read it as
        ``< 1 / n_boot``.

    Raises:
        InvalidInputError: bad labels, probabilities, groups or ``n_boot``.
    """
    y = as_labels(y_true)
    a = as_probabilities(p_a, y.size, "p_a")
    b = as_probabilities(p_b, y.size, "p_b")
    codes, n_groups = _group_codes(groups, y.size)
    n_boot = _check_n_boot(n_boot)
    if not 0 < int(y.sum()) < y.size:
        return math.nan, math.nan

    delta = float(skm.roc_auc_score(y, b) - skm.roc_auc_score(y, a))
    deltas = np.concatenate(
        [
            _weighted_ranking(y, b, w)[0] - _weighted_ranking(y, a, w)[0]
            for w in _resample_weights(codes, n_groups, n_boot, seed)
        ]
    )
    deltas = deltas[np.isfinite(deltas)]
    p_value = float(np.mean(deltas <= 0)) if deltas.size else math.nan
    return delta, p_value


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
