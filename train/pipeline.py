"""Fit one calibrated model on training rows: fit, calibrate, choose the threshold.

The training rows are split by letter into a fitting part and a validation slice
(``training.validation_fraction``). The classifier learns on the fitting part; the
calibrator and the decision threshold are fitted on its predictions for the validation
slice. Test rows are never seen here, so nothing is tuned on test data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import numpy.typing as npt
from sklearn.model_selection import StratifiedGroupKFold

from imr_outcome.data.model_input import ModelInput, build_model_input
from imr_outcome.data.schema import LABELS, PREFILING_FIELDS
from imr_outcome.errors import InvalidInputError
from imr_outcome.train.artifact import ModelInfo
from imr_outcome.train.base import Classifier, classifier_class
from imr_outcome.train.calibration import make_calibrator
from imr_outcome.train.config import RunConfig, WindowedConfig
from imr_outcome.train.hardware import machine_precision
from imr_outcome.train.model import OutcomeModel
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


def validation_split(
    rows: Rows, fraction: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Split rows by group into (fit, validation) indices, stratified by label.

    Uses one fold of ``StratifiedGroupKFold(n_splits=round(1 / fraction))``.

    Raises:
        InvalidInputError: when either part would lack one of the classes.
    """
    n_splits = max(2, round(1 / fraction))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fit_idx, val_idx = next(splitter.split(np.zeros(len(rows)), rows.labels, rows.groups))
    for name, idx in (("fit", fit_idx), ("validation", val_idx)):
        if len(np.unique(rows.labels[idx])) < 2:
            raise InvalidInputError(
                "training.validation_fraction",
                f"the {name} part of the training rows has a single class; "
                "add data or change training.validation_fraction",
            )
    return fit_idx.astype(np.int64), val_idx.astype(np.int64)


def new_classifier(config: RunConfig, callbacks: list[Any] | None = None) -> Classifier:
    """An unfitted classifier of the configured kind."""
    cls = classifier_class(config.model.kind)
    if config.model.kind == "transformer" and callbacks:
        classifier: Classifier = cls(config.model, config.training, callbacks=callbacks)
        return classifier
    built: Classifier = cls(config.model, config.training)
    return built


def fit_calibrated(
    config: RunConfig,
    rows: Rows,
    *,
    data_fingerprint: str,
    callbacks: list[Any] | None = None,
) -> OutcomeModel:
    """Fit the classifier, the calibrator and the threshold on training rows only.

    The classifier is fitted on ``1 - training.validation_fraction`` of the letters; the
    calibrator, the decision threshold and (transformers) the out-of-distribution
    threshold on the rest, the validation slice.

    Args:
        config: the run config.
        rows: training rows (never test rows).
        data_fingerprint: the dataset's fingerprint, recorded in the model.
        callbacks: Trainer callbacks for transformer kinds (e.g. loss logging).

    Returns:
        The :class:`OutcomeModel`.

    Raises:
        InvalidInputError: when the validation slice cannot hold both classes.
    """
    fit_idx, val_idx = validation_split(
        rows, config.training.validation_fraction, config.training.seed
    )
    fit_rows, val_rows = rows.subset(fit_idx), rows.subset(val_idx)
    logger.info(
        "fitting %s on %d rows, calibrating on %d", config.model.kind, len(fit_rows), len(val_rows)
    )
    classifier = new_classifier(config, callbacks).fit(
        fit_rows.inputs, fit_rows.labels, fit_rows.metadata
    )
    val_logits = classifier.logits(val_rows.inputs, val_rows.metadata)
    calibrator = make_calibrator(config.calibration.method).fit(val_logits, val_rows.labels)
    p_val = calibrator.predict_proba(val_logits)[:, 1]
    calibrate_ood = getattr(classifier, "calibrate_ood", None)  # transformer kinds
    if calibrate_ood is not None:
        calibrate_ood(val_rows.inputs)
    threshold = choose_threshold(
        val_rows.labels,
        p_val,
        objective=config.threshold.objective,
        cost_ratio=config.threshold.cost_ratio,
    )
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
    )
    return OutcomeModel(classifier, calibrator, threshold, info)
