"""``castbook render``: Batch Render — prompt variants of a character, scored, best marked."""

from __future__ import annotations

import io
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from castbook.cli.console import console, print_json, work_progress
from castbook.cli.errors import below_gate, reports_errors
from castbook.errors import InvalidInputError
from castbook.generation.request import range_text
from castbook.settings import Settings


def _prompts(prompts: list[str] | None, prompts_file: Path | None) -> list[str]:
    found = list(prompts or [])
    if prompts_file is not None:
        try:
            text = prompts_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(f"cannot read {prompts_file}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"{prompts_file} is not UTF-8 text (byte {exc.start + 1} cannot be read); "
                "save it as UTF-8"
            ) from None
        found += [
            line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
        ]
    return found


@reports_errors
def render(
    character: list[str] = typer.Option(
        ..., "--character", "-c", help="Character(s) to render (repeatable)."
    ),
    prompt: list[str] = typer.Option(None, "--prompt", "-p", help="A prompt variant (repeatable)."),
    prompts_file: Path = typer.Option(
        None, "--prompts-file", help="A text file with one prompt variant per line."
    ),
    preset: str = typer.Option(None, "--preset", help="Preset id (see `castbook presets list`)."),
    min_score: float = typer.Option(
        None,
        "--min-score",
        help="Consistency gate: re-render variants scoring below this; exit 1 if one still does.",
    ),
    max_attempts: int = typer.Option(
        3, "--max-attempts", help="Renders per variant at most, with --min-score (1–10)."
    ),
    max_variants: int = typer.Option(8, "--max-variants", help="Cap on the number of variants."),
    seed: int = typer.Option(None, "--seed", help="Seed of the first variant (then +1 each)."),
    negative: str = typer.Option(None, "--negative", help="Negative prompt."),
    width: int = typer.Option(None, "--width", help=range_text("width") + "."),
    height: int = typer.Option(None, "--height", help=range_text("height") + "."),
    steps: int = typer.Option(None, "--steps", help=range_text("steps") + "."),
    guidance: float = typer.Option(None, "--guidance", help=range_text("guidance") + "."),
    output: Path = typer.Option(Path("outputs"), "--output", "-o", help="Folder for the results."),
    pull: bool = typer.Option(
        False, "--pull", help="Download the preset's models first if they are missing."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Render N prompt variants of the same character(s) in one job, score each, mark the best."""
    from castbook.cli.library_access import open_library
    from castbook.cli.models import ensure_models
    from castbook.evaluation import Scorer
    from castbook.generation import Mode, create_backend, load_presets
    from castbook.generation.outputs import encode_png
    from castbook.render.batch import BatchRender, render_batch, variant_parameters
    from castbook.render.storyboard import SheetItem, contact_sheet_png

    variants = _prompts(prompt, prompts_file)
    catalog = load_presets(Settings.from_env().home)
    chosen = catalog.get(preset) if preset else catalog.default_for(Mode.T2I)
    fields = {
        "seed": seed,
        "negative_prompt": negative,
        "width": width,
        "height": height,
        "steps": steps,
        "guidance": guidance,
    }
    spec = BatchRender(
        characters=tuple(character),
        prompts=tuple(variants),
        preset=chosen.id,
        request={k: v for k, v in fields.items() if v is not None},
        min_score=min_score,
        max_attempts=max_attempts if min_score is not None else 1,
        max_variants=max_variants,
    )
    spec.validate()
    ensure_models(chosen, pull=pull, quiet=json_output)
    library = open_library()
    with work_progress("render", disable=json_output) as bar:
        task = bar.add_task("starting", total=len(variants))
        with Scorer() as scorer:
            result = render_batch(
                spec,
                library=library,
                preset=chosen,
                backend=create_backend(chosen),
                scorer=scorer,
                progress=lambda done, total, message: bar.update(
                    task, completed=done, total=total, description=message
                ),
            )
    output.mkdir(parents=True, exist_ok=True)
    saved = []
    for variant, parameters in zip(
        result.variants, variant_parameters(spec, chosen, result), strict=True
    ):
        path = output / f"variant-{variant.index + 1:02d}.png"
        path.write_bytes(encode_png(variant.image, parameters))
        saved.append(path)
    sheet = output / "contact-sheet.png"
    sheet.write_bytes(
        contact_sheet_png(
            [
                SheetItem(_png(v.image), v.prompt, v.score, v.best, v.attempts)
                for v in result.variants
            ],
            title=", ".join(spec.characters),
        )
    )
    below = [v for v in result.variants if v.passed is False]
    if json_output:
        print_json(
            {
                "preset": chosen.id,
                "best": result.best.index + 1,
                "rerolls": result.rerolls,
                "min_score": min_score,
                "below_min_score": [v.index + 1 for v in below],
                "contact_sheet": str(sheet),
                "variants": [
                    {
                        "index": v.index + 1,
                        "prompt": v.prompt,
                        "final_prompt": final,
                        "score": v.score,
                        "scores": v.scores,
                        "seed": v.seed,
                        "attempts": v.attempts,
                        "attempt_scores": list(v.attempt_scores),
                        "passed": v.passed,
                        "best": v.best,
                        "path": str(path),
                    }
                    for v, final, path in zip(
                        result.variants, result.final_prompts, saved, strict=True
                    )
                ],
            }
        )
    else:
        _print_table(result, spec.characters, min_score)
        console.print(f"contact sheet: {escape(str(sheet))}; variants in {escape(str(output))}")
    if below:  # the files are still written
        raise below_gate(
            "variants",
            len(result.variants),
            min_score,
            spec.max_attempts,
            [f"#{v.index + 1} {v.prompt!r} ({v.score:.1f})" for v in below],
        )


def _png(image: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # type: ignore[attr-defined]
    return buffer.getvalue()


def _print_table(result: object, characters: tuple[str, ...], min_score: float | None) -> None:
    table = Table(title="Batch render")
    table.add_column("", width=1)
    table.add_column("#", justify="right")
    table.add_column("prompt")
    table.add_column("score", justify="right", style="bold")
    if len(characters) > 1:
        for name in characters:
            table.add_column(escape(name), justify="right")
    table.add_column("renders", justify="right")
    for v in result.variants:  # type: ignore[attr-defined]
        score = f"{v.score:.1f}"
        if v.passed is False:
            score = f"[red]{score}[/]"
        cells = [f"{v.scores[n]:.1f}" for n in characters] if len(characters) > 1 else []
        table.add_row(
            "★" if v.best else "",
            str(v.index + 1),
            escape(v.prompt),
            score,
            *cells,
            str(v.attempts),
        )
    console.print(table)
    if min_score is not None:
        console.print(
            f"consistency gate {min_score:g}: {result.rerolls} re-render(s)"  # type: ignore[attr-defined]
        )
