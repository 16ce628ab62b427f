from __future__ import annotations

import logging
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
