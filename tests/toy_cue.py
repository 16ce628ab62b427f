"""The toy cue task shared by the evidence and faithfulness tests.

Invented, separable items: Overturned summaries say "Functional improvement documented.",
Upheld ones "Without improvement documented." (one word apart, same number of tokens),
after random filler sentences. A model that learns the task must rely on that word, so an
explainer can be checked against it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from imr_outcome.data.model_input import MetadataValue, ModelInput, build_model_input
from imr_outcome.data.schema import LABELS
from imr_outcome.model.artifact import ModelInfo
from imr_outcome.model.base import model_frame
from imr_outcome.model.baselines import TfidfLogReg
from imr_outcome.model.calibration import make_calibrator
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.transformer import TransformerClassifier

from model_factory import fit_toy_transformer

IntArray = npt.NDArray[np.int64]
#: (request, summary, metadata or None), as :func:`imr_outcome.train.faithfulness` takes.
Item = tuple[str, str, dict[str, MetadataValue] | None]

FILLER = [
    "Lumbar pain persists.",
    "Medications include ibuprofen.",
    "Seen in follow-up today.",
    "Gait is normal.",
]
CUE = {1: "Functional improvement documented.", 0: "Without improvement documented."}
REQUEST = "Physical therapy x 12 visits"


def toy_items(
    n: int = 24,
    seed: int = 0,
    n_filler: int = 2,
    metadata: dict[str, MetadataValue] | None = None,
) -> tuple[list[Item], IntArray]:
    """``n`` items alternating Upheld / Overturned (labels 0, 1, 0, ...), seeded filler."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % 2
    items: list[Item] = [
        (REQUEST, " ".join(rng.choice(FILLER, n_filler)) + " " + CUE[int(y)], metadata)
        for y in labels
    ]
    return items, labels


def separable_inputs(n: int = 40, seed: int = 0) -> tuple[list[ModelInput], IntArray]:
    """Invented items easier than the cue task: Overturned summaries end "Documented
    functional improvement.", Upheld ones "No objective improvement." (labels 0, 1, ...)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % 2
    inputs = [
        ModelInput(
            text="Physical therapy x 12 visits",
            text_pair=" ".join(rng.choice(FILLER, 2))
            + (" Documented functional improvement." if label else " No objective improvement."),
            request_offset=0,
        )
        for label in labels
    ]
    return inputs, labels


def toy_inputs(items: list[Item]) -> list[ModelInput]:
    """The model inputs of ``items`` (``build_model_input``)."""
    return [build_model_input(request, summary, metadata) for request, summary, metadata in items]


def toy_frame(items: list[Item]) -> pd.DataFrame:
    """The DataFrame the scikit-learn kinds fit on (:func:`model_frame`) of ``items``."""
    return model_frame(toy_inputs(items), [dict(metadata or {}) for _, _, metadata in items])


def toy_info(kind: str, explainer: str) -> ModelInfo:
    """Provenance of a toy model of ``kind`` explained by ``explainer``."""
    return ModelInfo(
        kind=kind,
        labels=LABELS,
        split="dwc",
        base_model="tiny",
        max_length=64,
        data_fingerprint="toy",
        trained_groups=24,
        config_name="toy",
        explainer=explainer,
        created=ModelInfo.now(),
    )


def wrap_toy(classifier: TransformerClassifier | TfidfLogReg, explainer: str) -> OutcomeModel:
    """``classifier`` with an identity calibrator and threshold 0.5."""
    items, labels = toy_items(4, seed=1)
    calibrator = make_calibrator("none").fit(classifier.logits(toy_inputs(items)), labels)
    return OutcomeModel(classifier, calibrator, 0.5, toy_info(classifier.kind, explainer))


def toy_transformer(tiny_bert: Path) -> TransformerClassifier:
    """The tiny BERT fitted on ``toy_items()`` (one fit per session, see
    :func:`model_factory.fit_toy_transformer`)."""
    items, labels = toy_items()
    return fit_toy_transformer(tiny_bert, toy_inputs(items), labels)
