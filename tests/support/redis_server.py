"""Start a throwaway, real Redis server for the test suite.

Standard library only.

    server = start_redis(tmp_dir)     # raises RedisUnavailable(reason)
    server.url                        # redis://127.0.0.1:PORT/0
    server.command("HLEN", "unacked", db=1)  # one command through the RESP protocol
    server.stop()                     # idempotent; also runs at interpreter exit

The server listens on a free port on 127.0.0.1 only, keeps nothing on disk
(``--save "" --appendonly no``) and is stopped with the test process. The binary is
``$CASTBOOK_REDIS_SERVER`` or ``redis-server`` on PATH (Debian's ``redis-server`` package).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RedisServer", "RedisUnavailable", "find_redis_server", "redis_required", "start_redis"]

HOST = "127.0.0.1"
READY_TIMEOUT_S = 15.0


class RedisUnavailable(Exception):
    """A Redis server could not be started; ``str(exc)`` says why."""


def redis_required() -> bool:
    """True when the environment insists on every service (CI): fail instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def find_redis_server() -> Path | None:
    override = os.environ.get("CASTBOOK_REDIS_SERVER")
    if override and os.access(override, os.X_OK):
        return Path(override)
    for candidate in (
        shutil.which("redis-server"),
        "/usr/bin/redis-server",
        "/usr/sbin/redis-server",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _encode(*args: str | bytes | int) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_reply(stream: socket.SocketIO | object) -> object:
    line = stream.readline()  # type: ignore[attr-defined]
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)  # type: ignore[attr-defined]
        return data[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(stream) for _ in range(count)]
    raise RuntimeError(f"unexpected reply from redis: {line!r}")


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def command(self, *args: str | bytes | int, db: int = 0, timeout: float = 5.0) -> object:
        """Send one command to database ``db`` and return its reply (a small RESP client)."""
        with (
            socket.create_connection((HOST, self.port), timeout=timeout) as sock,
            sock.makefile("rb") as stream,
        ):
            if db:
                sock.sendall(_encode("SELECT", db))
                _read_reply(stream)
            sock.sendall(_encode(*args))
            return _read_reply(stream)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _server_args(port: int, base_dir: Path) -> list[str]:
    # Loopback only, nothing kept on disk, in the foreground so the test owns the process.
    options = {
        "port": str(port),
        "bind": HOST,
        "save": "",
        "appendonly": "no",
        "dir": str(base_dir),
        "protected-mode": "yes",
        "daemonize": "no",
    }
    return [part for name, value in options.items() for part in (f"--{name}", value)]


def start_redis(base_dir: Path) -> RedisServer:
    """Start ``redis-server`` on a free loopback port; wait until it answers PING."""
    binary = find_redis_server()
    if binary is None:
        raise RedisUnavailable(
            "redis-server not found (apt-get install redis-server, or set CASTBOOK_REDIS_SERVER)"
        )
    base_dir.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _ in range(3):  # the free port may be taken between the probe and the bind
        port = _free_port()
        log_path = base_dir / f"redis-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(binary), *_server_args(port, base_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=base_dir,
            )
        server = RedisServer(port, process, log_path)
        atexit.register(server.stop)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and server.is_running():
            with contextlib.suppress(OSError, ConnectionError, RuntimeError):
                if server.command("PING", timeout=1) == "PONG":
                    return server
            time.sleep(0.05)
        last_error = server.log_tail() or "no output"
        server.stop()
    raise RedisUnavailable(f"redis-server ({binary}) did not start: {last_error}")
