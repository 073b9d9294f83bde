"""``castbook character …``: the character library from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.table import Table

from castbook.cli.console import console, err_console, print_json, work_progress
from castbook.cli.errors import reports_errors
from castbook.cli.identify import warn_lookalikes
from castbook.cli.library_access import open_library
from castbook.errors import CastbookError, InvalidInputError, StorageError
from castbook.images import PreparedImage, prepare_reference, read_image_file
from castbook.library import Character, CharacterLibrary, ExportFormat, export_characters
from castbook.library.models import FORM_FIELDS, PHYSICAL_TRAITS, field_value
from castbook.library.transfer import format_timestamp, write_json_atomically
from castbook.settings import Settings

app = typer.Typer(help="Create, edit, list, export and import characters.", no_args_is_help=True)

JSON = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")


def _opt(help_text: str) -> Any:
    return typer.Option(None, help=help_text, show_default=False)


STYLE = typer.Option(None, "--style", help="Style prompt: 1–3 sentences of key features.")
NEGATIVE = typer.Option(None, "--negative", help="What must never appear (e.g. 'glasses').")
DESCRIPTION = _opt("Free-text description (not injected into prompts).")
HAIR = _opt("Hair, e.g. 'long black'.")
EYES = _opt("Eyes, e.g. 'blue'.")
FACE = _opt("Face, e.g. 'round, freckles'.")
BODY = _opt("Body, e.g. 'slim, tall'.")
SKIN = _opt("Skin, e.g. 'pale'.")
CLOTHING = _opt("Clothing, e.g. 'white shirt, jeans'.")
ACCESSORY = typer.Option(None, "--accessory", help="An accessory (repeatable).")
FEATURE = typer.Option(None, "--feature", help="A distinctive feature (repeatable).")
TAG = typer.Option(None, "--tag", help="A tag for finding the character (repeatable).")


def _load_images(paths: list[Path] | None) -> list[PreparedImage]:
    prepared = []
    for path in paths or []:
        image = prepare_reference(read_image_file(path), source=str(path))
        if image.resized:
            err_console.print(
                f"note: {path} is larger than 1536×1536; stored resized to "
                f"{image.width}×{image.height} (the original is not kept)"
            )
        prepared.append(image)
    return prepared


_OPTION_FIELDS = {
    "style": "style_prompt",
    "negative": "negative_prompt",
    "description": "description",
    **{trait: trait for trait in PHYSICAL_TRAITS},
    "clothing": "clothing",
    "accessory": "accessories",
    "feature": "distinctive_features",
    "tag": "tags",
}


def _field_values(options: dict[str, Any], name: str | None) -> dict[str, object]:
    """The character fields the user gave on the command line (``None`` = not given)."""
    values = {field: options[option] for option, field in _OPTION_FIELDS.items()}
    values["name"] = name
    return {field: value for field, value in values.items() if value is not None}


@app.command()
@reports_errors
def add(
    name: str = typer.Option(..., "--name", help="The character's name (1–100 characters)."),
    image: list[Path] = typer.Option(None, "--image", help="A reference image (repeatable)."),
    primary: int = typer.Option(1, "--primary", help="Which --image is the primary one (1-based)."),
    style: str = STYLE,
    negative: str = NEGATIVE,
    description: str = DESCRIPTION,
    hair: str = HAIR,
    eyes: str = EYES,
    face: str = FACE,
    body: str = BODY,
    skin: str = SKIN,
    clothing: str = CLOTHING,
    accessory: list[str] = ACCESSORY,
    feature: list[str] = FEATURE,
    tag: list[str] = TAG,
    json_output: bool = JSON,
) -> None:
    """Add a character with its reference images, style prompt and traits."""
    library = open_library()
    fields = _field_values(locals(), name)
    images = _load_images(image)
    if images and not 1 <= primary <= len(images):
        raise InvalidInputError(f"--primary {primary}: there are {len(images)} images")
    character = library.create(fields, images, primary_index=primary - 1)
    warn_lookalikes(library, [character])
    if json_output:
        print_json(character_json(character))
        return
    images_added = _count(len(character.images), "reference image")
    console.print(f"Added [bold]{_m(character.name)}[/] with {images_added}.")


@app.command("list")
@reports_errors
def list_characters(
    tag: str = typer.Option(None, "--tag", help="Only characters with this tag."),
    json_output: bool = JSON,
) -> None:
    """List the characters in the library."""
    characters = open_library().list()
    if tag:
        characters = [c for c in characters if tag.casefold() in (t.casefold() for t in c.tags)]
    if json_output:
        print_json([character_json(c) for c in characters])
        return
    if not characters:
        console.print("The library is empty. Add a character with `castbook character add`.")
        return
    table = Table(title=f"{_count(len(characters), 'character')}")
    table.add_column("Name", style="bold")
    table.add_column("Images", justify="right")
    table.add_column("Style prompt")
    table.add_column("Tags")
    table.add_column("Updated")
    for c in characters:
        table.add_row(
            _m(c.name),
            str(len(c.images)),
            _m(_shorten(c.style_prompt, 60)),
            _m(", ".join(c.tags)),
            c.updated_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


def _field_rows(record: object) -> list[tuple[str, str]]:
    """(label, text) for each field but the name that ``record`` (a character or an
    extraction) has, in the library's order; a list's entries are joined with commas."""
    rows = []
    for field in FORM_FIELDS:
        value = field_value(record, field)
        if field.name == "name" or value is None:
            continue
        text = ", ".join(value) if isinstance(value, list | tuple) else str(value)
        rows.append((field.label.lower(), text))
    return rows


@app.command()
@reports_errors
def show(name: str = typer.Argument(..., help="Character name."), json_output: bool = JSON) -> None:
    """Show every field, reference image and trained LoRA of a character."""
    library = open_library()
    character = library.get(name)
    loras = library.loras(character)
    if json_output:
        listed = [lora.model_dump(mode="json") for lora in loras]
        print_json({**character_json(character), "loras": listed})
        return
    table = Table(show_header=False, title=_m(character.name), title_style="bold")
    table.add_column("Field", style="bold")
    table.add_column("Value")
    rows = [
        *_field_rows(character),
        ("created", format_timestamp(character.created_at)),
        ("updated", format_timestamp(character.updated_at)),
    ]
    for label, value in rows:
        table.add_row(label, _m(value) if value else "[dim]—[/]")
    console.print(table)
    images = Table(title="Reference images")
    for column in ("#", "sha256", "size", "type", "primary"):
        images.add_column(column)
    for index, image in enumerate(character.images, start=1):
        images.add_row(
            str(index),
            image.sha256[:12],
            f"{image.width}×{image.height}",
            image.media_type,
            "★" if image.is_primary else "",
        )
    if character.images:
        console.print(images)
    else:
        console.print("[dim]No reference images.[/]")
    for lora in loras:
        console.print(
            f"LoRA for {_m(lora.base_model)}: trigger word {lora.trigger}, weight "
            f"{lora.weight:g}, {lora.steps} steps at rank {lora.rank} "
            f"(`castbook character loras {_m(character.name)}`)"
        )


@app.command()
@reports_errors
def edit(
    name: str = typer.Argument(..., help="Character name."),
    new_name: str = typer.Option(None, "--name", help="Rename the character."),
    style: str = STYLE,
    negative: str = NEGATIVE,
    description: str = DESCRIPTION,
    hair: str = HAIR,
    eyes: str = EYES,
    face: str = FACE,
    body: str = BODY,
    skin: str = SKIN,
    clothing: str = CLOTHING,
    accessory: list[str] = typer.Option(
        None, "--accessory", help="Replace the accessories (repeatable; --accessory '' clears)."
    ),
    feature: list[str] = typer.Option(
        None, "--feature", help="Replace the distinctive features (repeatable; '' clears)."
    ),
    tag: list[str] = typer.Option(None, "--tag", help="Replace the tags (repeatable; '' clears)."),
    add_image: list[Path] = typer.Option(None, "--add-image", help="Add a reference image."),
    remove_image: list[str] = typer.Option(
        None, "--remove-image", help="Remove an image by position (1, 2 …) or sha256 prefix."
    ),
    replace_images: list[Path] = typer.Option(
        None, "--replace-images", help="Replace all images with these (repeatable)."
    ),
    primary: str = typer.Option(
        None, "--primary", help="Make this image primary (position or sha256 prefix)."
    ),
    json_output: bool = JSON,
) -> None:
    """Change any field of a character, and add, remove or replace its images.

    Text options replace the field ('' clears it); list options replace the whole list.
    """
    changes = _field_values(locals(), new_name)
    if not (changes or add_image or remove_image or replace_images or primary):
        raise InvalidInputError("nothing to change; see `castbook character edit --help`")
    library = open_library()
    library.get(name)  # a missing character is reported before any image is read
    character = library.update(
        name,
        changes,
        add_images=_load_images(add_image),
        remove_images=remove_image or (),
        replace_images=_load_images(replace_images) if replace_images else None,
        primary=primary,
    )
    if add_image or replace_images:
        warn_lookalikes(library, [character])
    if json_output:
        print_json(character_json(character))
        return
    console.print(
        f"Updated [bold]{_m(character.name)}[/] "
        f"({_count(len(character.images), 'reference image')})."
    )


@app.command()
@reports_errors
def delete(
    name: str = typer.Argument(..., help="Character name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a character and the image files no other character uses."""
    library = open_library()
    character = library.get(name)
    if not yes:
        images = _count(len(character.images), "reference image")
        _confirm_or_stop(f"Delete {character.name} and its {images}?", "delete")
    library.delete(character.name)
    console.print(f"Deleted [bold]{_m(character.name)}[/].")


