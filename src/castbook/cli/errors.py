"""Turning castbook errors into one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.markup import escape

from castbook.cli.console import err_console
from castbook.errors import CastbookError

P = ParamSpec("P")
R = TypeVar("R")


def report_error(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(1)


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so expected failures print one line instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CastbookError as exc:
            raise report_error(str(exc)) from None
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise report_error(f"{exc.strerror or exc}{where}") from None
        except UnicodeError as exc:  # text no file, database or terminal can take
            raise report_error(f"text that is not valid Unicode: {exc}") from None
        except RecursionError:
            raise report_error("the input is nested too deeply to read") from None

    return wrapper


def below_gate(
    what: str, total: int, min_score: float, attempts: int, below: list[str]
) -> typer.Exit:
    """Say which ``what`` (variants, panels) still scored under ``--min-score`` after their
    renders, and the exit that makes the gate testable by a script (as ``castbook eval``)."""
    err_console.print(
        f"{len(below)} of {total} {what} still scored below {min_score:g} after {attempts} "
        "render(s) each: " + "; ".join(below),
        markup=False,
    )
    return typer.Exit(1)
