"""The saved model: classifier + calibrator + threshold + label map, in one folder.

Layout of a model directory::

    imr_model.json     format version, kind, labels, threshold, calibrator state,
                       split, base model, data fingerprint, config name, created time
    config.yaml        the full run config
    classifier/        the classifier's own files (see each kind's save())

The label map, threshold and calibrator travel with the model: inference reads them from
here only (``imr_outcome.serve`` never re-derives them).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from imr_outcome.data.model_input import ModelInput
from imr_outcome.data.schema import LABELS
from imr_outcome.errors import IncompatibleModelError, ModelNotFoundError
from imr_outcome.train.base import Classifier, classifier_class
from imr_outcome.train.calibration import Calibrator, calibrator_from_dict

ARTIFACT_FILE = "imr_model.json"
#: Bump when the layout of a model directory changes incompatibly.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelInfo:
    """What a model is and what it was trained on.

    Attributes:
        kind: classifier kind (see ``imr_outcome.train.base``).
        labels: label names in label-id order; always :data:`LABELS`.
        split: the source it was trained for (``"dwc"`` or ``"dmhc"``).
        base_model: encoder name for transformer kinds, else ``""``.
        max_length: tokens per window for transformer kinds, else 0.
        data_fingerprint: fingerprint of the dataset it was trained on.
        trained_groups: number of letters/cases it was fitted and calibrated on.
        config_name: the run config's name.
        explainer: the evidence method configured for it.
        created: ISO 8601 UTC time of training.
    """

    kind: str
    labels: tuple[str, ...]
    split: str
    base_model: str
    max_length: int
    data_fingerprint: str
    trained_groups: int
    config_name: str
    explainer: str
    created: str

    @staticmethod
    def now() -> str:
        """The current UTC time, ISO 8601, seconds resolution."""
        return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class CalibratedModel:
    """A classifier with its calibrator and decision threshold.

    Attributes:
        classifier: the fitted classifier (raw logits).
        calibrator: maps logits to calibrated probabilities.
        threshold: P(Overturned) at or above which the label is Overturned, in [0, 1];
            chosen on the validation slice of the training folds.
        info: provenance and settings.
    """

    classifier: Classifier
    calibrator: Calibrator
    threshold: float
    info: ModelInfo

    def predict_proba(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> npt.NDArray[np.float64]:
        """Calibrated probabilities, shape ``(n, 2)`` in :data:`LABELS` order; rows sum to 1."""
        if not inputs:
            return np.zeros((0, 2))
        return self.calibrator.predict_proba(self.classifier.logits(inputs, metadata))

    def predict(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> list[str]:
        """Predicted label names at the saved threshold."""
        p = self.predict_proba(inputs, metadata)[:, 1]
        return [self.info.labels[int(x >= self.threshold)] for x in p]

    def save(self, directory: Path) -> Path:
        """Write the model directory (see the module docstring); returns ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        self.classifier.save(directory / "classifier")
        payload = {
            "format_version": FORMAT_VERSION,
            "threshold": self.threshold,
            "calibrator": self.calibrator.to_dict(),
            "info": asdict(self.info),
        }
        (directory / ARTIFACT_FILE).write_text(json.dumps(payload, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: Path) -> CalibratedModel:
        """Read a model directory written by :meth:`save`.

        Raises:
            ModelNotFoundError: no ``imr_model.json`` in ``directory``.
            IncompatibleModelError: another format version, unknown kind, or a label map
                other than :data:`LABELS`; the message names the directory and the reason.
        """
        path = directory / ARTIFACT_FILE
        if not path.is_file():
            raise ModelNotFoundError(f"{directory}: no {ARTIFACT_FILE}; not an imr-outcome model")
        try:
            payload = json.loads(path.read_text())
            version = payload["format_version"]
            info = ModelInfo(**{**payload["info"], "labels": tuple(payload["info"]["labels"])})
        except (ValueError, KeyError, TypeError) as exc:
            raise IncompatibleModelError(
                f"{directory}: unreadable {ARTIFACT_FILE} ({exc})"
            ) from exc
        if version != FORMAT_VERSION:
            raise IncompatibleModelError(
                f"{directory}: format version {version}, this code reads {FORMAT_VERSION}; "
                "retrain the model or install the matching imr-outcome version"
            )
        if info.labels != LABELS:
            raise IncompatibleModelError(
                f"{directory}: label map {list(info.labels)} differs from {list(LABELS)}"
            )
        try:
            classifier = classifier_class(info.kind).load(directory / "classifier")
        except IncompatibleModelError as exc:
            raise IncompatibleModelError(f"{directory}: {exc}") from exc
        return cls(
            classifier=classifier,
            calibrator=calibrator_from_dict(payload["calibrator"]),
            threshold=float(payload["threshold"]),
            info=info,
        )
