from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from imr_outcome.logs import QUIET_LIBRARY_LOGGERS, quiet_library_loggers


@pytest.fixture(autouse=True)
def _restore_levels() -> Iterator[None]:
    levels = {name: logging.getLogger(name).level for name in QUIET_LIBRARY_LOGGERS}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_pypdf_warnings_are_dropped_unless_verbose(caplog: pytest.LogCaptureFixture) -> None:
    quiet_library_loggers(verbose=False)
    with caplog.at_level(logging.INFO):
        logging.getLogger("pypdf._reader").warning("incorrect startxref pointer(1)")
        logging.getLogger("pypdf._reader").error("cannot recover")
    assert [r.getMessage() for r in caplog.records] == ["cannot recover"]

    caplog.clear()
    quiet_library_loggers(verbose=True)
    with caplog.at_level(logging.INFO):
        logging.getLogger("pypdf._reader").warning("incorrect startxref pointer(1)")
    assert [r.getMessage() for r in caplog.records] == ["incorrect startxref pointer(1)"]


def _quiet_interpreter(then: str, unset: str) -> list[str]:
    """What a fresh interpreter prints after ``quiet_libraries(False)`` and ``then``, with
    the environment variable ``unset`` removed (libraries read their settings on import)."""
    code = f"from imr_outcome.logs import quiet_libraries; quiet_libraries(False); {then}"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != unset},
    )
    return done.stdout.split()


def test_progress_bars_and_transformers_warnings_are_off_unless_verbose() -> None:
    printed = _quiet_interpreter(
        "import logging, huggingface_hub.utils as h; from transformers.utils import logging as t; "
        "print(h.are_progress_bars_disabled(), t.is_progress_bar_enabled(), "
        "logging.getLogger('transformers').level, logging.getLogger('pypdf').level)",
        unset="TRANSFORMERS_VERBOSITY",
    )

    assert printed == ["True", "False", str(logging.ERROR), str(logging.ERROR)]


def test_mlflow_logs_only_warnings_and_draws_no_bars_unless_verbose() -> None:
    # MLflow sets its logger's level from MLFLOW_LOGGING_LEVEL when it is imported (INFO
    # by default: "Creating initial MLflow database tables..." on every new store).
    printed = _quiet_interpreter(
        "import logging, os, mlflow; print(logging.getLogger('mlflow').getEffectiveLevel(), "
        "os.environ['MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR'])",
        unset="MLFLOW_LOGGING_LEVEL",
    )

    assert int(printed[0]) >= logging.WARNING
    assert printed[1] == "false"


def test_library_warnings_stay_off_the_console_here_and_in_child_processes() -> None:
    # PySpark warns on every start under pandas 3, in the CLI's process and in each of
    # Spark's Python workers, which inherit the environment.
    warn = (
        "import warnings; warnings.warn('PySpark does not yet fully support pandas >= "
        "3.0.0. Some features may not work correctly.', FutureWarning)"
    )
    code = (
        "import logging, subprocess, sys; from imr_outcome.logs import quiet_libraries; "
        f"logging.basicConfig(); quiet_libraries({{verbose}}); {warn}; "  # as the CLI does
        f"subprocess.run([sys.executable, '-c', {warn!r}], check=True)"
    )
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}

    printed = {
        verbose: subprocess.run(
            [sys.executable, "-c", code.format(verbose=verbose)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
            env=environment,
        ).stderr
        for verbose in (False, True)
    }

    assert printed[False] == ""
    assert printed[True].count("does not yet fully support pandas") == 2
