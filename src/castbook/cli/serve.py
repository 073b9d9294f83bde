"""``castbook serve`` (the HTTP API) and ``castbook keys`` (its API keys)."""

from __future__ import annotations

import contextlib
import gc
import math
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from castbook.cli.console import console, err_console, print_json
from castbook.cli.errors import reports_errors
from castbook.settings import DEFAULT_OWNER, Settings

if TYPE_CHECKING:
    from types import FrameType

    from castbook.api.auth import ApiKey

__all__ = ["keys_app", "serve"]

keys_app = typer.Typer(
    help="API keys for the HTTP API: create (shown once), list, set quotas, revoke.",
    no_args_is_help=True,
)

_MB = 1024 * 1024


def _rate_option() -> float | None:
    return typer.Option(
        None, "--rate", min=0, help="Requests/s for this key (0: no limit; default: the server's)."
    )


def _burst_option() -> int | None:
    return typer.Option(None, "--burst", min=1, help="Requests at once above that rate.")


def _queued_option() -> int | None:
    return typer.Option(
        None, "--max-queued", min=0, help="Queued and running tasks of the key's owner (0: none)."
    )


def _storage_option() -> float | None:
    return typer.Option(
        None, "--max-storage-mb", min=0, help="MB of stored images of the key's owner (0: none)."
    )


def _limits(
    rate: float | None, burst: int | None, queued: int | None, storage_mb: float | None
) -> dict[str, float | int | None]:
    return {
        "rate_limit": rate,
        "rate_burst": burst,
        "max_queued": queued,
        "max_storage_bytes": None if storage_mb is None else int(storage_mb * _MB),
    }


def _limits_text(key: ApiKey) -> str:
    shown = {
        "rate": f"{key.rate_limit:g}/s" if key.rate_limit is not None else None,
        "burst": key.rate_burst,
        "queued": key.max_queued,
        "storage": (
            f"{key.max_storage_bytes / _MB:g} MB" if key.max_storage_bytes is not None else None
        ),
    }
    return ", ".join(f"{name} {value}" for name, value in shown.items() if value is not None)


