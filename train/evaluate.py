"""Honest evaluation: a held-out grouped fold, or repeated grouped cross-validation.

Every prediction scored here comes from a model that never saw the item's letter (or a
letter with a near-duplicate summary: folds are drawn over ``fold_group``). Thresholds
and calibrators are fitted inside the training folds (see ``pipeline.fit_calibrated``).

Each fold is scored with its own model and threshold and the fold scores are averaged;
95% confidence intervals resample letters within each fold (cluster bootstrap, see
``imr_outcome.train.metrics.fold_averaged_ci``). For repeated CV, each repeat's
estimates and interval bounds are averaged over repeats. Plots and subgroup tables use
the pooled out-of-fold predictions of the first repeat.

Besides the metrics, an evaluation reports invariance (mean and max |dP(Overturned)|
under counterfactual rewrites of house style, sex and dates, on held-out items; see
:mod:`imr_outcome.train.invariance`) and, per band, how often each fold model's band was
right on its held-out items.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import StratifiedGroupKFold

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.decision import BANDS, DecisionRule
from imr_outcome.model.model import OutcomeModel
from imr_outcome.train.bootstrap import FoldPredictions, fold_averaged_ci
from imr_outcome.train.config import RunConfig
from imr_outcome.train.invariance import InvarianceFigure, flatten_report, invariance_report
from imr_outcome.train.letter_concordance import (
    within_letter_concordance,
    within_letter_spread,
)
from imr_outcome.train.metrics import METRIC_NAMES, subgroup_metrics
from imr_outcome.train.pipeline import Rows, fit_calibrated

logger = logging.getLogger(__name__)

#: Metrics that do not depend on the decision threshold.
RANKING_METRICS = ("auroc", "auprc", "brier", "log_loss", "ece")

Interval = tuple[float, float, float]
"""(point estimate, lower bound, upper bound) of a 95% interval."""


@dataclass
class Evaluation:
    """Scores of out-of-fold predictions.

    Attributes:
        metrics: metric name -> (point, 95% CI low, 95% CI high); names from
            ``METRIC_NAMES``.
        n_items / n_groups / n_overturned: size of the evaluated set.
        ids / labels / p_overturned / predicted: per-item out-of-fold results (for CV,
            from the first repeat); ``predicted`` is 0/1 at each fold model's threshold.
        subgroups: column -> subgroup value -> metrics (see ``subgroup_metrics``).
        thresholds: the threshold of each fitted model.
        groups: the letter group of each item (for paired bootstraps over letters).
        invariance: flat figures ``invariance.<rewrite>.<field>`` (see
            :func:`imr_outcome.train.invariance.flatten_report`) of the held-out items of
            the first repeat, pooled over folds; empty when not measured.
        bands: band name -> ``{"n", "overturned", "overturned_rate", "accuracy"}`` of the
            held-out items of every repeat, each banded by its own fold model's rule
            (score bands only: the text-based abstention is a serving check).
        within_letter: does the estimate read the request? ``concordance``, ``ci_low``,
            ``ci_high``, ``pairs``, ``letters`` (:func:`within_letter_concordance` over the
            mixed letters, every repeat pooled) and ``median_spread``, ``max_spread``,
            ``within_variance_share`` (:func:`within_letter_spread`, first repeat).
    """

    metrics: dict[str, Interval]
    n_items: int
    n_groups: int
    n_overturned: int
    ids: list[str]
    labels: npt.NDArray[np.int64]
    p_overturned: npt.NDArray[np.float64]
    predicted: npt.NDArray[np.int64]
    subgroups: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    thresholds: list[float] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    invariance: dict[str, float] = field(default_factory=dict)
    bands: dict[str, dict[str, float | None]] = field(default_factory=dict)
    within_letter: dict[str, float] = field(default_factory=dict)

    def figures(self) -> dict[str, float]:
        """Invariance, within-letter and band figures as flat MLflow metric names
        (``bands.<band>.n``, ``within_letter.concordance``)."""
        flat = {name: value for name, value in self.invariance.items() if math.isfinite(value)}
        flat.update(
            {
                f"within_letter.{name}": value
                for name, value in self.within_letter.items()
                if math.isfinite(value)
            }
        )
        for band, record in self.bands.items():
            key = band.replace(" ", "_")
            flat.update(
                {
                    f"bands.{key}.{name}": value
                    for name, value in record.items()
                    if value is not None
                }
            )
        return flat


def letters_of(rows: Rows) -> list[str]:
    """The letter (``group_id``) of each row where the rows carry it, else its fold group."""
    return [str(letter) for letter in rows.context.get("group_id", rows.groups)]


def within_letter_figures(
    letters: list[str], labels: npt.ArrayLike, p: npt.ArrayLike, first: int | None = None
) -> dict[str, float]:
    """:func:`within_letter_concordance` of pooled predictions (``letters`` already made
    unique per repeat) and :func:`within_letter_spread` of the first ``first`` items (one
    repeat; all when None)."""
    point, low, high, pairs, n_letters = within_letter_concordance(letters, labels, p)
    end = len(letters) if first is None else first
    spread = within_letter_spread(letters[:end], np.asarray(p)[:end])
    return {
        "concordance": point,
        "ci_low": low,
        "ci_high": high,
        "pairs": float(pairs),
        "letters": float(n_letters),
        "median_spread": spread["median_spread"],
        "max_spread": spread["max_spread"],
        "within_variance_share": spread["within_variance_share"],
    }


def _evaluation(
    config: RunConfig,
    rows: Rows,
    p: npt.NDArray[np.float64],
    folds: list[FoldPredictions],
) -> Evaluation:
    """Scores averaged over ``folds``; ``rows``/``p`` are the pooled out-of-fold results."""
    thresholds = [fold.threshold for fold in folds]
    metrics = fold_averaged_ci(folds, n_boot=config.evaluation.bootstrap, seed=config.training.seed)
    # One threshold per fitted model; pooled subgroup precision/recall use their median.
    threshold = float(np.median(thresholds))
    predicted = (p >= threshold).astype(np.int64)
    subgroups = {
        column: subgroup_metrics(rows.labels, p, rows.context[column], threshold)
        for column in config.evaluation.subgroups
        if column in rows.context
    }
    return Evaluation(
        metrics=metrics,
        n_items=len(rows),
        n_groups=len(set(rows.groups)),
        n_overturned=int(rows.labels.sum()),
        ids=rows.ids,
        labels=rows.labels,
        p_overturned=p,
        predicted=predicted,
        subgroups=subgroups,
        thresholds=thresholds,
        groups=list(rows.groups),
    )


def evaluate_model(config: RunConfig, model: OutcomeModel, rows: Rows) -> Evaluation:
    """Score a fitted model on held-out rows it never saw (with invariance and bands)."""
    p = model.predict_proba(rows.inputs, rows.metadata)[:, 1]
    fold = FoldPredictions(rows.labels, p, rows.groups, model.threshold)
    evaluation = _evaluation(config, rows, p, [fold])
    counts: dict[str, list[int]] = {}
    _add_band_counts(counts, model, rows.labels, p)
    evaluation.bands = _band_figures(counts)
    evaluation.within_letter = within_letter_figures(letters_of(rows), rows.labels, p)
    if config.evaluation.invariance:
        evaluation.invariance = _pooled_invariance([held_out_invariance(model, rows)])
    return evaluation


def held_out_invariance(model: OutcomeModel, rows: Rows) -> dict[str, InvarianceFigure]:
    """:func:`~imr_outcome.train.invariance.invariance_report` of ``model`` on ``rows``.

    The request and summary are recovered from each row's model input
    (``caller_request`` and ``caller_summary``), so the rewrites see the letter's text.
    Kinds that read metadata (``metadata_lr``) are not measured: the report scores model
    inputs only; an empty dict is returned.
    """
    if model.info.kind == "metadata_lr":
        return {}
    return invariance_report(
        lambda inputs: model.predict_proba(inputs, None)[:, 1],
        [item.caller_request for item in rows.inputs],
        [item.caller_summary for item in rows.inputs],
        rows.metadata,
        labels=[int(y) for y in rows.labels],
    )


def _pooled_invariance(reports: list[dict[str, InvarianceFigure]]) -> dict[str, float]:
    """Pool per-fold invariance reports: deltas weighted by items, maxima over folds,
    AUROC before/after averaged over folds; flat names as ``flatten_report``."""
    pooled: dict[str, InvarianceFigure] = {}
    if not reports or not reports[0]:
        return {}
    for name in reports[0]:
        figures = [report[name] for report in reports]
        n_items = sum(f.n_items for f in figures)
        n_changed = sum(f.n_changed for f in figures)
        changed_sum = sum(f.mean_abs_delta * f.n_changed for f in figures if f.n_changed)
        before = [f.auroc_before for f in figures if f.auroc_before is not None]
        after = [f.auroc_after for f in figures if f.auroc_after is not None]
        pooled[name] = InvarianceFigure(
            n_items=n_items,
            n_changed=n_changed,
            mean_abs_delta=changed_sum / n_changed if n_changed else math.nan,
            max_abs_delta=max(f.max_abs_delta for f in figures),
            mean_abs_delta_all=sum(f.mean_abs_delta_all * f.n_items for f in figures) / n_items,
            auroc_before=float(np.mean(before)) if before else None,
            auroc_after=float(np.mean(after)) if after else None,
        )
    return flatten_report(pooled)


def _add_band_counts(
    counts: dict[str, list[int]],
    model: OutcomeModel,
    labels: npt.NDArray[np.int64],
    p: npt.NDArray[np.float64],
) -> None:
    """Add ``[items, Overturned]`` per band of ``model``'s rule on held-out ``p``."""
    if not model.info.decision:
        return
    rule = DecisionRule.from_dict(model.info.decision)
    for y, score in zip(labels, p, strict=True):
        band = rule.band(float(score))
        counts.setdefault(band, [0, 0])
        counts[band][0] += 1
        counts[band][1] += int(y)


