"""Start a throwaway, real PostgreSQL server for the test suite.

Standard library only (psycopg is used when importable, ``psql`` otherwise).

    server = start_postgres(tmp_dir)     # raises PostgresUnavailable(reason)
    server.url                           # postgresql+psycopg://castbook@127.0.0.1:PORT/castbook_test
    server.create_database("other")      # fresh empty database, returns its SQLAlchemy URL
    server.stop()                        # idempotent; also runs at interpreter exit

The server is initialised with ``initdb -A trust -U castbook``, listens on a free
random port on 127.0.0.1 only, and runs with fsync/full_page_writes/synchronous_commit
off.  PostgreSQL refuses to run as root, so when the euid is 0 every PostgreSQL
binary is run as the ``postgres`` system user (or ``castbook-pg``, created on
demand) and the directories leading to the data directory are made traversable.

Cleanup: ``stop()`` (``pg_ctl stop -m immediate`` + removal of the data directory)
is registered with ``atexit``; in addition a tiny watchdog process stops the server
if the test process dies without running ``atexit`` (SIGKILL, SIGTERM, OOM).

Binaries are looked up by :func:`find_postgres_bin`; ``CASTBOOK_PG_BIN`` may name
the directory explicitly.
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PostgresServer",
    "PostgresUnavailable",
    "find_postgres_bin",
    "postgres_required",
    "start_postgres",
]

SUPERUSER = "castbook"
DEFAULT_DB = "castbook_test"
HOST = "127.0.0.1"
FALLBACK_USER = "castbook-pg"
READY_TIMEOUT_S = 30.0
_REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
_DB_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# sun_path is 108 bytes on Linux (107 usable); PostgreSQL appends "/.s.PGSQL.NNNNN".
_MAX_SOCKET_PATH = 107


class PostgresUnavailable(Exception):
    """A PostgreSQL server could not be started; ``str(exc)`` says why."""


def postgres_required() -> bool:
    """True when the environment insists on PostgreSQL (CI): fail instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


# --------------------------------------------------------------------------- binaries


def _has_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in _REQUIRED_BINARIES)


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin -> numeric version, "9.6" < "15"
    parts = re.findall(r"\d+", path.parent.name)
    return tuple(int(p) for p in parts) if parts else (-1,)


def find_postgres_bin() -> Path | None:
    """Directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None.

    Order: ``$CASTBOOK_PG_BIN``, ``PATH``, then ``/usr/lib/postgresql/*/bin``
    (highest version first; Debian keeps the server binaries off ``PATH``).
    """
    override = os.environ.get("CASTBOOK_PG_BIN")
    if override and _has_binaries(Path(override)):
        return Path(override)

    initdb = shutil.which("initdb")
    if initdb:
        found = Path(initdb)
        # Prefer the real directory (PATH entries are often symlinks into it).
        for candidate in (found.resolve().parent, found.parent):
            if _has_binaries(candidate):
                return candidate

    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if _has_binaries(p)]
    if candidates:
        return max(candidates, key=_version_key)
    return None


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _RunAs:
    """Who runs the PostgreSQL binaries: None uid/gid means the current user."""

    name: str
    uid: int | None = None
    gid: int | None = None

    def popen_kwargs(self) -> dict:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def groups(self) -> set[int]:
        if self.uid is None:
            return set(os.getgroups()) | {os.getegid()}
        gids = {self.gid} if self.gid is not None else set()
        gids |= {g.gr_gid for g in grp.getgrall() if self.name in g.gr_mem}
        return gids


