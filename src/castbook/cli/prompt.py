"""``castbook prompt``: preview the prompt a generation would send for some characters."""

from __future__ import annotations

import typer

from castbook.cli.console import console, print_json
from castbook.cli.errors import reports_errors
from castbook.cli.library_access import open_library


@reports_errors
def prompt(
    text: str = typer.Argument("", help="Your prompt, e.g. 'at a cafe, morning light'."),
    character: list[str] = typer.Option(
        ..., "--character", "-c", help="A character to inject (repeatable, in scene order)."
    ),
    negative: str = typer.Option("", "--negative", help="Your negative prompt."),
    preset: str = typer.Option(
        None,
        "--preset",
        help="The preset it is for: the trigger words of the characters' LoRAs it applies "
        "lead the prompt (default: the preset `castbook generate` uses for --mode).",
    ),
    mode: str = typer.Option(
        None,
        "--mode",
        help="t2i, i2i or i2v (default: t2i, or the first mode of a --preset that does no t2i).",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the final prompt and negative prompt with characters injected, as `castbook
    generate` sends them (LoRA trigger words included)."""
    from castbook.generation import (
        Mode,
        load_presets,
        parse_request,
        preview_prompt,
        resolve_request,
    )
    from castbook.settings import Settings

    library = open_library()
    characters = [library.get(name) for name in character]
    catalog = load_presets(Settings.from_env().home)
    if preset:
        chosen = catalog.get(preset)
        # A video preset (animatediff-sd15, svd-i2v) does i2v only: preview it as what it does.
        if mode is None and not chosen.supports(Mode.T2I):
            mode = chosen.modes[0].value
    else:
        chosen = catalog.default_for(parse_request({"mode": mode or Mode.T2I.value}).mode)
    values = {"prompt": text, "characters": [c.name for c in characters], "mode": mode or "t2i"}
    request = resolve_request({**values, "negative_prompt": negative}, chosen)
    sent = preview_prompt(request, chosen, library)
    if json_output:
        print_json(
            {
                "prompt": sent.prompt,
                "negative_prompt": sent.negative_prompt,
                "preset": chosen.id,
                "lora_notes": list(sent.lora_notes),
            }
        )
        return
    console.print(f"[bold]prompt:[/] {_plain(sent.prompt)}")
    console.print(f"[bold]negative prompt:[/] {_plain(sent.negative_prompt)}")
    for note in sent.lora_notes:
        console.print(f"[dim]{_plain(note)}[/]")


def _plain(text: str) -> str:
    from rich.markup import escape

    return escape(text) if text else "[dim]—[/]"
