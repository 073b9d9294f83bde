"""``castbook identify``: which characters of the library an image shows."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from castbook.cli.console import console, err_console, print_json
from castbook.cli.errors import reports_errors
from castbook.cli.library_access import open_library
from castbook.errors import CastbookError, InvalidInputError
from castbook.images import read_image_file
from castbook.settings import Settings

if TYPE_CHECKING:
    from castbook.evaluation.identity_search import Lookalike
    from castbook.library import Character, CharacterLibrary


@reports_errors
def identify(
    images: list[Path] = typer.Argument(None, help="Images to identify.", show_default=False),
    top: int = typer.Option(3, "--top", help="How many characters to list per image (1–50)."),
    reindex: bool = typer.Option(
        False,
        "--reindex",
        help="Rebuild the stored identity index: drop it, then store every reference "
        "image's vectors again (from stored features where there are some).",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Rank the library's characters for each image, with the 0–100 score of
    `castbook eval --character`. Below the open-set threshold (set where 1 % of
    different-identity pairs pass) the answer is "no known character".

    Exits 1 when an image could not be read.
    """
    from castbook.evaluation.identity_search import IdentitySearch, LocalFeatures
    from castbook.library.identity_vectors import has_other_references

    if not 1 <= top <= 50:
        raise InvalidInputError(f"--top must be between 1 and 50, got {top}")
    if not images and not reindex:
        raise InvalidInputError("give at least one IMAGE to identify (or --reindex)")
    library = open_library()
    source = LocalFeatures()
    if reindex:
        _reindex(library, source, quiet=json_output and bool(images))
        if not images:
            return
    if not has_other_references(library):
        raise InvalidInputError(
            "the library has no character with a reference image to identify against; "
            "add one with `castbook character add --name NAME --image FILE`"
        )
    queries = [(read_image_file(path), str(path)) for path in images]
    search, features = IdentitySearch.for_queries(library, source, queries)
    answers = search.identify(
        [(name, result) for (_, name), result in zip(queries, features, strict=True)], top
    )
    if json_output:
        print_json({"results": [answer.to_json() for answer in answers]})
    else:
        for answer in answers:
            _print_answer(answer)
    if any(answer.error is not None for answer in answers):
        raise typer.Exit(1)


def _reindex(library: CharacterLibrary, source: Any, *, quiet: bool) -> None:
    from castbook.evaluation.identity_search import IdentitySearch
    from castbook.library.identity_vectors import clear_vectors

    dropped = clear_vectors(library)
    added = IdentitySearch(library, source, source.key()).update_index()
    if not quiet:
        err_console.print(f"identity index rebuilt: {dropped} entries dropped, {added} stored")


def _print_answer(answer: Any) -> None:
    if answer.error is not None:
        err_console.print(f"[bold red]error:[/] {escape(answer.error)}")
        return
    verdict = (
        f"[bold]{escape(answer.best['name'])}[/] (score {answer.best['score']:.0f})"
        if answer.known
        else "no known character"
    )
    console.print(f"{escape(answer.source)}: {verdict}")
    if not answer.matches:
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("rank", "character", "score", "basis", ""):
        table.add_column(column, justify="right" if column in ("rank", "score") else "left")
    for rank, match in enumerate(answer.matches, 1):
        table.add_row(
            str(rank),
            escape(match["name"]),
            f"{match['score']:.1f}",
            match["basis"],
            "" if match["known"] else "below threshold",
        )
    console.print(table)


def warn_lookalikes(
    library: CharacterLibrary, characters: list[Character], *, quiet: bool = False
) -> list[Lookalike]:
    """After an add or import: warn on stderr for each new reference that already matches
    another character ("Bob looks like Alice (score 93)"); returns them (``quiet``: only
    returns them, for a report that prints its own warnings)."""
    from castbook.evaluation.identity_search import IdentitySearch, LocalFeatures

    if not Settings.from_env().identify_on_add:
        return []
    try:
        found = IdentitySearch.check_added(library, LocalFeatures(), characters)
    except CastbookError as exc:  # the characters are saved: say so, do not fail the command
        err_console.print(f"[yellow]warning[/] could not check for lookalikes: {escape(str(exc))}")
        return []
    for lookalike in [] if quiet else found:
        err_console.print(f"[yellow]warning[/] {escape(lookalike.message)}")
    return found
