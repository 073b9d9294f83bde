"""What every fake remote server of the suite shares: a threaded HTTP server on 127.0.0.1 with
a free port, started and stopped with the test (a context manager), whose handlers reach the
fake through ``self.server.owner`` and whose scripted waits end at ``_stopping``."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

__all__ = ["LoopbackServer"]


class LoopbackServer:
    _httpd: ThreadingHTTPServer

    def _listen(
        self, server: type[ThreadingHTTPServer], handler: type[BaseHTTPRequestHandler]
    ) -> None:
        """Bind ``server`` with ``handler`` on a free loopback port (call from ``__init__``)."""
        self._stopping = threading.Event()
        self._httpd = server(("127.0.0.1", 0), handler)
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a scripted delay
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"
