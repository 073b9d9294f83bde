"""What the HTTP server works with: taken from :class:`castbook.settings.Settings` (which
reads and checks every ``CASTBOOK_*`` variable, see ``castbook.settings.SETTINGS``), plus
what only tests and embedders set (event-stream pacing, the stop grace, job threads)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from castbook.settings import Settings

__all__ = ["ApiConfig"]

_MB = 1024 * 1024


@dataclass(frozen=True)
class ApiConfig:
    max_body_bytes: int = 40 * _MB
    wait_seconds: float = 600.0
    allow_private_urls: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    fetch_timeout: float = 15.0
    executor: str = "local"
    # Where the local executor runs jobs (CASTBOOK_LOCAL_JOBS): "process" (a worker process)
    # or "thread" (in this process; tests that inject handlers use it).
    local_jobs: str = "process"
    # Job threads of the embedded (local) executor: jobs that run at the same time.
    job_workers: int = 1
    # How often a task's event stream looks at the job row, and how often it sends a
    # keep-alive comment so proxies do not close a quiet stream.
    events_poll_seconds: float = 0.25
    events_keepalive_seconds: float = 15.0
    # On stop, how long running tasks may take to finish (CASTBOOK_STOP_GRACE); after that
    # the local executor hands them back to the queue and the server exits.
    shutdown_grace_seconds: float = 30.0
    # The most prompt variants in one batch render (POST /v1/batch-renders).
    max_variants: int = 8

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ApiConfig:
        """From :class:`castbook.settings.Settings` (which reads and checks the variables)."""
        return cls.from_settings(Settings.from_env(environ), **overrides)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> ApiConfig:
        values: dict[str, object] = {
            "max_body_bytes": int(settings.api_max_body_mb * _MB),
            "wait_seconds": settings.api_wait_seconds,
            "allow_private_urls": settings.allow_private_urls,
            "allowed_hosts": settings.fetch_allowed_hosts,
            "executor": settings.executor,
            "local_jobs": settings.local_jobs,
            "max_variants": settings.max_variants,
            "shutdown_grace_seconds": settings.stop_grace,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
