"""Provider keys for every hosted service: tiers, cool-down and ``providers.toml``.

A provider is one endpoint of a ``kind`` — ``openai`` (any OpenAI-compatible API: the
Character Extractor's chat completions, the ``openai`` images backend), ``gemini`` (the
Gemini API: the ``gemini`` backend) or ``comfyui`` — and may hold several keys, each
``free`` or ``paid``. :class:`KeyRing` hands them out in the order the work wants and skips
a key that is cooling down after a 429 or a quota/rate-limit error until its time is up:

* text work (extraction) uses free keys first (:data:`TEXT`): it is cheap and frequent;
* image generation uses paid keys first (:data:`IMAGE`): free tiers of image models are
  small or absent and a 429 per picture is slow; a provider's ``prefer = "free"`` turns
  that round (:func:`tier_order`).

Both fall back to the next key on a 429 and take a cooled-down key again once its time is
up. This module is on floor 2 (it imports only ``errors`` and ``settings``), so the
extractor and the generation backends share it.

Configuration comes from ``$CASTBOOK_HOME/providers.toml``::

    [providers.openai]
    base_url = "https://api.openai.com/v1"
    model = "gpt-4o-mini"
    [[providers.openai.keys]]
    key = "sk-..."
    tier = "free"

    [providers.google]
    kind = "gemini"                  # openai (the default), gemini or comfyui
    prefer = "free"                  # image work: free keys first (default: paid first)
    [[providers.google.keys]]
    key = "AIza..."
    tier = "paid"

and from the environment: ``CASTBOOK_EXTRACT_BASE_URL``, ``CASTBOOK_EXTRACT_MODEL`` and
``CASTBOOK_EXTRACT_API_KEY`` (one ``paid`` key). When any of them is set, a provider named
``env`` is listed first (base URL defaulting to OpenAI's, model to ``gpt-4o-mini``).

Keys are never printed or logged: :class:`ProviderKey`'s ``repr``/``str`` show only
:attr:`ProviderKey.masked`, and error messages name keys by their masked form. The file is
created with 0600 permissions and rewritten atomically, keeping 0600; a file anyone on the
machine may read is refused (the error gives the ``chmod 600`` that fixes it).
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from castbook.errors import FieldError
from castbook.settings import Settings

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "ENV_PROVIDER",
    "IMAGE",
    "KINDS",
    "PROVIDERS_FILE",
    "TEXT",
    "KeyRing",
    "ProviderConfig",
    "ProviderKey",
    "Purpose",
    "Tier",
    "load_providers",
    "mask",
    "providers_path",
    "save_provider_key",
    "tier_order",
]

Tier = Literal["free", "paid"]
TIERS: tuple[str, ...] = ("free", "paid")
Purpose = Literal["text", "image"]
TEXT: Purpose = "text"
IMAGE: Purpose = "image"
KINDS: tuple[str, ...] = ("openai", "gemini", "comfyui")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
# What a provider of each kind talks to when its table leaves base_url/model out.
KIND_BASE_URLS = {
    "openai": DEFAULT_BASE_URL,
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}
KIND_MODELS = {"openai": DEFAULT_MODEL, "gemini": "gemini-2.5-flash-image"}
PROVIDERS_FILE = "providers.toml"
ENV_PROVIDER = "env"
ENV_BASE_URL = "CASTBOOK_EXTRACT_BASE_URL"
ENV_MODEL = "CASTBOOK_EXTRACT_MODEL"
ENV_API_KEY = "CASTBOOK_EXTRACT_API_KEY"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def mask(key: str) -> str:
    """A key shown safely: ``sk-…a1b2`` for long keys, less for short ones, never all of it."""
    key = key.strip()
    if len(key) >= 16:
        return f"{key[:3]}…{key[-4:]}"
    if len(key) >= 8:
        return f"…{key[-2:]}"
    return "***"


@dataclass(frozen=True, repr=False)
class ProviderKey:
    """One API key of a provider. Compared and hashed by value; shown only masked."""

    provider: str
    key: str
    tier: Tier = "paid"
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key.strip():
            raise FieldError("key", f"a key for {self.provider!r} is empty")
        if self.key != self.key.strip():
            object.__setattr__(self, "key", self.key.strip())
        if self.tier not in TIERS:
            raise FieldError("tier", f"must be 'free' or 'paid', got {self.tier!r}")

    @property
    def masked(self) -> str:
        return mask(self.key)

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        return (
            f"ProviderKey(provider={self.provider!r}, key={self.masked!r}, "
            f"tier={self.tier!r}{name})"
        )

    def __str__(self) -> str:
        label = f"{self.name} " if self.name else ""
        return f"{label}{self.masked} ({self.provider}, {self.tier})"


class KeyRing:
    """The keys of every provider, with each key's cool-down (thread-safe).

    ``clock`` (default :func:`time.monotonic`) supplies ``now`` when a call leaves it out.
    """

    def __init__(
        self,
        keys: Iterable[ProviderKey] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys: list[ProviderKey] = []
        self._until: dict[ProviderKey, float] = {}
        self._lock = threading.Lock()
        self.clock = clock
        for key in keys:
            self.add(key)

    @classmethod
    def from_providers(
        cls, providers: Iterable[ProviderConfig], *, clock: Callable[[], float] = time.monotonic
    ) -> KeyRing:
        return cls((key for provider in providers for key in provider.keys), clock=clock)

    def add(self, key: ProviderKey) -> None:
        with self._lock:
            if key not in self._keys:
                self._keys.append(key)

    def keys_for(self, provider: str) -> list[ProviderKey]:
        """Every key of ``provider``, in the order they were given (cooling or not)."""
        with self._lock:
            return [key for key in self._keys if key.provider == provider]

    def ordered(
        self, provider: str, now: float | None = None, *, first: Tier = "free"
    ) -> list[ProviderKey]:
        """The keys to try now: the ``first`` tier (free unless told), then the other, each
        in given order; none cooling. :func:`tier_order` says which tier a work goes first."""
        if first not in TIERS:
            raise FieldError("first", f"must be 'free' or 'paid', got {first!r}")
        now = self.clock() if now is None else now
        with self._lock:
            ready = [
                key
                for key in self._keys
                if key.provider == provider and self._until.get(key, float("-inf")) <= now
            ]
        return sorted(ready, key=lambda key: key.tier != first)

    def ready_in(self, provider: str, now: float | None = None) -> float | None:
        """Seconds until a key of ``provider`` is usable again: 0 when one is now, None when
        it has no keys. A caller whose every key is cooling waits this long and tries again."""
        now = self.clock() if now is None else now
        with self._lock:
            waits = [
                max(self._until.get(key, float("-inf")) - now, 0.0)
                for key in self._keys
                if key.provider == provider
            ]
        return min(waits) if waits else None

    def cool_down(self, key: ProviderKey, seconds: float, now: float | None = None) -> None:
        """Skip ``key`` for ``seconds`` (after a 429 or a quota/rate-limit error)."""
        now = self.clock() if now is None else now
        with self._lock:
            self._until[key] = max(self._until.get(key, now), now + max(seconds, 0.0))

    def cooling_until(self, key: ProviderKey) -> float | None:
        """When ``key`` may be used again (on the ring's clock), or None if it never cooled."""
        with self._lock:
            return self._until.get(key)

    def __repr__(self) -> str:
        with self._lock:
            return f"KeyRing({self._keys!r})"


@dataclass(frozen=True)
class ProviderConfig:
    """One endpoint of a ``kind`` (see :data:`KINDS`); ``repr`` shows keys masked.

    ``prefer`` is the tier image generation tries first (None: paid, see
    :func:`tier_order`); text work always starts with free keys.
    """

    name: str
    base_url: str
    model: str
    keys: tuple[ProviderKey, ...] = field(default_factory=tuple)
    kind: str = "openai"
    prefer: Tier | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))
        object.__setattr__(self, "base_url", _check_url(self.name, self.base_url))
        if self.kind not in KINDS:
            raise FieldError(
                f"providers.{self.name}.kind",
                f"must be one of {', '.join(KINDS)}, not {self.kind!r}",
            )
        if self.prefer is not None and self.prefer not in TIERS:
            raise FieldError(
                f"providers.{self.name}.prefer", f"must be 'free' or 'paid', not {self.prefer!r}"
            )
        if not str(self.model).strip() and self.kind != "comfyui":
            raise FieldError(f"providers.{self.name}.model", "must name a model")


