"""``castbook eval``: score images 0–100 against a reference image or a character."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from castbook.cli.console import console, err_console, print_json
from castbook.cli.errors import reports_errors
from castbook.cli.library_access import open_library
from castbook.errors import InvalidInputError

COMPONENT_COLUMNS = ("face", "appearance", "ahash", "phash", "dhash", "learned")


@reports_errors
def evaluate(
    images: list[Path] = typer.Argument(
        ..., help="REFERENCE IMAGE... — or only IMAGE... with --character.", show_default=False
    ),
    character: str = typer.Option(
        None, "--character", "-c", help="Score against this character's reference images."
    ),
    min_score: float = typer.Option(
        None, "--min-score", help="Exit 1 if any image (any video frame) scores below this."
    ),
    faces: bool = typer.Option(
        True, "--faces/--no-faces", help="Use face identity when both images show a face."
    ),
    frames: int = typer.Option(16, "--frames", help="Frames sampled from each video."),
    workers: int = typer.Option(None, "--workers", help="Processes to use (default: all cores)."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score images 0–100 for consistency with a reference image or a character.

    Each image gets a headline score (identity-driven when both images show a face,
    appearance-driven otherwise) and its components; the most consistent one is marked.
    Videos (MP4, GIF …) are scored on sampled frames: the mean, and the worst frame.
    """
    from castbook.evaluation import Scorer, most_consistent
    from castbook.evaluation.faces import faces_available
    from castbook.evaluation.learned import configured_embedder

    if min_score is not None and not 0 <= min_score <= 100:
        raise InvalidInputError(f"--min-score must be between 0 and 100, got {min_score}")
    if frames < 1:
        raise InvalidInputError("--frames must be at least 1")
    if faces and not faces_available():
        err_console.print(
            "note: face identity is off (install castbook[faces] for it); "
            "scores are appearance-based"
        )
        faces = False
    scorer = Scorer(faces=faces, learned_embedder=configured_embedder(), video_frames=frames)
    if character is not None:
        references = _character_references(scorer, character)
        reference_label = f"character {character}"
        candidates = images
    else:
        if len(images) < 2:
            raise InvalidInputError("give a REFERENCE image and at least one IMAGE, or --character")
        reference_label = str(images[0])
        references = [scorer.features(images[0], str(images[0]))]
        candidates = images[1:]
    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=len(candidates) < 8,
    ) as bar:
        task = bar.add_task("scoring", total=len(candidates))
        with scorer:
            scores = scorer.score(
                references,
                [str(path) for path in candidates],
                workers=workers,
                progress=lambda done, _total: bar.update(task, completed=done),
            )
    best = most_consistent(scores)
    errors = [s for s in scores if s.error is not None]
    below = [
        s for s in scores if s.error is None and min_score is not None and s.min_score < min_score
    ]
    if json_output:
        print_json(
            {
                "reference": reference_label,
                "scores": [s.to_json() for s in scores],
                "most_consistent": best.source if best else None,
                "min_score": min_score,
                "below_min_score": [s.source for s in below],
                "errors": [s.source for s in errors],
            }
        )
    else:
        _print_table(reference_label, scores, best.source if best else None, min_score)
    if below and not json_output:
        err_console.print(f"{len(below)} of {len(scores)} images scored below {min_score:g}")
    if below or errors:
        raise typer.Exit(1)


def _character_references(scorer: object, name: str) -> list:
    from castbook.render.references import character_reference_features

    library = open_library()
    return character_reference_features(library, scorer, library.get(name))  # type: ignore[arg-type]


def _print_table(reference: str, scores: list, best: str | None, min_score: float | None) -> None:
    shown = [c for c in COMPONENT_COLUMNS if any(c in s.components for s in scores)]
    table = Table(title=f"Consistency with {escape(reference)}")
    table.add_column("", width=1)
    table.add_column("image")
    table.add_column("score", justify="right", style="bold")
    table.add_column("basis")
    for name in shown:
        table.add_column(name, justify="right")
    labels = _short_labels([s.source for s in scores])
    for s, label in zip(scores, labels, strict=True):
        mark = "★" if s.source == best else ""
        if s.error is not None:
            table.add_row("", escape(label), "[red]error[/]", "", *[""] * len(shown))
            continue
        headline = f"{s.score:.1f}"
        if s.frames:
            headline += f" (min {s.min_score:.1f}, {len(s.frames)} frames)"
        if min_score is not None and s.min_score < min_score:
            headline = f"[red]{headline}[/]"
        cells = [f"{s.components[c]:.1f}" if c in s.components else "—" for c in shown]
        table.add_row(mark, escape(label), headline, s.basis, *cells)
    console.print(table)
    if best is not None:
        console.print(f"Most consistent: [bold]{escape(best)}[/]")
    for s in scores:
        if s.error is not None:
            err_console.print(f"[bold red]error:[/] {escape(s.error)}")


def _short_labels(sources: list[str]) -> list[str]:
    """File names when they are unique, else the paths as given."""
    names = [Path(source).name for source in sources]
    return names if len(set(names)) == len(names) else sources