def _resolve_run_as() -> _RunAs:
    if os.geteuid() != 0:
        return _RunAs(pwd.getpwuid(os.geteuid()).pw_name)
    for name in ("postgres", FALLBACK_USER):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return _RunAs(name, entry.pw_uid, entry.pw_gid)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    proc = subprocess.run(
        [useradd, "--system", "--no-create-home", "--user-group", FALLBACK_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        entry = pwd.getpwnam(FALLBACK_USER)
    except KeyError:
        raise PostgresUnavailable(
            "running as root, PostgreSQL refuses to run as root, there is no 'postgres' user "
            f"and creating {FALLBACK_USER!r} failed: {(proc.stdout + proc.stderr).strip()}"
        ) from None
    return _RunAs(FALLBACK_USER, entry.pw_uid, entry.pw_gid)


def _make_traversable(path: Path, run_as: _RunAs) -> None:
    """Give ``run_as`` search (x) permission on ``path`` and every parent directory."""
    if run_as.uid is None:
        return
    groups = run_as.groups()
    for directory in (path, *path.parents):
        st = directory.stat()
        if st.st_uid == run_as.uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            try:
                os.chmod(directory, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
            except OSError as exc:
                raise PostgresUnavailable(
                    f"user {run_as.name!r} cannot reach {path}: {directory} is not "
                    f"traversable and chmod o+x failed: {exc}"
                ) from exc


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", TZ="UTC", HOME=str(home))
    env.pop("LANGUAGE", None)
    return env


def _log_tail(log_path: Path, lines: int = 30) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(server log is empty)"


def _conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _read_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_cluster(pg_ctl: Path, data_dir: Path, run_as_kwargs: dict, env: dict, cwd: str) -> None:
    """``pg_ctl stop -m immediate``; SIGKILL the postmaster if that did not work."""
    if not (data_dir / "postmaster.pid").exists():
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [str(pg_ctl), "stop", "-D", str(data_dir), "-m", "immediate", "-w", "-t", "15"],
            capture_output=True,
            env=env,
            cwd=cwd,
            timeout=30,
            check=False,
            **run_as_kwargs,
        )
    pid = _read_pid(data_dir)
    if pid is not None and _pid_alive(pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- server


@dataclass(eq=False)
class PostgresServer:
    """A running temporary PostgreSQL server (see module docstring)."""

    url: str
    data_dir: Path
    port: int = 0
    host: str = HOST
    user: str = SUPERUSER
    database: str = DEFAULT_DB
    log_path: Path | None = None
    bin_dir: Path | None = None
    _run_as: _RunAs | None = field(default=None, repr=False)
    _env: dict = field(default_factory=dict, repr=False)
    _extra_dirs: list = field(default_factory=list, repr=False)
    _watchdog: subprocess.Popen | None = field(default=None, repr=False)
    _watchdog_fd: int | None = field(default=None, repr=False)
    _owner_pid: int = field(default_factory=os.getpid, repr=False)
    _stopped: bool = field(default=False, repr=False)

    # -- URLs

    def sqlalchemy_url(self, database: str | None = None) -> str:
        return (
            f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database or self.database}"
        )

    def libpq_url(self, database: str | None = None) -> str:
        """Plain ``postgresql://`` URL, usable with ``psycopg.connect`` / ``psql``."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database or self.database}"

    # -- SQL

    def _execute(self, sql: str, database: str = "postgres") -> None:
        try:
            import psycopg
        except ImportError:
            psycopg = None
        if psycopg is not None:
            with psycopg.connect(
                self.libpq_url(database), autocommit=True, connect_timeout=10
            ) as c:
                c.execute(sql)
            return
        assert self.bin_dir is not None
        psql = [str(self.bin_dir / "psql"), "-X", "-v", "ON_ERROR_STOP=1"]
        proc = subprocess.run(
            [*psql, "-d", self.libpq_url(database), "-c", sql],
            capture_output=True,
            text=True,
            env=self._env,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed ({proc.returncode}): {proc.stderr.strip()}")

    def create_database(self, name: str, template: str = "template0") -> str:
        """Create database ``name`` (dropped first if it exists) as a copy of ``template``
        (by default empty; a database of this server that nobody is connected to); return
        its URL."""
        for each in (name, template):
            if not _DB_NAME_RE.match(each):
                raise ValueError(f"invalid database name {each!r}: use [A-Za-z_][A-Za-z0-9_]*")
        if self._stopped:
            raise RuntimeError("PostgreSQL server has been stopped")
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" ENCODING \'UTF8\'')
        return self.sqlalchemy_url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists (its connections are ended first): a long
        series of runs keeps the data directory small."""
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"invalid database name {name!r}: use [A-Za-z_][A-Za-z0-9_]*")
        if not self._stopped:
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- lifecycle

    def is_running(self) -> bool:
        pid = _read_pid(self.data_dir)
        return pid is not None and _pid_alive(pid)

    def stop(self) -> None:
        """Stop the server immediately and delete its data directory. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self._atexit_stop)
        run_kwargs = self._run_as.popen_kwargs() if self._run_as else {}
        assert self.bin_dir is not None
        cwd = str(self.data_dir.parent) if self.data_dir.parent.exists() else "/"
        _stop_cluster(self.bin_dir / "pg_ctl", self.data_dir, run_kwargs, self._env, cwd)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        for extra in self._extra_dirs:
            shutil.rmtree(extra, ignore_errors=True)
        self._release_watchdog()

    def _release_watchdog(self) -> None:
        if self._watchdog_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._watchdog_fd, b"x")  # "stopped cleanly, just exit"
            with contextlib.suppress(OSError):
                os.close(self._watchdog_fd)
            self._watchdog_fd = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None

    def _atexit_stop(self) -> None:
        # A forked child (multiprocessing etc.) must not stop its parent's server.
        if os.getpid() == self._owner_pid:
            self.stop()

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _spawn_watchdog(server: PostgresServer) -> None:
    """Start a detached helper that stops the server if this process dies abruptly."""
    assert server.bin_dir is not None and server._run_as is not None
    read_fd, write_fd = os.pipe()
    config = {
        "fd": read_fd,
        "pg_ctl": str(server.bin_dir / "pg_ctl"),
        "data_dir": str(server.data_dir),
        "run_as": server._run_as.popen_kwargs(),
        "env": server._env,
        "remove": [str(server.data_dir), *map(str, server._extra_dirs)],
    }
    try:
        # The config (which holds the environment) goes through stdin, not argv (ps).
        proc = subprocess.Popen(
            [sys.executable, "-I", str(Path(__file__).resolve()), "--watchdog"],
            pass_fds=(read_fd,),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # survives Ctrl-C of the test run long enough to clean up
        )
        assert proc.stdin is not None
        with proc.stdin:
            proc.stdin.write(json.dumps(config).encode())
    except OSError:
        os.close(write_fd)
        return
    finally:
        os.close(read_fd)
    server._watchdog, server._watchdog_fd = proc, write_fd


def _watchdog_main(config: dict) -> None:
    try:
        message = os.read(config["fd"], 1)  # blocks until the test process writes or dies
    except OSError:
        message = b""
    if message:
        return  # stop() ran in the parent
    data_dir = Path(config["data_dir"])
    cwd = str(data_dir.parent) if data_dir.parent.exists() else "/"
    _stop_cluster(Path(config["pg_ctl"]), data_dir, config["run_as"], config["env"], cwd)
    for path in config["remove"]:
        shutil.rmtree(path, ignore_errors=True)


def start_postgres(base_dir: Path) -> PostgresServer:
    """initdb + start a private server under ``base_dir``; create database ``castbook_test``.

    Raises PostgresUnavailable with a human-readable reason (including the tail of
    the server log where there is one) when the server cannot be started.
    """
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise PostgresUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
            "/usr/lib/postgresql/*/bin; install them with scripts/install-system-deps.sh"
        )
    run_as = _resolve_run_as()

    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    instance = Path(tempfile.mkdtemp(prefix="pg-", dir=base_dir))
    if run_as.uid is not None:
        os.chown(instance, run_as.uid, run_as.gid)
    _make_traversable(instance, run_as)
    data_dir = instance / "data"
    log_path = instance / "server.log"
    env = _clean_env(instance)
    run_kwargs = run_as.popen_kwargs()

    def run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env=env,
                cwd=str(instance),
                timeout=timeout,
                check=False,
                **run_kwargs,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise PostgresUnavailable(f"could not run {cmd[0]} as {run_as.name!r}: {exc}") from exc

    # Unix socket: in the data dir unless that path is too long for sun_path.
    extra_dirs: list[Path] = []
    socket_dir = data_dir
    if len(str(socket_dir)) + len("/.s.PGSQL.65535") > _MAX_SOCKET_PATH:
        socket_dir = Path(tempfile.mkdtemp(prefix="cbpg-"))
        extra_dirs.append(socket_dir)
        if run_as.uid is not None:
            os.chown(socket_dir, run_as.uid, run_as.gid)

    initdb = run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data_dir),
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        timeout=120,
    )
    if initdb.returncode != 0:
        output = "\n".join((initdb.stdout + initdb.stderr).strip().splitlines()[-30:])
        shutil.rmtree(data_dir, ignore_errors=True)
        for extra in extra_dirs:
            shutil.rmtree(extra, ignore_errors=True)
        raise PostgresUnavailable(f"initdb ({bin_dir}) failed as {run_as.name!r}:\n{output}")

    with open(data_dir / "postgresql.conf", "a") as conf:  # keeps its owner and mode
        conf.write(
            "\n# castbook test server\n"
            f"listen_addresses = {_conf_quote(HOST)}\n"
            f"unix_socket_directories = {_conf_quote(str(socket_dir))}\n"
            "fsync = off\n"
            "full_page_writes = off\n"
            "synchronous_commit = off\n"
            "max_connections = 200\n"
        )

    server = PostgresServer(
        url="",
        data_dir=data_dir,
        log_path=log_path,
        bin_dir=bin_dir,
        _run_as=run_as,
        _env=env,
        _extra_dirs=extra_dirs,
    )
    atexit.register(server._atexit_stop)

    try:
        # The free port can be taken between probing and binding: retry a few times.
        pg_ctl_start = [str(bin_dir / "pg_ctl"), "start", "-D", str(data_dir), "-l", str(log_path)]
        pg_ctl_start += ["-w", "-t", str(int(READY_TIMEOUT_S))]
        for attempt in range(3):
            port = _free_port()
            started = run(
                [*pg_ctl_start, "-o", f"-p {port}"],
                timeout=READY_TIMEOUT_S + 15,
            )
            if started.returncode == 0:
                break
            log = _log_tail(log_path)
            if attempt < 2 and ("could not bind" in log or "already in use" in log):
                _stop_cluster(bin_dir / "pg_ctl", data_dir, run_kwargs, env, str(instance))
                continue
            raise PostgresUnavailable(
                f"pg_ctl start failed (exit {started.returncode}): "
                f"{(started.stdout + started.stderr).strip()}\n--- server log ({log_path}) ---\n"
                f"{log}"
            )
        server.port = port
        server.url = server.sqlalchemy_url()
        _spawn_watchdog(server)
        _wait_ready(server)
        server._execute(f"CREATE DATABASE \"{DEFAULT_DB}\" TEMPLATE template0 ENCODING 'UTF8'")
    except PostgresUnavailable:
        server.stop()
        raise
    except Exception as exc:
        server.stop()
        raise PostgresUnavailable(
            f"PostgreSQL started but is unusable: {exc}\n--- server log ---\n{_log_tail(log_path)}"
        ) from exc
    return server


def _wait_ready(server: PostgresServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not server.is_running():
            raise PostgresUnavailable(
                "PostgreSQL exited during startup\n--- server log ---\n"
                + _log_tail(server.log_path or Path("/nonexistent"))
            )
        try:
            server._execute("SELECT 1")
            return
        except Exception as exc:
            last_error = exc
            time.sleep(0.1)
    raise PostgresUnavailable(
        f"PostgreSQL on port {server.port} did not accept connections within "
        f"{READY_TIMEOUT_S:.0f}s: {last_error}\n--- server log ---\n"
        + _log_tail(server.log_path or Path("/nonexistent"))
    )


if __name__ == "__main__" and sys.argv[1:] == ["--watchdog"]:
    _watchdog_main(json.loads(sys.stdin.read()))
