"""The terminal of every ``imr-outcome`` command: one Rich console each for stdout and
stderr, and the one way a command fails on bad input (exit code 2): :class:`CliTyper`
turns every :class:`~imr_outcome.errors.ImrOutcomeError` a command raises into
:func:`fail`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import typer
from rich.console import Console
from rich.markup import escape

from imr_outcome.errors import ImrOutcomeError

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)


def fail(error: Exception | str) -> typer.Exit:
    """Print ``error: <message>`` on stderr and return the exit (code 2) to raise.

    Use as ``raise fail(exc) from exc`` for an ``ImrOutcomeError`` or any message that
    names the field or file and the fix.
    """
    err_console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
    return typer.Exit(code=2)


def exits_on_errors(command: F) -> F:
    """``command`` with every :class:`ImrOutcomeError` turned into :func:`fail` (exit 2)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ImrOutcomeError as exc:
            raise fail(exc) from exc

    return cast(F, run)


class CliTyper(typer.Typer):
    """A :class:`typer.Typer` whose commands all exit through :func:`exits_on_errors`."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        """Register a command as :meth:`typer.Typer.command` does, wrapped."""
        register = super().command(*args, **kwargs)

        def decorator(function: F) -> F:
            register(exits_on_errors(function))
            return function

        return decorator
