"""The project's exception hierarchy.

Every error names what was wrong and how to fix it. The CLI maps them to exit codes and
the HTTP API to status codes, so callers never see a stack trace for bad input.
"""

from __future__ import annotations

from pathlib import Path


class ImrOutcomeError(Exception):
    """Base class of every error this package raises on purpose."""


class ParseError(ImrOutcomeError):
    """A source file could not be parsed into a letter or table rows.

    Args:
        source: the file (or label for in-memory text) that failed.
        section: the part of the document that failed, e.g. ``"header"``,
            ``"clinical case summary"``, ``"decisions"``, ``"pdf text layer"``.
        reason: what was expected and what was found, and the fix where there is one.
    """

    def __init__(self, source: str | Path, section: str, reason: str) -> None:
        self.source = str(source)
        self.section = section
        self.reason = reason
        super().__init__(f"{self.source}: {section}: {reason}")


class InvalidInputError(ImrOutcomeError, ValueError):
    """A caller-supplied value is out of range or malformed.

    Args:
        field: the name of the offending field, flag or column.
        reason: what was expected, what was found, and how to fix it.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class LeakageError(ImrOutcomeError):
    """Outcome information would reach a model input, or a split would leak across folds."""


class DownloadError(ImrOutcomeError):
    """A remote file could not be fetched or failed its checksum."""


class ModelNotFoundError(ImrOutcomeError):
    """No model artifact exists at the given URI or path."""


class IncompatibleModelError(ImrOutcomeError):
    """A model artifact exists but cannot be used by this version of the code."""


class DeadlineExceededError(ImrOutcomeError):
    """Work a caller bounded in time (evidence for one item) ran past its deadline."""
