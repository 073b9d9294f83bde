"""``castbook worker``: a Celery worker that runs queued jobs (``CASTBOOK_EXECUTOR=celery``)."""

from __future__ import annotations

import typer

from castbook.cli.errors import reports_errors
from castbook.settings import Settings

__all__ = ["worker"]


@reports_errors
def worker(
    queue: list[str] = typer.Option(
        ["default"],
        "--queue",
        "-Q",
        help="Queue to take jobs from (repeat for several): default, a10g, a100, h100.",
    ),
    concurrency: int = typer.Option(
        1, "--concurrency", "-c", min=1, help="Jobs run at the same time."
    ),
    pool: str | None = typer.Option(
        None,
        "--pool",
        help="solo (default for concurrency 1), prefork (default above 1: one process, and "
        "one copy of the models, per job slot) or threads (shared models; remote backends).",
    ),
    loglevel: str = typer.Option("info", "--loglevel", "-l", help="debug, info, warning, error."),
    hostname: str | None = typer.Option(
        None, "--hostname", "-n", help="Celery node name (default castbook-<pid>@<host>)."
    ),
) -> None:
    """Run jobs from the Redis broker's queues, keeping models loaded.

    Uses the settings `castbook serve` uses: CASTBOOK_HOME (presets),
    CASTBOOK_DATABASE_URL, CASTBOOK_BLOB_DIR, and CASTBOOK_REDIS_URL
    (default redis://127.0.0.1:6379/0).

    On several machines, point them all at one PostgreSQL database, one
    Redis and one shared blob folder. A worker killed mid-job loses
    nothing: the job runs again on the next worker for its queue.
    """
    from castbook.jobs.celery_executor import run_worker
    from castbook.tasks import handlers

    code = run_worker(
        Settings.from_env(),
        queue,
        concurrency=concurrency,
        pool=pool,
        handlers=handlers,
        loglevel=loglevel,
        hostname=hostname,
    )
    if code:
        raise typer.Exit(code)
