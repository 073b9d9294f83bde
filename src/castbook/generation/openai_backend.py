"""The OpenAI-compatible images backend: ``/images/generations`` and ``/images/edits``.

Works with OpenAI itself and with servers that speak the same API (LocalAI, vLLM-omni,
proxies …). The base URL and the API key come from the constructor or from the environment
variables the preset names (``base_url_env``, default ``CASTBOOK_OPENAI_BASE_URL`` falling
back to ``https://api.openai.com/v1``; ``api_key_env``, default ``OPENAI_API_KEY``).

Routing
    t2i without references → ``POST {base}/images/generations`` (JSON).
    t2i with references, and every i2i → ``POST {base}/images/edits`` (multipart), the
    images as PNG files in ``image[]`` parts, the i2i init image first.

What the API cannot express, and what is done instead
    * No negative prompt: it is appended to the prompt as ``Avoid: …``.
    * No seed: generations are not reproducible. The requested seed is still recorded in
      the result (``metadata["seed_reproducible"]`` is ``False``).
    * No i2i denoise: ignored (recorded in ``metadata["ignored"]``).
    * Sizes: the requested ``WxH`` is sent as-is, unless the preset lists the sizes the
      server accepts (``options["sizes"] = ["1024x1024", "1536x1024", "1024x1536"]`` for
      gpt-image-1); then the one closest in shape is asked for. An image that comes back in
      another size is scaled (LANCZOS) to the requested size, centre-cropped first when its
      aspect ratio differs so nothing is stretched; ``metadata["resized"]`` says so.

Preset options understood (all optional)
    ``base_url_env``, ``api_key_env``, ``base_url`` (used when the env var is unset),
    ``sizes`` (see above), ``response_format`` (sent only when set: gpt-image-1 rejects
    it, dall-e-2/3 answer with URLs unless it is ``"b64_json"``), ``image_field`` (the
    multipart name of the images, default ``image[]``; dall-e-2 wants ``image``),
    ``max_n`` (the most images one call may ask for; dall-e-3 takes 1; larger batches are
    split into several calls) and ``extra_body`` (more fields sent with every call, e.g.
    ``{"quality": "high", "input_fidelity": "high"}``).

Errors all become :class:`~castbook.errors.BackendError` carrying the HTTP status and the
server's own message: 401/403 name the variable the key came from; 429 and 5xx are retried
``max_retries`` times with exponential backoff honouring ``Retry-After`` (a 429 for an
exhausted quota is not retried); 400 and other 4xx are not retried; a timeout says how long
was waited. The API key never appears in a message, a log line or ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import io
import math
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from PIL import Image, ImageOps

from castbook.errors import (
    BackendError,
    FieldError,
    ImageError,
    MissingDependencyError,
    ModelNotAvailableError,
)
from castbook.generation.base import (
    GenerationResult,
    PreparedRequest,
    Progress,
    ProgressCallback,
)
from castbook.generation.request import Mode
from castbook.images import open_image

try:
    import httpx
except ImportError:  # pragma: no cover - exercised only without the extra
    httpx = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from castbook.generation.presets import Preset

__all__ = ["DEFAULT_BASE_URL", "OpenAIImagesBackend"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_BASE_URL_ENV = "CASTBOOK_OPENAI_BASE_URL"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
MAX_IMAGES = 16  # images one edits call may carry (gpt-image-1's limit)
_RETRIED = frozenset({429, 500, 502, 503, 504})
_NOT_RETRIED_429 = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
_MESSAGE_LIMIT = 500


class OpenAIImagesBackend:
    """A client for an OpenAI-compatible images API (see the module docstring)."""

    name = "openai"
    max_references = MAX_IMAGES

    def __init__(
        self,
        preset: Preset,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120,
        max_retries: int = 2,
        backoff: float = 1.0,
        max_retry_wait: float = 60.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if httpx is None:  # pragma: no cover - exercised only without the extra
            raise MissingDependencyError("the OpenAI images backend", "openai", "httpx")
        if timeout <= 0:
            raise FieldError("timeout", f"must be positive, got {timeout!r}")
        if max_retries < 0:
            raise FieldError("max_retries", f"must be 0 or more, got {max_retries!r}")
        if environ is None:
            environ = os.environ
        options = dict(preset.options)
        self.preset = preset
        self.model = preset.model
        self.options = options
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_retry_wait = float(max_retry_wait)

        base_url_env = str(options.get("base_url_env") or DEFAULT_BASE_URL_ENV)
        self.base_url_env = base_url_env
        resolved = base_url or environ.get(base_url_env) or options.get("base_url")
        self.base_url = str(resolved or DEFAULT_BASE_URL).strip().rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FieldError(
                "base_url",
                f"must be an http(s) URL such as {DEFAULT_BASE_URL} "
                f"(set it with {base_url_env}), got {self._host_of(self.base_url)!r}",
            )
        self.host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"

        self.api_key_env = str(options.get("api_key_env") or DEFAULT_API_KEY_ENV)
        if api_key is not None:
            self._key_source = "the API key given to the backend"
        else:
            api_key = environ.get(self.api_key_env)
            self._key_source = f"the API key in {self.api_key_env}"
        if not api_key or not api_key.strip():
            raise BackendError(
                self.name,
                f"no API key: set {self.api_key_env} to your key for {self.host} "
                "(any non-empty value for a server that needs none)",
            )
        self._api_key = api_key.strip()

        self.sizes = _parse_sizes(options.get("sizes"))
        self.image_field = str(options.get("image_field") or "image[]")
        max_n = options.get("max_n")
        self.max_n = int(max_n) if max_n else None
        extra = options.get("extra_body") or {}
        if not isinstance(extra, Mapping):
            raise FieldError("options.extra_body", "must be a table of API fields")
        self.extra_body = dict(extra)

    def __repr__(self) -> str:
        return f"OpenAIImagesBackend(model={self.model!r}, host={self.host!r})"

    # ------------------------------------------------------------------ generate

    def generate(self, request: PreparedRequest, progress: ProgressCallback) -> GenerationResult:
        mode = request.mode
        if mode is Mode.I2V:
            raise BackendError(self.name, "image-to-video is not supported by the images API")
        images_in: list[Image.Image] = []
        if mode is Mode.I2I:
            if request.init_image is None:
                raise FieldError("init_image", "i2i needs an init image")
            images_in.append(request.init_image)
        images_in.extend(request.references)
        if len(images_in) > MAX_IMAGES:
            raise FieldError(
                "references",
                f"the OpenAI edits endpoint takes at most {MAX_IMAGES} images "
                f"(init image included), got {len(images_in)}",
            )

        wanted = (request.request.width, request.request.height)
        asked = self._size_to_ask(wanted)
        prompt = request.prompt
        if request.negative_prompt.strip():
            prompt = f"{prompt.rstrip()}\n\nAvoid: {request.negative_prompt.strip()}"
        endpoint = "edits" if images_in else "generations"
        files = [_png(image, i) for i, image in enumerate(images_in)]

        batch = request.request.batch
        outputs: list[Image.Image] = []
        returned: list[str] = []
        revised: list[str] = []
        usage: list[Any] = []
        attempts = 0
        calls = 0
        progress(Progress(0, 1, f"submitted to {self.host}"))
        with httpx.Client(timeout=self.timeout, headers={"User-Agent": "castbook"}) as client:
            while len(outputs) < batch:
                n = batch - len(outputs)
                if self.max_n is not None:
                    n = min(n, self.max_n)
                fields: dict[str, Any] = {
                    **self.extra_body,
                    "model": self.model,
                    "prompt": prompt,
                    "n": n,
                    "size": f"{asked[0]}x{asked[1]}",
                }
                if self.options.get("response_format"):
                    fields["response_format"] = str(self.options["response_format"])
                body, tries = self._post(client, endpoint, fields, files, progress, calls > 0)
                attempts += tries
                calls += 1
                data = body.get("data")
                if not isinstance(data, list) or not data:
                    raise BackendError(self.name, "the answer holds no images (no 'data' list)")
                if body.get("usage") is not None:
                    usage.append(body["usage"])
                for item in data[:n]:
                    image = self._image_from(client, item, len(outputs), progress)
                    returned.append(f"{image.width}x{image.height}")
                    if isinstance(item, dict) and item.get("revised_prompt"):
                        revised.append(str(item["revised_prompt"]))
                    outputs.append(image)

        resized = any(image.size != wanted for image in outputs)
        outputs = [_fit(image, wanted) for image in outputs]
        progress(Progress(1, 1, "done"))

        metadata: dict[str, Any] = {
            "backend": self.name,
            "model": self.model,
            "base_url_host": self.host,
            "endpoint": f"images/{endpoint}",
            "size_requested": f"{wanted[0]}x{wanted[1]}",
            "size_asked": f"{asked[0]}x{asked[1]}",
            "size_returned": returned,
            "resized": resized,
            "seed_reproducible": False,
            "images_sent": len(files),
            "calls": calls,
            "attempts": attempts,
        }
        if request.negative_prompt.strip():
            metadata["negative_prompt"] = "appended to the prompt as 'Avoid: …'"
        if mode is Mode.I2I:
            metadata["ignored"] = ["denoise"]
        if revised:
            metadata["revised_prompt"] = revised[0] if len(revised) == 1 else revised
        if usage:
            metadata["usage"] = usage[0] if len(usage) == 1 else usage
        return GenerationResult(images=tuple(outputs), seed=request.seed, metadata=metadata)

    # ------------------------------------------------------------------ HTTP

    def _post(
        self,
        client: httpx.Client,
        endpoint: str,
        fields: dict[str, Any],
        files: list[tuple[str, bytes]],
        progress: ProgressCallback,
        announce: bool,
    ) -> tuple[dict[str, Any], int]:
        url = f"{self.base_url}/images/{endpoint}"
        headers = {"Authorization": f"Bearer {self._api_key}"}
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1 or announce:
                # Checking for cancellation before every request and every retry.
                progress(Progress(0, 1, self._retry_note(attempt)))
            try:
                if files:
                    response = client.post(
                        url,
                        headers=headers,
                        data={k: _form_value(v) for k, v in fields.items()},
                        files=[
                            (self.image_field, (name, data, "image/png")) for name, data in files
                        ],
                    )
                else:
                    response = client.post(url, headers=headers, json=fields)
            except httpx.TimeoutException:
                raise self._error(
                    f"timed out after {self.timeout:g} s waiting for {self._host_of(url)}"
                ) from None
            except httpx.HTTPError as exc:
                raise self._error(f"cannot reach {self.host}: {exc}") from None

            status = response.status_code
            if status < 300:
                try:
                    body = response.json()
                except ValueError:
                    raise self._error("the answer is not JSON", status) from None
                if not isinstance(body, dict):
                    raise self._error("the answer is not a JSON object", status)
                return body, attempt

            message, code = _error_of(response)
            if status in (401, 403):
                raise self._error(
                    f"the server refused {self._key_source} ({message}); check the key "
                    f"and that it may use {self.model!r}",
                    status,
                )
            if code == "model_not_found":
                raise ModelNotAvailableError(
                    self._redact(
                        f"{self.name}: model {self.model!r} is not available at "
                        f"{self.host}: {message}"
                    )
                )
            if status == 404:
                raise self._error(
                    f"{message}; is {self.base_url} an OpenAI-compatible API? "
                    f"(set {self.base_url_env})",
                    status,
                )
            retriable = status in _RETRIED and not (status == 429 and code in _NOT_RETRIED_429)
            if not retriable:
                raise self._error(message, status)
            tried = f"after {attempt} attempt{'s' if attempt > 1 else ''}"
            asked = _retry_after(response.headers)
            if asked is not None and asked > self.max_retry_wait:
                tried = f"the server asks to wait {asked:g} s, over {self.max_retry_wait:g} s"
            elif attempt <= self.max_retries:
                wait = asked if asked is not None else self.backoff * 2 ** (attempt - 1)
                time.sleep(max(wait, 0.0))
                continue
            if status == 429:
                raise self._error(f"rate limited ({tried}): {message}", status)
            raise self._error(f"{message} ({tried})", status)

    def _image_from(
        self,
        client: httpx.Client,
        item: object,
        index: int,
        progress: ProgressCallback,
    ) -> Image.Image:
        source = f"image {index + 1} from {self.host}"
        if not isinstance(item, dict):
            raise self._error(f"{source} is not an object in the answer")
        if item.get("b64_json"):
            try:
                data = base64.b64decode(str(item["b64_json"]), validate=True)
            except (binascii.Error, ValueError):
                raise self._error(f"{source} is not valid base64") from None
        elif item.get("url"):
            data = self._download(client, str(item["url"]), source, progress)
        else:
            raise self._error(f"{source} has neither 'b64_json' nor 'url'")
        try:
            image = open_image(data, source=source)
        except ImageError as exc:
            raise self._error(str(exc)) from None
        if image.mode not in ("RGB", "RGBA"):
            has_alpha = "A" in image.getbands() or "transparency" in image.info
            image = image.convert("RGBA" if has_alpha else "RGB")
        return image

    def _download(
        self, client: httpx.Client, url: str, source: str, progress: ProgressCallback
    ) -> bytes:
        progress(Progress(0, 1, f"downloading {source}"))
        # The key goes only back to the API's own origin, never to a storage host.
        same_origin = urlsplit(url)[:2] == urlsplit(self.base_url)[:2]
        headers = {"Authorization": f"Bearer {self._api_key}"} if same_origin else {}
        shown = self._host_of(url)
        try:
            response = client.get(url, headers=headers, follow_redirects=True)
        except httpx.TimeoutException:
            raise self._error(
                f"timed out after {self.timeout:g} s downloading {source} from {shown}"
            ) from None
        except httpx.HTTPError as exc:
            raise self._error(f"cannot download {source} from {shown}: {exc}") from None
        if response.status_code >= 300:
            message, _ = _error_of(response)
            raise self._error(
                f"downloading {source} from {shown} failed: {message}", response.status_code
            )
        return response.content

    def _retry_note(self, attempt: int) -> str:
        if attempt == 1:
            return f"submitted to {self.host}"
        return f"retrying (attempt {attempt} of {self.max_retries + 1})"

    def _size_to_ask(self, wanted: tuple[int, int]) -> tuple[int, int]:
        if not self.sizes or wanted in self.sizes:
            return wanted
        ratio = math.log(wanted[0] / wanted[1])
        area = wanted[0] * wanted[1]
        return min(
            self.sizes,
            key=lambda s: (abs(math.log(s[0] / s[1]) - ratio), abs(s[0] * s[1] - area)),
        )

    def _error(self, message: str, status: int | None = None) -> BackendError:
        return BackendError(self.name, self._redact(message), status=status)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    @staticmethod
    def _host_of(url: str) -> str:
        # Scheme, host and path only: never a query string (signed URLs) or credentials.
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else url[:80]


# ---------------------------------------------------------------------- helpers


def _png(image: Image.Image, index: int) -> tuple[str, bytes]:
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f"image-{index + 1}.png", buffer.getvalue()


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    # Same shape: a plain resize. Another shape: crop the centre to the requested shape
    # first (ImageOps.fit), so faces are not stretched.
    return ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)


def _parse_sizes(raw: object) -> tuple[tuple[int, int], ...]:
    if raw is None:
        return ()
    if isinstance(raw, str) or not isinstance(raw, list | tuple):
        raise FieldError("options.sizes", 'must be a list such as ["1024x1024", "1536x1024"]')
    sizes = []
    for entry in raw:
        try:
            w, h = (int(part) for part in str(entry).lower().split("x"))
        except ValueError:
            raise FieldError("options.sizes", f"{entry!r} is not WIDTHxHEIGHT") from None
        if w <= 0 or h <= 0:
            raise FieldError("options.sizes", f"{entry!r} must be positive")
        sizes.append((w, h))
    return tuple(sizes)


def _error_of(response: httpx.Response) -> tuple[str, str | None]:
    """The server's message and error code, from ``{"error": {"message", "code"}}``."""
    code = None
    try:
        body = response.json()
    except ValueError:
        body = None
    message = ""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            code = error.get("code") or error.get("type")
        elif isinstance(error, str):
            message = error
        elif isinstance(body.get("message"), str):
            message = body["message"]
        elif isinstance(body.get("detail"), str):
            message = body["detail"]
    if not message:
        text = response.text.strip() if response.content else ""
        message = " ".join(text.split()) or response.reason_phrase or "no message"
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 1] + "…"
    return message, str(code) if code is not None else None


def _retry_after(headers: httpx.Headers) -> float | None:
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)
