"""Quiet third-party loggers for the console: the CLI and the server call this at start-up.

pypdf logs a WARNING for every irregularity it repairs in a damaged PDF ("incorrect
startxref pointer", "invalid NumberObject", ...), and transformers logs load reports.
Those are diagnostics for a developer, not messages for the person running a command:
they are shown only with ``-v``.
"""

from __future__ import annotations

import logging

#: Libraries whose loggers are raised to ERROR unless the user asks for verbose output.
QUIET_LIBRARY_LOGGERS: tuple[str, ...] = ("pypdf", "transformers")


def quiet_library_loggers(verbose: bool) -> None:
    """Set the level of each logger in :data:`QUIET_LIBRARY_LOGGERS`.

    Args:
        verbose: when True, the loggers follow the root logger's level again (``NOTSET``);
            when False, only their errors get through (``ERROR``).
    """
    level = logging.NOTSET if verbose else logging.ERROR
    for name in QUIET_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)
