"""A real HTTP server on 127.0.0.1 that speaks the Gemini API's ``generateContent``.

Request and answer shapes follow the API reference as read on 2026-12-06:
https://ai.google.dev/api/generate-content (GenerateContentRequest / GenerateContentResponse:
``contents[].parts[]`` with ``text`` or ``inlineData {mimeType, data}``,
``generationConfig.responseModalities`` and ``generationConfig.imageConfig {aspectRatio,
imageSize}``; ``candidates[].content.parts[]``, ``candidates[].finishReason``,
``promptFeedback.blockReason``), the image sizes per aspect ratio from
https://ai.google.dev/gemini-api/docs/image-generation, and Google's error format
(https://ai.google.dev/gemini-api/docs/troubleshooting, https://cloud.google.com/apis/design/
errors): ``{"error": {"code", "message", "status", "details": [{"@type":
"type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}, …]}}``. A wrong key is a
400 with ``ErrorInfo`` reason ``API_KEY_INVALID``, as the real service answers.

Field names: the API parses requests by the proto3 JSON mapping, which takes a field's
lowerCamelCase name and its original proto name alike (https://protobuf.dev/programming-
guides/json/, "Parsers accept both"). The ``google-genai`` SDK castbook sends with writes
``inlineData`` but, inside it, ``mime_type`` (SDK 3.6, read 2026-12-07), so the server takes
both spellings of ``mimeType``, as the real one does, and still checks every other field.
Likewise ``bytes`` fields (``inlineData.data``) take standard or URL-safe base64, with or
without padding (same page, "bytes"); the SDK sends URL-safe.

``POST /v1beta/models/{model}:generateContent`` answers a PNG of the size the aspect ratio
(and image size) asks for, divided by ``shrink`` to keep tests fast, whose background
colour is :func:`color_for` the request's text, so a test can check the prompt arrived.

Every request is recorded (:class:`RecordedRequest`). Answers are scripted with
:meth:`FakeGeminiServer.script`, one :class:`Reply` per request in arrival order; a key in
:attr:`FakeGeminiServer.exhausted` always gets a 429 ``RESOURCE_EXHAUSTED`` with its
``retryDelay``::

    with FakeGeminiServer(api_keys=["AIza-test"]) as server:
        server.script(Reply(kind="text_only", text="I cannot draw that"))
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image, ImageDraw

from tests.support.loopback import LoopbackServer

__all__ = ["FakeGeminiServer", "RecordedRequest", "Reply", "color_for", "size_for"]

# The gemini-2.5-flash-image output sizes per aspect ratio (1K); 2K and 4K double them.
SIZES = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
SCALE = {"1K": 1, "2K": 2, "4K": 4}
INLINE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}
_PATH = re.compile(r"^/v1beta/models/([A-Za-z0-9._-]+):generateContent$")


def color_for(prompt: str) -> tuple[int, int, int]:
    """The background colour of the images the server draws for ``prompt``."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return digest[0], digest[1], digest[2]


def size_for(aspect_ratio: str, image_size: str | None = None, shrink: int = 4) -> tuple[int, int]:
    w, h = SIZES[aspect_ratio]
    scale = SCALE[image_size or "1K"]
    return w * scale // shrink, h * scale // shrink