def _mean_over_repeats(values: list[float]) -> float:
    """The mean of the finite values; NaN (no warning) when no repeat defined the metric,
    e.g. precision of Overturned when no item was called Overturned."""
    finite = [value for value in values if math.isfinite(value)]
    return float(np.mean(finite)) if finite else math.nan


def _band_figures(counts: dict[str, list[int]]) -> dict[str, dict[str, float | None]]:
    figures: dict[str, dict[str, float | None]] = {}
    for band in BANDS[:3]:
        n, overturned = counts.get(band, [0, 0])
        rate = overturned / n if n else None
        accuracy = None
        if rate is not None and band == "likely upheld":
            accuracy = 1.0 - rate
        elif rate is not None and band == "likely overturned":
            accuracy = rate
        figures[band] = {
            "n": float(n),
            "overturned": float(overturned),
            "overturned_rate": rate,
            "accuracy": accuracy,
        }
    return figures


def _check_both_classes(rows: Rows, where: str) -> None:
    if len(np.unique(rows.labels)) < 2:
        raise InvalidInputError(where, "needs both Upheld and Overturned items; add data")


def holdout_split(rows: Rows, folds: list[int], holdout_fold: int) -> tuple[Rows, Rows]:
    """(train, test) rows: the test rows are those of ``holdout_fold``."""
    if holdout_fold not in set(folds):
        raise InvalidInputError(
            "data.holdout_fold",
            f"{holdout_fold} is not a fold of the dataset ({sorted(set(folds))})",
        )
    test = [i for i, f in enumerate(folds) if f == holdout_fold]
    train = [i for i, f in enumerate(folds) if f != holdout_fold]
    train_rows, test_rows = rows.subset(train), rows.subset(test)
    _check_both_classes(test_rows, "data.holdout_fold")
    return train_rows, test_rows


