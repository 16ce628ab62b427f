"""Map every failure to a status code and an :class:`ErrorBody` naming the field and fix.

=========================================  ======  ===========================
failure                                    status  field
=========================================  ======  ===========================
body not JSON / not UTF-8, wrong type,     422     the field (``request``,
missing or unknown field, empty text,              ``items[2].summary``, ``body``)
bad metadata, a letter that does not parse
text over ``max_chars``, too many items,   413     the field / ``items`` / ``file``
upload or body over the byte limit
an upload that is not PDF or text          415     ``file``
model loading, failed, or saturated        503     ``model`` / ``server``
                                                   (with ``Retry-After``)
anything else                              500     ``server`` (no details)
=========================================  ======  ===========================

Responses never carry a stack trace, and the logs never carry case text: unexpected
errors are logged with their type and traceback frames only, not their message.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imr_outcome.errors import ImrOutcomeError, InvalidInputError, ParseError
from imr_outcome.serve.api_letters import UnsupportedUpload
from imr_outcome.serve.api_limits import Saturated

logger = logging.getLogger(__name__)


class TooLarge(ImrOutcomeError):
    """Text, a list or an upload over a configured limit (answered 413).

    Args:
        field: the offending field.
        reason: the size found, the limit, and how to get under it.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class NotReady(ImrOutcomeError):
    """The model is still loading or failed to load (answered 503).

    Args:
        reason: what the server is doing, or why loading failed.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def error_response(
    status: int, items: Sequence[tuple[str, str]], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A JSON :class:`ErrorBody` response from ``(field, message)`` pairs."""
    detail = [{"field": field, "message": message} for field, message in items]
    return JSONResponse({"detail": detail}, status_code=status, headers=dict(headers or {}))


_JSON_TYPES = {
    "str": "text",
    "int": "a number",
    "float": "a number",
    "bool": "true/false",
    "NoneType": "null",
    "list": "a list",
    "dict": "an object",
}
_EXPECTED = {
    "string_type": "text",
    "bool_type": "true or false",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "dict_type": "a JSON object",
    "model_type": "a JSON object",
    "model_attributes_type": "a JSON object",
    "list_type": "a JSON list",
}


_SEND_JSON = "send a UTF-8 encoded JSON object with Content-Type: application/json"


def _field(loc: Sequence[Any]) -> str:
    """``("body", "items", 2, "summary")`` -> ``"items[2].summary"``."""
    parts = list(loc[1:]) if loc and loc[0] in {"body", "query", "path"} else list(loc)
    field = ""
    for part in parts:
        if isinstance(part, int):
            field += f"[{part}]"
        else:
            field += ("." if field else "") + str(part)
    return field or "body"


def _message(error: dict[str, Any]) -> str:
    """A message with the fix for one pydantic/FastAPI validation error."""
    kind = str(error.get("type", ""))
    if kind == "missing":
        if _field(error.get("loc", ())) == "file":
            return "is required; upload the letter as the multipart/form-data field 'file'"
        return "is required; add it to the JSON body"
    if kind == "json_invalid":
        cause = (error.get("ctx") or {}).get("error", "")
        return f"not valid JSON ({cause}); {_SEND_JSON}"
    if kind == "extra_forbidden":
        return "unknown field; remove it or check its spelling (see /docs)"
    if kind in _EXPECTED:
        found = _JSON_TYPES.get(type(error.get("input")).__name__, "another type")
        return f"expected {_EXPECTED[kind]}, got {found}"
    return f"{str(error.get('msg', 'invalid value')).rstrip('.')}; see /docs"


def validation_items(errors: Sequence[Any]) -> list[tuple[str, str]]:
    """``(field, message)`` pairs of a :class:`RequestValidationError`'s errors."""
    return [
        ("body" if e.get("type") == "json_invalid" else _field(e.get("loc", ())), _message(dict(e)))
        for e in errors
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers of the table in the module docstring on ``app``."""

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, validation_items(exc.errors()))

    async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InvalidInputError | UnsupportedUpload | TooLarge)
        status = {TooLarge: 413, UnsupportedUpload: 415}.get(type(exc), 422)
        return error_response(status, [(exc.field, exc.reason)])

    async def on_parse(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ParseError)
        reason = f"{exc.source}: {exc.section}: {exc.reason}"
        return error_response(422, [("file", f"not a readable IMR letter ({reason})")])

    async def on_busy(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Saturated | NotReady)
        field = "server" if isinstance(exc, Saturated) else "model"
        retry = str(request.app.state.server.settings.retry_after_s)
        return error_response(503, [(field, exc.reason)], {"Retry-After": retry})

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400:  # FastAPI could not decode the body at all
            if request.url.path == "/v1/letters":
                message = "not a readable multipart/form-data upload; send the letter as the "
                message += "form field 'file'"
            else:
                message = f"not valid JSON (not UTF-8 text?); {_SEND_JSON}"
            return error_response(422, [("body", message)])
        return error_response(exc.status_code, [("body", str(exc.detail))], exc.headers)

    app.add_exception_handler(RequestValidationError, on_validation)
    for invalid in (InvalidInputError, UnsupportedUpload, TooLarge):
        app.add_exception_handler(invalid, on_invalid)
    app.add_exception_handler(ParseError, on_parse)
    app.add_exception_handler(Saturated, on_busy)
    app.add_exception_handler(NotReady, on_busy)
    app.add_exception_handler(HTTPException, on_http)


class CatchAllMiddleware:
    """Answer 500 with no details for any unhandled exception; log it without its message.

    The message of an unexpected exception may quote case text, so only its type and
    traceback frames are logged.

    Args:
        app: the wrapped ASGI app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            logger.error(
                "unhandled %s in %s %s\n%s",
                type(exc).__name__,
                scope.get("method", ""),
                scope.get("path", ""),
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            if started:
                return
            body = json.dumps(
                {
                    "detail": [
                        {
                            "field": "server",
                            "message": "internal error; the server log has the details, "
                            "retry later or report it",
                        }
                    ]
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
