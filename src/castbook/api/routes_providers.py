"""``/v1/providers``: the hosted providers of ``providers.toml`` and their keys (admin keys
only, reading included: even masked, the list says which services this server pays for).

A key goes in once (``POST /v1/providers/{name}/keys``) and never comes back in full: every
answer names keys masked (``AIz…abcd``) with their 1-based ``index``. The shared logic is
:mod:`castbook.providers.manage` (the same as ``castbook providers``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from castbook.api.auth import CurrentOwner, ForbiddenError, require_admin
from castbook.api.services import AppServices
from castbook.errors import FieldError
from castbook.providers.check import check_provider, check_url
from castbook.providers.manage import (
    add_key,
    add_provider,
    describe_providers,
    edit_provider,
    find_provider,
    record_checks,
    remove_key,
    remove_provider,
)

__all__ = ["router"]

ADMIN_ONLY = (
    "only an admin key may see or change provider keys on this server; create one with "
    "`castbook keys create --name NAME --admin`"
)


async def _require_admin(request: Request, owner: CurrentOwner) -> str:
    try:
        return await require_admin(request, owner)
    except ForbiddenError:
        raise ForbiddenError(ADMIN_ONLY) from None


ProvidersAdmin = Annotated[str, Depends(_require_admin)]
router = APIRouter(prefix="/providers", tags=["providers"])


class NewProvider(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., max_length=64, description="Letters, digits, '_' and '-'.")
    kind: Literal["openai", "gemini", "comfyui"]
    base_url: str | None = Field(None, max_length=2000, description="The API root.")
    model: str | None = Field(None, max_length=200, description="The default model.")
    prefer: Literal["free", "paid"] | None = Field(
        None, description="The tier image generation tries first (default paid)."
    )


class ProviderChanges(BaseModel):
    """Only the fields given change; ``null`` (or ``""``) clears one, back to the kind's
    default where it has one (``prefer``: paid first)."""

    model_config = ConfigDict(extra="forbid")
    base_url: str | None = Field(None, max_length=2000, description="The API root.")
    model: str | None = Field(None, max_length=200, description="The default model.")
    prefer: Literal["free", "paid"] | None = Field(
        None, description="The tier image generation tries first."
    )


def _described(services: AppServices, name: str) -> dict[str, Any]:
    found = [p for p in describe_providers(services.settings.home) if p["name"] == name]
    return found[0]


@router.get("", summary="Every provider, keys masked (admin keys only)")
def list_providers(services: AppServices, owner: ProvidersAdmin) -> list[dict[str, Any]]:
    """Each key's ``last_error``, ``checked_at`` and ``cooling_for`` (seconds) are what the
    last test (``POST …/test`` or ``castbook providers test``) found."""
    return describe_providers(services.settings.home)


@router.post("", status_code=201, summary="Add a provider, without keys (admin keys only)")
def create_provider(
    body: NewProvider, services: AppServices, owner: ProvidersAdmin
) -> dict[str, Any]:
    add_provider(
        services.settings.home,
        body.name,
        kind=body.kind,
        base_url=body.base_url,
        model=body.model,
        prefer=body.prefer,
    )
    return _described(services, body.name)


@router.patch("/{name}", summary="Change a provider's URL, model or tier (admin keys only)")
def update_provider(
    name: str, body: ProviderChanges, services: AppServices, owner: ProvidersAdmin
) -> dict[str, Any]:
    """The kind and the keys stay; a new ``base_url`` clears what earlier tests recorded of
    the keys (they tested another endpoint)."""
    changes = {field: getattr(body, field) for field in body.model_fields_set}
    edit_provider(services.settings.home, name, changes)
    return _described(services, name)


@router.delete("/{name}", summary="Remove a provider and its keys (admin keys only)")
def delete_provider(name: str, services: AppServices, owner: ProvidersAdmin) -> dict[str, Any]:
    provider = remove_provider(services.settings.home, name)
    return {"name": provider.name, "removed_keys": len(provider.keys)}


def _new_key(payload: Any) -> tuple[str, str]:
    """``{"key", "tier"}`` checked by hand: pydantic's messages quote the input they refuse,
    and here the input is a secret (no message below shows any of it)."""
    if not isinstance(payload, dict):
        raise FieldError("body", 'must be a JSON object {"key": "...", "tier": "free|paid"}')
    extra = sorted(set(payload) - {"key", "tier"})
    if extra:
        raise FieldError(extra[0], "is not a field of a new key (key, tier)")
    key, tier = payload.get("key"), payload.get("tier", "paid")
    if not isinstance(key, str) or not key.strip():
        raise FieldError("key", "is required: a non-empty string")
    if len(key) > 4000 or any(ord(c) < 32 or ord(c) == 127 for c in key.strip()):
        raise FieldError("key", "is not an API key (too long, or holds control characters)")
    if tier not in ("free", "paid"):
        raise FieldError("tier", "must be 'free' or 'paid'")
    return key, tier


@router.post(
    "/{name}/keys",
    status_code=201,
    summary="Add a key (admin keys only)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["key"],
                        "additionalProperties": False,
                        "properties": {
                            "key": {"type": "string", "description": "Sent once, never shown."},
                            "tier": {"type": "string", "enum": ["free", "paid"], "default": "paid"},
                        },
                    }
                }
            },
        }
    },
)
async def create_key(
    name: str, request: Request, services: AppServices, owner: ProvidersAdmin
) -> dict[str, Any]:
    """The answer shows the key masked, never in full; a key already there keeps its index
    and takes the new tier (``added``: false)."""
    try:
        payload = json.loads(await request.body())
    except (ValueError, RecursionError):
        raise FieldError("body", "is not valid JSON") from None
    key_text, tier = _new_key(payload)
    index, key, added = await run_in_threadpool(
        add_key, services.settings.home, name, key_text, tier
    )
    return {"provider": name, "index": index, "key": key.masked, "tier": key.tier, "added": added}


@router.delete("/{name}/keys/{index}", summary="Remove a key by its index (admin keys only)")
def delete_key(
    name: str, index: int, services: AppServices, owner: ProvidersAdmin
) -> dict[str, Any]:
    key = remove_key(services.settings.home, name, str(index))
    return {"provider": name, "index": index, "key": key.masked, "tier": key.tier}


@router.post("/{name}/test", summary="Call the provider once per key (admin keys only)")
def test_provider(name: str, services: AppServices, owner: ProvidersAdmin) -> dict[str, Any]:
    """One cheap authenticated call per key (models list, or ComfyUI's system stats); each
    key's outcome is also remembered for the list."""
    home = services.settings.home
    provider = find_provider(home, name)
    checks = check_provider(provider)
    record_checks(
        home, name, [(c.key, None if c.ok else c.message, c.retry_after) for c in checks if c.key]
    )
    return {
        "provider": name,
        "url": check_url(provider).split("?")[0],
        "working": sum(c.ok for c in checks),
        "checks": [c.to_json() for c in checks],
    }
