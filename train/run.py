"""The two tracked jobs: ``train`` (held-out fold) and ``evaluate`` (repeated CV).

``train`` fits on every fold but ``data.holdout_fold``, scores the held-out fold, logs
everything to MLflow (config, dataset and fingerprint, git commit, metrics with CIs,
subgroups, plots, dataset card, the pyfunc model) and optionally registers the model.
``evaluate`` runs ``evaluation.folds`` x ``evaluation.repeats`` grouped CV and logs the
same figures for the out-of-fold predictions; it registers nothing.

Under ``torchrun``/``accelerate launch`` (:mod:`imr_outcome.train.distributed`), rank 0
runs :func:`train` and every other rank :func:`train_worker`, which joins the fine-tuning
and then waits for rank 0; ``evaluate`` runs in one process only.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import mlflow
import numpy as np
from transformers import TrainerCallback

if TYPE_CHECKING:
    from imr_outcome.train.faithfulness import FaithfulnessReport

from imr_outcome.data.dataset import load_dataset
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.hardware import machine_precision
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.record import Record, record_items
from imr_outcome.model.settings import WindowedConfig
from imr_outcome.train.config import RunConfig, save_config
from imr_outcome.train.distributed import (
    finish,
    finish_group,
    is_main_process,
    rank,
    world_size,
)
from imr_outcome.train.evaluate import (
    Evaluation,
    cross_validate,
    evaluate_model,
    holdout_split,
)
from imr_outcome.train.metrics import flatten_metrics
from imr_outcome.train.pipeline import Rows, fit_calibrated, rows_from_dataset
from imr_outcome.train.plots import plot_all
from imr_outcome.train.retrieval_eval import FoldRetrieval, RetrievalReport, record_for_model
from imr_outcome.train.tracking import (
    Registration,
    git_commit,
    log_dataset,
    log_metrics,
    log_model,
    register,
    tracked_run,
)

logger = logging.getLogger(__name__)


class MlflowLossCallback(TrainerCallback):
    """Logs the Trainer's numeric logs (loss, learning rate, gradient norm, and at the end
    the mean training loss and runtime) to the active MLflow run as ``train.<name>``.

    At the start of training it also logs, as ``resolved.*`` params, the batch geometry the
    Trainer actually runs with: ``world_size`` (processes), ``per_device_batch_size``,
    ``gradient_accumulation_steps``, ``effective_batch_size`` (their product: windows per
    optimizer step), ``learning_rate`` (peak) and ``ddp_backend`` (``none`` in one process).
    """

    def __init__(self, prefix: str = "train") -> None:
        self.prefix = prefix

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if mlflow.active_run() is None:
            return
        import torch.distributed as dist

        backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else None
        processes = int(args.world_size)
        per_device = int(args.per_device_train_batch_size)
        accumulation = int(args.gradient_accumulation_steps)
        mlflow.log_params(
            {
                "resolved.world_size": processes,
                "resolved.per_device_batch_size": per_device,
                "resolved.gradient_accumulation_steps": accumulation,
                "resolved.effective_batch_size": processes * per_device * accumulation,
                "resolved.learning_rate": float(args.learning_rate),
                "resolved.ddp_backend": str(backend or "none"),
            }
        )

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
        if not logs or mlflow.active_run() is None:
            return
        scalars = {
            f"{self.prefix}.{k.removeprefix('train_')}": float(v)
            for k, v in logs.items()
            if isinstance(v, int | float)
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
        rows=rows_from_dataset(split, context_columns=[*config.evaluation.subgroups, "group_id"]),
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
    log_metrics({f"{prefix}.{name}": value for name, value in evaluation.figures().items()})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        plot_all(evaluation.labels, evaluation.p_overturned, out, prefix=f"{prefix}_")
        (out / f"{prefix}_subgroups.json").write_text(json.dumps(evaluation.subgroups, indent=2))
        mlflow.log_artifacts(str(out), artifact_path="evaluation")


def log_inputs(
    config: RunConfig, split: datasets.Dataset, dataset_dir: Path, fingerprint: str
) -> None:
    """Log the training split (ids, letters, folds, labels) and the dataset card, and the
    precision this machine resolves ``training.precision`` to (``resolved.precision``)."""
    frame = split.select_columns(["id", "group_id", "fold", "label"]).to_pandas()
    log_dataset(
        frame,
        name=f"imr-{config.data.split}",
        source=str(dataset_dir.resolve()),
        fingerprint=fingerprint,
    )
    for name in ("card.md", "card.json"):
        if (dataset_dir / name).is_file():
            mlflow.log_artifact(str(dataset_dir / name), artifact_path="dataset")
    mlflow.log_param("resolved.precision", machine_precision(config.training.precision))


def fit_and_log(
    config: RunConfig,
    rows: Rows,
    *,
    fingerprint: str,
    callbacks: Sequence[TrainerCallback] = (),
) -> OutcomeModel:
    """:func:`fit_calibrated` with the training loss logged to the active MLflow run;
    ``callbacks`` (e.g. the CLI's progress bar) are handed to the Trainer as well."""
    return fit_calibrated(
        config,
        rows,
        data_fingerprint=fingerprint,
        callbacks=[MlflowLossCallback(), *callbacks],
    )


def save_and_log(
    model: OutcomeModel,
    config: RunConfig,
    models_dir: Path,
    run_id: str,
    parity_rows: Sequence[Rows] = (),
    record: Record | None = None,
) -> tuple[Path, str]:
    """Save ``model`` and its config under ``models_dir/run_id`` and log it as the run's
    pyfunc model; returns the model directory and the logged model's URI. With
    ``parity_rows`` a transformer is also exported to ONNX and parity-checked on their
    items in order (:func:`~imr_outcome.train.onnx_export.export_for_registration`); a
    ``record`` (rates and similar past decisions) is saved in ``record/``."""
    if record is not None:
        model.record = record
    model_dir = model.save(models_dir / run_id)
    save_config(config, model_dir / "config.yaml")
    if parity_rows:
        from imr_outcome.train.onnx_export import export_for_registration

        inputs = [item for rows in parity_rows for item in rows.inputs]
        labels = np.concatenate([rows.labels for rows in parity_rows])
        export_for_registration(model, model_dir, inputs, labels)
    return model_dir, log_model(model_dir)


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` produced."""

    evaluation: Evaluation
    model: OutcomeModel
    model_dir: Path
    model_uri: str
    run_id: str
    registration: Registration | None


def train(
    config: RunConfig,
    *,
    models_dir: Path,
    register_model: bool,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainResult:
    """Fit on the training folds, evaluate on the held-out fold, log, optionally register.

    In a data-parallel launch this is rank 0's part (the other ranks run
    :func:`train_worker`): the fine-tuning is shared, the rest happens here only.

    Args:
        config: the run config.
        models_dir: where the model directory is written (``<models_dir>/<run_id>``).
        register_model: register the logged model; the first version becomes champion.
        callbacks: extra Trainer callbacks for fine-tuned kinds (the CLI's progress bar).

    Returns:
        The :class:`TrainResult`.

    Raises:
        RuntimeError: called on a rank other than 0.
    """
    if not is_main_process():
        raise RuntimeError(
            f"train() runs on rank 0 only (this is rank {rank()}); call train_worker()"
        )
    data = load_training_data(config)
    train_rows, test_rows = holdout_split(data.rows, data.folds, config.data.holdout_fold)
    with tracked_run(config, "train") as run:
        log_inputs(config, data.split, data.card_dir, data.fingerprint)
        model = fit_and_log(config, train_rows, fingerprint=data.fingerprint, callbacks=callbacks)
        done = finish_group()
        evaluation = evaluate_model(config, model, test_rows)
        _log_evaluation("test", evaluation)
        log_metrics({"threshold": model.threshold})
        train_ids = set(train_rows.ids)
        items = [item for item in record_items(data.split) if item.item_id in train_ids]
        by_id = dict(zip(data.rows.ids, data.rows.inputs, strict=True))
        record = record_for_model(model, items, [by_id[item.item_id] for item in items])
        model_dir, model_uri = save_and_log(
            model,
            config,
            models_dir,
            run.info.run_id,
            parity_rows=(test_rows, train_rows),
            record=record,
        )
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
        result = TrainResult(evaluation, model, model_dir, model_uri, run.info.run_id, registration)
    finish(done)
    return result


def train_worker(config: RunConfig) -> None:
    """A non-zero rank's part of :func:`train` in a data-parallel launch.

    It loads the same data and fits the same calibrated model as rank 0 (the fine-tuning
    is one DDP job across the ranks; the calibration, threshold and OOD fit that follow
    are the same computation on the same network, so they agree with rank 0's), then
    waits for rank 0 to finish evaluating, logging and registering. Nothing is tracked
    or written here.

    Args:
        config: the run config (the same as rank 0's).
    """
    data = load_training_data(config)
    train_rows, _ = holdout_split(data.rows, data.folds, config.data.holdout_fold)
    fit_calibrated(config, train_rows, data_fingerprint=data.fingerprint)
    finish(finish_group())


@dataclass(frozen=True)
class EvaluateResult:
    """What ``evaluate`` produced: CV figures, optional time-split figures, the run id."""

    cv: Evaluation
    time_split: Evaluation | None
    run_id: str
    faithfulness: FaithfulnessReport | None = None
    retrieval: RetrievalReport | None = None
    #: The commit checked out when the evaluation started (the code it ran), not when the
    #: report is written: a run takes minutes to hours.
    git_commit: str = "unknown"


def evaluate(config: RunConfig) -> EvaluateResult:
    """Repeated grouped CV of ``config`` (and the time split if configured), logged as an
    ``evaluate`` run. Nothing is registered.

    With ``evaluation.faithfulness_items`` > 0 (and an explainer), each fold model of the
    first repeat also has its explainer's ERASER faithfulness measured on that many of
    its held-out items (:mod:`imr_outcome.train.faithfulness`); the pooled figures are
    logged as ``faithfulness.*`` metrics. Every fold model of the first repeat also runs
    the similar-decisions check (:mod:`imr_outcome.train.retrieval_eval`), logged as
    ``retrieval.*``.
    """
    if world_size() > 1:
        raise InvalidInputError(
            "evaluate",
            f"runs in one process, found a launch of {world_size()}; run `imr-outcome "
            "evaluate` without torchrun/accelerate launch (only `train` is data-parallel)",
        )
    started_at = git_commit()
    data = load_training_data(config)
    reports: list[FaithfulnessReport] = []

    def measure_faithfulness(repeat: int, fold: int, model: OutcomeModel, rows: Rows) -> None:
        from imr_outcome.train.faithfulness import faithfulness, items_of

        if repeat > 0:
            return
        seed = config.training.seed + fold
        items = items_of(rows, config.evaluation.faithfulness_items, seed)
        steps = config.ig_steps
        reports.append(faithfulness(model, items, seed=seed, n_steps=steps))

    wants_faithfulness = config.evaluation.faithfulness_items > 0 and config.explainer != "none"
    retrieval = FoldRetrieval(record_items(data.split), data.rows.ids, data.rows.inputs)

    def on_fold_model(repeat: int, fold: int, model: OutcomeModel, rows: Rows) -> None:
        retrieval(repeat, fold, model, rows)
        if wants_faithfulness:
            measure_faithfulness(repeat, fold, model, rows)

    with tracked_run(config, "evaluate") as run:
        log_inputs(config, data.split, data.card_dir, data.fingerprint)
        evaluation, per_repeat = cross_validate(
            config, data.rows, data_fingerprint=data.fingerprint, on_fold_model=on_fold_model
        )
        if retrieval.report is not None:
            log_metrics(retrieval.report.figures())
        _log_evaluation("cv", evaluation)
        for repeat, metrics in enumerate(per_repeat):
            log_metrics(flatten_metrics("cv.repeat", metrics), step=repeat)
        faithful = _log_faithfulness(reports) if reports else None
        time_split = _time_split(config, data) if config.evaluation.time_split else None
        if time_split is not None:
            _log_evaluation("time_split", time_split)
        return EvaluateResult(
            evaluation, time_split, run.info.run_id, faithful, retrieval.report, started_at
        )


