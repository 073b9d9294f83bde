"""The Celery executor against a real redis-server and real `castbook worker` processes.

Jobs are submitted through ``create_executor(...).submit`` (what the HTTP API calls) and
run by worker subprocesses on tiny local diffusers models (the prefork test's on the fake
ComfyUI server); the job table (SQLite in a temporary CASTBOOK_HOME; PostgreSQL for the
prefork test) is where results are checked.
"""

from __future__ import annotations

import io
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from castbook.blobs import open_blob_store
from castbook.db import Database
from castbook.errors import FieldError, StorageError
from castbook.generation import load_presets, resolve_request
from castbook.jobs import Job, JobStatus, JobStore
from castbook.settings import Settings
from castbook.tasks import generation_job_input, handlers
from tests.conftest import on_blob_store
from tests.support.executor_contract import ExecutorContract, contract_presets
from tests.support.fake_comfyui_server import FakeComfyUI
from tests.support.redis_server import (
    RedisServer,
    redis_required,
)
from tests.support.s3_server import S3Server


def _need(module: str) -> None:
    """Skip without ``module``; in CI (CI=true) fail instead: these tests must run there."""
    try:
        __import__(module)
    except ImportError as exc:
        if redis_required():
            pytest.fail(f"CI needs {module} for the Celery tests: {exc}", pytrace=False)
        pytest.skip(f"{module} is not installed: {exc}", allow_module_level=True)


_need("celery")
_need("redis")

from castbook.jobs.celery_executor import (  # noqa: E402
    CeleryConfig,
    CeleryExecutor,
    _record_internal_error,
    create_executor,
    recover_orphans,
    run_worker,
    worker_name,
)

# A generous deadline for a job on a worker: an idle machine takes seconds (a worker's first
# job imports torch and loads the model), one with both cores busy minutes (159 s seen).
JOB_DEADLINE_S = 300.0
VISIBILITY_TIMEOUT_S = 2
_databases = itertools.count(1)


# ---- things that need neither Redis nor a worker -----------------------------------------


