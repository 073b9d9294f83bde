"""Fault injection for castbook: real processes, killed with SIGKILL at chosen moments.

A :class:`Lab` holds what every run shares (what its workers generate with, one PostgreSQL
server, a folder); each run of a scenario gets a fresh :class:`Cluster`: its own database on
that server, its own redis-server (on a port kept across restarts, nothing on disk, as a
Redis without persistence), its own ``CASTBOOK_HOME`` and blob store, and the ``castbook
serve`` and ``castbook worker`` processes a scenario starts. Every process runs in its own process
group, and a kill is ``SIGKILL`` to the whole group (a server that runs jobs in child
processes loses them too).

Scenarios talk to castbook the way its users and operators do: HTTP requests, processes
started and killed, and the database rows and blob store afterwards. Each returns an
:class:`Outcome`:

* accepted: tasks the server answered 202 for, plus any row a killed request left behind;
* succeeded, failed (with a reason: an ``error`` text), each as the server reports it;
* lost: accepted ids the server does not report ended by the deadline (or does not know);
* duplicated: tasks whose ending was recorded more than once — counted from the
  ``task … ended …`` lines every worker and server writes (``castbook.jobs.run_job``; a
  ``sitecustomize`` on the processes' path sends that logger to their log files) — or whose
  outputs were recorded twice (more output rows than the task asked for);
* orphan blobs: files in the blob store that no reference image, job input or job output
  names (what the library's garbage collection would keep: see
  ``CharacterLibrary._delete_unreferenced``).

What the workers generate with (:class:`Generator`) is the lab's choice: the tiny
random-weight SD 1.5 through diffusers (every process that generates imports torch and
diffusers, ~8 s of CPU, and loads the model), or a ComfyUI server on 127.0.0.1 that is not
part of the run (``tests/support/fake_comfyui_server.py`` with paced steps: a remote service
from castbook's point of view, like the real one, reached over HTTP and its websocket). The
faults are the same: a worker is killed while it waits on a running prompt instead of while
it denoises, and the outcome is counted from the same rows and logs. With ComfyUI no process
of a run may load torch (:attr:`Outcome.torch_processes`).

Every wait has a deadline; none is a fixed sleep.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from castbook.blobs import BlobStore
from castbook.db import Database, JobInputRow, JobOutputRow, JobRow, ReferenceImageRow
from tests.support.redis_server import find_redis_server

__all__ = [
    "SCENARIOS",
    "Cluster",
    "Generator",
    "Lab",
    "Outcome",
    "run_scenario",
]

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 180.0
# A run's tasks must all have ended this long after the last fault: generous for a loaded
# 2-core machine (a worker's first job imports torch and loads the model).
END_DEADLINE = 240.0
SITE = Path(__file__).with_name("chaos_site")
ENDED = re.compile(r"task ([0-9a-f]{32}) ended (\w+) on ")
_databases = itertools.count(1)


_handed_out: set[int] = set()
_ports = threading.Lock()


def _free_port() -> int:
    """A port free now and never handed out before in this process: runs side by side must
    not get a port another run holds for a process it restarts (a Redis's, a server's)."""
    with _ports:
        while True:
            with socket.socket() as probe:
                probe.bind((HOST, 0))
                port = probe.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def _until(condition: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Wait for ``condition()`` to be truthy (returned); AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


# ---- processes ---------------------------------------------------------------------------


@dataclass
class Process:
    """A child in its own process group, its output in ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def spawn(cls, name: str, args: list[str], env: dict[str, str], log: Path) -> Process:
        with log.open("ab") as out:
            popen = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=log.parent,
            )  # fmt: skip
        return cls(name, popen, log)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL to the whole group, and wait for the leader."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=30)

    def cpu_seconds(self) -> float:
        """CPU seconds its group's live processes have used (with their reaped children)."""
        ticks = 0
        for pid in _group(self.popen.pid):
            with contextlib.suppress(OSError, IndexError, ValueError):
                ticks += sum(int(value) for value in _stat(pid)[11:15])  # utime stime cutime cstime
        return ticks / os.sysconf("SC_CLK_TCK")

    def output(self, tail: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (exit {self.popen.poll()}):\n{text[-tail:]}"


class Redis:
    """A redis-server without persistence on a port that stays the same across restarts."""

    def __init__(self, folder: Path) -> None:
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError("redis-server not found (apt-get install redis-server)")
        self.binary = binary
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.process: Process | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        args = [str(self.binary), "--port", str(self.port), "--bind", HOST, "--save", "",
                "--appendonly", "no", "--dir", str(self.folder), "--daemonize", "no"]  # fmt: skip
        self.process = Process.spawn("redis", args, dict(os.environ), self.folder / "redis.log")
        _until(self.ping, 30, "redis-server to answer")

    def ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def restart(self) -> None:
        """SIGKILL and start again, empty (what a Redis without persistence does)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()


class Blackhole:
    """A TCP proxy to Redis that can swallow what clients send (``drop``): a publish made
    while it drops never reaches Redis, and its client waits for an answer — the moment
    between a task's row being inserted and its message being stored."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.drop = threading.Event()
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, name="chaos-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for source, sink, droppable in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, droppable), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, droppable: bool) -> None:
        try:
            while data := source.recv(65536):
                if not (droppable and self.drop.is_set()):
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # close() alone leaves accept() blocked on Linux
            self.listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.listener.close()


def _stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command's name: state, ppid, pgrp, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _processes() -> Iterator[tuple[int, list[str]]]:
    """Each live process's id and :func:`_stat` fields (those gone meanwhile are left out)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = _stat(entry.name)
            except (OSError, IndexError):
                continue
            yield int(entry.name), stat


def _children(pid: int) -> list[int]:
    return [child for child, stat in _processes() if int(stat[1]) == pid]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(OSError, IndexError):
        return _stat(pid)[0] in "ZX"
    return True


def _group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    return [pid for pid, stat in _processes() if int(stat[2]) == pgid and stat[0] not in "ZX"]


def _loads_torch(pid: int) -> bool:
    """Whether process ``pid`` has torch's library mapped (it imported torch)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps", "rb") as maps:
        return any(b"libtorch" in line for line in maps)
    return False


class OwnPostgres:
    """A PostgreSQL server of one run (killing the lab's would break other runs' tests),
    which can be SIGKILLed — the postmaster and every backend — and started again on the
    same port with the same data."""

    def __init__(self) -> None:
        from tests.support.postgres import start_postgres

        # Outside pytest's temp tree, whose folders only root may enter (as tests/conftest.py).
        self.folder = Path(tempfile.mkdtemp(prefix="castbook-chaos-pg-"))
        self.server = start_postgres(self.folder)

    def kill(self) -> None:
        pid = int((self.server.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        victims = [pid, *_children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        _until(lambda: all(_gone(v) for v in victims), 30, "PostgreSQL's processes to exit")
        # They may linger as zombies (no init reaps them here), which PostgreSQL's stale-lock
        # check takes for a live postmaster: the lock file goes, as after a machine's crash.
        (self.server.data_dir / "postmaster.pid").unlink(missing_ok=True)
        for folder in (self.server.data_dir.parent, *self.server._extra_dirs):
            for lock in Path(folder).rglob(".s.PGSQL.*.lock"):
                lock.unlink(missing_ok=True)

    def start(self) -> None:
        server = self.server
        assert server.bin_dir is not None and server.log_path is not None
        run_as = server._run_as.popen_kwargs() if server._run_as else {}
        started = subprocess.run(
            [str(server.bin_dir / "pg_ctl"), "start", "-D", str(server.data_dir), "-l",
             str(server.log_path), "-w", "-t", "60", "-o", f"-p {server.port}"],
            capture_output=True, text=True, env=server._env, timeout=90, check=False,
            cwd="/", **run_as,
        )  # fmt: skip
        if started.returncode != 0:
            raise AssertionError(f"PostgreSQL did not start again: {started.stderr}")

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


# ---- what a run found --------------------------------------------------------------------


@dataclass
class Outcome:
    scenario: str
    accepted: int = 0
    succeeded: int = 0
    failed: int = 0  # failed with a reason
    lost: int = 0
    duplicated: int = 0
    orphan_blobs: int = 0
    kills: int = 0
    resent: int = 0  # messages the outbox sent again
    torch_processes: int = 0  # processes seen with torch loaded (just before a kill, or at the end)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of each process started
    endings_logged: int = 0  # "task … ended …" lines seen: the duplicate count can work
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.orphan_blobs == 0
            and self.accepted == self.succeeded + self.failed
        )


# ---- a lab and its clusters -----------------------------------------------------------------


@dataclass(frozen=True)
class Generator:
    """What a lab's workers generate with: the ``tiny`` preset of every run's home."""

    name: str  # "tiny-sd15" or "comfyui"
    presets: str  # the presets.toml written into each run's CASTBOOK_HOME

    @classmethod
    def tiny_sd15(cls, model: Path) -> Generator:
        """The tiny random-weight SD 1.5 (tests/support/tiny_diffusers.py) through diffusers."""
        return cls(
            "tiny-sd15",
            f'[presets.tiny]\nbackend = "diffusers"\nmodel = "{model}"\n'
            "defaults = { width = 256, height = 256, steps = 2 }\n"
            '[presets.tiny.options]\nfamily = "sd15"\n',
        )

    @classmethod
    def comfyui(cls, url: str) -> Generator:
        """A ComfyUI server at ``url`` running the built-in SD 1.5 workflow."""
        return cls(
            "comfyui",
            '[presets.tiny]\nbackend = "comfyui"\nmodel = "workflow:sd15-ip-adapter"\n'
            'modes = ["t2i", "i2i"]\n'
            "defaults = { width = 256, height = 256, steps = 2 }\n"
            f'[presets.tiny.options]\nserver = "{url}"\n',
        )


class Lab:
    """What every run shares: the generator, a PostgreSQL server, a root folder."""

    def __init__(self, root: Path, generator: Generator, postgres: Any) -> None:
        self.root = root
        self.generator = generator
        self.postgres = postgres
        self.runs = itertools.count(1)
        # Runs may go side by side (benchmarks/chaos.py --parallel); Alembic's migration
        # context is module-global, so clusters bring their schemas up one at a time.
        self._migrating = threading.Lock()

    def cluster(self, executor: str, *, own_postgres: bool = False) -> Cluster:
        run = next(self.runs)
        folder = self.root / f"run-{run}"
        own = OwnPostgres() if own_postgres else None
        postgres = own.server if own is not None else self.postgres
        name = f"castbook_chaos{os.getpid()}_{run}"
        url = postgres.create_database(name)
        with self._migrating:
            cluster = Cluster(folder, self.generator, url, executor)
        cluster.postgres = own
        if own is not None:
            cluster.cleanups.append(own.stop)
        else:  # 200 runs' databases would leave ~1 GB for the server's stop to delete
            cluster.removals.append(lambda: self.postgres.drop_database(name))
        return cluster


class Cluster:
    """One run's castbook: its database, Redis, home, servers and workers."""

    def __init__(
        self, folder: Path, generator: Generator, database_url: str, executor: str
    ) -> None:
        self.folder = folder
        self.home = folder / "home"
        self.home.mkdir(parents=True)
        (self.home / "presets.toml").write_text(generator.presets)
        self.database_url = database_url
        self.redis = Redis(folder / "redis") if executor == "celery" else None
        # Absolute: the processes run in the run's folder, where a relative entry (the
        # benchmark's PYTHONPATH=src:.) would name nothing and the installed castbook would
        # be imported instead of this tree's.
        entries = [str(SITE), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
        path = os.pathsep.join(os.path.abspath(entry) for entry in entries if entry)
        self.env = {
            **os.environ,
            "PYTHONPATH": path,
            "CASTBOOK_HOME": str(self.home),
            "CASTBOOK_DATABASE_URL": database_url,
            "CASTBOOK_EXECUTOR": executor,
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(folder / "hf-empty"),
            "OMP_NUM_THREADS": "1",
            # Faults are found in seconds, not minutes: a heartbeat every 1.5 s, a holder gone
            # after 6 s without one, lost messages sent again after 3 s.
            "CASTBOOK_JOB_LEASE": "6",
            "CASTBOOK_JOB_MAX_ATTEMPTS": "3",
            "CASTBOOK_CELERY_VISIBILITY_TIMEOUT": "3",
            "CASTBOOK_OUTBOX_AFTER": "3",
            "CASTBOOK_STOP_GRACE": "5",
        }
        self.env.pop("CASTBOOK_BLOB_DIR", None)
        self.env.pop("CASTBOOK_COMFYUI_URL", None)  # the preset names the lab's server
        if self.redis is not None:
            self.env["CASTBOOK_REDIS_URL"] = self.redis.url
        self.processes: list[Process] = []
        self.database = Database(database_url)  # brings the schema up to date
        from castbook.api import ApiKeys

        self.key = ApiKeys(self.database).create("chaos")[1]
        self.accepted: list[str] = []
        self.kills = 0
        self.torch_pids: set[int] = set()  # processes seen with torch loaded
        self.cpu: dict[str, float] = {}  # CPU seconds of each process, read as it is killed
        self.cleanups: list[Callable[[], None]] = []
        self.removals: list[Callable[[], None]] = []  # what remove() deletes besides files
        self.postgres: OwnPostgres | None = None

    # ---- processes

    def server(
        self, port: int | None = None, *, wait: bool = True, redis_url: str | None = None
    ) -> Server:
        """Start ``castbook serve``; with ``wait``, until it answers ``/health``."""
        port = port or _free_port()
        name = f"serve-{len(self.processes)}"
        args = [sys.executable, "-m", "castbook", "serve", "--port", str(port)]
        env = {**self.env, "CASTBOOK_REDIS_URL": redis_url} if redis_url else self.env
        process = Process.spawn(name, args, env, self.folder / f"{name}.log")
        self.processes.append(process)
        server = Server(process, f"http://{HOST}:{port}", self.key)
        if wait:
            self.ready(server)
        return server

    def ready(self, server: Server) -> None:
        def up() -> bool:
            if not server.process.alive:
                raise AssertionError(f"castbook serve exited\n{server.process.output()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{server.base}/health", timeout=2).status_code == 200
            return False

        _until(up, STARTUP_TIMEOUT, "castbook serve to answer /health")

    def worker(self) -> Process:
        name = f"worker-{len(self.processes)}"
        args = [sys.executable, "-m", "castbook", "worker", "--loglevel", "info", "--pool",
                "solo", "--queue", "default"]  # fmt: skip
        process = Process.spawn(name, args, self.env, self.folder / f"{name}.log")
        self.processes.append(process)
        return process

    def kill(self, process: Process) -> None:
        self.note_torch(process)
        self.end(process)
        self.kills += 1

    def end(self, process: Process) -> None:
        """SIGKILL ``process``'s group, its CPU time noted first."""
        if process.alive:
            self.cpu[process.name] = process.cpu_seconds()
        process.kill()

    def note_torch(self, process: Process) -> None:
        """Note the processes of ``process``'s group that have torch loaded (a server's
        worker process is in its group)."""
        if process.alive:
            self.torch_pids |= {pid for pid in _group(process.popen.pid) if _loads_torch(pid)}

    def logs(self) -> str:
        return "\n".join(p.output() for p in self.processes)

    # ---- tasks

    def submit(self, server: Server, steps: int, seed: int) -> str | None:
        """POST a generation; its id once accepted (202), None when the request failed."""
        try:
            answer = server.http.post(
                "/v1/generations",
                json={"preset": "tiny", "prompt": f"a lighthouse {seed}", "seed": seed,
                      "steps": steps},
            )  # fmt: skip
        except httpx.HTTPError:
            return None
        if answer.status_code != 202:
            return None
        task_id = str(answer.json()["id"])
        self.accepted.append(task_id)
        return task_id

    def rows(self) -> dict[str, tuple[str, int, int]]:
        """Every task row: id -> (status, progress step, progress total)."""
        with self.database.session() as session:
            return {
                row.id: (row.status, row.progress_step, row.progress_total)
                for row in session.execute(
                    select(JobRow.id, JobRow.status, JobRow.progress_step, JobRow.progress_total)
                )
            }

    def wait_running(self, at_least: Callable[[int, int], bool], what: str) -> str:
        """The id of a running task whose (step, total) satisfies ``at_least``."""

        def running() -> str | None:
            for task_id, (status, step, total) in self.rows().items():
                if status == "running" and total and at_least(step, total):
                    return task_id
            return None

        try:
            return _until(running, END_DEADLINE, what, step=0.02)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    # ---- the verdict

    def outcome(self, scenario: str, server: Server) -> Outcome:
        """Wait (bounded) for every accepted task and every row to end, then count."""
        # A row a killed request left behind was accepted by the database if not the client.
        accepted = list(dict.fromkeys([*self.accepted, *self.rows()]))
        result = Outcome(scenario, accepted=len(accepted), kills=self.kills)
        ended: dict[str, dict[str, Any]] = {}

        def all_ended() -> bool:
            for task_id in accepted:
                if task_id in ended:
                    continue
                with contextlib.suppress(httpx.HTTPError):
                    answer = server.http.get(f"/v1/tasks/{task_id}")
                    if answer.status_code == 200 and answer.json()["status"] in (
                        "succeeded", "failed", "cancelled",
                    ):  # fmt: skip
                        ended[task_id] = answer.json()
            return len(ended) == len(accepted)

        with contextlib.suppress(AssertionError):
            _until(all_ended, END_DEADLINE, "every task to end", step=0.25)
        endings = Counter(
            match.group(1)
            for process in self.processes
            if process.log.exists()
            for match in ENDED.finditer(process.log.read_text(errors="replace"))
        )
        result.endings_logged = sum(endings.values())
        for task_id in accepted:
            task = ended.get(task_id)
            if task is None:
                result.lost += 1
                result.notes.append(f"lost {task_id}: {self.rows().get(task_id)}")
                continue
            if task["status"] == "succeeded":
                result.succeeded += 1
            elif task["status"] == "failed" and task["error"]:
                result.failed += 1
                result.notes.append(f"failed {task_id}: {task['error']}")
            else:
                result.notes.append(f"ended {task['status']} without a reason: {task_id}")
            wanted = int(task["input"].get("request", {}).get("batch", 1) or 1)
            if endings[task_id] > 1 or len(task["outputs"]) > wanted:
                result.duplicated += 1
                result.notes.append(
                    f"duplicated {task_id}: ended {endings[task_id]} times, "
                    f"{len(task['outputs'])} outputs"
                )
        for process in self.processes:
            self.note_torch(process)
        result.torch_processes = len(self.torch_pids)
        result.resent = sum(
            process.log.read_text(errors="replace").count("was lost; sent it again")
            for process in self.processes
            if process.log.exists()
        )
        orphans = self.orphan_blobs()
        result.orphan_blobs = len(orphans)
        if orphans:
            result.notes.append(f"orphan blobs: {sorted(orphans)[:5]}")
        return result

    def orphan_blobs(self) -> set[str]:
        store = BlobStore(self.home / "blobs")
        stored = set(store)
        with self.database.session() as session:
            referenced = set(session.scalars(select(JobOutputRow.sha256)))
            referenced |= set(session.scalars(select(JobInputRow.sha256)))
            for sha, thumb in session.execute(
                select(ReferenceImageRow.sha256, ReferenceImageRow.thumbnail_sha256)
            ):
                referenced |= {sha, thumb}
        return stored - referenced

    def output_rows(self) -> int:
        with self.database.session() as session:
            return int(session.scalar(select(func.count()).select_from(JobOutputRow)) or 0)

    def close(self) -> None:
        for process in self.processes:
            if process.alive:
                self.end(process)
        for cleanup in self.cleanups:
            cleanup()
        if self.redis is not None:
            self.redis.stop()
        self.database.dispose()

    def remove(self) -> None:
        """Delete what the run left (after ``close``): its folder and its database."""
        shutil.rmtree(self.folder, ignore_errors=True)
        for removal in self.removals:
            removal()


@dataclass
class Server:
    process: Process
    base: str
    key: str
    _http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(
                base_url=self.base, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
            )
        return self._http


# ---- the scenarios -------------------------------------------------------------------------
#
# Each takes a fresh cluster and returns the server to ask for the verdict. Tasks: one long
# enough to be caught running (30 steps of the tiny model), two short ones behind it.


def _submit_three(cluster: Cluster, server: Server, seed: int = 1) -> None:
    for offset, steps in enumerate((30, 2, 2)):
        assert cluster.submit(server, steps, seed + offset), "the server refused a task"


def worker_killed_mid_job(cluster: Cluster) -> Server:
    """A Celery worker SIGKILLed while a task runs; a new worker takes over."""
    worker = cluster.worker()  # it starts while the server does
    server = cluster.server()
    _submit_three(cluster, server)
    cluster.wait_running(lambda step, total: step >= 2, "a task to be running")
    cluster.kill(worker)
    cluster.worker()
    return server


def worker_killed_at_finish(cluster: Cluster) -> Server:
    """A Celery worker SIGKILLed on a task's last steps (saving its outputs, recording it)."""
    worker = cluster.worker()  # it starts while the server does
    server = cluster.server()
    _submit_three(cluster, server)
    cluster.wait_running(lambda step, total: step >= total - 1 and total >= 10, "a last step")
    cluster.kill(worker)
    cluster.worker()
    return server


def redis_killed_mid_job(cluster: Cluster) -> Server:
    """Redis SIGKILLed while a task runs and two wait, and restarted empty: every queued
    message and the running task's unacknowledged one are gone."""
    assert cluster.redis is not None
    cluster.worker()
    server = cluster.server()
    _submit_three(cluster, server)
    cluster.wait_running(lambda step, total: step >= 2, "a task to be running")
    cluster.redis.restart()
    cluster.kills += 1
    return server


def server_killed_before_publish(cluster: Cluster) -> Server:
    """`castbook serve` SIGKILLed after inserting a task's row but before its message
    reached Redis (its connection runs through a proxy that swallows the publish); the next
    server's start finds the row without a message and sends it."""
    assert cluster.redis is not None
    proxy = Blackhole(cluster.redis.port)
    cluster.cleanups.append(proxy.close)
    cluster.worker()
    first = cluster.server(redis_url=proxy.url)
    assert cluster.submit(first, 2, 1), "the server refused a task"
    before = set(cluster.rows())
    proxy.drop.set()
    posting = threading.Thread(target=cluster.submit, args=(first, 2, 2), daemon=True)
    posting.start()
    _until(lambda: set(cluster.rows()) - before, END_DEADLINE, "the task's row")
    cluster.kill(first.process)
    posting.join(timeout=60)
    proxy.drop.clear()
    return cluster.server()


def postgres_killed_mid_job(cluster: Cluster) -> Server:
    """PostgreSQL SIGKILLed (postmaster and backends) while a task runs, started again
    after a couple of seconds: the worker's writes fail meanwhile, its job is left running
    without a heartbeat, and the sweep re-queues it once the lease has passed."""
    assert cluster.postgres is not None
    cluster.worker()
    server = cluster.server()
    _submit_three(cluster, server)
    cluster.wait_running(lambda step, total: step >= 2 and total >= 10, "a task to be running")
    cluster.postgres.kill()
    cluster.kills += 1
    cluster.postgres.start()
    return server


def two_servers_one_killed(cluster: Cluster) -> Server:
    """Two `castbook serve` (local executor) on one PostgreSQL database and blob store; one
    is SIGKILLed (its whole process group) while tasks run; it is started again."""
    first = cluster.server(wait=False)  # both start at once
    second = cluster.server()
    cluster.ready(first)
    _submit_three(cluster, first, seed=1)
    _submit_three(cluster, second, seed=11)
    cluster.wait_running(lambda step, total: step >= 2 and total >= 10, "a task to be running")
    port = int(first.base.rsplit(":", 1)[1])
    cluster.kill(first.process)
    cluster.server(port)
    return second


SCENARIOS: dict[str, tuple[str, Callable[[Cluster], Server]]] = {
    "worker killed mid-job": ("celery", worker_killed_mid_job),
    "worker killed at the finish": ("celery", worker_killed_at_finish),
    "redis killed mid-job, restarted empty": ("celery", redis_killed_mid_job),
    "server killed between insert and publish": ("celery", server_killed_before_publish),
    "two servers on one database, one killed": ("local", two_servers_one_killed),
    "postgres killed mid-job": ("celery", postgres_killed_mid_job),
}
# Scenarios that need a PostgreSQL server of their own (they kill it).
OWN_POSTGRES = frozenset({"postgres killed mid-job"})


def run_scenario(lab: Lab, name: str, *, keep: bool = False) -> tuple[Outcome, str]:
    """Run scenario ``name`` once on a fresh cluster: (its outcome, the processes' logs)."""
    executor, scenario = SCENARIOS[name]
    cluster = lab.cluster(executor, own_postgres=name in OWN_POSTGRES)
    try:
        server = scenario(cluster)
        outcome = cluster.outcome(name, server)
        logs = cluster.logs()
    finally:
        cluster.close()
        if not keep:
            cluster.remove()
    outcome.cpu = dict(cluster.cpu)
    return outcome, logs
