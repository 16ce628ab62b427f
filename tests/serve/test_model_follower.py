"""A server on a registry alias follows it: a promotion reaches it without a failed request,
a broken version is refused, a pinned URI never changes, and two models at most are held.

Each test works on a private copy of one registry (``imr-outcome`` version 1 @champion, a
tf-idf model: loads in milliseconds), adds versions to it and moves the alias.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn
from api_stub import (
    REQUEST,
    SUMMARY,
    error,
    free_port,
    tfidf_store_copy,
    train_tfidf,
    wait_http_ready,
    wait_ready,
)
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from imr_outcome.model.prediction import Prediction
from imr_outcome.serve.api import create_app
from imr_outcome.serve.api_limits import ServeSettings
from imr_outcome.serve.model_follower import load_predictor
from imr_outcome.serve.predictor import PredictInput, Predictor

NAME = "imr-outcome"
ALIAS_URI = f"models:/{NAME}@champion"
BODY = {"request": REQUEST, "summary": SUMMARY}
KEY = "follow-key-0123456789abcdef"


@dataclass
class Registry:
    """A private registry copy (the test's ``MLFLOW_TRACKING_URI``) and its client."""

    uri: str
    client: MlflowClient

    def add_version(self) -> str:
        """A new version with version 1's artifact; its number."""
        first = self.client.get_model_version(NAME, "1")
        assert first.source is not None
        created = self.client.create_model_version(NAME, first.source, run_id=first.run_id)
        return str(created.version)

    def add_broken_version(self, folder: Path) -> str:
        """A new version whose artifact lacks ``imr_model.json``; its number."""
        import mlflow.artifacts

        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{NAME}/1", dst_path=str(folder), tracking_uri=self.uri
            )
        )
        found = list(local.rglob("imr_model.json"))
        assert found
        for path in found:
            path.unlink()
        return str(self.client.create_model_version(NAME, str(local)).version)

    def promote(self, version: str) -> None:
        self.client.set_registered_model_alias(NAME, "champion", version)


