"""SIGTERM drains the real ``imr-outcome serve`` process: the request in flight finishes
with 200, new requests get 503 with ``Retry-After`` (not a refused connection), ``/readyz``
turns not-ready, and the process exits 0 within the drain time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from api_stub import REQUEST, SUMMARY, error, free_port, train_tfidf, wait_http_ready

#: The real CLI, with explained model calls held until the test creates ``release`` in
#: the folder ``IMR_TEST_MARKS`` (at most 20 s); ``entered`` marks that one has started.
HELD_CLI = """
import os, time
from pathlib import Path
from imr_outcome.serve.predictor import Predictor
marks = Path(os.environ["IMR_TEST_MARKS"])
batch = Predictor.predict_batch
def held(self, items, **kwargs):
    if kwargs.get("explain"):
        (marks / "entered").touch()
        until = time.monotonic() + 20
        while not (marks / "release").exists() and time.monotonic() < until:
            time.sleep(0.01)
    return batch(self, items, **kwargs)
Predictor.predict_batch = held
from imr_outcome.cli import app
app(prog_name="imr-outcome")
"""
DRAIN_S = 10
BODY = {"request": REQUEST, "summary": SUMMARY}


def _wait_for(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} not created within {timeout_s} s"
        time.sleep(0.01)


def test_sigterm_lets_the_request_in_flight_finish_and_refuses_new_ones(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    model_dir = train_tfidf(tmp_path_factory)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "stderr.txt").open("wb")
    arguments = ["--model", str(model_dir), "--port", str(port), "--drain-seconds", str(DRAIN_S)]
    process = subprocess.Popen(
        [sys.executable, "-c", HELD_CLI, "serve", "--host", "127.0.0.1", *arguments],
        env={**os.environ, "IMR_TEST_MARKS": str(tmp_path)},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        wait_http_ready(url, alive=lambda: process.poll() is None)
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            slow = pool.submit(
                httpx.post, f"{url}/v1/predict", json={**BODY, "explain": True}, timeout=30
            )
            _wait_for(tmp_path / "entered", 10)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            deadline = signalled + 5
            while (ready := httpx.get(f"{url}/readyz", timeout=5)).status_code == 200:
                assert time.monotonic() < deadline, "/readyz still 200 after SIGTERM"
                time.sleep(0.02)
            refused = [httpx.post(f"{url}/v1/predict", json=BODY, timeout=5) for _ in range(5)]
            model = httpx.get(f"{url}/v1/model", timeout=5)
            health = httpx.get(f"{url}/healthz", timeout=5)
            alive_while_in_flight = process.poll() is None and not slow.done()
            (tmp_path / "release").touch()
            answer = slow.result(timeout=30)
            in_flight_s = time.monotonic() - started
        code = process.wait(timeout=DRAIN_S + 5)
        exit_s = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    stderr = (tmp_path / "stderr.txt").read_text(encoding="utf-8", errors="replace")
    print(
        f"\nin-flight request {in_flight_s:.2f} s -> {answer.status_code}; "
        f"{len(refused)} new requests -> {[r.status_code for r in refused]}; "
        f"exit code {code} {exit_s:.2f} s after SIGTERM"
    )

    assert alive_while_in_flight, stderr
    assert answer.status_code == 200, stderr
    assert answer.json()["model_version"] == "local"
    assert ready.status_code == 503
    assert ready.json()["status"] == "draining"
    assert ready.headers["Retry-After"] == "1"
    for response in [*refused, model]:
        field_name, message = error(response, 503)
        assert field_name == "server"
        assert message.startswith("the server is shutting down")
        assert response.headers["Retry-After"] == "1"
        assert response.headers["Connection"] == "close"
    assert health.status_code == 200  # alive while draining
    assert code == 0, stderr
    assert exit_s < DRAIN_S
    assert "SIGTERM: draining 1 request(s) in flight" in stderr
    assert "drained: no request in flight" in stderr
    assert SUMMARY[:40] not in stderr
