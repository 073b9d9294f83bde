"""Changing ``providers.toml`` from the CLI and the API, and listing it with keys masked.

:mod:`castbook.providers.keys` reads the file and adds one key; this module is what the
``castbook providers`` commands, ``/v1/providers`` and the web app's Settings panel share:
add, edit or remove a provider, add or remove a key, remember what ``providers test`` found
(each key's last error and, after a 429, until when it cools down: the only cool-down a
process that did not meet the 429 itself can know), and describe every provider with its
keys masked.

Every change is one read-modify-write under a lock (a thread lock, and ``flock`` on a
``.providers.toml.lock`` beside the file, so a CLI command and a running server do not
lose each other's edits); the result must load (:func:`~castbook.providers.keys.load_providers`
rules) before it replaces the file atomically, 0600. A key is never returned in full:
every answer names keys by :func:`~castbook.providers.keys.mask` and their 1-based index.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from castbook.errors import ConflictError, FieldError, NotFoundError
from castbook.providers.keys import (
    _NAME,
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_MODEL,
    ENV_PROVIDER,
    IMAGE,
    KINDS,
    PROVIDERS_FILE,
    TIERS,
    ProviderConfig,
    ProviderKey,
    _dump,
    _provider_from,
    _read,
    _write_private,
    load_providers,
    providers_path,
    tier_order,
)

__all__ = [
    "add_key",
    "add_provider",
    "describe_providers",
    "edit_provider",
    "find_provider",
    "record_checks",
    "remove_key",
    "remove_provider",
]

_LOCK = threading.Lock()
# What a key entry may hold besides key/tier/name: the last `providers test` of it.
_STATUS_FIELDS = ("last_error", "checked_at", "cooling_until")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    if os.name != "posix":
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def _editing(home: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The file's ``[providers]`` table to change in place; written back (0600) when the
    block ends without an error and everything in it still loads."""
    path = providers_path(home)
    with _LOCK, _file_lock(path):
        providers = _read(path) if path.is_file() else {}
        for name, table in providers.items():
            _provider_from(name, table)  # a file that does not load is fixed by hand first
        yield providers
        for name, table in providers.items():
            _provider_from(name, table)  # refuse to write a file that would not load
        _write_private(path, _dump({"providers": providers}))


def _checked_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise FieldError(
            "name", f"provider names are 1-64 letters, digits, '_' and '-', got {name!r}"
        )
    return name


def _refuse_env(name: str) -> None:
    if name == ENV_PROVIDER:
        raise FieldError(
            "name",
            f"the provider {ENV_PROVIDER!r} comes from the environment variables "
            f"{ENV_BASE_URL}, {ENV_MODEL} and {ENV_API_KEY}; change those instead, or pick "
            "another name",
        )


def _table(providers: dict[str, Any], name: str) -> dict[str, Any]:
    _refuse_env(name)
    table = providers.get(name)
    if table is None:
        known = ", ".join(sorted(providers)) or "none yet"
        raise NotFoundError(
            f"no provider named {name!r} in {PROVIDERS_FILE} (providers: {known}); "
            "add one with `castbook providers add NAME --kind …`"
        )
    if not isinstance(table, dict):
        raise FieldError(f"providers.{name}", "must be a table")
    return table


def find_provider(
    home: str | os.PathLike[str], name: str, environ: Mapping[str, str] | None = None
) -> ProviderConfig:
    """The provider called ``name`` (the environment's ``env`` one included)."""
    providers = load_providers(home, environ)
    for provider in providers:
        if provider.name == name:
            return provider
    known = ", ".join(p.name for p in providers) or "none yet"
    raise NotFoundError(
        f"no provider named {name!r} (providers: {known}); "
        "add one with `castbook providers add NAME --kind …`"
    )


