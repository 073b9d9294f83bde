"""``castbook models`` (list, pull, remove) and ``castbook doctor``; ``ensure_models`` is the
``--pull`` of generate, render and story."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from castbook.cli.console import console, err_console, print_json
from castbook.cli.errors import reports_errors
from castbook.errors import InvalidInputError
from castbook.models.status import STARTER_PRESET
from castbook.settings import Settings

__all__ = ["doctor", "ensure_models", "models_app"]

models_app = typer.Typer(
    help="The models presets load: list their state, pull them from the hub, remove them.",
    no_args_is_help=True,
)


def _catalog():
    from castbook.generation import load_presets

    return load_presets(Settings.from_env().home)


def _sizes():
    from castbook.models import SizeBook

    return SizeBook(Settings.from_env().home)


def _size(value: int | None) -> str:
    from castbook.models import format_bytes

    return format_bytes(value) if value else "—"


def _ask_hub_for_sizes(presets: list[Any], sizes: Any) -> str | None:
    """Fill in download sizes the size book lacks; returns why the hub was not asked (or
    could not be reached), or None."""
    import os

    from castbook.errors import HubUnreachableError, ModelDownloadError
    from castbook.models import plan_pull, preset_parts

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    for preset in presets:
        parts = [p for p in preset_parts(preset) if p.is_hub and sizes.reported_size(p) is None]
        if not parts:
            continue
        try:
            sizes.record(plan_pull(preset.id, parts, preset.options, timeout=5.0))
        except HubUnreachableError as exc:
            return str(exc)
        except ModelDownloadError:
            continue  # gated or missing repositories: their error shows on pull
    return None


@models_app.command("list")
@reports_errors
def list_models(
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
    offline: bool = typer.Option(
        False, "--offline", help="Only the local cache (sizes from earlier runs); never the hub."
    ),
) -> None:
    """Every preset's models: installed / missing / partial / local folder, size on disk and
    the download size (asked from the hub when it can be reached)."""
    from castbook.models import models_of
    from castbook.models.status import estimated_size

    presets = list(_catalog())
    sizes = _sizes()
    why_not = "--offline" if offline else _ask_hub_for_sizes(presets, sizes)
    reports = [models_of(preset, sizes) for preset in presets]
    if json_output:
        print_json(
            {
                "presets": [report.to_json() for report in reports],
                "hub": None if why_not else "reached",
                "hub_note": why_not,
            }
        )
        return
    table = Table(title="Models of each preset (one row per part)")
    for column in ("preset", "part", "repository or folder", "state", "on disk", "download"):
        table.add_column(column, overflow="fold")
    table.add_column("path", overflow="fold", style="dim")
    colours = {"installed": "green", "local folder": "green", "partial": "yellow"}
    for report in reports:
        if report.missing_packages:
            table.add_row(
                escape(report.preset_id),
                "packages",
                escape(", ".join(report.missing_packages)),
                "[red]missing packages[/]",
                "",
                escape(report.install_command or ""),
            )
        if not report.parts:
            if not report.missing_packages:
                table.add_row(escape(report.preset_id), "", "runs on a remote service", "remote")
            table.add_section()
            continue
        for index, status in enumerate(report.parts):
            state = status.state.value
            colour = colours.get(state, "red")
            reported = sizes.reported_size(status.part) if status.part.is_hub else None
            estimate = estimated_size(status.part) if status.part.is_hub else None
            download = _size(reported) if reported else f"≈{_size(estimate)}" if estimate else "—"
            table.add_row(
                escape(report.preset_id) if index == 0 else "",
                escape(status.part.label),
                escape(status.part.location),
                f"[{colour}]{state}[/]",
                _size(status.size_on_disk),
                download,
                escape(status.path or ""),
            )
        table.add_section()
    console.print(table)
    if why_not:
        console.print(f"[dim]Hub not asked for sizes: {escape(why_not)}[/]")
    if any(r.estimated for r in reports):
        console.print("[dim]≈ sizes are computed from the architectures (weights only).[/]")
    pullable = [r for r in reports if r.pullable]
    if pullable and not any(r.runnable for r in reports if r.backend == "diffusers"):
        starter = next((r for r in pullable if r.preset_id == STARTER_PRESET), pullable[0])
        command = escape(starter.pull_command())
        console.print(f"No local preset can run yet. Get one with: {command}")


def _target(name: str) -> tuple[str, list[Any], dict[str, Any]]:
    """A preset id, or a hub repository: the parts of every preset that uses it, or (used
    by none) its safetensors weights and configuration files."""
    from castbook.errors import NotFoundError
    from castbook.models import ModelPart, preset_parts
    from castbook.models.parts import is_hub_id

    catalog = _catalog()
    try:
        preset = catalog.get(name)
    except NotFoundError:
        if not is_hub_id(name) or "/" not in name:
            raise
    else:
        parts = preset_parts(preset)
        if not parts:
            raise NotFoundError(
                f"preset {name!r} runs on the {preset.backend} backend; it has no models to pull"
            )
        return preset.id, parts, preset.options
    using = [p for preset in catalog for p in preset_parts(preset) if p.location == name]
    if using:
        return name, list(dict.fromkeys(using)), {}
    return (
        name,
        [ModelPart("repository", name, ("*.json",), optional=("*.txt", "*.safetensors"))],
        {},
    )


def _print_plan(plan: Any) -> None:
    from castbook.models import format_bytes

    table = Table(title=f"Pull {escape(plan.name)} into {escape(str(plan.cache))}")
    for column in ("repository", "file", "for", "size", ""):
        table.add_column(column, overflow="fold")
    for f in plan.files:
        state = "here" if f.present else ("in cache" if f.cached else "download")
        table.add_row(
            escape(f.repo_id), escape(f.filename), ", ".join(f.roles), format_bytes(f.size), state
        )
    err_console.print(table)
    err_console.print(
        f"{len(plan.to_download)} file(s) to fetch, {format_bytes(plan.download_bytes)} to "
        f"download (the whole set is {format_bytes(plan.total_bytes)})"
    )


def run_pull(
    name: str,
    parts: list[Any],
    options: dict[str, Any],
    *,
    yes: bool,
    quiet: bool,
    verify: bool = True,
) -> Any:
    from castbook.models import format_bytes, plan_pull, pull

    plan = plan_pull(name, parts, options)
    _sizes().record(plan)
    if not quiet:
        _print_plan(plan)
    if plan.download_bytes and not yes:
        if not sys.stdin.isatty():
            raise InvalidInputError(
                f"not a terminal, so not asking: add --yes to download "
                f"{format_bytes(plan.download_bytes)}"
            )
        if not typer.confirm(f"Download {format_bytes(plan.download_bytes)}?", err=True):
            raise typer.Exit(1)
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=quiet,
    )
    with bar:
        task = bar.add_task("starting", total=plan.download_bytes or None)

        def progress(event: Any) -> None:
            label = event.filename.rsplit("/", 1)[-1] or "starting"
            bar.update(
                task,
                completed=event.done_bytes,
                total=event.total_bytes or None,
                description=f"{label} ({event.files_done}/{event.files_total})",
            )

        pull(plan, progress, verify_hashes=verify)
    return plan


@models_app.command("pull")
@reports_errors
def pull_models(
    name: str = typer.Argument(..., metavar="PRESET|REPO_ID", help="A preset id or a hub repo."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Download without asking."),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Check each file's hash (sizes are always checked)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON (the plan) when done."),
) -> None:
    """Download what a preset loads (only those files) into the Hugging Face cache, with
    progress; resumes, verifies sizes and hashes. HF_ENDPOINT, HF_TOKEN and HF_HOME apply."""
    target, parts, options = _target(name)
    plan = run_pull(target, parts, options, yes=yes, quiet=json_output, verify=verify)
    if json_output:
        print_json(plan.to_json())
        return
    from castbook.models import format_bytes

    console.print(
        f"[green]{escape(target)} is installed[/] ({format_bytes(plan.total_bytes)} in "
        f"{escape(str(plan.cache))})"
    )


@models_app.command("remove")
@reports_errors
def remove_models(
    preset_id: str = typer.Argument(
        ..., metavar="PRESET", help="The preset whose models to remove."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Remove without asking."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Free the disk space a preset's downloaded models take; files another preset loads
    stay. Local folders are never touched."""
    from castbook.models import format_bytes, models_of, remove_preset

    catalog = _catalog()
    preset = catalog.get(preset_id)
    report = models_of(preset)
    if not yes and not json_output:
        if not sys.stdin.isatty():
            raise InvalidInputError("not a terminal, so not asking: add --yes to remove")
        if not typer.confirm(
            f"Remove {preset.id}'s models ({format_bytes(report.size_on_disk)} on disk, "
            "less what other presets share)?",
            err=True,
        ):
            raise typer.Exit(1)
    removed, freed = remove_preset(preset, list(catalog))
    if json_output:
        print_json({"preset": preset.id, "removed": removed, "freed_bytes": freed})
        return
    console.print(f"Removed {len(removed)} file(s), freed {format_bytes(freed)}.")


