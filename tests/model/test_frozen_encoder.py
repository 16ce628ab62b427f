from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy.special import softmax
from sklearn.exceptions import NotFittedError

from imr_outcome.data.model_input import ModelInput
from imr_outcome.errors import IncompatibleModelError, InvalidInputError, ModelNotFoundError
from imr_outcome.model.frozen_encoder import FrozenEncoderLogReg
from imr_outcome.model.settings import FrozenEncoderConfig, TrainingConfig

IntArray = npt.NDArray[np.int64]


def _toy_set(n: int = 30) -> tuple[list[ModelInput], IntArray]:
    labels = (np.arange(n) % 3 == 0).astype(np.int64)  # imbalanced: a third Overturned
    inputs = [
        ModelInput(
            "Acupuncture x 6",
            f"Visit {i}. "
            + ("Documented functional improvement." if label else "No objective improvement."),
            0,
        )
        for i, label in enumerate(labels)
    ]
    return inputs, labels


def _classifier(tiny_bert: Path, weighted: bool = True) -> FrozenEncoderLogReg:
    model = FrozenEncoderConfig(base_model=str(tiny_bert), max_length=64, stride=16, c=0.5)
    return FrozenEncoderLogReg(model, TrainingConfig(class_weighted_loss=weighted))


def test_fit_separates_the_toy_set_and_logits_are_lr_scores(tiny_bert: Path) -> None:
    inputs, labels = _toy_set()

    classifier = _classifier(tiny_bert).fit(inputs, labels)
    logits = classifier.logits(inputs)

    assert logits.shape == (30, 2)
    assert logits.dtype == np.float64
    np.testing.assert_array_equal(logits[:, 0], 0.0)
    assert ((logits[:, 1] > 0) == labels).mean() >= 0.9
    embeddings = classifier.embed(inputs)
    assert embeddings.shape == (30, 32)
    np.testing.assert_allclose(
        softmax(logits, axis=1), classifier.pipeline.predict_proba(embeddings), atol=1e-9
    )
    assert classifier.pipeline.named_steps["logreg"].C == 0.5
    assert classifier.pipeline.named_steps["logreg"].class_weight == "balanced"


def test_unweighted_training_uses_no_class_weights(tiny_bert: Path) -> None:
    inputs, labels = _toy_set(9)

    classifier = _classifier(tiny_bert, weighted=False).fit(inputs, labels)

    assert classifier.pipeline.named_steps["logreg"].class_weight is None


def test_save_then_load_gives_identical_logits(tiny_bert: Path, tmp_path: Path) -> None:
    inputs, labels = _toy_set(12)
    classifier = _classifier(tiny_bert).fit(inputs, labels)
    classifier.save(tmp_path / "model")

    loaded = FrozenEncoderLogReg.load(tmp_path / "model")

    np.testing.assert_array_equal(loaded.logits(inputs), classifier.logits(inputs))
    settings = json.loads((tmp_path / "model" / "encoder.json").read_text(encoding="utf-8"))
    assert settings["base_model"] == str(tiny_bert)
    assert (settings["max_length"], settings["stride"]) == (64, 16)


def test_load_reports_missing_files_and_bad_settings(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no encoder\.json"):
        FrozenEncoderLogReg.load(tmp_path)

    inputs, labels = _toy_set(6)
    _classifier(tiny_bert).fit(inputs, labels).save(tmp_path / "model")
    (tmp_path / "model" / "encoder.json").write_text('{"format_version": 1}', encoding="utf-8")
    with pytest.raises(IncompatibleModelError, match="invalid settings"):
        FrozenEncoderLogReg.load(tmp_path / "model")


def test_fit_needs_both_classes_and_logits_need_a_fit(tiny_bert: Path) -> None:
    inputs, _ = _toy_set(4)

    with pytest.raises(InvalidInputError, match="both classes"):
        _classifier(tiny_bert).fit(inputs, np.zeros(4, dtype=np.int64))
    with pytest.raises(NotFittedError):
        _classifier(tiny_bert).logits(inputs)
