"""The ``imr-outcome serve`` command: the HTTP API and web page (FastAPI, run by uvicorn).

Kept apart from ``cli.py`` so that FastAPI and uvicorn are imported only when serving.
"""

from __future__ import annotations

from typing import Annotated

import typer


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
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Serve the HTTP API (/v1/...) and the web page (/) for one model."""
    raise NotImplementedError("imr-outcome serve is not implemented yet")