def tier_order(provider: ProviderConfig | None, purpose: Purpose) -> Tier:
    """The tier ``purpose`` work tries first on ``provider``: text work free first (as the
    extractor always did); image work paid first unless the provider says ``prefer``."""
    if purpose == TEXT:
        return "free"
    if purpose != IMAGE:
        raise FieldError("purpose", f"must be 'text' or 'image', got {purpose!r}")
    if provider is not None and provider.prefer is not None:
        return provider.prefer
    return "paid"


# ---------------------------------------------------------------------- loading


def providers_path(home: str | os.PathLike[str]) -> Path:
    return Path(home) / PROVIDERS_FILE


def load_providers(
    home: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> list[ProviderConfig]:
    """The configured providers: the ``env`` one first (if any), then the file's in order.

    Nothing configured gives ``[]``. A malformed file raises :class:`FieldError`.
    """
    settings = Settings.from_env(environ)
    providers: list[ProviderConfig] = []
    base_url = settings.extract_base_url or ""
    model = settings.extract_model or ""
    api_key = settings.extract_api_key or ""
    if base_url or model or api_key:
        keys = (ProviderKey(ENV_PROVIDER, api_key, "paid", name=ENV_API_KEY),) if api_key else ()
        providers.append(
            ProviderConfig(ENV_PROVIDER, base_url or DEFAULT_BASE_URL, model or DEFAULT_MODEL, keys)
        )
    path = providers_path(home)
    if path.is_file():
        for name, table in _read(path).items():
            providers.append(_provider_from(name, table))
    return providers


def _read(path: Path) -> dict[str, Any]:
    _refuse_world_readable(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise FieldError(PROVIDERS_FILE, f"cannot read {path}: {exc.__class__.__name__}") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages give a position, never the offending text.
        raise FieldError(PROVIDERS_FILE, f"{path} is not valid TOML: {exc}") from None
    providers = data.get("providers", {})
    if not isinstance(providers, dict):
        raise FieldError(PROVIDERS_FILE, "[providers] must be a table of providers")
    return providers


def _refuse_world_readable(path: Path) -> None:
    """Keys in a file anyone on the machine can read are as good as published: refuse it
    and say how to fix it (castbook itself always writes it 0600)."""
    if os.name != "posix":
        return
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise FieldError(PROVIDERS_FILE, f"cannot read {path}: {exc.__class__.__name__}") from None
    if mode & stat.S_IROTH:
        raise FieldError(
            PROVIDERS_FILE,
            f"{path} is readable by every user of this machine and holds API keys; "
            f"make it private with: chmod 600 {path}",
        )


def _provider_from(name: str, table: object) -> ProviderConfig:
    where = f"providers.{name}"
    if not _NAME.match(name):
        raise FieldError(where, "provider names are letters, digits, '_' and '-'")
    if not isinstance(table, dict):
        raise FieldError(where, "must be a table with base_url, model and keys")
    kind = table.get("kind", "openai")
    if kind not in KINDS:
        raise FieldError(f"{where}.kind", f"must be one of {', '.join(KINDS)}, not {kind!r}")
    # A provider called "openai", and any gemini one, may leave the public endpoint out.
    known = kind == "gemini" or (kind == "openai" and name == "openai")
    base_url = table.get("base_url") or (KIND_BASE_URLS.get(kind) if known else None)
    model = table.get("model") or (KIND_MODELS.get(kind) if known else None)
    if kind == "comfyui" and model is None:
        model = ""
    if not isinstance(base_url, str):
        raise FieldError(f"{where}.base_url", "is required (the API root, ending in /v1)")
    if not isinstance(model, str):
        raise FieldError(f"{where}.model", "is required (a vision-capable chat model)")
    prefer = table.get("prefer")
    if prefer is not None and prefer not in TIERS:
        raise FieldError(f"{where}.prefer", f"must be 'free' or 'paid', not {prefer!r}")
    raw_keys = table.get("keys", [])
    if not isinstance(raw_keys, list):
        raise FieldError(f"{where}.keys", "must be an array of tables ([[...keys]])")
    keys = []
    for index, entry in enumerate(raw_keys):
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise FieldError(f"{where}.keys[{index}]", 'needs key = "..."')
        tier = entry.get("tier", "paid")
        if tier not in TIERS:
            raise FieldError(
                f"{where}.keys[{index}].tier", f"must be 'free' or 'paid', not {tier!r}"
            )
        keys.append(ProviderKey(name, entry["key"], tier, name=str(entry.get("name", ""))))
    return ProviderConfig(name, base_url, model, tuple(keys), kind=kind, prefer=prefer)


def _check_url(name: str, url: str) -> str:
    url = str(url).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FieldError(
            f"providers.{name}.base_url", f"must be an http(s) URL such as {DEFAULT_BASE_URL}"
        )
    if parts.username or parts.password or parts.query:
        raise FieldError(
            f"providers.{name}.base_url", "must not carry credentials or a query string"
        )
    return url


# ---------------------------------------------------------------------- saving


def save_provider_key(
    home: str | os.PathLike[str],
    provider: str,
    key: str,
    tier: Tier = "paid",
    *,
    name: str = "",
    base_url: str | None = None,
    model: str | None = None,
    kind: str | None = None,
) -> Path:
    """Add ``key`` to ``provider`` in ``$CASTBOOK_HOME/providers.toml`` (created 0600).

    A key already there has its tier and name updated instead. ``base_url``/``model``/
    ``kind`` replace the provider's when given; a new ``openai``-kind provider other than
    ``openai`` needs a base URL and a model (a ``gemini`` one defaults to Google's).
    The file is replaced atomically and stays 0600. Returns the file's path.
    """
    if not _NAME.match(provider):
        raise FieldError("provider", "provider names are letters, digits, '_' and '-'")
    new_key = ProviderKey(provider, key, tier, name=name)  # validates key and tier
    path = providers_path(home)
    data: dict[str, Any] = {"providers": _read(path)} if path.is_file() else {"providers": {}}
    table = data["providers"].setdefault(provider, {})
    if not isinstance(table, dict):
        raise FieldError(f"providers.{provider}", "must be a table")
    if base_url is not None:
        table["base_url"] = base_url
    if model is not None:
        table["model"] = model
    if kind is not None:
        table["kind"] = kind
    entries = table.setdefault("keys", [])
    entry = {"key": new_key.key, "tier": new_key.tier}
    if name:
        entry["name"] = name
    for index, existing in enumerate(entries):
        if isinstance(existing, dict) and str(existing.get("key", "")).strip() == new_key.key:
            entries[index] = entry
            break
    else:
        entries.append(entry)
    _provider_from(provider, table)  # refuse to write a config that would not load
    _write_private(path, _dump(data))
    return path


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _dump(data: dict[str, Any]) -> str:
    """TOML for the providers layout (tables, arrays of tables, scalars, string lists)."""
    lines: list[str] = ["# castbook provider keys: keep this file private (0600)."]

    def emit(prefix: str, table: dict[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_tables(v)}
        if prefix and (scalars or not table):
            lines.extend(["", f"[{prefix}]"])
        for k, v in scalars.items():
            lines.append(f"{_bare(k)} = {_value(v)}")
        for k, v in table.items():
            sub = f"{prefix}.{_bare(k)}" if prefix else _bare(k)
            if _is_table(v):
                emit(sub, v)
            elif _is_tables(v):
                for item in v:
                    lines.extend(["", f"[[{sub}]]"])
                    for ik, iv in item.items():
                        lines.append(f"{_bare(ik)} = {_value(iv)}")

    emit("", data)
    return "\n".join(lines) + "\n"


def _is_table(value: object) -> bool:
    return isinstance(value, dict)


def _is_tables(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _bare(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string once DEL is escaped too.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise FieldError(PROVIDERS_FILE, f"cannot write a value of type {type(value).__name__}")