def _log_faithfulness(reports: list[FaithfulnessReport]) -> FaithfulnessReport:
    from imr_outcome.train.faithfulness import pooled

    report = pooled(reports)
    log_metrics(
        {f"faithfulness.{name}": value for name, value in faithfulness_figures(report).items()}
    )
    return report


def faithfulness_figures(report: FaithfulnessReport) -> dict[str, float]:
    """The report's numbers by name (``ratio``: comprehensiveness over its random baseline)."""
    return {
        "comprehensiveness": report.comprehensiveness,
        "sufficiency": report.sufficiency,
        "random_comprehensiveness": report.random_comprehensiveness,
        "random_sufficiency": report.random_sufficiency,
        "ratio": report.ratio,
        "n_items": float(report.n_items),
    }


def _time_split(config: RunConfig, data: LoadedData) -> Evaluation:
    """Train on the dataset's time-split "train" rows, score its "test" rows."""
    splits = data.split["time_split"]
    train_idx = [i for i, s in enumerate(splits) if s == "train"]
    test_idx = [i for i, s in enumerate(splits) if s == "test"]
    if not train_idx or not test_idx:
        raise InvalidInputError(
            "evaluation.time_split",
            "the dataset has no time split for this source; rebuild it with "
            f"--time-split-cutoff {config.data.split}=YYYY-MM-DD",
        )
    model = fit_calibrated(config, data.rows.subset(train_idx), data_fingerprint=data.fingerprint)
    return evaluate_model(config, model, data.rows.subset(test_idx))


