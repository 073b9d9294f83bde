"""Every ``CASTBOOK_*`` setting, read from the environment in one place.

:data:`SETTINGS` lists each variable with its :class:`Settings` field, default and meaning
(the README's settings table is checked against it by ``tests/test_docs.py``);
:meth:`Settings.from_env` reads and checks them all, naming the variable in any error. The
rooms that use a setting take it from a :class:`Settings` (the API server's
:class:`~castbook.api.config.ApiConfig`, the Celery workers'
:class:`~castbook.jobs.celery_executor.CeleryConfig`, the extractor, the learned eval model).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from castbook.errors import FieldError

__all__ = [
    "DEFAULT_OWNER",
    "SETTINGS",
    "WORKER_NICENESS",
    "Setting",
    "Settings",
    "parse_duration",
    "yield_cpu",
]

# Until API keys exist every record belongs to the local user; the column is there so the
# HTTP API can scope records per key owner without a data migration.
DEFAULT_OWNER = "local"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Worker processes a server starts (jobs, evaluations) yield the CPU to the process answering
# HTTP: a request waits for no model when cores are short. (Unix ``nice``; 0 is the server's.)
WORKER_NICENESS = 10
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
    if not math.isfinite(value):  # `castbook serve` rounds CASTBOOK_STOP_GRACE, for one
        raise FieldError(name, f"must be a finite number, got {raw!r}")
    return value


def _whole(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise FieldError(name, f"must be a whole number, got {raw!r}") from None
    if value < 1:
        raise FieldError(name, f"must be at least 1, got {raw!r}")
    return value


def _limit(name: str, raw: str) -> float:
    """A limit where ``0`` means none."""
    try:
        value = float(raw)
    except ValueError:
        raise FieldError(name, f"must be a number (0 for no limit), got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise FieldError(name, f"must be 0 (no limit) or positive, got {raw!r}")
    return value


def _count_limit(name: str, raw: str) -> int:
    """A whole-number limit where ``0`` means none."""
    try:
        value = int(raw)
    except ValueError:
        raise FieldError(name, f"must be a whole number (0 for no limit), got {raw!r}") from None
    if value < 0:
        raise FieldError(name, f"must be 0 (no limit) or more, got {raw!r}")
    return value


def _flag(name: str, raw: str) -> bool:
    if raw.lower() not in _TRUE | _FALSE:
        raise FieldError(name, f"must be 1 or 0, got {raw!r}")
    return raw.lower() in _TRUE


def _hosts(name: str, raw: str) -> frozenset[str]:
    return frozenset(h.strip() for h in raw.split(",") if h.strip())


def _local_jobs(name: str, raw: str) -> str:
    if raw.lower() not in ("process", "thread"):
        raise FieldError(name, f"must be process or thread, got {raw!r}")
    return raw.lower()


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_KEEP_FOREVER = frozenset({"0", "off", "never", "forever"})


def parse_duration(name: str, raw: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m`` or ``3600s``. A bare number is refused: "30"
    could mean seconds or days, and guessing wrong deletes data."""
    match = _DURATION.fullmatch(raw.strip().lower())
    if match is None:
        raise FieldError(name, f"must be a duration such as 30d, 12h, 90m or 3600s, got {raw!r}")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not seconds > 0:
        raise FieldError(name, f"must be longer than zero, got {raw!r}")
    return seconds


def _retention(name: str, raw: str) -> float | None:
    """A duration, or ``off`` (also ``0``, ``never``, ``forever``): keep finished tasks."""
    if raw.strip().lower() in _KEEP_FOREVER:
        return None
    return parse_duration(name, raw)


def _blob_url(name: str, raw: str) -> str:
    if not raw.startswith("s3://") or not raw[len("s3://") :].split("/")[0]:
        raise FieldError(name, f"must be an s3://bucket/prefix URL, got {raw!r}")
    return raw


def _path(name: str, raw: str) -> Path:
    return Path(raw).expanduser()


def _presign(name: str, raw: str) -> int:
    """Seconds a presigned URL lives: 0 (none) up to S3's limit of seven days."""
    seconds = _count_limit(name, raw)
    if seconds > 7 * 86400:
        raise FieldError(name, f"must be at most 604800 (seven days, S3's limit), got {raw!r}")
    return seconds


