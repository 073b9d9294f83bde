"""The Celery executor: jobs run by ``castbook worker`` processes fed through a Redis broker.

``CASTBOOK_EXECUTOR=celery`` selects it. The job table stays the source of truth: a Celery
message carries nothing but the job id, and the worker task runs
:func:`castbook.jobs.run_job` against the shared database. There is one Celery queue per
``inference_type`` (``job.queue``: default, a10g, a100, h100), so each GPU pool runs its
own ``castbook worker --queue h100`` processes.

Nothing is lost when a worker dies mid-job:

* Messages are acknowledged late (``task_acks_late``, ``task_reject_on_worker_lost``,
  prefetch 1): the message of a job that was running stays in Redis (unacked) and is
  delivered again after the broker's visibility timeout, or at once when a prefork child
  dies under a live parent.
* A running job's row names its worker (``celery:<host>:<pid>:<ns>``) and is touched every
  ``heartbeat`` seconds. A job is *orphaned* when its worker process is gone (same host:
  the pid no longer exists) or its heartbeat is older than ``lease`` seconds (any host).
  An orphaned job is re-queued (then published again) until ``max_attempts`` runs, after
  that failed with the reason. Workers check their queues for orphans when they start and
  every ``sweep_interval`` seconds, the server's executor checks every queue, and a task
  whose job is found running checks that one job. So a job is never left "running".

Nothing is lost when a message is lost either (Redis restarted without persistence, a
server killed between inserting the row and publishing): the job table is the outbox. The
server's executor sends again every queued job that has had no message in Redis for
``outbox_after`` seconds, and, when it starts, every queued job with no message at all (see
:meth:`CeleryExecutor.republish_lost` for how "no message" is told and why duplicates stay
bounded).

Duplicate messages are harmless: a job starts only from ``queued`` (a guarded update), and a
message for a job that is running under a live worker, or already finished, is dropped.

Settings (environment): ``CASTBOOK_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``),
``CASTBOOK_CELERY_VISIBILITY_TIMEOUT`` (seconds, default 3600),
``CASTBOOK_JOB_LEASE`` (seconds without a heartbeat before a job counts as orphaned, default
120), ``CASTBOOK_JOB_MAX_ATTEMPTS`` (default 2), ``CASTBOOK_OUTBOX_AFTER`` (seconds a queued
job may go without a message before it is sent again, default 60).

Multi-machine deployment: every server and worker machine uses the same
``CASTBOOK_DATABASE_URL`` (PostgreSQL), ``CASTBOOK_REDIS_URL`` and ``CASTBOOK_BLOB_DIR``
(a shared folder: NFS or similar), and the same presets (``$CASTBOOK_HOME/presets.toml``
naming models present on each worker machine). Run Redis with persistence
(``appendonly yes``) so queued messages survive a Redis restart.

Celery is imported lazily: importing :mod:`castbook.jobs` never imports it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import socket
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from castbook.db import Database, JobRow
from castbook.errors import FieldError, MissingDependencyError, NotFoundError, StorageError
from castbook.jobs.executor import JobHandler, run_job
from castbook.jobs.leases import (
    current_worker_name,
    heartbeat,
    holder_alive,
    recover_one,
    recover_orphans,
    worker_name,
)
from castbook.jobs.store import Job, JobStatus, JobStore
from castbook.settings import DEFAULT_REDIS_URL, Settings

if TYPE_CHECKING:
    from celery import Celery

    from castbook.blobs import Blobs

__all__ = [
    "DEFAULT_REDIS_URL",
    "QUEUES",
    "TASK_NAME",
    "CeleryConfig",
    "CeleryExecutor",
    "HandlersFactory",
    "create_executor",
    "holder_alive",
    "make_celery_app",
    "recover_orphans",
    "run_worker",
    "worker_name",
]

log = logging.getLogger("castbook.jobs.celery")

TASK_NAME = "castbook.run_job"
# The queues the HTTP API's inference_type names; any other queue name works too.
QUEUES = ("default", "a10g", "a100", "h100")

# Builds the handlers a worker process keeps for its lifetime (models stay loaded).
HandlersFactory = Callable[[Settings, Database, "Blobs"], Mapping[str, JobHandler]]


@dataclass(frozen=True)
class CeleryConfig:
    """How the executor and its workers talk to Redis and decide a job's worker is gone."""

    broker_url: str = DEFAULT_REDIS_URL
    visibility_timeout: float = 3600.0
    max_attempts: int = 2
    heartbeat: float = 10.0
    lease: float = 120.0
    sweep_interval: float = 60.0
    outbox_after: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CeleryConfig:
        """From :class:`castbook.settings.Settings` (which reads and checks the variables)."""
        settings = Settings.from_env(environ)
        lease = settings.job_lease
        return cls(
            broker_url=settings.redis_url,
            visibility_timeout=settings.celery_visibility_timeout,
            max_attempts=settings.job_max_attempts,
            heartbeat=min(10.0, lease / 4),
            lease=lease,
            sweep_interval=max(1.0, lease / 2),
            outbox_after=settings.outbox_after,
        )

    @property
    def safe_broker_url(self) -> str:
        """The broker URL without its password, fit for messages and logs."""
        head, sep, tail = self.broker_url.rpartition("@")
        if not sep or "://" not in head:
            return self.broker_url
        scheme, _, credentials = head.partition("://")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user + ':***' if ':' in credentials else user}@{tail}"


