"""Shared Rich consoles and the plain JSON printer used by ``--json``."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(value: Any) -> None:
    # typer.echo, not Rich: JSON for scripts must not be wrapped or styled.
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def work_progress(label: str, *, disable: bool = False) -> Progress:
    """The progress bar of long commands: "label ━━━ 3/4 message 0:00:12", on stderr."""
    return Progress(
        TextColumn(f"[bold]{escape(label)}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=disable,
    )
