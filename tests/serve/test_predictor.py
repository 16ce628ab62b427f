"""Predictor: every URI form, exact load errors, probabilities, warnings, evidence hook."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.tracking._model_registry.utils as mlflow_registry_utils
import numpy as np
import pytest

from imr_outcome.data.model_input import ModelInput, build_model_input
from imr_outcome.errors import IncompatibleModelError, InvalidInputError, ModelNotFoundError
from imr_outcome.model import model_uri
from imr_outcome.model.defaults import IG_STEPS
from imr_outcome.model.encoders import encode_windows, load_tokenizer
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.ood import MahalanobisOod
from imr_outcome.model.prediction import EvidenceSpan
from imr_outcome.model.transformer import TransformerClassifier
from imr_outcome.serve.predictor import (
    WARN_DMHC_MODEL_ON_DWC,
    WARN_DWC_MODEL_ON_DMHC,
    WARN_REQUEST_VOCABULARY,
    WARN_SHORT_SUMMARY,
    WARN_SUMMARY_VOCABULARY,
    PredictInput,
    Predictor,
    clinical_terms,
    encoder_ood_warning,
    input_source,
    windows_warning,
)
from imr_outcome.train.run import TrainResult

from dataset_factory import OVERTURNED_CUE, UPHELD_CUE
from model_factory import registered_tfidf_store, write_untrained_transformer

SUMMARY = (
    "The injured worker is a 44 year old male with chronic low back pain radiating to the "
    "left leg after lifting boxes at work. Examination showed lumbar tenderness and a "
    "positive straight leg raise. Treatment to date included medications and a home "
    "exercise program. The physician requested physical therapy for the lumbar spine. "
)
REQUEST = "Physical therapy 6 sessions for the lumbar spine"


@dataclasses.dataclass(frozen=True)
class Store:
    root: Path
    result: TrainResult


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A tfidf model trained and registered (@champion) in a temporary SQLite store."""
    root = tmp_path_factory.mktemp("store")
    with registered_tfidf_store(root) as result:
        yield Store(root, result)


@pytest.fixture(scope="module")
def predictor(store: Store) -> Predictor:
    return Predictor.load("models:/imr-outcome@champion")


def _logged_model_dir(store: Store) -> Path:
    """The logged pyfunc model folder (MLmodel + artifacts/) in the artifact store."""
    (found,) = (store.root / "mlartifacts" / "models").glob("m-*/artifacts")
    return found


# ------------------------------------------------------------------------ URI forms

URI_FORMS: dict[str, Callable[[Store], tuple[str, str, str]]] = {
    "alias": lambda s: ("models:/imr-outcome@champion", "imr-outcome", "1"),
    "version": lambda s: ("models:/imr-outcome/1", "imr-outcome", "1"),
    "run": lambda s: (
        f"runs:/{s.result.run_id}/model",
        f"runs:/{s.result.run_id}/model",
        f"run:{s.result.run_id}",
    ),
    "logged model": lambda s: (
        s.result.model_uri,
        s.result.model_uri,
        f"model:{s.result.model_uri.removeprefix('models:/')}",
    ),
    "model directory": lambda s: (str(s.result.model_dir), str(s.result.model_dir), "local"),
    "pyfunc folder": lambda s: (str(_logged_model_dir(s)), str(_logged_model_dir(s)), "local"),
}


@pytest.mark.parametrize("form", sorted(URI_FORMS))
def test_load_accepts_every_uri_form(store: Store, form: str) -> None:
    uri, name, version = URI_FORMS[form](store)

    loaded = Predictor.load(uri)
    prediction = loaded.predict(REQUEST, SUMMARY + OVERTURNED_CUE, explain=False)

    assert (loaded.model_name, loaded.model_version) == (name, version)
    assert (prediction.model_name, prediction.model_version) == (name, version)
    assert loaded.threshold == store.result.model.threshold
    expected = store.result.model.predict_proba(
        [build_model_input(REQUEST, SUMMARY + OVERTURNED_CUE)]
    )
    assert prediction.p_overturned == pytest.approx(expected[0, 1], abs=1e-12)


def test_a_cache_dir_gets_a_copy_of_only_the_model(store: Store, tmp_path: Path) -> None:
    loaded = Predictor.load("models:/imr-outcome/1", cache_dir=tmp_path / "cache")

    (copied,) = (tmp_path / "cache").rglob("imr_model.json")
    assert loaded.model_version == "1"
    assert loaded.threshold == json.loads(copied.read_text())["threshold"]
    assert not list((tmp_path / "cache").rglob("*.png"))  # no evaluation plots