def _import_celery() -> Any:
    try:
        import celery
    except ImportError as exc:
        raise MissingDependencyError("celery executor", "celery", "celery") from exc
    try:
        import redis  # noqa: F401  (the broker transport needs it)
    except ImportError as exc:
        raise MissingDependencyError("celery executor", "celery", "redis") from exc
    return celery


def make_celery_app(config: CeleryConfig) -> Celery:
    """A Celery app for castbook's one task, configured for late acknowledgement."""
    celery = _import_celery()
    app = celery.Celery("castbook", broker=config.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue="default",
        task_create_missing_queues=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        broker_transport_options={
            "visibility_timeout": config.visibility_timeout,
            "socket_timeout": 30,
            "socket_connect_timeout": 5,
        },
        task_publish_retry_policy={
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    app.task(name=TASK_NAME, ignore_result=True)(_task_body)
    return app


# ---- the server side ----------------------------------------------------------------------


class CeleryExecutor:
    """Publishes job ids to the queue their job names; Celery workers run them.

    ``start`` also begins a background check for jobs whose worker died (any queue), so a
    job is never left running even when no worker for its queue comes back.
    """

    def __init__(
        self,
        store: JobStore,
        config: CeleryConfig | None = None,
        *,
        app: Celery | None = None,
        sweep: bool = True,
    ) -> None:
        self.store = store
        self.config = config or CeleryConfig.from_env()
        self.app = app if app is not None else make_celery_app(self.config)
        self.sweep = sweep
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis: Any = None
        # Set once the first sweep (the one at start) is done: tests wait on it.
        self.first_sweep_done = threading.Event()

    def start(self) -> None:
        if not self.sweep or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._sweep_loop, name="castbook-celery-sweep", daemon=True
        )
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Send the job id to ``job.queue``; a job that cannot be sent is failed, not lost."""
        try:
            self._send(job)
        except Exception as exc:
            message = (
                f"could not queue the task: the Celery broker at "
                f"{self.config.safe_broker_url} is not reachable ({type(exc).__name__}: {exc})"
            )
            with contextlib.suppress(Exception):
                self.store.fail_unstarted(job.id, message, {"type": "BrokerUnavailable"})
            raise StorageError(message) from exc

    def recover(self) -> tuple[list[str], list[str]]:
        """One pass over every queue for jobs whose worker is gone."""
        return recover_orphans(
            self.store,
            queues=None,
            max_attempts=self.config.max_attempts,
            lease=self.config.lease,
            # A re-queued job that cannot be sent now stays queued: the outbox sends it later.
            publish=self._send,
        )

    def republish_lost(self, older_than: float | None = None) -> list[str]:
        """Send again the queued jobs whose message is gone; returns their ids.

        How "gone" is told: Redis is asked. A queued job has a live message when its id is in
        its queue's list (waiting for a worker) or in Celery's ``unacked`` hash, delivered
        less than ``outbox_after`` seconds ago (a worker took it and is about to start it).
        A job that last changed more than ``older_than`` seconds ago (default
        ``outbox_after``) with neither is sent again.

        Why not just "published longer than N seconds ago": a job waiting behind busy
        workers looks exactly like a lost one by its age, so such a rule either sends it
        again every N seconds (a pile of duplicates for a long queue) or waits far too long
        for a lost one. Looking costs one ``LRANGE`` per queue and one ``HGETALL`` per pass
        (proportional to what is queued, every ``outbox_after / 2`` seconds) and reads
        kombu's Redis layout (a list per queue, the ``unacked`` hash and its
        ``unacked_index`` of delivery times), which :func:`_broker_view` keeps in one place.

        Duplicates stay bounded: a job is sent again only after a compare-and-set of its
        ``updated_at`` (so of several servers sweeping at once one sends), which also
        restarts its ``older_than`` clock; so a job gets at most one extra message per
        ``outbox_after`` seconds, and only while Redis shows none for it (a message between
        a worker's pop and its ``unacked`` entry, a few milliseconds, is the one case where
        an extra message is sent while one lives). An extra message is dropped by the worker
        that gets it: a job starts only from ``queued``.
        """
        after = self.config.outbox_after
        cutoff = datetime.now(UTC) - timedelta(seconds=after if older_than is None else older_than)
        with self.store.database.session() as session:
            candidates = session.execute(
                select(JobRow.id, JobRow.queue, JobRow.updated_at)
                .where(JobRow.status == JobStatus.QUEUED.value, JobRow.updated_at <= cutoff)
                .order_by(JobRow.created_at)
            ).all()
        if not candidates:
            return []
        waiting, held = _broker_view(self._client(), {queue for _, queue, _ in candidates})
        now = datetime.now(UTC).timestamp()
        sent: list[str] = []
        for job_id, queue, updated_at in candidates:
            if job_id in waiting or now - held.get(job_id, float("-inf")) < after:
                continue
            if not self._claim_resend(job_id, updated_at):
                continue  # it changed meanwhile (started, cancelled, another server sent it)
            try:
                self._send(self.store.get(job_id))
            except Exception:
                log.warning("task %s: could not send it again; the next pass tries", job_id)
                continue
            log.warning("task %s: its message in queue %s was lost; sent it again", job_id, queue)
            sent.append(job_id)
        return sent

    def _claim_resend(self, job_id: str, seen: datetime) -> bool:
        with self.store.database.session() as session:
            changed = session.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    JobRow.status == JobStatus.QUEUED.value,
                    JobRow.updated_at == seen,
                )
                .values(updated_at=datetime.now(UTC))
            ).rowcount
            session.commit()
        return bool(changed)

    def _send(self, job: Job) -> None:
        self.app.send_task(TASK_NAME, args=[job.id], queue=job.queue)

    def _client(self) -> Any:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(
                self.config.broker_url, socket_timeout=10, socket_connect_timeout=5
            )
        return self._redis

    def shutdown(self, wait: bool = True) -> None:
        self._stop.set()
        if self._thread is not None and wait:
            self._thread.join(timeout=10)
        self._thread = None
        with contextlib.suppress(Exception):
            self.app.close()
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()

    def _sweep_loop(self) -> None:
        # The first pass (the server starting) sends every queued job with no message, however
        # young: one inserted by a server killed before it published is found at once.
        older_than: float | None = 0.0
        interval = min(self.config.sweep_interval, max(0.5, self.config.outbox_after / 2))
        while True:
            try:
                self.recover()
            except Exception:
                log.warning("checking for orphaned tasks failed", exc_info=True)
            try:
                self.republish_lost(older_than)
            except Exception:
                log.warning("checking for queued tasks with lost messages failed", exc_info=True)
            older_than = None
            self.first_sweep_done.set()
            if self._stop.wait(interval):
                return


# kombu's Redis transport: a list per queue (plus one per priority step, named
# ``<queue>\x06\x16<step>``), and the messages delivered but not yet acknowledged in a hash
# with their delivery times in a sorted set.
_PRIORITY_SEP = "\x06\x16"
_UNACKED = "unacked"
_UNACKED_INDEX = "unacked_index"


def _broker_view(client: Any, queues: set[str]) -> tuple[set[str], dict[str, float]]:
    """(job ids waiting in ``queues``, job id -> when a worker took its message)."""
    waiting: set[str] = set()
    for queue in queues:
        keys = [queue, *(f"{queue}{_PRIORITY_SEP}{step}" for step in (3, 6, 9))]
        for key in keys:
            for payload in client.lrange(key, 0, -1):
                job_id = _job_id_of(payload)
                if job_id is not None:
                    waiting.add(job_id)
    held: dict[str, float] = {}
    delivered = dict(client.zrange(_UNACKED_INDEX, 0, -1, withscores=True))
    for tag, payload in client.hgetall(_UNACKED).items():
        job_id = _job_id_of(payload, in_unacked=True)
        if job_id is not None:
            held[job_id] = max(held.get(job_id, 0.0), float(delivered.get(tag, 0.0)))
    return waiting, held


def _job_id_of(payload: bytes, *, in_unacked: bool = False) -> str | None:
    """The job id a castbook message carries; None for anything else."""
    try:
        message = json.loads(payload)
        if in_unacked:  # [message, exchange, routing key]
            message = message[0]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        if message.get("headers", {}).get("task") != TASK_NAME:
            return None
        args = json.loads(body)[0]
        return str(args[0])
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
        return None


def create_executor(
    settings: Settings,
    handlers: Mapping[str, JobHandler] | None = None,
    *,
    store: JobStore | None = None,
    config: CeleryConfig | None = None,
    environ: Mapping[str, str] | None = None,
) -> CeleryExecutor:
    """The executor for ``CASTBOOK_EXECUTOR=celery``.

    ``handlers`` are not used here: workers build their own (see :func:`run_worker`). Pass the
    server's ``store`` to share its database engine; otherwise one is opened from ``settings``.
    """
    del handlers
    config = config or CeleryConfig.from_env(environ)
    store = store or JobStore(Database(settings.database_url))
    return CeleryExecutor(store, config)


# ---- the worker side ----------------------------------------------------------------------


@dataclass
class _Runtime:
    """What one worker process keeps for its lifetime."""

    pid: int
    settings: Settings
    database: Database
    blobs: Blobs
    store: JobStore
    factory: HandlersFactory
    _handlers: Mapping[str, JobHandler] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def handlers(self) -> Mapping[str, JobHandler]:
        with self._lock:
            if self._handlers is None:
                self._handlers = self.factory(self.settings, self.database, self.blobs)
            return self._handlers


@dataclass
class _WorkerSetup:
    settings: Settings
    config: CeleryConfig
    queues: tuple[str, ...]
    factory: HandlersFactory
    app: Any
    runtime: _Runtime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_SETUP: _WorkerSetup | None = None


def _after_fork_in_child() -> None:
    # A fork may happen while another thread holds the lock; the child starts with a free one.
    if _SETUP is not None:
        _SETUP.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _runtime() -> _Runtime:
    """This process's runtime; a process forked from another builds its own."""
    setup = _SETUP
    if setup is None:
        raise RuntimeError("castbook's Celery task runs only inside `castbook worker`")
    with setup.lock:
        current = setup.runtime
        if current is not None and current.pid == os.getpid():
            return current
        if current is not None:  # inherited across fork: never use the parent's connections
            current.database.engine.dispose(close=False)
        from castbook.blobs import open_blob_store

        database = Database(setup.settings.database_url)
        blobs = open_blob_store(setup.settings)
        setup.runtime = _Runtime(
            pid=os.getpid(),
            settings=setup.settings,
            database=database,
            blobs=blobs,
            store=JobStore(database, blobs),  # a finisher that lost its job tidies its outputs
            factory=setup.factory,
        )
        return setup.runtime