def _figures(evaluation: Evaluation) -> dict[str, object]:
    m = evaluation.metrics
    n = m["tn"][0] + m["fp"][0] + m["fn"][0] + m["tp"][0]
    return {
        "n_items": evaluation.n_items,
        "n_letters": evaluation.n_groups,
        "n_overturned": evaluation.n_overturned,
        "metrics": {name: list(interval) for name, interval in m.items()},
        "accuracy": (m["tn"][0] + m["tp"][0]) / n if n else None,
        "invariance": evaluation.invariance,
        "bands": evaluation.bands,
        "within_letter": evaluation.within_letter,
    }


def write_report(
    path: Path, config: RunConfig, result: EvaluateResult, wall_seconds: float
) -> None:
    """Write an evaluation's figures as JSON (no case text): what ``cv_table.py`` reads.

    Args:
        path: the JSON file to write (parent folders created).
        config: the evaluated run config.
        result: the evaluation.
        wall_seconds: wall time of the whole evaluation, in seconds.
    """
    payload = {
        "config": config.name,
        "kind": config.model.kind,
        "base_model": (
            config.model.base_model if isinstance(config.model, WindowedConfig) else None
        ),
        "split": config.data.split,
        "folds": config.evaluation.folds,
        "repeats": config.evaluation.repeats,
        "cv": _figures(result.cv),
        "time_split": _figures(result.time_split) if result.time_split else None,
        "faithfulness": (
            faithfulness_figures(result.faithfulness) if result.faithfulness else None
        ),
        "retrieval": result.retrieval.figures() if result.retrieval else None,
        "mlflow_run_id": result.run_id,
        "git_commit": result.git_commit,
        "wall_seconds": round(wall_seconds, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    # Out-of-fold predictions (ids, letters, labels, P) for paired comparisons in
    # experiments/cv_table.py; beside the dataset, never committed (ids index real letters).
    oof = config.data.dataset_dir.parent / "oof" / f"{config.name}.json"
    oof.parent.mkdir(parents=True, exist_ok=True)
    cv = result.cv
    oof.write_text(
        json.dumps(
            {
                "ids": cv.ids,
                "groups": cv.groups,
                "labels": [int(y) for y in cv.labels],
                "p_overturned": [float(p) for p in cv.p_overturned],
            }
        ),
        encoding="utf-8",
    )