def ensure_models(preset: Any, *, pull: bool, quiet: bool) -> None:
    """Before generating: pull what ``preset`` lacks (``--pull``), or fail at once naming
    every missing part and the command that fetches them."""
    from castbook.models import models_of, preset_parts, require_installed

    sizes = _sizes()
    report = models_of(preset, sizes)
    if report.runnable:
        return
    if pull and report.pullable:
        run_pull(preset.id, preset_parts(preset), preset.options, yes=True, quiet=quiet)
    require_installed(preset, sizes)


@reports_errors
def doctor(json_output: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """What this machine can run: the device, versions, each preset's models and how it
    loads here, the Hugging Face cache and its free space."""
    from castbook.models import format_bytes
    from castbook.models.doctor import diagnose

    report = diagnose(list(_catalog()), _sizes())
    if json_output:
        print_json(report.to_json())
        return
    device = report.device
    if device is None:
        console.print("[red]torch is not installed[/]: pip install 'castbook[diffusers]'")
    else:
        memory = f", {device.memory_gb} GB" if device.memory_gb else ""
        console.print(f"[bold]device[/]: {device.kind} ({escape(device.name)}{memory})")
    for name, version in report.versions.items():
        console.print(f"[bold]{name}[/]: {version or '[red]not installed[/]'}")
    free = format_bytes(report.cache_free_bytes) if report.cache_free_bytes is not None else "?"
    console.print(f"[bold]Hugging Face cache[/]: {escape(report.cache)} ({free} free)")
    table = Table(title="Presets")
    for column in ("preset", "runnable", "why not / how it loads here"):
        table.add_column(column, overflow="fold")
    for models, load in report.presets:
        if models.missing_packages:
            lacking = ", ".join(models.missing_packages)
            table.add_row(
                escape(models.preset_id),
                "[red]no[/]",
                f"the {models.backend} backend needs {escape(lacking)}: "
                f"{escape(models.install_command or '')}",
            )
            continue
        if models.backend != "diffusers":
            table.add_row(escape(models.preset_id), "remote", f"the {models.backend} backend")
            continue
        if models.runnable:
            assert load is not None
            how = f"{load['device']}, {load['dtype']}"
            if load["offload"] == "model":
                how += f", model CPU offload ({load['offload_reason']})"
            table.add_row(escape(models.preset_id), "[green]yes[/]", how)
        else:
            missing = ", ".join(s.part.label for s in models.parts if not s.ready)
            table.add_row(
                escape(models.preset_id),
                "[red]no[/]",
                f"missing {missing}: {escape(models.pull_command())}",
            )
    console.print(table)
    local = [models for models, _ in report.presets if models.backend == "diffusers"]
    if local and not any(models.runnable for models in local):
        starter = next((m for m in local if m.preset_id == STARTER_PRESET), local[0])
        console.print(f"No local preset can run yet. Get one with: {starter.pull_command()}")
