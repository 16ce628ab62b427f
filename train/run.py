"""The two tracked jobs: ``train`` (held-out fold) and ``evaluate`` (repeated CV).

``train`` fits on every fold but ``data.holdout_fold``, scores the held-out fold, logs
everything to MLflow (config, dataset and fingerprint, git commit, metrics with CIs,
subgroups, plots, dataset card, the pyfunc model) and optionally registers the model.
``evaluate`` runs ``evaluation.folds`` x ``evaluation.repeats`` grouped CV and logs the
same figures for the out-of-fold predictions; it registers nothing.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import mlflow
from transformers import TrainerCallback

from imr_outcome.data.dataset import load_dataset
from imr_outcome.errors import InvalidInputError
from imr_outcome.train.artifact import CalibratedModel
from imr_outcome.train.config import RunConfig, save_config
from imr_outcome.train.evaluate import (
    Evaluation,
    cross_validate,
    evaluate_model,
    holdout_split,
)
from imr_outcome.train.metrics import flatten_metrics
from imr_outcome.train.pipeline import Rows, fit_calibrated, rows_from_dataset
from imr_outcome.train.plots import plot_all
from imr_outcome.train.tracking import (
    Registration,
    log_dataset,
    log_metrics,
    log_model,
    register,
    tracked_run,
)

logger = logging.getLogger(__name__)


class MlflowLossCallback(TrainerCallback):
    """Logs the Trainer's training loss and learning rate to the active MLflow run."""

    def __init__(self, prefix: str = "train") -> None:
        self.prefix = prefix

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
        if not logs or mlflow.active_run() is None:
            return
        scalars = {
            f"{self.prefix}.{k}": float(v)
            for k, v in logs.items()
            if isinstance(v, int | float) and k in ("loss", "learning_rate", "grad_norm")
        }
        if scalars:
            mlflow.log_metrics(scalars, step=int(state.global_step))


@dataclass(frozen=True)
class LoadedData:
    """A dataset split ready for training."""

    split: datasets.Dataset
    rows: Rows
    folds: list[int]
    fingerprint: str
    card_dir: Path


def load_training_data(config: RunConfig) -> LoadedData:
    """Load the configured split of the dataset built by ``imr-outcome data build``.

    Raises:
        InvalidInputError: no dataset, no such split, or no card with a fingerprint.
    """
    dataset_dir = config.data.dataset_dir
    dataset = load_dataset(dataset_dir)
    if config.data.split not in dataset:
        raise InvalidInputError(
            "data.split",
            f"{config.data.split!r} is not in {dataset_dir} (splits: {sorted(dataset)}); "
            "add its sources to `imr-outcome data build`",
        )
    card_path = dataset_dir / "card.json"
    if not card_path.is_file():
        raise InvalidInputError("data.dataset_dir", f"{card_path} is missing; rebuild the dataset")
    split = dataset[config.data.split]
    return LoadedData(
        split=split,
        rows=rows_from_dataset(split, context_columns=config.evaluation.subgroups),
        folds=[int(f) for f in split["fold"]],
        fingerprint=str(json.loads(card_path.read_text())["fingerprint"]),
        card_dir=dataset_dir,
    )


def _log_evaluation(prefix: str, evaluation: Evaluation) -> None:
    log_metrics(flatten_metrics(prefix, evaluation.metrics))
    log_metrics(
        {
            f"{prefix}.n_items": evaluation.n_items,
            f"{prefix}.n_letters": evaluation.n_groups,
            f"{prefix}.n_overturned": evaluation.n_overturned,
        }
    )
    log_metrics(flatten_metrics(f"{prefix}.subgroup", evaluation.subgroups))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        plot_all(evaluation.labels, evaluation.p_overturned, out, prefix=f"{prefix}_")
        (out / f"{prefix}_subgroups.json").write_text(json.dumps(evaluation.subgroups, indent=2))
        mlflow.log_artifacts(str(out), artifact_path="evaluation")


def _log_inputs(config: RunConfig, data: LoadedData) -> None:
    frame = data.split.select_columns(["id", "group_id", "fold", "label"]).to_pandas()
    log_dataset(
        frame,
        name=f"imr-{config.data.split}",
        source=str(config.data.dataset_dir.resolve()),
        fingerprint=data.fingerprint,
    )
    for name in ("card.md", "card.json"):
        if (data.card_dir / name).is_file():
            mlflow.log_artifact(str(data.card_dir / name), artifact_path="dataset")


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` produced."""

    evaluation: Evaluation
    model: CalibratedModel
    model_dir: Path
    model_uri: str
    run_id: str
    registration: Registration | None


def train(config: RunConfig, *, models_dir: Path, register_model: bool) -> TrainResult:
    """Fit on the training folds, evaluate on the held-out fold, log, optionally register.

    Args:
        config: the run config.
        models_dir: where the model directory is written (``<models_dir>/<run_id>``).
        register_model: register the logged model; the first version becomes champion.

    Returns:
        The :class:`TrainResult`.
    """
    data = load_training_data(config)
    train_rows, test_rows = holdout_split(data.rows, data.folds, config.data.holdout_fold)
    with tracked_run(config, "train") as run:
        _log_inputs(config, data)
        model = fit_calibrated(
            config,
            train_rows,
            data_fingerprint=data.fingerprint,
            callbacks=[MlflowLossCallback()],
        )
        evaluation = evaluate_model(config, model, test_rows)
        _log_evaluation("test", evaluation)
        log_metrics({"threshold": model.threshold})
        model_dir = model.save(models_dir / run.info.run_id)
        save_config(config, model_dir / "config.yaml")
        model_uri = log_model(model_dir)
        registration = None
        if register_model:
            registration = register(
                model_uri,
                config.tracking.model_name,
                tags={
                    "data_fingerprint": data.fingerprint,
                    "config": config.name,
                    "trained_at": model.info.created,
                },
            )
        return TrainResult(evaluation, model, model_dir, model_uri, run.info.run_id, registration)


def evaluate(config: RunConfig) -> tuple[Evaluation, str]:
    """Repeated grouped CV of ``config``, logged as an ``evaluate`` run.

    Returns:
        ``(evaluation, run_id)``; see ``cross_validate`` for what the evaluation holds.
    """
    data = load_training_data(config)
    with tracked_run(config, "evaluate") as run:
        _log_inputs(config, data)
        evaluation, per_repeat = cross_validate(
            config, data.rows, data_fingerprint=data.fingerprint
        )
        _log_evaluation("cv", evaluation)
        for repeat, metrics in enumerate(per_repeat):
            log_metrics(flatten_metrics("cv.repeat", metrics), step=repeat)
        if config.evaluation.time_split:
            _log_time_split(config, data)
        return evaluation, run.info.run_id


def _log_time_split(config: RunConfig, data: LoadedData) -> None:
    splits = data.split["time_split"]
    train_idx = [i for i, s in enumerate(splits) if s == "train"]
    test_idx = [i for i, s in enumerate(splits) if s == "test"]
    if not train_idx or not test_idx:
        raise InvalidInputError(
            "evaluation.time_split",
            "the dataset has no time split; rebuild it with --time-split-cutoff",
        )
    model = fit_calibrated(config, data.rows.subset(train_idx), data_fingerprint=data.fingerprint)
    _log_evaluation("time_split", evaluate_model(config, model, data.rows.subset(test_idx)))