@reports_errors
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="Jobs run at the same time (threads of the job worker process).",
    ),
    log_level: str = typer.Option(
        "info", "--log-level", help="critical, error, warning, info or debug."
    ),
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs) with the local job executor.

    Uses CASTBOOK_HOME, CASTBOOK_DATABASE_URL and CASTBOOK_BLOB_DIR like every command.
    Tasks a killed server left running are re-queued (or failed with the reason) on start.
    """
    import uvicorn

    from castbook.api import ApiConfig, ApiKeys, create_app

    settings = Settings.from_env()
    app = create_app(settings, config=ApiConfig.from_env(job_workers=workers))
    keys: ApiKeys = app.state.services.keys
    if not keys.list(include_revoked=False):
        err_console.print(
            "note: there are no API keys yet; every request but /health will get 401. "
            "Create one with `castbook keys create --name NAME`."
        )
    err_console.print(f"castbook API on http://{host}:{port} (docs at /docs)", highlight=False)
    # What is loaded by now (the app, FastAPI, SQLAlchemy, pydantic: ~150 000 objects) lives as
    # long as the process. Frozen, the collector's full passes skip it: such a pass took 75 ms
    # on a request's path (0.5 s on a busy machine), a p99 of its own.
    gc.collect()
    gc.freeze()
    services = app.state.services
    grace = services.config.shutdown_grace_seconds

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Before uvicorn waits for open requests: event streams and waits end now, so
            # a client following a task does not keep the server (and the task) going.
            services.stopping = True
            super().handle_exit(sig, frame)

    # Any other request still open after the grace is cut off, then the jobs get theirs.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=max(1, math.ceil(grace)),
    )
    server = Server(config)
    # Ctrl+C is raised again after the graceful stop; uvicorn.run swallows it too.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise typer.Exit(3)  # uvicorn said why (the port taken, …), as uvicorn.run does


def _keys():
    from castbook.api import ApiKeys
    from castbook.db import Database

    return ApiKeys(Database(Settings.from_env().database_url))


@keys_app.command("create")
@reports_errors
def create_key(
    name: str = typer.Option(..., "--name", help="What the key is for, e.g. 'laptop'."),
    owner: str = typer.Option(
        DEFAULT_OWNER,
        "--owner",
        help="Whose records the key reaches (default: the CLI's own library, 'local').",
    ),
    admin: bool = typer.Option(
        False, "--admin", help="Also allow it to pull and remove the server's models."
    ),
    rate: float | None = _rate_option(),
    burst: int | None = _burst_option(),
    max_queued: int | None = _queued_option(),
    max_storage_mb: float | None = _storage_option(),
    plain: bool = typer.Option(False, "--plain", help="Print only the key (for scripts)."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON (the key included)."),
) -> None:
    """Create an API key and print it once; only its hash is stored. Quotas not given are
    the server's (CASTBOOK_RATE_LIMIT, CASTBOOK_RATE_BURST, CASTBOOK_MAX_QUEUED_TASKS,
    CASTBOOK_MAX_STORAGE_MB)."""
    limits = _limits(rate, burst, max_queued, max_storage_mb)
    key, secret = _keys().create(name, owner, admin=admin, **limits)
    if plain:
        typer.echo(secret)
        return
    if json_output:
        print_json({**key.to_json(), "key": secret})
        return
    kind = "admin API key" if key.admin else "API key"
    err_console.print(
        f"Created {kind} [bold]{escape(key.name)}[/] (id {key.id}, owner {escape(key.owner)}). "
        "Copy it now; it cannot be shown again:"
    )
    typer.echo(secret)


@keys_app.command("list")
@reports_errors
def list_keys(json_output: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List API keys (never the keys themselves: their first characters)."""
    keys = _keys().list()
    if json_output:
        print_json([key.to_json() for key in keys])
        return
    if not keys:
        console.print("No API keys. Create one with `castbook keys create --name NAME`.")
        return
    table = Table(title="API keys")
    # Keys with quotas of their own get a column for them; otherwise the server's apply.
    quotas = any(_limits_text(key) for key in keys)
    columns = ("id", "name", "owner", "key", "created", "last used", "state", "admin")
    for column in (*columns, "quotas") if quotas else columns:
        table.add_column(column)
    for key in keys:
        table.add_row(
            key.id,
            escape(key.name),
            escape(key.owner),
            f"{key.prefix}…",
            key.created_at.strftime("%Y-%m-%d %H:%M"),
            key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "never",
            "active" if key.active else "[red]revoked[/]",
            "yes" if key.admin else "",
            *([_limits_text(key) or "server's"] if quotas else []),
        )
    console.print(table)


@keys_app.command("revoke")
@reports_errors
def revoke_key(
    key_id: str = typer.Argument(..., metavar="ID", help="The key's id (or 6+ of its first)."),
) -> None:
    """Revoke an API key; requests with it get 401 from then on."""
    key = _keys().revoke(key_id)
    console.print(f"Revoked API key [bold]{escape(key.name)}[/] ({key.id}).")


@keys_app.command("limits")
@reports_errors
def set_key_limits(
    key_id: str = typer.Argument(..., metavar="ID", help="The key's id (or 6+ of its first)."),
    rate: float | None = _rate_option(),
    burst: int | None = _burst_option(),
    max_queued: int | None = _queued_option(),
    max_storage_mb: float | None = _storage_option(),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Set a key's quotas; a quota not given goes back to the server's setting. Running
    servers apply the change within a second."""
    key = _keys().set_limits(key_id, **_limits(rate, burst, max_queued, max_storage_mb))
    if json_output:
        print_json(key.to_json())
        return
    shown = _limits_text(key) or "the server's settings"
    console.print(f"Quotas of API key [bold]{escape(key.name)}[/] ({key.id}): {escape(shown)}.")
