"""What the HTTP server itself can be told, on top of :class:`castbook.settings.Settings`.

``CASTBOOK_API_MAX_BODY_MB``      request body limit in MB (default 40); larger bodies get 413
``CASTBOOK_API_WAIT_SECONDS``     how long ``POST /getImagetoImage`` with ``celery: false``
                                  waits for its result before answering with the task's
                                  current state (default 600)
``CASTBOOK_ALLOW_PRIVATE_URLS``   ``1`` lets ``image`` URLs point at loopback and private
                                  addresses (a self-hosted setup on its own network); off by
                                  default, so URLs cannot reach into the server's network
``CASTBOOK_FETCH_ALLOWED_HOSTS``  comma-separated host names exempt from that check
``CASTBOOK_EXECUTOR``             ``local`` (job threads inside the server, the default) or
                                  ``celery`` (``castbook worker`` processes through Redis)
``CASTBOOK_MAX_VARIANTS``         the most prompt variants one batch render may have
                                  (default 8); a request's ``max_variants`` can only lower it
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from castbook.errors import FieldError

__all__ = ["ApiConfig"]

_MB = 1024 * 1024
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True)
class ApiConfig:
    max_body_bytes: int = 40 * _MB
    wait_seconds: float = 600.0
    allow_private_urls: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    fetch_timeout: float = 15.0
    executor: str = "local"
    # Job threads of the embedded (local) executor: jobs that run at the same time.
    job_workers: int = 1
    # How often a task's event stream looks at the job row, and how often it sends a
    # keep-alive comment so proxies do not close a quiet stream.
    events_poll_seconds: float = 0.25
    events_keepalive_seconds: float = 15.0
    # On stop, how long running tasks may take to finish; after that the server exits anyway
    # and the next start re-queues them.
    shutdown_grace_seconds: float = 30.0
    # The most prompt variants in one batch render (POST /v1/batch-renders).
    max_variants: int = 8

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ApiConfig:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if raw := env.get("CASTBOOK_API_MAX_BODY_MB", "").strip():
            values["max_body_bytes"] = int(_positive("CASTBOOK_API_MAX_BODY_MB", raw) * _MB)
        if raw := env.get("CASTBOOK_API_WAIT_SECONDS", "").strip():
            values["wait_seconds"] = _positive("CASTBOOK_API_WAIT_SECONDS", raw)
        raw = env.get("CASTBOOK_ALLOW_PRIVATE_URLS", "").strip().lower()
        if raw not in _TRUE | _FALSE:
            raise FieldError("CASTBOOK_ALLOW_PRIVATE_URLS", f"must be 1 or 0, got {raw!r}")
        values["allow_private_urls"] = raw in _TRUE
        hosts = env.get("CASTBOOK_FETCH_ALLOWED_HOSTS", "")
        values["allowed_hosts"] = frozenset(h.strip() for h in hosts.split(",") if h.strip())
        if raw := env.get("CASTBOOK_EXECUTOR", "").strip().lower():
            values["executor"] = raw
        if raw := env.get("CASTBOOK_MAX_VARIANTS", "").strip():
            values["max_variants"] = _whole("CASTBOOK_MAX_VARIANTS", raw)
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _whole(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise FieldError(name, f"must be a whole number, got {raw!r}") from None
    if value < 1:
        raise FieldError(name, f"must be at least 1, got {raw!r}")
    return value


def _positive(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise FieldError(name, f"must be a number, got {raw!r}") from None
    if not value > 0:
        raise FieldError(name, f"must be positive, got {raw!r}")
    return value
