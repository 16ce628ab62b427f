"""API keys: 401 without the key, 200 with it, open health/page routes, keys never logged,
and no public listening address without a key."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from api_stub import REQUEST, SUMMARY, error, train_tfidf, wait_ready
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from imr_outcome.cli import app as cli_app
from imr_outcome.errors import InvalidInputError
from imr_outcome.serve.api import create_app
from imr_outcome.serve.api_auth import API_KEY_ENV, is_loopback, read_api_key
from imr_outcome.serve.api_limits import ServeSettings
from imr_outcome.serve.api_logging import log_config
from imr_outcome.serve.predictor import Predictor

KEY = "k3y-For-Tests_0123456789abcdefXYZ"
BODY = {"request": REQUEST, "summary": SUMMARY}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tfidf(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.load(str(model_dir))


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> Iterator[TestClient]:
    """The app with an API key, ready."""
    settings = ServeSettings(model_uri="local", api_key=KEY)
    with TestClient(create_app(settings, loader=lambda s: predictor)) as test_client:
        wait_ready(test_client)
        yield test_client


def _bearer(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ------------------------------------------------------------------------ the key


def test_v1_routes_answer_401_without_the_key(client: TestClient) -> None:
    responses = {
        "predict": client.post("/v1/predict", json=BODY),
        "batch": client.post("/v1/predict/batch", json={"items": [BODY]}),
        "letters": client.post("/v1/letters", files={"file": ("a.txt", b"x", "text/plain")}),
        "model": client.get("/v1/model"),
        "unknown": client.get("/v1/nothing"),
    }

    for name, response in responses.items():
        assert error(response, 401) == (
            "authorization",
            "an API key is required; send the header 'Authorization: Bearer <key>'",
        ), name
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="imr-outcome"', name


def test_a_wrong_key_is_401_invalid_token(client: TestClient) -> None:
    for headers in (_bearer(KEY[:-1]), _bearer(KEY + "x"), _bearer("short")):
        response = client.post("/v1/predict", json=BODY, headers=headers)

        assert error(response, 401) == (
            "authorization",
            "the API key is wrong; send the key the server was started with",
        )
        assert response.headers["WWW-Authenticate"] == (
            'Bearer realm="imr-outcome", error="invalid_token"'
        )
        assert KEY not in response.text


def test_other_schemes_or_an_empty_token_are_401(client: TestClient) -> None:
    for value in (f"Basic {KEY}", "Bearer ", "Bearer", KEY):
        response = client.get("/v1/model", headers={"Authorization": value})

        assert response.status_code == 401, value


def test_the_key_gives_200(client: TestClient) -> None:
    predict = client.post("/v1/predict", json=BODY, headers=_bearer())
    lower = client.get("/v1/model", headers={"Authorization": f"bearer {KEY}"})

    assert predict.status_code == 200, predict.text
    assert 0 <= predict.json()["p_overturned"] <= 1
    assert lower.status_code == 200


def test_the_key_is_checked_before_the_body_is_read(client: TestClient) -> None:
    response = client.post(
        "/v1/predict", content=b'{"request": ', headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 401


def test_health_the_page_and_the_schema_stay_open(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/", "/static/app.js", "/favicon.ico", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_the_schema_declares_bearer_auth_on_v1_only(
    client: TestClient, predictor: Predictor
) -> None:
    spec = client.get("/openapi.json").json()
    with TestClient(create_app(ServeSettings(model_uri="local"), loader=lambda s: predictor)) as c:
        open_spec = c.get("/openapi.json").json()

    assert spec["components"]["securitySchemes"] == {"apiKey": {"type": "http", "scheme": "bearer"}}
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            assert ("security" in operation) == path.startswith("/v1/"), path
    assert "securitySchemes" not in open_spec["components"]


def test_the_key_is_not_in_logs_or_repr(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        client.post("/v1/predict", json=BODY, headers=_bearer())
        client.post("/v1/predict", json=BODY, headers=_bearer(KEY + "zz"))

    assert caplog.records
    assert not [r for r in caplog.records if KEY in r.getMessage()]
    assert KEY not in repr(client.app.state.server.settings)  # type: ignore[attr-defined]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_real_server_logs_one_json_line_per_event_without_the_key(
    predictor: Predictor, capfd: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()
    app = create_app(ServeSettings(model_uri="local", api_key=KEY), loader=lambda s: predictor)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=log_config("json"))
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
        statuses = [
            httpx.post(f"{url}/v1/predict", json=BODY, headers=_bearer(), timeout=30).status_code,
            httpx.post(f"{url}/v1/predict", json=BODY, timeout=30).status_code,
            httpx.get(f"{url}/v1/model", headers=_bearer(KEY + "x"), timeout=30).status_code,
        ]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    out, err = capfd.readouterr()

    assert statuses == [200, 401, 401]
    lines = [line for line in (out + err).splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    assert [(e["method"], e["path"], e["status"]) for e in access if e["path"] != "/readyz"] == [
        ("POST", "/v1/predict", 200),
        ("POST", "/v1/predict", 401),
        ("GET", "/v1/model", 401),
    ]
    assert any(
        e["logger"] == "imr_outcome.serve.api" and "predict 1 item(s)" in e["message"]
        for e in entries
    )
    assert KEY not in out + err
    assert SUMMARY[:40] not in out + err


# ------------------------------------------------------------- reading the key


def test_the_key_comes_from_the_file_first_then_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "api.key"
    path.write_text(f"  {KEY}\n", encoding="utf-8")

    assert read_api_key(path, {API_KEY_ENV: "other-key-0123456789"}) == KEY
    assert read_api_key(None, {API_KEY_ENV: f"{KEY}\n"}) == KEY
    assert read_api_key(None, {}) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the API key has 0 characters, fewer than 16; make one with: python -c"),
        ("abc123", "the API key has 6 characters, fewer than 16"),
        ("has spaces in the key 0123", "the API key may hold only letters, digits and"),
        ("caf\u00e9-0123456789abcdef", "the API key may hold only letters, digits and"),
    ],
    ids=["empty", "short", "spaces", "not ascii"],
)
def test_an_unusable_key_file_is_refused_without_quoting_it(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "api.key"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(InvalidInputError) as caught:
        read_api_key(path, {})

    assert caught.value.field == "--api-key-file"
    assert caught.value.reason.startswith(message), caught.value.reason
    if content:
        assert content not in str(caught.value)


def test_a_missing_key_file_and_a_bad_variable_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"--api-key-file: cannot read .*missing\.key"):
        read_api_key(tmp_path / "missing.key", {})
    with pytest.raises(InvalidInputError, match=f"{API_KEY_ENV}: the API key has 3 characters"):
        read_api_key(None, {API_KEY_ENV: "abc"})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("example.internal", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# -------------------------------------------------------------------- the command


def test_serve_refuses_a_public_host_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)

    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--port", "0"])

    assert result.exit_code == 2, result.output
    assert "--host: 0.0.0.0 is not a loopback address and the server has no API key" in (
        " ".join(result.output.split())
    )
    assert "--insecure-public" in result.output


def test_serve_refuses_a_bad_key_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "tiny")

    result = CliRunner().invoke(cli_app, ["serve", "--port", "0"])

    assert result.exit_code == 2
    assert f"{API_KEY_ENV}: the API key has 4 characters" in result.output
    assert "tiny" not in result.output.replace(API_KEY_ENV, "")


@pytest.mark.parametrize(
    "flags",
    [["--insecure-public"], ["--api-key-file", "KEYFILE"]],
    ids=["insecure public", "with a key"],
)
def test_serve_passes_the_host_check_with_a_key_or_insecure_public(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str]
) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    key_file = tmp_path / "api.key"
    key_file.write_text(KEY, encoding="utf-8")
    flags = [str(key_file) if f == "KEYFILE" else f for f in flags]
    missing = tmp_path / "missing"

    result = CliRunner().invoke(
        cli_app,
        ["serve", "--host", "0.0.0.0", "--port", "0", "--model", str(missing), *flags],
    )

    # it got as far as loading the model (which is missing)
    assert result.exit_code == 2, result.output
    assert f"{missing}: no such model directory" in " ".join(result.output.split())
