"""The app factory: ``create_app(settings)`` builds a complete, independent API app.

Nothing lives at module level, so every test (and every server process) builds its own app
against its own ``CASTBOOK_HOME``. The executor starts with the app (it first recovers jobs a
killed server left running) and stops with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from castbook import __version__
from castbook.api import compat, routes_docs, routes_v1, routes_web
from castbook.api.auth import ApiKeys, KeyGate, require_owner
from castbook.api.config import ApiConfig
from castbook.api.headers import SecurityHeaders
from castbook.api.problems import BodyLimit, install_error_handlers
from castbook.api.quotas import QuotaGate, Quotas
from castbook.api.request_text import reject_invalid_text
from castbook.api.services import Services
from castbook.blobs import Blobs, open_blob_store
from castbook.db import Database
from castbook.errors import FieldError
from castbook.jobs import Executor, JobStore, LocalExecutor
from castbook.jobs.retention import RetentionPass
from castbook.settings import Settings

__all__ = ["create_app", "default_executor"]

log = logging.getLogger("castbook.api")

_DESCRIPTION = """\
Keep AI-generated characters consistent: a character library, generations with the
characters injected, tasks with live progress, and consistency scores.

Every endpoint but `/health` and these docs needs an API key (`castbook keys create`), sent
as `Authorization: Bearer <key>`. Errors are JSON: `{"error", "type", "field", "errors"}`.
"""


def default_executor(
    settings: Settings, database: Database, blobs: Blobs, jobs: JobStore, config: ApiConfig
) -> Executor:
    """``CASTBOOK_EXECUTOR``: ``local`` (the default: a worker process this server starts, or
    threads in this process with ``CASTBOOK_LOCAL_JOBS=thread``) or ``celery``."""
    if config.executor == "celery":
        from castbook.jobs.celery_executor import create_executor

        return create_executor(settings, store=jobs)
    if config.executor != "local":
        raise FieldError("CASTBOOK_EXECUTOR", f"must be local or celery, got {config.executor!r}")
    from castbook.tasks.handlers import handlers

    if config.local_jobs == "process":
        from castbook.jobs.processes import ProcessExecutor

        return ProcessExecutor(
            jobs,
            settings,
            handlers,
            workers=config.job_workers,
            max_attempts=settings.job_max_attempts,
            lease=settings.job_lease,
        )
    return LocalExecutor(
        jobs,
        handlers(settings, database, blobs),
        workers=config.job_workers,
        max_attempts=settings.job_max_attempts,
        lease=settings.job_lease,
    )


async def _stop_executor(services: Services) -> None:
    """Give running tasks ``shutdown_grace_seconds`` (CASTBOOK_STOP_GRACE) to finish. The
    local executor (either kind) then hands what still runs back to the queue (the next start
    runs it) and says so; Celery workers keep theirs."""
    stopper = threading.Thread(
        target=services.executor.shutdown, name="castbook-executor-stop", daemon=True
    )
    stopper.start()
    await run_in_threadpool(stopper.join, services.config.shutdown_grace_seconds)
    if stopper.is_alive():
        executor = services.executor
        hand_back = getattr(executor, "hand_back", None)  # only executors running jobs here
        handed: list[str] = hand_back() if callable(hand_back) else []
        log.warning(
            "stopping: %d task(s) still running after %.0f s handed back to the queue (%s); "
            "they run when a server starts again",
            len(handed),
            services.config.shutdown_grace_seconds,
            ", ".join(handed) or "none",
        )
        return
    services.close()


def create_app(
    settings: Settings,
    *,
    executor: Executor | None = None,
    config: ApiConfig | None = None,
) -> FastAPI:
    """The API for ``settings``. ``executor`` replaces the default one (it is started and
    shut down with the app); ``config`` replaces the server settings read from the
    environment."""
    config = config or ApiConfig.from_env()
    database = Database(settings.database_url)
    blobs = open_blob_store(settings)
    jobs = JobStore(database, blobs)
    if executor is None:
        executor = default_executor(settings, database, blobs, jobs, config)
    services = Services(
        settings=settings,
        config=config,
        database=database,
        blobs=blobs,
        jobs=jobs,
        keys=ApiKeys(database),
        executor=executor,
    )

    retention = RetentionPass.from_settings(settings, database, blobs)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(services.executor.start)
        retention.start()  # CASTBOOK_TASK_RETENTION, every CASTBOOK_PRUNE_INTERVAL
        try:
            yield
        finally:
            services.stopping = True  # `castbook serve` set it already, at the signal
            await run_in_threadpool(retention.stop)
            await run_in_threadpool(services.close_evaluations)  # its worker processes
            await _stop_executor(services)

    app = FastAPI(
        title="castbook",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        # Served by routes_docs from an installed package instead of a CDN.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        dependencies=[Depends(reject_invalid_text)],
    )
    app.state.services = services
    app.state.retention = retention
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    # Inside KeyGate (it needs the key), outside BodyLimit: a refused body is never read.
    app.add_middleware(
        QuotaGate,
        quotas=Quotas.from_settings(settings),
        database=database,
        blobs=blobs,
        shape=compat.shape_error,
    )
    # No key, nothing else runs; the compat endpoints answer with their own keys.
    app.add_middleware(KeyGate, keys=services.keys, shape=compat.shape_error)
    app.add_middleware(SecurityHeaders)  # outermost: every answer carries them, 401s too

    @app.get("/health", tags=["server"], summary="Is the server up (no key needed)")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    app.include_router(routes_v1.router)
    app.include_router(compat.router, dependencies=[Depends(require_owner)])
    app.include_router(routes_docs.router)  # /docs, /redoc, /favicon.ico (no key)
    app.include_router(routes_web.router)  # the browser UI at / (no key: the page asks)
    return app
