"""The HTTP API with FastAPI's TestClient: every endpoint and every class of bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from imr_outcome.cli import app as cli_app
from imr_outcome.data.letters import parse_letter_file
from imr_outcome.data.model_input import MetadataValue, build_model_input
from imr_outcome.errors import ModelNotFoundError
from imr_outcome.model.model import CalibratedModel
from imr_outcome.model.prediction import Prediction
from imr_outcome.model.warnings import WARN_SHORT_SUMMARY, WARN_SUMMARY_VOCABULARY
from imr_outcome.serve.api import STATIC_DIR, create_app
from imr_outcome.serve.api_limits import InFlightGate, Saturated, ServeSettings
from imr_outcome.serve.predictor import PredictInput, Predictor
from imr_outcome.train.run import TrainResult

from conftest import LETTER_FIXTURES
from dataset_factory import OVERTURNED_CUE
from model_factory import registered_tfidf_store, write_untrained_transformer
from pdf_factory import make_letter_pdf

SUMMARY = (
    "The injured worker is a 44 year old male with chronic low back pain radiating to the "
    "left leg after lifting boxes at work. Examination showed lumbar tenderness and a "
    "positive straight leg raise. Treatment to date included medications and a home "
    "exercise program. The physician requested physical therapy for the lumbar spine. "
)
REQUEST = "Physical therapy 6 sessions for the lumbar spine"
LETTER = LETTER_FIXTURES / "mixed_multi.txt"
EXPECTED = json.loads((LETTER_FIXTURES / "EXPECTED.json").read_text(encoding="utf-8"))
#: Small limits, so that every limit is cheap to cross.
SETTINGS = ServeSettings(
    model_uri="models:/imr-outcome@champion",
    max_batch_items=4,
    max_chars=3000,
    max_upload_bytes=200_000,
)


@dataclasses.dataclass(frozen=True)
class ServedStore:
    """A temporary SQLite tracking store holding ``imr-outcome`` version 1 @champion.

    Attributes:
        tracking_uri: the store (set it as ``MLFLOW_TRACKING_URI`` to load from it).
        result: the training result (``model_dir`` is the local model directory).
    """

    tracking_uri: str
    result: TrainResult


@pytest.fixture(scope="module")
def served_store(tmp_path_factory: pytest.TempPathFactory) -> ServedStore:
    """A tf-idf model trained on the learnable invented dataset and registered @champion.

    The working directory and environment are restored after training; artifact
    locations are absolute, so loading needs only ``MLFLOW_TRACKING_URI``.
    """
    root = tmp_path_factory.mktemp("served-store")
    with registered_tfidf_store(root) as result:
        pass
    return ServedStore(f"sqlite:///{root / 'mlflow.db'}", result)


def _wait_ready(client: TestClient, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.02)


@pytest.fixture(scope="module")
def client(served_store: ServedStore) -> Iterator[TestClient]:
    """The app serving the registered tf-idf model, started and ready."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", served_store.tracking_uri)
        with TestClient(create_app(SETTINGS)) as test_client:
            _wait_ready(test_client)
            yield test_client


@pytest.fixture(scope="module")
def model(served_store: ServedStore) -> CalibratedModel:
    return served_store.result.model


def _p_overturned(
    model: CalibratedModel,
    request: str,
    summary: str,
    metadata: dict[str, MetadataValue] | None = None,
) -> float:
    meta = {k: v for k, v in (metadata or {}).items() if v is not None}
    return float(model.predict_proba([build_model_input(request, summary, meta)], [meta])[0, 1])


def _error(response: Any, status: int) -> tuple[str, str]:
    """The (field, message) of a single-error response, after checking the status."""
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    (item,) = response.json()["detail"]
    return str(item["field"]), str(item["message"])


# -------------------------------------------------------------------------- health


def test_health_is_ok_and_ready_after_the_model_loaded(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "detail": None}
    assert client.get("/readyz").json() == {"status": "ok", "detail": None}