def _confirm_or_stop(question: str, verb: str) -> None:
    """Ask ``question``; a no exits with status 1, no answer (no terminal) is an error that
    names --yes. ``verb``: "delete", "remove"."""
    try:
        confirmed = typer.confirm(question, default=False)
    except typer.Abort:
        raise InvalidInputError(
            f"no confirmation given, nothing {verb}d; pass --yes to {verb} without asking"
        ) from None
    if not confirmed:
        err_console.print(f"Nothing {verb}d.")
        raise typer.Exit(1)


@app.command("export")
@reports_errors
def export_command(
    names: list[str] = typer.Argument(None, help="Names of the characters to export."),
    all_characters: bool = typer.Option(False, "--all", help="Export every character."),
    output: Path = typer.Option(..., "--output", "-o", help="File to write ('-' for stdout)."),
    fmt: ExportFormat = typer.Option(
        ExportFormat.CASTBOOK,
        "--format",
        help="castbook (everything), nbp (one image each), card (a PNG character card, "
        "V3 + V2) or card-json (the card as JSON); a card holds one character.",
    ),
) -> None:
    """Export characters, images included (base64), to a JSON file, or one as a PNG card."""
    library = open_library()
    if all_characters and names:
        raise InvalidInputError("give character names or --all, not both")
    if not all_characters and not names:
        raise InvalidInputError("name the characters to export, or pass --all")
    characters = library.list() if all_characters else [library.get(n) for n in _unique(names)]
    from castbook.library.exchange import lora_warnings

    for warning in lora_warnings(library, characters, fmt):  # only castbook's format keeps them
        err_console.print(f"[yellow]warning[/] {_m(warning)}")
    if fmt == ExportFormat.CARD:
        from castbook.library.exchange import export_card, write_bytes_atomically

        card = export_card(library, characters)
        if str(output) == "-":
            sys.stdout.buffer.write(card)
            sys.stdout.buffer.flush()
            return
        write_bytes_atomically(output, card)
        console.print(
            f"Exported {_m(characters[0].name)} as a character card (PNG, V3 and V2) "
            f"to {_m(str(output))}."
        )
        return
    if fmt == ExportFormat.NBP:
        from castbook.library.nbp_json import export_warnings

        for warning in export_warnings(characters):  # characters left out: no image
            err_console.print(f"[yellow]warning[/] {_m(warning)}")
        characters = [c for c in characters if c.images]
    if str(output) == "-":
        print_json(export_characters(library, characters, fmt))
        return
    write_json_atomically(output, export_characters(library, characters, fmt))
    images = sum(1 if fmt == ExportFormat.NBP else len(c.images) for c in characters)
    console.print(
        f"Exported {_count(len(characters), 'character')} "
        f"({_count(images, 'image')}) to {_m(str(output))}."
    )


