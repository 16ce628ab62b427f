"""The per-request deadline reaches the model's explainer, and a model call that stops at it
is answered 504 with a message that says what to do."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from api_stub import REQUEST, SUMMARY, error, loader_of, train_tfidf, wait_ready
from fastapi.testclient import TestClient

from imr_outcome.errors import DeadlineExceededError
from imr_outcome.model.attribution_spans import Attribution
from imr_outcome.serve.api import create_app
from imr_outcome.serve.api_limits import ServeSettings
from imr_outcome.serve.predictor import PredictInput, Predictor


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tfidf(tmp_path_factory)


@pytest.fixture
def predictor(model_dir: Path) -> Predictor:
    return Predictor.load(str(model_dir))


def test_predict_and_predict_batch_hand_the_deadline_to_the_explainer(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[float | None] = []
    explain = predictor.model.explain

    def recording(*args: Any, deadline: float | None = None, **kwargs: Any) -> list[Attribution]:
        seen.append(deadline)
        return explain(*args, deadline=deadline, **kwargs)

    monkeypatch.setattr(predictor.model, "explain", recording)
    until = time.monotonic() + 30.0

    single = predictor.predict(REQUEST, SUMMARY, deadline=until)
    batch = predictor.predict_batch(
        [PredictInput.of(REQUEST, SUMMARY)] * 2, explain=True, deadline=until + 1
    )
    unbounded = predictor.predict(REQUEST, SUMMARY)
    predictor.predict(REQUEST, SUMMARY, explain=False, deadline=until)  # no explanation

    assert seen == [until, until + 1, until + 1, None]
    assert single.evidence and batch[0].evidence == single.evidence == unbounded.evidence


def test_evidence_stopped_at_the_deadline_is_504_naming_the_fix(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def too_slow(*args: Any, **kwargs: Any) -> list[Attribution]:
        raise DeadlineExceededError("integrated gradients: the time budget ran out")

    monkeypatch.setattr(predictor.model, "explain", too_slow)
    settings = ServeSettings(model_uri="local", request_timeout_s=20.0)
    body = {"request": REQUEST, "summary": SUMMARY}
    with TestClient(create_app(settings, loader=loader_of(predictor))) as client:
        wait_ready(client)
        explained = client.post("/v1/predict", json={**body, "explain": True})
        plain = client.post("/v1/predict", json=body)

    field, message = error(explained, 504)
    assert field == "server"
    assert message == (
        "the evidence took longer than this server's limit of 20 s; ask again with "
        '"explain": false for the estimate alone, or shorten the summary'
    )
    assert plain.status_code == 200, plain.text
