"""Drive a user's ComfyUI server: fill a workflow template, queue it, fetch the images.

A preset's ``model`` names the workflow: ``workflow:<name>`` for a built-in template, or a
path to the user's own workflow saved in ComfyUI's API format (Workflow → Export (API)).
A relative path is read from the folder of the presets file that names it. Templates are
plain API-format graphs whose node inputs hold placeholders as string literals::

    "seed": "{{seed}}"                       → 1234 (an int: numbers stay numbers)
    "text": "masterpiece, {{prompt}}"        → text with the prompt written in

Request placeholders: ``prompt``, ``negative_prompt``, ``seed``, ``steps``, ``guidance``,
``width``, ``height``, ``batch``, ``denoise`` (also as ``strength``, its old name),
``reference_scale``,
``init_image`` and ``reference_image`` (names of files castbook uploads first; a template
takes more references with ``reference_image_2`` …). Any other placeholder is filled from
the preset's ``options``; ``checkpoint``, ``ipadapter_model``, ``clip_vision``, ``sampler``
and ``scheduler`` have defaults (``OPTION_DEFAULTS``).

Character LoRAs: ``lora_name`` and ``lora_strength`` (``lora_name_2`` … for more) in
LoraLoader nodes. ComfyUI has no upload route for model files, so castbook writes each
LoRA into the preset's ``lora_dir`` (ComfyUI's ``models/loras``, or a loras path of its
``extra_model_paths.yaml``) and checks ``GET /models/loras`` lists it; a slot without a
LoRA is bypassed (model and clip pass through). docs/training.md has the details.

Without references, the nodes that would load them are dropped and the nodes that used
them are bypassed: their outputs are rewired to the inputs their ``_meta`` names in
``castbook_passthrough`` (IP-Adapter nodes pass their ``model`` through by default), so
the same template also renders from the prompt alone.

The built-in workflows are SD 1.5 graphs: ``sd15-ip-adapter`` (text to image; i2i requests
go to ``sd15-img2img``, or to the preset's ``i2i_workflow`` option). With references they
use IP-Adapter nodes from the ComfyUI_IPAdapter_plus custom node pack
(https://github.com/cubiq/ComfyUI_IPAdapter_plus), which the server must have installed
along with the model files the options name.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from castbook.errors import (
    BackendError,
    GenerationCancelled,
    InvalidInputError,
)
from castbook.generation.base import (
    GenerationResult,
    LoraUse,
    PreparedRequest,
    Progress,
    ProgressCallback,
)
from castbook.generation.comfyui_progress import (
    Message,
    ProgressSocket,
    SocketClosed,
    execution_error_text,
)
from castbook.generation.comfyui_workflows import (
    BUILTIN_WORKFLOWS,
    I2I_SIBLINGS,
    LORA_PLACEHOLDER,
    OPTION_DEFAULTS,
    REFERENCE_PLACEHOLDER,
    REQUEST_PLACEHOLDERS,
    Workflow,
    fill_workflow,
    load_workflow,
    lora_placeholders,
    reference_placeholder,
)
from castbook.generation.hosted_keys import find_provider
from castbook.generation.presets import Preset
from castbook.generation.request import Mode
from castbook.images import open_image
from castbook.providers import IMAGE, ProviderConfig, ProviderKey, tier_order
from castbook.settings import Settings

__all__ = [
    "BUILTIN_WORKFLOWS",
    "OPTION_DEFAULTS",
    "ComfyUIBackend",
    "Workflow",
    "fill_workflow",
    "load_workflow",
]

_DEFAULT_SERVER_ENV = "CASTBOOK_COMFYUI_URL"

log = logging.getLogger("castbook.generation")

#: seconds of websocket silence after which ``/history`` is read once, in case it ended
QUIET_CHECK_S = 5.0


class ComfyUIBackend:
    """The ``comfyui`` backend: one preset's workflows on one ComfyUI server."""

    name = "comfyui"

    def __init__(
        self,
        preset: Preset,
        *,
        server: str | None = None,
        timeout: float = 600,
        poll_interval: float = 0.5,
        home: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        options = dict(preset.options)
        self.server_env = str(options.get("server_env") or _DEFAULT_SERVER_ENV)
        self.provider = self._provider(options.get("provider"), home, environ)
        chosen = (
            server
            or (self.provider.base_url if self.provider is not None else None)
            or environ.get(self.server_env)
            or options.get("server")
        )
        if not chosen:
            raise InvalidInputError(
                f"no ComfyUI server configured: set {self.server_env} (e.g. http://127.0.0.1:8188)"
            )
        chosen = str(chosen).strip().rstrip("/")
        if "://" not in chosen:
            chosen = f"http://{chosen}"
        self.server = chosen
        self._key = self._provider_key(self.provider, chosen)
        self.preset = preset
        self.timeout = float(timeout)
        self.poll_interval = float(poll_interval)
        self.options = {**OPTION_DEFAULTS, **options}
        self._said_polling = False
        relative_to = Path(preset.source).parent if preset.source != "built-in" else None
        self.workflows: dict[Mode, Workflow] = {}
        for mode in preset.modes:
            if mode == Mode.I2V:
                continue
            spec = self._workflow_spec(mode)
            self.workflows[mode] = load_workflow(spec, relative_to=relative_to)
        for workflow in self.workflows.values():
            self._check_known_placeholders(workflow)
        self.max_references = max((w.reference_slots for w in self.workflows.values()), default=0)

    # -- the provider: a ComfyUI server (often behind an authenticating proxy) ----------------

    @staticmethod
    def _provider(
        name: object, home: str | os.PathLike[str] | None, environ: Mapping[str, str]
    ) -> ProviderConfig | None:
        """The ``comfyui`` provider the preset's ``provider`` option names (None: no option).

        Its ``base_url`` is the server; a name not in providers.toml is a FieldError."""
        if name is None:
            return None
        where = Path(home) if home is not None else Settings.from_env(environ).home
        return find_provider(where, environ, "comfyui", name)

    @staticmethod
    def _provider_key(provider: ProviderConfig | None, server: str) -> ProviderKey | None:
        """The key sent as ``Authorization: Bearer`` (paid first, as for all image work) —
        only to the provider's own server, never to another one given instead."""
        if provider is None or not provider.keys:
            return None
        if provider.base_url.rstrip("/") != server.rstrip("/"):
            return None
        first = tier_order(provider, IMAGE)
        return sorted(provider.keys, key=lambda key: key.tier != first)[0]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key.key}"} if self._key is not None else {}

    def __repr__(self) -> str:
        return f"ComfyUIBackend(preset={self.preset.id!r}, server={self.server!r})"

    def _workflow_spec(self, mode: Mode) -> str:
        if mode == Mode.I2I:
            override = self.options.get("i2i_workflow")
            if override:
                return str(override)
            sibling = I2I_SIBLINGS.get(self.preset.model.removeprefix("workflow:"))
            if self.preset.model.startswith("workflow:") and sibling:
                return sibling
        return self.preset.model

    def _check_known_placeholders(self, workflow: Workflow) -> None:
        unknown = sorted(
            p
            for p in workflow.placeholders
            if p not in REQUEST_PLACEHOLDERS
            and not REFERENCE_PLACEHOLDER.fullmatch(p)
            and not LORA_PLACEHOLDER.fullmatch(p)
            and p not in self.options
        )
        if unknown:
            names = ", ".join("{{" + p + "}}" for p in unknown)
            known = ", ".join("{{" + p + "}}" for p in (*REQUEST_PLACEHOLDERS, *OPTION_DEFAULTS))
            raise InvalidInputError(
                f"workflow {workflow.name} uses unknown placeholders {names}; castbook fills "
                f"{known}, {{{{reference_image_2}}}} …, {{{{lora_name}}}} and "
                "{{lora_strength}} (and _2 …) and any key of the preset's options"
            )

    # -- generation -------------------------------------------------------------------------

    def generate(self, request: PreparedRequest, progress: ProgressCallback) -> GenerationResult:
        workflow = self.workflows.get(request.mode)
        if workflow is None:
            modes = ", ".join(m.value for m in self.workflows) or "none"
            raise InvalidInputError(
                f"preset {self.preset.id} (ComfyUI) makes {modes}, not {request.mode.value}"
            )
        self._check_supported(workflow, request)
        batch = request.request.batch
        with httpx.Client(
            base_url=self.server, timeout=min(self.timeout, 120.0), headers=self._headers()
        ) as client:
            values = self._values(request)
            for slot, image in enumerate(request.references, start=1):
                values[reference_placeholder(slot)] = self._upload(client, image)
            if request.init_image is not None and "init_image" in workflow.placeholders:
                values["init_image"] = self._upload(client, request.init_image)
            applied, lora_notes = self._apply_loras(client, workflow, request.loras, values)
            unused = frozenset(
                reference_placeholder(slot)
                for slot in range(len(request.references) + 1, workflow.reference_slots + 1)
            ) | frozenset(
                name
                for slot in range(len(applied) + 1, workflow.lora_slots + 1)
                for name in lora_placeholders(slot)
            )
            graph = fill_workflow(workflow, values, unused=unused)
            # A client id per call: ComfyUI keeps one socket per id and silently drops the
            # older one, so two concurrent calls must not share it.
            client_id = uuid.uuid4().hex
            with contextlib.ExitStack() as stack:
                socket = self._open_socket(client_id, stack)
                prompt_id, number = self._queue(client, graph, client_id)
                watch = _Watch(
                    client, prompt_id, number, graph, request, progress, socket, self.timeout
                )
                entry = self._wait(watch)
            images = self._download(client, entry, batch, request, progress)
        metadata: dict[str, Any] = {
            "backend": self.name,
            "server": self.server,
            "workflow": workflow.name,
            "prompt_id": prompt_id,
        }
        if applied:
            metadata["loras"] = [lora.described() for lora in applied]
        notes = [*request.lora_notes, *lora_notes]
        if notes:
            metadata["lora_notes"] = notes
        return GenerationResult(images=tuple(images), seed=request.seed, metadata=metadata)

    # -- character LoRAs: placed in ComfyUI's loras folder, applied by LoraLoader nodes ------

    def _apply_loras(
        self,
        client: httpx.Client,
        workflow: Workflow,
        loras: tuple[LoraUse, ...],
        values: dict[str, Any],
    ) -> tuple[list[LoraUse], list[str]]:
        """Put each LoRA where ComfyUI reads it and fill the template's LoRA slots; the
        LoRAs applied, and a note for each that was not (a note, never an error: the
        picture is still made, as with a mismatched base model)."""
        if not loras:
            return [], []
        notes: list[str] = []
        if not self.options.get("lora_dir"):
            return [], [
                f"{lora.character}'s LoRA not applied: preset {self.preset.id!r} has no "
                "lora_dir option (ComfyUI has no upload route for model files; castbook "
                "writes the LoRA into the folder ComfyUI reads LoRAs from, docs/training.md)"
                for lora in loras
            ]
        slots = workflow.lora_slots
        if len(loras) > slots:
            for lora in loras[slots:]:
                notes.append(
                    f"{lora.character}'s LoRA not applied: ComfyUI workflow {workflow.name} "
                    f"takes {slots} LoRA(s) ({{{{lora_name}}}} … in LoraLoader nodes)"
                )
        applied = list(loras[:slots])
        for slot, lora in enumerate(applied, start=1):
            name, strength = lora_placeholders(slot)
            values[name] = self._place_lora(client, lora)
            values[strength] = float(lora.weight)
        return applied, notes

    def _place_lora(self, client: httpx.Client, lora: LoraUse) -> str:
        """Write the LoRA into ``lora_dir`` (under ``lora_subfolder``, named by its sha256, so
        a name always means the same bytes) and give the name ComfyUI lists it by.

        ComfyUI's only upload routes are for images (``/upload/image``, ``/upload/mask``),
        so the file goes through a folder both share: ComfyUI's ``models/loras`` or a
        ``loras`` path of its ``extra_model_paths.yaml``. ``GET /models/loras`` then says
        whether ComfyUI sees it."""
        folder = Path(str(self.options["lora_dir"])).expanduser()
        subfolder = str(self.options.get("lora_subfolder", "castbook")).strip("/")
        filename = f"castbook-{lora.sha256[:16]}.safetensors"
        target = (folder / subfolder if subfolder else folder) / filename
        source = Path(lora.path)
        try:
            if not (target.is_file() and target.stat().st_size == source.stat().st_size):
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(f".{filename}.{uuid.uuid4().hex[:8]}.part")
                try:
                    partial.write_bytes(source.read_bytes())
                    os.replace(partial, target)  # ComfyUI never lists half a file
                finally:
                    partial.unlink(missing_ok=True)
        except OSError as exc:
            raise BackendError(
                self.name,
                f"cannot write {lora.character}'s LoRA into lora_dir {folder}: {exc}",
            ) from None
        name = f"{subfolder}/{filename}" if subfolder else filename
        response = self._send(client, "GET", "/models/loras")
        if response.status_code == 404:
            return name  # a ComfyUI older than GET /models: its own validation will tell
        listed = self._json(response, "listing ComfyUI's LoRAs failed")
        for entry in listed if isinstance(listed, list) else []:
            if isinstance(entry, str) and entry.replace("\\", "/") == name:
                return entry
        raise BackendError(
            self.name,
            f"ComfyUI at {self.server} does not list {name} among its LoRAs after castbook "
            f"wrote it to {target}: lora_dir must be ComfyUI's models/loras folder, or a loras "
            "path in its extra_model_paths.yaml, on a disk castbook and ComfyUI share",
        )

    def _check_supported(self, workflow: Workflow, request: PreparedRequest) -> None:
        has = workflow.placeholders.__contains__
        lacking: list[str] = []
        if not has("seed"):
            lacking.append("{{seed}} (castbook sets the seed of every image)")
        if request.prompt and not has("prompt"):
            lacking.append("{{prompt}}")
        if request.negative_prompt and not has("negative_prompt"):
            lacking.append("{{negative_prompt}}")
        if request.request.batch > 1 and not has("batch"):
            lacking.append(f"{{{{batch}}}} (batch {request.request.batch} was asked for)")
        if request.mode == Mode.I2I and request.init_image is None:
            raise InvalidInputError("image-to-image needs an init image")
        if request.init_image is None and has("init_image"):
            raise InvalidInputError(
                f"ComfyUI workflow {workflow.name} starts from a source image "
                "({{init_image}}); use it for image-to-image, with an init image"
            )
        if request.mode == Mode.I2I and not has("init_image"):
            lacking.append("{{init_image}} (for the source image)")
        if len(request.references) > workflow.reference_slots:
            slots = workflow.reference_slots
            lacking.append(
                f"{{{{{reference_placeholder(slots + 1)}}}}} ({len(request.references)} "
                f"reference images given, the workflow takes {slots})"
            )
        if lacking:
            raise InvalidInputError(
                f"ComfyUI workflow {workflow.name} cannot take this request: it lacks "
                f"{'; '.join(lacking)}. It supports {workflow.supported()}; add the missing "
                "placeholders to the node inputs that should receive them"
            )

    def _values(self, request: PreparedRequest) -> dict[str, Any]:
        fields = request.request
        values = dict(self.options)
        values.update(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            seed=int(request.seed),
            steps=int(fields.steps),
            guidance=float(fields.guidance),
            width=int(fields.width),
            height=int(fields.height),
            batch=int(fields.batch),
            denoise=float(fields.denoise),
            strength=float(fields.denoise),  # the placeholder's old name, still honoured
            reference_scale=float(fields.reference_scale),
        )
        return values

    # -- HTTP -------------------------------------------------------------------------------

    def _send(self, client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return client.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise BackendError(
                self.name,
                f"cannot reach ComfyUI at {self.server} — is it running? set {self.server_env}",
            ) from None
        except httpx.TimeoutException:
            raise BackendError(
                self.name, f"ComfyUI at {self.server} did not answer {method} {path} in time"
            ) from None
        except httpx.HTTPError as exc:
            raise BackendError(
                self.name, f"talking to ComfyUI at {self.server} failed: {exc}"
            ) from None

    def _json(self, response: httpx.Response, what: str) -> Any:
        if response.status_code in (401, 403):
            if self._key is not None and self.provider is not None:
                refused = (
                    f"the key {self._key.masked} ({self._key.tier} key of provider "
                    f"{self.provider.name!r} in providers.toml)"
                )
            else:
                refused = "the request (no key: name a comfyui provider with one in the preset)"
            raise BackendError(
                self.name,
                f"{what}: ComfyUI at {self.server} refused {refused}",
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise BackendError(
                self.name, f"{what}: {_server_message(response)}", status=response.status_code
            )
        try:
            return response.json()
        except ValueError:
            raise BackendError(
                self.name,
                f"{what}: the answer is not JSON — is {self.server} a ComfyUI server?",
                status=response.status_code,
            ) from None

    def _upload(self, client: httpx.Client, image: Image.Image) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        filename = f"castbook-{hashlib.sha256(data).hexdigest()[:24]}.png"
        response = self._send(
            client,
            "POST",
            "/upload/image",
            files={"image": (filename, data, "image/png")},
            data={"overwrite": "true", "type": "input"},
        )
        answer = self._json(response, "uploading an image failed")
        name = answer.get("name") if isinstance(answer, dict) else None
        if not isinstance(name, str) or not name:
            raise BackendError(self.name, f"uploading an image gave no file name: {answer!r}")
        subfolder = answer.get("subfolder") or ""
        return f"{subfolder}/{name}" if subfolder else name

    def _queue(
        self, client: httpx.Client, graph: dict[str, Any], client_id: str
    ) -> tuple[str, Any]:
        response = self._send(
            client, "POST", "/prompt", json={"prompt": graph, "client_id": client_id}
        )
        if response.status_code == 400:
            raise BackendError(
                self.name,
                f"ComfyUI refused the workflow: {_summarise_refusal(response)}",
                status=400,
            )
        answer = self._json(response, "queueing the workflow failed")
        prompt_id = answer.get("prompt_id") if isinstance(answer, dict) else None
        if not isinstance(prompt_id, str) or not prompt_id:
            raise BackendError(self.name, f"ComfyUI queued nothing: {answer!r}")
        return prompt_id, answer.get("number")

    # -- waiting: the websocket's messages, else polling /history ----------------------------

    def _open_socket(self, client_id: str, stack: contextlib.ExitStack) -> ProgressSocket | None:
        """Open the progress websocket before queueing (so no message is missed), or None."""
        opened = ProgressSocket.open(
            self.server,
            client_id,
            timeout=min(self.timeout, 10.0),
            stack=stack,
            headers=self._headers(),
        )
        if isinstance(opened, str):
            self._say_polling(opened)
            return None
        return opened

    def _say_polling(self, why: str) -> None:
        """Log the fallback once per backend: a refusing server refuses every time."""
        level = logging.DEBUG if self._said_polling else logging.WARNING
        self._said_polling = True
        log.log(
            level, "ComfyUI at %s: %s; polling /history for completion instead", self.server, why
        )

    def _wait(self, watch: _Watch) -> dict[str, Any]:
        """Wait for the prompt to end and give its ``/history`` entry.

        The websocket, when open, reports each step and ends the wait; what it cannot tell
        (a socket that closed early, history written a moment after ``execution_success``)
        is read by polling ``/history``."""
        where = f" as #{watch.number}" if watch.number is not None else ""
        watch.report(0, watch.total, f"queued on ComfyUI{where}")
        if watch.socket is not None:
            try:
                entry = self._follow(watch)
            except SocketClosed as closed:
                self._say_polling(f"the websocket closed before the prompt finished ({closed})")
            else:
                if entry is not None:
                    return entry
        while True:
            entry = self._history_entry(watch)
            if entry is not None:
                return entry
            self._check_deadline(watch)
            time.sleep(max(0.0, min(self.poll_interval, watch.deadline - time.monotonic())))
            watch.report(watch.step, watch.of, watch.waiting())

    def _history_entry(self, watch: _Watch) -> dict[str, Any] | None:
        """The prompt's ``/history`` entry once it has one (raising if it failed), else None."""
        response = self._send(watch.client, "GET", f"/history/{watch.prompt_id}")
        history = self._json(response, "reading the prompt's history failed")
        entry = history.get(watch.prompt_id) if isinstance(history, dict) else None
        if not isinstance(entry, dict):
            return None
        _raise_for_status(self.name, entry)
        return entry

    def _follow(self, watch: _Watch) -> dict[str, Any] | None:
        """Report the websocket's messages until our prompt is done; raise on its failure.

        Gives the history entry when a quiet socket made it look there and the prompt had
        ended (a message lost to a proxy, a server that stopped sending to this client), so
        a silent socket costs at most ``QUIET_CHECK_S``, never the whole timeout."""
        assert watch.socket is not None
        heard = time.monotonic()
        while True:
            self._check_deadline(watch)
            wait = max(0.0, min(self.poll_interval, watch.deadline - time.monotonic()))
            message = watch.socket.receive(timeout=wait)
            if message is not None:
                heard = time.monotonic()
                if message.about(watch.prompt_id) and self._on_message(watch, message):
                    return None
                continue
            watch.report(watch.step, watch.of, watch.waiting())
            if time.monotonic() - heard >= QUIET_CHECK_S:
                heard = time.monotonic()
                entry = self._history_entry(watch)
                if entry is not None:
                    return entry

    def _on_message(self, watch: _Watch, message: Message) -> bool:
        """Act on one message; True when the prompt has finished."""
        data = message.data
        if message.type == "execution_start":
            watch.running = True
            watch.report(watch.step, watch.of, "running on ComfyUI")
        elif message.type == "executing":
            node = data.get("node")
            if node is None:
                return data.get("prompt_id") == watch.prompt_id
            watch.running = True
            watch.node = str(node)
            watch.report(watch.step, watch.of, f"running {watch.describe(watch.node)}")
        elif message.type == "progress":
            value, most = _count(data.get("value")), _count(data.get("max"))
            if value is not None and most and value <= most:
                node = data.get("node")
                watch.node = str(node) if node is not None else watch.node
                watch.step, watch.of = value, most
                watch.report(value, most, f"{watch.describe(watch.node)}: step {value}/{most}")
        elif message.type == "execution_success":
            return data.get("prompt_id") == watch.prompt_id
        elif message.type == "execution_error":
            raise BackendError(self.name, execution_error_text(data))
        elif message.type == "execution_interrupted":
            raise GenerationCancelled(
                f"the prompt was interrupted on the ComfyUI server (node {data.get('node_id')})"
            )
        return False

    def _check_deadline(self, watch: _Watch) -> None:
        if time.monotonic() >= watch.deadline:
            self._stop(watch.client, watch.prompt_id)
            raise BackendError(
                self.name,
                f"ComfyUI at {self.server} did not finish within {self.timeout:g} s; "
                "the prompt was cancelled there (raise the timeout for slow workflows)",
            )

    def _download(
        self,
        client: httpx.Client,
        entry: dict[str, Any],
        batch: int,
        request: PreparedRequest,
        progress: ProgressCallback,
    ) -> list[Image.Image]:
        files = _output_files(entry)
        if len(files) != batch:
            raise BackendError(
                self.name,
                f"the workflow produced {len(files)} images, expected {batch}; it needs one "
                "SaveImage node whose batch comes from {{batch}}",
            )
        total = request.request.steps
        progress(Progress(total, total, f"downloading {batch} image(s) from ComfyUI"))
        images = []
        for file in files:
            params = {
                "filename": str(file.get("filename", "")),
                "subfolder": str(file.get("subfolder", "")),
                "type": str(file.get("type", "output")),
            }
            response = self._send(client, "GET", "/view", params=params)
            if response.status_code >= 400:
                raise BackendError(
                    self.name,
                    f"fetching {params['filename']} failed: {_server_message(response)}",
                    status=response.status_code,
                )
            image = open_image(response.content, source=f"ComfyUI output {params['filename']}")
            images.append(image if image.mode == "RGB" else image.convert("RGB"))
        return images

    @staticmethod
    def _stop(client: httpx.Client, prompt_id: str) -> None:
        """Best effort: take the prompt out of the queue, or interrupt it if it is running.

        Servers before mid-2025 ignore the prompt_id and interrupt whatever runs, so this is
        only called while our prompt has not finished."""
        for path, body in (
            ("/queue", {"delete": [prompt_id]}),
            ("/interrupt", {"prompt_id": prompt_id}),
        ):
            with contextlib.suppress(httpx.HTTPError):
                client.post(path, json=body, timeout=5.0)


class _Watch:
    """One queued prompt being waited for: where it is, and reporting to the callback.

    ``step``/``of`` is the last step the server reported (of the node that reported it), so
    a heartbeat or the next node's start never moves the progress back."""

    def __init__(
        self,
        client: httpx.Client,
        prompt_id: str,
        number: Any,
        graph: dict[str, Any],
        request: PreparedRequest,
        progress: ProgressCallback,
        socket: ProgressSocket | None,
        timeout: float,
    ) -> None:
        self.client, self.prompt_id, self.number = client, prompt_id, number
        self.graph, self.progress, self.socket = graph, progress, socket
        self.total = request.request.steps
        self.step, self.of = 0, self.total
        self.node: str | None = None
        self.running = False
        self.started = time.monotonic()
        self.deadline = self.started + timeout

    def describe(self, node: str | None) -> str:
        """``KSampler (node 3)``: the node's class from the graph we sent, and its id."""
        if node is None:
            return "the workflow"
        spec = self.graph.get(node)
        kind = spec.get("class_type") if isinstance(spec, dict) else None
        return f"{kind} (node {node})" if kind else f"node {node}"

    def waiting(self) -> str:
        elapsed = f"{time.monotonic() - self.started:.0f} s"
        if self.running and self.node is not None:
            return f"waiting for ComfyUI ({elapsed}): running {self.describe(self.node)}"
        return f"waiting for ComfyUI ({elapsed})"

    def report(self, step: int, total: int, message: str) -> None:
        """Tell the callback; its GenerationCancelled stops the prompt on the server."""
        try:
            self.progress(Progress(step, total, message))
        except GenerationCancelled:
            ComfyUIBackend._stop(self.client, self.prompt_id)
            raise


def _count(value: Any) -> int | None:
    """A step count from a ``progress`` message (custom nodes may send floats), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(0, round(value))


def _output_files(entry: dict[str, Any]) -> list[dict[str, Any]]:
    outputs = entry.get("outputs") or {}
    files = [
        image
        for node_output in outputs.values()
        if isinstance(node_output, dict)
        for image in node_output.get("images") or ()
        if isinstance(image, dict) and image.get("filename")
    ]
    saved = [f for f in files if f.get("type", "output") == "output"]
    return saved or files


def _raise_for_status(backend: str, entry: dict[str, Any]) -> None:
    status = entry.get("status") or {}
    if status.get("status_str") != "error":
        return
    for message in status.get("messages") or ():
        if not (isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict)):
            continue
        kind, data = message
        if kind == "execution_interrupted":
            raise GenerationCancelled(
                f"the prompt was interrupted on the ComfyUI server (node {data.get('node_id')})"
            )
        if kind == "execution_error":
            raise BackendError(backend, execution_error_text(data))
    raise BackendError(backend, "the workflow failed on the ComfyUI server (no error message)")


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return text[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body.get("message"))
        if isinstance(error, dict):
            return str(error.get("message") or error)[:300]
        if error:
            return str(error)[:300]
    return json.dumps(body)[:300]


def _summarise_refusal(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return _server_message(response)
    if not isinstance(body, dict):
        return str(body)[:300]
    error = body.get("error")
    if isinstance(error, dict):
        head = str(error.get("message") or error.get("type") or "invalid workflow")
        details = str(error.get("details") or "")
    else:
        head, details = str(error or "invalid workflow"), ""
    parts = []
    node_errors = body.get("node_errors")
    for node_id, node_error in (node_errors if isinstance(node_errors, dict) else {}).items():
        node_error = node_error if isinstance(node_error, dict) else {}
        class_type = node_error.get("class_type", "?")
        for err in node_error.get("errors") or ():
            if not isinstance(err, dict):
                continue
            text = str(err.get("message", "error"))
            if err.get("details"):
                text += f": {err['details']}"
            parts.append(f"node {node_id} ({class_type}): {text[:200]}")
    summary = head.rstrip(".") + (f" ({details})" if details and not parts else "")
    if parts:
        summary += " — " + "; ".join(parts)
    if "IPAdapter" in summary and "does not exist" in summary:
        summary += (
            "; install the ComfyUI_IPAdapter_plus custom nodes on the server "
            "(https://github.com/cubiq/ComfyUI_IPAdapter_plus)"
        )
    elif "value_not_in_list" in json.dumps(node_errors) and parts:
        summary += (
            "; set the preset's checkpoint / ipadapter_model / clip_vision options "
            "to model files this server has"
        )
    return summary
