"""The ``imr-outcome serve`` command: the HTTP API and web page (FastAPI, run by uvicorn).

Kept apart from ``cli.py`` so that FastAPI and uvicorn are imported only when serving.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from imr_outcome.cli_predict import BACKEND_HELP, ModelOption
from imr_outcome.console import fail

#: Defaults of the serving limits (see ``imr_outcome.serve.api_limits.ServeSettings``).
_MAX_CHARS = 100_000
_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
_REQUEST_TIMEOUT_S = 60.0
_MAX_EXPLAIN_CHARS = 10_000
_FOLLOW_INTERVAL_S = 60.0
_DRAIN_S = 30.0


class LogFormat(StrEnum):
    """How the server writes its log lines (one line per event either way)."""

    text = "text"
    json = "json"


def serve_command(
    model: ModelOption = "models:/imr-outcome@champion",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    backend: Annotated[
        str,
        typer.Option(help=BACKEND_HELP),
    ] = "auto",
    max_in_flight: Annotated[
        int,
        typer.Option(
            min=1, help="Model calls running at once (one call already uses every CPU core)."
        ),
    ] = 1,
    max_waiting: Annotated[
        int,
        typer.Option(
            min=0, help="Requests that may wait for a model call; beyond that: 503 + Retry-After."
        ),
    ] = 64,
    wait_timeout: Annotated[
        float, typer.Option(min=0.001, help="Longest wait for a model call, seconds (then 503).")
    ] = 30.0,
    max_batch_items: Annotated[
        int, typer.Option(min=1, help="Most items in one batch request or uploaded letter.")
    ] = 32,
    max_chars: Annotated[
        int, typer.Option(min=1, help="Longest request or summary, in characters (else 413).")
    ] = _MAX_CHARS,
    max_upload_bytes: Annotated[
        int, typer.Option(min=1, help="Largest letter upload, in bytes (else 413).")
    ] = _MAX_UPLOAD_BYTES,
    request_timeout: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Longest time one request may take, seconds: waiting, reading a letter and "
            "the model call together (then 504; the model slot is freed).",
        ),
    ] = _REQUEST_TIMEOUT_S,
    max_explain_chars: Annotated[
        int,
        typer.Option(
            min=1,
            help="Most characters (request + summary) an item may have to get evidence; "
            "longer items get the estimate without evidence, and a warning.",
        ),
    ] = _MAX_EXPLAIN_CHARS,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            help="File holding the API key that /v1/* requests must send as "
            "'Authorization: Bearer <key>' (default: the IMR_OUTCOME_API_KEY variable).",
            dir_okay=False,
        ),
    ] = None,
    insecure_public: Annotated[
        bool,
        typer.Option(
            "--insecure-public",
            help="Allow a --host other than loopback without an API key (anyone who can "
            "reach the port can use the model).",
        ),
    ] = False,
    log_format: Annotated[
        LogFormat, typer.Option(help="Log lines as readable text or as JSON objects.")
    ] = LogFormat.text,
    follow_interval: Annotated[
        float,
        typer.Option(
            min=0,
            help="For --model models:/<name>@<alias>: seconds between checks of the alias; "
            "a new version it points at is loaded, tested and swapped in without dropping "
            "a request. 0: check only on POST /v1/admin/reload. A pinned URI never changes.",
        ),
    ] = _FOLLOW_INTERVAL_S,
    drain_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            help="On SIGTERM: new requests get 503 + Retry-After and /readyz turns 503, "
            "requests in flight get up to this many seconds to finish, then the server "
            "exits with 0.",
        ),
    ] = _DRAIN_S,
) -> None:
    """Serve the HTTP API (/v1/...) and the web page (/) for one model.

    The model is loaded after the server starts listening: /healthz answers at once,
    /readyz turns 200 when the model is loaded. If loading fails the server stops and the
    command exits with code 2. On models:/<name>@<alias> (the default @champion) the
    server follows the alias: every --follow-interval seconds and on POST
    /v1/admin/reload, a new version is loaded beside the old one, tested and swapped in
    (a version that fails is refused; the old one keeps answering). SIGTERM drains: new
    requests get 503, those in flight finish within --drain-seconds, exit code 0. With an
    API key (--api-key-file or IMR_OUTCOME_API_KEY) every /v1/* request needs it; without
    one the server listens on loopback only unless --insecure-public is given. Serve TLS
    from a reverse proxy in front (see the README).
    """
    import math

    import uvicorn

    from imr_outcome.errors import InvalidInputError
    from imr_outcome.serve.api import create_app
    from imr_outcome.serve.api_auth import API_KEY_ENV, is_loopback, read_api_key
    from imr_outcome.serve.api_drain import DrainingServer
    from imr_outcome.serve.api_limits import ServeSettings
    from imr_outcome.serve.api_logging import log_config

    try:
        api_key = read_api_key(api_key_file, os.environ)
        if api_key is None and not is_loopback(host) and not insecure_public:
            raise InvalidInputError(
                "--host",
                f"{host} is not a loopback address and the server has no API key; give "
                f"--api-key-file (or set {API_KEY_ENV}), or --insecure-public to serve "
                "anyone who can reach the port",
            )
        settings = ServeSettings(
            model_uri=model,
            max_in_flight=max_in_flight,
            max_waiting=max_waiting,
            wait_timeout_s=wait_timeout,
            max_batch_items=max_batch_items,
            max_chars=max_chars,
            max_upload_bytes=max_upload_bytes,
            request_timeout_s=request_timeout,
            max_explain_chars=max_explain_chars,
            api_key=api_key,
            backend=backend,
            follow_interval_s=follow_interval,
            drain_s=drain_seconds,
        )
    except InvalidInputError as exc:
        raise fail(exc) from exc

    server: DrainingServer | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failure=stop)
    # access logs name the method, path and status only; bodies and headers are never logged
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=log_config(log_format.value),
        log_level="info",
        timeout_graceful_shutdown=math.ceil(drain_seconds),
    )
    server = DrainingServer(config, app.state.server.drain)
    server.run()
    error = app.state.server.error
    if error is not None:
        raise fail(error)