@app.command("import")
@reports_errors
def import_command(
    file: Path = typer.Argument(
        ...,
        help="A castbook or nbp export (.json), or a character card (.png, .json, .charx).",
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Import nothing if any character in the file is invalid."
    ),
    json_output: bool = JSON,
) -> None:
    """Import characters; existing names are skipped, never overwritten.

    Exits 1 when some characters in the file were invalid (the valid ones are imported).
    """
    from castbook.library import import_file

    library = open_library()
    report = import_file(library, file, strict=strict)
    imported = [library.get(name) for name in report.imported]
    for lookalike in warn_lookalikes(library, imported, quiet=True):
        report.warnings.append((lookalike.character, lookalike.message))
    if json_output:
        print_json(report.as_dict())
    else:
        console.print(
            f"Imported {len(report.imported)}, skipped {len(report.skipped)}, "
            f"failed {len(report.failed)}."
        )
        for skipped, reason in report.skipped:
            console.print(f"  skipped {_m(skipped)}: {_m(reason)}")
        for entry, reason in report.failed:
            console.print(f"  [red]failed[/] {_m(entry)}: {_m(reason)}")
        for name, warning in report.warnings:
            console.print(f"  [yellow]warning[/] {_m(name)}: {_m(warning)}")
    if report.failed:
        raise typer.Exit(1)


