"""The layout of a saved model directory and what it records about the model.

Layout of a model directory::

    imr_model.json     format version, kind, labels, threshold, calibrator state,
                       split, base model, data fingerprint, config name, created time
    config.yaml        the full run config
    classifier/        the classifier's own files (see each kind's save())

The label map, threshold and calibrator travel with the model: inference reads them from
here only (``imr_outcome.serve`` never re-derives them). The model object that reads and
writes a directory is :class:`imr_outcome.model.model.OutcomeModel`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from imr_outcome.model.defaults import IG_STEPS

ARTIFACT_FILE = "imr_model.json"
#: Bump when the layout of a model directory changes incompatibly.
FORMAT_VERSION = 1


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
