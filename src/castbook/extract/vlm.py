"""The Character Extractor through an OpenAI-compatible vision-language model.

``POST {base_url}/chat/completions`` with the image as a data URL, ``temperature: 0`` and
a strict ``json_schema`` response format (:data:`EXTRACTION_JSON_SCHEMA`). Works with
OpenAI, Ollama, vLLM, LM Studio, OpenRouter … anything that takes ``image_url`` parts.

The answer is validated against the schema. If it is not JSON or does not match, the
model is asked once to correct it (its answer and the validation error are sent back);
a second bad answer is a :class:`BackendError`.

Keys come from a :class:`KeyRing`: free keys first, then paid. A 429, or an error whose
code/type says quota or rate limit, cools the key down and the same request goes to the
next key; when none is left the error names the provider and the masked keys. A 401/403
is reported at once (a refused key is a configuration problem, not a reason to spend a
paid key). A provider with no keys at all (a local Ollama/vLLM) is called without an
``Authorization`` header. Keys never appear in a message: every error text is redacted.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from castbook.errors import BackendError, FieldError, UnsupportedImageError
from castbook.extract.schema import EXTRACTION_JSON_SCHEMA, UNKNOWN, Extraction
from castbook.library.models import PHYSICAL_TRAITS
from castbook.providers import KeyRing, ProviderConfig, ProviderKey
from castbook.settings import Settings

__all__ = ["SYSTEM_PROMPT", "USER_PROMPT", "extract_with_vlm", "unfilled_fields"]

BACKEND = "extractor"
ENV_TIMEOUT = "CASTBOOK_EXTRACT_TIMEOUT"
_QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "rate_limit_exceeded",
        "rate_limit_error",
        "billing_hard_limit_reached",
        "quota_exceeded",
        "resource_exhausted",
    }
)
_MESSAGE_LIMIT = 400
_ANSWER_LIMIT = 20_000

SYSTEM_PROMPT = """\
You describe a character from an image for a character library.
Describe ONLY the character's physical appearance and what they wear: hair, eyes, face,
body, skin, clothing, accessories and distinctive features (scars, tattoos, markings).
Do not describe the art style, the medium, the lighting, the pose or the background.
Use "unknown" for anything that is not clearly visible (for example eye colour when the
eyes are hidden) and an empty list where there is nothing to list. Never invent or guess
details that the image does not show.
"description" is one or two sentences about who the character appears to be.
"style_prompt" is 1 to 3 sentences of the character's key visual features, written to be
put into an image-generation prompt to draw the same character again.
Answer with a single JSON object that follows the given schema, and nothing else."""

USER_PROMPT = "Describe the character in this image as JSON following the schema."

_REPAIR = (
    "Your answer was not valid character JSON: {error}. "
    "Answer again with only the corrected JSON object that follows the schema, "
    "with no other text."
)


def extract_with_vlm(
    image_bytes: bytes,
    provider: ProviderConfig,
    *,
    ring: KeyRing | None = None,
    timeout: float | None = None,
    cool_down: float = 60,
    environ: Mapping[str, str] | None = None,
) -> Extraction:
    """Ask ``provider``'s model for the character in ``image_bytes`` (PNG/JPEG/WebP/GIF).

    ``ring`` defaults to one holding ``provider.keys`` (cool-downs then last for this call
    only: pass a long-lived ring to remember them; ``provider.keys`` are added to it).
    ``timeout`` is per request, default ``$CASTBOOK_EXTRACT_TIMEOUT`` or 60 s;
    ``cool_down`` is how long a rate-limited key is skipped.
    """
    if timeout is None:
        timeout = Settings.from_env(environ).extract_timeout
    if timeout <= 0:
        raise FieldError("timeout", f"must be positive, got {timeout!r}")
    if ring is None:
        ring = KeyRing(provider.keys)
    for key in provider.keys:  # a ring built elsewhere still knows this provider's keys
        ring.add(key)
    data_url = f"data:{_mime_of(image_bytes)};base64,{base64.b64encode(image_bytes).decode()}"
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": USER_PROMPT},
                {"type": "image_url", "image_url": {"url": data_url}},
            ],
        },
    ]
    chat = _Chat(provider, ring, float(timeout), float(cool_down))
    with httpx.Client(timeout=chat.timeout, headers={"User-Agent": "castbook"}) as client:
        answer = chat.complete(client, messages)
        try:
            return _extraction(answer, provider)
        except ValueError as exc:
            first_error = str(exc)
        messages = [
            *messages,
            {"role": "assistant", "content": answer[:_ANSWER_LIMIT]},
            {"role": "user", "content": _REPAIR.format(error=first_error)},
        ]
        answer = chat.complete(client, messages)
        try:
            return _extraction(answer, provider)
        except ValueError as exc:
            raise chat.error(
                f"the model's answer was not valid character JSON after a repair attempt: {exc}"
            ) from None


def unfilled_fields(extraction: Extraction) -> list[str]:
    """The fields that are "unknown" or empty (``physical.*`` named with their prefix)."""
    values: list[tuple[str, object]] = [
        ("description", extraction.description),
        *((f"physical.{k}", v) for k, v in extraction.physical.model_dump().items()),
        ("clothing", extraction.clothing),
        ("accessories", extraction.accessories),
        ("distinctive_features", extraction.distinctive_features),
        ("style_prompt", extraction.style_prompt),
    ]
    return [name for name, value in values if _is_unknown(value)]


# ---------------------------------------------------------------------- answers


def _is_unknown(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("", UNKNOWN)
    return not value


def _extraction(answer: str, provider: ProviderConfig) -> Extraction:
    """The validated extraction in ``answer``; ValueError says what is wrong with it."""
    text = answer.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.DOTALL)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    allowed = set(EXTRACTION_JSON_SCHEMA["properties"])
    missing = [k for k in EXTRACTION_JSON_SCHEMA["required"] if k not in data]
    extra = sorted(set(data) - allowed)
    physical = data.get("physical")
    if isinstance(physical, dict):
        wanted = EXTRACTION_JSON_SCHEMA["properties"]["physical"]["required"]
        missing += [f"physical.{k}" for k in wanted if k not in physical]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected {', '.join(extra)}")
    if problems:
        raise ValueError("; ".join(problems))
    try:
        extraction = Extraction.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise ValueError(details) from None
    # "" and "Unknown" both mean not determined: one spelling for the reviewer.
    for name in ("description", "clothing"):
        if _is_unknown(getattr(extraction, name)):
            setattr(extraction, name, UNKNOWN)
    for name in PHYSICAL_TRAITS:
        if _is_unknown(getattr(extraction.physical, name)):
            setattr(extraction.physical, name, UNKNOWN)
    extraction.accessories = [a.strip() for a in extraction.accessories if not _is_unknown(a)]
    extraction.distinctive_features = [
        f.strip() for f in extraction.distinctive_features if not _is_unknown(f)
    ]
    extraction.style_prompt = extraction.style_prompt.strip()
    if extraction.style_prompt.lower() == UNKNOWN:
        extraction.style_prompt = ""
    extraction.source = f"vlm:{provider.name}/{provider.model}"
    extraction.unfilled = unfilled_fields(extraction)
    return extraction


def _mime_of(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    raise UnsupportedImageError("the extractor takes a PNG, JPEG, WebP or GIF image")


# ---------------------------------------------------------------------- HTTP


class _Chat:
    """Sends chat requests for one extraction, moving through the provider's keys."""

    def __init__(
        self, provider: ProviderConfig, ring: KeyRing, timeout: float, cool_down: float
    ) -> None:
        self.provider = provider
        self.ring = ring
        self.timeout = timeout
        self.cool_down = cool_down
        self.url = f"{provider.base_url}/chat/completions"
        parts = urlsplit(provider.base_url)
        self.host = parts.netloc
        self.all_keys = ring.keys_for(provider.name)
        self.secrets = sorted(
            {k.key for k in (*self.all_keys, *provider.keys)}, key=len, reverse=True
        )
        self.limited: list[ProviderKey] = []
        self.last_limit = ""

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def error(self, message: str, status: int | None = None) -> BackendError:
        return BackendError(BACKEND, self.redact(message), status=status)

    def complete(self, client: httpx.Client, messages: list[dict[str, Any]]) -> str:
        """The assistant's text for ``messages``; tries keys until one is not rate-limited."""
        body = {
            "model": self.provider.model,
            "temperature": 0,
            "messages": messages,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "character",
                    "schema": EXTRACTION_JSON_SCHEMA,
                    "strict": True,
                },
            },
        }
        if not self.all_keys:
            return self._send(client, body, None)
        while True:
            keys = self.ring.ordered(self.provider.name)
            if not keys:
                raise self._exhausted()
            key = keys[0]
            try:
                return self._send(client, body, key)
            except _RateLimited as limited:
                self.ring.cool_down(key, self.cool_down)
                self.limited.append(key)
                self.last_limit = limited.message

    def _exhausted(self) -> BackendError:
        shown = ", ".join(f"{k.masked} ({k.tier})" for k in self.all_keys)
        why = f"; last answer: {self.last_limit}" if self.limited else ""
        return self.error(
            f"every key for {self.provider.name} is rate-limited or out of quota "
            f"({shown}), each skipped for {self.cool_down:g} s after its error{why}; "
            "try again later or add a key to $CASTBOOK_HOME/providers.toml",
            429 if self.limited else None,
        )

    def _send(self, client: httpx.Client, body: dict[str, Any], key: ProviderKey | None) -> str:
        headers = {"Authorization": f"Bearer {key.key}"} if key is not None else {}
        try:
            response = client.post(self.url, headers=headers, json=body)
        except httpx.TimeoutException:
            raise self.error(
                f"timed out after {self.timeout:g} s waiting for {self.host} "
                f"({self.provider.name}/{self.provider.model})"
            ) from None
        except httpx.HTTPError as exc:
            raise self.error(f"cannot reach {self.host} ({self.provider.name}): {exc}") from None

        status = response.status_code
        if status >= 300:
            message, codes = _error_of(response)
            message = self.redact(message)
            if status == 429 or codes & _QUOTA_CODES:
                if key is not None:
                    raise _RateLimited(message)
                raise self.error(f"rate limited by {self.host}: {message}", status)
            if status in (401, 403):
                who = f"the key {key.masked}" if key is not None else "the request (no key)"
                raise self.error(
                    f"{who} for {self.provider.name} was refused ({message}); "
                    "check the key in providers.toml or CASTBOOK_EXTRACT_API_KEY",
                    status,
                )
            if status == 404:
                raise self.error(
                    f"{message}; is {self.provider.base_url} an OpenAI-compatible API "
                    f"serving {self.provider.model!r}?",
                    status,
                )
            if status >= 500:
                raise self.error(f"{self.host} failed: {message}", status)
            raise self.error(message, status)

        try:
            payload = response.json()
        except ValueError:
            raise self.error(
                "the answer is not JSON (not a chat-completions API?)", status
            ) from None
        try:
            message_obj = payload["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise self.error("the answer holds no choices[0].message", status) from None
        if not isinstance(message_obj, dict):
            raise self.error("choices[0].message is not an object", status)
        if message_obj.get("refusal"):
            raise self.error(f"the model refused: {str(message_obj['refusal'])[:200]}", status)
        content = message_obj.get("content")
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(
                str(part.get("text", "")) for part in content if isinstance(part, dict)
            )
        return content if isinstance(content, str) else ""


class _RateLimited(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _error_of(response: httpx.Response) -> tuple[str, set[str]]:
    """The server's message and its error code/type (lower-cased), for the error shapes seen."""
    codes: set[str] = set()
    message = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("detail") or "")
            for name in ("code", "type", "status"):
                if isinstance(error.get(name), str):
                    codes.add(error[name].lower())
        elif isinstance(error, str):
            message = error
    if not message:
        text = response.text.strip() if response.content else ""
        message = " ".join(text.split()) or response.reason_phrase or "no message"
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 1] + "…"
    return message, codes
