"""``castbook story``: render a story file into panels and a storyboard."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from castbook.cli.console import console, print_json, work_progress
from castbook.cli.errors import below_gate, reports_errors
from castbook.errors import FieldError
from castbook.settings import Settings

if TYPE_CHECKING:
    from castbook.render.story import Story, StoryRender

story_app = typer.Typer(help="Story Mode: scenes with characters, rendered into a storyboard.")


@story_app.command("validate")
@reports_errors
def validate(file: Path = typer.Argument(..., help="A story file (.yaml or .json).")) -> None:
    """Check a story file and the characters it names, without rendering anything."""
    from castbook.cli.library_access import open_library
    from castbook.render.story import load_story

    story = load_story(file)
    library = open_library()
    for name in story.characters:
        library.get(name)
    console.print(
        f"{escape(story.title)}: {len(story.scenes)} scenes, characters "
        f"{escape(', '.join(story.characters))} — ok"
    )


@story_app.command("render")
@reports_errors
def render_story_command(
    file: Path = typer.Argument(..., help="A story file (.yaml or .json)."),
    output: Path = typer.Option(None, "--output", "-o", help="Folder (default: next to the file)."),
    scene: list[int] = typer.Option(
        None, "--scene", help="Re-render only this scene (repeatable); the others are kept."
    ),
    continuity: bool = typer.Option(
        False, "--continuity", help="Use the previous panel as an extra reference."
    ),
    min_score: float = typer.Option(
        None,
        "--min-score",
        help="Consistency gate: re-render panels scoring below this; exit 1 if one still does.",
    ),
    max_attempts: int = typer.Option(3, "--max-attempts", help="Renders per panel at most (1–10)."),
    preset: str = typer.Option(None, "--preset", help="Preset id (default: the story's)."),
    pull: bool = typer.Option(
        False, "--pull", help="Download the preset's models first if they are missing."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Render every scene as a panel (characters injected), then the storyboard files."""
    from castbook.cli.library_access import open_library
    from castbook.cli.models import ensure_models
    from castbook.evaluation import Scorer
    from castbook.generation import Mode, create_backend, load_presets
    from castbook.render.story import load_story, render_story

    story = load_story(file)
    if min_score is not None and not 0 <= min_score <= 100:
        raise FieldError("--min-score", f"must be between 0 and 100, got {min_score}")
    if not 1 <= max_attempts <= 10:
        raise FieldError("--max-attempts", f"must be between 1 and 10, got {max_attempts}")
    catalog = load_presets(Settings.from_env().home)
    preset_id = preset or story.preset
    chosen = catalog.get(preset_id) if preset_id else catalog.default_for(Mode.T2I)
    ensure_models(chosen, pull=pull, quiet=json_output)
    folder = output or file.with_suffix("")
    with work_progress("story", disable=json_output) as bar:
        task = bar.add_task("starting", total=len(scene or story.scenes))
        with Scorer() as scorer:
            result = render_story(
                story,
                folder,
                library=open_library(),
                preset=chosen,
                backend=create_backend(chosen),
                scorer=scorer,
                scenes=scene or None,
                continuity=continuity,
                min_score=min_score,
                max_attempts=max_attempts,
                progress=lambda done, total, message: bar.update(
                    task, completed=done, total=total, description=message
                ),
            )
    # Panels rendered now whose lowest character score is still under the gate (a panel
    # without characters has nothing to be consistent with).
    below = [
        p
        for p in result.board.panels
        if min_score is not None
        and p.number in result.rendered
        and p.scores
        and min(p.scores.values()) < min_score
    ]
    if json_output:
        print_json(
            {
                "title": story.title,
                "rendered": list(result.rendered),
                "min_score": min_score,
                "below_min_score": [p.number for p in below],
                "files": {name: str(path) for name, path in result.files.items()},
                "panels": [
                    {"scene": p.number, "caption": p.caption, "scores": p.scores,
                     "seed": p.seed, "attempts": p.attempts}
                    for p in result.board.panels
                ],
            }
        )  # fmt: skip
    else:
        _print_board(story, result)
    if below:  # the storyboard is still written
        raise below_gate(
            "panels",
            len(result.rendered),
            min_score,
            max_attempts,
            [f"scene {p.number} ({min(p.scores.values()):.1f})" for p in below],
        )


def _print_board(story: Story, result: StoryRender) -> None:
    table = Table(title=escape(story.title))
    table.add_column("scene", justify="right")
    table.add_column("caption")
    for name in story.characters:
        table.add_column(escape(name), justify="right")
    table.add_column("renders", justify="right")
    for panel in result.board.panels:
        cells = [f"{panel.scores[n]:.0f}" if n in panel.scores else "—" for n in story.characters]
        mark = "*" if panel.number in result.rendered else ""
        table.add_row(f"{panel.number}{mark}", escape(panel.caption), *cells, str(panel.attempts))
    console.print(table)
    for name, path in result.files.items():
        console.print(f"{name}: {escape(str(path))}")
