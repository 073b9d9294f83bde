"""Security headers on every answer of the API, the web app and the API docs.

The Content-Security-Policy lets a page load scripts, styles, fonts and data only from the
server's own origin; pictures and videos also come from ``blob:`` URLs (the web app fetches
them with the key and shows them from memory) and ``data:`` URLs (icons inside the docs'
stylesheets). No page may be framed (``frame-ancestors 'none'``, and ``X-Frame-Options`` for
older browsers), no response is MIME-sniffed, and no Referer leaves the app.

Only ``/redoc`` may use inline styles and a ``blob:`` worker: ReDoc styles itself that way
(without them it shows "Something went wrong") and searches in a worker it makes from a
blob. No page runs an inline script; the web app and ``/docs`` need neither exception. (ReDoc
still tries to show a logo from its vendor's CDN; the policy blocks it, and the link text
shows alone.)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["CONTENT_SECURITY_POLICY", "REDOC_CONTENT_SECURITY_POLICY", "SecurityHeaders"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data: blob:",
    "media-src": "'self' blob:",
    "font-src": "'self' data:",
    "connect-src": "'self'",
    "worker-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def _policy(**changes: str) -> str:
    policy = {**_POLICY, **{name.replace("_", "-"): value for name, value in changes.items()}}
    return "; ".join(f"{name} {value}" for name, value in policy.items())


CONTENT_SECURITY_POLICY = _policy()
REDOC_CONTENT_SECURITY_POLICY = _policy(
    style_src="'self' 'unsafe-inline'", worker_src="'self' blob:"
)

_COMMON = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeaders:
    """ASGI middleware adding the headers above to every HTTP response, errors included
    (it sits outermost, so a 401 from the key gate or a 413 carries them too).

    It also adds ``Server-Timing: app;dur=<ms>``: the time from the request reaching the
    application to its answer starting, auth, quotas and any wait for a worker thread or the
    database included. A client compares it with the latency it sees to tell the server's
    share from the network's and its own (browsers show it in their developer tools;
    ``benchmarks/api_load.py`` reports both)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        policy = REDOC_CONTENT_SECURITY_POLICY if path == "/redoc" else CONTENT_SECURITY_POLICY
        added = ((b"content-security-policy", policy.encode()), *_COMMON)
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed_ms = 1000 * (time.perf_counter() - started)
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in added if name not in present)
                headers.append((b"server-timing", f"app;dur={elapsed_ms:.2f}".encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
