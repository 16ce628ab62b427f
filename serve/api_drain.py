"""Shutting down without dropping a request: SIGTERM drains, then uvicorn stops.

uvicorn's own shutdown (``Server.should_exit``) closes the listening socket at once and
then waits up to ``timeout_graceful_shutdown`` for the requests it already has. A client
that connects after that point gets a refused connection, which a load balancer or a
client library may not retry. So the first SIGTERM starts a drain instead:

1. :class:`DrainingServer` (a :class:`uvicorn.Server`) takes the signal and sets the
   :class:`Drain` flag; the socket stays open.
2. :class:`DrainMiddleware` answers every new request with 503, ``Retry-After`` and
   ``Connection: close`` (``/readyz`` says ``draining``; ``/healthz`` still answers 200:
   the process is alive), while the requests that came before the signal run on.
3. Once none is left, or ``drain_s`` seconds have passed, the server sets uvicorn's
   ``should_exit``: uvicorn closes the socket, waits for what is still running for the
   rest of the drain time (``timeout_graceful_shutdown``), runs the app's shutdown, and
   ``serve`` returns, so the process exits with 0.

A second SIGTERM, or SIGINT (Ctrl+C), goes to uvicorn's own handling (stop accepting,
wait up to ``timeout_graceful_shutdown``; a second Ctrl+C quits at once).
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)

#: The path that answers 200 during a drain (liveness: the process is still alive).
LIVENESS_PATH = "/healthz"
#: The path that reports readiness (``{"status": "draining"}`` and 503 during a drain).
READINESS_PATH = "/readyz"


class Drain:
    """Whether the server is shutting down, and how many requests it still owes an answer.

    Shared between :class:`DrainMiddleware` (which counts requests and refuses new ones)
    and :class:`DrainingServer` (which starts the drain and ends it). Used from the event
    loop's thread only (the signal handler runs on it too).

    Args:
        seconds: the longest drain, in seconds, >= 0 (0: stop at once).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started_at: float | None = None
        self.active = 0

    @property
    def draining(self) -> bool:
        """Whether a drain has started (new requests get 503)."""
        return self.started_at is not None

    def start(self) -> None:
        """Start the drain (again: no effect). Safe in a signal handler: sets fields only."""
        if self.started_at is None:
            self.started_at = time.monotonic()

    def remaining_s(self) -> float:
        """Seconds left of the drain, >= 0 (all of it before the drain starts)."""
        if self.started_at is None:
            return self.seconds
        return max(self.started_at + self.seconds - time.monotonic(), 0.0)

    def finished(self) -> bool:
        """Whether a started drain is over: no request in flight, or no time left."""
        return self.draining and (self.active == 0 or self.remaining_s() == 0.0)


class DrainMiddleware:
    """Count requests in flight; during a drain answer new ones with 503 at once.

    Args:
        app: the wrapped ASGI app.
        drain: the shared drain state.
        retry_after_s: the ``Retry-After`` header of the 503, in whole seconds.
    """

    def __init__(self, app: ASGIApp, drain: Drain, retry_after_s: int) -> None:
        self.app = app
        self.drain = drain
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path")
        if not self.drain.draining:
            self.drain.active += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.drain.active -= 1
            return
        if path == LIVENESS_PATH:
            await self.app(scope, receive, send)
            return
        reason = (
            "the server is shutting down; retry after the Retry-After delay (another "
            "instance, or this one once it is restarted)"
        )
        if path == READINESS_PATH:  # the Health shape, as /readyz answers otherwise
            payload: object = {"status": "draining", "detail": reason}
        else:
            payload = {"detail": [{"field": "server", "message": reason}]}
        body = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(self.retry_after_s).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class DrainingServer(uvicorn.Server):
    """A :class:`uvicorn.Server` whose first SIGTERM drains before uvicorn's shutdown.

    Give its config ``timeout_graceful_shutdown=math.ceil(drain.seconds)``: it bounds
    SIGINT's shutdown, and after a drain the server sets it to the drain time left.

    Args:
        config: the uvicorn configuration (app, host, port, logging).
        drain: the app's drain state (``app.state.server.drain``).
    """

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler: the first SIGTERM starts the drain; anything else is uvicorn's.

        The first SIGTERM is not recorded as a captured signal, so uvicorn does not raise
        it again after the shutdown and the process exits with 0.
        """
        if sig == signal.SIGTERM and not self.drain.draining and not self.should_exit:
            self.drain.start()
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick (every 0.1 s), plus: end a finished drain with ``should_exit``."""
        if self.drain.draining and not self.should_exit:
            if not self._announced:
                self._announced = True
                logger.info(
                    "SIGTERM: draining %d request(s) in flight for up to %g s; new "
                    "requests get 503",
                    self.drain.active,
                    self.drain.seconds,
                )
            if self.drain.finished():
                left = self.drain.active
                if left:
                    logger.warning(
                        "drain time of %g s is over with %d request(s) still in flight",
                        self.drain.seconds,
                        left,
                    )
                else:
                    logger.info("drained: no request in flight; shutting down")
                # uvicorn's wait for what is still running gets the drain time left
                self.config.timeout_graceful_shutdown = math.ceil(self.drain.remaining_s())
                self.should_exit = True
        return await super().on_tick(counter)
