"""A real S3-protocol server for the tests: moto in server mode, in its own process on a free
port of 127.0.0.1 (``pip install 'moto[server]'``, the ``test`` extra). castbook talks to it
over HTTP exactly as to AWS S3 or MinIO; nothing in the client is mocked.

    server = start_s3()            # raises S3Unavailable(reason)
    url = server.new_bucket()      # s3://castbook-t3/blobs, an empty bucket of its own
    server.stop()                  # idempotent; also runs at interpreter exit
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AWS_ENV", "S3Server", "S3Unavailable", "start_s3"]

HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
# What the AWS tools read; castbook's store takes its credentials the same way.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "castbook-test",
    "AWS_SECRET_ACCESS_KEY": "castbook-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance-metadata service
}
_buckets = itertools.count(1)


class S3Unavailable(Exception):
    """The S3 server could not be started; ``str(exc)`` says why."""


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path
    _stopped: bool = field(default=False, repr=False)
    _client: Any = field(default=None, repr=False)

    def client(self) -> Any:
        """A plain boto3 client of the test's own (to plant or inspect objects directly)."""
        if self._client is None:
            import boto3

            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint, region_name="us-east-1"
            )
        return self._client

    def new_bucket(self, prefix: str = "blobs") -> str:
        name = f"castbook-t{os.getpid()}-{next(_buckets)}"
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}/{prefix}" if prefix else f"s3://{name}"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_s3(tmp_dir: Path) -> S3Server:
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise S3Unavailable(f"moto[server] is not installed ({exc})") from exc
    for key, value in AWS_ENV.items():
        os.environ.setdefault(key, value)
    port = _free_port()
    log = tmp_dir / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = S3Server(f"http://{HOST}:{port}", process, log)
    atexit.register(server.stop)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise S3Unavailable(f"moto_server exited: {log.read_text()[-2000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=2),
        ):
            return server
        time.sleep(0.1)
    server.stop()
    raise S3Unavailable(f"moto_server did not answer within {READY_TIMEOUT_S:.0f} s")


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of ``target`` (host, port) that forwards the first
    ``allow`` bytes a client sends on each connection and then drops the connection: an
    object store that becomes unreachable in the middle of an upload."""

    def __init__(self, target: tuple[str, int], allow: int) -> None:
        import threading

        self.target = target
        self.allow = allow
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://{HOST}:{self.port}"
        self.cut = 0  # connections dropped part-way
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        import threading

        upstream = socket.create_connection(self.target)

        def back() -> None:
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    client.sendall(data)

        threading.Thread(target=back, daemon=True).start()
        sent = 0
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if sent + len(data) > self.allow:
                    upstream.sendall(data[: self.allow - sent])
                    self.cut += 1
                    break
                upstream.sendall(data)
                sent += len(data)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()