def cross_validate(
    config: RunConfig,
    rows: Rows,
    *,
    data_fingerprint: str,
    on_fold_model: Callable[[int, int, OutcomeModel, Rows], None] | None = None,
) -> tuple[Evaluation, list[dict[str, Interval]]]:
    """Repeated grouped, stratified K-fold cross-validation.

    Args:
        config: the run config (``evaluation.folds`` x ``evaluation.repeats``).
        rows: all rows of the split.
        data_fingerprint: recorded in each fitted model.
        on_fold_model: called as ``on_fold_model(repeat, fold, model, test_rows)`` with
            each fold's fitted model and the rows it never saw (e.g. for faithfulness).

    Returns:
        ``(summary, per_repeat)``: the summary holds metrics averaged over repeats (points
        and CI bounds) and the first repeat's out-of-fold predictions; ``per_repeat`` holds
        each repeat's metrics.
    """
    _check_both_classes(rows, "dataset")
    per_repeat: list[dict[str, Interval]] = []
    first: Evaluation | None = None
    band_counts: dict[str, list[int]] = {}
    invariance: list[dict[str, InvarianceFigure]] = []
    pooled_letters: list[str] = []
    pooled_p: list[npt.NDArray[np.float64]] = []
    for repeat in range(config.evaluation.repeats):
        splitter = StratifiedGroupKFold(
            n_splits=config.evaluation.folds,
            shuffle=True,
            random_state=config.training.seed + repeat,
        )
        p = np.zeros(len(rows))
        folds: list[FoldPredictions] = []
        for fold, (train_idx, test_idx) in enumerate(
            splitter.split(np.zeros(len(rows)), rows.labels, rows.groups)
        ):
            test_rows = rows.subset(test_idx)
            model = fit_calibrated(
                config, rows.subset(train_idx), data_fingerprint=data_fingerprint
            )
            p[test_idx] = model.predict_proba(test_rows.inputs, test_rows.metadata)[:, 1]
            folds.append(
                FoldPredictions(test_rows.labels, p[test_idx], test_rows.groups, model.threshold)
            )
            _add_band_counts(band_counts, model, test_rows.labels, p[test_idx])
            if repeat == 0 and config.evaluation.invariance:
                invariance.append(held_out_invariance(model, test_rows))
            logger.info("repeat %d fold %d done", repeat, fold)
            if on_fold_model is not None:
                on_fold_model(repeat, fold, model, test_rows)
        evaluation = _evaluation(config, rows, p, folds)
        per_repeat.append(evaluation.metrics)
        pooled_letters += [f"{repeat}:{letter}" for letter in letters_of(rows)]
        pooled_p.append(p)
        if first is None:
            first = evaluation
    assert first is not None
    first.metrics = {
        name: (
            _mean_over_repeats([r[name][0] for r in per_repeat]),
            _mean_over_repeats([r[name][1] for r in per_repeat]),
            _mean_over_repeats([r[name][2] for r in per_repeat]),
        )
        for name in METRIC_NAMES
    }
    first.bands = _band_figures(band_counts)
    first.invariance = _pooled_invariance(invariance) if invariance else {}
    first.within_letter = within_letter_figures(
        pooled_letters,
        np.tile(rows.labels, config.evaluation.repeats),
        np.concatenate(pooled_p),
        first=len(rows),
    )
    return first, per_repeat


#: Metrics shown in tables, in order.
HEADLINE_METRICS = (*RANKING_METRICS, "f1_overturned", "precision_overturned", "recall_overturned")


def format_interval(interval: Interval) -> str:
    """``"0.812 [0.743, 0.870]"``."""
    point, low, high = interval
    return f"{point:.3f} [{low:.3f}, {high:.3f}]"