def make_png(prompt: str, size: tuple[int, int]) -> bytes:
    image = Image.new("RGB", size, color_for(prompt))
    w, h = size
    ImageDraw.Draw(image).ellipse((w // 4, h // 5, 3 * w // 4, 4 * h // 5), fill=(240, 210, 180))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Reply:
    """How the server answers one request.

    ``status`` other than 200 answers Google's error object with ``message``, ``error_status``
    (``INVALID_ARGUMENT`` …), ``retry_delay`` (a RetryInfo detail, e.g. ``"0.2s"``) and
    ``reason`` (an ErrorInfo detail). For 200, ``kind`` is ``"image"`` (text and a picture),
    ``"text_only"`` (``text`` and no picture), ``"prompt_blocked"`` (no candidates,
    ``promptFeedback.blockReason`` = ``block_reason``), ``"finish"`` (a candidate with no
    parts and ``finishReason`` = ``finish_reason``), ``"bad_b64"`` or ``"thought_first"``
    (a draft picture marked ``thought`` before the real one). ``delay`` waits first.
    """

    status: int = 200
    message: str = ""
    error_status: str | None = None
    retry_delay: str | None = None
    reason: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    kind: str = "image"
    text: str = "Here is the picture you asked for."
    block_reason: str = "SAFETY"
    finish_reason: str = "IMAGE_SAFETY"
    raw_body: bytes | None = None


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any = None

    @property
    def key(self) -> str:
        return self.headers.get("x-goog-api-key", "")

    @property
    def parts(self) -> list[dict[str, Any]]:
        return self.json["contents"][0]["parts"]

    def inline_images(self) -> list[tuple[str, bytes]]:
        """(mime type, decoded bytes) of every inline image part, in order."""
        return [
            (mime_type(p["inlineData"]), decode_bytes(p["inlineData"]["data"]))
            for p in self.parts
            if "inlineData" in p
        ]


def decode_bytes(data: str) -> bytes:
    """A proto3 JSON ``bytes`` value: standard or URL-safe base64, padded or not;
    binascii.Error for anything else."""
    text = str(data).replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def mime_type(inline: dict[str, Any]) -> str | None:
    """A Blob's mimeType under either name the API's JSON parser takes."""
    return inline.get("mimeType", inline.get("mime_type"))


class FakeGeminiServer(LoopbackServer):
    """A threaded stdlib HTTP server bound to 127.0.0.1 on a free port."""

    def __init__(self, api_keys: list[str] | tuple[str, ...] = ("AIza-test-key",), shrink: int = 4):
        self.api_keys = set(api_keys)
        self.shrink = shrink
        self.models = {"gemini-2.5-flash-image", "gemini-3-pro-image-preview", "tiny-model"}
        self.exhausted: dict[str, str] = {}  # key → retryDelay of its 429s
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._listen(_Server, _Handler)

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1beta"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def generate_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith(":generateContent")]

    def keys_used(self) -> list[str]:
        return [r.key for r in self.generate_requests()]

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._replies.popleft() if self._replies else Reply()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: FakeGeminiServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a client that timed out and hung up is expected here


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        """``GET /v1beta/models`` (models.list, what `castbook providers test` asks): the
        key is checked as for generateContent; an exhausted key gets its 429."""
        owner = self.server.owner
        recorded = RecordedRequest(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, b""
        )
        owner._record(recorded)
        if self.path.split("?")[0] != "/v1beta/models" or "key=" in self.path:
            self._error(404, f"Unknown path {self.path}", "NOT_FOUND")
        elif recorded.key not in owner.api_keys:
            self._error(
                400,
                "API key not valid. Please pass a valid API key.",
                "INVALID_ARGUMENT",
                reason="API_KEY_INVALID",
            )
        elif recorded.key in owner.exhausted:
            delay = owner.exhausted[recorded.key]
            self._error(429, "Quota exceeded.", "RESOURCE_EXHAUSTED", retry_delay=delay)
        else:
            model = {"name": "models/gemini-2.5-flash-image", "displayName": "Nano Banana"}
            body = {"models": [model], "nextPageToken": "fake-next"}
            self._send(200, json.dumps(body).encode())

    def do_POST(self) -> None:
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        recorded = RecordedRequest(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        owner._record(recorded)
        owner._enter()
        try:
            self._answer(recorded)
        finally:
            owner._leave()

    def _answer(self, recorded: RecordedRequest) -> None:
        owner = self.server.owner
        match = _PATH.match(self.path.split("?")[0])
        if "key=" in self.path:
            self._error(400, "castbook sends the key in a header, never in the URL", "X")
            return
        if match is None:
            self._error(404, f"Unknown path {self.path}", "NOT_FOUND")
            return
        key = recorded.key
        if key not in owner.api_keys:
            self._error(
                400,
                "API key not valid. Please pass a valid API key.",
                "INVALID_ARGUMENT",
                reason="API_KEY_INVALID",
            )
            return
        if match.group(1) not in owner.models:
            self._error(
                404,
                f"models/{match.group(1)} is not found for API version v1beta, or is not "
                "supported for generateContent.",
                "NOT_FOUND",
            )
            return
        try:
            recorded.json = json.loads(recorded.body)
            prompt, config = _check_request(recorded.json)
        except (ValueError, KeyError, TypeError) as exc:
            self._error(400, f"Invalid JSON payload received. {exc}", "INVALID_ARGUMENT")
            return
        if key in owner.exhausted:
            self._error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                "RESOURCE_EXHAUSTED",
                retry_delay=owner.exhausted[key],
            )
            return
        reply = owner._next_reply()
        if reply.delay and owner._stopping.wait(reply.delay):
            return
        if reply.status != 200:
            self._error(
                reply.status,
                reply.message or f"scripted {reply.status}",
                reply.error_status or "UNKNOWN",
                retry_delay=reply.retry_delay,
                reason=reply.reason,
                headers=reply.headers,
            )
            return
        if reply.raw_body is not None:
            self._send(200, reply.raw_body)
            return
        self._send(200, json.dumps(self._content(reply, prompt, config)).encode())

    def _content(self, reply: Reply, prompt: str, config: dict[str, Any]) -> dict[str, Any]:
        owner = self.server.owner
        if reply.kind == "prompt_blocked":
            return {
                "promptFeedback": {
                    "blockReason": reply.block_reason,
                    "safetyRatings": [
                        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
                    ],
                },
                "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
            }
        if reply.kind == "finish":
            candidate: dict[str, Any] = {
                "content": {"role": "model"},
                "finishReason": reply.finish_reason,
                "index": 0,
            }
            return {"candidates": [candidate]}
        modalities = config.get("responseModalities") or ["TEXT", "IMAGE"]
        image_config = config.get("imageConfig") or {}
        size = size_for(
            image_config.get("aspectRatio", "1:1"), image_config.get("imageSize"), owner.shrink
        )
        parts: list[dict[str, Any]] = []
        if "TEXT" in modalities and reply.text:
            parts.append({"text": reply.text})
        if reply.kind == "thought_first":
            draft = base64.b64encode(make_png("draft", size)).decode()
            parts.insert(
                0, {"inlineData": {"mimeType": "image/png", "data": draft}, "thought": True}
            )
        if reply.kind in ("image", "thought_first") and "IMAGE" in modalities:
            data = base64.b64encode(make_png(prompt, size)).decode()
            parts.append({"inlineData": {"mimeType": "image/png", "data": data}})
        elif reply.kind == "bad_b64":
            parts.append({"inlineData": {"mimeType": "image/png", "data": "not *base64*!"}})
        return {
            "candidates": [
                {"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 1290},
            "modelVersion": "gemini-2.5-flash-image",
            "responseId": "fake-response",
        }

    def _error(
        self,
        code: int,
        message: str,
        status: str,
        *,
        retry_delay: str | None = None,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        details: list[dict[str, Any]] = []
        if reason is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "googleapis.com",
                }
            )
        if retry_delay is not None:
            details.append(
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
            )
        error: dict[str, Any] = {"code": code, "message": message, "status": status}
        if details:
            error["details"] = details
        self._send(code, json.dumps({"error": error}).encode(), headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


def _check_request(payload: Any) -> tuple[str, dict[str, Any]]:
    """The request's text and generationConfig; ValueError for what the API would refuse."""
    if not isinstance(payload, dict) or not isinstance(payload.get("contents"), list):
        raise ValueError("contents is required")
    texts = []
    for content in payload["contents"]:
        for part in content["parts"]:
            if "text" in part:
                texts.append(str(part["text"]))
            elif "inlineData" in part:
                inline = part["inlineData"]
                unknown = set(inline) - {"mimeType", "mime_type", "data"}
                if unknown:
                    raise ValueError(f"unknown inlineData fields {sorted(unknown)}")
                if mime_type(inline) not in INLINE_TYPES:
                    raise ValueError(f"unsupported mimeType {mime_type(inline)!r}")
                try:
                    decode_bytes(inline["data"])
                except binascii.Error:
                    raise ValueError("inlineData.data is not base64") from None
            else:
                raise ValueError(f"unknown part fields {sorted(part)}")
    config = payload.get("generationConfig") or {}
    ratio = (config.get("imageConfig") or {}).get("aspectRatio")
    if ratio is not None and ratio not in SIZES:
        raise ValueError(f"aspectRatio {ratio!r} is not supported")
    size = (config.get("imageConfig") or {}).get("imageSize")
    if size is not None and size not in SCALE:
        raise ValueError(f"imageSize {size!r} is not supported")
    return "\n".join(texts), config