@app.command()
@reports_errors
def extract(
    image: Path = typer.Argument(..., help="The picture to read the character from."),
    save: bool = typer.Option(False, "--save", help="Create the character with this image."),
    name: str = typer.Option(None, "--name", help="Name for --save."),
    provider: str = typer.Option(
        None, "--provider", help="A configured provider, or 'local' (default: the first)."
    ),
    json_output: bool = JSON,
) -> None:
    """Propose a character's fields from an image; review them, then --save."""
    from castbook.extract import Extractor

    if save and not name:
        raise InvalidInputError("--save needs --name NAME")
    data = read_image_file(image)
    extraction = Extractor(Settings.from_env().home).extract(
        data, provider=provider, source=str(image)
    )
    saved = None
    if save:
        library = open_library()
        saved = library.create(
            extraction.character_fields(name), [prepare_reference(data, source=str(image))]
        )
        warn_lookalikes(library, [saved])
    if json_output:
        result = extraction.model_dump()
        result["saved"] = character_json(saved) if saved else None
        print_json(result)
        return
    table = Table(show_header=False, title=f"Proposed character ({escape_text(extraction.source)})")
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = _field_rows(extraction)
    for label, value in rows:
        table.add_row(label, escape_text(value) if value else "[dim]—[/]")
    console.print(table)
    if extraction.note:
        console.print(escape_text(extraction.note))
    if extraction.unfilled:
        console.print(f"could not determine: {escape_text(', '.join(extraction.unfilled))}")
    if saved is not None:
        console.print(f"Saved [bold]{_m(saved.name)}[/] with this image as its reference.")
    else:
        console.print("Review, then save with --save --name NAME (or edit after saving).")


def escape_text(text: str) -> str:
    return _m(text)


def character_json(character: Character) -> dict[str, Any]:
    data = character.model_dump(mode="json")
    data["primary_image"] = character.primary_image.sha256 if character.primary_image else None
    return data


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for name in names:
        seen.setdefault(name.casefold(), None)
    return [n for n in names if seen.pop(n.casefold(), 0) is None]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _m(text: str) -> str:
    """Escape Rich markup in user text (a name like '[b]ob' must print as written)."""
    from rich.markup import escape

    return escape(text)


__all__ = ["CharacterLibrary", "app", "character_json"]


