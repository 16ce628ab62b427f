"""The layout of a saved model directory and what it records about the model.

Layout of a model directory::

    imr_model.json     the saved-model format (:class:`SavedModel`): format version,
                       threshold and :class:`ModelInfo` (kind, labels, split, base model,
                       data fingerprint, config name, created time, decision rule)
    calibrator.joblib  the fitted calibrator (:class:`~imr_outcome.model.calibration.Calibrator`)
    config.yaml        the full run config (a record for people; never read at load)
    classifier/        the classifier's own files (see each kind's save())
    record/            outcome rates and similar past decisions (optional)

The label map, threshold and calibrator travel with the model: inference reads them from
here only (``imr_outcome.serve`` never re-derives them). The model object that reads and
writes a directory is :class:`imr_outcome.model.model.OutcomeModel`.

Format history: 1 kept the calibrator as JSON in ``imr_model.json`` and the scikit-learn
kinds' run-config sections in ``classifier/classifier.json``; 2 pickles the calibrator and
the scikit-learn kinds as estimators. A format-1 transformer or frozen-encoder model still
loads (:func:`imr_outcome.model.model.OutcomeModel.load` converts its temperature or Platt
calibrator); other format-1 models must be retrained.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imr_outcome.errors import IncompatibleModelError, ModelNotFoundError
from imr_outcome.model.defaults import IG_STEPS

ARTIFACT_FILE = "imr_model.json"
CALIBRATOR_FILE = "calibrator.joblib"
#: Bump when the layout of a model directory changes incompatibly.
FORMAT_VERSION = 2
#: What to do with a model this code cannot read.
RETRAIN = "retrain with `imr-outcome train`"


@dataclass(frozen=True)
class ModelInfo:
    """What a model is and what it was trained on.

    Attributes:
        kind: classifier kind (see ``imr_outcome.model.base``).
        labels: label names in label-id order; always :data:`LABELS`.
        split: the source it was trained for (``"dwc"`` or ``"dmhc"``).
        base_model: encoder name for transformer kinds, else ``""``.
        max_length: tokens per window for transformer kinds, else 0.
        data_fingerprint: fingerprint of the dataset it was trained on.
        trained_groups: number of letters/cases it was fitted and calibrated on.
        config_name: the run config's name.
        explainer: the evidence method configured for it.
        created: ISO 8601 UTC time of training.
        precision: the numeric precision it was trained in on its training machine
            (``"fp32"``/``"bf16"``; ``""`` in older models). Inference resolves its own.
        ig_steps: integrated-gradients quadrature points for its evidence.
        decision: the band rule, base rate and abstention thresholds
            (``imr_outcome.model.decision.DecisionRule.to_dict``); ``{}`` in older models.
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
    precision: str = ""
    ig_steps: int = IG_STEPS
    decision: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def now() -> str:
        """The current UTC time, ISO 8601, seconds resolution."""
        return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class SavedModel:
    """The contents of ``imr_model.json``: the saved-model format, not the run config.

    Attributes:
        format_version: :data:`FORMAT_VERSION` when written by this code; 1 for older models.
        threshold: P(Overturned) at or above which the label is Overturned, in [0, 1].
        info: what the model is and what it was trained on.
        calibrator: format 1 only: the calibrator state as JSON (e.g. ``{"method":
            "temperature", "temperature": 1.8}``); None in format 2 (``calibrator.joblib``).
    """

    format_version: int
    threshold: float
    info: ModelInfo
    calibrator: dict[str, Any] | None = None

    def write(self, directory: Path) -> None:
        """Write ``imr_model.json`` into ``directory`` (which must exist)."""
        payload: dict[str, Any] = {
            "format_version": self.format_version,
            "threshold": self.threshold,
            "info": asdict(self.info),
        }
        (directory / ARTIFACT_FILE).write_text(json.dumps(payload, indent=2) + "\n")

    @classmethod
    def read(cls, directory: Path) -> SavedModel:
        """Read ``imr_model.json`` of format 1 or :data:`FORMAT_VERSION`.

        Raises:
            ModelNotFoundError: no ``imr_model.json`` in ``directory``.
            IncompatibleModelError: unreadable JSON, or a format version this code does not
                know (the message names both versions and the fix).
        """
        path = directory / ARTIFACT_FILE
        if not path.is_file():
            raise ModelNotFoundError(f"{directory}: no {ARTIFACT_FILE}; not an imr-outcome model")
        try:
            payload = json.loads(path.read_text())
            version = payload["format_version"]
            info = ModelInfo(**{**payload["info"], "labels": tuple(payload["info"]["labels"])})
            threshold = float(payload["threshold"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IncompatibleModelError(
                f"{directory}: unreadable {ARTIFACT_FILE} ({exc})"
            ) from exc
        if version not in (1, FORMAT_VERSION):
            raise IncompatibleModelError(
                f"{directory}: saved in format {version}, this code reads format 1 and format "
                f"{FORMAT_VERSION}; {RETRAIN} or install the matching imr-outcome version"
            )
        calibrator = payload.get("calibrator") if version == 1 else None
        return cls(int(version), threshold, info, calibrator)