def _publish(job: Job) -> None:
    assert _SETUP is not None
    _SETUP.app.send_task(TASK_NAME, args=[job.id], queue=job.queue)


def _task_body(job_id: str) -> str:
    """The Celery task: run one job by id. Returns what happened, for the worker's log."""
    setup = _SETUP
    if setup is None:
        raise RuntimeError("castbook's Celery task runs only inside `castbook worker`")
    runtime = _runtime()
    store = runtime.store
    try:
        job = store.get(job_id)
    except NotFoundError:
        log.warning("task %s: no such job; message dropped", job_id)
        return "missing"
    if job.status == JobStatus.RUNNING:
        if holder_alive(job, setup.config.lease):
            log.info("task %s is running on %s; duplicate message dropped", job_id, job.worker)
            return "running elsewhere"
        recover_one(store, job, setup.config.max_attempts)
        job = store.get(job_id)
    if job.status != JobStatus.QUEUED:
        return job.status.value
    worker = current_worker_name()
    with heartbeat(store, job_id, worker, setup.config.heartbeat):
        try:
            final = run_job(store, runtime.handlers, job_id, worker)
        except Exception as exc:  # the database failed under run_job: record it if we can
            log.error("task %s: %s", job_id, traceback.format_exc())
            return _record_internal_error(store, job_id, worker, exc)
    return "not queued" if final is None else final.status.value


