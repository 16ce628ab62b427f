"""Quiet third-party loggers for the console: the CLI and the server call this at start-up.

pypdf logs a WARNING for every irregularity it repairs in a damaged PDF ("incorrect
startxref pointer", "invalid NumberObject", ...), transformers logs load reports and draws
a "Loading weights" progress bar, and Hugging Face libraries draw download bars. Those are
diagnostics for a developer, not messages for the person running a command: they are
shown only with ``-v`` (:func:`quiet_libraries`).
"""

from __future__ import annotations

import logging
import os
import sys

#: Libraries whose loggers are raised to ERROR unless the user asks for verbose output.
#: MLflow logs its database migrations and model-logging hints ("An input example was not
#: provided") at INFO/WARNING on every first use of a store.
QUIET_LIBRARY_LOGGERS: tuple[str, ...] = ("pypdf", "transformers", "mlflow")


def quiet_library_loggers(verbose: bool) -> None:
    """Set the level of each logger in :data:`QUIET_LIBRARY_LOGGERS`.

    Args:
        verbose: when True, the loggers follow the root logger's level again (``NOTSET``);
            when False, only their errors get through (``ERROR``).
    """
    level = logging.NOTSET if verbose else logging.ERROR
    for name in QUIET_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def quiet_libraries(verbose: bool) -> None:
    """Quiet third-party logs and progress bars for the console, unless ``verbose``.

    Calls :func:`quiet_library_loggers`; without ``verbose`` also turns off the progress
    bars of ``huggingface_hub`` (which transformers reads when it is imported) and of
    transformers itself (its "Loading weights" bar), and sets transformers' verbosity to
    errors: transformers resets its logger's level from ``TRANSFORMERS_VERBOSITY`` when it
    is first imported, so that variable is set (if unset) for the rest of the process.

    Args:
        verbose: leave every library's logging and progress bars at their defaults.
    """
    quiet_library_loggers(verbose)
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # MLflow sets its loggers' level from this variable when it is imported (INFO unset).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # MLflow draws a "Downloading artifacts" bar whenever it copies a logged model.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import huggingface_hub.utils as hub_utils

    hub_utils.disable_progress_bars()  # type: ignore[attr-defined]  # public, lazily exported
    if "transformers.utils.logging" in sys.modules:  # imported already: its state is set
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
