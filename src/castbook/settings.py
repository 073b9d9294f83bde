"""Every ``CASTBOOK_*`` setting, read from the environment in one place.

:data:`SETTINGS` lists each variable with its :class:`Settings` field, default and meaning
(the README's settings table is checked against it by ``tests/test_docs.py``);
:meth:`Settings.from_env` reads and checks them all, naming the variable in any error. The
rooms that use a setting take it from a :class:`Settings` (the API server's
:class:`~castbook.api.config.ApiConfig`, the Celery workers'
:class:`~castbook.jobs.celery_executor.CeleryConfig`, the extractor, the learned eval model).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from castbook.errors import FieldError

__all__ = ["DEFAULT_OWNER", "SETTINGS", "Setting", "Settings"]

# Until API keys exist every record belongs to the local user; the column is there so the
# HTTP API can scope records per key owner without a data migration.
DEFAULT_OWNER = "local"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def _text(name: str, raw: str) -> str:
    return raw


def _positive(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise FieldError(name, f"must be a number, got {raw!r}") from None
    if not value > 0:
        raise FieldError(name, f"must be positive, got {raw!r}")
    return value


def _whole(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise FieldError(name, f"must be a whole number, got {raw!r}") from None
    if value < 1:
        raise FieldError(name, f"must be at least 1, got {raw!r}")
    return value


def _flag(name: str, raw: str) -> bool:
    if raw.lower() not in _TRUE | _FALSE:
        raise FieldError(name, f"must be 1 or 0, got {raw!r}")
    return raw.lower() in _TRUE


def _hosts(name: str, raw: str) -> frozenset[str]:
    return frozenset(h.strip() for h in raw.split(",") if h.strip())


def _executor(name: str, raw: str) -> str:
    if raw.lower() not in ("local", "celery"):
        raise FieldError(name, f"must be local or celery, got {raw!r}")
    return raw.lower()


@dataclass(frozen=True)
class Setting:
    """One environment variable: the :class:`Settings` field it fills, its default (as the
    docs show it) and what it means."""

    env: str
    field: str
    default: str
    meaning: str
    parse: Callable[[str, str], Any] = _text


SETTINGS: tuple[Setting, ...] = (
    Setting("CASTBOOK_HOME", "home", "~/.castbook", "data folder (library, presets.toml, keys)"),
    Setting(
        "CASTBOOK_DATABASE_URL",
        "database_url",
        "sqlite:///$CASTBOOK_HOME/castbook.db",
        "SQLite (WAL mode) or PostgreSQL, e.g. `postgresql://user:pw@host/castbook`",
    ),
    Setting(
        "CASTBOOK_BLOB_DIR",
        "blob_dir",
        "$CASTBOOK_HOME/blobs",
        "content-addressed image store (files named by sha256)",
    ),
    Setting(
        "CASTBOOK_EXECUTOR",
        "executor",
        "local",
        "`local` (job threads inside `castbook serve`) or `celery` (`castbook worker` processes)",
        _executor,
    ),
    Setting("CASTBOOK_REDIS_URL", "redis_url", DEFAULT_REDIS_URL, "the Celery executor's broker"),
    Setting(
        "CASTBOOK_JOB_LEASE",
        "job_lease",
        "120",
        "seconds without a heartbeat before a running job counts as orphaned (either executor)",
        _positive,
    ),
    Setting(
        "CASTBOOK_JOB_MAX_ATTEMPTS",
        "job_max_attempts",
        "2",
        "how often a job whose worker died is tried before it fails",
        _whole,
    ),
    Setting(
        "CASTBOOK_CELERY_VISIBILITY_TIMEOUT",
        "celery_visibility_timeout",
        "3600",
        "seconds before Redis redelivers an unacknowledged task",
        _positive,
    ),
    Setting(
        "CASTBOOK_OUTBOX_AFTER",
        "outbox_after",
        "60",
        "seconds a queued Celery task may have no message in Redis before it is sent again",
        _positive,
    ),
    Setting(
        "CASTBOOK_API_MAX_BODY_MB",
        "api_max_body_mb",
        "40",
        "request body limit of the HTTP API in MB; larger bodies get 413",
        _positive,
    ),
    Setting(
        "CASTBOOK_STOP_GRACE",
        "stop_grace",
        "30",
        "seconds a stopping `castbook serve` lets running tasks finish before it hands them "
        "back to the queue",
        _positive,
    ),
    Setting(
        "CASTBOOK_API_WAIT_SECONDS",
        "api_wait_seconds",
        "600",
        "how long `POST /getImagetoImage` with `celery: false` waits for its result",
        _positive,
    ),
    Setting(
        "CASTBOOK_ALLOW_PRIVATE_URLS",
        "allow_private_urls",
        "0",
        "`1` lets `image` URLs point at loopback and private addresses",
        _flag,
    ),
    Setting(
        "CASTBOOK_FETCH_ALLOWED_HOSTS",
        "fetch_allowed_hosts",
        "(none)",
        "comma-separated host names exempt from that check",
        _hosts,
    ),
    Setting(
        "CASTBOOK_MAX_VARIANTS",
        "max_variants",
        "8",
        "the most prompt variants one batch render may have",
        _whole,
    ),
    Setting(
        "CASTBOOK_OPENAI_BASE_URL",
        "openai_base_url",
        "(OpenAI's)",
        "base URL of the OpenAI-compatible images API (`openai-images` preset)",
    ),
    Setting(
        "CASTBOOK_COMFYUI_URL",
        "comfyui_url",
        "http://127.0.0.1:8188",
        "the ComfyUI server of the `comfyui` preset",
    ),
    Setting(
        "CASTBOOK_EXTRACT_BASE_URL",
        "extract_base_url",
        "(unset)",
        "an OpenAI-compatible vision API for the Character Extractor",
    ),
    Setting("CASTBOOK_EXTRACT_MODEL", "extract_model", "(unset)", "the Extractor's vision model"),
    Setting("CASTBOOK_EXTRACT_API_KEY", "extract_api_key", "(unset)", "the Extractor's API key"),
    Setting(
        "CASTBOOK_EXTRACT_TIMEOUT",
        "extract_timeout",
        "60",
        "seconds per Extractor request",
        _positive,
    ),
    Setting(
        "CASTBOOK_EVAL_EMBEDDING_MODEL",
        "eval_embedding_model",
        "(unset)",
        "a local CLIP/DINOv2 folder for the `learned` eval component",
    ),
)


@dataclass(frozen=True)
class Settings:
    """castbook's settings: where data lives, and everything else :data:`SETTINGS` lists.

    ``CASTBOOK_HOME``         data folder (default ``~/.castbook``)
    ``CASTBOOK_DATABASE_URL`` SQLAlchemy URL (default SQLite ``$CASTBOOK_HOME/castbook.db``)
    ``CASTBOOK_BLOB_DIR``     content-addressed image store (default ``$CASTBOOK_HOME/blobs``)
    """

    home: Path
    database_url: str
    blob_dir: Path
    executor: str = "local"
    redis_url: str = DEFAULT_REDIS_URL
    job_lease: float = 120.0
    job_max_attempts: int = 2
    celery_visibility_timeout: float = 3600.0
    outbox_after: float = 60.0
    api_max_body_mb: float = 40.0
    stop_grace: float = 30.0
    api_wait_seconds: float = 600.0
    allow_private_urls: bool = False
    fetch_allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    max_variants: int = 8
    openai_base_url: str | None = None
    comfyui_url: str | None = None
    extract_base_url: str | None = None
    extract_model: str | None = None
    extract_api_key: str | None = field(default=None, repr=False)
    extract_timeout: float = 60.0
    eval_embedding_model: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("CASTBOOK_HOME") or Path.home() / ".castbook").expanduser()
        database_url = env.get("CASTBOOK_DATABASE_URL") or f"sqlite:///{home / 'castbook.db'}"
        blob_dir = Path(env.get("CASTBOOK_BLOB_DIR") or home / "blobs").expanduser()
        values: dict[str, Any] = {}
        for setting in SETTINGS[3:]:  # the three above depend on each other
            raw = (env.get(setting.env) or "").strip()
            if raw:
                values[setting.field] = setting.parse(setting.env, raw)
        return cls(home=home, database_url=database_url, blob_dir=blob_dir, **values)

    @classmethod
    def for_home(cls, home: str | os.PathLike[str], database_url: str | None = None) -> Settings:
        home = Path(home)
        return cls(
            home=home,
            database_url=database_url or f"sqlite:///{home / 'castbook.db'}",
            blob_dir=home / "blobs",
        )