def test_importing_jobs_does_not_import_celery() -> None:
    code = (
        "import sys, castbook.jobs, castbook.jobs.celery_executor, castbook.cli.worker\n"
        "assert 'celery' not in sys.modules and 'kombu' not in sys.modules, 'celery imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _store(url: str) -> JobStore:
    return JobStore(Database(url))


def _running(store: JobStore, worker: str, attempts: int = 1, cancel: bool = False) -> Job:
    job = store.create(kind="generation", input={}, queue="h100")
    for _ in range(attempts):
        started = store.start(job.id, worker)
        assert started is not None
        if _ < attempts - 1:
            store.recover(max_attempts=99)  # as if its first worker had died
    if cancel:
        store.cancel(job.id)
    return store.get(job.id)


def test_orphaned_jobs_are_requeued_then_failed_and_live_ones_kept(database_url: str) -> None:
    store = _store(database_url)
    host = socket.gethostname()
    dead = worker_name(_dead_pid())
    last_try = _running(store, dead, attempts=2)  # first: its set-up re-queues every job
    first_try = _running(store, dead)
    cancelled = _running(store, dead, cancel=True)
    alive_here = _running(store, worker_name())
    elsewhere_fresh = _running(store, f"celery:another-machine:123:{worker_name().split(':')[3]}")
    # Same host name, another pid namespace (a container on the host's network): not ours to
    # judge by pid, only by its heartbeat.
    other_namespace = _running(store, f"celery:{host}:{_dead_pid()}:ns1")
    published: list[str] = []

    requeued, finished = recover_orphans(
        store, queues=["h100"], max_attempts=2, lease=60, publish=lambda j: published.append(j.id)
    )

    assert requeued == published == [first_try.id]
    assert sorted(finished) == sorted([last_try.id, cancelled.id])
    assert store.get(first_try.id).status == JobStatus.QUEUED
    assert "re-queued" in store.get(first_try.id).progress_message
    failed = store.get(last_try.id)
    assert failed.status == JobStatus.FAILED and failed.finished_at is not None
    assert failed.error == "the worker running this task stopped 2 time(s); giving up"
    assert store.get(cancelled.id).status == JobStatus.CANCELLED
    assert store.get(alive_here.id).status == JobStatus.RUNNING
    assert store.get(elsewhere_fresh.id).status == JobStatus.RUNNING
    assert store.get(other_namespace.id).status == JobStatus.RUNNING
    # Other queues are another worker's business; a heartbeat older than the lease is not.
    assert recover_orphans(store, queues=["default"], max_attempts=2, lease=60) == ([], [])
    time.sleep(0.05)
    requeued, _ = recover_orphans(store, queues=None, max_attempts=2, lease=0.01)
    assert set(requeued) == {alive_here.id, elsewhere_fresh.id, other_namespace.id}


def test_submit_without_a_broker_fails_the_job_instead_of_losing_it(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    store = _store(f"sqlite:///{tmp_path / 'castbook.db'}")
    executor = create_executor(
        Settings.for_home(tmp_path),
        {},
        store=store,
        environ={"CASTBOOK_REDIS_URL": f"redis://:secret@127.0.0.1:{closed_port}/0"},
    )
    job = store.create(kind="generation", input={}, queue="a100")
    with pytest.raises(StorageError, match="not reachable") as error:
        executor.submit(job)
    assert "secret" not in str(error.value)
    failed = store.get(job.id)
    assert failed.status == JobStatus.FAILED and "could not queue" in (failed.error or "")
    executor.shutdown()


def test_a_worker_whose_database_failed_under_it_fails_only_a_job_it_still_holds(
    tmp_path: Path,
) -> None:
    """The database went away under run_job; when it answers again another worker may have
    taken the job over (the first one's heartbeat stopped): the first must not end it."""
    store = _store(f"sqlite:///{tmp_path / 'castbook.db'}")
    outage = RuntimeError("server closed the connection unexpectedly")
    held = store.create(kind="generation", input={})
    store.start(held.id, "celery:a:1:ns1")
    assert _record_internal_error(store, held.id, "celery:a:1:ns1", outage) == "failed"
    assert "server closed" in (store.get(held.id).error or "")

    taken_over = store.create(kind="generation", input={})
    store.start(taken_over.id, "celery:a:1:ns1")
    store.hand_back("celery:a:1:ns1")  # re-queued (as a sweep does) and run elsewhere
    store.start(taken_over.id, "celery:b:2:ns1")
    answer = _record_internal_error(store, taken_over.id, "celery:a:1:ns1", outage)
    assert answer == "lost to another worker"
    assert store.get(taken_over.id).status == JobStatus.RUNNING
    done = store.succeed(taken_over.id, [], {"ok": True}, worker="celery:b:2:ns1")
    assert done.status == JobStatus.SUCCEEDED


def test_worker_options_are_checked_before_anything_starts(tmp_path: Path) -> None:
    settings = Settings.for_home(tmp_path)
    with pytest.raises(FieldError, match="pool"):
        run_worker(settings, ["default"], pool="gevent", handlers=handlers)
    with pytest.raises(FieldError, match="queue"):
        run_worker(settings, [" "], handlers=handlers)
    with pytest.raises(FieldError, match="CASTBOOK_JOB_LEASE"):
        CeleryConfig.from_env({"CASTBOOK_JOB_LEASE": "soon"})


# ---- a real redis-server and real worker processes --------------------------------------


@pytest.fixture(scope="module")
def tiny_model(request: pytest.FixtureRequest) -> Path:
    """The session's tiny SD 1.5 (tests/conftest.py), built once for every module."""
    _need("diffusers")
    return request.getfixturevalue("tiny_models")["sd15"]


class Cluster:
    """A CASTBOOK_HOME with presets, its own Redis database, and the workers started on it.

    A worker process takes seconds to start (it imports torch on its first job), so the
    tests on the ``default`` queue share one cluster and its workers (:func:`sqlite_cluster`):
    a test that needs a fresh worker stops the others first (:meth:`stop_workers`), one that
    needs just one worker on a queue takes a live one or starts it (:meth:`sole_worker`).
    """

    def __init__(
        self,
        home: Path,
        database_url: str,
        redis_url: str,
        model: Path,
        bucket: tuple[str, str] | None = None,
        presets: str | None = None,
    ) -> None:
        self.home = home
        home.mkdir(parents=True)
        presets = presets or contract_presets(model, home / "no-model")
        (home / "presets.toml").write_text(presets)
        self.settings = on_blob_store(Settings.for_home(home, database_url), bucket)
        self.database = Database(self.settings.database_url)
        self.blobs = open_blob_store(self.settings)
        self.store = JobStore(self.database, self.blobs)
        # With a bucket the workers live in a home of their own: they share no folder with
        # the server, only the database, Redis and the bucket (as on another machine).
        worker_home = home
        if bucket is not None:
            worker_home = home.parent / f"{home.name}-worker"
            worker_home.mkdir()
            (worker_home / "presets.toml").write_text(presets)
        self.worker_home = worker_home
        self.env = {
            **os.environ,
            "CASTBOOK_HOME": str(worker_home),
            "CASTBOOK_REDIS_URL": redis_url,
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(home / "hf-empty"),
            "OMP_NUM_THREADS": "1",
            # Redis hands the message of a killed worker's job out again after 2 s.
            "CASTBOOK_CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S),
        }
        for name in ("CASTBOOK_BLOB_DIR", "CASTBOOK_BLOB_URL", "CASTBOOK_EXECUTOR"):
            self.env.pop(name, None)
        self.env["CASTBOOK_DATABASE_URL"] = database_url
        if bucket is not None:
            self.env["CASTBOOK_BLOB_URL"], self.env["CASTBOOK_BLOB_ENDPOINT"] = bucket
        self.executor = create_executor(
            self.settings, {}, store=self.store, environ={"CASTBOOK_REDIS_URL": redis_url}
        )
        self.executor.start()  # as `castbook serve` does: it checks for orphans too
        self.workers: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.queues: dict[int, tuple[str, ...]] = {}  # pid -> the queues it consumes

    def worker(self, *queues: str, pool: str = "solo") -> subprocess.Popen[bytes]:
        log = self.home / f"worker-{len(self.workers)}.log"
        args = [sys.executable, "-m", "castbook", "worker", "--loglevel", "info", "--pool", pool]
        for queue in queues:
            args += ["--queue", queue]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                args, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.workers.append((process, log))
        self.queues[process.pid] = queues
        return process

    def live_workers(self) -> list[subprocess.Popen[bytes]]:
        return [process for process, _ in self.workers if process.poll() is None]

    def stop_workers(self, keep: subprocess.Popen[bytes] | None = None) -> None:
        """Kill every live worker but ``keep`` (idle ones: they hold no message)."""
        for process in self.live_workers():
            if process is not keep:
                process.kill()
                process.wait(timeout=10)

    def sole_worker(self, queue: str) -> subprocess.Popen[bytes]:
        """The cluster's only live worker, one consuming just ``queue``: a live one is kept
        (its model may be loaded already), every other is stopped; none: one is started."""
        kept = next((p for p in self.live_workers() if self.queues[p.pid] == (queue,)), None)
        self.stop_workers(keep=kept)
        return kept if kept is not None else self.worker(queue)

    def submit(self, queue: str, **request: object) -> Job:
        values = {"prompt": "a lighthouse at dusk", "seed": 3, **request}
        # Resolved against the preset as the API's submission does (workers trust the row).
        resolved = resolve_request(values, load_presets(self.home).get("tiny"))
        job = self.store.create(
            kind="generation", input=generation_job_input(resolved, "tiny"), queue=queue
        )
        self.executor.submit(job)
        return job

    def logs(self) -> str:
        parts = []
        for process, log in self.workers:
            text = log.read_text(errors="replace") if log.exists() else ""
            parts.append(f"--- worker pid {process.pid} (exit {process.poll()}):\n{text[-3000:]}")
        return "\n".join(parts)

    def redis_db(self) -> int:
        return int(self.executor.config.broker_url.rsplit("/", 1)[1])

    def wait_for(self, job_id: str, done: Callable[[Job], bool], timeout: float) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = self.store.get(job_id)
            if done(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"task {job_id} is {job.status.value} ({job.progress_message}) after "
                    f"{timeout}s\n{self.logs()}"
                )
            time.sleep(0.1)

    def close(self) -> None:
        for process, _ in self.workers:
            if process.poll() is None:
                process.kill()  # a prefork pool's processes follow (pdeathsig)
            process.wait(timeout=10)
        self.executor.shutdown()
        self.database.dispose()


@pytest.fixture(scope="module")
def comfy() -> Iterator[FakeComfyUI]:
    """A fake ComfyUI with paced steps (0.2 s: a 30-step task runs for 6 s, long enough to
    be caught running on a loaded machine)."""
    with FakeComfyUI(step_seconds=0.2) as server:
        yield server


@pytest.fixture
def cluster(
    redis_server: RedisServer,
    tiny_model: Path,
    tmp_path: Path,
    database_url: str,
    comfy: FakeComfyUI,
) -> Iterator[Cluster]:
    """A cluster of the test's own whose ``tiny`` preset generates on the fake ComfyUI: its
    tests are about the queue (a killed pool process, the outbox), and a worker that
    generates with diffusers imports torch first (~5 s of CPU a process). The tests on the
    shared cluster below run the tiny SD 1.5."""
    url = redis_server.url.rsplit("/", 1)[0] + f"/{next(_databases)}"
    presets = (
        '[presets.tiny]\nbackend = "comfyui"\nmodel = "workflow:sd15-ip-adapter"\n'
        'modes = ["t2i", "i2i"]\ndefaults = { width = 256, height = 256, steps = 2 }\n'
        f'options = {{ server = "{comfy.url}" }}\n'
    )
    cluster = Cluster(tmp_path / "home", database_url, url, tiny_model, presets=presets)
    yield cluster
    cluster.close()


def _finished(job: Job) -> bool:
    return job.done


@pytest.fixture(scope="module")
def sqlite_cluster(
    redis_server: RedisServer,
    tiny_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Cluster]:
    """One cluster (SQLite) for the tests on the ``default`` queue and the contract: its
    workers are started once and kept from test to test where a test allows it.

    Its images are in a bucket of the session's S3 server and its workers have a home of
    their own (issue 20: the executor contract with workers that cannot reach the server's
    folder); the ``cluster`` tests below keep the shared folder. Where no S3 server can be
    started (not in CI: there it fails), the folder."""
    root = tmp_path_factory.mktemp("cluster")
    url = redis_server.url.rsplit("/", 1)[0] + f"/{next(_databases)}"
    try:
        server: S3Server = request.getfixturevalue("s3_server")
        bucket: tuple[str, str] | None = (server.new_bucket(), server.endpoint)
    except pytest.skip.Exception:
        bucket = None
    database = f"sqlite:///{root / 'castbook.db'}"
    cluster = Cluster(root / "home", database, url, tiny_model, bucket)
    yield cluster
    cluster.close()


def test_jobs_run_only_on_workers_for_their_queue(sqlite_cluster: Cluster) -> None:
    cluster = sqlite_cluster
    cluster.stop_workers()  # fresh workers: the first job of each loads the model
    on_default = cluster.worker("default")
    # Started together (they take seconds to start). Had the default worker taken the h100
    # job, the h100 worker could not have run it: which worker ran it (below) is the proof,
    # not a pause and a look at "still queued".
    on_h100 = cluster.worker("h100", "a100")
    for_default = cluster.submit("default", batch=2)
    for_h100 = cluster.submit("h100")

    first = done = cluster.wait_for(for_default.id, _finished, JOB_DEADLINE_S)
    assert done.status == JobStatus.SUCCEEDED, (done.error, cluster.logs())
    assert done.worker == worker_name(on_default.pid)
    assert len(done.outputs) == 2 and done.result and done.result["seed"] == 3
    with Image.open(io.BytesIO(cluster.blobs.get(done.outputs[0].sha256))) as image:
        assert image.size == (256, 256)
    done = cluster.wait_for(for_h100.id, _finished, JOB_DEADLINE_S)
    assert done.status == JobStatus.SUCCEEDED, (done.error, cluster.logs())
    assert done.worker == worker_name(on_h100.pid)
    assert len(done.outputs) == 1 and done.attempts == 1
    cluster.stop_workers(keep=on_default)  # the later tests need no h100 worker

    # The worker keeps its model loaded: the next job skips the seconds of loading.
    again = cluster.submit("default", seed=4)
    finished = cluster.wait_for(again.id, _finished, 30)
    assert finished.status == JobStatus.SUCCEEDED and finished.outputs
    assert finished.seconds is not None and first.seconds is not None
    assert finished.seconds < first.seconds / 3, (finished.seconds, first.seconds)


def test_a_worker_killed_mid_job_loses_nothing(
    sqlite_cluster: Cluster, redis_server: RedisServer
) -> None:
    cluster = sqlite_cluster
    # The cluster's only worker (a live one is kept: killing a worker whose model is loaded
    # proves the same); no other worker may hand the held message out before the checks.
    first = cluster.sole_worker("default")
    slow = cluster.submit("default", steps=30, batch=2)
    running = cluster.wait_for(
        slow.id,
        lambda j: j.done or (j.status == JobStatus.RUNNING and j.progress_step >= 2),
        JOB_DEADLINE_S,
    )
    assert running.status == JobStatus.RUNNING, (running.error, cluster.logs())
    assert running.worker == worker_name(first.pid)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)

    # Late acknowledgement: the message of the job it was running is still held by Redis.
    assert redis_server.command("HLEN", "unacked", db=cluster.redis_db()) == 1
    assert cluster.store.get(slow.id).status == JobStatus.RUNNING
    # A worker hands out held messages older than the visibility timeout when it starts
    # (its later scans are a minute or more apart): the killed one may have held it for less.
    (_, delivered) = redis_server.command(
        "ZRANGE", "unacked_index", 0, -1, "WITHSCORES", db=cluster.redis_db()
    )
    while time.time() - float(delivered) <= VISIBILITY_TIMEOUT_S + 0.5:
        time.sleep(0.1)

    second = cluster.worker("default")
    done = cluster.wait_for(slow.id, _finished, JOB_DEADLINE_S)
    assert done.status == JobStatus.SUCCEEDED, (done.error, cluster.logs())
    assert done.attempts == 2 and len(done.outputs) == 2
    assert done.worker == worker_name(second.pid)
    assert cluster.store.ids_with_status(JobStatus.RUNNING) == []
    # The held message was delivered again too, and dropped: the job had already run.
    deadline = time.monotonic() + JOB_DEADLINE_S
    while (
        redis_server.command("HLEN", "unacked", db=cluster.redis_db()),
        redis_server.command("LLEN", "default", db=cluster.redis_db()),
    ) != (0, 0):
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.1)
    assert cluster.store.get(slow.id).attempts == 2


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_pool_process_killed_mid_job_is_redelivered_at_once(
    cluster: Cluster, database_url: str
) -> None:
    main = cluster.worker("a10g", pool="prefork")
    slow = cluster.submit("a10g", steps=30, batch=2)
    running = cluster.wait_for(
        slow.id,
        lambda j: j.done or (j.status == JobStatus.RUNNING and j.progress_step >= 2),
        JOB_DEADLINE_S,
    )
    assert running.status == JobStatus.RUNNING, (running.error, cluster.logs())
    child = int((running.worker or "").split(":")[2])
    assert child != main.pid
    os.kill(child, signal.SIGKILL)

    # The parent rejects the lost message back to the queue; its new pool process finds the
    # job running under a dead process, re-queues it (attempt 2) and runs it.
    done = cluster.wait_for(slow.id, _finished, JOB_DEADLINE_S)
    assert done.status == JobStatus.SUCCEEDED, (done.error, cluster.logs())
    assert done.attempts == 2 and len(done.outputs) == 2
    assert done.worker is not None and done.worker != running.worker
    assert main.poll() is None


