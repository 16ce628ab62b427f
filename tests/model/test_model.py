"""OutcomeModel: one scoring pass (probabilities, labels, windows, OOD), the label at the
threshold in one place, and explanations a caller can bound in time."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imr_outcome.data.model_input import build_model_input
from imr_outcome.errors import DeadlineExceededError, IncompatibleModelError
from imr_outcome.model.baselines import TfidfLogReg
from imr_outcome.model.encoders import encode_windows
from imr_outcome.model.inputs import PredictInput
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.record import RecordItem, build_record
from imr_outcome.model.scoring import predict_items

from model_factory import write_untrained_transformer
from toy_cue import (
    CUE,
    FILLER,
    REQUEST,
    toy_frame,
    toy_inputs,
    toy_items,
    toy_transformer,
    wrap_toy,
)


def _tfidf_model(threshold: float = 0.5) -> OutcomeModel:
    items, labels = toy_items()
    classifier = TfidfLogReg(ngram_max=1, min_df=1).fit(toy_frame(items), labels)
    return dataclasses.replace(wrap_toy(classifier, "tfidf_coefficients"), threshold=threshold)


def test_score_is_one_pass_of_probabilities_labels_and_windows() -> None:
    model = _tfidf_model()
    inputs = toy_inputs(toy_items(6, seed=3)[0])

    scores = model.score(inputs)

    np.testing.assert_allclose(scores.proba, model.predict_proba(inputs))
    assert scores.labels == model.predict(inputs)
    assert scores.labels == [
        "Overturned" if p >= model.threshold else "Upheld" for p in scores.proba[:, 1]
    ]
    assert scores.windows.tolist() == [1] * 6
    assert scores.ood_distance is None


def test_the_label_at_the_threshold_itself_is_overturned() -> None:
    model = _tfidf_model(threshold=0.25)

    assert model.labels_at([0.2499, 0.25, 0.9]) == ["Upheld", "Overturned", "Overturned"]


def test_the_label_rule_is_p_at_or_above_the_threshold_at_ties_and_bounds() -> None:
    rng = np.random.default_rng(0)
    for threshold in (0.0, 0.25, 0.5, 1.0):
        model = _tfidf_model(threshold=threshold)
        ties = [threshold, np.nextafter(threshold, 0.0), np.nextafter(threshold, 1.0)]
        p = np.clip(np.concatenate([rng.random(200), ties, [0.0, 1.0]]), 0.0, 1.0)

        expected = ["Overturned" if x >= threshold else "Upheld" for x in p]
        assert model.labels_at(p) == expected
    assert _tfidf_model().labels_at([]) == []


def test_score_of_nothing_is_empty() -> None:
    scores = _tfidf_model().score([])

    assert scores.proba.shape == (0, 2)
    assert scores.labels == []
    assert scores.windows.shape == (0,)


def test_transformer_windows_per_item_match_the_tokenizer(tiny_bert: Path) -> None:
    classifier = toy_transformer(tiny_bert)
    model = wrap_toy(classifier, "integrated_gradients")
    long_summary = " ".join(FILLER * 12) + " " + CUE[1]
    inputs = [build_model_input(REQUEST, CUE[0]), build_model_input(REQUEST, long_summary)]

    scores = model.score(inputs)

    windows = encode_windows(classifier.tokenizer, inputs, 64, 16)
    expected = np.bincount(windows.item_index, minlength=2).tolist()
    assert scores.windows.tolist() == expected
    assert expected[0] == 1 and expected[1] > 1
    np.testing.assert_allclose(scores.proba, model.predict_proba(inputs), atol=1e-6)


def test_explain_stops_at_a_passed_deadline(tiny_bert: Path) -> None:
    model = wrap_toy(toy_transformer(tiny_bert), "integrated_gradients")
    model_input = build_model_input(REQUEST, CUE[1])

    with pytest.raises(DeadlineExceededError, match="integrated gradients"):
        model.explain(model_input, REQUEST, CUE[1], n_steps=4, deadline=time.monotonic())

    spans = model.explain(model_input, REQUEST, CUE[1], n_steps=4, deadline=time.monotonic() + 600)
    assert spans


def _as_format_1(directory: Path, calibrator: dict[str, object]) -> None:
    """Rewrite a saved model as format 1 wrote it: the calibrator as JSON in imr_model.json."""
    payload = json.loads((directory / "imr_model.json").read_text())
    payload.update(format_version=1, calibrator=calibrator)
    (directory / "imr_model.json").write_text(json.dumps(payload))
    (directory / "calibrator.joblib").unlink()


@pytest.mark.parametrize(
    ("calibrator", "slope", "intercept"),
    [
        ({"method": "temperature", "temperature": 2.0}, 0.5, 0.0),
        ({"method": "platt", "slope": 1.5, "intercept": -0.25}, 1.5, -0.25),
        ({"method": "none"}, 1.0, 0.0),
    ],
)
def test_a_format_1_transformer_model_loads_with_its_calibrator(
    tiny_bert: Path, tmp_path: Path, calibrator: dict[str, object], slope: float, intercept: float
) -> None:
    directory = write_untrained_transformer(tiny_bert, tmp_path)
    _as_format_1(directory, calibrator)
    inputs = toy_inputs(toy_items(4, seed=2)[0])

    model = OutcomeModel.load(directory, backend="torch")

    logits = model.classifier.logits(inputs)
    expected = 1 / (1 + np.exp(-(slope * (logits[:, 1] - logits[:, 0]) + intercept)))
    np.testing.assert_allclose(model.predict_proba(inputs)[:, 1], expected, rtol=1e-9)


def test_a_format_1_tfidf_model_fails_naming_both_formats_and_the_fix(tmp_path: Path) -> None:
    directory = _tfidf_model().save(tmp_path / "model")
    _as_format_1(directory, {"method": "platt", "slope": 1.0, "intercept": 0.0})

    with pytest.raises(IncompatibleModelError) as caught:
        OutcomeModel.load(directory)

    assert str(caught.value) == (
        f"{directory}: a tfidf_lr model with a platt calibrator saved in format 1, this code "
        "reads format 2 (format 1 only for transformer and frozen_encoder_lr models "
        "calibrated by none, temperature or platt); retrain with `imr-outcome train`"
    )


def test_a_saved_model_round_trips_its_calibrated_probabilities(tmp_path: Path) -> None:
    model = _tfidf_model()
    inputs = toy_inputs(toy_items(6, seed=3)[0])

    loaded = OutcomeModel.load(model.save(tmp_path / "model"))

    np.testing.assert_array_equal(loaded.predict_proba(inputs), model.predict_proba(inputs))
    assert json.loads((tmp_path / "model" / "imr_model.json").read_text())["format_version"] == 2


def test_an_encoder_record_reuses_the_scoring_pass(
    tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    classifier = toy_transformer(tiny_bert)
    model = wrap_toy(classifier, "integrated_gradients")
    items, labels = toy_items(12, seed=5)
    model.record = build_record(
        [
            RecordItem(f"L{i}#1", f"L{i}", f"L{i}", item[0], int(label))
            for i, (item, label) in enumerate(zip(items, labels, strict=True))
        ],
        toy_inputs(items),
        source_name="dwc",
        embed=classifier.item_embeddings,
    )
    asked = toy_items(4, seed=9)[0]
    expected = model.record.lookup(
        toy_inputs(asked), classifier.item_embeddings(toy_inputs(asked)), k=3
    )
    passes: list[int] = []
    forward = classifier._window_outputs

    def counted(*args: Any, **kwargs: Any) -> Any:
        passes.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(classifier, "_window_outputs", counted)

    scored = predict_items(model, [PredictInput(request=r, summary=s) for r, s, _ in asked])

    assert len(passes) == 1
    assert [p.similar_ids for p, _ in scored] == [
        [d.item_id for d in found.similar] for found in expected
    ]
    assert all(len(p.similar_ids) == 3 for p, _ in scored)
