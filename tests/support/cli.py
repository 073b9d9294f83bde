"""The ``castbook`` command line in-process, through Typer's CliRunner."""

from __future__ import annotations

from typer.testing import CliRunner

from castbook.cli.app import app

__all__ = ["castbook", "runner"]

runner = CliRunner()


def castbook(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr
