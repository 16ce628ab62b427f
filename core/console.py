"""The terminal of every ``imr-outcome`` command: one Rich console each for stdout and
stderr, and the one way a command fails on bad input (exit code 2)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


def fail(error: Exception | str) -> typer.Exit:
    """Print ``error: <message>`` on stderr and return the exit (code 2) to raise.

    Use as ``raise fail(exc) from exc`` for an ``ImrOutcomeError`` or any message that
    names the field or file and the fix.
    """
    err_console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
    return typer.Exit(code=2)
