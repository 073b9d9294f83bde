"""Quotas per API key: a request rate, queued tasks, and stored bytes; over one, HTTP 429.

Three limits, each a server setting (``CASTBOOK_RATE_LIMIT``/``CASTBOOK_RATE_BURST``,
``CASTBOOK_MAX_QUEUED_TASKS``, ``CASTBOOK_MAX_STORAGE_MB``) that a key may override
(``castbook keys create --rate … --burst … --max-queued … --max-storage-mb …``; 0: no limit):

- **rate**: every authenticated request takes a token from its key's bucket, which holds
  ``burst`` tokens and refills at ``rate`` per second. Kept in this process: with several API
  servers behind a balancer each one allows a key that rate.
- **queued tasks**: a request that queues a task (:func:`queues_task`) is refused while the
  key's *owner* has that many tasks ``queued`` or ``running`` (all the owner's keys count).
- **storage**: a request that stores images (:func:`stores_images`: uploads, imports, and
  every task, whose inputs and results are stored) is refused while the owner's stored bytes
  (:func:`stored_bytes`) are at or over the limit.

Counted before the request runs, so a request admitted under a limit may take the owner past
it by what it adds itself (one task, one upload's images). A refused request is answered
before its body is read and changes nothing. The answer is 429 with ``Retry-After`` (seconds)
and the API's error JSON, ``type`` ``QuotaExceeded`` and ``limit`` naming which one; the
face-consistency endpoints answer in their own shape, as for every error.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from castbook.api.auth import ApiKey
from castbook.blobs import Blobs
from castbook.db import (
    CharacterLoraRow,
    CharacterRow,
    Database,
    JobInputRow,
    JobOutputRow,
    JobRow,
    ReferenceImageRow,
)
from castbook.jobs.sizes import total_bytes
from castbook.settings import Settings

__all__ = [
    "QUEUED_RETRY_SECONDS",
    "STORAGE_RETRY_SECONDS",
    "QuotaGate",
    "Quotas",
    "RateLimiter",
    "queued_tasks",
    "queues_task",
    "stored_bytes",
    "stores_images",
]

_MB = 1024 * 1024
# What Retry-After says when only the owner's own tasks or deletions can clear a limit: a
# task typically ends within seconds; storage is freed only by deleting something.
QUEUED_RETRY_SECONDS = 10
STORAGE_RETRY_SECONDS = 60

# Requests that create a task (a job row). tests/test_quotas.py checks that every route
# answering 202 is among them, so a new task route cannot slip past the queued-task limit.
_QUEUES_TASK = re.compile(
    r"/v1/(generations|batch-renders|stories|workflows/run|workflows/[^/]+/run"
    r"|models/[^/]+/pull|characters/[^/]+/train|tasks/[^/]+/rerun)|/getImagetoImage"
)
# Requests that store images without queueing a task: reference uploads and imports.
_STORES = re.compile(r"/v1/characters/(import|import/card|[^/]+/images)")
_ACTIVE = ("queued", "running")


def queues_task(method: str, path: str) -> bool:
    return method == "POST" and _QUEUES_TASK.fullmatch(path.rstrip("/")) is not None


def stores_images(method: str, path: str) -> bool:
    """Uploads, imports and every new task (its inputs and results are stored)."""
    return queues_task(method, path) or (
        method == "POST" and _STORES.fullmatch(path.rstrip("/")) is not None
    )


@dataclass(frozen=True)
class Quotas:
    """The limits one key works under; 0 means no limit (``burst`` is always at least 1)."""

    rate: float = 50.0
    burst: int = 100
    max_queued: int = 1000
    max_storage_bytes: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Quotas:
        return cls(
            rate=settings.rate_limit,
            burst=settings.rate_burst,
            max_queued=settings.max_queued_tasks,
            max_storage_bytes=int(settings.max_storage_mb * _MB),
        )

    def for_key(self, key: ApiKey) -> Quotas:
        """These defaults with the key's own limits over them."""
        return Quotas(
            rate=self.rate if key.rate_limit is None else key.rate_limit,
            burst=self.burst if key.rate_burst is None else max(1, key.rate_burst),
            max_queued=self.max_queued if key.max_queued is None else key.max_queued,
            max_storage_bytes=(
                self.max_storage_bytes if key.max_storage_bytes is None else key.max_storage_bytes
            ),
        )


class RateLimiter:
    """A token bucket per key: ``burst`` tokens, refilled at ``rate`` per second."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, key_id: str, rate: float, burst: int) -> float:
        """Take one token: 0.0 when there was one, else the seconds until there will be (a
        refused request takes nothing)."""
        if rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.get(key_id, (float(burst), now))
            tokens = min(float(burst), tokens + (now - then) * rate)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / rate


def queued_tasks(database: Database, owner: str) -> int:
    """The owner's tasks that are ``queued`` or ``running`` (index ``ix_jobs_owner_status``)."""
    query = (
        select(func.count())
        .select_from(JobRow)
        .where(JobRow.owner == owner, JobRow.status.in_(_ACTIVE))
    )
    with database.session() as session:
        return int(session.scalar(query) or 0)


