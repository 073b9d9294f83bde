"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions wire format.

``POST /v1/chat/completions`` answers ``{"choices": [{"message": {"content": ...}}]}``.
Replies are scripted per API key (the ``Authorization: Bearer`` token; ``None`` for a
request without one), falling back to the ``"*"`` queue, then to a good answer::

    with FakeChatServer() as server:
        server.script("sk-free-…", ChatReply(status=429, code="rate_limit_exceeded"))
        server.script("*", ChatReply(content="not json"), ChatReply())

Every request is recorded (:class:`ChatRequest`), with its token and parsed JSON body.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.loopback import LoopbackServer

__all__ = ["GOOD_ANSWER", "ChatReply", "ChatRequest", "FakeChatServer", "answer_json"]

GOOD_ANSWER: dict[str, Any] = {
    "description": "A young woman with a confident look.",
    "physical": {
        "hair": "long wavy red hair",
        "eyes": "green eyes",
        "face": "oval face with freckles",
        "body": "slim build",
        "skin": "fair skin",
    },
    "clothing": "dark green hooded cloak over a brown leather vest",
    "accessories": ["silver pendant"],
    "distinctive_features": ["small scar over the left eyebrow"],
    "style_prompt": "A young woman with long wavy red hair, green eyes and freckles, "
    "wearing a dark green hooded cloak.",
}


def answer_json(**changes: Any) -> str:
    """GOOD_ANSWER with top-level ``changes`` (``physical`` merged), as JSON text."""
    data = json.loads(json.dumps(GOOD_ANSWER))
    physical = changes.pop("physical", None)
    if physical is not None:
        data["physical"].update(physical)
    data.update(changes)
    return json.dumps(data)


@dataclass(frozen=True)
class ChatReply:
    """One answer. ``status`` ≠ 200 sends ``{"error": {"message", "type", "code"}}``
    (``{key}`` in ``message`` becomes the caller's token, to test redaction); ``content``
    is the assistant's text (default: :data:`GOOD_ANSWER`); ``delay`` waits first;
    ``raw_body`` is sent as-is."""

    status: int = 200
    content: str | None = None
    message: str = ""
    code: str | None = None
    type: str = "invalid_request_error"
    delay: float = 0.0
    raw_body: bytes | None = None


@dataclass
class ChatRequest:
    path: str
    headers: dict[str, str]  # names lower-cased
    token: str | None
    json: Any = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.json.get("messages", [])) if isinstance(self.json, dict) else []


class FakeChatServer(LoopbackServer):
    """A threaded stdlib HTTP server bound to 127.0.0.1 on a free port."""

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []
        self._replies: dict[str | None, deque[ChatReply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._listen(_Server, _Handler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def script(self, key: str | None, *replies: ChatReply) -> None:
        """Queue ``replies`` for requests made with ``key`` (``"*"``: any key)."""
        with self._lock:
            self._replies[key].extend(replies)

    def tokens(self) -> list[str | None]:
        with self._lock:
            return [r.token for r in self.requests]

    def _next_reply(self, token: str | None) -> ChatReply:
        with self._lock:
            for queue_key in (token, "*"):
                queue = self._replies.get(queue_key)
                if queue:
                    return queue.popleft()
        return ChatReply()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: FakeChatServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a client that timed out and hung up is expected


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        auth = self.headers.get("Authorization")
        token = auth.removeprefix("Bearer ") if auth else None
        recorded = ChatRequest(
            path=self.path, headers={k.lower(): v for k, v in self.headers.items()}, token=token
        )
        with owner._lock:
            owner.requests.append(recorded)
        if self.path != "/v1/chat/completions":
            self._error(404, f"Unknown path {self.path}", "not_found", "invalid_request_error")
            return
        try:
            recorded.json = json.loads(body)
        except ValueError:
            self._error(400, "the body is not JSON", "invalid_json", "invalid_request_error")
            return
        reply = owner._next_reply(token)
        if reply.delay and owner._stopping.wait(reply.delay):
            return
        if reply.raw_body is not None:
            self._send(reply.status, reply.raw_body)
            return
        if reply.status != 200:
            message = reply.message.replace("{key}", token or "") or f"scripted {reply.status}"
            self._error(reply.status, message, reply.code, reply.type)
            return
        content = reply.content if reply.content is not None else json.dumps(GOOD_ANSWER)
        answer = {
            "id": f"chatcmpl-{len(owner.requests)}",
            "object": "chat.completion",
            "created": 1700000000,
            "model": recorded.json.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }
        self._send(200, json.dumps(answer).encode())

    def _error(self, status: int, message: str, code: str | None, type_: str) -> None:
        body = {"error": {"message": message, "type": type_, "code": code}}
        self._send(status, json.dumps(body).encode())

    def _send(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