def add_provider(
    home: str | os.PathLike[str],
    name: str,
    *,
    kind: str,
    base_url: str | None = None,
    model: str | None = None,
    prefer: str | None = None,
) -> ProviderConfig:
    """A new provider without keys; ``base_url``/``model`` may be left out where the kind
    has a public default (gemini; an ``openai`` provider named ``openai``)."""
    _checked_name(name)
    _refuse_env(name)
    if kind not in KINDS:
        raise FieldError("kind", f"must be one of {', '.join(KINDS)}, not {kind!r}")
    if prefer is not None and prefer not in TIERS:
        raise FieldError("prefer", f"must be 'free' or 'paid', not {prefer!r}")
    known = kind == "gemini" or (kind == "openai" and name == "openai")
    if not known and not (base_url or "").strip():
        raise FieldError("base_url", f"is required for a provider of kind {kind} (its API root)")
    table: dict[str, Any] = {"kind": kind}
    if base_url is not None and base_url.strip():
        table["base_url"] = base_url.strip().rstrip("/")
    if model is not None and model.strip():
        table["model"] = model.strip()
    if prefer is not None:
        table["prefer"] = prefer
    with _editing(home) as providers:
        if name in providers:
            raise ConflictError(
                f"a provider named {name!r} already exists; remove it first "
                f"(`castbook providers remove {name}`) or pick another name"
            )
        provider = _provider_from(name, table)  # the clear errors: bad URL, missing model
        providers[name] = table
    return provider


# What edit_provider may change; the kind and the name stay (a provider of another kind is
# another provider: remove it and add the new one).
EDITABLE = ("base_url", "model", "prefer")


def edit_provider(
    home: str | os.PathLike[str], name: str, changes: Mapping[str, str | None]
) -> ProviderConfig:
    """Change ``name``'s ``base_url``, ``model`` or ``prefer`` (only those in ``changes``;
    ``None`` or ``""`` clears one, back to the kind's default where it has one). Its keys
    stay; a new base URL clears what earlier tests recorded of them (they tested another
    endpoint)."""
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise FieldError(unknown[0], f"cannot be edited; a provider's {', '.join(EDITABLE)} can")
    if not changes:
        raise FieldError("body", f"nothing to change: give one of {', '.join(EDITABLE)}")
    prefer = changes.get("prefer")
    if prefer and prefer not in TIERS:
        raise FieldError("prefer", f"must be 'free' or 'paid', not {prefer!r}")
    with _editing(home) as providers:
        table = _table(providers, name)
        moved = False
        for field_name, value in changes.items():
            value = value.strip() if isinstance(value, str) else value
            if field_name == "base_url" and value:
                value = value.rstrip("/")
            if field_name == "base_url" and value != table.get("base_url"):
                moved = True
            if value:
                table[field_name] = value
            else:
                table.pop(field_name, None)
        try:
            provider = _provider_from(name, table)  # the clear errors: bad URL, no model
        except FieldError as exc:
            field_name = exc.field.rsplit(".", 1)[-1] if exc.field else "body"
            raise FieldError(field_name, str(exc).removeprefix(f"{exc.field}: ")) from None
        if moved:
            for entry in table.get("keys", []):
                if isinstance(entry, dict):
                    for status in _STATUS_FIELDS:
                        entry.pop(status, None)
    return provider


def remove_provider(home: str | os.PathLike[str], name: str) -> ProviderConfig:
    """Remove ``name`` and its keys; returns what was removed (keys masked in its repr)."""
    with _editing(home) as providers:
        provider = _provider_from(name, _table(providers, name))
        del providers[name]
    return provider


def add_key(
    home: str | os.PathLike[str], name: str, key: str, tier: str = "paid"
) -> tuple[int, ProviderKey, bool]:
    """Add ``key`` to provider ``name``: ``(index, key, added)`` with the 1-based index; a
    key already there keeps its place and takes the new tier (``added`` is False)."""
    with _editing(home) as providers:
        table = _table(providers, name)
        new = ProviderKey(name, key, tier)  # refuses an empty key and a bad tier
        entries = table.setdefault("keys", [])
        if not isinstance(entries, list):
            raise FieldError(f"providers.{name}.keys", "must be an array of tables")
        for index, entry in enumerate(entries, start=1):
            if isinstance(entry, dict) and str(entry.get("key", "")).strip() == new.key:
                entry["tier"] = new.tier
                return index, new, False
        entries.append({"key": new.key, "tier": new.tier})
        return len(entries), new, True


