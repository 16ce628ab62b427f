"""Cluster-bootstrap intervals of the metrics in :mod:`imr_outcome.train.metrics`.

The bootstrap uses the point-metric formulas written for integer item weights (a resample
is "item i drawn w_i times"), which makes 1000 resamples a few matrix products; the tests
check both paths agree exactly. scikit-learn's metrics with ``sample_weight`` give the same
numbers but took 235 s per 1,000 resamples of the 14 metrics on 450 items against 0.74 s
here (2-core AMD EPYC, avx2, no avx512*/amx, shared; ``experiments/bench_metrics.py``), and
a 5x5 cross-validation runs 25 of them, so the vectorised path stays.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn import metrics as skm

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.arrays import as_labels, as_probabilities
from imr_outcome.train.metrics import (
    DEFAULT_N_BINS,
    METRIC_NAMES,
    _bin_ids,
    _point_metrics,
    _ratio,
    as_threshold,
)

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Upper bound on resamples x items held in memory at once by the bootstrap (float64 cells).
_MAX_WEIGHT_CELLS = 2_000_000


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


# ------------------------------------------------------- weighted metrics (bootstrap)


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