def _count_mlflow_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URIs for which :func:`resolve` opens an MLflow client from now on."""
    calls: list[str] = []
    real = model_uri._client

    def counted(uri: str) -> Any:
        calls.append(uri)
        return real(uri)

    monkeypatch.setattr(model_uri, "_client", counted)
    return calls


def test_a_resolved_alias_is_remembered_until_the_store_changes(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A copy of the store (artifact locations are absolute), so moving its alias leaves
    # the module's store as it was.
    shutil.copy(store.root / "mlflow.db", tmp_path / "mlflow.db")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    # MLflow downloads models:/ URIs through its process-wide registry URI (the module's
    # store once train() ran); both of its settings are put back after the test.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", tracking)
    monkeypatch.setattr(mlflow_registry_utils, "_registry_uri", tracking)
    client = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    uri = "models:/imr-outcome@champion"
    calls = _count_mlflow_calls(monkeypatch)

    first, again = model_uri.resolve(uri), model_uri.resolve(uri)
    version = client.get_model_version("imr-outcome", "1")
    assert version.source is not None
    client.create_model_version("imr-outcome", version.source, version.run_id)
    client.set_registered_model_alias("imr-outcome", "champion", "2")
    moved = model_uri.resolve(uri)

    assert (first.version, again, calls[:1]) == ("1", first, [uri])  # asked MLflow once
    assert moved.version == "2" and len(calls) == 2


def test_a_cache_that_cannot_be_written_still_resolves(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv(model_uri.CACHE_DIR_ENV, str(blocked))
    calls = _count_mlflow_calls(monkeypatch)

    resolved = [model_uri.resolve("models:/imr-outcome/1") for _ in range(2)]

    assert [r.version for r in resolved] == ["1", "1"]
    assert len(calls) == 2  # nothing remembered, nothing lost


def _run_id(store: Store) -> str:
    return store.result.run_id


NOT_FOUND: dict[str, Callable[[Store, Path], tuple[str, str]]] = {
    "unknown name": lambda s, t: (
        "models:/nope@champion",
        "models:/nope@champion: no registered model named 'nope'; train one with "
        "`imr-outcome train --register` or see `imr-outcome models list`",
    ),
    "unknown alias": lambda s, t: (
        "models:/imr-outcome@staging",
        "models:/imr-outcome@staging: registered model 'imr-outcome' has no alias "
        "'staging' (aliases: ['champion'])",
    ),
    "unknown version": lambda s, t: (
        "models:/imr-outcome/9",
        "models:/imr-outcome/9: registered model 'imr-outcome' has no version 9",
    ),
    "version not a number": lambda s, t: (
        "models:/imr-outcome/latest",
        "models:/imr-outcome/latest: version 'latest' is not a number; use "
        "models:/imr-outcome/<version> or models:/imr-outcome@<alias>",
    ),
    "unknown run": lambda s, t: (
        "runs:/0123abc/model",
        "runs:/0123abc/model: no run with id '0123abc'",
    ),
    "run without that model": lambda s, t: (
        f"runs:/{_run_id(s)}/other",
        f"runs:/{_run_id(s)}/other: run {_run_id(s)} logged no model named 'other'",
    ),
    "missing folder": lambda s, t: (
        str(t / "missing"),
        f"{t / 'missing'}: no such model directory",
    ),
    "folder without a model": lambda s, t: (
        str(t),
        f"{t}: no imr_model.json or MLmodel in {t}; expected a model directory written by "
        "`imr-outcome train` or a logged pyfunc model",
    ),
    "malformed registry uri": lambda s, t: (
        "models:/a/b/c",
        "models:/a/b/c: expected models:/<name>@<alias>, models:/<name>/<version> or "
        "runs:/<run_id>/<path>",
    ),
}


@pytest.mark.parametrize("case", sorted(NOT_FOUND))
def test_a_missing_model_is_named_with_the_reason(store: Store, tmp_path: Path, case: str) -> None:
    uri, message = NOT_FOUND[case](store, tmp_path)

    with pytest.raises(ModelNotFoundError) as caught:
        Predictor.load(uri)

    assert str(caught.value) == message


def test_a_missing_tracking_store_is_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database}")

    with pytest.raises(ModelNotFoundError) as caught:
        Predictor.load("models:/imr-outcome@champion")

    assert str(caught.value) == (
        f"models:/imr-outcome@champion: no tracking store at {database}; run from the "
        "project folder or set MLFLOW_TRACKING_URI"
    )
    assert not database.exists()


def _copy_model(store: Store, tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    copy = Path(shutil.copytree(store.result.model_dir, tmp_path / "model"))
    payload = json.loads((copy / "imr_model.json").read_text())
    edit(payload)
    (copy / "imr_model.json").write_text(json.dumps(payload))
    return copy


def test_another_format_version_is_incompatible(store: Store, tmp_path: Path) -> None:
    copy = _copy_model(store, tmp_path, lambda p: p.update(format_version=99))

    with pytest.raises(IncompatibleModelError) as caught:
        Predictor.load(str(copy))

    assert str(caught.value) == (
        f"{copy}: saved in format 99, this code reads format 1 and format 2; retrain with "
        "`imr-outcome train` or install the matching imr-outcome version"
    )


def test_a_swapped_label_map_is_incompatible(store: Store, tmp_path: Path) -> None:
    copy = _copy_model(store, tmp_path, lambda p: p["info"].update(labels=["Overturned", "Upheld"]))

    with pytest.raises(IncompatibleModelError) as caught:
        Predictor.load(str(copy))

    assert str(caught.value) == (
        f"{copy}: label map ['Overturned', 'Upheld'] differs from ['Upheld', 'Overturned']"
    )


def test_unreadable_classifier_files_are_incompatible(store: Store, tmp_path: Path) -> None:
    copy = _copy_model(store, tmp_path, lambda p: None)
    (copy / "classifier" / "model.joblib").write_bytes(b"not a pickle")

    with pytest.raises(
        IncompatibleModelError,
        match="^" + re.escape(f"{copy}: classifier: cannot unpickle model.joblib ("),
    ):
        Predictor.load(str(copy))


def test_a_pyfunc_model_without_the_artifact_is_incompatible(store: Store, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(_logged_model_dir(store), tmp_path / "pyfunc"))
    mlmodel = (folder / "MLmodel").read_text().replace("imr_model:", "other_model:")
    (folder / "MLmodel").write_text(mlmodel)

    with pytest.raises(IncompatibleModelError) as caught:
        Predictor.load(str(folder))

    assert str(caught.value) == (
        f"{folder}: MLmodel names no python_function artifact 'imr_model'; not an "
        "imr-outcome pyfunc model"
    )


# -------------------------------------------------------------------- probabilities


def test_batch_probabilities_are_the_calibrated_model_s(store: Store, predictor: Predictor) -> None:
    items = [
        PredictInput.of(REQUEST, SUMMARY + OVERTURNED_CUE, {"patient_age": 44}),
        PredictInput.of(REQUEST, SUMMARY + UPHELD_CUE, {"patient_sex": "female"}),
        PredictInput.of("TENS unit", SUMMARY),
    ]

    predictions = predictor.predict_batch(items)

    expected = store.result.model.predict_proba(
        [build_model_input(i.request, i.summary, i.metadata) for i in items],
        [dict(i.metadata) for i in items],
    )
    got = np.array([[p.p_upheld, p.p_overturned] for p in predictions])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)
    assert predictions[0].p_overturned > predictions[1].p_overturned  # the cue is learned
    assert [p.label for p in predictions] == [
        "Overturned" if p.p_overturned >= predictor.threshold else "Upheld" for p in predictions
    ]
    assert all(p.evidence == [] for p in predictions)  # not asked for
    single = predictor.predict(
        REQUEST, SUMMARY + OVERTURNED_CUE, {"patient_age": 44}, explain=False
    )
    assert single == predictions[0]


def test_an_empty_batch_is_empty(predictor: Predictor) -> None:
    assert predictor.predict_batch([]) == []


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("request_", "summary", "metadata", "message"),
    [
        ("  ", "text", None, "request: is empty; give the requested treatment or item"),
        (42, "text", None, "request: expected text, got int"),
        ("MRI", None, None, "summary: expected text, got NoneType"),
        (
            "MRI",
            "text",
            {"reviewer_specialty": "Orthopedics"},
            "metadata: unknown or post-filing field(s) ['reviewer_specialty']; allowed: "
            "['patient_age', 'patient_sex', 'age_range', 'imr_type', 'diagnosis_category', "
            "'diagnosis_subcategory']",
        ),
        (
            "MRI",
            "text",
            {"patient_age": 130},
            "metadata.patient_age: expected an integer 0-120, got 130",
        ),
        (
            "MRI",
            "x" * 21,
            None,
            "summary: 21 characters, more than the limit of 20; shorten the text or raise "
            "the limit (max_chars)",
        ),
    ],
)
def test_invalid_input_names_the_field(
    request_: Any, summary: Any, metadata: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        PredictInput.of(request_, summary, metadata, max_chars=20)

    assert str(caught.value) == message


def test_the_predictor_s_text_limit_applies_to_prebuilt_items(store: Store) -> None:
    strict = Predictor(store.result.model, model_name="m", model_version="1", max_chars=10)
    item = PredictInput.of("Physical therapy x 6")  # valid under the default limit

    with pytest.raises(InvalidInputError) as caught:
        strict.predict_batch([item])

    assert str(caught.value) == (
        "items[0].request: 20 characters, more than the limit of 10; shorten the text or "
        "raise the limit (max_chars)"
    )


# ------------------------------------------------------------------------- warnings


def test_a_full_clinical_input_has_no_warnings(predictor: Predictor) -> None:
    prediction = predictor.predict(REQUEST, SUMMARY, {"patient_age": 44}, explain=False)

    assert prediction.warnings == []


def test_a_short_summary_is_flagged(predictor: Predictor) -> None:
    prediction = predictor.predict(REQUEST, "Chronic low back pain.", explain=False)

    assert prediction.warnings == [WARN_SHORT_SUMMARY]


def test_non_clinical_text_is_flagged(predictor: Predictor) -> None:
    prose = (
        "Please send the quarterly invoice for the office furniture order to the accounts "
        "team before Friday, and copy the regional manager on the thread so that the "
        "payment can be approved in time for the audit next month at headquarters."
    )

    prediction = predictor.predict("Ergonomic desk chair upgrade", prose, explain=False)

    assert prediction.warnings == [WARN_REQUEST_VOCABULARY, WARN_SUMMARY_VOCABULARY]


def test_dmhc_metadata_on_a_dwc_model_is_flagged(predictor: Predictor) -> None:
    assert predictor.model.info.split == "dwc"

    by_metadata = predictor.predict(
        REQUEST, SUMMARY, {"imr_type": "Medical Necessity"}, explain=False
    )
    declared = predictor.predict(REQUEST, SUMMARY, explain=False, source="dmhc")

    assert by_metadata.warnings == [WARN_DWC_MODEL_ON_DMHC]
    assert declared.warnings == [WARN_DWC_MODEL_ON_DMHC]


def test_a_letter_on_a_dmhc_model_is_flagged(store: Store) -> None:
    model = dataclasses.replace(
        store.result.model, info=dataclasses.replace(store.result.model.info, split="dmhc")
    )
    dmhc = Predictor(model, model_name="dmhc-model", model_version="3")

    letter = dmhc.predict(REQUEST, SUMMARY, {"patient_age": 44}, explain=False)
    table_row = dmhc.predict(REQUEST, SUMMARY, {"age_range": "41-50"}, explain=False)

    assert letter.warnings == [WARN_DMHC_MODEL_ON_DWC]
    assert table_row.warnings == []


def test_the_out_of_distribution_hook_adds_its_warning(store: Store) -> None:
    seen: list[ModelInput] = []

    def detector(model_input: ModelInput) -> str | None:
        seen.append(model_input)
        return "far from the training data"

    hooked = Predictor(store.result.model, model_name="m", model_version="1", ood_detector=detector)

    prediction = hooked.predict(REQUEST, SUMMARY, explain=False)

    assert prediction.warnings == ["far from the training data"]
    assert [w.code for w in prediction.warning_details] == ["custom_check"]
    assert seen == [build_model_input(REQUEST, SUMMARY)]


def test_clinical_terms_come_from_the_lexicon_doses_and_endings() -> None:
    assert clinical_terms("Norco 10/325mg #90") == {"norco", "10/325mg", "#90"}
    assert clinical_terms("Left knee arthroscopy with meniscectomy") == {
        "knee",
        "arthroscopy",
        "meniscectomy",
    }
    assert clinical_terms("Quarterly invoice for the furniture order") == set()


def test_input_source_prefers_the_declared_one() -> None:
    assert input_source({"patient_age": 40}, None) == "dwc"
    assert input_source({"age_range": "41-50", "patient_sex": "male"}, None) == "dmhc"
    assert input_source({"patient_sex": "male"}, None) is None
    assert input_source({"patient_age": 40}, "dmhc") == "dmhc"


@pytest.fixture(scope="module", params=["torch", "onnx"])
def transformer_dir(
    tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Path:
    """An untrained tiny-BERT transformer model directory (64-token windows), once
    scoring with torch and once with its ONNX export (``auto`` picks it)."""
    return write_untrained_transformer(
        tiny_bert,
        tmp_path_factory.mktemp("transformer"),
        fingerprint="test",
        backend=request.param,
    )


def test_windows_are_counted_with_the_model_s_tokenizer(
    transformer_dir: Path, tiny_bert: Path
) -> None:
    windowed = Predictor.load(str(transformer_dir))
    long_summary = SUMMARY * 4

    short = windowed.predict(REQUEST, SUMMARY[:80], explain=False)
    long = windowed.predict(REQUEST, long_summary, explain=False)

    windows = encode_windows(
        load_tokenizer(str(tiny_bert), 64), [build_model_input(REQUEST, long_summary)], 64, 16
    )
    assert len(windows) > 2
    assert long.warning_details == [windows_warning(len(windows))]
    assert long.warning_details[0].figures == {"windows": len(windows)}
    assert long.warnings == [long.warning_details[0].message]
    assert short.warnings == [WARN_SHORT_SUMMARY]
    assert long.p_upheld + long.p_overturned == pytest.approx(1.0)


def test_the_encoder_distance_warns_on_text_far_from_the_training_items(
    transformer_dir: Path,
) -> None:
    predictor = Predictor.load(str(transformer_dir))
    classifier = predictor.model.classifier
    assert isinstance(classifier, TransformerClassifier)
    training = [
        build_model_input(f"{REQUEST} x {n} visits", f"{SUMMARY} Visit {n}.") for n in range(12)
    ]
    detector = MahalanobisOod.fit(classifier.item_embeddings(training))
    far_text = "zq " * 60  # no clinical words: far from every training embedding
    inputs = [build_model_input(REQUEST, SUMMARY), build_model_input(REQUEST, far_text)]
    near_d, far_d = detector.distances(classifier.item_embeddings(inputs))
    assert far_d > 2 * near_d
    # 12 training items in 32 dimensions put the 99% quantile anywhere; fix it between.
    classifier.ood = dataclasses.replace(detector, threshold=float(near_d + far_d) / 2)
    before = predictor.predict(REQUEST, SUMMARY, explain=False)
    far = predictor.predict(REQUEST, far_text, explain=False)

    assert "unlike_training_text" not in [w.code for w in before.warning_details]
    assert encoder_ood_warning(far_d, classifier.ood.threshold, 0.99) in far.warning_details
    assert encoder_ood_warning(12.345, 6.0, 0.99).model_dump() == {
        "code": "unlike_training_text",
        "message": "This text reads unlike the IMR letters the model learned from; treat the "
        "estimate as rough.",
        "figures": {"encoder_distance": 12.345, "threshold": 6.0, "quantile": 0.99},
    }
    # The probabilities come from the same forward passes as without the detector.
    classifier.ood = None
    assert predictor.predict(REQUEST, far_text, explain=False).p_overturned == pytest.approx(
        far.p_overturned, abs=1e-9
    )


# ------------------------------------------------------------------------- evidence


def test_evidence_comes_from_the_evidence_module_only_when_asked(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str, int, int]] = []
    span = EvidenceSpan(
        field="request", start=0, end=8, text="Physical", weight=0.5, direction="Overturned"
    )

    def fake_explain(
        model: OutcomeModel,
        model_input: ModelInput,
        request: str,
        summary: str,
        *,
        top_k: int = 5,
        n_steps: int = 32,
        deadline: float | None = None,
    ) -> list[EvidenceSpan]:
        assert model is predictor.model
        assert model_input == build_model_input(request, summary)
        calls.append((request, summary, top_k, n_steps))
        return [span]

    monkeypatch.setattr("imr_outcome.serve.evidence.explain", fake_explain)

    explained = predictor.predict(REQUEST, SUMMARY, top_k=3)
    plain = predictor.predict(REQUEST, SUMMARY, explain=False)
    finer = Predictor(predictor.model, model_name="m", model_version="1", explain_steps=48).predict(
        REQUEST, SUMMARY, top_k=2
    )

    assert explained.evidence == [span] == finer.evidence
    assert plain.evidence == []
    assert calls == [(REQUEST, SUMMARY, 3, IG_STEPS), (REQUEST, SUMMARY, 2, 48)]
    assert explained.p_overturned == plain.p_overturned


def test_explain_steps_must_be_positive(predictor: Predictor) -> None:
    with pytest.raises(InvalidInputError, match="explain_steps: expected at least 1"):
        Predictor(predictor.model, model_name="m", model_version="1", explain_steps=0)


def test_real_evidence_spans_index_the_caller_s_strings(predictor: Predictor) -> None:
    pytest.importorskip("imr_outcome.serve.evidence")
    summary = SUMMARY + OVERTURNED_CUE

    prediction = predictor.predict(REQUEST, summary, top_k=2)

    assert prediction.evidence
    texts = {"request": REQUEST, "summary": summary}
    for span in prediction.evidence:
        assert texts[span.field][span.start : span.end] == span.text
    for direction in ("Overturned", "Upheld"):
        assert sum(span.direction == direction for span in prediction.evidence) <= 2