def _record_internal_error(store: JobStore, job_id: str, worker: str, exc: Exception) -> str:
    """Fail the job ``worker`` was running when the database failed under it — only while
    it still holds it: during an outage its heartbeat stopped, so another worker may have
    taken the job over (or finished it) by the time the database answers again."""
    try:
        job = store.fail(job_id, f"internal error: {type(exc).__name__}: {exc}", worker=worker)
    except Exception:
        return "failed"  # the database is still away: the lease recovers the job later
    return job.status.value if job.worker == worker else "lost to another worker"


def _on_process_init(**_: object) -> None:
    # Each pool process (prefork child, or the solo worker itself) opens its own database and
    # builds its handlers once; they live, with their loaded models, as long as the process.
    runtime = _runtime()
    runtime.handlers  # noqa: B018


def _on_worker_ready(**_: object) -> None:
    setup = _SETUP
    if setup is None:
        return
    thread = threading.Thread(target=_worker_sweep_loop, name="castbook-sweep", daemon=True)
    thread.start()


_SWEEP_STOP = threading.Event()


def _worker_sweep_loop() -> None:
    setup = _SETUP
    assert setup is not None
    while True:
        try:
            requeued, finished = recover_orphans(
                _runtime().store,
                queues=setup.queues,
                max_attempts=setup.config.max_attempts,
                lease=setup.config.lease,
                publish=_publish,
            )
            if requeued or finished:
                log.warning("recovered orphaned tasks: re-queued %s, ended %s", requeued, finished)
        except Exception:
            log.warning("checking for orphaned tasks failed", exc_info=True)
        if _SWEEP_STOP.wait(setup.config.sweep_interval):
            return