def owner_blob_ids(database: Database, owner: str) -> set[str]:
    """Every stored image the owner's records name: their characters' reference images and
    thumbnails, their characters' trained LoRAs, their tasks' input images (uploads,
    ``data:`` images, fetched URLs) and their tasks' results. A blob named twice is one
    blob."""
    queries = (
        select(ReferenceImageRow.sha256, ReferenceImageRow.thumbnail_sha256)
        .join(CharacterRow, CharacterRow.id == ReferenceImageRow.character_id)
        .where(CharacterRow.owner == owner),
        select(CharacterLoraRow.sha256)
        .join(CharacterRow, CharacterRow.id == CharacterLoraRow.character_id)
        .where(CharacterRow.owner == owner),
        select(JobInputRow.sha256)
        .join(JobRow, JobRow.id == JobInputRow.job_id)
        .where(JobRow.owner == owner),
        select(JobOutputRow.sha256)
        .join(JobRow, JobRow.id == JobOutputRow.job_id)
        .where(JobRow.owner == owner),
    )
    found: set[str] = set()
    with database.session() as session:
        for query in queries:
            for row in session.execute(query):
                found.update(row)
    return found


def stored_bytes(database: Database, blobs: Blobs, owner: str) -> int:
    """The bytes of the blobs :func:`owner_blob_ids` names, as stored. An image two owners
    both hold counts for each of them (the store keeps it once: that is its business, not
    theirs). Sizes come from the database's record (:func:`castbook.jobs.sizes.blob_sizes`):
    the store is asked only about blobs met for the first time, so a check costs no request
    per image on S3."""
    return total_bytes(database, blobs, owner_blob_ids(database, owner))


@dataclass(frozen=True)
class _Refusal:
    limit: str
    message: str
    retry_after: float


class QuotaGate:
    """ASGI middleware inside :class:`~castbook.api.auth.KeyGate`: refuses a request over its
    key's quotas with 429 before anything else reads it. ``shape`` dresses the error body
    for the path, as KeyGate's does."""

    def __init__(
        self,
        app: Any,
        quotas: Quotas,
        database: Database,
        blobs: Blobs,
        shape: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.app = app
        self.quotas = quotas
        self.database = database
        self.blobs = blobs
        self.shape = shape or (lambda _path, body: body)
        self.limiter = limiter or RateLimiter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        key = scope.get("state", {}).get("key") if scope["type"] == "http" else None
        if not isinstance(key, ApiKey):  # open paths: KeyGate let them through without one
            await self.app(scope, receive, send)
            return
        refusal = await self._refusal(key, scope["method"], scope["path"])
        if refusal is None:
            await self.app(scope, receive, send)
            return
        body = {"error": refusal.message, "type": "QuotaExceeded", "limit": refusal.limit}
        response = JSONResponse(
            self.shape(scope["path"], body),
            status_code=429,
            headers={"Retry-After": str(max(1, math.ceil(refusal.retry_after)))},
        )
        await response(scope, receive, send)

    async def _refusal(self, key: ApiKey, method: str, path: str) -> _Refusal | None:
        quotas = self.quotas.for_key(key)
        wait = self.limiter.take(key.id, quotas.rate, quotas.burst)
        if wait > 0:
            return _Refusal(
                "rate",
                f"rate limit of {quotas.rate:g} requests/s (bursts of {quotas.burst}) for this "
                f"key exceeded; retry in {math.ceil(wait * 10) / 10:.1f} s",
                wait,
            )
        if quotas.max_queued and queues_task(method, path):
            count = await run_in_threadpool(queued_tasks, self.database, key.owner)
            if count >= quotas.max_queued:
                return _Refusal(
                    "queued_tasks",
                    f"at most {quotas.max_queued} queued tasks per owner: {key.owner!r} has "
                    f"{count} queued or running; wait for some to end, or cancel some",
                    QUEUED_RETRY_SECONDS,
                )
        if quotas.max_storage_bytes and stores_images(method, path):
            used = await run_in_threadpool(stored_bytes, self.database, self.blobs, key.owner)
            if used >= quotas.max_storage_bytes:
                return _Refusal(
                    "storage",
                    f"storage limit of {_size(quotas.max_storage_bytes)} per owner reached: "
                    f"{key.owner!r} holds {_size(used)} of images; delete characters or "
                    "reference images to free some",
                    STORAGE_RETRY_SECONDS,
                )
        return None


def _size(count: int) -> str:
    if count >= _MB:
        return f"{count / _MB:.1f} MB"
    return f"{count} bytes"
