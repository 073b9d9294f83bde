"""``castbook blobs``: the image store itself (moving it to object storage)."""

from __future__ import annotations

import typer

from castbook.cli.console import console, print_json
from castbook.cli.errors import reports_errors
from castbook.settings import Settings

blobs_app = typer.Typer(help="The image store: move it to S3-compatible object storage.")


@blobs_app.command("migrate")
@reports_errors
def migrate_command(
    to: str = typer.Option(
        ..., "--to", help="Where to copy every blob: s3://bucket/prefix, or a folder."
    ),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Do not read each blob back from the target to check it."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Copy every blob of the store in use (CASTBOOK_BLOB_URL, else CASTBOOK_BLOB_DIR) to
    --to. Resumable (what the target holds is not sent again), and every blob is checked
    against its sha256 on both sides. The store in use is not changed: set
    CASTBOOK_BLOB_URL to the target once the run reports no failures."""
    from pathlib import Path

    from castbook.blobs import BlobStore, open_blob_store
    from castbook.blobs.migrate import MigrateReport, migrate
    from castbook.blobs.s3 import S3BlobStore

    settings = Settings.from_env()
    source = open_blob_store(settings)
    if isinstance(source, S3BlobStore):  # a one-off pass: do not flush this machine's cache
        source = S3BlobStore(source.location, endpoint=source.endpoint, region=source.region)
    if to.startswith("s3://"):
        # No cache on the target: the read-back must come from the bucket itself.
        target = S3BlobStore(to, endpoint=settings.blob_endpoint, region=settings.blob_region)
    else:
        target = BlobStore(Path(to).expanduser())
    if target.location == source.location:
        raise typer.BadParameter(f"--to is the store in use ({source.location})")

    def show(report: MigrateReport) -> None:
        if not json_output:
            console.print(
                f"{report.done}/{report.total} blobs ({report.bytes / 1e6:.1f} MB): "
                f"{report.copied} copied, {report.present} already there, "
                f"{report.verified} verified, {len(report.failed)} failed",
                highlight=False,
            )

    if not json_output:
        console.print(f"migrating {source.location} → {target.location}", highlight=False)
    report = migrate(source, target, verify=not no_verify, progress=show)
    if json_output:
        print_json(report.to_json())
    else:
        for blob_id, why in report.failed.items():
            console.print(f"[red]failed[/] {blob_id}: {why}", highlight=False)
    if report.failed:
        raise typer.Exit(1)
