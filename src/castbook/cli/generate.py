"""``castbook generate`` and ``castbook presets``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from castbook.cli.console import console, print_json, work_progress
from castbook.cli.errors import reports_errors
from castbook.generation.request import range_text
from castbook.settings import Settings

presets_app = typer.Typer(help="Presets: a backend + model + defaults (the API's app_id).")


def _catalog():
    from castbook.generation import load_presets

    return load_presets(Settings.from_env().home)


@presets_app.command("list")
@reports_errors
def list_presets(json_output: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List built-in presets and yours ($CASTBOOK_HOME/presets.toml)."""
    presets = list(_catalog())
    if json_output:
        print_json(
            [
                {
                    "id": p.id,
                    "backend": p.backend,
                    "model": p.model,
                    "modes": [m.value for m in p.modes],
                    "description": p.description,
                    "defaults": p.defaults,
                    "options": p.options,
                    "source": p.source,
                }
                for p in presets
            ]
        )
        return
    table = Table(title="Presets (the id is the API's app_id)")
    table.add_column("id", no_wrap=True)
    table.add_column("backend")
    table.add_column("modes")
    table.add_column("model", overflow="fold")
    table.add_column("description")
    for p in presets:
        table.add_row(
            escape(p.id),
            p.backend,
            ",".join(m.value for m in p.modes),
            escape(p.model),
            escape(p.description + ("" if p.source == "built-in" else f" ({p.source})")),
        )
    console.print(table)


@reports_errors
def generate(
    prompt: str = typer.Option("", "--prompt", "-p", help="What to draw."),
    character: list[str] = typer.Option(
        None, "--character", "-c", help="Inject a character (repeatable, in scene order)."
    ),
    mode: str = typer.Option("t2i", "--mode", help="t2i, i2i or i2v."),
    preset: str = typer.Option(
        None, "--preset", help="Preset id (default: the first for the mode)."
    ),
    negative: str = typer.Option(None, "--negative", help="Negative prompt."),
    width: int = typer.Option(
        None, "--width", help=f"{range_text('width')} (default from the preset)."
    ),
    height: int = typer.Option(None, "--height", help=range_text("height") + "."),
    steps: int = typer.Option(None, "--steps", help=range_text("steps") + "."),
    guidance: float = typer.Option(None, "--guidance", help=range_text("guidance") + "."),
    denoise: float = typer.Option(
        None, "--denoise", help=f"{range_text('denoise')}: how much i2i changes the image."
    ),
    seed: int = typer.Option(None, "--seed", help="Fix the seed (recorded either way)."),
    batch: int = typer.Option(
        None, "--batch", help=f"{range_text('batch')} images (or videos) in one call."
    ),
    reference: list[Path] = typer.Option(
        None, "--reference", help="An extra reference image (repeatable)."
    ),
    init: Path = typer.Option(None, "--init", help="Start image for i2i / i2v."),
    reference_scale: float = typer.Option(
        None,
        "--reference-scale",
        help=f"How strongly references steer (IP-Adapter scale, {range_text('reference_scale')}).",
    ),
    lora_weight: float = typer.Option(
        None,
        "--lora-weight",
        help=f"How strongly the characters' LoRAs apply ({range_text('lora_weight')}; default: "
        "each character's own weight, 1 unless set with `castbook character loras`).",
    ),
    frames: int = typer.Option(
        None, "--frames", help=f"Video frames for i2v ({range_text('num_frames')})."
    ),
    fps: int = typer.Option(None, "--fps", help=f"Video frames per second ({range_text('fps')})."),
    output: Path = typer.Option(Path("outputs"), "--output", "-o", help="Folder for the results."),
    gif: bool = typer.Option(False, "--gif", help="Also write a GIF of each video."),
    pull: bool = typer.Option(
        False, "--pull", help="Download the preset's models first if they are missing."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Generate images or a video, with characters injected into prompt and image inputs."""
    from castbook.cli.library_access import open_library
    from castbook.cli.models import ensure_models
    from castbook.generation import (
        create_backend,
        parse_request,
        prepare_request,
        resolve_request,
        run_generation,
        save_result,
    )

    values = {
        "mode": mode,
        "prompt": prompt,
        "negative_prompt": negative,
        "width": width,
        "height": height,
        "steps": steps,
        "guidance": guidance,
        "denoise": denoise,
        "seed": seed,
        "batch": batch,
        "characters": tuple(character or ()),
        "references": tuple(str(p) for p in reference or ()),
        "init_image": str(init) if init is not None else None,
        "reference_scale": reference_scale,
        "lora_weight": lora_weight,
        "num_frames": frames,
        "fps": fps,
    }
    given = {k: v for k, v in values.items() if v is not None}
    catalog = _catalog()
    chosen = catalog.get(preset) if preset else catalog.default_for(parse_request(given).mode)
    request = resolve_request(given, chosen)
    ensure_models(chosen, pull=pull, quiet=json_output)
    library = open_library() if request.characters else None
    prepared = prepare_request(request, chosen, library=library)
    backend = create_backend(chosen)
    with work_progress(chosen.id, disable=json_output) as bar:
        task = bar.add_task("loading model", total=None)

        def progress(event) -> None:
            bar.update(task, completed=event.step, total=event.total, description=event.message)

        result = run_generation(backend, prepared, progress)
    saved = save_result(result, prepared, output, gif=gif)
    if json_output:
        print_json(
            {
                "preset": chosen.id,
                "seed": result.seed,
                "prompt": prepared.prompt,
                "negative_prompt": prepared.negative_prompt,
                "outputs": [{"path": str(s.path), "kind": s.kind} for s in saved],
                **{k: result.metadata[k] for k in ("loras", "lora_notes") if k in result.metadata},
            }
        )
        return
    console.print(f"[bold]prompt:[/] {escape(prepared.prompt)}")
    for lora in result.metadata.get("loras", []):
        console.print(f"LoRA: {escape(lora['character'])} at weight {lora['weight']:g}")
    for note in result.metadata.get("lora_notes", []):
        console.print(f"[yellow]note[/] {escape(note)}")
    for s in saved:
        console.print(f"saved {s.kind}: {escape(str(s.path))}")
    console.print(f"seed {result.seed} — rerun with --seed {result.seed} to reproduce")
