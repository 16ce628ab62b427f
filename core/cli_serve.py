"""The ``imr-outcome serve`` command: the HTTP API and web page (FastAPI, run by uvicorn).

Kept apart from ``cli.py`` so that FastAPI and uvicorn are imported only when serving.
"""

from __future__ import annotations

from typing import Annotated

import typer

from imr_outcome.console import fail

#: Defaults of the serving limits (see ``imr_outcome.serve.api_limits.ServeSettings``).
_MAX_CHARS = 100_000
_MAX_UPLOAD_BYTES = 10 * 1024 * 1024


def serve_command(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<run_id>/model, "
            "or a local model directory.",
        ),
    ] = "models:/imr-outcome@champion",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
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
) -> None:
    """Serve the HTTP API (/v1/...) and the web page (/) for one model.

    The model is loaded once, after the server starts listening: /healthz answers at once,
    /readyz turns 200 when the model is loaded. If loading fails the server stops and the
    command exits with code 2.
    """
    import uvicorn

    from imr_outcome.errors import InvalidInputError
    from imr_outcome.serve.api import create_app
    from imr_outcome.serve.api_limits import ServeSettings

    try:
        settings = ServeSettings(
            model_uri=model,
            max_in_flight=max_in_flight,
            max_waiting=max_waiting,
            wait_timeout_s=wait_timeout,
            max_batch_items=max_batch_items,
            max_chars=max_chars,
            max_upload_bytes=max_upload_bytes,
        )
    except InvalidInputError as exc:
        raise fail(exc) from exc

    server: uvicorn.Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failure=stop)
    # access logs name the method, path and status only; bodies are never logged
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    server.run()
    error = app.state.server.error
    if error is not None:
        raise fail(error)
