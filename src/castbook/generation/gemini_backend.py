"""The Gemini API image backend: ``POST {base}/models/{model}:generateContent``.

Gemini's image models ("Nano Banana": ``gemini-2.5-flash-image``, ``gemini-3-pro-image-
preview`` …) take a character's reference pictures as image parts of the request, next to
the prompt; that is how castbook keeps a character's face across pictures with them.

The request (REST, https://ai.google.dev/api/generate-content)::

    {"contents": [{"role": "user", "parts": [
        {"text": "<the prompt, characters injected>"},
        {"inlineData": {"mimeType": "image/png", "data": "<base64>"}},   # i2i init image
        {"inlineData": {...}}, ...                                        # references
     ]}],
     "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
                          "imageConfig": {"aspectRatio": "4:5", "imageSize": "2K"}}}

with the key in the ``x-goog-api-key`` header (never in the URL, so never in a proxy's
log). A stored reference is sent as the bytes castbook stored (PNG, JPEG or WebP, which the
API takes); other images as PNG.

It is sent through Google's ``google-genai`` SDK (the ``gemini`` extra, imported when a
generation first needs it): ``Client(api_key=…, http_options=HttpOptions(base_url,
api_version, timeout, retry_options=HttpRetryOptions(attempts=1)))`` per key and
``client.models.generate_content`` on this backend's worker threads (the sync client: the
batch is already one thread per request in flight). The SDK's own retries are off —
castbook moves to the next key on a 429, waits ``retryDelay`` per key and bounds 5xx
retries itself — and its ``APIError`` (code, status, message, the error body's RetryInfo
and ErrorInfo details) and httpx/httpx2 timeouts are read into the errors below. The SDK
writes ``inlineData.mime_type`` and URL-safe base64, which the API's JSON parser takes
(proto3 JSON mapping).

What the API cannot express, and what is done instead
    * Sizes: the model draws a fixed set of aspect ratios (:data:`ASPECT_RATIOS`); the
      requested ``WxH`` is asked as the nearest one, and where the model offers image sizes
      (``imageSize``: 1K/2K/4K on Gemini 3 Pro Image) as the smallest that covers the
      requested long side. The answer is scaled to ``WxH`` (centre-cropped first if its
      shape differs); ``metadata`` says what was asked and returned.
    * No seed: recorded in the result, ``metadata["seed_reproducible"]`` is ``False``.
    * No negative prompt: appended to the prompt as ``Avoid: …``. No denoise for i2i.
    * One image per request: ``batch`` images are ``batch`` requests, at most
      ``max_concurrent`` (preset option, default 4) at a time.

References: a request carries at most :data:`MODEL_MAX_IMAGES` images for the models it
knows (init image included): 3 for ``gemini-2.5-flash-image`` ("Maximum images per prompt:
3", https://cloud.google.com/vertex-ai/generative-ai/docs/models/gemini/2-5-flash-image)
and 14 for ``gemini-3-pro-image-preview`` ("up to 14 reference images",
https://ai.google.dev/gemini-api/docs/image-generation); other models 3 unless the preset's
``max_images`` says otherwise. More is a :class:`FieldError` before any call.

Keys: the one given to the constructor, else the keys of a provider of kind ``gemini`` in
``$CASTBOOK_HOME/providers.toml`` (the preset's ``provider`` option names it; else the
first), plus ``GEMINI_API_KEY`` from the environment as a paid key. Image work takes paid
keys first unless the provider says ``prefer = "free"``
(:func:`castbook.providers.tier_order`). A 429 / ``RESOURCE_EXHAUSTED`` cools that key down
for the server's ``retryDelay`` and the request goes to the next key; when every key is
cooling, the request waits for the first to come back (at most ``max_retry_wait`` s,
``max_retries`` times) and then fails naming the masked keys. The file is re-read on every
generation, so a key added to it is used by a running server.

Errors (all :class:`~castbook.errors.BackendError` with the HTTP status where there is one):
400 "bad request: <the server's message>"; 401/403, and a 400 whose reason is
``API_KEY_INVALID``, name the refused key masked; 404 is a
:class:`~castbook.errors.ModelNotAvailableError`; 5xx are retried ``max_retries`` times with
exponential backoff; a timeout says how long was waited and is not resent; a prompt or
picture stopped by safety (``promptFeedback.blockReason``, ``finishReason`` ``SAFETY``,
``IMAGE_SAFETY``, ``PROHIBITED_CONTENT`` …) is "blocked by the provider's safety filter: …";
an answer with text but no image is "the model answered with text only: …". No key appears
in a message, a log line, ``repr``, the metadata or a task record.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import os
import queue
import re
import threading
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from PIL import Image, ImageOps

from castbook.errors import (
    BackendError,
    FieldError,
    GenerationCancelled,
    ImageError,
    MissingDependencyError,
    ModelNotAvailableError,
)
from castbook.generation.base import GenerationResult, PreparedRequest, Progress, ProgressCallback
from castbook.generation.hosted_keys import find_provider, provider_keys
from castbook.generation.request import Mode
from castbook.images import open_image
from castbook.providers import IMAGE, KeyRing, ProviderConfig, ProviderKey
from castbook.providers import tier_order as _tier_order
from castbook.settings import Settings

if TYPE_CHECKING:
    from castbook.generation.presets import Preset

__all__ = [
    "ASPECT_RATIOS",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "MODEL_MAX_IMAGES",
    "GeminiImagesBackend",
    "nearest_aspect_ratio",
]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
DEFAULT_MODEL = "gemini-2.5-flash-image"
BASE_URL_ENV = "CASTBOOK_GEMINI_BASE_URL"
API_KEY_ENV = "GEMINI_API_KEY"
# The aspect ratios imageConfig.aspectRatio takes (https://ai.google.dev/gemini-api/docs/
# image-generation, "Aspect ratios"), as width:height.
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
# Images one request may carry (init image and references together), per model; see the
# module docstring for the sources.
MODEL_MAX_IMAGES = {
    "gemini-2.5-flash-image": 3,
    "gemini-2.5-flash-image-preview": 3,
    "gemini-3-pro-image-preview": 14,
}
DEFAULT_MAX_IMAGES = 3
# imageConfig.imageSize values and their long side in pixels, for models that take one.
IMAGE_SIZES = {"1K": 1024, "2K": 2048, "4K": 4096}
MODEL_IMAGE_SIZES = {"gemini-3-pro-image-preview": ("1K", "2K", "4K")}
# finishReason values that mean a safety or policy filter stopped the picture.
SAFETY_REASONS = frozenset(
    {
        "SAFETY",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
    }
)
_RETRIED = frozenset({500, 502, 503, 504})
_MESSAGE_LIMIT = 500
_INLINE_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg"}


class GeminiImagesBackend:
    """A client for the Gemini API's image models (see the module docstring)."""

    name = "gemini"
    # max_references counts every image of a request, the i2i init image included (a
    # submission's check reads this: castbook.generation.prepare.request_room_problem).
    init_image_counts = True

    def __init__(
        self,
        preset: Preset,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        home: str | os.PathLike[str] | None = None,
        timeout: float = 120,
        max_retries: int = 2,
        backoff: float = 1.0,
        max_retry_wait: float = 60.0,
        cool_down: float = 60.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if timeout <= 0:
            raise FieldError("timeout", f"must be positive, got {timeout!r}")
        if max_retries < 0:
            raise FieldError("max_retries", f"must be 0 or more, got {max_retries!r}")
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        settings = Settings.from_env(self.environ)
        self.home = Path(home) if home is not None else settings.home
        options = dict(preset.options)
        self.preset = preset
        self.model = str(preset.model).strip()
        if not self.model or "/" in self.model or ":" in self.model:
            raise FieldError("model", f"must be a Gemini model name such as {DEFAULT_MODEL}")
        self.options = options
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_retry_wait = float(max_retry_wait)
        self.cool_down = float(cool_down)
        self.max_references = _whole_option(
            options, "max_images", MODEL_MAX_IMAGES.get(self.model, DEFAULT_MAX_IMAGES)
        )
        self.max_concurrent = _whole_option(options, "max_concurrent", 4)
        self.image_sizes = _image_sizes(options, self.model)
        modalities = options.get("response_modalities", ["TEXT", "IMAGE"])
        if not isinstance(modalities, list) or "IMAGE" not in modalities:
            raise FieldError("options.response_modalities", 'must be a list with "IMAGE" in it')
        self.response_modalities = [str(m) for m in modalities]
        self.provider_name = options.get("provider")

        self._given_key = api_key.strip() if api_key and api_key.strip() else None
        provider = self._provider()
        resolved = (
            base_url
            or settings.gemini_base_url
            or (provider.base_url if provider is not None else None)
            or options.get("base_url")
            or DEFAULT_BASE_URL
        )
        self.base_url = str(resolved).strip().rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise FieldError(
                "base_url",
                f"must be an http(s) URL such as {DEFAULT_BASE_URL} (set it with "
                f"{BASE_URL_ENV}), got {parts.scheme}://{parts.hostname or ''}",
            )
        self.host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        self.sdk_base_url, self.api_version = _split_version(self.base_url)
        self._ring = KeyRing()
        self._secrets: set[str] = set()
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GeminiImagesBackend(model={self.model!r}, host={self.host!r})"

    # ------------------------------------------------------------------ keys

    def _provider(self) -> ProviderConfig | None:
        """The gemini provider of providers.toml this backend uses (None: none there)."""
        if self._given_key is not None:
            return None
        return find_provider(
            self.home, self.environ, "gemini", self.provider_name, first_of_kind=True
        )

    def _keys(self) -> tuple[str, list[ProviderKey], str]:
        """The ring's provider name, the keys to use (file re-read), and the first tier."""
        if self._given_key is not None:
            keys = [ProviderKey("gemini", self._given_key, "paid", name="the given key")]
            self._remember(keys)
            return "gemini", keys, "paid"
        provider = self._provider()
        name, keys = provider_keys(provider, "gemini", self.environ, API_KEY_ENV)
        if not keys:
            raise BackendError(
                self.name,
                f"no API key: set {API_KEY_ENV}, or add a gemini provider and its key with "
                "`castbook providers add google --kind gemini` and `castbook providers key "
                f"add google` (kept in {self.home / 'providers.toml'}; a key comes from "
                "https://aistudio.google.com/apikey)",
            )
        self._remember(keys)
        return name, keys, _tier_order(provider, IMAGE)

    def _remember(self, keys: list[ProviderKey]) -> None:
        for key in keys:
            self._ring.add(key)
            self._secrets.add(key.key)
        with self._clients_lock:
            # A key gone from providers.toml leaves its client to the garbage collector
            # (not closed: a generation still running may be using it).
            wanted = {key.key for key in keys}
            self._clients = {k: c for k, c in self._clients.items() if k in wanted}

    def _client(self, sdk: _Sdk, key: ProviderKey) -> Any:
        """The SDK client for ``key`` (the SDK takes the key when a client is built), kept
        for the backend's life: building one loads the CA certificates twice (1.6-2.2 s on
        this 2-core machine at load average ~28). Its retries are off — castbook moves to
        the next key on a 429, honours retryDelay per key and bounds 5xx retries itself —
        and its timeout is ours. The sync client: each request of a batch has its own
        thread."""
        with self._clients_lock:
            client = self._clients.get(key.key)
            if client is None:
                types = sdk.types
                options = types.HttpOptions(
                    base_url=self.sdk_base_url,
                    api_version=self.api_version,
                    timeout=max(1, round(self.timeout * 1000)),  # milliseconds
                    retry_options=types.HttpRetryOptions(attempts=1),
                )
                client = sdk.genai.Client(api_key=key.key, vertexai=False, http_options=options)
                self._clients[key.key] = client
            return client

    # ------------------------------------------------------------------ generate

    def generate(self, request: PreparedRequest, progress: ProgressCallback) -> GenerationResult:
        mode = request.mode
        if mode is Mode.I2V:
            raise BackendError(self.name, "image-to-video is not supported by the Gemini API")
        images = self._images_in(request)
        provider, keys, first = self._keys()
        sdk = _Sdk()
        types = sdk.types

        wanted = (request.request.width, request.request.height)
        aspect = nearest_aspect_ratio(*wanted)
        size = self._size_to_ask(wanted)
        prompt = request.prompt
        if request.negative_prompt.strip():
            prompt = f"{prompt.rstrip()}\n\nAvoid: {request.negative_prompt.strip()}"
        parts = [types.Part(text=prompt)]
        parts += [types.Part(inline_data=types.Blob(mime_type=m, data=d)) for m, d in images]
        contents = [types.Content(role="user", parts=parts)]
        config = types.GenerateContentConfig(
            response_modalities=self.response_modalities,
            image_config=types.ImageConfig(aspect_ratio=aspect, image_size=size),
            # One request per image: no follow-up calls the SDK would make on its own.
            automatic_continuation=False,
        )

        batch = request.request.batch
        call = _Call(self, sdk, provider, keys, first, contents, config)
        answers = self._run_batch(call, batch, progress)

        outputs = [image for image, _ in answers]
        returned = [f"{image.width}x{image.height}" for image in outputs]
        resized = any(image.size != wanted for image in outputs)
        progress(Progress(batch, batch, "done"))

        metadata: dict[str, Any] = {
            "backend": self.name,
            "model": self.model,
            "base_url_host": self.host,
            "endpoint": f"models/{self.model}:generateContent",
            "size_requested": f"{wanted[0]}x{wanted[1]}",
            "aspect_ratio": aspect,
            "size_returned": returned,
            "resized": resized,
            "seed_reproducible": False,
            "images_sent": len(images),
            "calls": batch,
            "attempts": call.attempts,
            "key_tiers": call.tiers_used,
        }
        if size is not None:
            metadata["image_size"] = size
        texts = [text for _, text in answers if text]
        if texts:
            metadata["model_text"] = texts[0] if len(texts) == 1 else texts
        if request.negative_prompt.strip():
            metadata["negative_prompt"] = "appended to the prompt as 'Avoid: …'"
        if mode is Mode.I2I:
            metadata["ignored"] = ["denoise"]
        images_out = tuple(_fit(image, wanted) for image in outputs)
        return GenerationResult(images=images_out, seed=request.seed, metadata=metadata)

    def _images_in(self, request: PreparedRequest) -> list[tuple[str, bytes]]:
        """(mime type, bytes) of every image the request carries: the i2i init image
        first, then the references; refused before any call when the model takes fewer."""
        pictures: list[tuple[Image.Image, bytes | None]] = []
        if request.mode is Mode.I2I:
            if request.init_image is None:
                raise FieldError("init_image", "i2i needs an init image")
            pictures.append((request.init_image, None))
        stored = request.reference_data
        for index, image in enumerate(request.references):
            pictures.append((image, stored[index] if index < len(stored) else None))
        if len(pictures) > self.max_references:
            init = " (the init image included)" if request.mode is Mode.I2I else ""
            raise FieldError(
                "references",
                f"the gemini backend's model {self.model!r} takes at most "
                f"{self.max_references} images per request{init}; this request has "
                f"{len(pictures)}: use fewer characters or references, or a model that takes "
                "more (preset option max_images)",
            )
        return [_inline(image, data) for image, data in pictures]

    def _size_to_ask(self, wanted: tuple[int, int]) -> str | None:
        if not self.image_sizes:
            return None
        long_side = max(wanted)
        for size in self.image_sizes:  # ordered small to large
            if IMAGE_SIZES[size] >= long_side:
                return size
        return self.image_sizes[-1]

    def _run_batch(
        self, call: _Call, batch: int, progress: ProgressCallback
    ) -> list[tuple[Image.Image, str]]:
        """``batch`` requests, ``max_concurrent`` at a time. Progress (and so cancelling)
        happens on the caller's thread; the workers only post notes."""
        progress(Progress(0, batch, f"submitted {batch} request(s) to {self.host}"))
        answers: list[tuple[Image.Image, str] | None] = [None] * batch
        workers = min(batch, self.max_concurrent)
        done = 0
        pool = ThreadPoolExecutor(workers, thread_name_prefix="castbook-gemini")
        futures: dict[Future[tuple[Image.Image, str]], int] = {
            pool.submit(call.one_or_stop, index, batch): index for index in range(batch)
        }
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                for note in call.drain_notes():
                    progress(Progress(done, batch, note))
                for future in finished:
                    answers[futures[future]] = future.result()
                    done += 1
                    progress(Progress(done, batch, f"image {done} of {batch} received"))
        except BaseException as exc:
            # Cancelled, or one image failed: the rest stop before their next request or
            # retry, and the caller does not wait for requests already in flight.
            call.cancelled.set()
            pool.shutdown(wait=False, cancel_futures=True)
            if isinstance(exc, GenerationCancelled) and call.failure is not None:
                # An image stopped by another's failure may finish first: the failure
                # is the batch's error, not the stop it caused.
                raise call.failure from None
            raise
        pool.shutdown(wait=True)
        return [answer for answer in answers if answer is not None]

    # ------------------------------------------------------------------ errors

    def error(self, message: str, status: int | None = None) -> BackendError:
        return BackendError(self.name, self.redact(message), status=status)

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


class _Sdk:
    """``google-genai``, imported when a generation first needs it: it takes ~0.8 s and
    ~60 MB that ``import castbook``, ``castbook --help`` and a submission's reference check
    (which builds the backend) must not pay."""

    def __init__(self) -> None:
        try:
            from google import genai
            from google.genai import errors, types
        except ImportError:
            raise MissingDependencyError("the Gemini backend", "gemini", "google-genai") from None
        import pydantic

        self.genai = genai
        self.types = types
        self.api_error: type[Exception] = errors.APIError
        self.invalid: type[Exception] = pydantic.ValidationError
        self.timeouts, self.transport = _transport_errors()


def _transport_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """The timeout and transport exception classes the SDK may raise: it sends through
    ``httpx2`` (its fork of httpx) when installed, else ``httpx``; both are caught."""
    timeouts: list[type[Exception]] = []
    others: list[type[Exception]] = []
    for name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        others.append(module.HTTPError)
    return tuple(timeouts), tuple(others)


class _Call:
    """The requests of one generation: which keys they use, their notes and attempts."""

    def __init__(
        self,
        backend: GeminiImagesBackend,
        sdk: _Sdk,
        provider: str,
        keys: list[ProviderKey],
        first: str,
        contents: Any,
        config: Any,
    ) -> None:
        self.backend = backend
        self.sdk = sdk
        self.provider = provider
        self.keys = keys
        self.first = first
        self.contents = contents
        self.config = config
        self.cancelled = threading.Event()
        self.failure: BaseException | None = None  # the first image that failed
        self.notes: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.tiers_used: list[str] = []
        self._lock = threading.Lock()
        self.attempts = 0

    def drain_notes(self) -> list[str]:
        notes = []
        while True:
            try:
                notes.append(self.notes.get_nowait())
            except queue.Empty:
                return notes

    def _ready(self) -> list[ProviderKey]:
        ring = self.backend._ring
        ordered = ring.ordered(self.provider, first=self.first)  # type: ignore[arg-type]
        return [key for key in ordered if key in self.keys]

    def _wait_for_a_key(self) -> float:
        ring = self.backend._ring
        now = ring.clock()
        waits = [max((ring.cooling_until(key) or now) - now, 0.0) for key in self.keys]
        return min(waits)

    def one_or_stop(self, index: int, batch: int) -> tuple[Image.Image, str]:
        """:meth:`one`; a failure stops the images not yet sent at once, on the worker's
        own thread: the pool's freed worker must not send the next one before the
        caller's thread hears of the failure."""
        try:
            return self.one(index, batch)
        except GenerationCancelled:
            raise
        except BaseException as exc:
            with self._lock:
                self.failure = self.failure or exc
            self.cancelled.set()
            raise

    def one(self, index: int, batch: int) -> tuple[Image.Image, str]:
        """One image: the request sent with the first ready key, moving on after a 429."""
        backend = self.backend
        which = f"image {index + 1} of {batch}" if batch > 1 else "the image"
        limited: list[str] = []
        last_limit = ""
        waits = 0
        failures = 0
        while True:
            if self.cancelled.is_set():
                raise GenerationCancelled("cancelled")
            ready = self._ready()
            # Each key gets at most max_retries + 1 429s per image: a short retryDelay
            # on a slow link must not turn into an endless round of keys.
            spent = len(limited) >= len(self.keys) * (backend.max_retries + 1)
            if not ready or spent:
                wait_for = self._wait_for_a_key()
                if spent or waits >= backend.max_retries or wait_for > backend.max_retry_wait:
                    shown = ", ".join(f"{k.masked} ({k.tier})" for k in self.keys)
                    raise backend.error(
                        f"rate limited: every key for {self.provider} is out of quota "
                        f"or cooling down ({shown}; next one free in {wait_for:.0f} s); "
                        f"last answer: {last_limit or 'none'}; try again later or add a "
                        "key with `castbook providers key add NAME`",
                        429,
                    )
                waits += 1
                self.notes.put(f"every key is rate-limited; waiting {wait_for:.1f} s")
                if self.cancelled.wait(wait_for):
                    raise GenerationCancelled("cancelled")
                continue
            key = ready[0]
            with self._lock:
                self.attempts += 1
            try:
                response = self._send(key, which)
            except _Refused as refused:
                problem = refused.problem
            else:
                with self._lock:
                    self.tiers_used.append(key.tier)
                return _answer_of(backend, response, which)
            status = problem.code
            message = backend.redact(problem.message)
            if status == 429 or problem.status == "RESOURCE_EXHAUSTED":
                delay = problem.retry_delay
                backend._ring.cool_down(key, delay if delay is not None else backend.cool_down)
                limited.append(key.masked)
                last_limit = message
                self.notes.put(f"key {key.masked} is rate-limited; trying the next key")
                continue
            if status in (401, 403) or "API_KEY_INVALID" in problem.reasons:
                raise backend.error(
                    f"the server refused the key {key.masked} ({_key_source(key)}): "
                    f"{message}; check the key and that it may use {backend.model!r}",
                    status,
                )
            if status == 404:
                raise ModelNotAvailableError(
                    backend.redact(
                        f"{backend.name}: model {backend.model!r} is not available at "
                        f"{backend.host}: {message} (is {backend.base_url} the Gemini "
                        f"API? set {BASE_URL_ENV})"
                    )
                )
            if status in _RETRIED:
                failures += 1
                if failures > backend.max_retries:
                    tried = f"after {failures} attempts" if failures > 1 else "once"
                    raise backend.error(f"{message} ({tried})", status)
                self.notes.put(f"{backend.host} failed ({status}); retrying {which}")
                if self.cancelled.wait(backend.backoff * 2 ** (failures - 1)):
                    raise GenerationCancelled("cancelled")
                continue
            if status == 400:
                raise backend.error(f"bad request: {message}", status)
            raise backend.error(message, status)

    def _send(self, key: ProviderKey, which: str) -> Any:
        """``models.generate_content`` with ``key``: the SDK's answer, or :class:`_Refused`
        with the server's error; a timeout, an unreachable server or an answer that is not
        a generateContent response is a BackendError at once."""
        backend, sdk = self.backend, self.sdk
        try:
            return backend._client(sdk, key).models.generate_content(
                model=backend.model, contents=self.contents, config=self.config
            )
        except sdk.api_error as exc:
            raise _Refused(_google_error(exc)) from None
        except sdk.timeouts:
            # A generation that timed out may still be running (and billed): not resent.
            raise backend.error(
                f"timed out after {backend.timeout:g} s waiting for {backend.host} ({which})"
            ) from None
        except sdk.transport as exc:
            raise backend.error(f"cannot reach {backend.host}: {exc}") from None
        except json.JSONDecodeError:
            raise backend.error(f"the answer for {which} is not JSON", 200) from None
        except sdk.invalid as exc:
            raise backend.error(_invalid_answer(exc, which, backend.host), 200) from None


# ---------------------------------------------------------------------- answers


class _Problem:
    def __init__(
        self,
        code: int,
        message: str,
        status: str,
        reasons: set[str],
        retry_delay: float | None,
    ) -> None:
        self.code = code
        self.message = message
        self.status = status
        self.reasons = reasons
        self.retry_delay = retry_delay


class _Refused(Exception):
    """The server answered an error (the SDK's APIError, read into a :class:`_Problem`)."""

    def __init__(self, problem: _Problem) -> None:
        super().__init__(problem.code)
        self.problem = problem


def _google_error(exc: Any) -> _Problem:
    """The code, message, status, ErrorInfo reasons and RetryInfo delay of the SDK's
    ``APIError`` for a Google API error ``{"error": {"code", "message", "status",
    "details": [{"@type": …}]}}`` (``exc.details`` is that body; for a body that is not
    JSON the SDK gives its text as the message)."""
    code = int(exc.code) if isinstance(exc.code, int) else 0
    message = str(exc.message or "")
    status = str(exc.status or "")
    reasons: set[str] = set()
    delay = None
    body = exc.details
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict):
        for detail in error.get("details") or []:
            if not isinstance(detail, dict):
                continue
            kind = str(detail.get("@type", ""))
            if kind.endswith("RetryInfo"):
                delay = _duration(detail.get("retryDelay"))
            elif kind.endswith("ErrorInfo") and detail.get("reason"):
                reasons.add(str(detail["reason"]))
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if delay is None and headers is not None:
        delay = _duration(headers.get("retry-after"))
    message = " ".join(message.split())
    if not message:
        message = str(getattr(response, "reason_phrase", "") or "") or "no message"
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 1] + "…"
    return _Problem(code, message, status, reasons, delay)