# ---- the outbox: a queued job whose message was lost is sent again ---------------------------


def _outbox(cluster: Cluster, outbox_after: float, *, sweep: bool = True) -> CeleryExecutor:
    config = CeleryConfig(broker_url=cluster.executor.config.broker_url, outbox_after=outbox_after)
    return CeleryExecutor(cluster.store, config, sweep=sweep)


def _in_queue(cluster: Cluster, redis_server: RedisServer, queue: str) -> list[str]:
    """The job ids of the messages waiting in ``queue`` (oldest last, as Redis keeps them)."""
    payloads = redis_server.command("LRANGE", queue, 0, -1, db=cluster.redis_db())
    assert isinstance(payloads, list)
    # The message layout is kombu's; the outbox reads it the same way.
    from castbook.jobs.celery_executor import _job_id_of

    return [job_id for p in payloads if (job_id := _job_id_of(p)) is not None]


def test_the_outbox_sends_again_only_jobs_whose_message_is_gone(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    db = cluster.redis_db()
    # The cluster's own executor (a server's) sends queued jobs with no message when it
    # starts: let that pass end first, or it may send the job below between insert and publish.
    assert cluster.executor.first_sweep_done.wait(60)
    outbox = _outbox(cluster, 3600, sweep=False)
    waiting = cluster.submit("a100")  # no worker consumes a100 here: its message waits
    cancelled = cluster.store.create(kind="generation", input={}, queue="a100")
    cluster.store.cancel(cancelled.id)
    # Young jobs are left alone; old ones whose message waits in the queue too.
    assert outbox.republish_lost() == []
    assert outbox.republish_lost(older_than=0) == []
    assert _in_queue(cluster, redis_server, "a100") == [waiting.id]

    redis_server.command("FLUSHDB", db=db)  # Redis restarted without persistence
    assert outbox.republish_lost(older_than=0) == [waiting.id]
    assert _in_queue(cluster, redis_server, "a100") == [waiting.id]
    # Sent once: its new message is seen, and the cancelled job is nobody's business.
    assert outbox.republish_lost(older_than=0) == []
    assert cluster.store.get(waiting.id).status == JobStatus.QUEUED

    # A worker took the message (kombu moves it to the unacked hash) but never started the
    # job: live while that delivery is recent, lost once it is older than outbox_after.
    payload = redis_server.command("RPOP", "a100", db=db)
    assert isinstance(payload, bytes)
    held = b"[" + payload + b', "", "a100"]'
    redis_server.command("HSET", "unacked", "tag-1", held, db=db)
    redis_server.command("ZADD", "unacked_index", time.time(), "tag-1", db=db)
    assert outbox.republish_lost(older_than=0) == []
    redis_server.command("ZADD", "unacked_index", time.time() - 7200, "tag-1", db=db)
    assert outbox.republish_lost(older_than=0) == [waiting.id]
    assert _in_queue(cluster, redis_server, "a100") == [waiting.id]
    outbox.shutdown()


def test_lost_messages_are_sent_again_and_each_job_runs_once(
    sqlite_cluster: Cluster, redis_server: RedisServer
) -> None:
    cluster = sqlite_cluster
    cluster.stop_workers()  # nothing consumes the queue until the messages are lost
    db = cluster.redis_db()
    # A server killed between inserting the row and publishing it: the next server's start
    # sends it (this outbox's own clock, an hour, would not).
    resolved = resolve_request(
        {"prompt": "a lighthouse at dusk", "seed": 6}, load_presets(cluster.home).get("tiny")
    )
    unpublished = cluster.store.create(
        kind="generation", input=generation_job_input(resolved, "tiny"), queue="default"
    )
    on_start = _outbox(cluster, 3600)
    on_start.start()
    deadline = time.monotonic() + JOB_DEADLINE_S
    while unpublished.id not in _in_queue(cluster, redis_server, "default"):
        assert time.monotonic() < deadline, "the outbox did not send the unpublished job"
        time.sleep(0.1)
    on_start.shutdown()

    # Redis restarted without persistence while a server runs: its sweep sends it again.
    sweeping = _outbox(cluster, 1)
    sweeping.start()
    flushed = cluster.submit("default", seed=5)
    assert flushed.id in _in_queue(cluster, redis_server, "default")
    redis_server.command("FLUSHDB", db=db)
    deadline = time.monotonic() + JOB_DEADLINE_S
    while set(_in_queue(cluster, redis_server, "default")) != {unpublished.id, flushed.id}:
        assert time.monotonic() < deadline, "the outbox did not send the lost messages again"
        time.sleep(0.1)

    cluster.worker("default")
    for job_id in (unpublished.id, flushed.id):
        done = cluster.wait_for(job_id, _finished, JOB_DEADLINE_S)
        assert done.status == JobStatus.SUCCEEDED, (done.error, cluster.logs())
        assert done.attempts == 1 and len(done.outputs) == 1
    # Every message is consumed (any extra one dropped), and nothing ran twice.
    deadline = time.monotonic() + JOB_DEADLINE_S
    while (
        redis_server.command("HLEN", "unacked", db=db),
        redis_server.command("LLEN", "default", db=db),
    ) != (0, 0):
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.1)
    sweeping.shutdown()
    for job_id in (unpublished.id, flushed.id):
        assert cluster.store.get(job_id).attempts == 1


# ---- the executor contract: Celery workers ------------------------------------------------------


class CeleryHarness:
    """The ``default`` queue of the shared cluster and its one worker, shared by the
    contract's tests with the tests above (a worker process takes seconds to start)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.blobs = cluster.blobs

    def create(self, kind: str, input: dict) -> Job:
        return self.store.create(kind=kind, input=input, queue="default")

    def hand_over(self, job: Job) -> None:
        self.cluster.executor.submit(job)

    def submit(self, kind: str, input: dict) -> Job:
        job = self.create(kind, input)
        self.hand_over(job)
        return job

    def start(self) -> None:
        self.cluster.sole_worker("default")

    def wait(self, job_id: str) -> Job:
        return self.cluster.wait_for(job_id, _finished, JOB_DEADLINE_S)


class TestCeleryExecutor(ExecutorContract):
    @pytest.fixture
    def harness(self, sqlite_cluster: Cluster) -> CeleryHarness:
        return CeleryHarness(sqlite_cluster)