@app.command()
@reports_errors
def train(
    name: str = typer.Argument(..., help="Character name or id."),
    preset: str = typer.Option(
        "sd15-ip-adapter",
        "--preset",
        "-p",
        help="A diffusers SD 1.5 or SDXL preset: its base model.",
    ),
    steps: int = typer.Option(800, "--steps", help="Training steps (batch 1)."),
    rank: int = typer.Option(16, "--rank", help="LoRA rank: 4–32 is usual; higher holds more."),
    resolution: int = typer.Option(512, "--resolution", help="Training size in pixels (square)."),
    learning_rate: float = typer.Option(1e-4, "--learning-rate", help="AdamW learning rate."),
    seed: int = typer.Option(0, "--seed", help="Fixes crops, flips, noise and timesteps."),
    flip: bool = typer.Option(
        False, "--flip", help="Mirror images (default only for characters tagged 'symmetric')."
    ),
    checkpoint_every: int = typer.Option(
        100, "--checkpoint-every", help="Write a checkpoint every N steps."
    ),
    device: str | None = typer.Option(None, "--device", help="cuda or cpu (default: cuda if any)."),
    prior_preservation: bool = typer.Option(
        False,
        "--prior-preservation",
        help="Train beside class images the base model draws (DreamBooth's prior "
        "preservation): the LoRA changes the trigger word, not the whole class.",
    ),
    class_prompt: str | None = typer.Option(
        None,
        "--class-prompt",
        help="The class images' prompt (default: the caption without the trigger word).",
    ),
    class_images: int | None = typer.Option(
        None,
        "--class-images",
        help="How many class images (1-1000, default 100); drawn once, kept.",
    ),
    class_steps: int | None = typer.Option(
        None, "--class-steps", help="Denoising steps of each class image (1-100, default 25)."
    ),
    prior_loss_weight: float | None = typer.Option(
        None,
        "--prior-loss-weight",
        help="Weight of the class images' loss (above 0, at most 10, default 1).",
    ),
    report_prompts: int = typer.Option(
        4,
        "--report-prompts",
        help="Prompts rendered without and with the LoRA after training and scored (0-8; "
        "0 skips the consistency report).",
    ),
    sheet: Path | None = typer.Option(
        None, "--sheet", help="Write the report's before/after sheet (PNG) here."
    ),
    json_output: bool = JSON,
) -> None:
    """Train a LoRA from the character's reference images (at least 3; 10–20 varied ones
    are better) and store it with the character; generation then applies it whenever a
    preset runs the same base model. Then renders a fixed prompt set without and with it
    and prints the consistency score gain. Interrupted (Ctrl-C), the same command continues
    from its last checkpoint."""
    from castbook.generation import load_presets
    from castbook.generation.lora_train import (
        TrainingSettings,
        character_work_dir,
        check_character_training,
        train_character,
        training_summary,
    )

    prior = {
        "class_prompt": class_prompt,
        "class_images": class_images,
        "class_steps": class_steps,
        "prior_loss_weight": prior_loss_weight,
    }
    prior = {key: value for key, value in prior.items() if value is not None}
    if prior and not prior_preservation:
        given = ", ".join("--" + key.replace("_", "-") for key in prior)
        raise InvalidInputError(f"{given} set prior preservation: add --prior-preservation")
    settings_env = Settings.from_env()
    library = open_library()
    character = library.find(name)
    chosen = load_presets(settings_env.home).get(preset)
    settings = TrainingSettings(
        steps=steps,
        rank=rank,
        resolution=resolution,
        learning_rate=learning_rate,
        seed=seed,
        flip=flip,
        checkpoint_every=checkpoint_every,
        device=device,
        report_prompts=report_prompts,
        prior_preservation=prior_preservation,
        **prior,
    )
    check_character_training(library, character, chosen, settings)
    work_dir = character_work_dir(settings_env.home, character, chosen)
    with work_progress(f"{character.name} LoRA", disable=json_output) as bar:
        task = bar.add_task("loading the base model", total=steps + 2 * report_prompts)

        def progress(event) -> None:
            # Step 0: prior preservation's class images, drawn before the first step.
            described = f"loss {event.loss:.4f}" if event.step else event.message
            bar.update(task, completed=event.step, description=described)

        try:
            lora, trained = train_character(
                library, character, chosen, settings, work_dir, progress
            )
        except KeyboardInterrupt:
            _interrupted(work_dir, steps)
        except (StorageError, OSError):
            _not_stored(work_dir, steps)
            raise
        summary = training_summary(character, chosen, lora, trained)
        report = None
        if report_prompts:

            def rendering(done: int, total: int, message: str) -> None:
                bar.update(task, completed=steps + done, description=message)

            try:
                report = _consistency_report(library, character, chosen, report_prompts, rendering)
            except KeyboardInterrupt:
                err_console.print(
                    f"interrupted during the consistency report; {_m(character.name)}'s LoRA "
                    f"({lora.sha256[:12]}) is stored: `castbook character loras "
                    f"{_m(character.name)}` lists it; do not train again to get the report"
                )
                raise typer.Exit(130) from None
            except CastbookError as exc:  # the LoRA is stored: say why there is no report
                summary["consistency"] = {"error": str(exc)}
                err_console.print(f"[yellow]warning[/] no consistency report: {_m(str(exc))}")
            else:
                summary["consistency"] = report.figures()
    if report is not None and sheet is not None:
        sheet.write_bytes(report.sheet)
        summary["consistency"]["sheet"] = str(sheet)
    if json_output:
        print_json(summary)
        return
    resumed = f", continued from step {trained.resumed_from}" if trained.resumed_from else ""
    console.print(
        f"Trained [bold]{_m(character.name)}[/]'s LoRA for {_m(lora.base_model)}: "
        f"{lora.steps} steps{resumed}, loss {summary['loss_first']} → {summary['loss_last']}, "
        f"{lora.byte_size // 1024} KiB ({lora.sha256[:12]}). Trigger word: {lora.trigger}."
    )
    if report is not None:
        _print_report(report, sheet)


