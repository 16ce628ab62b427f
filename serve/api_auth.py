"""API keys: who may call ``/v1/*``, and where a server without a key may listen.

A server started with a key (``imr-outcome serve --api-key-file PATH`` or the environment
variable :data:`API_KEY_ENV`) answers every ``/v1/*`` request without
``Authorization: Bearer <key>`` (RFC 6750) with 401 and a ``WWW-Authenticate`` header.
``/healthz``, ``/readyz``, ``/docs``, ``/openapi.json`` and the web page stay open (the
page asks for the key when the API answers 401). Keys are compared in constant time
(:func:`hmac.compare_digest` of their SHA-256 digests, so the length does not leak
either) and never logged or echoed.

Without a key the server may listen on loopback only (:func:`is_loopback`) unless the
operator says ``--insecure-public``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from imr_outcome.errors import InvalidInputError

#: The environment variable holding the API key (``--api-key-file`` takes precedence).
API_KEY_ENV = "IMR_OUTCOME_API_KEY"
#: Shortest accepted key, in characters: 16 random URL-safe characters are 96 bits.
MIN_KEY_CHARS = 16
#: Requests under this path prefix need the key.
PROTECTED_PREFIX = "/v1/"
#: The ``realm`` of the ``WWW-Authenticate`` challenge.
REALM = "imr-outcome"
#: How to make a good key (shown in errors).
KEY_HOWTO = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"

# RFC 6750 section 2.1 b64token: the characters a Bearer token may hold.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _checked(key: str, origin: str) -> str:
    """``key`` when it is a usable Bearer token of at least :data:`MIN_KEY_CHARS`.

    Raises:
        InvalidInputError: naming ``origin`` (a flag or variable); the key is not quoted.
    """
    if len(key) < MIN_KEY_CHARS:
        raise InvalidInputError(
            origin,
            f"the API key has {len(key)} characters, fewer than {MIN_KEY_CHARS}; {KEY_HOWTO}",
        )
    if not _TOKEN_RE.fullmatch(key):
        raise InvalidInputError(
            origin,
            "the API key may hold only letters, digits and - . _ ~ + / (then trailing =), "
            f"as an HTTP Bearer token; {KEY_HOWTO}",
        )
    return key


def read_api_key(path: Path | None, environ: Mapping[str, str]) -> str | None:
    """The server's API key: the first line of ``path``, else ``environ[API_KEY_ENV]``.

    Args:
        path: a file holding the key (surrounding whitespace and the line end are
            ignored), or None.
        environ: the process environment (``os.environ``).

    Returns:
        The key, or None when neither a file nor the variable gives one.

    Raises:
        InvalidInputError: ``--api-key-file`` unreadable, empty or not a usable key; or
            :data:`API_KEY_ENV` set but not a usable key.
    """
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(
                "--api-key-file", f"cannot read {path} ({type(exc).__name__}); {KEY_HOWTO}"
            ) from None
        lines = text.strip().splitlines()
        return _checked(lines[0].strip() if lines else "", "--api-key-file")
    value = environ.get(API_KEY_ENV)
    if value is None:
        return None
    return _checked(value.strip(), API_KEY_ENV)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an ``--host`` value) only accepts connections from this machine.

    Args:
        host: an IPv4/IPv6 address or a host name.

    Returns:
        True for ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``); False for
        anything else, including ``0.0.0.0``, ``::`` and other host names (they may
        resolve to a public interface).
    """
    if host.lower() in {"localhost", "localhost."}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class ApiKeyMiddleware:
    """Answer 401 to ``/v1/*`` requests without the right ``Authorization: Bearer`` key.

    The body is not read before the key is checked, so an unauthenticated client cannot
    make the server parse anything.

    Args:
        app: the wrapped ASGI app.
        api_key: the key callers must present.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._digest = _digest(api_key.encode("ascii"))

    def authorized(self, header: bytes | None) -> bool | None:
        """Whether an ``Authorization`` header value carries the key.

        Returns:
            None when no Bearer credentials were sent, else whether they match.
        """
        if header is None:
            return None
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return None
        return hmac.compare_digest(_digest(token.strip()), self._digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not (
            path.startswith(PROTECTED_PREFIX) or path == PROTECTED_PREFIX.rstrip("/")
        ):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization")
        verdict = self.authorized(header)
        if verdict:
            await self.app(scope, receive, send)
            return
        if verdict is None:
            message = "an API key is required; send the header 'Authorization: Bearer <key>'"
            challenge = f'Bearer realm="{REALM}"'
        else:
            message = "the API key is wrong; send the key the server was started with"
            challenge = f'Bearer realm="{REALM}", error="invalid_token"'
        body = json.dumps({"detail": [{"field": "authorization", "message": message}]}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", challenge.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
