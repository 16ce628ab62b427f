"""Bounded work per request: the deadline (504, slot freed, deadline handed to the model),
the evidence budget, cancellation on disconnect, and fast 503s under overload."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from api_stub import (
    REQUEST,
    SUMMARY,
    ControlledPredictor,
    error,
    loader_of,
    train_tfidf,
    wait_ready,
)
from fastapi.testclient import TestClient

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.warnings import evidence_budget_warning
from imr_outcome.serve.api import create_app
from imr_outcome.serve.api_calls import answer_or_give_up
from imr_outcome.serve.api_errors import ClientGone, TimedOut
from imr_outcome.serve.api_limits import InFlightGate, Saturated, ServeSettings
from imr_outcome.serve.predictor import Predictor

BODY = {"request": REQUEST, "summary": SUMMARY}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tfidf(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.load(str(model_dir))


@pytest.fixture
def controlled(predictor: Predictor) -> Iterator[ControlledPredictor]:
    wrapped = ControlledPredictor(predictor)
    yield wrapped
    wrapped.release.set()  # never leave a model thread waiting


def _client(controlled: ControlledPredictor, **limits: Any) -> TestClient:
    settings = ServeSettings(model_uri="local", **limits)
    return TestClient(create_app(settings, loader=loader_of(controlled)))


# ----------------------------------------------------------------------- deadline


def test_the_model_is_handed_the_request_deadline(controlled: ControlledPredictor) -> None:
    with _client(controlled, request_timeout_s=42.0) as client:
        wait_ready(client)
        sent = time.monotonic()
        response = client.post("/v1/predict", json=BODY)
        answered = time.monotonic()

    assert response.status_code == 200, response.text
    (call,) = controlled.calls
    assert call.deadline is not None
    assert sent + 42.0 <= call.deadline <= answered + 42.0
    assert call.at <= call.deadline - 41.0


def test_a_request_past_its_deadline_is_504_and_frees_the_slot(
    controlled: ControlledPredictor,
) -> None:
    controlled.hold = True
    with _client(controlled, request_timeout_s=0.5) as client:
        wait_ready(client)
        started = time.monotonic()
        late = client.post("/v1/predict", json=BODY)
        took = time.monotonic() - started
        gate = client.app.state.server.gate  # type: ignore[attr-defined]
        admitted_after = gate.admitted
        controlled.hold = False
        controlled.release.set()
        after = client.post("/v1/predict", json=BODY)

    field, message = error(late, 504)
    assert field == "server"
    assert message.startswith(
        "the estimate took longer than this server's limit of 0.5 s and was stopped; send a "
        "shorter summary, leave out the evidence (explain: false)"
    )
    assert took < 5
    assert admitted_after == 0
    assert after.status_code == 200


def test_waiting_for_a_slot_ends_at_the_deadline_not_the_wait_timeout() -> None:
    async def scenario() -> tuple[str, float]:
        gate = InFlightGate(max_in_flight=1, max_waiting=4, wait_timeout_s=30)
        async with gate.slot():
            started = time.monotonic()
            with pytest.raises(Saturated) as caught:
                async with gate.slot(timeout_s=0.05):
                    pass
            return caught.value.reason, time.monotonic() - started

    reason, took = asyncio.run(scenario())

    assert reason == "no model slot freed within 0.05 s; retry after the Retry-After delay"
    assert took < 5


def test_a_model_that_stops_at_its_deadline_gets_504(predictor: Predictor) -> None:
    class Stopping(ControlledPredictor):
        def predict_batch(self, items: Any, **kwargs: Any) -> Any:
            raise TimeoutError("explanation stopped at the deadline")

    with _client(Stopping(predictor), request_timeout_s=7) as client:
        wait_ready(client)
        response = client.post("/v1/predict", json=BODY)

    assert error(response, 504) == (
        "server",
        "the estimate took longer than this server's limit of 7 s",
    )


def test_bad_timeouts_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="--request-timeout: expected a positive"):
        ServeSettings(model_uri="x", request_timeout_s=0)
    with pytest.raises(InvalidInputError, match="--max-explain-chars: expected at least 1"):
        ServeSettings(model_uri="x", max_explain_chars=0)


# ------------------------------------------------------------------ evidence budget


def test_items_over_the_evidence_budget_get_no_evidence_and_a_warning(
    controlled: ControlledPredictor,
) -> None:
    short = {"request": REQUEST, "summary": SUMMARY[:150]}
    long = {"request": REQUEST, "summary": SUMMARY * 2}
    n_long = len(REQUEST) + len(SUMMARY) * 2
    budget = 300
    assert len(REQUEST) + 150 <= budget < n_long

    with _client(controlled, max_explain_chars=budget) as client:
        wait_ready(client)
        batch = client.post(
            "/v1/predict/batch", json={"items": [long, short, long], "explain": True}
        )
        single = client.post("/v1/predict", json={**long, "explain": True})
        plain = client.post("/v1/predict", json={**long, "explain": False})

    predictions = batch.json()["predictions"]
    detail = evidence_budget_warning(n_long, budget)
    assert detail.figures == {"chars": n_long, "max_explain_chars": 300}
    warning = detail.message
    assert warning.startswith("Evidence was not computed")
    assert detail.model_dump() in predictions[0]["warning_details"]
    assert [bool(p["evidence"]) for p in predictions] == [False, True, False]
    assert [warning in p["warnings"] for p in predictions] == [True, False, True]
    assert predictions[0]["p_overturned"] == single.json()["p_overturned"]
    assert single.json()["evidence"] == [] and warning in single.json()["warnings"]
    assert warning not in plain.json()["warnings"]
    # one model call without evidence (the long items), one with (the short one)
    assert [(c.n_items, c.explain) for c in controlled.calls[:2]] == [(2, False), (1, True)]


# --------------------------------------------------------------------- disconnect


class _Receive:
    """An ASGI ``receive`` whose client disconnects after ``after_s`` seconds."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s

    async def __call__(self) -> dict[str, Any]:
        await asyncio.sleep(self.after_s)
        return {"type": "http.disconnect"}


