"""Fit one calibrated model on training rows: fit, calibrate, threshold, bands.

Every kind is **cross-fitted**: the final model fits on all training rows, and the
calibrator, threshold, band edges (and ``C``) are chosen on out-of-fold scores from inner
grouped folds of the training rows (``GridSearchCV`` and ``cross_val_predict`` over
``StratifiedGroupKFold`` with the letters as ``groups``; inner fine-tunes for the
transformer). Test rows are never seen here, so nothing is tuned on test data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self

import datasets
import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, cross_val_predict

from imr_outcome.data.model_input import ModelInput, build_model_input
from imr_outcome.data.schema import LABELS, PREFILING_FIELDS
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.artifact import ModelInfo
from imr_outcome.model.base import (
    Classifier,
    SklearnKind,
    classifier_class,
    frame_inputs,
    model_frame,
)
from imr_outcome.model.calibration import make_calibrator
from imr_outcome.model.hardware import machine_precision
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.settings import WindowedConfig
from imr_outcome.train.bands import fit_decision_rule
from imr_outcome.train.config import RunConfig
from imr_outcome.train.threshold import choose_threshold

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rows:
    """Dataset rows as model inputs.

    Attributes:
        ids: row ids, length n.
        groups: merged letter groups (``fold_group``), length n.
        inputs: model inputs built with ``build_model_input``, length n.
        metadata: pre-filing metadata per row, length n.
        labels: shape ``(n,)``, 0 = Upheld, 1 = Overturned.
        context: per-row columns for subgroup reports (never model input).
    """

    ids: list[str]
    groups: list[str]
    inputs: list[ModelInput]
    metadata: list[dict[str, Any]]
    labels: npt.NDArray[np.int64]
    context: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int] | npt.NDArray[np.int64]) -> Rows:
        """The rows at ``index``, in that order."""
        idx = [int(i) for i in index]
        return Rows(
            ids=[self.ids[i] for i in idx],
            groups=[self.groups[i] for i in idx],
            inputs=[self.inputs[i] for i in idx],
            metadata=[self.metadata[i] for i in idx],
            labels=self.labels[idx],
            context={k: [v[i] for i in idx] for k, v in self.context.items()},
        )


def rows_from_dataset(data: datasets.Dataset, context_columns: Sequence[str] = ()) -> Rows:
    """Turn a dataset split into :class:`Rows`.

    Args:
        data: a split written by ``imr-outcome data build``.
        context_columns: extra columns to keep for reports (e.g. ``reviewer_specialty``).

    Returns:
        The rows, in dataset order.

    Raises:
        InvalidInputError: for a label outside {0, 1} or a missing column.
    """
    missing = {"id", "fold_group", "request", "summary", "label"} - set(data.column_names)
    if missing:
        raise InvalidInputError("dataset", f"missing columns {sorted(missing)}; rebuild it")
    columns = data.to_dict()
    labels = np.asarray(columns["label"], dtype=np.int64)
    if labels.size and not set(np.unique(labels)) <= {0, 1}:
        raise InvalidInputError(
            "label",
            f"unknown label ids {sorted(set(np.unique(labels)) - {0, 1})}; "
            f"expected 0..1 for {list(LABELS)}",
        )
    metadata = [
        {name: columns[name][i] for name in PREFILING_FIELDS if name in columns}
        for i in range(len(labels))
    ]
    inputs = [
        build_model_input(request, summary, meta)
        for request, summary, meta in zip(
            columns["request"], columns["summary"], metadata, strict=True
        )
    ]
    return Rows(
        ids=list(columns["id"]),
        groups=list(columns["fold_group"]),
        inputs=inputs,
        metadata=metadata,
        labels=labels,
        context={c: list(columns[c]) for c in context_columns if c in columns},
    )


class Estimator(Classifier, Protocol):
    """A :class:`~imr_outcome.model.base.Classifier` that can be fitted (what
    :func:`new_classifier` builds)."""

    def fit(
        self,
        inputs: Sequence[ModelInput],
        labels: npt.NDArray[np.int64],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> Self:
        """Train on ``inputs`` with labels 0 (Upheld) / 1 (Overturned).

        Args:
            inputs: model inputs, length n.
            labels: shape ``(n,)``, values in {0, 1}.
            metadata: per-row pre-filing metadata dicts (for metadata-only models);
                text models ignore it.

        Returns:
            self, fitted.
        """
        ...


def new_classifier(config: RunConfig, callbacks: list[Any] | None = None) -> Estimator:
    """An unfitted encoder kind (``transformer`` as
    :class:`~imr_outcome.train.fine_tune.TrainableTransformer`, imported only here so that
    other kinds never import torch's training stack, or ``frozen_encoder_lr``)."""
    if config.model.kind == "transformer":
        from imr_outcome.train.fine_tune import TrainableTransformer

        transformer: Estimator = TrainableTransformer(config.model, config.training, callbacks)
        return transformer
    built: Estimator = classifier_class(config.model.kind)(config.model, config.training)
    return built


def sklearn_estimator(config: RunConfig) -> SklearnKind | EncoderEstimator:
    """The configured kind as an unfitted scikit-learn estimator over a
    :func:`~imr_outcome.model.base.model_frame` DataFrame: a
    :class:`~imr_outcome.model.base.SklearnKind` built from the model section, or the
    frozen encoder kind through :class:`EncoderEstimator`.

    Raises:
        InvalidInputError: ``transformer`` (cross-fitted by its own loop, not by
            scikit-learn's cross-validation).
    """
    model, training = config.model, config.training
    if model.kind == "transformer":
        raise InvalidInputError("model.kind", "the transformer is not a scikit-learn estimator")
    if model.kind == "frozen_encoder_lr":
        return EncoderEstimator(config, c=model.c)
    fields = model.model_dump(exclude={"kind", "c_grid", "ngram_max_grid"})
    if model.kind != "majority":
        fields.update(class_weighted=training.class_weighted_loss, seed=training.seed)
    estimator: SklearnKind = classifier_class(model.kind)(**fields)
    return estimator


class EncoderEstimator(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A kind that fits on model inputs (the frozen encoder) as a scikit-learn estimator,
    so ``GridSearchCV`` can tune its ``c`` and ``cross_val_predict`` can cross-fit it.

    Args:
        config: the run config; its model section builds the classifier.
        c: overrides ``model.c``.
    """

    def __init__(self, config: RunConfig, c: float = 1.0) -> None:
        self.config = config
        self.c = c

    def fit(self, X: pd.DataFrame, y: npt.ArrayLike) -> Self:
        """Fit the kind on the inputs of X (see :func:`~imr_outcome.model.base.frame_inputs`)."""
        inputs, metadata = frame_inputs(X)
        model = self.config.model.model_copy(update={"c": self.c})
        config = self.config.model_copy(update={"model": model})
        labels = np.asarray(y, dtype=np.int64)
        self.classifier_ = new_classifier(config).fit(inputs, labels, metadata)
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, X: pd.DataFrame) -> npt.NDArray[np.float64]:
        """Log-odds of Overturned, shape (n,)."""
        logits = self.classifier_.logits(*frame_inputs(X))
        return np.asarray(logits[:, 1] - logits[:, 0], dtype=np.float64)

    def predict(self, X: pd.DataFrame) -> npt.NDArray[np.int64]:
        """1 (Overturned) where the raw log-odds are positive, else 0."""
        return (self.decision_function(X) > 0).astype(np.int64)


def inner_cv(rows: Rows, n_splits: int, seed: int) -> StratifiedGroupKFold:
    """Inner grouped, stratified folds of training rows for tuning and cross-fitting.

    ``StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)``, to be split with
    ``groups=rows.groups``: every training row is out-of-fold exactly once, and no letter is
    on both sides of a split. ``n_splits`` is lowered to the number of Overturned groups
    when there are fewer.

    Raises:
        InvalidInputError: when some inner fitting part would hold a single class.
    """
    positives = len({g for g, y in zip(rows.groups, rows.labels, strict=True) if y == 1})
    n_splits = max(2, min(n_splits, positives, len(set(rows.groups))))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fit_idx, _ in splitter.split(np.zeros(len(rows)), rows.labels, rows.groups):
        if len(np.unique(rows.labels[fit_idx])) < 2:
            raise InvalidInputError(
                "training.crossfit_folds",
                "an inner fitting part of the training rows has a single class; add data "
                "or lower training.crossfit_folds",
            )
    return splitter


def param_grid(config: RunConfig) -> dict[str, list[Any]]:
    """The ``GridSearchCV`` grid of ``model.c_grid`` x ``model.ngram_max_grid`` (the
    non-empty ones; ``{}`` when neither is set)."""
    grid = {
        name: list(values)
        for name, values in (
            ("c", getattr(config.model, "c_grid", None)),
            ("ngram_max", getattr(config.model, "ngram_max_grid", None)),
        )
        if values
    }
    return grid


def _cross_fit_transformer(
    config: RunConfig, rows: Rows, callbacks: list[Any] | None
) -> tuple[Estimator, npt.NDArray[np.float64]]:
    """Fine-tune ``crossfit_folds`` inner models, each without one inner fold of letters,
    for out-of-fold log-odds of every training row, then the final model on all rows.

    The final model's OOD threshold is the quantile of the held-out rows' distances under
    the inner detectors (fitted without their letters), since no training row is unseen
    by the final model. Callbacks go to the final fit only: the inner fits' losses would
    mix with its own in the tracked run.

    Returns:
        (the final classifier, out-of-fold log-odds of Overturned, shape ``(n,)``).
    """
    cv = inner_cv(rows, config.training.crossfit_folds, config.training.seed)
    oof = np.zeros(len(rows), dtype=np.float64)
    distances: list[npt.NDArray[np.float64]] = []
    splits = list(cv.split(np.zeros(len(rows)), rows.labels, rows.groups))
    for number, (fit_idx, out_idx) in enumerate(splits, start=1):
        fit_rows, out_rows = rows.subset(fit_idx), rows.subset(out_idx)
        logger.info(
            "cross-fitting %d/%d: fine-tuning on %d rows, scoring %d",
            number, len(splits), len(fit_rows), len(out_rows),
        )  # fmt: skip
        inner = new_classifier(config).fit(fit_rows.inputs, fit_rows.labels, fit_rows.metadata)
        scores = inner.score_items(out_rows.inputs, out_rows.metadata)
        oof[out_idx] = scores.logits[:, 1] - scores.logits[:, 0]
        if scores.ood_distance is not None:
            distances.append(scores.ood_distance)
    logger.info("fitting %s on all %d training rows", config.model.kind, len(rows))
    classifier = new_classifier(config, callbacks).fit(rows.inputs, rows.labels, rows.metadata)
    if classifier.ood is not None and distances:
        classifier.ood = classifier.ood.with_threshold(np.concatenate(distances))
    return classifier, oof


def fit_calibrated(
    config: RunConfig,
    rows: Rows,
    *,
    data_fingerprint: str,
    callbacks: list[Any] | None = None,
) -> OutcomeModel:
    """Fit the classifier, calibrator, threshold and bands on training rows only.

    **Cross-fitting** (every kind but ``transformer``), by scikit-learn: the training rows
    are split by letter into ``training.crossfit_folds`` inner folds (:func:`inner_cv`,
    ``StratifiedGroupKFold`` with ``groups``). ``GridSearchCV`` over those folds picks
    ``C`` (and ``ngram_max``) from :func:`param_grid` by mean fold AUROC; then
    ``cross_val_predict`` gives each row a log-odds from a model fitted without its letter,
    and those out-of-fold scores fit the calibrator, the decision threshold and the band
    edges; the final classifier is then fitted on **all** training rows with the chosen
    hyper-parameters. The calibrator is thus fitted on scores of slightly weaker models
    (80% of the letters), a small, conservative mismatch (Chernozhukov et al. 2018 use the
    same device for nuisance fits).

    **Transformer**: cross-fitted too, by hand (a fine-tune is not a scikit-learn
    estimator): ``crossfit_folds`` inner models over the same :func:`inner_cv` folds give
    the out-of-fold log-odds, then the final model fine-tunes on all training rows
    (:func:`_cross_fit_transformer`). That is ``crossfit_folds + 1`` fine-tunes;
    ``training.frozen_layers`` makes each cheap on a CPU (lower-layer states computed once
    per process).

    Args:
        config: the run config.
        rows: training rows (never test rows).
        data_fingerprint: the dataset's fingerprint, recorded in the model.
        callbacks: Trainer callbacks for transformer kinds (e.g. loss logging).

    Returns:
        The :class:`OutcomeModel`; ``info.decision`` holds the band rule
        (:class:`~imr_outcome.model.decision.DecisionRule`).

    Raises:
        InvalidInputError: when an inner fitting part lacks a class.
    """
    if config.model.kind == "transformer":
        classifier, cal_logits = _cross_fit_transformer(config, rows, callbacks)
        cal_labels = rows.labels
    else:
        X, groups = model_frame(rows.inputs, rows.metadata), rows.groups
        cv = inner_cv(rows, config.training.crossfit_folds, config.training.seed)
        estimator = sklearn_estimator(config)
        grid = param_grid(config)
        if grid:
            search = GridSearchCV(estimator, grid, scoring="roc_auc", cv=cv, refit=False)
            search.fit(X, rows.labels, groups=groups)
            logger.info("inner CV: best %s, AUROC %.3f", search.best_params_, search.best_score_)
            estimator.set_params(**search.best_params_)
            model = config.model.model_copy(update=search.best_params_)
            config = config.model_copy(update={"model": model})
        z = cross_val_predict(
            estimator, X, rows.labels, groups=groups, cv=cv, method="decision_function"
        )
        cal_logits, cal_labels = np.asarray(z, dtype=np.float64), rows.labels
        logger.info("fitting %s on all %d training rows", config.model.kind, len(rows))
        fitted = clone(estimator).fit(X, rows.labels)
        classifier = fitted.classifier_ if isinstance(fitted, EncoderEstimator) else fitted
    calibrator = make_calibrator(config.calibration.method).fit(cal_logits, cal_labels)
    p_cal = calibrator.predict_proba(cal_logits)[:, 1]
    threshold = choose_threshold(
        cal_labels,
        p_cal,
        objective=config.threshold.objective,
        cost_ratio=config.threshold.cost_ratio,
    )
    rule = fit_decision_rule(cal_labels, p_cal, config.decision, source=config.data.split)
    windowed = config.model if isinstance(config.model, WindowedConfig) else None
    info = ModelInfo(
        kind=config.model.kind,
        labels=LABELS,
        split=config.data.split,
        base_model=windowed.base_model if windowed else "",
        max_length=windowed.max_length if windowed else 0,
        data_fingerprint=data_fingerprint,
        trained_groups=len(set(rows.groups)),
        config_name=config.name,
        explainer=config.explainer,
        created=ModelInfo.now(),
        precision=machine_precision(config.training.precision) if windowed else "",
        ig_steps=config.ig_steps,
        decision=rule.to_dict(),
    )
    return OutcomeModel(classifier, calibrator, threshold, info)