def _invalid_answer(exc: Any, which: str, host: str) -> str:
    """What is wrong with a 200 answer the SDK could not read into its response model."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    first = errors[0] if errors else {}
    if first.get("type") == "bytes_invalid_encoding":
        return f"{which} from {host} is not valid base64"
    where = ".".join(str(part) for part in first.get("loc", ()))
    what = first.get("msg", exc)
    return f"the answer for {which} is not a generateContent response ({where}: {what})"


def _duration(raw: object) -> float | None:
    """``"37s"``, ``"1.5s"`` (protobuf Duration in JSON) or a plain number of seconds."""
    if raw is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*s?\s*", str(raw))
    return float(match.group(1)) if match else None


def _name(value: object) -> str:
    """An SDK enum (``FinishReason.IMAGE_SAFETY``) or a plain string as the API's name."""
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def _answer_of(backend: GeminiImagesBackend, response: Any, which: str) -> tuple[Image.Image, str]:
    """The picture of the SDK's ``GenerateContentResponse`` and the model's text beside it;
    a blocked or text-only answer is a BackendError saying so."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        detail = feedback.block_reason_message or ""
        raise backend.error(
            "blocked by the provider's safety filter: the prompt was refused "
            f"({_name(feedback.block_reason)}){': ' + str(detail) if detail else ''}"
        )
    candidates = response.candidates
    if not candidates:
        raise backend.error(f"the answer for {which} holds no candidates")
    candidate = candidates[0]
    finish = _name(candidate.finish_reason)
    parts = (candidate.content.parts if candidate.content is not None else None) or []
    texts: list[str] = []
    pictures: list[Any] = []
    for part in parts:
        if part.thought:
            continue  # thinking models may send draft pictures first: not the answer
        inline = part.inline_data
        if inline is not None and str(inline.mime_type or "").startswith("image/"):
            pictures.append(inline)
        elif isinstance(part.text, str) and part.text.strip():
            texts.append(part.text.strip())
    text = " ".join(texts)
    if pictures:
        return _decode(backend, pictures[-1].data or b"", which), text
    said = f": {_short(text)}" if text else ""
    if finish in SAFETY_REASONS:
        message = candidate.finish_message or ""
        why = f": {_short(str(message))}" if message else said
        raise backend.error(
            f"blocked by the provider's safety filter: {which} was stopped ({finish}){why}"
        )
    if text:
        raise backend.error(f"the model answered with text only: {_short(text)}")
    raise backend.error(f"the model returned no image for {which} (finishReason {finish or '-'})")


def _decode(backend: GeminiImagesBackend, data: bytes, which: str) -> Image.Image:
    """The picture of an inline part (the SDK has decoded its base64 already)."""
    source = f"{which} from {backend.host}"
    try:
        image = open_image(data, source=source)
    except ImageError as exc:
        raise backend.error(str(exc)) from None
    if image.mode not in ("RGB", "RGBA"):
        has_alpha = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    return image


# ---------------------------------------------------------------------- helpers


def nearest_aspect_ratio(width: int, height: int) -> str:
    """The aspect ratio of :data:`ASPECT_RATIOS` closest in shape to ``width x height``."""
    wanted = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = (int(part) for part in ratio.split(":"))
        return abs(math.log(w / h) - wanted)

    return min(ASPECT_RATIOS, key=distance)


def _inline(image: Image.Image, stored: bytes | None) -> tuple[str, bytes]:
    """The stored bytes when the API takes their format as they are, else a PNG."""
    if stored is not None:
        mime = _sniff(stored)
        if mime is not None:
            return mime, stored
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "image/png", buffer.getvalue()


def _sniff(data: bytes) -> str | None:
    for magic, mime in _INLINE_TYPES.items():
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    # Another shape: crop the centre to the requested shape first, so faces keep theirs.
    return ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _split_version(base_url: str) -> tuple[str, str]:
    """``https://host/v1beta`` as the SDK takes it: the base URL and the API version (the
    last path segment when it is one, else "": the base URL is used as it is)."""
    head, _, last = base_url.rpartition("/")
    if re.fullmatch(r"v\d+(?:alpha|beta)?\d*", last) and "://" in head + "/":
        return head + "/", last
    return base_url + "/", ""


def _key_source(key: ProviderKey) -> str:
    if key.name == API_KEY_ENV:
        return f"from {API_KEY_ENV}"
    if key.name == "the given key":
        return "the key given to the backend"
    label = f" {key.name!r}" if key.name else ""
    return f"{key.tier} key{label} of provider {key.provider!r} in providers.toml"


def _whole_option(options: Mapping[str, Any], name: str, default: int) -> int:
    raw = options.get(name, default)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise FieldError(f"options.{name}", f"must be a whole number of at least 1, got {raw!r}")
    return raw


def _image_sizes(options: Mapping[str, Any], model: str) -> tuple[str, ...]:
    raw = options.get("image_sizes", MODEL_IMAGE_SIZES.get(model, ()))
    if isinstance(raw, str) or not isinstance(raw, list | tuple):
        raise FieldError("options.image_sizes", 'must be a list such as ["1K", "2K", "4K"]')
    unknown = [size for size in raw if size not in IMAGE_SIZES]
    if unknown:
        raise FieldError(
            "options.image_sizes", f"{unknown[0]!r} is not one of {', '.join(IMAGE_SIZES)}"
        )
    return tuple(sorted(set(raw), key=IMAGE_SIZES.__getitem__))
