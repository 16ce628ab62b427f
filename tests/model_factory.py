"""An untrained tiny-BERT transformer model directory, for tests of loading and serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from imr_outcome.train.artifact import CalibratedModel, ModelInfo
from imr_outcome.train.calibration import IdentityCalibrator
from imr_outcome.train.transformer import TransformerClassifier


def write_untrained_transformer(tiny_bert: Path, folder: Path, fingerprint: str = "tiny") -> Path:
    """Save the tiny BERT as a calibrated transformer model (64-token windows, stride 16,
    identity calibrator, threshold 0.5) under ``folder``; returns the model directory."""
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
    info = ModelInfo(
        kind="transformer",
        labels=("Upheld", "Overturned"),
        split="dwc",
        base_model=str(tiny_bert),
        max_length=64,
        data_fingerprint=fingerprint,
        trained_groups=0,
        config_name="tiny",
        explainer="integrated_gradients",
        created=ModelInfo.now(),
    )
    model = CalibratedModel(
        TransformerClassifier.load(classifier_dir), IdentityCalibrator(), 0.5, info
    )
    return model.save(folder / "model")
