"""The OpenAI-compatible images backend: ``/images/generations`` and ``/images/edits``.

Works with OpenAI itself and with servers that speak the same API (LocalAI, vLLM-omni,
proxies …). The base URL comes from the constructor, else the environment variable the
preset names (``base_url_env``, default ``CASTBOOK_OPENAI_BASE_URL``), else the base URL of
the provider the preset's ``provider`` option names, else ``options["base_url"]``, else
``https://api.openai.com/v1``.

Keys: the one given to the constructor, else the keys of an ``openai``-kind provider in
``$CASTBOOK_HOME/providers.toml`` (the one the preset's ``provider`` option names — a name
not there is a :class:`~castbook.errors.FieldError` — else the first whose ``base_url`` is
this backend's), plus the key in the variable ``api_key_env`` names (default
``OPENAI_API_KEY``) as a paid key. Image work takes paid keys first unless the provider says
``prefer = "free"`` (:func:`castbook.providers.tier_order`). A 429 rate limit cools that key
down (``Retry-After`` when the server gives one, else the backoff) and the call goes at once
to the next ready key; when every key is cooling it waits for the first (at most
``max_retry_wait`` s, ``max_retries`` times). ``insufficient_quota`` is per key: it cools the
key ``cool_down`` s and moves on when another key is ready, and fails at once otherwise (a
lone key is not cooled, so a topped-up account works on the next call). The file is re-read
on every generation. With only ``OPENAI_API_KEY`` set this is the single-key behaviour of
before: a 429 is retried on that key after ``Retry-After`` or the backoff.

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
server's own message: 401/403 name the refused key masked and where it came from (the
variable, or the provider and tier in providers.toml); 429 as above; 5xx are retried
``max_retries`` times with exponential backoff honouring ``Retry-After``; 400 and other 4xx
are not retried; a timeout says how long was waited. No key appears in a message, a log
line, ``repr`` or the metadata (which records the tiers used, ``key_tiers``).
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
from pathlib import Path
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
from castbook.generation.hosted_keys import find_provider, provider_keys
from castbook.generation.request import Mode
from castbook.images import open_image
from castbook.providers import (
    IMAGE,
    KeyRing,
    ProviderConfig,
    ProviderKey,
    Tier,
    providers_path,
    tier_order,
)
from castbook.settings import Settings

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
_GIVEN = "the given key"


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
        cool_down: float = 60.0,
        home: str | os.PathLike[str] | None = None,
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
        self.environ: Mapping[str, str] = environ
        options = dict(preset.options)
        self.preset = preset
        self.model = preset.model
        self.options = options
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_retry_wait = float(max_retry_wait)
        self.cool_down = float(cool_down)
        self.home = Path(home) if home is not None else Settings.from_env(environ).home
        self.provider_name = options.get("provider")
        self.api_key_env = str(options.get("api_key_env") or DEFAULT_API_KEY_ENV)
        if api_key is not None and not api_key.strip():
            raise BackendError(self.name, self._no_key_message("the given key is empty"))
        self._given_key = api_key.strip() if api_key is not None else None

        base_url_env = str(options.get("base_url_env") or DEFAULT_BASE_URL_ENV)
        self.base_url_env = base_url_env
        named = self._provider(None) if self.provider_name is not None else None
        resolved = (
            base_url
            or environ.get(base_url_env)
            or (named.base_url if named is not None else None)
            or options.get("base_url")
        )
        self.base_url = str(resolved or DEFAULT_BASE_URL).strip().rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FieldError(
                "base_url",
                f"must be an http(s) URL such as {DEFAULT_BASE_URL} "
                f"(set it with {base_url_env}), got {self._host_of(self.base_url)!r}",
            )
        self.host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        self._ring = KeyRing()
        self._secrets: set[str] = set()
        self._keys()  # no key at all is a clear error now, not at the first generation

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

    # ------------------------------------------------------------------ keys

    def _provider(self, base_url: str | None) -> ProviderConfig | None:
        """The ``openai`` provider of providers.toml this backend takes keys from: the one
        the preset's ``provider`` option names, else the first at ``base_url`` (None: none)."""
        if self._given_key is not None:
            return None
        return find_provider(
            self.home, self.environ, "openai", self.provider_name, base_url=base_url
        )

    def _keys(self) -> tuple[str, list[ProviderKey], Tier]:
        """The ring's provider name, the keys to use (providers.toml re-read each time, so a
        key added to it is used by a running server), and the tier image work tries first."""
        if self._given_key is not None:
            keys = [ProviderKey(self.name, self._given_key, "paid", name=_GIVEN)]
            self._remember(keys)
            return self.name, keys, "paid"
        provider = self._provider(self.base_url)
        name, keys = provider_keys(provider, self.name, self.environ, self.api_key_env)
        if not keys:
            where = f"provider {provider.name!r} has no key" if provider else "no key is set"
            raise BackendError(self.name, self._no_key_message(where))
        self._remember(keys)
        return name, keys, tier_order(provider, IMAGE)

    def _remember(self, keys: list[ProviderKey]) -> None:
        for key in keys:
            self._ring.add(key)
            self._secrets.add(key.key)

    def _no_key_message(self, why: str) -> str:
        host = getattr(self, "host", None) or "the images API"
        return (
            f"no API key ({why}): set {self.api_key_env} to your key for {host} "
            "(any non-empty value for a server that needs none), or add one with "
            "`castbook providers key add NAME` (kept in "
            f"{providers_path(self.home)})"
        )

    def _key_source(self, key: ProviderKey) -> str:
        if key.name == _GIVEN:
            return "the API key given to the backend"
        if key.name == self.api_key_env:
            return f"the API key in {self.api_key_env}"
        label = f" {key.name!r}" if key.name else ""
        return (
            f"the {key.tier} key{label} of provider {key.provider!r} in {providers_path(self.home)}"
        )

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

        keys = _Keys(*self._keys())
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
                body, tries, key = self._post(
                    client, endpoint, fields, files, progress, calls > 0, keys
                )
                attempts += tries
                calls += 1
                data = body.get("data")
                if not isinstance(data, list) or not data:
                    raise BackendError(self.name, "the answer holds no images (no 'data' list)")
                if body.get("usage") is not None:
                    usage.append(body["usage"])
                for item in data[:n]:
                    image = self._image_from(client, item, len(outputs), progress, key)
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
            "key_tiers": keys.tiers_used,
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
        keys: _Keys,
    ) -> tuple[dict[str, Any], int, ProviderKey]:
        """One images call: sent with the first ready key; a 429 cools that key down and the
        call goes at once to the next ready key, or waits for the first to come back."""
        url = f"{self.base_url}/images/{endpoint}"
        attempt = 0
        waits = 0  # sleeps: for a cooling key, or backing off after a 5xx
        limited = 0  # 429s this call (each key gets at most max_retries + 1)
        last_limit = ""
        asked: float | None = None
        previous: ProviderKey | None = None
        while True:
            ready = self._ready(keys)
            if limited >= len(keys.keys) * (self.max_retries + 1):
                raise self._rate_limited(f"after {attempt} attempts", last_limit, keys)
            if not ready:
                wait_for = self._wait_for_a_key(keys)
                if wait_for > self.max_retry_wait:
                    seconds = math.ceil(wait_for)
                    tried = (
                        f"the server asks to wait {seconds:g} s, over {self.max_retry_wait:g} s"
                        if asked is not None
                        else f"every key cools down {seconds:g} s more, over "
                        f"{self.max_retry_wait:g} s"
                    )
                    raise self._rate_limited(tried, last_limit, keys)
                if waits >= self.max_retries:
                    tried = f"after {attempt} attempt{'s' if attempt != 1 else ''}"
                    raise self._rate_limited(tried, last_limit, keys)
                waits += 1
                time.sleep(wait_for)
                continue
            key = ready[0]
            attempt += 1
            if attempt > 1 or announce:
                # Checking for cancellation before every request and every retry.
                note = self._retry_note(attempt)
                if previous is not None and key != previous:
                    note += f" with the next key {key.masked} ({key.tier})"
                progress(Progress(0, 1, note))
            previous = key
            response = self._send(client, url, key, fields, files)
            status = response.status_code
            if status < 300:
                try:
                    body = response.json()
                except ValueError:
                    raise self._error("the answer is not JSON", status) from None
                if not isinstance(body, dict):
                    raise self._error("the answer is not a JSON object", status)
                keys.tiers_used.append(key.tier)
                return body, attempt, key

            message, code = _error_of(response)
            if status in (401, 403):
                raise self._error(
                    f"the server refused the key {key.masked} ({self._key_source(key)}): "
                    f"{message}; check the key and that it may use {self.model!r}",
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
            if status == 429 and code in _NOT_RETRIED_429:
                # Out of quota is per key (per account): another key may still have some.
                # A lone key is not cooled, so a topped-up account works on the next call.
                others = [k for k in ready if k != key]
                if not others:
                    raise self._error(message, status)
                self._ring.cool_down(key, self.cool_down)
                last_limit = message
                continue
            if status == 429:
                asked = _retry_after(response.headers)
                own = sum(1 for k in keys.limited if k == key)
                delay = asked if asked is not None else self.backoff * 2**own
                self._ring.cool_down(key, delay)
                keys.limited.append(key)
                limited += 1
                last_limit = message
                continue
            if status not in _RETRIED:
                raise self._error(message, status)
            tried = f"after {attempt} attempt{'s' if attempt > 1 else ''}"
            retry_after = _retry_after(response.headers)
            if retry_after is not None and retry_after > self.max_retry_wait:
                tried = f"the server asks to wait {retry_after:g} s, over {self.max_retry_wait:g} s"
            elif waits < self.max_retries:
                waits += 1
                wait = retry_after if retry_after is not None else self.backoff * 2 ** (waits - 1)
                time.sleep(max(wait, 0.0))
                continue
            raise self._error(f"{message} ({tried})", status)

    def _send(
        self,
        client: httpx.Client,
        url: str,
        key: ProviderKey,
        fields: dict[str, Any],
        files: list[tuple[str, bytes]],
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key.key}"}
        try:
            if files:
                return client.post(
                    url,
                    headers=headers,
                    data={k: _form_value(v) for k, v in fields.items()},
                    files=[(self.image_field, (name, data, "image/png")) for name, data in files],
                )
            return client.post(url, headers=headers, json=fields)
        except httpx.TimeoutException:
            raise self._error(
                f"timed out after {self.timeout:g} s waiting for {self._host_of(url)}"
            ) from None
        except httpx.HTTPError as exc:
            raise self._error(f"cannot reach {self.host}: {exc}") from None

    def _ready(self, keys: _Keys) -> list[ProviderKey]:
        ordered = self._ring.ordered(keys.provider, first=keys.first)
        return [key for key in ordered if key in keys.keys]

    def _wait_for_a_key(self, keys: _Keys) -> float:
        now = self._ring.clock()
        return min(max((self._ring.cooling_until(k) or now) - now, 0.0) for k in keys.keys)

    def _rate_limited(self, tried: str, last: str, keys: _Keys) -> BackendError:
        said = last or "no request sent: every key is still cooling down"
        message = f"rate limited ({tried}): {said}"
        if len(keys.keys) > 1:
            shown = ", ".join(f"{k.masked} ({k.tier})" for k in keys.keys)
            message += (
                f"; every key of {keys.provider} is rate-limited or out of quota ({shown}); "
                "try again later or add a key with `castbook providers key add NAME`"
            )
        return self._error(message, 429)

    def _image_from(
        self,
        client: httpx.Client,
        item: object,
        index: int,
        progress: ProgressCallback,
        key: ProviderKey,
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
            data = self._download(client, str(item["url"]), source, progress, key)
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
        self,
        client: httpx.Client,
        url: str,
        source: str,
        progress: ProgressCallback,
        key: ProviderKey,
    ) -> bytes:
        progress(Progress(0, 1, f"downloading {source}"))
        # The key goes only back to the API's own origin, never to a storage host.
        same_origin = urlsplit(url)[:2] == urlsplit(self.base_url)[:2]
        headers = {"Authorization": f"Bearer {key.key}"} if same_origin else {}
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
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    @staticmethod
    def _host_of(url: str) -> str:
        # Scheme, host and path only: never a query string (signed URLs) or credentials.
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else url[:80]


class _Keys:
    """The keys one generation may use, the tier it tries first, and what it used."""

    def __init__(self, provider: str, keys: list[ProviderKey], first: Tier) -> None:
        self.provider = provider
        self.keys = keys
        self.first = first
        self.tiers_used: list[str] = []
        self.limited: list[ProviderKey] = []


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
