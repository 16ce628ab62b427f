"""Server logs: one line per event, as plain text or as JSON (``serve --log-format json``).

Every record (uvicorn's start-up and access lines, this package's events, tracebacks)
becomes exactly one line: the text format escapes line breaks inside a message or a
traceback as ``\\n``; the JSON format writes one object per line
(``{"time", "level", "logger", "message"}``, plus ``method``/``path``/``status`` for
access lines and ``exc_type``/``traceback`` for exceptions), as log collectors expect.

Neither format adds anything to what is logged: request bodies, case text and
``Authorization`` headers never reach a log record (uvicorn's access line holds the
client address, method, path and status only).

The JSON formatter is a few lines of :mod:`json` over :class:`logging.Formatter`, so the
server needs no logging library beyond the standard one.
"""

from __future__ import annotations

import json
import logging
import traceback
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]

#: Loggers the server configures: uvicorn's and this package's.
_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "imr_outcome")


def _one_line(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")


class OneLineFormatter(logging.Formatter):
    """``2026-11-30T13:30:56Z INFO imr_outcome.serve.api: message``, always one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """UTC time in ISO 8601 with a ``Z`` suffix."""
        return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def format(self, record: logging.LogRecord) -> str:
        """The record on one line; a traceback follows the message, escaped."""
        return _one_line(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for its keys)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            args = record.args
            if len(args) == 5:  # client, method, path, HTTP version, status (uvicorn)
                entry.update(method=args[1], path=args[2], status=args[4])
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["traceback"] = "".join(traceback.format_tb(record.exc_info[2]))
        return json.dumps(entry, ensure_ascii=True, default=str)


def log_config(log_format: LogFormat, level: str = "INFO") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for uvicorn (``uvicorn.Config(log_config=...)``).

    Args:
        log_format: ``"text"`` (one readable line per event) or ``"json"``.
        level: the level of uvicorn's and this package's loggers (``"INFO"``,
            ``"DEBUG"``, ...).

    Returns:
        The configuration: one stderr handler with the chosen formatter on the root
        logger (at WARNING, for other libraries); uvicorn's loggers and ``imr_outcome``
        at ``level``, propagating to it.
    """
    formatter = JsonFormatter if log_format == "json" else OneLineFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"one_line": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "one_line",
                "stream": "ext://sys.stderr",
            }
        },
        # one handler, on the root logger: uvicorn's and this package's records propagate
        # to it (so nothing is written twice); other libraries log warnings only
        "loggers": {name: {"handlers": [], "level": level, "propagate": True} for name in _LOGGERS},
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
