"""Helpers for the HTTP-layer tests: a real tf-idf model, and a wrapper that controls time.

:class:`ControlledPredictor` wraps a loaded :class:`Predictor` and records what the API
hands to the model (items, ``explain``, ``deadline``); it can hold a call until the test
releases it, to stand for a model call that outlives its request.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi.testclient import TestClient

from imr_outcome.model.prediction import Prediction
from imr_outcome.serve.api_limits import ServeSettings
from imr_outcome.serve.predictor import PredictInput, Predictor

from model_factory import registered_tfidf_store

REQUEST = "Physical therapy 6 sessions for the lumbar spine"
SUMMARY = (
    "The injured worker is a 44 year old male with chronic low back pain radiating to the "
    "left leg after lifting boxes at work. Examination showed lumbar tenderness and a "
    "positive straight leg raise. Treatment to date included medications and a home "
    "exercise program. The physician requested physical therapy for the lumbar spine. "
)


def train_tfidf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tf-idf model directory trained on the invented dataset, once per test session.

    Training and registering take about a minute on a busy 2-core box, so the API test
    modules share one model under the session's base temporary folder.
    """
    root = _tfidf_root(tmp_path_factory)
    done = root / "model_dir.txt"
    if not done.is_file():
        root.mkdir(exist_ok=True)
        with registered_tfidf_store(root) as result:
            done.write_text(str(result.model_dir), encoding="utf-8")
    return Path(done.read_text(encoding="utf-8"))


def _tfidf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "api-tfidf-model"


def tfidf_store_copy(tmp_path_factory: pytest.TempPathFactory, folder: Path) -> str:
    """A private copy of the registry of :func:`train_tfidf` (``imr-outcome`` version 1,
    @champion) in ``folder``; returns its tracking URI.

    The artifacts stay where they are (their locations are absolute), so a test may add
    versions and move aliases in its copy without touching other tests.
    """
    train_tfidf(tmp_path_factory)
    database = folder / "mlflow.db"
    shutil.copyfile(_tfidf_root(tmp_path_factory) / "mlflow.db", database)
    return f"sqlite:///{database}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _always() -> bool:
    return True


def wait_http_ready(url: str, timeout_s: float = 60.0, alive: Callable[[], bool] = _always) -> None:
    """Return once ``GET {url}/readyz`` answers 200 (connection errors are retried).

    Raises:
        AssertionError: not ready within ``timeout_s``, or ``alive()`` turned false (a
            server process that exited).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert alive(), "the server stopped before it was ready"
        assert time.monotonic() < deadline, f"{url} not ready within {timeout_s} s"
        time.sleep(0.05)


@dataclass
class Call:
    """One model call as the API made it."""

    n_items: int
    explain: bool
    deadline: float | None
    at: float


@dataclass
class ControlledPredictor:
    """A loaded predictor whose calls are recorded and may be held.

    Attributes:
        inner: the real predictor.
        hold: while set (the default: not), a call waits for :attr:`release`.
        entered: set when a call starts.
        release: set by the test to let a held call go on.
        calls: every call, in order.
    """

    inner: Predictor
    hold: bool = False
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    calls: list[Call] = field(default_factory=list)

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
        """The inner prediction, after recording the call (and waiting while held)."""
        self.calls.append(Call(len(items), explain, deadline, time.monotonic()))
        self.entered.set()
        if self.hold:
            self.release.wait(30)
        return self.inner.predict_batch(items, explain=explain, top_k=top_k)


def loader_of(predictor: object) -> Callable[[ServeSettings], Predictor]:
    """A ``create_app`` loader returning ``predictor`` (a :class:`ControlledPredictor`
    stands in for the :class:`Predictor` it wraps)."""
    return lambda settings: cast(Predictor, predictor)


def wait_ready(client: TestClient, timeout_s: float = 60.0) -> None:
    """Return once ``/readyz`` answers 200."""
    deadline = time.monotonic() + timeout_s
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.02)


def error(response: Any, status: int) -> tuple[str, str]:
    """The (field, message) of a single-error response, after checking the status."""
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    (item,) = response.json()["detail"]
    return str(item["field"]), str(item["message"])
