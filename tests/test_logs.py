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
