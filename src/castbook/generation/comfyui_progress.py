"""Follow one ComfyUI prompt over the server's websocket (``/ws?clientId=…``).

ComfyUI pushes JSON text frames ``{"type": …, "data": {…}}`` to the client whose
``clientId`` queued the prompt (the same id goes into ``POST /prompt`` as ``client_id``).
The shapes read here, as of 2026-12-06, from ComfyUI's ``server.py`` (``websocket_handler``
sends ``status`` first, with ``sid``), ``execution.py`` / ``main.py`` (``send_sync`` calls)
and the message reference at https://docs.comfy.org/essentials/comfyui-server/comms_messages:

``status``                 ``{"status": {"exec_info": {"queue_remaining": n}}, "sid"?}``
``execution_start``        ``{"prompt_id", "timestamp"}``
``execution_cached``       ``{"nodes": [node ids], "prompt_id", "timestamp"}``
``executing``              ``{"node": id | null, "display_node"?, "prompt_id"}``; ``null``
                           with our prompt id: the prompt is done (history is written first)
``progress``               ``{"value", "max", "prompt_id", "node"}`` (servers before 2024 sent
                           no ``prompt_id``)
``executed``               ``{"node", "display_node"?, "output": {"images": […]}, "prompt_id"}``
``execution_success``      ``{"prompt_id", "timestamp"}`` (newer servers, before
                           ``executing`` ``null``)
``execution_error``        ``{"prompt_id", "node_id", "node_type", "executed",
                           "exception_message", "exception_type", "traceback",
                           "current_inputs", "current_outputs"}``
``execution_interrupted``  ``{"prompt_id", "node_id", "node_type", "executed"}``

Binary frames (sampler previews) and message types not listed (``progress_state``,
``feature_flags``, custom nodes' own) are skipped.

The client is ``websockets`` (its synchronous client): the project's reference Python
implementation of RFC 6455, maintained, with no dependencies of its own, and a blocking
``recv(timeout=…)`` that fits the backend's worker thread — the backend wakes up at least
every poll interval to let the progress callback cancel. ``httpx-ws`` would reuse httpx but
brings wsproto and anyio and a smaller maintainer base for the same job. ``websockets`` is
the ``comfyui`` extra; without it the backend polls ``/history`` as before and says so once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

log = logging.getLogger("castbook.generation")

INSTALL_HINT = "pip install 'castbook[comfyui]'"


@dataclass(frozen=True)
class Message:
    """One JSON message of ComfyUI's websocket: its ``type`` and ``data``."""

    type: str
    data: dict[str, Any]

    def about(self, prompt_id: str) -> bool:
        """Whether the message concerns our prompt (a message naming no prompt counts)."""
        other = self.data.get("prompt_id")
        return other is None or other == prompt_id


class SocketClosed(Exception):
    """The websocket closed (or broke) before the prompt finished."""


def websocket_url(server: str, client_id: str) -> str:
    """``http://host:8188/base`` → ``ws://host:8188/base/ws?clientId=…`` (https → wss)."""
    parts = urlsplit(server)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, f"clientId={quote(client_id)}", ""))


class ProgressSocket:
    """An open websocket to ComfyUI; ``receive`` gives its next JSON message."""

    def __init__(self, connection: Any, url: str) -> None:
        self._connection = connection
        self.url = url

    @classmethod
    def open(
        cls,
        server: str,
        client_id: str,
        *,
        timeout: float,
        stack: ExitStack,
        headers: Mapping[str, str] | None = None,
    ) -> ProgressSocket | str:
        """Connect (closed when ``stack`` closes), or say in one line why not.

        The caller then polls ``/history``."""
        try:
            from websockets.sync.client import connect
        except ImportError:
            return f"the websockets package is not installed ({INSTALL_HINT})"
        from websockets.exceptions import InvalidHandshake, InvalidURI

        url = websocket_url(server, client_id)
        with ExitStack() as own:  # closes the socket unless it is handed to ``stack``
            try:
                # Previews of big images come as binary frames; 64 MiB keeps a sane bound.
                # ``headers``: a proxy's bearer key, sent on the upgrade request as on HTTP.
                opening = connect(
                    url,
                    open_timeout=timeout,
                    close_timeout=2,
                    max_size=64 << 20,
                    additional_headers=dict(headers) if headers else None,
                )
                connection = own.enter_context(opening)
            except InvalidHandshake as exc:
                return f"the server refused the websocket at {url} ({exc})"
            except (OSError, TimeoutError, InvalidURI) as exc:
                return f"cannot open the websocket at {url} ({exc or type(exc).__name__})"
            opened = cls(connection, url)
            # ComfyUI files the socket under our id, then sends ``status``: once that is here,
            # messages for a prompt queued with this id reach us (queueing sooner could lose
            # them).
            try:
                first = opened.receive(timeout=timeout)
            except SocketClosed as closed:
                return f"the websocket at {url} closed at once ({closed})"
            if first is None:
                return f"the websocket at {url} sent no status within {timeout:g} s"
            stack.enter_context(own.pop_all())
        return opened

    def receive(self, timeout: float) -> Message | None:
        """The next JSON message, or ``None`` when none came within ``timeout`` seconds.

        Raises :class:`SocketClosed` when the connection ends."""
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                frame = self._connection.recv(timeout=timeout)
            except TimeoutError:
                return None
            except (ConnectionClosed, OSError) as exc:
                raise SocketClosed(str(exc) or type(exc).__name__) from None
            if isinstance(frame, bytes):
                continue  # a preview image
            message = parse(frame)
            if message is not None:
                return message


def parse(text: str) -> Message | None:
    """A text frame as a :class:`Message`, or ``None`` for one that is not ComfyUI's shape."""
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        return None
    data = payload.get("data")
    return Message(payload["type"], data if isinstance(data, dict) else {})


def execution_error_text(data: dict[str, Any]) -> str:
    """``execution_error``'s data (websocket or ``/history``) as the error a user reads."""
    what = data.get("exception_type") or "error"
    return (
        f"the workflow failed in node {data.get('node_id')} ({data.get('node_type')}): "
        f"{what}: {str(data.get('exception_message', '')).strip()}"
    )
