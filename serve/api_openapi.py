"""The OpenAPI document of the HTTP API: the error responses the routes document, and
the document with this server's limits and security (``GET /openapi.json``, ``/docs``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from imr_outcome.serve.api_auth import PROTECTED_PREFIX
from imr_outcome.serve.api_limits import ServeSettings
from imr_outcome.serve.api_schemas import ErrorBody, state_limits

#: The error responses every model route documents (all carry :class:`ErrorBody`).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        401: "no API key, or a wrong one (only when the server has a key)",
        413: "text, items or body over the server's limits",
        422: "invalid input (the field and the fix are named)",
        503: "model not loaded yet, busy, or the server shutting down (see Retry-After)",
        504: "the request took longer than the server's request timeout",
    }.items()
}


def openapi_builder(app: FastAPI, settings: ServeSettings) -> Callable[[], dict[str, Any]]:
    """``app.openapi``: FastAPI's document (``get_openapi``), built once and cached, with
    this server's text and batch limits in the request schemas and, when the server has an
    API key, HTTP bearer security on every ``/v1/*`` operation."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            state_limits(
                schema, max_chars=settings.max_chars, max_batch_items=settings.max_batch_items
            )
            if settings.api_key is not None:
                schema["components"]["securitySchemes"] = {
                    "apiKey": {"type": "http", "scheme": "bearer"}
                }
                for path, operations in schema["paths"].items():
                    if path.startswith(PROTECTED_PREFIX):
                        for operation in operations.values():
                            operation["security"] = [{"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    return build