def _face_runtime(name: str, raw: str) -> str:
    if raw.lower() not in ("auto", "torch", "dlib"):
        raise FieldError(name, f"must be auto, torch or dlib, got {raw!r}")
    return raw.lower()


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
        "CASTBOOK_BLOB_URL",
        "blob_url",
        "(unset: the folder)",
        "`s3://bucket/prefix`: keep images in S3-compatible object storage instead of "
        "`CASTBOOK_BLOB_DIR` (the `s3` extra; AWS credentials, `AWS_PROFILE` and "
        "`AWS_ENDPOINT_URL` are read as the AWS tools read them)",
        _blob_url,
    ),
    Setting(
        "CASTBOOK_BLOB_ENDPOINT",
        "blob_endpoint",
        "(AWS's)",
        "the object store's URL for MinIO, R2, B2 and other S3-compatible servers",
    ),
    Setting("CASTBOOK_BLOB_REGION", "blob_region", "(AWS's default)", "the bucket's region"),
    Setting(
        "CASTBOOK_BLOB_CACHE_DIR",
        "blob_cache_dir_setting",
        "$CASTBOOK_HOME/blob-cache",
        "this machine's cache of blobs read from object storage",
        _path,
    ),
    Setting(
        "CASTBOOK_BLOB_CACHE_MB",
        "blob_cache_mb",
        "2048",
        "the most MB that cache keeps, least recently used first out (`0`: no cache)",
        _limit,
    ),
    Setting(
        "CASTBOOK_BLOB_PRESIGN",
        "blob_presign",
        "0",
        "with object storage, `GET /v1/results/{sha}` redirects to a presigned URL valid this "
        "many seconds instead of sending the bytes itself (`0`: send them)",
        _presign,
    ),
    Setting(
        "CASTBOOK_EXECUTOR",
        "executor",
        "local",
        "`local` (jobs run by `castbook serve` itself, see `CASTBOOK_LOCAL_JOBS`) or `celery` "
        "(`castbook worker` processes)",
        _executor,
    ),
    Setting(
        "CASTBOOK_LOCAL_JOBS",
        "local_jobs",
        "process",
        "where the local executor runs jobs: `process` (a worker process `castbook serve` "
        "starts; the HTTP process only serves requests) or `thread` (threads in the server's "
        "own process: for embedding and tests)",
        _local_jobs,
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
        "CASTBOOK_TASK_RETENTION",
        "task_retention",
        "off",
        "how long finished tasks, their outputs and their input-only images are kept "
        "(`30d`, `12h`, `90m`, `3600s`; `off` keeps them until deleted)",
        _retention,
    ),
    Setting(
        "CASTBOOK_PRUNE_INTERVAL",
        "prune_interval",
        "1h",
        "how often `castbook serve` prunes expired tasks and unreferenced blobs",
        parse_duration,
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
        "CASTBOOK_RATE_LIMIT",
        "rate_limit",
        "50",
        "requests per second one API key may make, on average (`0`: no limit); over it, 429",
        _limit,
    ),
    Setting(
        "CASTBOOK_RATE_BURST",
        "rate_burst",
        "100",
        "requests one API key may make at once before that rate applies",
        _whole,
    ),
    Setting(
        "CASTBOOK_MAX_QUEUED_TASKS",
        "max_queued_tasks",
        "1000",
        "queued and running tasks one owner may have (`0`: no limit); a new task over it gets 429",
        _count_limit,
    ),
    Setting(
        "CASTBOOK_MAX_STORAGE_MB",
        "max_storage_mb",
        "0",
        "MB of stored images one owner may hold: reference images, task inputs and results "
        "(`0`: no limit); uploads and new tasks over it get 429",
        _limit,
    ),
    Setting(
        "CASTBOOK_OPENAI_BASE_URL",
        "openai_base_url",
        "(OpenAI's)",
        "base URL of the OpenAI-compatible images API (`openai-images` preset)",
    ),
    Setting(
        "CASTBOOK_GEMINI_BASE_URL",
        "gemini_base_url",
        "(Google's)",
        "base URL of the Gemini API (`gemini-image` preset), e.g. a proxy or a test server",
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
    Setting(
        "CASTBOOK_EVAL_PIXEL_BUDGET",
        "eval_pixel_budget",
        "320",
        "megapixels (frames × pixels, every frame decoded) one `POST /v1/evaluations` may "
        "decode; more is refused with 422 before decoding",
        _whole,
    ),
    Setting(
        "CASTBOOK_FACE_RUNTIME",
        "face_runtime",
        "auto",
        "what runs the face embedding network: `torch` (same network and weights, ~8× less "
        "CPU), `dlib`, or `auto` (torch when installed)",
        _face_runtime,
    ),
    Setting(
        "CASTBOOK_EVAL_WORKERS",
        "eval_workers",
        "2",
        "worker processes that score `POST /v1/evaluations` requests (started on the first "
        "one; each owner has one request in them at a time)",
        _whole,
    ),
    Setting(
        "CASTBOOK_IDENTIFY_ON_ADD",
        "identify_on_add",
        "1",
        "`0` skips the identity check when references are added or imported (no "
        '"looks like Alice (score 93)" warning; the index catches up at the next search)',
        _flag,
    ),
    Setting(
        "CASTBOOK_IDENTIFY_CACHE_REFERENCES",
        "identify_cache_references",
        "2000000",
        "reference images whose identity vectors a process keeps in memory, all owners "
        "together (~1.5 KB each): the indexes of the owners searched longest ago are dropped "
        "first, and reloaded from the database at their next search",
        _whole,
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
    blob_url: str | None = None  # s3://bucket/prefix; None: the folder
    blob_endpoint: str | None = None
    blob_region: str | None = None
    blob_cache_dir_setting: Path | None = None
    blob_cache_mb: float = 2048.0
    blob_presign: int = 0
    executor: str = "local"
    local_jobs: str = "process"
    redis_url: str = DEFAULT_REDIS_URL
    job_lease: float = 120.0
    job_max_attempts: int = 2
    celery_visibility_timeout: float = 3600.0
    outbox_after: float = 60.0
    api_max_body_mb: float = 40.0
    stop_grace: float = 30.0
    task_retention: float | None = None  # seconds; None keeps finished tasks
    prune_interval: float = 3600.0
    api_wait_seconds: float = 600.0
    allow_private_urls: bool = False
    fetch_allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    max_variants: int = 8
    rate_limit: float = 50.0
    rate_burst: int = 100
    max_queued_tasks: int = 1000
    max_storage_mb: float = 0.0
    openai_base_url: str | None = None
    gemini_base_url: str | None = None
    comfyui_url: str | None = None
    extract_base_url: str | None = None
    extract_model: str | None = None
    extract_api_key: str | None = field(default=None, repr=False)
    extract_timeout: float = 60.0
    eval_embedding_model: str | None = None
    # 320 MP: a 10 s 720p clip at 30 fps (276 MP), 5 s of 1080p (311 MP) or 32 stills of
    # 1024² (34 MP) fit; decoding that much takes ~3 s on one core (GIF: ~100 MP/s).
    eval_pixel_budget: int = 320
    eval_workers: int = 2
    face_runtime: str = "auto"
    identify_on_add: bool = True
    identify_cache_references: int = 2_000_000

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

    @property
    def blob_cache_dir(self) -> Path:
        return self.blob_cache_dir_setting or self.home / "blob-cache"

    @classmethod
    def for_home(cls, home: str | os.PathLike[str], database_url: str | None = None) -> Settings:
        home = Path(home)
        return cls(
            home=home,
            database_url=database_url or f"sqlite:///{home / 'castbook.db'}",
            blob_dir=home / "blobs",
        )


def yield_cpu() -> None:
    """Lower this process's CPU priority to :data:`WORKER_NICENESS` (a worker process of the
    server calls it first thing); where that is not possible nothing changes."""
    # Not permitted, or no nice() on this platform: the worker runs at the server's priority.
    with contextlib.suppress(OSError, AttributeError):
        os.nice(max(0, WORKER_NICENESS - os.nice(0)))
