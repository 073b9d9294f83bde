"""A real HTTP server on 127.0.0.1 that speaks the OpenAI images API, for backend tests.

It answers ``POST /v1/images/generations`` (JSON) and ``POST /v1/images/edits``
(multipart/form-data with ``image[]`` parts, parsed with the stdlib's MIME parser) with
PNGs of the requested size whose colour depends on the prompt and the image's index
(:func:`color_for`), so a test can check the prompt arrived. ``GET /v1/files/<name>``
serves images handed out as ``url`` answers.

Every request is recorded (:class:`RecordedRequest`). What the next answers do is scripted
with :meth:`FakeOpenAIServer.script`, one :class:`Reply` per images request::

    with FakeOpenAIServer(api_key="sk-test") as server:
        server.script(Reply(status=429, headers={"Retry-After": "0"}), Reply())
        backend = OpenAIImagesBackend(preset, base_url=server.base_url, api_key="sk-test")
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image, ImageDraw

from tests.support.loopback import LoopbackServer

__all__ = ["FakeOpenAIServer", "RecordedRequest", "Reply", "UploadedFile", "color_for"]


def color_for(prompt: str, index: int = 0) -> tuple[int, int, int]:
    """The background colour of the ``index``-th image the server makes for ``prompt``."""
    digest = hashlib.sha256(f"{index}:{prompt}".encode()).digest()
    return digest[0], digest[1], digest[2]


def make_png(prompt: str, index: int, size: tuple[int, int]) -> bytes:
    image = Image.new("RGB", size, color_for(prompt, index))
    w, h = size
    ImageDraw.Draw(image).ellipse((w // 4, h // 5, 3 * w // 4, 4 * h // 5), fill=(240, 210, 180))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Reply:
    """How the server answers one images request.

    ``status`` other than 200 answers ``{"error": {"message", "type", "code"}}`` with
    ``message`` (``{key}`` in it is replaced by the Authorization header's token, to test
    redaction). ``delay`` waits that many seconds first. For 200: ``kind`` is ``"b64"``,
    ``"url"``, ``"bad_b64"`` (not base64) or ``"bad_image"`` (base64 of non-image bytes);
    ``size`` overrides the images' size; ``count`` how many images come back;
    ``revised_prompt`` is added to each item.
    """

    status: int = 200
    message: str = ""
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    kind: str = "b64"
    size: tuple[int, int] | None = None
    count: int | None = None
    revised_prompt: str | None = None
    raw_body: bytes | None = None


@dataclass(frozen=True)
class UploadedFile:
    field: str
    filename: str
    content_type: str
    data: bytes

    def image(self) -> Image.Image:
        return Image.open(io.BytesIO(self.data))


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)

    @property
    def fields(self) -> dict[str, Any]:
        """The JSON body or the multipart text fields, whichever the request carried."""
        return self.json if self.json is not None else self.form


class FakeOpenAIServer(LoopbackServer):
    """A threaded stdlib HTTP server bound to 127.0.0.1 on a free port."""

    def __init__(self, api_key: str | None = "sk-test-key", *more_keys: str) -> None:
        self.api_key = api_key
        # Further keys the server also accepts (several keys of one account or provider).
        self.api_keys = frozenset((api_key, *more_keys)) if api_key is not None else None
        self.requests: list[RecordedRequest] = []
        self._replies: deque[Reply] = deque()
        self._files: dict[str, bytes] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._listen(_Server, _Handler)

    # --- lifecycle
    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    # --- scripting and inspection
    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def images_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/v1/images/")]

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._replies.popleft() if self._replies else Reply()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _store_file(self, data: bytes) -> str:
        name = f"img-{next(self._ids)}.png"
        with self._lock:
            self._files[name] = data
        return f"{self.base_url}/files/{name}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is expected here; stay quiet.
        return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    # --- HTTP verbs
    def do_GET(self) -> None:
        owner = self.server.owner
        self._record(b"")
        if self.path.split("?")[0] == "/v1/models":  # what `castbook providers test` asks
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if owner.api_keys is not None and token not in owner.api_keys:
                self._send_error(401, "Incorrect API key provided.", "invalid_api_key")
                return
            models = {"object": "list", "data": [{"id": "gpt-image-1", "object": "model"}]}
            self._send(200, json.dumps(models).encode(), "application/json")
            return
        prefix = "/v1/files/"
        data = owner._files.get(self.path[len(prefix) :]) if self.path.startswith(prefix) else None
        if data is None:
            self._send_error(404, "no such file", "not_found")
            return
        self._send(200, data, "image/png")

    def do_POST(self) -> None:
        owner = self.server.owner
        body = self._read_body()
        recorded = self._record(body)
        if self.path not in ("/v1/images/generations", "/v1/images/edits"):
            self._send_error(404, f"Unknown path {self.path}", "not_found")
            return
        content_type = self.headers.get("Content-Type", "")
        try:
            if self.path.endswith("/generations"):
                if not content_type.startswith("application/json"):
                    raise ValueError(f"generations wants JSON, got {content_type!r}")
                recorded.json = json.loads(body)
            else:
                if not content_type.startswith("multipart/form-data"):
                    raise ValueError(f"edits wants multipart/form-data, got {content_type!r}")
                recorded.form, recorded.files = parse_multipart(content_type, body)
                if not recorded.files:
                    raise ValueError("edits needs at least one image")
        except ValueError as exc:
            self._send_error(400, str(exc), "invalid_request")
            return

        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if owner.api_keys is not None and token not in owner.api_keys:
            self._send_error(401, f"Incorrect API key provided: {token}", "invalid_api_key")
            return

        reply = owner._next_reply()
        if reply.delay and owner._stopping.wait(reply.delay):
            return
        if reply.status != 200:
            message = reply.message.replace("{key}", token) or f"scripted {reply.status}"
            self._send_error(reply.status, message, reply.code, reply.headers)
            return
        if reply.raw_body is not None:
            self._send(200, reply.raw_body, "application/json", reply.headers)
            return
        self._answer_images(recorded.fields, reply)

    # --- answers
    def _answer_images(self, fields: dict[str, Any], reply: Reply) -> None:
        owner = self.server.owner
        prompt = str(fields.get("prompt", ""))
        try:
            n = int(fields.get("n", 1))
            w, h = (int(v) for v in str(fields.get("size", "1024x1024")).split("x"))
        except ValueError:
            self._send_error(400, "bad n or size", "invalid_value")
            return
        size = reply.size or (w, h)
        items = []
        for index in range(reply.count if reply.count is not None else n):
            png = make_png(prompt, index, size)
            if reply.kind == "url":
                item: dict[str, Any] = {"url": owner._store_file(png)}
            elif reply.kind == "bad_b64":
                item = {"b64_json": "this is *not* base64!"}
            elif reply.kind == "bad_image":
                item = {"b64_json": base64.b64encode(b"GIF89a not really").decode()}
            else:
                item = {"b64_json": base64.b64encode(png).decode()}
            if reply.revised_prompt is not None:
                item["revised_prompt"] = reply.revised_prompt
            items.append(item)
        body = json.dumps({"created": 1700000000, "data": items}).encode()
        self._send(200, body, "application/json", reply.headers)

    def _send_error(
        self,
        status: int,
        message: str,
        code: str | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        error = {"message": message, "type": "invalid_request_error", "code": code}
        body = json.dumps({"error": error}).encode()
        self._send(status, body, "application/json", headers)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # --- reading
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _record(self, body: bytes) -> RecordedRequest:
        recorded = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        self.server.owner._record(recorded)
        return recorded


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], list[UploadedFile]]:
    """Split a multipart/form-data body into text fields and files (stdlib MIME parser)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("the body is not multipart")
    form: dict[str, str] = {}
    files: list[UploadedFile] = []
    for part in message.iter_parts():
        assert isinstance(part, Message)
        if part.get_content_disposition() != "form-data":
            raise ValueError("a part is not form-data")
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise ValueError("a part has no name")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files.append(UploadedFile(str(name), filename, part.get_content_type(), payload))
        else:
            form[str(name)] = payload.decode("utf-8")
    return form, files
