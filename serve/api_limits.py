"""Server settings and the limits that keep one process responsive under load.

- :class:`InFlightGate` bounds model calls: at most ``max_in_flight`` run at once, at
  most ``max_waiting`` more wait (up to ``wait_timeout_s``); anything beyond is refused
  at once with :class:`Saturated` (the API answers 503 with ``Retry-After``) instead of
  queueing without bound.
- :class:`ShedLoadMiddleware` refuses model requests at once while the gate is full,
  before their bodies are read, so that a rejection costs microseconds, not a parse.
- :class:`BodyLimitMiddleware` refuses request bodies over a byte limit (413) while
  they stream in, before they are buffered or parsed.
- ``ServeSettings.request_timeout_s`` bounds each request (slot wait, letter parsing and
  the model call together); ``max_explain_chars`` bounds the text one evidence
  computation may cover.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imr_outcome.errors import ImrOutcomeError, InvalidInputError
from imr_outcome.serve.predictor import MAX_TEXT_CHARS

#: Most bytes of a letter upload (the DWC letters are 50-400 KB PDFs).
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: Default longest time one request may take, in seconds (issue 14: an explained 99k
#: character summary held the only model slot for about 10 minutes).
REQUEST_TIMEOUT_S = 60.0
#: Default seconds between checks of a followed registry alias (0: no timer).
FOLLOW_INTERVAL_S = 60.0
#: Default longest wait, in seconds, for requests in flight after SIGTERM.
DRAIN_S = 30.0
#: Default most characters (request + summary) one item may have to get evidence spans.
#: Integrated gradients on the fine-tuned MiniLM took 30 s for 5k characters and 55 s
#: for 10k on 2 cores (avx2, no avx512; issue 14), so 10k fits the default timeout.
MAX_EXPLAIN_CHARS = 10_000


@dataclass(frozen=True)
class ServeSettings:
    """How one server process serves one model.

    Attributes:
        model_uri: what :meth:`Predictor.load` loads at startup.
        max_in_flight: model calls running at once, >= 1. One call already uses every
            CPU core (torch intra-op threads), so 1 suits a CPU host.
        max_waiting: requests that may wait for a model slot, >= 0; more get 503.
        wait_timeout_s: longest wait for a model slot in seconds, > 0; then 503.
        retry_after_s: the ``Retry-After`` header of a 503, in whole seconds, >= 1.
        max_batch_items: most items in one batch or uploaded letter, >= 1.
        max_chars: longest request or summary in characters, >= 1.
        max_upload_bytes: largest letter upload in bytes, >= 1.
        request_timeout_s: longest time one request may take in seconds, > 0 (the wait
            for a slot, letter parsing and the model call); then 504, and the slot is
            released.
        max_explain_chars: most characters (request + summary) of an item that gets
            evidence spans, >= 1; a longer item is predicted without evidence and with
            a warning.
        api_key: the key every ``/v1/*`` request must send as ``Authorization: Bearer``,
            or None for none (never shown in ``repr``).
        backend: what scoring runs on, ``auto`` / ``torch`` / ``onnx`` (see
            :meth:`Predictor.load <imr_outcome.serve.predictor.Predictor.load>`).
        follow_interval_s: seconds between checks of the alias of a ``models:/name@alias``
            URI, >= 0; 0 turns the timer off (``POST /v1/admin/reload`` still checks).
            Ignored for a pinned URI (see :mod:`~imr_outcome.serve.model_follower`).
        drain_s: after SIGTERM, the longest wait for requests in flight, in seconds, >= 0
            (see :mod:`~imr_outcome.serve.api_drain`).
    """

    model_uri: str
    max_in_flight: int = 1
    max_waiting: int = 64
    wait_timeout_s: float = 30.0
    retry_after_s: int = 1
    max_batch_items: int = 32
    max_chars: int = MAX_TEXT_CHARS
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    request_timeout_s: float = REQUEST_TIMEOUT_S
    max_explain_chars: int = MAX_EXPLAIN_CHARS
    api_key: str | None = field(default=None, repr=False)
    backend: str = "auto"
    follow_interval_s: float = FOLLOW_INTERVAL_S
    drain_s: float = DRAIN_S

    def __post_init__(self) -> None:
        minimum = {
            "max_in_flight": 1,
            "max_waiting": 0,
            "retry_after_s": 1,
            "max_batch_items": 1,
            "max_chars": 1,
            "max_upload_bytes": 1,
            "max_explain_chars": 1,
        }
        for name, least in minimum.items():
            value = getattr(self, name)
            if value < least:
                flag = "--" + name.replace("_", "-")
                raise InvalidInputError(flag, f"expected at least {least}, got {value}")
        for flag, seconds in (
            ("--wait-timeout", self.wait_timeout_s),
            ("--request-timeout", self.request_timeout_s),
        ):
            if not seconds > 0:
                raise InvalidInputError(flag, f"expected a positive number, got {seconds}")
        for flag, seconds in (
            ("--follow-interval", self.follow_interval_s),
            ("--drain-seconds", self.drain_s),
        ):
            if not seconds >= 0:
                raise InvalidInputError(flag, f"expected 0 or more seconds, got {seconds}")
        if self.backend not in ("auto", "torch", "onnx"):
            raise InvalidInputError(
                "--backend", f"expected auto, torch or onnx, got {self.backend!r}"
            )

    @property
    def max_json_bytes(self) -> int:
        """Largest JSON body: a full batch of maximal texts, escaped (<= 6 bytes a char)."""
        return self.max_batch_items * 2 * self.max_chars * 6 + 1024 * 1024


class Saturated(ImrOutcomeError):
    """Every model slot is busy and the wait list is full (or the wait timed out).

    Args:
        reason: what is busy and for how long the caller should back off.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class InFlightGate:
    """At most ``max_in_flight`` holders at once, ``max_waiting`` waiters; no more.

    Create it inside the event loop that uses it (e.g. in the app's lifespan).

    Args:
        max_in_flight: concurrent holders, >= 1.
        max_waiting: waiters beyond those, >= 0.
        wait_timeout_s: longest wait for a slot, in seconds.
    """

    def __init__(self, max_in_flight: int, max_waiting: int, wait_timeout_s: float) -> None:
        self.max_in_flight = max_in_flight
        self.max_waiting = max_waiting
        self.wait_timeout_s = wait_timeout_s
        self._slots = asyncio.Semaphore(max_in_flight)
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Requests holding or waiting for a slot now."""
        return self._admitted

    def full(self) -> str | None:
        """Why a new request would be refused at once, or None when it may wait or run."""
        if self._admitted >= self.max_in_flight + self.max_waiting:
            return (
                f"{self.max_in_flight} model call(s) running and {self.max_waiting} waiting; "
                "retry after the Retry-After delay"
            )
        return None

    @contextlib.asynccontextmanager
    async def slot(self, timeout_s: float | None = None) -> AsyncIterator[None]:
        """Hold one slot for the body of the ``async with``.

        Args:
            timeout_s: longest wait for a slot in seconds; at most ``wait_timeout_s``
                (the default).

        Raises:
            Saturated: the wait list is full, or no slot freed within the timeout.
        """
        reason = self.full()
        if reason is not None:
            raise Saturated(reason)
        wait_s = self.wait_timeout_s if timeout_s is None else min(timeout_s, self.wait_timeout_s)
        self._admitted += 1
        try:
            try:
                await asyncio.wait_for(self._slots.acquire(), max(wait_s, 0.0))
            except TimeoutError:
                raise Saturated(
                    f"no model slot freed within {wait_s:.3g} s; retry after the Retry-After delay"
                ) from None
            try:
                yield
            finally:
                self._slots.release()
        finally:
            self._admitted -= 1


class ShedLoadMiddleware:
    """Answer 503 + ``Retry-After`` to model requests at once while the gate is full.

    The check runs before the body is read or parsed, so under overload a rejection
    costs about as much as a 404; the gate still decides for requests that pass.

    Args:
        app: the wrapped ASGI app.
        full: why the server is full now (:meth:`InFlightGate.full`), or None; a
            callable, since the gate is created later, in the app's lifespan.
        paths: the request paths that need a model slot.
        retry_after_s: the ``Retry-After`` header, in seconds.
    """

    def __init__(
        self,
        app: ASGIApp,
        full: Callable[[], str | None],
        paths: frozenset[str],
        retry_after_s: int,
    ) -> None:
        self.app = app
        self.full = full
        self.paths = paths
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = None
        if scope["type"] == "http" and scope.get("path") in self.paths:
            reason = self.full()
        if reason is None:
            await self.app(scope, receive, send)
            return
        await _error(
            send, 503, "server", reason, [(b"retry-after", str(self.retry_after_s).encode())]
        )


class BodyLimitMiddleware:
    """Answer 413 when a request body exceeds the limit for its path.

    The declared ``Content-Length`` is checked first; bodies without one are counted as
    they stream in, and the app sees a disconnect once the limit is passed.

    Args:
        app: the wrapped ASGI app.
        limit_for: the byte limit of a request path.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(str(scope.get("path", "")))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        received = 0
        over = False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the 413 below answers instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not over:
                raise  # only the disconnect this middleware caused is expected
        if over and not started:
            await _too_large(send, limit)


async def _too_large(send: Send, limit: int) -> None:
    message = (
        f"request body larger than {limit} bytes; send less text, fewer items or a smaller file"
    )
    await _error(send, 413, "body", message)


async def _error(
    send: Send,
    status: int,
    field_name: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a JSON ``ErrorBody`` response from ASGI middleware (before the app ran)."""
    body = json.dumps({"detail": [{"field": field_name, "message": message}]}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