def _key_index(entries: list[Any], name: str, which: str | int) -> int:
    """The 0-based position ``which`` names: a 1-based index (up to three digits), or the
    end of exactly one key (at least four characters, as a masked key shows them)."""
    count = len(entries)
    text = str(which).strip()
    if text.isdigit() and len(text) <= 3:
        index = int(text)
        if not 1 <= index <= count:
            raise NotFoundError(
                f"provider {name!r} has {count} key(s); there is no key #{index} "
                "(`castbook providers list` numbers them)"
            )
        return index - 1
    if len(text) < 4:
        raise FieldError("key", "name a key by its index (1, 2, …) or its last 4+ characters")
    matches = [
        position
        for position, entry in enumerate(entries)
        if isinstance(entry, dict) and str(entry.get("key", "")).strip().endswith(text)
    ]
    if not matches:
        raise NotFoundError(f"no key of provider {name!r} ends with {text!r}")
    if len(matches) > 1:
        raise ConflictError(
            f"{len(matches)} keys of provider {name!r} end with that text; use the index"
        )
    return matches[0]


def remove_key(home: str | os.PathLike[str], name: str, which: str | int) -> ProviderKey:
    """Remove one key of ``name`` (see :func:`_key_index`); returns it (shown masked)."""
    with _editing(home) as providers:
        table = _table(providers, name)
        entries = table.get("keys", [])
        if not isinstance(entries, list):
            raise FieldError(f"providers.{name}.keys", "must be an array of tables")
        entry = entries.pop(_key_index(entries, name, which))
        return ProviderKey(name, str(entry["key"]), entry.get("tier", "paid"))


def record_checks(
    home: str | os.PathLike[str],
    name: str,
    outcomes: list[tuple[ProviderKey, str | None, float | None]],
    now: datetime | None = None,
) -> None:
    """Remember each key's last check: ``(key, error or None, retry-after seconds or None)``.
    Keys no longer in the file (removed meanwhile) and the ``env`` provider are skipped."""
    if name == ENV_PROVIDER or not outcomes:
        return
    now = now or datetime.now(UTC)
    with _editing(home) as providers:
        table = providers.get(name)
        if not isinstance(table, dict) or not isinstance(table.get("keys"), list):
            return
        for key, error, retry_after in outcomes:
            for entry in table["keys"]:
                if not isinstance(entry, dict) or str(entry.get("key", "")).strip() != key.key:
                    continue
                for field_name in _STATUS_FIELDS:
                    entry.pop(field_name, None)
                entry["checked_at"] = now.isoformat(timespec="seconds")
                if error:
                    entry["last_error"] = error
                if retry_after:
                    until = now.timestamp() + retry_after
                    entry["cooling_until"] = datetime.fromtimestamp(until, UTC).isoformat(
                        timespec="seconds"
                    )


def _cooling_for(entry: Mapping[str, Any], now: datetime) -> float | None:
    try:
        until = datetime.fromisoformat(str(entry["cooling_until"]))
    except (KeyError, ValueError):
        return None
    left = (until - now).total_seconds()
    return round(left) if left > 0 else None


def describe_providers(
    home: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Every provider as JSON with its keys masked: index, tier, the last check's error,
    when it ran, and the cool-down it left (seconds, or null)."""
    now = now or datetime.now(UTC)
    path = providers_path(home)
    raw = _read(path) if path.is_file() else {}
    described = []
    for provider in load_providers(home, environ):
        entries = raw.get(provider.name, {}).get("keys", []) if provider.name in raw else []
        keys = []
        for index, key in enumerate(provider.keys, start=1):
            entry = entries[index - 1] if provider.name in raw else {}
            keys.append(
                {
                    "index": index,
                    "key": key.masked,
                    "tier": key.tier,
                    "name": key.name or None,
                    "last_error": entry.get("last_error"),
                    "checked_at": entry.get("checked_at"),
                    "cooling_for": _cooling_for(entry, now),
                }
            )
        described.append(
            {
                "name": provider.name,
                "kind": provider.kind,
                "base_url": provider.base_url,
                "model": provider.model or None,
                "prefer": provider.prefer,
                "image_keys_first": tier_order(provider, IMAGE),
                "source": "environment" if provider.name == ENV_PROVIDER else "file",
                "keys": keys,
            }
        )
    return described
