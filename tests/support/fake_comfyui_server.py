"""A small ComfyUI server on 127.0.0.1 that speaks the real HTTP wire format.

It implements ``POST /upload/image`` (multipart), ``POST /prompt`` (validated like ComfyUI:
unknown node classes, missing inputs, wrong value types, dangling links and model files it
does not have answer 400 with ``node_errors``), ``GET /models`` and ``GET /models/{folder}``
(the files of a model folder; ``loras`` lists the files under ``loras_dir``, as ComfyUI's
folder_paths lists its ``models/loras``: ComfyUI has no upload route for model files, so
castbook writes LoRAs there and a LoraLoader names one — a name it does not list is
``value_not_in_list``, a strength outside ±100 out of range, and running one reads the file
as safetensors, failing like ComfyUI's loader on a damaged one), ``GET
/history/{prompt_id}`` (``{}`` for the first ``pending_polls`` reads, then the outputs),
``GET /view``, ``POST /queue`` (delete) and ``POST /interrupt``, and the websocket
``GET /ws?clientId=…`` (RFC 6455, spoken by hand over the same HTTP server, as ComfyUI
serves it on its one port). "Running" a workflow
interprets the graph: the PNGs it saves have the size and batch of the latent, and pixels
derived from the filled prompt texts, the seed, the sampler settings and the uploaded
images, so the same workflow gives the same pixels.

Scripting: ``prompt_failure = (500, "…")`` answers the next /prompt with that status;
``execution_error = "…"`` makes executions fail in the KSampler; ``never_finish = True``
keeps prompts running until /interrupt; ``held = True`` answers ``/history`` with ``{}``
until it is set back to False (a run that lasts as long as a test needs, without the CPU of
a real one); ``step_seconds`` (a constructor argument) paces every sampler step, so a prompt
of n steps runs for n × that long — its ``progress`` messages come one per step and
``/history`` has its outputs only once the last step is done (a server whose runs take time,
as the fault-injection lab needs to catch a worker mid-job); ``missing_classes`` hides
node classes (a custom node pack that is not installed). Every request is recorded in
``requests``; each run's interpreted inputs in ``executions``.

The websocket sends what ComfyUI sends a client (shapes from ComfyUI's server.py,
execution.py and main.py, and https://docs.comfy.org/essentials/comfyui-server/comms_messages,
read 2026-12-06): ``status`` with the ``sid`` on connect, then for each prompt queued with that
``client_id``: ``status``, ``execution_start``, ``execution_cached``, ``executing`` per node in
the order the graph was run, ``progress`` for every sampler step, ``executed`` for the saving
node, ``execution_success``, ``executing`` with ``node: null``; a failing node sends
``execution_error`` instead (and then ``executing`` null, as main.py always does); an
interrupted prompt sends ``execution_interrupted``. A binary preview frame follows the first
step. Scripting: ``websocket_refused = True`` answers /ws with 404 (an old proxy, a server
without it); ``websocket_closes_after = n`` drops the connection after n messages of a
prompt; ``websocket_mute = True`` greets and then sends nothing; ``websocket_greets = False``
sends not even the first ``status``. ``ws_sent`` records every message sent.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import socket
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image, ImageDraw

__all__ = ["MODELS", "NODE_SPECS", "FakeComfyUI", "RecordedRequest"]

# class_type -> (required inputs {name: type}, optional inputs, output types)
# Literal types: INT, FLOAT, STRING; a model list name ("checkpoints" …); UPLOAD (an input file).
NODE_SPECS: dict[str, tuple[dict[str, str], dict[str, str], tuple[str, ...]]] = {
    "CheckpointLoaderSimple": ({"ckpt_name": "checkpoints"}, {}, ("MODEL", "CLIP", "VAE")),
    "CLIPVisionLoader": ({"clip_name": "clip_vision"}, {}, ("CLIP_VISION",)),
    "IPAdapterModelLoader": ({"ipadapter_file": "ipadapter"}, {}, ("IPADAPTER",)),
    "LoadImage": ({"image": "UPLOAD"}, {}, ("IMAGE", "MASK")),
    "IPAdapterAdvanced": (
        {
            "model": "MODEL",
            "ipadapter": "IPADAPTER",
            "image": "IMAGE",
            "weight": "FLOAT",
            "weight_type": "STRING",
            "combine_embeds": "STRING",
            "start_at": "FLOAT",
            "end_at": "FLOAT",
            "embeds_scaling": "STRING",
        },
        {"image_negative": "IMAGE", "attn_mask": "MASK", "clip_vision": "CLIP_VISION"},
        ("MODEL",),
    ),
    "CLIPTextEncode": ({"text": "STRING", "clip": "CLIP"}, {}, ("CONDITIONING",)),
    "EmptyLatentImage": ({"width": "INT", "height": "INT", "batch_size": "INT"}, {}, ("LATENT",)),
    "ImageScale": (
        {
            "image": "IMAGE",
            "upscale_method": "STRING",
            "width": "INT",
            "height": "INT",
            "crop": "STRING",
        },
        {},
        ("IMAGE",),
    ),
    "VAEEncode": ({"pixels": "IMAGE", "vae": "VAE"}, {}, ("LATENT",)),
    "RepeatLatentBatch": ({"samples": "LATENT", "amount": "INT"}, {}, ("LATENT",)),
    "KSampler": (
        {
            "model": "MODEL",
            "seed": "INT",
            "steps": "INT",
            "cfg": "FLOAT",
            "sampler_name": "STRING",
            "scheduler": "STRING",
            "positive": "CONDITIONING",
            "negative": "CONDITIONING",
            "latent_image": "LATENT",
            "denoise": "FLOAT",
        },
        {},
        ("LATENT",),
    ),
    "VAEDecode": ({"samples": "LATENT", "vae": "VAE"}, {}, ("IMAGE",)),
    "LoraLoader": (
        {
            "model": "MODEL",
            "clip": "CLIP",
            "lora_name": "loras",
            "strength_model": "FLOAT",
            "strength_clip": "FLOAT",
        },
        {},
        ("MODEL", "CLIP"),
    ),
    "SaveImage": ({"images": "IMAGE", "filename_prefix": "STRING"}, {}, ()),
    "PreviewImage": ({"images": "IMAGE"}, {}, ()),
}
_OUTPUT_NODES = {"SaveImage", "PreviewImage"}
MODELS = {
    "checkpoints": ["v1-5-pruned-emaonly.safetensors", "dreamshaper_8.safetensors"],
    "clip_vision": ["CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"],
    "ipadapter": ["ip-adapter_sd15.safetensors", "ip-adapter-plus-face_sd15.safetensors"],
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    authorization: str = ""  # the Authorization header (a proxy's bearer key), if any


@dataclass
class _Latent:
    width: int
    height: int
    batch: int
    recipe: str


@dataclass
class _Prompt:
    polls_left: int
    entry: dict[str, Any] | None  # None: still running
    interrupted: bool = False
    stopped: threading.Event = field(default_factory=threading.Event)
    done_at: float = 0.0  # time.monotonic() when its paced steps are done


_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


class _Socket:
    """The server side of one websocket: unmasked frames out, masked client frames in."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self.rfile, self.wfile = handler.rfile, handler.wfile
        self.connection: socket.socket = handler.connection
        self.lock = threading.Lock()
        self.closed = False

    def send(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
        with self.lock:
            if self.closed:
                return
            try:
                self.wfile.write(header + payload)
                self.wfile.flush()
            except (OSError, ValueError):  # ValueError: the handler closed it (client gone)
                self.closed = True

    def read_frame(self) -> tuple[int, bytes] | None:
        head = self.rfile.read(2)
        if len(head) < 2:
            return None
        opcode, size = head[0] & 0x0F, head[1] & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self.rfile.read(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self.rfile.read(8))
        mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = self.rfile.read(size)
        return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))

    def drop(self) -> None:
        """Close the TCP connection without a closing handshake (a crashed server or proxy)."""
        with self.lock:
            self.closed = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request (a castbook worker SIGKILLed by the fault
        lab) is what a server sees every day: no traceback for it, as ComfyUI's aiohttp."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _NodeError(Exception):
    def __init__(self, node_id: str, class_type: str, error: dict[str, Any]) -> None:
        super().__init__(error["exception_message"])
        self.node_id, self.class_type, self.error = node_id, class_type, error


