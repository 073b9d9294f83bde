"""Shared Rich consoles and the plain JSON printer used by ``--json``."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(value: Any) -> None:
    # typer.echo, not Rich: JSON for scripts must not be wrapped or styled.
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))