@pytest.fixture
def registry(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Registry:
    uri = tfidf_store_copy(tmp_path_factory, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # Training in this process (other test modules) leaves MLflow's global tracking URI
    # set to another store, and MLflow asks that one for registry versions and logged
    # models (artifact downloads, create_model_version): point it here for this test.
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return Registry(uri, MlflowClient(tracking_uri=uri, registry_uri=uri))


@dataclass
class Held:
    """A loaded predictor whose explained calls wait while :attr:`hold` is set.

    Attributes:
        inner: the real predictor.
        hold: explained calls wait for :attr:`release` (up to 30 s) while set.
        entered: set when an explained call starts.
        release: set by the test to let held calls go on.
        broken: every call raises (a version that loads but cannot predict).
    """

    inner: Predictor
    hold: bool = False
    broken: bool = False
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict_batch(
        self,
        items: Sequence[PredictInput],
        *,
        explain: bool = False,
        top_k: int = 5,
        deadline: float | None = None,
        **_: Any,
    ) -> list[Prediction]:
        if self.broken:
            raise RuntimeError("weights do not fit the vocabulary")
        if explain:
            self.entered.set()
            if self.hold:
                self.release.wait(30)
        return self.inner.predict_batch(items, explain=explain, top_k=top_k, deadline=deadline)


@dataclass
class Loads:
    """A ``create_app`` loader wrapping each load in :class:`Held`; it keeps weak
    references only, so the test can see a swapped-out model being freed."""

    uris: list[str] = field(default_factory=list)
    models: list[weakref.ref[Held]] = field(default_factory=list)
    broken_uris: set[str] = field(default_factory=set)

    def __call__(self, settings: ServeSettings) -> Predictor:
        self.uris.append(settings.model_uri)
        held = Held(load_predictor(settings), broken=settings.model_uri in self.broken_uris)
        self.models.append(weakref.ref(held))
        return cast(Predictor, held)

    def model(self, n: int) -> Held:
        found = self.models[n]()
        assert found is not None
        return found


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` on a free port of 127.0.0.1, ready; yields its URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        wait_http_ready(url, alive=thread.is_alive)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _until(condition: Any, timeout_s: float, step_s: float = 0.02) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout_s``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s"
        time.sleep(step_s)
    return time.monotonic() - started


@dataclass
class Stream:
    """Clients sending ``/v1/predict`` one after another until stopped (bounded)."""

    url: str
    answers: list[list[tuple[int, str | None]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, most: int = 3000, seconds: float = 60) -> None:
        answers: list[tuple[int, str | None]] = []
        self.answers.append(answers)
        until = time.monotonic() + seconds
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set() and len(answers) < most and time.monotonic() < until:
                response = client.post("/v1/predict", json=BODY)
                version = response.json().get("model_version") if response.is_success else None
                answers.append((response.status_code, version))

    def count(self, version: str) -> int:
        return sum(v == version for answers in list(self.answers) for _, v in list(answers))


def test_a_promotion_reaches_a_running_server_without_a_failed_request(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imr_outcome")
    second = registry.add_version()
    loads = Loads()
    settings = ServeSettings(model_uri=ALIAS_URI, follow_interval_s=0.5, max_in_flight=2)
    app = create_app(settings, loader=loads)
    with serving(app) as url, ThreadPoolExecutor(3) as pool:
        first = loads.model(0)
        first.hold = True  # an explained request on version 1 stays in flight
        held = pool.submit(
            httpx.post, f"{url}/v1/predict", json={**BODY, "explain": True}, timeout=30
        )
        assert first.entered.wait(10)
        stream = Stream(url)
        clients = [pool.submit(stream.run) for _ in range(2)]
        _until(lambda: stream.count("1") >= 10, 30)

        registry.promote(second)
        swap_s = _until(lambda: httpx.get(f"{url}/v1/model").json()["version"] == second, 15)
        _until(lambda: stream.count(second) >= 10, 30)
        stream.stop.set()
        for client in clients:
            client.result(timeout=30)
        running_after_swap = not held.done()
        first.release.set()
        held_answer = held.result(timeout=30)
        card = httpx.get(f"{url}/v1/model").json()
        del first
        released_s = _until(lambda: loads.models[0]() is None, 10, step_s=0.1)
        _until(lambda: "version 1 released" in caplog.text, 5)
    n_in_flight = sum(len(answers) for answers in stream.answers)
    print(f"\n/v1/model showed version {second} {swap_s:.2f} s after the promotion; ", end="")
    print(f"{n_in_flight} streamed requests")

    statuses = [status for answers in stream.answers for status, _ in answers]
    assert len(statuses) >= 20
    assert set(statuses) == {200}  # not one request failed
    for answers in stream.answers:  # each client: version 1, then version 2, never back
        versions = [v for _, v in answers]
        assert versions == sorted(versions, key=lambda v: v != "1")
    assert swap_s < 0.5 + 3  # the first check after the move (tf-idf loads in ms)
    assert running_after_swap  # the held request outlived the swap...
    assert held_answer.status_code == 200
    assert held_answer.json()["model_version"] == "1"  # ...and finished on its version
    assert loads.uris == [ALIAS_URI, f"models:/{NAME}/{second}"]
    assert card["version"] == second
    assert card["follows"] == ALIAS_URI
    assert card["follow_interval_s"] == 0.5
    reload = card["last_reload"]
    assert (reload["outcome"], reload["version"], reload["previous"], reload["serving"]) == (
        "swapped",
        second,
        "1",
        second,
    )
    assert card["last_check"]["version"] == second
    assert f"{ALIAS_URI} moved to version {second}: swapped in for version 1" in caplog.text
    assert released_s < 10  # the old model is freed once its last request ended
    assert SUMMARY[:30] not in caplog.text


def test_a_broken_version_is_refused_and_the_old_one_keeps_answering(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imr_outcome")
    broken = registry.add_broken_version(tmp_path / "broken")
    loads = Loads()
    settings = ServeSettings(model_uri=ALIAS_URI, follow_interval_s=0.2)
    with TestClient(create_app(settings, loader=loads)) as client:
        wait_ready(client)
        registry.promote(broken)

        def refused() -> bool:
            last = client.get("/v1/model").json()["last_reload"]
            return last is not None and last["outcome"] == "refused"

        _until(refused, 10)
        card = client.get("/v1/model").json()
        predicted = client.post("/v1/predict", json=BODY)
        time.sleep(0.6)  # three more timer checks: the refused version is not loaded again
        attempts_by_timer = len(loads.uris)
        retried = client.post("/v1/admin/reload")
        attempts_by_hand = len(loads.uris)
        good = registry.add_version()
        registry.promote(good)
        _until(lambda: client.get("/v1/model").json()["version"] == good, 10)
        swapped = client.get("/v1/model").json()["last_reload"]
        after = client.post("/v1/predict", json=BODY)

    assert card["version"] == "1"
    reload = card["last_reload"]
    assert (reload["outcome"], reload["version"], reload["serving"]) == ("refused", broken, "1")
    assert f"models:/{NAME}/{broken}: no imr_model.json" in reload["reason"]
    assert predicted.status_code == 200
    assert predicted.json()["model_version"] == "1"
    assert attempts_by_timer == 2  # the first load and one attempt at the broken version
    assert retried.status_code == 200
    assert (retried.json()["outcome"], retried.json()["version"]) == ("refused", broken)
    assert attempts_by_hand == 3  # POST /v1/admin/reload tried it again
    assert loads.uris[3:] == [f"models:/{NAME}/{good}"]
    assert (swapped["outcome"], swapped["previous"], swapped["serving"]) == ("swapped", "1", good)
    assert after.json()["model_version"] == good
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert refusals and all(r.levelno == logging.WARNING for r in refusals)
    assert "version 1 keeps answering" in refusals[0].getMessage()


def test_a_version_that_cannot_predict_is_refused(registry: Registry) -> None:
    second = registry.add_version()
    loads = Loads(broken_uris={f"models:/{NAME}/{second}"})
    settings = ServeSettings(model_uri=ALIAS_URI, follow_interval_s=0)
    with TestClient(create_app(settings, loader=loads)) as client:
        wait_ready(client)
        registry.promote(second)
        report = client.post("/v1/admin/reload").json()
        predicted = client.post("/v1/predict", json=BODY)
        card = client.get("/v1/model").json()

    assert (report["outcome"], report["version"], report["serving"]) == ("refused", second, "1")
    assert report["reason"] == "RuntimeError while loading or checking it; see the server log"
    assert (predicted.status_code, predicted.json()["model_version"]) == (200, "1")
    assert (card["version"], card["follow_interval_s"]) == ("1", None)  # timer off


def test_no_third_model_is_loaded_while_the_swapped_out_one_still_answers(
    registry: Registry,
) -> None:
    second, third = registry.add_version(), registry.add_version()
    loads = Loads()
    settings = ServeSettings(model_uri=ALIAS_URI, follow_interval_s=0, max_in_flight=2)
    with (
        TestClient(create_app(settings, loader=loads)) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        wait_ready(client)
        first = loads.model(0)
        first.hold = True
        held = pool.submit(client.post, "/v1/predict", json={**BODY, "explain": True})
        assert first.entered.wait(10)
        registry.promote(second)
        to_second = client.post("/v1/admin/reload").json()
        registry.promote(third)
        postponed = client.post("/v1/admin/reload").json()
        loads_while_held = list(loads.uris)
        first.release.set()
        held_answer = held.result(timeout=30)
        del first
        to_third = client.post("/v1/admin/reload").json()

    assert to_second["outcome"] == "swapped"
    assert (postponed["outcome"], postponed["version"], postponed["serving"]) == (
        "postponed",
        third,
        second,
    )
    assert "version 1 still answers requests" in postponed["reason"]
    assert loads_while_held == [ALIAS_URI, f"models:/{NAME}/{second}"]  # two models at most
    assert (held_answer.status_code, held_answer.json()["model_version"]) == (200, "1")
    assert (to_third["outcome"], to_third["previous"], to_third["serving"]) == (
        "swapped",
        second,
        third,
    )
    gc.collect()
    assert [ref() is None for ref in loads.models] == [True, True, False]


def test_a_pinned_uri_never_changes(
    registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    second = registry.add_version()
    pinned = f"models:/{NAME}/1"
    folder = str(train_tfidf(tmp_path_factory))
    for uri in (pinned, folder):
        loads = Loads()
        settings = ServeSettings(model_uri=uri, follow_interval_s=0.1)
        with TestClient(create_app(settings, loader=loads)) as client:
            wait_ready(client)
            registry.promote(second)
            time.sleep(0.5)  # five timer periods
            card = client.get("/v1/model").json()
            reload = client.post("/v1/admin/reload")
            predicted = client.post("/v1/predict", json=BODY)
        registry.promote("1")

        assert loads.uris == [uri]
        assert card["version"] == ("1" if uri == pinned else "local")
        assert (card["follows"], card["last_check"], card["last_reload"]) == (None, None, None)
        field_name, message = error(reload, 409)
        assert field_name == "model"
        assert f"the server serves the pinned URI {uri}, which never changes" in message
        assert predicted.json()["model_version"] == card["version"]


def test_the_registry_unreadable_keeps_the_version_answering(registry: Registry) -> None:
    settings = ServeSettings(model_uri=ALIAS_URI, follow_interval_s=0)
    with TestClient(create_app(settings, loader=Loads())) as client:
        wait_ready(client)
        registry.client.delete_registered_model_alias(NAME, "champion")
        report = client.post("/v1/admin/reload").json()
        predicted = client.post("/v1/predict", json=BODY)

    assert (report["outcome"], report["version"], report["serving"]) == ("unavailable", None, "1")
    assert f"{ALIAS_URI}: the registry names no version" in report["reason"]
    assert (predicted.status_code, predicted.json()["model_version"]) == (200, "1")


def test_reload_needs_the_api_key(registry: Registry) -> None:
    settings = ServeSettings(model_uri=ALIAS_URI, follow_interval_s=0, api_key=KEY)
    with TestClient(create_app(settings, loader=Loads())) as client:
        wait_ready(client)
        anonymous = client.post("/v1/admin/reload")
        wrong = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {KEY}x"})
        allowed = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {KEY}"})

    assert error(anonymous, 401)[0] == "authorization"
    assert error(wrong, 401)[0] == "authorization"
    assert allowed.status_code == 200
    report = allowed.json()
    assert (report["outcome"], report["version"], report["serving"]) == ("unchanged", "1", "1")
    assert math.isfinite(report["seconds"]) and report["seconds"] >= 0


def test_the_card_and_its_last_reload_change_together(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    trims: list[float] = []

    def slow_trim() -> None:  # the heap trim after a swap runs in a worker thread
        trims.append(time.monotonic())
        time.sleep(1.0)

    monkeypatch.setattr("imr_outcome.serve.model_follower._trim_heap", slow_trim)
    second = registry.add_version()
    settings = ServeSettings(model_uri=ALIAS_URI, follow_interval_s=0.1)
    cards: list[dict[str, Any]] = []
    with TestClient(create_app(settings, loader=Loads())) as client:
        wait_ready(client)
        registry.promote(second)

        def swapped() -> bool:
            cards.append(client.get("/v1/model").json())
            return bool(cards[-1]["version"] == second)

        _until(swapped, 10)
        time.sleep(0.3)  # inside the trim's second
        cards.append(client.get("/v1/model").json())

    assert trims  # the swap awaited the trim, the window where the two could disagree
    new = [card for card in cards if card["version"] == second]
    assert len(new) == 2
    for card in new:
        reload = card["last_reload"]
        assert (reload["outcome"], reload["previous"], reload["serving"]) == (
            "swapped",
            "1",
            second,
        )
