"""The CLI's one console: messages and progress go to stderr, tables and results to stdout, and a
command that cannot go on says why and exits 2 (`fail`)."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console

console = Console(stderr=True)


def stdout_console() -> Console:
    """Tables go to stdout; when it is a pipe or a CI log, don't squeeze them to 80 columns."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