def test_not_ready_while_loading_and_503_with_retry_after(
    served_store: ServedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    loaded = Predictor.load(str(served_store.result.model_dir))

    def slow_loader(settings: ServeSettings) -> Predictor:
        release.wait(30)
        return loaded

    with TestClient(create_app(SETTINGS, loader=slow_loader)) as client:
        health = client.get("/healthz")
        ready = client.get("/readyz")
        predict = client.post("/v1/predict", json={"request": REQUEST, "summary": SUMMARY})
        release.set()
        _wait_ready(client)
        after = client.post("/v1/predict", json={"request": REQUEST, "summary": SUMMARY})

    assert health.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["status"] == "loading"
    assert ready.headers["Retry-After"] == "1"
    field, message = _error(predict, 503)
    assert (field, predict.headers["Retry-After"]) == ("model", "1")
    assert "loading the model models:/imr-outcome@champion" in message
    assert after.status_code == 200


def test_a_failed_load_is_reported_and_stops_the_server(tmp_path: Path) -> None:
    stopped: list[bool] = []
    missing = tmp_path / "missing"

    def failing_loader(settings: ServeSettings) -> Predictor:
        raise ModelNotFoundError(f"{missing}: no such model directory")

    app = create_app(SETTINGS, loader=failing_loader, on_load_failure=lambda: stopped.append(True))
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while not stopped and time.monotonic() < deadline:
            time.sleep(0.01)
        ready = client.get("/readyz")
        predict = client.post("/v1/predict", json={"request": REQUEST})

    assert stopped == [True]
    assert ready.status_code == 503
    assert ready.json() == {"status": "failed", "detail": f"{missing}: no such model directory"}
    assert _error(predict, 503) == (
        "model",
        f"the model failed to load: {missing}: no such model directory",
    )


def test_serve_exits_2_when_the_model_cannot_load(tmp_path: Path) -> None:
    missing = tmp_path / "missing"

    result = CliRunner().invoke(cli_app, ["serve", "--model", str(missing), "--port", "0"])

    assert result.exit_code == 2, result.output
    assert f"error: {missing}: no such model directory" in result.output


def test_serve_rejects_bad_limits() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--max-in-flight", "0"])

    assert result.exit_code == 2
    assert "--max-in-flight" in result.output


# --------------------------------------------------------------------------- model


def test_model_card_names_version_alias_fingerprint_and_metrics(
    client: TestClient, served_store: ServedStore
) -> None:
    info = served_store.result.model.info
    run = mlflow.MlflowClient(tracking_uri=served_store.tracking_uri).get_run(
        served_store.result.run_id
    )
    expected_metrics = {
        k: v
        for k, v in run.data.metrics.items()
        if k.startswith("test.") and not k.startswith("test.subgroup.")
    }

    card = client.get("/v1/model").json()

    assert "test.auroc" in expected_metrics
    assert card["metrics"] == pytest.approx(expected_metrics)
    assert {k: card[k] for k in ("uri", "name", "version", "alias", "kind")} == {
        "uri": "models:/imr-outcome@champion",
        "name": "imr-outcome",
        "version": "1",
        "alias": "champion",
        "kind": "tfidf_lr",
    }
    assert card["data_fingerprint"] == info.data_fingerprint
    assert card["threshold"] == served_store.result.model.threshold
    assert (card["max_chars"], card["max_batch_items"]) == (3000, 4)


def test_a_local_model_directory_has_no_alias_or_metrics(served_store: ServedStore) -> None:
    settings = ServeSettings(model_uri=str(served_store.result.model_dir))
    with TestClient(create_app(settings)) as client:
        _wait_ready(client)
        card = client.get("/v1/model").json()

    assert (card["version"], card["alias"], card["metrics"]) == ("local", None, {})


# ------------------------------------------------------------------------- predict


def test_predict_returns_the_calibrated_prediction(
    client: TestClient, model: CalibratedModel
) -> None:
    body = {"request": REQUEST, "summary": SUMMARY + OVERTURNED_CUE}

    response = client.post("/v1/predict", json=body)

    prediction = Prediction.model_validate(response.json())
    expected = _p_overturned(model, REQUEST, SUMMARY + OVERTURNED_CUE)
    assert prediction.p_overturned == pytest.approx(expected, abs=1e-9)
    assert prediction.label == ("Overturned" if expected >= model.threshold else "Upheld")
    assert (prediction.model_name, prediction.model_version) == ("imr-outcome", "1")
    assert prediction.evidence == []
    assert prediction.warnings == []


def test_explained_spans_index_the_strings_sent(client: TestClient) -> None:
    summary = SUMMARY + OVERTURNED_CUE
    metadata = {"patient_age": 44, "patient_sex": "male"}

    response = client.post(
        "/v1/predict",
        json={
            "request": REQUEST,
            "summary": summary,
            "metadata": metadata,
            "explain": True,
            "top_k": 2,
        },
    )

    prediction = Prediction.model_validate(response.json())
    assert prediction.evidence
    texts = {"request": REQUEST, "summary": summary}
    for span in prediction.evidence:
        assert texts[span.field][span.start : span.end] == span.text
    for direction in ("Overturned", "Upheld"):
        assert sum(s.direction == direction for s in prediction.evidence) <= 2


def test_warnings_are_returned(client: TestClient) -> None:
    response = client.post("/v1/predict", json={"request": REQUEST, "summary": "Short."})

    assert response.json()["warnings"] == [WARN_SHORT_SUMMARY, WARN_SUMMARY_VOCABULARY]
    assert response.json()["warning_details"] == [
        {
            "code": "short_summary",
            "message": WARN_SHORT_SUMMARY,
            "figures": {"summary_words": 1, "min_summary_words": 20},
        },
        {
            "code": "summary_not_clinical",
            "message": WARN_SUMMARY_VOCABULARY,
            "figures": {"clinical_terms": 0, "min_clinical_terms": 2},
        },
    ]


def test_batch_predicts_in_input_order(client: TestClient, model: CalibratedModel) -> None:
    items: list[dict[str, Any]] = [
        {"request": REQUEST, "summary": SUMMARY + OVERTURNED_CUE},
        {"request": "Norco 10/325mg #90", "summary": SUMMARY},
        {"request": REQUEST, "summary": SUMMARY, "metadata": {"patient_age": 60}},
    ]

    response = client.post("/v1/predict/batch", json={"items": items})

    predictions = response.json()["predictions"]
    assert [p["p_overturned"] for p in predictions] == pytest.approx(
        [_p_overturned(model, i["request"], i["summary"], i.get("metadata")) for i in items],
        abs=1e-9,
    )


# ------------------------------------------------------------------------- letters


def _letter_p_overturned(model: CalibratedModel, path: Path) -> list[float]:
    letter = parse_letter_file(path)
    assert letter.patient_age is not None and letter.patient_sex is not None
    metadata: dict[str, MetadataValue] = {
        "patient_age": letter.patient_age.value,
        "patient_sex": letter.patient_sex.value,
    }
    return [
        _p_overturned(model, i.request.value, letter.summary.value, metadata) for i in letter.items
    ]


def test_a_text_letter_gives_each_item_with_its_prediction(
    client: TestClient, model: CalibratedModel
) -> None:
    expected = EXPECTED["good"]["mixed_multi.txt"]

    response = client.post(
        "/v1/letters",
        files={"file": ("mixed_multi.txt", LETTER.read_bytes(), "text/plain")},
        data={"explain": "true", "top_k": "3"},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filename"] == "mixed_multi.txt"
    assert [i["request"] for i in body["items"]] == [i["request"] for i in expected["items"]]
    assert [i["letter_decision"] for i in body["items"]] == [
        i["decision"] for i in expected["items"]
    ]
    assert [i["prediction"]["p_overturned"] for i in body["items"]] == pytest.approx(
        _letter_p_overturned(model, LETTER), abs=1e-9
    )
    for item in body["items"]:
        texts = {"request": item["request"], "summary": body["summary"]}
        assert item["prediction"]["evidence"]
        for span in item["prediction"]["evidence"]:
            assert texts[span["field"]][span["start"] : span["end"]] == span["text"]


def test_a_letter_s_decisions_and_rationales_are_not_inputs(
    client: TestClient, tmp_path: Path
) -> None:
    text = LETTER.read_text(encoding="utf-8")
    flipped = re.sub(
        r": (Upheld|Overturned)\b",
        lambda m: ": " + {"Upheld": "Overturned", "Overturned": "Upheld"}[m[1]],
        text,
    )
    flipped = re.sub(r"(Decision rationale:)[^\n]*", r"\1 Completely different reasons.", flipped)
    assert flipped != text

    original = client.post("/v1/letters", files={"file": ("a.txt", text.encode(), "text/plain")})
    altered = client.post("/v1/letters", files={"file": ("b.txt", flipped.encode(), "text/plain")})

    assert [i["letter_decision"] for i in altered.json()["items"]] != [
        i["letter_decision"] for i in original.json()["items"]
    ]
    assert [i["prediction"] for i in altered.json()["items"]] == [
        i["prediction"] for i in original.json()["items"]
    ]


def test_a_pdf_letter_gives_the_same_items(client: TestClient, tmp_path: Path) -> None:
    pdf = make_letter_pdf(LETTER.read_text(encoding="utf-8"), tmp_path / "letter.pdf")

    response = client.post(
        "/v1/letters", files={"file": ("letter.pdf", pdf.read_bytes(), "application/pdf")}
    )

    assert response.status_code == 200, response.text
    assert [i["request"] for i in response.json()["items"]] == [
        i["request"] for i in EXPECTED["good"]["mixed_multi.txt"]["items"]
    ]


UPLOAD_ERRORS: dict[str, tuple[tuple[str, bytes, str], int, str]] = {
    "not a letter": (
        ("notes.txt", (LETTER_FIXTURES / "not_a_letter.txt").read_bytes(), "text/plain"),
        422,
        "not a readable IMR letter (notes.txt: document: not an IMR final determination letter",
    ),
    "truncated letter": (
        ("t.txt", (LETTER_FIXTURES / "truncated.txt").read_bytes(), "text/plain"),
        422,
        "not a readable IMR letter (t.txt: decisions: heading",
    ),
    "an image": (
        ("scan.png", b"\x89PNG\r\n\x1a\n" + bytes(64), "image/png"),
        415,
        "unsupported file type '.png' (image/png); upload the letter as .pdf or .txt",
    ),
    "a pdf name on text": (
        ("letter.pdf", b"just text", "application/pdf"),
        415,
        "declared a PDF but does not start with %PDF-; upload the original PDF",
    ),
    "binary as text": (
        ("letter.txt", b"abc\x00\x01\x02", "text/plain"),
        415,
        "binary data, not text; upload the letter as .pdf or as plain .txt",
    ),
    "empty": (("letter.txt", b"", "text/plain"), 422, "is empty; upload a .pdf or .txt IMR letter"),
    "damaged pdf": (
        ("letter.pdf", b"%PDF-1.4\n garbage", "application/pdf"),
        422,
        "not a readable IMR letter (letter.pdf: pdf",
    ),
    "too large": (
        ("big.txt", b"x" * 200_001, "text/plain"),
        413,
        "larger than 200000 bytes; upload one letter",
    ),
}


@pytest.mark.parametrize("case", sorted(UPLOAD_ERRORS))
def test_bad_uploads_are_4xx_naming_the_file(client: TestClient, case: str) -> None:
    upload, status, message = UPLOAD_ERRORS[case]

    response = client.post("/v1/letters", files={"file": upload})

    field, found = _error(response, status)
    assert field == "file"
    assert found.startswith(message), found


def test_a_letter_with_more_items_than_the_limit_is_413(client: TestClient) -> None:
    letter = LETTER_FIXTURES / "many_items.txt"
    n_items = len(EXPECTED["good"]["many_items.txt"]["items"])
    assert n_items > SETTINGS.max_batch_items

    response = client.post("/v1/letters", files={"file": ("m.txt", letter.read_bytes())})

    assert _error(response, 413) == (
        "file",
        f"{n_items} items, more than the limit of 4; split them into batches",
    )


def test_an_upload_without_a_file_is_422(client: TestClient) -> None:
    response = client.post("/v1/letters", data={"explain": "true"})

    assert _error(response, 422) == (
        "file",
        "is required: no file was attached; upload the letter (.pdf or .txt) as the "
        "multipart/form-data field 'file'",
    )


# ----------------------------------------------------------------------- bad input

LONG = "x" * 3001
BAD_JSON: dict[str, tuple[Any, int, str, str]] = {
    "missing request": (
        {"summary": SUMMARY},
        422,
        "request",
        "is required; add it to the JSON body",
    ),
    "empty request": (
        {"request": "   ", "summary": SUMMARY},
        422,
        "request",
        "is empty; write it out in words",
    ),
    "request a number": ({"request": 5}, 422, "request", "expected text, got a number"),
    "summary null": (
        {"request": REQUEST, "summary": None},
        422,
        "summary",
        "expected text, got null",
    ),
    "explain a string": (
        {"request": REQUEST, "explain": "yes"},
        422,
        "explain",
        "expected true or false, got text",
    ),
    "unknown field": (
        {"request": REQUEST, "decision": "Upheld"},
        422,
        "decision",
        "unknown field; remove it or check its spelling (see /docs)",
    ),
    "outcome metadata": (
        {"request": REQUEST, "metadata": {"label": "Upheld"}},
        422,
        "metadata.label",
        "not a pre-filing field; allowed: patient_age, patient_sex,",
    ),
    "age out of range": (
        {"request": REQUEST, "metadata": {"patient_age": 300}},
        422,
        "metadata.patient_age",
        "expected at most 120, got 300",
    ),
    "top_k zero": (
        {"request": REQUEST, "top_k": 0},
        422,
        "top_k",
        "expected at least 1, got 0",
    ),
    "summary over the limit": (
        {"request": REQUEST, "summary": LONG},
        413,
        "summary",
        "3001 characters, more than the limit of 3000; shorten the text or raise the limit "
        "(max_chars)",
    ),
    "request over the limit": ({"request": LONG}, 413, "request", "3001 characters"),
    "a list body": ([REQUEST], 422, "body", "expected a JSON object, got a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_bad_predict_input_is_4xx_naming_the_field(client: TestClient, case: str) -> None:
    body, status, field, message = BAD_JSON[case]

    response = client.post("/v1/predict", json=body)

    found_field, found = _error(response, status)
    assert found_field == field
    assert found.startswith(message), found


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"request": "caf\xe9 au lait"}', "not valid JSON"),
        (b'{"request": ', "not valid JSON"),
    ],
    ids=["not utf-8", "truncated json"],
)
def test_a_body_that_is_not_utf8_json_is_422(
    client: TestClient, content: bytes, message: str
) -> None:
    response = client.post(
        "/v1/predict", content=content, headers={"Content-Type": "application/json"}
    )

    field, found = _error(response, 422)
    assert field == "body"
    assert found.startswith(message)
    assert found.endswith("send a UTF-8 encoded JSON object with Content-Type: application/json")


BAD_BATCH: dict[str, tuple[Any, int, str, str]] = {
    "no items": ({"items": []}, 422, "items", "is empty; send 1 to 4 items"),
    "too many items": (
        {"items": [{"request": REQUEST}] * 5},
        413,
        "items",
        "5 items, more than the limit of 4; split them into batches",
    ),
    "an empty item": (
        {"items": [{"request": REQUEST}, {"request": ""}]},
        422,
        "items[1].request",
        "is empty",
    ),
    "an item over the limit": (
        {"items": [{"request": REQUEST, "summary": LONG}]},
        413,
        "items[0].summary",
        "3001 characters",
    ),
    "an item of the wrong type": (
        {"items": [{"request": REQUEST}, "text"]},
        422,
        "items[1]",
        "expected a JSON object, got text",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCH))
def test_bad_batches_are_4xx_naming_the_item(client: TestClient, case: str) -> None:
    body, status, field, message = BAD_BATCH[case]

    response = client.post("/v1/predict/batch", json=body)

    found_field, found = _error(response, status)
    assert found_field == field
    assert found.startswith(message), found


def test_a_body_over_the_byte_limit_is_413_before_parsing(client: TestClient) -> None:
    limit = SETTINGS.max_json_bytes

    response = client.post(
        "/v1/predict",
        content=b'{"request": "' + b"a" * limit + b'"}',
        headers={"Content-Type": "application/json"},
    )

    field, message = _error(response, 413)
    assert (field, message) == (
        "body",
        f"request body larger than {limit} bytes; send less text, fewer items or a smaller file",
    )


def test_unknown_paths_are_404_in_the_error_shape(client: TestClient) -> None:
    assert _error(client.get("/v1/nothing"), 404) == ("body", "Not Found")


# ------------------------------------------------------- saturation and failures


def _blocking(predictor: Predictor, entered: threading.Event, release: threading.Event) -> None:
    original = predictor.predict_batch

    def predict_batch(
        items: Sequence[PredictInput],
        *,
        explain: bool = False,
        top_k: int = 5,
        deadline: float | None = None,
        **_: Any,
    ) -> list[Prediction]:
        entered.set()
        release.wait(30)
        return original(items, explain=explain, top_k=top_k, deadline=deadline)

    predictor.predict_batch = predict_batch  # type: ignore[method-assign]


def test_a_saturated_server_answers_503_with_retry_after(served_store: ServedStore) -> None:
    entered, release = threading.Event(), threading.Event()

    def loader(settings: ServeSettings) -> Predictor:
        predictor = Predictor.load(str(served_store.result.model_dir))
        _blocking(predictor, entered, release)
        return predictor

    settings = ServeSettings(model_uri="local", max_in_flight=1, max_waiting=0, retry_after_s=7)
    body = {"request": REQUEST, "summary": SUMMARY}
    with TestClient(create_app(settings, loader=loader)) as client, ThreadPoolExecutor(1) as pool:
        _wait_ready(client)
        first = pool.submit(client.post, "/v1/predict", json=body)
        assert entered.wait(10)
        refused = client.post("/v1/predict", json=body)
        release.set()
        accepted = first.result(timeout=30)
        again = client.post("/v1/predict", json=body)

    field, message = _error(refused, 503)
    assert (field, refused.headers["Retry-After"]) == ("server", "7")
    assert message == ("1 model call(s) running and 0 waiting; retry after the Retry-After delay")
    assert (accepted.status_code, again.status_code) == (200, 200)


def test_the_gate_times_out_waiters_and_frees_their_place() -> None:
    async def scenario() -> list[int]:
        gate = InFlightGate(max_in_flight=1, max_waiting=1, wait_timeout_s=0.05)
        admitted = []
        async with gate.slot():
            with pytest.raises(Saturated, match=r"no model slot freed within 0\.05 s"):
                async with gate.slot():
                    pass
            admitted.append(gate.admitted)
        async with gate.slot():
            admitted.append(gate.admitted)
        admitted.append(gate.admitted)
        return admitted

    assert asyncio.run(scenario()) == [1, 1, 0]


def test_an_unexpected_error_is_a_500_without_details_or_case_text_in_logs(
    served_store: ServedStore, caplog: pytest.LogCaptureFixture
) -> None:
    def loader(settings: ServeSettings) -> Predictor:
        predictor = Predictor.load(str(served_store.result.model_dir))

        def broken(items: Sequence[PredictInput], **kwargs: Any) -> list[Prediction]:
            raise RuntimeError(f"cannot score {items[0].summary}")

        predictor.predict_batch = broken  # type: ignore[method-assign]
        return predictor

    secret = "Patient Jane Roe-Secret has chronic lumbar pain."
    with caplog.at_level(logging.DEBUG), TestClient(create_app(SETTINGS, loader=loader)) as client:
        _wait_ready(client)
        response = client.post("/v1/predict", json={"request": REQUEST, "summary": secret})

    assert _error(response, 500) == (
        "server",
        "internal error; the server log has the details, retry later or report it",
    )
    assert "Roe-Secret" not in response.text
    assert any(
        "unhandled RuntimeError in POST /v1/predict" in r.getMessage() for r in caplog.records
    )
    assert not any("Roe-Secret" in r.getMessage() for r in caplog.records)


def test_case_text_is_not_logged_at_info_or_above(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Zyxwv-unique case sentence about the lumbar spine and chronic pain."
    with caplog.at_level(logging.DEBUG):
        ok = client.post(
            "/v1/predict", json={"request": REQUEST, "summary": secret, "explain": True}
        )
        bad = client.post("/v1/predict", json={"request": "", "summary": secret})

    assert (ok.status_code, bad.status_code) == (200, 422)
    assert any(r.name == "imr_outcome.serve.api" for r in caplog.records)
    leaked = [r for r in caplog.records if r.levelno >= logging.INFO and "Zyxwv" in r.getMessage()]
    assert leaked == []


# ------------------------------------------------------------- docs and the page


def test_openapi_and_docs_are_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    assert {
        "/v1/predict",
        "/v1/predict/batch",
        "/v1/letters",
        "/v1/model",
        "/healthz",
        "/readyz",
    } <= set(spec["paths"])
    assert "ErrorBody" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_the_page_and_its_files_are_served_without_external_urls(client: TestClient) -> None:
    page = client.get("/")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<label for="request">Requested treatment</label>' in page.text
    assert "not legal or" in page.text
    for name in ("app.js", "style.css"):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200
        assert asset.text == (STATIC_DIR / name).read_text(encoding="utf-8")
    for path in STATIC_DIR.iterdir():
        assert not re.search(r"https?://", path.read_text(encoding="utf-8")), path.name


# -------------------------------------------------------------- the tiny transformer


@pytest.fixture(scope="module", params=["torch", "onnx"])
def transformer_dir(
    tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Path:
    """An untrained tiny-BERT transformer model directory (64-token windows), once
    scoring with torch and once with its ONNX export (``auto`` picks it)."""
    return write_untrained_transformer(
        tiny_bert,
        tmp_path_factory.mktemp("transformer"),
        fingerprint="tiny-fingerprint",
        backend=request.param,
    )


def test_the_tiny_transformer_serves_predictions_with_evidence(transformer_dir: Path) -> None:
    loaded = Predictor.load(str(transformer_dir))
    expected = loaded.predict(REQUEST, SUMMARY, explain=False)
    exported = (transformer_dir / "classifier" / "onnx.json").is_file()
    assert loaded.model.backend == ("onnx-fp32" if exported else "torch")

    with TestClient(create_app(ServeSettings(model_uri=str(transformer_dir)))) as client:
        _wait_ready(client)
        card = client.get("/v1/model").json()
        response = client.post(
            "/v1/predict",
            json={"request": REQUEST, "summary": SUMMARY, "explain": True, "top_k": 2},
        )

    prediction = Prediction.model_validate(response.json())
    assert (card["kind"], card["data_fingerprint"], card["version"]) == (
        "transformer",
        "tiny-fingerprint",
        "local",
    )
    assert prediction.p_overturned == pytest.approx(expected.p_overturned, abs=1e-5)
    assert prediction.warnings == expected.warnings
    assert prediction.evidence
    texts = {"request": REQUEST, "summary": SUMMARY}
    for span in prediction.evidence:
        assert texts[span.field][span.start : span.end] == span.text
