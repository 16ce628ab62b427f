"""Map every failure to a status code and an :class:`ErrorBody` naming the field and fix.

=========================================  ======  ===========================
failure                                    status  field
=========================================  ======  ===========================
no or wrong API key on ``/v1/*``           401     ``authorization`` (see
                                                   :mod:`~imr_outcome.serve.api_auth`)
body not JSON / not UTF-8, wrong type,     422     the field (``request``,
missing or unknown field, text with no             ``items[2].summary``, ``body``)
letters or an unpaired surrogate, bad
metadata, a letter that does not parse
text over ``max_chars``, too many items,   413     the field / ``items`` / ``file``
upload or body over the byte limit
an upload that is not PDF or text          415     ``file``
model loading, failed, or saturated;       503     ``model`` / ``server``
the server shutting down (SIGTERM)                 (with ``Retry-After``)
a reload asked of a server on a pinned     409     ``model``
model URI (it follows no alias)
over the request timeout, or evidence       504     ``server``
stopped at the deadline
anything else                              500     ``server`` (no details)
=========================================  ======  ===========================

Responses never carry a stack trace, and the logs never carry case text: unexpected
errors are logged with their type and traceback frames only, not their message. Every
JSON response renders (:class:`SafeJSONResponse`), even when a message quotes a field
name that is not valid Unicode.
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

from imr_outcome.data.schema import PREFILING_FIELDS
from imr_outcome.data.text_checks import check_unicode
from imr_outcome.errors import (
    DeadlineExceededError,
    ImrOutcomeError,
    InvalidInputError,
    ParseError,
)
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


class TimedOut(ImrOutcomeError):
    """A request took longer than the server's ``request_timeout_s`` (answered 504).

    Args:
        reason: what took too long and how to get an answer within the limit.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ClientGone(ImrOutcomeError):
    """The client disconnected before its answer was ready (nobody reads the response)."""


class NotReady(ImrOutcomeError):
    """The model is still loading or failed to load (answered 503).

    Args:
        reason: what the server is doing, or why loading failed.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class NotFollowing(ImrOutcomeError):
    """``POST /v1/admin/reload`` on a server started on a pinned URI (answered 409).

    Args:
        reason: the URI served and how to start a server that follows an alias.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class SafeJSONResponse(JSONResponse):
    """A JSON response that renders any ``str``, lone surrogates included.

    Starlette encodes JSON as UTF-8, which fails on a lone surrogate (a 500 for an error
    message that quotes a bad field name); such a body is written with ``\\uXXXX``
    escapes instead, which every JSON parser reads.
    """

    def render(self, content: Any) -> bytes:
        """``content`` as UTF-8 JSON; ASCII-escaped JSON when UTF-8 cannot encode it."""
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(
                content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
            ).encode("ascii")


def error_response(
    status: int, items: Sequence[tuple[str, str]], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A JSON :class:`ErrorBody` response from ``(field, message)`` pairs."""
    detail = [{"field": field, "message": message} for field, message in items]
    return SafeJSONResponse({"detail": detail}, status_code=status, headers=dict(headers or {}))


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


_UPLOAD_FILE = "upload the letter (.pdf or .txt) as the multipart/form-data field 'file'"


def _message(error: dict[str, Any]) -> str:
    """A message with the fix for one pydantic/FastAPI validation error."""
    kind = str(error.get("type", ""))
    loc = tuple(error.get("loc", ()))
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, InvalidInputError):  # raised by a validator (text checks)
        return cause.reason
    if kind == "string_unicode" and isinstance(error.get("input"), str):
        try:  # pydantic refuses some lone surrogates itself; say where, as the check does
            check_unicode(_field(loc), error["input"])
        except InvalidInputError as exc:
            return exc.reason
    if _field(loc) == "file":
        # also a part without a file name (a browser's "no file chosen"): FastAPI reads
        # its empty value as missing, or a named part without a file as text
        return f"is required: no file was attached; {_UPLOAD_FILE}"
    if kind == "missing":
        return "is required; add it to the JSON body"
    if kind == "extra_forbidden" and "metadata" in loc[:-1]:
        return f"not a pre-filing field; allowed: {', '.join(PREFILING_FIELDS)}"
    if kind in {"greater_than_equal", "less_than_equal"}:
        bounds = {"greater_than_equal": "at least {ge}", "less_than_equal": "at most {le}"}
        return f"expected {bounds[kind].format(**ctx)}, got {error.get('input')!r}"
    if kind == "string_too_long":
        return f"longer than {ctx.get('max_length')} characters; shorten it"
    if kind == "json_invalid":
        return f"not valid JSON ({cause or ''}); {_SEND_JSON}"
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

    async def on_timeout(request: Request, exc: Exception) -> JSONResponse:
        # TimedOut from the API's own deadline; DeadlineExceededError (or TimeoutError)
        # from a model call that stopped at the deadline it was given
        timeout = request.app.state.server.settings.request_timeout_s
        if isinstance(exc, TimedOut):
            reason = exc.reason
        elif isinstance(exc, DeadlineExceededError):
            reason = (
                f"the evidence took longer than this server's limit of {timeout:g} s; ask "
                'again with "explain": false for the estimate alone, or shorten the summary'
            )
        else:
            reason = f"the estimate took longer than this server's limit of {timeout:g} s"
        return error_response(504, [("server", reason)])

    async def on_pinned(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, NotFollowing)
        return error_response(409, [("model", exc.reason)])

    async def on_gone(request: Request, exc: Exception) -> JSONResponse:
        return error_response(499, [("server", "the client disconnected")])

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
    app.add_exception_handler(TimedOut, on_timeout)
    app.add_exception_handler(TimeoutError, on_timeout)
    app.add_exception_handler(DeadlineExceededError, on_timeout)
    app.add_exception_handler(ClientGone, on_gone)
    app.add_exception_handler(NotFollowing, on_pinned)
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