def _on_worker_shutdown(**_: object) -> None:
    _SWEEP_STOP.set()


POOLS = ("solo", "prefork", "threads")


def run_worker(
    settings: Settings,
    queues: Sequence[str] = ("default",),
    *,
    concurrency: int = 1,
    pool: str | None = None,
    config: CeleryConfig | None = None,
    handlers: HandlersFactory,
    loglevel: str = "INFO",
    hostname: str | None = None,
) -> int:
    """Run a Celery worker for ``queues`` until it is stopped; returns its exit code.

    ``pool``: ``solo`` (default for concurrency 1: one job at a time in this process),
    ``prefork`` (default above 1: a process per slot, each with its own copy of the models)
    or ``threads`` (one copy of the models shared by threads; for remote backends).
    """
    global _SETUP
    queues = tuple(dict.fromkeys(q.strip() for q in queues if q.strip()))
    if not queues:
        raise FieldError("queue", "a worker needs at least one queue (--queue default)")
    if concurrency < 1:
        raise FieldError("concurrency", f"must be at least 1, got {concurrency}")
    pool = pool or ("solo" if concurrency == 1 else "prefork")
    if pool not in POOLS:
        raise FieldError("pool", f"must be one of {', '.join(POOLS)}, got {pool!r}")
    if pool == "solo":
        concurrency = 1
    config = config or CeleryConfig.from_env()
    _import_celery()
    from celery import signals

    # Bring the schema up to date once, before any pool process opens the database.
    database = Database(settings.database_url)
    database.dispose()
    app = make_celery_app(config)
    _SETUP = _WorkerSetup(settings, config, queues, handlers, app)
    _SWEEP_STOP.clear()
    signals.worker_process_init.connect(_on_process_init, weak=False)
    signals.worker_ready.connect(_on_worker_ready, weak=False)
    signals.worker_shutdown.connect(_on_worker_shutdown, weak=False)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=loglevel.upper(),
            format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
        )
    log.info(
        "castbook worker: queues %s, %s pool x%d, broker %s, database %s, blobs %s",
        ",".join(queues),
        pool,
        concurrency,
        config.safe_broker_url,
        database.safe_url,
        settings.blob_url or settings.blob_dir,
    )
    worker = app.Worker(
        queues=list(queues),
        concurrency=concurrency,
        pool=pool,
        loglevel=loglevel.upper(),
        hostname=hostname or f"castbook-{os.getpid()}@{socket.gethostname()}",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        optimization="fair",
    )
    worker.start()
    return int(worker.exitcode or 0)
