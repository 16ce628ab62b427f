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
#: MLflow logs its database migrations and model-logging hints at INFO/WARNING on every
#: first use of a store. ``py.warnings`` receives Python warnings once
#: :func:`quiet_libraries` routes them to logging (PySpark's "does not yet fully support
#: pandas >= 3.0.0", MLflow's "An input example was not provided"); this package raises
#: no warnings of its own for users (its messages go through logging or the console).
QUIET_LIBRARY_LOGGERS: tuple[str, ...] = ("pypdf", "transformers", "mlflow", "py.warnings")

#: Python warnings that child processes (Spark's Python workers) drop when the console is
#: quiet, in ``PYTHONWARNINGS`` form (message prefixes): the workers' warnings cannot be
#: routed to this process's log.
QUIET_CHILD_WARNINGS = "ignore:PySpark does not yet fully support pandas:FutureWarning"

_quiet = False


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
    Python warnings are routed to the ``py.warnings`` logger (quiet like the libraries').
    The settings go into the environment (where unset), so child processes such as Spark's
    Python workers start quiet too; there ``PYTHONWARNINGS`` drops
    :data:`QUIET_CHILD_WARNINGS`.

    Args:
        verbose: leave every library's logging and progress bars at their defaults.
    """
    global _quiet
    quiet_library_loggers(verbose)
    logging.captureWarnings(True)  # to ``py.warnings``: shown only with -v
    _quiet = not verbose
    if verbose:
        return
    # Set in the environment, so child processes (Spark's Python workers) inherit them.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars too
    # MLflow sets its loggers' level from this variable when it is imported (INFO unset).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    # MLflow draws a "Downloading artifacts" bar whenever it copies a logged model.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if "PYTHONWARNINGS" not in os.environ:
        os.environ["PYTHONWARNINGS"] = QUIET_CHILD_WARNINGS
    import huggingface_hub.utils as hub_utils

    hub_utils.disable_progress_bars()  # type: ignore[attr-defined]  # public, lazily exported
    if "transformers.utils.logging" in sys.modules:  # imported already: its state is set
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def libraries_quiet() -> bool:
    """Whether :func:`quiet_libraries` quieted the console in this process (the CLI
    without ``-v``): a Spark session this package starts then keeps Spark's own log and
    progress bar off the console too (:func:`imr_outcome.serve.spark.spark_session`)."""
    return _quiet
