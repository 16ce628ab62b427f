"""Honest evaluation: a held-out grouped fold, or repeated grouped cross-validation.

Every prediction scored here comes from a model that never saw the item's letter (or a
letter with a near-duplicate summary: folds are drawn over ``fold_group``). Thresholds
and calibrators are fitted inside the training folds (see ``pipeline.fit_calibrated``).

Each fold is scored with its own model and threshold and the fold scores are averaged;
95% confidence intervals resample letters within each fold (cluster bootstrap, see
``imr_outcome.train.metrics.fold_averaged_ci``). For repeated CV, each repeat's
estimates and interval bounds are averaged over repeats. Plots and subgroup tables use
the pooled out-of-fold predictions of the first repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import StratifiedGroupKFold

from imr_outcome.errors import InvalidInputError
from imr_outcome.train.bootstrap import FoldPredictions, fold_averaged_ci
from imr_outcome.train.config import RunConfig
from imr_outcome.train.metrics import METRIC_NAMES, subgroup_metrics
from imr_outcome.train.model import OutcomeModel
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
    )


def evaluate_model(config: RunConfig, model: OutcomeModel, rows: Rows) -> Evaluation:
    """Score a fitted model on held-out rows it never saw."""
    p = model.predict_proba(rows.inputs, rows.metadata)[:, 1]
    fold = FoldPredictions(rows.labels, p, rows.groups, model.threshold)
    return _evaluation(config, rows, p, [fold])


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
            logger.info("repeat %d fold %d done", repeat, fold)
            if on_fold_model is not None:
                on_fold_model(repeat, fold, model, test_rows)
        evaluation = _evaluation(config, rows, p, folds)
        per_repeat.append(evaluation.metrics)
        if first is None:
            first = evaluation
    assert first is not None
    first.metrics = {
        name: (
            float(np.nanmean([r[name][0] for r in per_repeat])),
            float(np.nanmean([r[name][1] for r in per_repeat])),
            float(np.nanmean([r[name][2] for r in per_repeat])),
        )
        for name in METRIC_NAMES
    }
    return first, per_repeat


#: Metrics shown in tables, in order.
HEADLINE_METRICS = (*RANKING_METRICS, "f1_overturned", "precision_overturned", "recall_overturned")


def format_interval(interval: Interval) -> str:
    """``"0.812 [0.743, 0.870]"``."""
    point, low, high = interval
    return f"{point:.3f} [{low:.3f}, {high:.3f}]"
