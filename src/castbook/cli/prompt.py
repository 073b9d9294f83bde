"""``castbook prompt``: preview the prompt a generation would send for some characters."""

from __future__ import annotations

import typer

from castbook.cli.console import console, print_json
from castbook.cli.errors import reports_errors
from castbook.cli.library_access import open_library
from castbook.library import inject_characters


@reports_errors
def prompt(
    text: str = typer.Argument("", help="Your prompt, e.g. 'at a cafe, morning light'."),
    character: list[str] = typer.Option(
        ..., "--character", "-c", help="A character to inject (repeatable, in scene order)."
    ),
    negative: str = typer.Option("", "--negative", help="Your negative prompt."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the final prompt and negative prompt with characters injected."""
    library = open_library()
    characters = [library.get(name) for name in character]
    injected = inject_characters(text, characters, negative)
    if json_output:
        print_json({"prompt": injected.prompt, "negative_prompt": injected.negative_prompt})
        return
    console.print(f"[bold]prompt:[/] {_plain(injected.prompt)}")
    console.print(f"[bold]negative prompt:[/] {_plain(injected.negative_prompt)}")


def _plain(text: str) -> str:
    from rich.markup import escape

    return escape(text) if text else "[dim]—[/]"
