"""Models for tests: an untrained tiny-BERT model directory, a registered TF-IDF store, and
the tiny BERT fitted on a toy set (cached per session)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import numpy.typing as npt
import pytest

from imr_outcome.data.model_input import ModelInput, build_model_input
from imr_outcome.model.artifact import ModelInfo
from imr_outcome.model.calibration import Calibrator
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.onnx_runtime import PARITY_FILE
from imr_outcome.model.settings import TrainingConfig, TransformerConfig
from imr_outcome.model.transformer import TransformerClassifier
from imr_outcome.train.config import load_config
from imr_outcome.train.fine_tune import TrainableTransformer
from imr_outcome.train.onnx_export import Parity, export_with_parity
from imr_outcome.train.run import TrainResult, train

from dataset_factory import write_dataset

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


#: Invented held-out items for the ONNX parity check of test models.
PARITY_REQUESTS = [
    "Physical therapy 6 sessions for the lumbar spine",
    "MRI of the left knee without contrast",
    "Tramadol 50 mg 60 tablets",
    "Acupuncture 8 visits for neck pain",
]
PARITY_SUMMARY = (
    "The patient is a 52-year-old worker injured lifting boxes. The treating physician "
    "documented persistent pain and limited range of motion despite medication; the "
    "reviewer cited the guidelines on duration and functional improvement. "
)


def parity_items() -> tuple[list[ModelInput], npt.NDArray[np.int64]]:
    """Eight invented items (short and multi-window summaries) with alternating labels."""
    inputs = [
        build_model_input(request, PARITY_SUMMARY * repeat)
        for request in PARITY_REQUESTS
        for repeat in (1, 4)
    ]
    return inputs, np.arange(len(inputs), dtype=np.int64) % 2


def export_test_onnx(
    model_dir: Path, variants: tuple[str, ...] = ("fp32",), *, timed: bool = False
) -> list[Parity]:
    """Export a saved test transformer to ONNX with the parity check on
    :func:`parity_items`; returns the parity of each variant.

    Unless ``timed``, the export's timings are dropped from ``onnx.json``, so ``auto``
    serves the passing variant by the CPU's flags alone: on the tiny model torch and ONNX
    Runtime take about the same time, and a test of a serving path must not depend on
    which won. The choice by timing is tested in ``tests/train/test_onnx_backend.py``.
    """
    inputs, labels = parity_items()
    model = OutcomeModel.load(model_dir, backend="torch")
    parities = export_with_parity(model, model_dir, inputs, labels, variants=variants)  # type: ignore[arg-type]
    if not timed:
        record_path = model_dir / "classifier" / PARITY_FILE
        record = json.loads(record_path.read_text())
        record.pop("timing", None)
        record_path.write_text(json.dumps(record))
    return parities


def save_transformer_model(
    classifier: TransformerClassifier, folder: Path, fingerprint: str = "tiny"
) -> Path:
    """Save ``classifier`` as a model (identity calibrator, threshold 0.5) in
    ``folder/model``; returns that directory."""
    info = ModelInfo(
        kind="transformer",
        labels=("Upheld", "Overturned"),
        split="dwc",
        base_model=classifier.model_config.base_model,
        max_length=classifier.model_config.max_length,
        data_fingerprint=fingerprint,
        trained_groups=0,
        config_name="tiny",
        explainer="integrated_gradients",
        created=ModelInfo.now(),
    )
    model = OutcomeModel(classifier, Calibrator("none"), 0.5, info)
    return model.save(folder / "model")


def write_untrained_transformer(
    tiny_bert: Path, folder: Path, fingerprint: str = "tiny", backend: str = "torch"
) -> Path:
    """Save the tiny BERT as a calibrated transformer model (64-token windows, stride 16,
    identity calibrator, threshold 0.5) under ``folder``; returns the model directory.
    With ``backend="onnx"`` the directory also holds the fp32 ONNX export (parity-checked,
    so ``auto`` loading scores with ONNX Runtime)."""
    classifier_dir = Path(shutil.copytree(tiny_bert, folder / "encoder"))
    settings = {
        "format_version": 1,
        "base_model": str(tiny_bert),
        "max_length": 64,
        "stride": 16,
        "aggregation": "mean",
        "precision": "fp32",
        "logit_offset": 0.0,
    }
    (classifier_dir / "transformer.json").write_text(json.dumps(settings))
    model_dir = save_transformer_model(
        TransformerClassifier.load(classifier_dir), folder, fingerprint
    )
    if backend == "onnx":
        (parity,) = export_test_onnx(model_dir)
        assert parity.passed, parity
    return model_dir


@contextlib.contextmanager
def registered_tfidf_store(root: Path) -> Iterator[TrainResult]:
    """Train the TF-IDF baseline on the invented learnable dataset and register it
    (``imr-outcome`` version 1, @champion) in a SQLite store under ``root``.

    While the context is open the working directory is ``root`` and
    ``MLFLOW_TRACKING_URI`` is ``sqlite:///<root>/mlflow.db``; both are restored on exit
    (artifact locations are absolute, so the store stays loadable through the URI).
    """
    dataset = write_dataset(root / "dataset")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        config = load_config(
            EXPERIMENTS / "tfidf_lr.yaml",
            [f"data.dataset_dir={dataset}", "evaluation.bootstrap=100", "model.min_df=1"],
        )
        result = train(config, models_dir=root / "models", register_model=True)
        while mlflow.active_run() is not None:
            mlflow.end_run()
        yield result


def fit_toy_transformer(
    tiny_bert: Path, inputs: list[ModelInput], labels: npt.NDArray[np.int64]
) -> TransformerClassifier:
    """The tiny BERT fine-tuned until it fits ``inputs`` exactly (20 epochs, lr 5e-3, fp32).

    The fit is saved under ``tiny_bert``'s session temp folder, named by a fingerprint of
    the training data and settings, so test modules training on the same toy set share one
    fit per session and a module training anything else fits its own.

    Raises:
        AssertionError: the fit does not reproduce every training label.
    """
    training = TrainingConfig(
        epochs=20,
        batch_size=8,
        learning_rate=5e-3,
        windows_per_item=None,
        precision="fp32",
        torch_threads=2,
    )
    config = TransformerConfig(base_model=str(tiny_bert), max_length=64, stride=16)
    recipe = [
        [(i.text, i.text_pair, i.request_offset) for i in inputs],
        labels.tolist(),
        config.model_dump(mode="json"),
        training.model_dump(mode="json"),
    ]
    digest = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]
    saved = tiny_bert.parent / f"toy-transformer-{digest}"
    if (saved / "transformer.json").is_file():
        return TransformerClassifier.load(saved)
    classifier = TrainableTransformer(config, training).fit(inputs, labels)
    logits = classifier.logits(inputs)
    learned = ((logits[:, 1] > logits[:, 0]) == labels).mean()
    assert learned == 1.0, f"the toy transformer did not learn the cue (accuracy {learned})"
    classifier.save(saved)
    return classifier
