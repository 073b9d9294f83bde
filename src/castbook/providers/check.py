"""``providers test``: one cheap authenticated call per key, saying which keys work.

The call lists models (or the server's stats), which costs no tokens on any provider:

* ``openai``: ``GET {base_url}/models`` with ``Authorization: Bearer <key>``;
* ``gemini``: ``GET {base_url}/models?pageSize=1`` with the ``x-goog-api-key`` header
  (``base_url`` is the API root, ``…/v1beta``; the key is never put in the URL);
* ``comfyui``: ``GET {base_url}/system_stats`` (with a bearer key when the provider has one,
  for a server behind an authenticating proxy; without keys, one unauthenticated call).

Each answer becomes a :class:`KeyCheck`: works, or the error as the user should read it
(a refused key, a 429 with the delay the server asked for, a host that cannot be reached).
Messages never contain a key: whatever the server echoed is redacted to the masked form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from castbook.providers.keys import ProviderConfig, ProviderKey

__all__ = ["KeyCheck", "check_provider", "check_url"]

DEFAULT_TIMEOUT = 10.0
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


@dataclass(frozen=True)
class KeyCheck:
    """What one call with ``key`` (None: no key) found."""

    key: ProviderKey | None
    ok: bool
    message: str
    status: int | None = None
    retry_after: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key.masked if self.key else None,
            "tier": self.key.tier if self.key else None,
            "ok": self.ok,
            "status": self.status,
            "message": self.message,
            "retry_after": self.retry_after,
        }


def check_url(provider: ProviderConfig) -> str:
    """The URL the check of ``provider`` asks."""
    if provider.kind == "gemini":
        return f"{provider.base_url}/models?pageSize=1"
    if provider.kind == "comfyui":
        return f"{provider.base_url}/system_stats"
    return f"{provider.base_url}/models"


def _headers(provider: ProviderConfig, key: ProviderKey | None) -> dict[str, str]:
    if key is None:
        return {}
    if provider.kind == "gemini":
        return {"x-goog-api-key": key.key}
    return {"Authorization": f"Bearer {key.key}"}


def check_provider(
    provider: ProviderConfig,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    transport: httpx.BaseTransport | None = None,
) -> list[KeyCheck]:
    """Call ``provider`` once with each of its keys, in the order they are listed."""
    keys: list[ProviderKey | None] = list(provider.keys)
    if not keys:
        if provider.kind != "comfyui":
            return [
                KeyCheck(
                    None,
                    False,
                    f"provider {provider.name!r} has no keys: add one with "
                    f"`castbook providers key add {provider.name} --tier free`",
                )
            ]
        keys = [None]
    url = check_url(provider)
    with httpx.Client(timeout=timeout, transport=transport, follow_redirects=False) as client:
        return [_check_one(client, provider, url, key) for key in keys]


def _check_one(
    client: httpx.Client, provider: ProviderConfig, url: str, key: ProviderKey | None
) -> KeyCheck:
    host = httpx.URL(url).host
    try:
        response = client.get(url, headers=_headers(provider, key))
    except httpx.TimeoutException:
        return KeyCheck(key, False, f"{host} did not answer within {client.timeout.read:g} s")
    except httpx.HTTPError as exc:
        reason = _redact(str(exc) or exc.__class__.__name__, key)
        return KeyCheck(key, False, f"cannot reach {host}: {reason}")
    status = response.status_code
    if status == 200:
        return KeyCheck(key, True, _works(provider, response), status)
    detail = _redact(_error_text(response), key)
    retry_after = _retry_after(response) if status == 429 else None
    if status == 429:
        wait = f"; the server asks to wait {retry_after:g} s" if retry_after else ""
        return KeyCheck(
            key, False, f"rate-limited or out of quota (429){wait}: {detail}", status, retry_after
        )
    if status in (401, 403) or "API_KEY_INVALID" in response.text:
        return KeyCheck(key, False, f"the server refused the key ({status}): {detail}", status)
    if status == 404:
        return KeyCheck(
            key,
            False,
            f"{url.split('?')[0]} is not there (404): is {provider.base_url} "
            f"the API root of a {provider.kind} server?",
            status,
        )
    return KeyCheck(key, False, f"HTTP {status}: {detail}", status)


def _works(provider: ProviderConfig, response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return "works"
    if provider.kind == "openai" and isinstance(payload, dict):
        data = payload.get("data")
        if isinstance(data, list):
            return f"works ({len(data)} model(s) listed)"
    if provider.kind == "comfyui" and isinstance(payload, dict):
        version = (payload.get("system") or {}).get("comfyui_version")
        return f"works (ComfyUI {version})" if version else "works"
    return "works"


def _error_text(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:300]
    if isinstance(error, str):
        return error[:300]
    return response.text.strip()[:300]


def _retry_after(response: httpx.Response) -> float | None:
    header = response.headers.get("retry-after", "").strip()
    if header:
        try:
            return max(float(header), 0.0)
        except ValueError:
            pass
    try:
        details = response.json().get("error", {}).get("details", [])
    except (ValueError, AttributeError):
        return None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = _DELAY.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _redact(text: str, key: ProviderKey | None) -> str:
    return text.replace(key.key, key.masked) if key is not None else text
