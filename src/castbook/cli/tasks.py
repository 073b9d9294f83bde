"""``castbook tasks``: the task records castbook keeps, and pruning them by hand."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from castbook.cli.console import console, print_json
from castbook.cli.errors import reports_errors
from castbook.settings import Settings, parse_duration

if TYPE_CHECKING:
    from castbook.jobs.retention import Holdings

__all__ = ["describe_holdings", "size_text", "tasks_app"]

tasks_app = typer.Typer(
    help="Task records: prune finished tasks, their outputs and their input-only images.",
    no_args_is_help=True,
)


@tasks_app.command("prune")
@reports_errors
def prune_tasks(
    older_than: str | None = typer.Option(
        None,
        "--older-than",
        help="Delete tasks that ended longer ago than this: 30d, 12h, 90m or 3600s "
        "(default: CASTBOOK_TASK_RETENTION).",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would be deleted (tasks, blobs, bytes); delete nothing."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Delete finished tasks (succeeded, failed, cancelled) older than --older-than, with
    their outputs and the images only their inputs named, then every stored blob nothing
    references. Queued and running tasks, and any image a character or a kept task uses,
    stay. Safe while `castbook serve` and workers run."""
    from castbook.blobs import open_blob_store
    from castbook.db import Database
    from castbook.jobs.retention import describe_duration, prune

    settings = Settings.from_env()
    seconds = (
        parse_duration("--older-than", older_than)
        if older_than is not None
        else settings.task_retention
    )
    report = prune(
        Database(settings.database_url),
        open_blob_store(settings),
        older_than=seconds,
        dry_run=dry_run,
    )
    if json_output:
        print_json(report.to_json())
        return
    verb = "would delete" if dry_run else "deleted"
    if report.cutoff is None:
        console.print("No task expires (CASTBOOK_TASK_RETENTION is off and no --older-than).")
    else:
        console.print(
            f"{verb} {report.tasks} task(s) that ended more than {describe_duration(seconds)} "
            f"ago (before {report.cutoff:%Y-%m-%d %H:%M:%S} UTC), with {report.outputs} "
            "output(s)"
        )
    console.print(
        f"{verb} {report.blobs} blob(s) nothing else uses, {size_text(report.bytes)}"
        + (
            f"; {report.held_back} unreferenced blob(s) written recently (or since the oldest "
            "running task started) are left for a later pass"
            if report.held_back
            else ""
        )
    )


def size_text(count: int) -> str:
    """Bytes as people read them: 512 bytes, 3.2 MB."""
    size = float(count)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{count} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} bytes"


def describe_holdings(held: Holdings) -> list[tuple[str, str]]:
    """``castbook info``'s lines about tasks: what is held, and what retention will do."""
    by_status = ", ".join(f"{count} {status}" for status, count in held.tasks.items() if count)
    if held.retention == "off":
        expiry = "never (retention off: finished tasks are kept until deleted)"
    else:
        expiry = (
            f"{held.expired} task(s) expired now (the next pass, within "
            f"{held.prune_interval}, deletes them)"
        )
        if held.next_expiry is not None:
            expiry += f"; then the next on {held.next_expiry:%Y-%m-%d %H:%M} UTC"
    oldest = held.oldest_finished
    return [
        ("tasks", by_status or "none"),
        (
            "task outputs",
            f"{held.outputs} in {held.output_blobs} blob(s), {size_text(held.output_bytes)}",
        ),
        (
            "task input images",
            f"{held.input_only_blobs} blob(s) named only by task inputs, "
            f"{size_text(held.input_only_bytes)}",
        ),
        ("oldest finished task", f"{oldest:%Y-%m-%d %H:%M} UTC" if oldest else "none"),
        ("task retention", f"{held.retention} (CASTBOOK_TASK_RETENTION)"),
        ("prune", expiry),
    ]