class FakeComfyUI:
    """Start with ``with FakeComfyUI() as server:``; ``server.url`` is its base URL."""

    def __init__(
        self,
        *,
        pending_polls: int = 1,
        loras_dir: Path | None = None,
        step_seconds: float = 0.0,
    ) -> None:
        self.pending_polls = pending_polls
        self.loras_dir = loras_dir
        self.step_seconds = step_seconds
        self.prompt_failure: tuple[int, str] | None = None
        self.execution_error: str | None = None
        self.never_finish = False
        self.held = False
        self.missing_classes: set[str] = set()
        self.websocket_refused = False
        self.websocket_closes_after: int | None = None
        self.websocket_mute = False
        self.websocket_greets = True
        self.ws_sent: list[dict[str, Any]] = []
        self._sockets: dict[str, _Socket] = {}
        self.requests: list[RecordedRequest] = []
        self.uploads: dict[str, bytes] = {}
        self.executions: list[dict[str, Any]] = []
        self._prompts: dict[str, _Prompt] = {}
        self._files: dict[tuple[str, str, str], bytes] = {}
        self._counter = 0
        self._number = 0
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeComfyUI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- views for tests --------------------------------------------------------------------

    def model_files(self, folder: str) -> list[str]:
        """What ComfyUI lists in a model folder: the fixed names, and for ``loras`` every
        file under ``loras_dir`` (its subfolders' as ``sub/name``), as folder_paths does."""
        if folder != "loras":
            return list(MODELS.get(folder, []))
        if self.loras_dir is None or not self.loras_dir.is_dir():
            return []
        return sorted(
            path.relative_to(self.loras_dir).as_posix()
            for path in self.loras_dir.rglob("*.safetensors")
            if path.is_file() and not path.name.startswith(".")
        )

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]

    @property
    def prompt_ids(self) -> list[str]:
        """The ids of the prompts queued so far, oldest first."""
        return list(self._prompts)

    @property
    def workflows(self) -> list[dict[str, Any]]:
        """Every graph POSTed to /prompt, valid or not."""
        return [r.json["prompt"] for r in self.requests if r.path == "/prompt" and r.json]

    # -- the HTTP side ----------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # one small reply must not wait on a delayed ACK

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                upgrade = self.headers.get("Upgrade", "").lower() == "websocket"
                if upgrade and urlsplit(self.path).path == "/ws" and not fake.websocket_refused:
                    fake._websocket(self)
                else:
                    fake._dispatch(self, "GET")

            def do_POST(self) -> None:
                fake._dispatch(self, "POST")

        return Handler

    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        record = RecordedRequest(method, parts.path, query)
        record.authorization = handler.headers.get("Authorization", "")
        content_type = handler.headers.get("Content-Type", "")
        if body and content_type.startswith("application/json"):
            record.json = json.loads(body)
        with self._lock:
            self.requests.append(record)
            status, payload, kind = self._route(
                method, parts.path, query, record, body, content_type
            )
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    # -- the websocket side -----------------------------------------------------------------

    def _websocket(self, handler: BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlsplit(handler.path).query)
        sid = (query.get("clientId") or [""])[0] or uuid.uuid4().hex
        key = handler.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    "GET",
                    "/ws",
                    {"clientId": sid},
                    authorization=handler.headers.get("Authorization", ""),
                )
            )
        handler.close_connection = True
        handler.send_response(101, "Switching Protocols")
        handler.send_header("Upgrade", "websocket")
        handler.send_header("Connection", "Upgrade")
        handler.send_header("Sec-WebSocket-Accept", accept)
        handler.end_headers()
        handler.wfile.flush()
        ws = _Socket(handler)
        with self._lock:
            self._sockets[sid] = ws  # like ComfyUI: a reused id replaces the older socket
        if self.websocket_greets:
            status = {"status": {"exec_info": {"queue_remaining": 0}}, "sid": sid}
            self._send(ws, "status", status)
        try:
            while (frame := ws.read_frame()) is not None:
                opcode, payload = frame
                if opcode == 0x8:  # close: answer it and end
                    ws.send(0x8, payload[:2])
                    break
                if opcode == 0x9:  # ping
                    ws.send(0xA, payload)
        except OSError:
            pass
        finally:
            ws.closed = True
            with self._lock:
                if self._sockets.get(sid) is ws:
                    del self._sockets[sid]

    def _send(self, ws: _Socket, kind: str, data: dict[str, Any]) -> None:
        message = {"type": kind, "data": data}
        with self._lock:
            self.ws_sent.append(message)
        ws.send(0x1, json.dumps(message).encode())

    def _narrate(self, ws: _Socket, prompt_id: str, graph: dict[str, Any]) -> None:
        """Send a prompt's run to the client that queued it, the way ComfyUI's executor does."""
        prompt = self._prompts[prompt_id]
        record = next((e for e in self.executions if e.get("prompt_id") == prompt_id), {})
        order: list[str] = list(record.get("order", ()))
        if prompt.entry is None:  # never_finish: a sampler that keeps running
            order = [n for n, node in graph.items() if node["class_type"] == "KSampler"][:1]
        sent = 0

        def send(kind: str, data: dict[str, Any]) -> bool:
            nonlocal sent
            if self.websocket_closes_after is not None and sent >= self.websocket_closes_after:
                ws.drop()
                return False
            self._send(ws, kind, data)
            sent += 1
            return not ws.closed

        ids = {"prompt_id": prompt_id}
        steps = [
            ("status", {"status": {"exec_info": {"queue_remaining": 1}}}),
            ("execution_start", {**ids, "timestamp": 1}),
            ("execution_cached", {"nodes": [], **ids, "timestamp": 1}),
        ]
        if not all(send(kind, data) for kind, data in steps):
            return
        failure = _failure(prompt.entry)
        for node_id in order:
            kind = graph[node_id]["class_type"]
            if not send("executing", {"node": node_id, "display_node": node_id, **ids}):
                return
            if failure is not None and failure.get("node_id") == node_id:
                break
            if kind == "KSampler":
                total = int(graph[node_id]["inputs"].get("steps", 1))
                for value in range(1, total + 1):
                    if self.step_seconds:  # the step's work, cut short by /interrupt
                        prompt.stopped.wait(timeout=self.step_seconds)
                    if prompt.interrupted:
                        break
                    if prompt.entry is None and value == total:
                        prompt.stopped.wait(timeout=30)  # until /interrupt (or give up)
                        break
                    data = {"value": value, "max": total, **ids, "node": node_id}
                    if not send("progress", data):
                        return
                    if value == 1:
                        ws.send(0x2, struct.pack(">II", 1, 2) + b"\x89PNG preview")
            elif kind in _OUTPUT_NODES and prompt.entry is not None:
                output = prompt.entry["outputs"].get(node_id, {})
                data = {"node": node_id, "display_node": node_id, "output": output, **ids}
                if not send("executed", data):
                    return
        if prompt.interrupted:
            node_id = order[0] if order else None
            kind = graph[node_id]["class_type"] if node_id else None
            data = {**ids, "node_id": node_id, "node_type": kind, "executed": [], "timestamp": 2}
            if not send("execution_interrupted", data):
                return
        elif failure is not None:
            if not send("execution_error", failure):
                return
        else:
            if not send("execution_success", {**ids, "timestamp": 2}):
                return
        send("status", {"status": {"exec_info": {"queue_remaining": 0}}})
        send("executing", {"node": None, **ids})

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        record: RecordedRequest,
        body: bytes,
        content_type: str,
    ) -> tuple[int, Any, str]:
        json_type = "application/json; charset=utf-8"
        if method == "POST" and path == "/upload/image":
            return (*self._upload(record, body, content_type), json_type)
        if method == "POST" and path == "/prompt":
            if self.prompt_failure is not None:
                status, text = self.prompt_failure
                self.prompt_failure = None
                return status, text.encode(), "text/plain; charset=utf-8"
            return (*self._queue_prompt(record.json or {}), json_type)
        if method == "GET" and path == "/system_stats":  # `castbook providers test`
            stats = {"system": {"os": "posix", "comfyui_version": "0.3.fake"}, "devices": []}
            return 200, stats, json_type
        if method == "GET" and path == "/models":
            return 200, [*MODELS, "loras"], json_type
        if method == "GET" and path.startswith("/models/"):
            folder = path.removeprefix("/models/")
            if folder not in (*MODELS, "loras"):
                return 404, b"", "text/plain; charset=utf-8"
            return 200, self.model_files(folder), json_type
        if method == "GET" and path.startswith("/history/"):
            return 200, self._history(path.removeprefix("/history/")), json_type
        if method == "GET" and path == "/view":
            key = (query.get("type", "output"), query.get("subfolder", ""), query.get("filename"))
            if key not in self._files:
                return 404, b"404: Not Found", "text/plain; charset=utf-8"
            return 200, self._files[key], "image/png"  # type: ignore[index]
        if method == "POST" and path == "/queue":
            for prompt_id in (record.json or {}).get("delete", []):
                prompt = self._prompts.get(prompt_id)
                if prompt is not None and prompt.entry is None and not self.never_finish:
                    del self._prompts[prompt_id]
            return 200, b"", "text/plain; charset=utf-8"
        if method == "POST" and path == "/interrupt":
            wanted = (record.json or {}).get("prompt_id")
            for prompt_id, prompt in self._prompts.items():
                if prompt.entry is None and wanted in (None, prompt_id):
                    prompt.interrupted = True
                    prompt.entry = _interrupted_entry(prompt_id)
                    prompt.stopped.set()
            return 200, b"", "text/plain; charset=utf-8"
        return 404, b"404: Not Found", "text/plain; charset=utf-8"

    def _upload(self, record: RecordedRequest, body: bytes, content_type: str) -> tuple[int, Any]:
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        image: tuple[str, bytes] | None = None
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            filename = part.get_filename()
            if name == "image" and filename:
                image = (filename, payload)
            elif name:
                record.form[str(name)] = payload.decode()
        if image is None:
            return 400, {"error": "no image"}
        filename, data = image
        subfolder = record.form.get("subfolder", "")
        kind = record.form.get("type", "input")
        if record.form.get("overwrite") not in ("true", "1"):
            stem, dot, ext = filename.rpartition(".")
            counter = 1
            while f"{subfolder}/{filename}".lstrip("/") in self.uploads:
                filename = f"{stem} ({counter}){dot}{ext}"
                counter += 1
        self.uploads[f"{subfolder}/{filename}".lstrip("/")] = data
        return 200, {"name": filename, "subfolder": subfolder, "type": kind}

    def _queue_prompt(self, body: dict[str, Any]) -> tuple[int, Any]:
        graph = body.get("prompt")
        if not isinstance(graph, dict):
            return 400, {"error": "no prompt", "node_errors": []}
        problem = self._validate(graph)
        if problem is not None:
            return 400, problem
        prompt_id = str(uuid.uuid4())
        number = self._number
        self._number += 1
        if self.never_finish:
            self._prompts[prompt_id] = _Prompt(polls_left=0, entry=None)
        else:
            self._prompts[prompt_id] = _Prompt(self.pending_polls, self._execute(prompt_id, graph))
            steps = sum(
                node["inputs"]["steps"]
                for node in graph.values()
                if node["class_type"] == "KSampler" and isinstance(node["inputs"]["steps"], int)
            )
            self._prompts[prompt_id].done_at = time.monotonic() + steps * self.step_seconds
        ws = self._sockets.get(str(body.get("client_id")))
        if ws is not None and not self.websocket_mute:
            threading.Thread(target=self._narrate, args=(ws, prompt_id, graph), daemon=True).start()
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": {}}

    def _history(self, prompt_id: str) -> dict[str, Any]:
        prompt = self._prompts.get(prompt_id)
        if prompt is None or prompt.entry is None or self.held:
            return {}
        if time.monotonic() < prompt.done_at and not prompt.interrupted:
            return {}
        if prompt.polls_left > 0:
            prompt.polls_left -= 1
            return {}
        return {prompt_id: prompt.entry}

    # -- validation, the way ComfyUI answers it ---------------------------------------------

    def _validate(self, graph: dict[str, Any]) -> dict[str, Any] | None:
        for node_id, node in graph.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return {
                    "error": {
                        "type": "invalid_prompt",
                        "message": "Cannot execute because a node is missing the class_type "
                        "property.",
                        "details": f"Node ID '#{node_id}'",
                        "extra_info": {},
                    },
                    "node_errors": {},
                }
            class_type = node["class_type"]
            if class_type not in NODE_SPECS or class_type in self.missing_classes:
                return {
                    "error": {
                        "type": "invalid_prompt",
                        "message": f"Cannot execute because node {class_type} does not exist.",
                        "details": f"Node ID '#{node_id}'",
                        "extra_info": {},
                    },
                    "node_errors": {},
                }
        node_errors: dict[str, Any] = {}
        for node_id, node in graph.items():
            errors = self._node_errors(graph, node)
            if errors:
                node_errors[node_id] = {
                    "errors": errors,
                    "dependent_outputs": [
                        k for k, n in graph.items() if n["class_type"] in _OUTPUT_NODES
                    ],
                    "class_type": node["class_type"],
                }
        if not node_errors:
            return None
        return {
            "error": {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "",
                "extra_info": {},
            },
            "node_errors": node_errors,
        }

    def _node_errors(self, graph: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
        required, optional, _ = NODE_SPECS[node["class_type"]]
        inputs = node.get("inputs", {})
        errors = []
        for name, kind in {**required, **optional}.items():
            if name not in inputs:
                if name in required:
                    errors.append(
                        _error("required_input_missing", "Required input is missing", name)
                    )
                continue
            value = inputs[name]
            if kind.isupper() and kind not in ("INT", "FLOAT", "STRING", "UPLOAD"):
                errors.extend(_link_errors(graph, name, value, kind))
            elif isinstance(value, list):
                errors.append(_error("bad_linked_input", f"{name} must be a {kind} value", name))
            elif kind == "INT" and (not isinstance(value, int) or isinstance(value, bool)):
                errors.append(
                    _error(
                        "invalid_input_type",
                        "Failed to convert an input value to a INT value",
                        f"{name}, {value!r}",
                    )
                )
            elif kind == "FLOAT" and (
                not isinstance(value, int | float) or isinstance(value, bool)
            ):
                errors.append(
                    _error(
                        "invalid_input_type",
                        "Failed to convert an input value to a FLOAT value",
                        f"{name}, {value!r}",
                    )
                )
            elif kind == "STRING" and not isinstance(value, str):
                errors.append(_error("invalid_input_type", "Expected a string", name))
            elif kind == "UPLOAD" and value not in self.uploads:
                errors.append(
                    _error("custom_validation_failed", f"Invalid image file: {value}", name)
                )
            elif kind in (*MODELS, "loras") and value not in self.model_files(kind):
                errors.append(
                    _error(
                        "value_not_in_list",
                        "Value not in list",
                        f"{name}: {value!r} not in {self.model_files(kind)!r}",
                    )
                )
            elif kind == "FLOAT" and name.startswith("strength") and not -100 <= value <= 100:
                errors.append(
                    _error(
                        "value_bigger_than_max" if value > 100 else "value_smaller_than_min",
                        f"Value {value} out of range -100.0 to 100.0",
                        f"{name}: {value}",
                    )
                )
        return errors

    # -- "running" a workflow ---------------------------------------------------------------

    def _execute(self, prompt_id: str, graph: dict[str, Any]) -> dict[str, Any]:
        cache: dict[str, tuple[Any, ...]] = {}
        record: dict[str, Any] = {"prompt_id": prompt_id, "loaded_images": [], "order": []}
        outputs: dict[str, Any] = {}
        try:
            for node_id, node in graph.items():
                if node["class_type"] in _OUTPUT_NODES:
                    outputs[node_id] = self._save(graph, node_id, node, cache, record)
                    record["order"].append(node_id)
        except _NodeError as failure:
            self.executions.append(record)
            return {
                "prompt": [0, prompt_id, graph, {}, list(outputs)],
                "outputs": {},
                "status": {
                    "status_str": "error",
                    "completed": False,
                    "messages": [
                        ["execution_start", {"prompt_id": prompt_id, "timestamp": 0}],
                        [
                            "execution_error",
                            {
                                "prompt_id": prompt_id,
                                "node_id": failure.node_id,
                                "node_type": failure.class_type,
                                "executed": [],
                                **failure.error,
                            },
                        ],
                    ],
                },
                "meta": {},
            }
        self.executions.append(record)
        return {
            "prompt": [0, prompt_id, graph, {}, list(outputs)],
            "outputs": outputs,
            "status": {
                "status_str": "success",
                "completed": True,
                "messages": [
                    ["execution_start", {"prompt_id": prompt_id, "timestamp": 0}],
                    ["execution_success", {"prompt_id": prompt_id, "timestamp": 1}],
                ],
            },
            "meta": {k: {"node_id": k} for k in outputs},
        }

    def _save(
        self,
        graph: dict[str, Any],
        node_id: str,
        node: dict[str, Any],
        cache: dict[str, tuple[Any, ...]],
        record: dict[str, Any],
    ) -> dict[str, Any]:
        images = self._value(graph, node["inputs"]["images"], cache, record)
        kind = "output" if node["class_type"] == "SaveImage" else "temp"
        prefix = node["inputs"].get("filename_prefix", "ComfyUI")
        saved = []
        for image in images:
            self._counter += 1
            filename = f"{prefix}_{self._counter:05}_.png"
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            self._files[(kind, "", filename)] = buffer.getvalue()
            saved.append({"filename": filename, "subfolder": "", "type": kind})
        return {"images": saved}

    def _value(
        self,
        graph: dict[str, Any],
        link: list[Any],
        cache: dict[str, tuple[Any, ...]],
        record: dict[str, Any],
    ) -> Any:
        source, index = link
        if source not in cache:
            cache[source] = self._run(graph, source, cache, record)
        return cache[source][index]

    def _run(
        self,
        graph: dict[str, Any],
        node_id: str,
        cache: dict[str, tuple[Any, ...]],
        record: dict[str, Any],
    ) -> tuple[Any, ...]:
        node = graph[node_id]
        kind = node["class_type"]
        inputs = {
            name: self._value(graph, value, cache, record) if isinstance(value, list) else value
            for name, value in node["inputs"].items()
        }
        record["order"].append(node_id)  # run after its inputs, as ComfyUI orders them
        if kind == "CheckpointLoaderSimple":
            name = inputs["ckpt_name"]
            return (f"model({name})", f"clip({name})", f"vae({name})")
        if kind == "CLIPVisionLoader":
            return (f"clip_vision({inputs['clip_name']})",)
        if kind == "IPAdapterModelLoader":
            return (f"ipadapter({inputs['ipadapter_file']})",)
        if kind == "LoadImage":
            record["loaded_images"].append(inputs["image"])
            image = Image.open(io.BytesIO(self.uploads[inputs["image"]])).convert("RGB")
            return (image, None)
        if kind == "IPAdapterAdvanced":
            digest = hashlib.sha256(inputs["image"].tobytes()).hexdigest()[:12]
            record["ipadapter_weight"] = inputs["weight"]
            return (f"{inputs['model']}+ip({digest},{inputs['weight']})",)
        if kind == "LoraLoader":
            name = inputs["lora_name"]
            data = (self.loras_dir / name).read_bytes()  # type: ignore[operator]
            problem = _safetensors_problem(data)
            if problem is not None:
                raise _NodeError(
                    node_id,
                    kind,
                    {"exception_message": problem, "exception_type": "SafetensorError"},
                )
            digest = hashlib.sha256(data).hexdigest()
            strength = inputs["strength_model"]
            record.setdefault("loras", []).append(
                {"name": name, "sha256": digest, "strength": strength}
            )
            applied = f"lora({digest[:12]},{strength})"
            return (f"{inputs['model']}+{applied}", f"{inputs['clip']}+{applied}")
        if kind == "CLIPTextEncode":
            clip = str(inputs["clip"])  # a LoRA changes the text encoder too
            return (inputs["text"] if "+lora(" not in clip else f"{inputs['text']}|{clip}",)
        if kind == "EmptyLatentImage":
            w, h = inputs["width"] // 8 * 8, inputs["height"] // 8 * 8
            return (_Latent(w, h, inputs["batch_size"], "empty"),)
        if kind == "ImageScale":
            return (inputs["image"].resize((inputs["width"], inputs["height"])),)
        if kind == "VAEEncode":
            image = inputs["pixels"]
            w, h = image.width // 8 * 8, image.height // 8 * 8
            digest = hashlib.sha256(image.tobytes()).hexdigest()[:12]
            return (_Latent(w, h, 1, f"encoded({digest})"),)
        if kind == "RepeatLatentBatch":
            latent = inputs["samples"]
            return (
                _Latent(
                    latent.width, latent.height, latent.batch * inputs["amount"], latent.recipe
                ),
            )
        if kind == "KSampler":
            if self.execution_error is not None:
                raise _NodeError(
                    node_id,
                    kind,
                    {
                        "exception_message": self.execution_error,
                        "exception_type": "torch.OutOfMemoryError",
                        "traceback": ["Traceback (most recent call last):\n", "  ...\n"],
                        "current_inputs": {},
                        "current_outputs": {},
                    },
                )
            latent = inputs["latent_image"]
            settings = {
                k: inputs[k]
                for k in ("model", "seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")
            }
            settings.update(positive=inputs["positive"], negative=inputs["negative"])
            settings.update(width=latent.width, height=latent.height, batch=latent.batch)
            record.update(settings)
            recipe = json.dumps({**settings, "latent": latent.recipe}, sort_keys=True)
            return (_Latent(latent.width, latent.height, latent.batch, recipe),)
        if kind == "VAEDecode":
            latent = inputs["samples"]
            return (
                [
                    render(latent.recipe, i, latent.width, latent.height)
                    for i in range(latent.batch)
                ],
            )
        raise _NodeError(
            node_id,
            kind,
            {"exception_message": f"cannot run {kind}", "exception_type": "RuntimeError"},
        )


def _safetensors_problem(data: bytes) -> str | None:
    """What ComfyUI's loader (safetensors) would say of ``data``; None when it reads: an
    8-byte little-endian header length, then that much JSON naming each tensor's dtype,
    shape and byte range inside the rest."""
    if len(data) < 8:
        return "Error while deserializing header: HeaderTooSmall"
    (length,) = struct.unpack("<Q", data[:8])
    if 8 + length > len(data):
        return "Error while deserializing header: InvalidHeaderLength"
    try:
        header = json.loads(data[8 : 8 + length])
    except ValueError:
        return "Error while deserializing header: InvalidHeaderDeserialization"
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if not tensors:
        return "the LoRA file holds no tensors"
    end = max(v["data_offsets"][1] for v in tensors.values())
    if 8 + length + end != len(data):
        return "Error while deserializing header: MetadataIncompleteBuffer"
    return None


def render(recipe: str, index: int, width: int, height: int) -> Image.Image:
    """The fake's picture for one batch item: blocks of colour chosen by the recipe's hash."""
    digest = hashlib.sha256(f"{recipe}#{index}".encode()).digest()
    image = Image.new("RGB", (width, height), tuple(digest[0:3]))
    draw = ImageDraw.Draw(image)
    for i in range(3, 30, 6):
        x, y = digest[i] * width // 256, digest[i + 1] * height // 256
        draw.rectangle((x, y, x + width // 4, y + height // 4), fill=tuple(digest[i + 2 : i + 5]))
    return image


def _error(kind: str, message: str, details: str) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def _link_errors(graph: dict[str, Any], name: str, value: Any, kind: str) -> list[dict[str, Any]]:
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)):
        return [
            _error(
                "bad_linked_input",
                "Bad linked input, must be a length-2 list of [string, int]",
                f"{name}, {value!r}",
            )
        ]
    source = graph.get(value[0])
    if source is None:
        return [_error("missing_node", f"Linked node {value[0]} does not exist", name)]
    outputs = NODE_SPECS[source["class_type"]][2]
    if value[1] >= len(outputs) or outputs[value[1]] != kind:
        received = outputs[value[1]] if value[1] < len(outputs) else "nothing"
        return [
            _error(
                "return_type_mismatch",
                "Return type mismatch between linked nodes",
                f"{name}, received_type({received}) mismatch input_type({kind})",
            )
        ]
    return []


def _failure(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``execution_error`` data of a failed run's history entry, if it failed."""
    for kind, data in ((entry or {}).get("status") or {}).get("messages") or ():
        if kind == "execution_error":
            return data
    return None


def _interrupted_entry(prompt_id: str) -> dict[str, Any]:
    return {
        "prompt": [0, prompt_id, {}, {}, []],
        "outputs": {},
        "status": {
            "status_str": "error",
            "completed": False,
            "messages": [
                ["execution_start", {"prompt_id": prompt_id, "timestamp": 0}],
                [
                    "execution_interrupted",
                    {
                        "prompt_id": prompt_id,
                        "node_id": "9",
                        "node_type": "KSampler",
                        "executed": [],
                    },
                ],
            ],
        },
        "meta": {},
    }