def _interrupted(work_dir: Path, steps: int) -> NoReturn:
    """Ctrl-C during training: say what was kept and how to go on (exit status 130). The
    step is the checkpoint's: a resumed run stopped before its first new step (while the
    model loads) still has the earlier run's."""
    from castbook.generation.lora_train import CLASS_FOLDER, checkpoint_step

    step = checkpoint_step(work_dir)
    if step is not None:
        err_console.print(
            f"interrupted at step {step} of {steps}; the checkpoint in {_m(str(work_dir))} "
            "keeps it: run the same command to continue from there"
        )
    else:
        drawn = len(list((work_dir / CLASS_FOLDER).glob("*.png")))
        kept = f" (the {drawn} class image(s) drawn so far are kept for it)" if drawn else ""
        err_console.print(
            f"interrupted before the first training step; the next run starts over{kept}"
        )
    raise typer.Exit(130)


def _not_stored(work_dir: Path, steps: int) -> None:
    """Storing failed (the database or the image store out of reach): where every step was
    trained, the checkpoint keeps them (train_lora's ``keep``), and the error alone would
    leave a retraining from scratch as the obvious next step."""
    from castbook.generation.lora_train import checkpoint_step

    if checkpoint_step(work_dir) == steps:
        err_console.print(
            f"all {steps} steps are trained but the LoRA could not be stored; the checkpoint "
            f"in {_m(str(work_dir))} keeps it: run the same command again to store it "
            "without training"
        )


def _consistency_report(library: CharacterLibrary, character: Character, preset, count, progress):
    """The LoRA just trained, rendered and scored without and with it (render.lora_report)."""
    from castbook.evaluation import Scorer
    from castbook.generation import create_backend
    from castbook.render.lora_report import lora_report

    with Scorer() as scorer:
        return lora_report(
            library, character, preset, create_backend(preset), scorer, count, progress
        )


def _print_report(report, sheet: Path | None) -> None:
    """Each prompt's score without and with the LoRA, then mean and worst and their gain."""
    table = Table(title="Consistency without and with the LoRA (0-100, fixed seeds)")
    for column in ("prompt", "seed", "without", "with", "gain"):
        table.add_column(column, justify="left" if column == "prompt" else "right")
    without = [r for r in report.renders if not r.with_lora]
    with_ = [r for r in report.renders if r.with_lora]
    for before, after in zip(without, with_, strict=True):
        gain = after.score - before.score
        table.add_row(
            _m(before.prompt),
            str(before.seed),
            f"{before.score:.1f}",
            f"{after.score:.1f}",
            f"{gain:+.1f}",
        )
    figures = report.figures()
    for key in ("mean", "worst"):
        table.add_row(
            f"[bold]{key}[/]",
            "",
            f"{figures['without'][key]:.1f}",
            f"{figures['with'][key]:.1f}",
            f"[bold]{figures['gain'][key]:+.1f}[/]",
        )
    console.print(table)
    if sheet is not None:
        console.print(f"Before/after sheet: {_m(str(sheet))}")