class _Request:
    def __init__(self, after_s: float) -> None:
        self.receive = _Receive(after_s)


def test_a_disconnect_or_the_deadline_gives_up_and_cancels_the_call() -> None:
    async def scenario() -> tuple[type[Exception], type[Exception], bool, bool, int]:
        loop = asyncio.get_running_loop()
        gone_future: asyncio.Future[int] = loop.create_future()
        with pytest.raises(ClientGone) as gone:
            await answer_or_give_up(
                gone_future,
                _Request(0.05),  # type: ignore[arg-type]
                time.monotonic() + 30,
                30,
            )
        late_future: asyncio.Future[int] = loop.create_future()
        with pytest.raises(TimedOut) as late:
            await answer_or_give_up(
                late_future,
                _Request(30),  # type: ignore[arg-type]
                time.monotonic() + 0.05,
                0.05,
            )
        done: asyncio.Future[int] = loop.create_future()
        done.set_result(7)
        value = await answer_or_give_up(done, _Request(30), time.monotonic() + 30, 30)  # type: ignore[arg-type]
        return gone.type, late.type, gone_future.cancelled(), late_future.cancelled(), value

    assert asyncio.run(scenario()) == (ClientGone, TimedOut, True, True, 7)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_client_that_disconnects_frees_its_slot_on_a_real_server(
    controlled: ControlledPredictor,
) -> None:
    controlled.hold = True
    port = _free_port()
    app = create_app(
        ServeSettings(model_uri="local", request_timeout_s=60), loader=loader_of(controlled)
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/predict", json=BODY, timeout=httpx.Timeout(5, read=0.5))
        gate = app.state.server.gate
        freed_by = time.monotonic() + 10
        while gate.admitted and time.monotonic() < freed_by:
            time.sleep(0.02)
        admitted = gate.admitted
    finally:
        controlled.release.set()
        server.should_exit = True
        thread.join(timeout=10)

    assert admitted == 0  # freed long before the 60 s deadline


# ----------------------------------------------------------------------- overload


def test_a_full_server_refuses_at_once_before_reading_the_body(
    controlled: ControlledPredictor,
) -> None:
    controlled.hold = True
    with (
        _client(controlled, max_in_flight=1, max_waiting=0, retry_after_s=3) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        wait_ready(client)
        first = pool.submit(client.post, "/v1/predict", json=BODY)
        assert controlled.entered.wait(10)
        started = time.monotonic()
        refused = [
            client.post(
                "/v1/predict", content=b"{not json", headers={"Content-Type": "application/json"}
            )
            for _ in range(20)
        ]
        took = time.monotonic() - started
        health = client.get("/healthz")
        controlled.release.set()
        accepted = first.result(timeout=30)

    for response in refused:
        assert error(response, 503) == (
            "server",
            "1 model call(s) running and 0 waiting; retry after the Retry-After delay",
        )
        assert response.headers["Retry-After"] == "3"
    assert took / len(refused) < 0.25  # no parse, no wait: about a 404's cost
    assert health.status_code == 200
    assert accepted.status_code == 200
