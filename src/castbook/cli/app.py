"""The root ``castbook`` command: error handling, global options, sub-commands."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from castbook import __version__
from castbook.blobs import Blobs
from castbook.cli import character
from castbook.cli.blobs import blobs_app
from castbook.cli.console import console, err_console, print_json
from castbook.cli.errors import reports_errors
from castbook.cli.evaluate import evaluate
from castbook.cli.generate import generate, presets_app
from castbook.cli.identify import identify
from castbook.cli.library_access import open_library
from castbook.cli.models import doctor, models_app
from castbook.cli.prompt import prompt
from castbook.cli.providers import providers_app
from castbook.cli.render import render
from castbook.cli.serve import keys_app, serve
from castbook.cli.story import story_app
from castbook.cli.tasks import describe_holdings, tasks_app
from castbook.cli.worker import worker
from castbook.library.text import invalid_text
from castbook.settings import Settings

__all__ = ["app", "argument_problem", "main"]


app = typer.Typer(
    name="castbook",
    help="Keep AI-generated characters consistent.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(character.app, name="character")
app.command("prompt")(prompt)
app.command("eval")(evaluate)
app.command("identify")(identify)
app.command("generate")(generate)
app.add_typer(presets_app, name="presets")
app.add_typer(models_app, name="models")
app.command("doctor")(doctor)
app.command("render")(render)
app.add_typer(story_app, name="story")
app.command("worker")(worker)
app.command("serve")(serve)
app.add_typer(keys_app, name="keys")
app.add_typer(tasks_app, name="tasks")
app.add_typer(providers_app, name="providers")
app.add_typer(blobs_app, name="blobs")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"castbook {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Keep AI-generated characters consistent.

    Data lives under CASTBOOK_HOME (default ~/.castbook); CASTBOOK_DATABASE_URL switches
    the database to PostgreSQL.
    """


@app.command()
@reports_errors
def info(json_output: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show where castbook keeps its data and how much is there, tasks included."""
    from castbook.jobs.retention import holdings

    settings = Settings.from_env()
    library = open_library()
    characters = library.list()
    held = holdings(library.database, library.blobs, settings)
    details = {
        "version": __version__,
        "home": str(settings.home),
        "database": library.database.safe_url,
        "blob_store": f"{library.blobs.location} ({library.blobs.kind})",
        **_blob_usage(library.blobs),
        "characters": len(characters),
        "reference_images": sum(len(c.images) for c in characters),
    }
    if json_output:
        print_json({**details, "tasks": held.to_json()})
        return
    lines = [(key.replace("_", " "), str(value)) for key, value in details.items()]
    for key, value in [*lines, *describe_holdings(held)]:
        console.print(f"[bold]{key}[/]: {escape(value)}", highlight=False)


def _blob_usage(blobs: Blobs) -> dict[str, int]:
    count, size = blobs.usage()
    return {"blobs": count, "blob_bytes": size}


def argument_problem(args: list[str]) -> str | None:
    """Why the command line cannot be used, or ``None``: bytes that are not UTF-8 reach
    Python as lone surrogates, which nothing downstream can store or print."""
    for position, arg in enumerate(args):
        if invalid_text(arg) is None:
            continue
        option = args[position - 1] if position else ""
        after = f" (the value of {option})" if option.startswith("-") else ""
        return (
            f"argument {position + 1}{after} is not valid UTF-8 text: {arg!a}; "
            "is the terminal's encoding UTF-8?"
        )
    return None


def main() -> None:
    problem = argument_problem(sys.argv[1:])
    if problem is not None:
        err_console.print(f"[bold red]error:[/] {escape(problem)}")
        raise SystemExit(1)
    app()