@app.command("loras")
@reports_errors
def loras_command(
    name: str = typer.Argument(..., help="Character name or id."),
    weight: float | None = typer.Option(
        None,
        "--weight",
        help="Set how strongly generation applies the LoRA (0–2; 0 turns it off, 1 as trained).",
    ),
    remove: bool = typer.Option(False, "--remove", help="Remove the LoRA (asks first)."),
    base_model: str | None = typer.Option(
        None, "--base-model", help="Which LoRA, by the base model it was trained on."
    ),
    preset: str | None = typer.Option(
        None, "--preset", "-p", help="Which LoRA: the one for this preset's base model."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Remove without asking."),
    json_output: bool = JSON,
) -> None:
    """List a character's trained LoRAs (one per base model), set one's weight, or remove
    one. With --weight or --remove, name the LoRA with --base-model or --preset unless the
    character has only one."""
    library = open_library()
    character = library.find(name)
    if weight is None and not remove:
        if base_model is not None or preset is not None:
            raise InvalidInputError(
                "--base-model and --preset choose a LoRA for --weight or --remove"
            )
        _list_loras(library, character, json_output)
        return
    if weight is not None and remove:
        raise InvalidInputError("give --weight or --remove, not both")
    lora = _chosen_lora(library, character, base_model, preset)
    if remove:
        if not yes:
            _confirm_or_stop(f"Remove {character.name}'s LoRA for {lora.base_model}?", "remove")
        removed = library.remove_lora(character, lora.base_model)
        if json_output:
            print_json(removed.model_dump(mode="json"))
            return
        console.print(f"Removed [bold]{_m(character.name)}[/]'s LoRA for {_m(removed.base_model)}.")
        return
    assert weight is not None
    changed = library.set_lora_weight(character, lora.base_model, weight)
    if json_output:
        print_json(changed.model_dump(mode="json"))
        return
    console.print(
        f"[bold]{_m(character.name)}[/]'s LoRA for {_m(changed.base_model)} now applies at "
        f"weight {changed.weight:g}."
    )


def _chosen_lora(
    library: CharacterLibrary, character: Character, base_model: str | None, preset: str | None
):
    """The LoRA --base-model or --preset names, or the character's only one."""
    loras = library.loras(character)
    if not loras:
        raise InvalidInputError(
            f"{character.name} has no LoRA; train one with `castbook character train "
            f"{character.name}`"
        )
    if base_model is not None and preset is not None:
        raise InvalidInputError("give --base-model or --preset, not both")
    if preset is not None:
        from castbook.generation import load_presets
        from castbook.generation.prepare import lora_base_model

        chosen = load_presets(Settings.from_env().home).get(preset)
        base_model = lora_base_model(chosen)
        if base_model is None:
            raise InvalidInputError(
                f"preset {chosen.id!r} does not say which base model it runs; use --base-model"
            )
    if base_model is None:
        if len(loras) > 1:
            raise InvalidInputError(
                f"{character.name} has {len(loras)} LoRAs; choose one with --base-model: "
                + ", ".join(lora.base_model for lora in loras)
            )
        return loras[0]
    lora = next((x for x in loras if x.base_model == base_model), None)
    if lora is None:
        raise InvalidInputError(
            f"{character.name} has no LoRA for {base_model}; it has one for "
            + ", ".join(x.base_model for x in loras)
        )
    return lora


def _list_loras(library: CharacterLibrary, character: Character, json_output: bool) -> None:
    loras = library.loras(character)
    if json_output:
        print_json([lora.model_dump(mode="json") for lora in loras])
        return
    if not loras:
        console.print(
            f"[dim]{_m(character.name)} has no LoRA; train one with `castbook character train "
            f"{_m(character.name)}`.[/]"
        )
        return
    table = Table(title=f"{_m(character.name)}'s LoRAs")
    for column in ("base model", "family", "trigger", "rank", "steps", "px", "weight", "sha256"):
        table.add_column(column)
    for lora in loras:
        table.add_row(
            _m(lora.base_model),
            lora.family,
            lora.trigger,
            str(lora.rank),
            str(lora.steps),
            str(lora.resolution),
            f"{lora.weight:g}",
            lora.sha256[:12],
        )
    console.print(table)
