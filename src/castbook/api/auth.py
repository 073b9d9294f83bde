"""Bearer API keys: created once in plain text, kept only as their sha256, revocable.

A key looks like ``cb_`` followed by 43 URL-safe characters (256 random bits). The database
keeps the sha256 of the whole key and its first characters (``prefix``) so a user can tell
keys apart in ``castbook keys list``; the key itself cannot be recovered from either. A key
belongs to an *owner*: every character, task and result made through it is that owner's.
Keys of the same owner see the same records; the CLI's records belong to the owner
``local``, which is also the default owner of a new key. A key may carry its own quotas
(``castbook.api.quotas``); unset, the server's settings apply.

Authenticating is cheap: a verified key is remembered in the process for
:data:`KEY_CACHE_SECONDS`, so a busy client costs one database query per key and half second,
not one per request. Revoking in this process forgets the key at once; a revocation by another
process (``castbook keys revoke``, another server on the same database) takes effect when the
remembered entry expires, well within a second.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select, update
from starlette.concurrency import run_in_threadpool

from castbook.db import ApiKeyRow, Database
from castbook.errors import CastbookError, FieldError, NotFoundError
from castbook.settings import DEFAULT_OWNER

__all__ = [
    "KEY_CACHE_SECONDS",
    "KEY_PREFIX",
    "OPEN_PATHS",
    "AdminOwner",
    "ApiKey",
    "ApiKeys",
    "AuthenticationError",
    "CurrentOwner",
    "ForbiddenError",
    "KeyGate",
    "hash_key",
    "require_admin",
    "require_owner",
]

KEY_PREFIX = "cb_"
_SHOWN_PREFIX = 10  # "cb_" and 7 characters: enough to tell keys apart, useless to guess
_MAX_KEY_LENGTH = 200
_MAX_NAME = 100
_MAX_OWNER = 64
# Touch last_used_at at most this often, so authenticating is not a write per request.
_LAST_USED_RESOLUTION = timedelta(minutes=1)
# How long a verified key is trusted without asking the database again: the most a
# revocation made by another process waits before it takes effect (the promise is 1 s).
KEY_CACHE_SECONDS = 0.5
# Remembered keys per process; past this the cache starts afresh (keys are few in practice).
_CACHE_ENTRIES = 10_000


class AuthenticationError(CastbookError):
    """No key, a malformed key, or a key that does not exist or was revoked (HTTP 401)."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    owner: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    admin: bool = False
    # This key's quotas; None: the server's setting, 0: no limit (castbook.api.quotas).
    rate_limit: float | None = None
    rate_burst: int | None = None
    max_queued: int | None = None
    max_storage_bytes: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "admin": self.admin,
            "limits": self.limits(),
        }

    def limits(self) -> dict[str, float | int | None]:
        """The quotas set on this key (None: the server's setting applies)."""
        return {
            "rate_limit": self.rate_limit,
            "rate_burst": self.rate_burst,
            "max_queued": self.max_queued,
            "max_storage_bytes": self.max_storage_bytes,
        }


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys:
    """The API keys stored in a :class:`Database`."""

    def __init__(self, database: Database, *, cache_seconds: float = KEY_CACHE_SECONDS) -> None:
        self.database = database
        self.cache_seconds = cache_seconds
        # sha256 of a key -> (monotonic time it was verified, its record)
        self._verified: dict[str, tuple[float, ApiKey]] = {}
        self._lock = threading.Lock()

    def create(
        self,
        name: str,
        owner: str = DEFAULT_OWNER,
        *,
        admin: bool = False,
        rate_limit: float | None = None,
        rate_burst: int | None = None,
        max_queued: int | None = None,
        max_storage_bytes: int | None = None,
    ) -> tuple[ApiKey, str]:
        """Make a key; returns its record and the plain key, which is never shown again.
        An ``admin`` key may also pull and remove the server's models. The limits are this
        key's quotas (None: the server's settings; 0: no limit)."""
        name = _clean("name", name, _MAX_NAME)
        owner = _clean("owner", owner, _MAX_OWNER)
        limits = _checked_limits(rate_limit, rate_burst, max_queued, max_storage_bytes)
        plain = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id=uuid.uuid4().hex,
            owner=owner,
            name=name,
            prefix=plain[:_SHOWN_PREFIX],
            key_hash=hash_key(plain),
            created_at=datetime.now(UTC),
            admin=admin,
            **limits,
        )
        with self.database.session() as session:
            session.add(row)
            session.commit()
            return _to_key(row), plain

    def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if not include_revoked:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        with self.database.session() as session:
            return [_to_key(row) for row in session.scalars(query)]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke by id (or a unique id prefix of 6+ characters); revoking twice is harmless."""
        with self.database.session() as session:
            row = self._find(session, key_id)
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
                session.commit()
            self._forget(row.key_hash)
            return _to_key(row)

    def set_limits(
        self,
        key_id: str,
        *,
        rate_limit: float | None = None,
        rate_burst: int | None = None,
        max_queued: int | None = None,
        max_storage_bytes: int | None = None,
    ) -> ApiKey:
        """Replace a key's quotas (None: the server's setting again). Servers other than this
        process see the change within :data:`KEY_CACHE_SECONDS`."""
        limits = _checked_limits(rate_limit, rate_burst, max_queued, max_storage_bytes)
        with self.database.session() as session:
            row = self._find(session, key_id)
            for column, value in limits.items():
                setattr(row, column, value)
            session.commit()
            self._forget(row.key_hash)
            return _to_key(row)

    def cached(self, plain: str) -> ApiKey | None:
        """The key ``plain`` is, if this process verified it less than ``cache_seconds`` ago;
        None means ask :meth:`authenticate` (no database work here, so it is fit for the
        event loop)."""
        digest = hash_key(plain)
        entry = self._verified.get(digest)
        if entry is None or time.monotonic() - entry[0] >= self.cache_seconds:
            return None
        return entry[1]

    def authenticate(self, plain: str) -> ApiKey:
        """The active key ``plain`` is, or :class:`AuthenticationError`."""
        if not plain.startswith(KEY_PREFIX) or len(plain) > _MAX_KEY_LENGTH:
            raise AuthenticationError(
                f"that is not a castbook API key (they start with {KEY_PREFIX!r})"
            )
        known = self.cached(plain)
        if known is not None:
            return known
        digest = hash_key(plain)
        # Taken before the query: an entry never outlives its read by more than the TTL.
        verified_at = time.monotonic()
        with self.database.session() as session:
            row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest)).first()
            # The lookup is by hash, so comparing again only guards against a broken index.
            if row is None or not hmac.compare_digest(row.key_hash, digest):
                raise AuthenticationError("unknown API key; create one with `castbook keys create`")
            if row.revoked_at is not None:
                raise AuthenticationError(f"the API key {row.prefix}… was revoked")
            now = datetime.now(UTC)
            if row.last_used_at is None or now - row.last_used_at > _LAST_USED_RESOLUTION:
                session.execute(
                    update(ApiKeyRow).where(ApiKeyRow.id == row.id).values(last_used_at=now)
                )
                session.commit()
            key = _to_key(row)
        self._remember(digest, verified_at, key)
        return key

    def _remember(self, digest: str, verified_at: float, key: ApiKey) -> None:
        if self.cache_seconds <= 0:
            return
        with self._lock:
            if len(self._verified) >= _CACHE_ENTRIES:
                self._verified.clear()
            self._verified[digest] = (verified_at, key)

    def _forget(self, digest: str) -> None:
        with self._lock:
            self._verified.pop(digest, None)

    def _find(self, session: Any, key_id: str) -> ApiKeyRow:
        key_id = key_id.strip().lower()
        row = session.get(ApiKeyRow, key_id)
        if row is not None:
            return row
        if len(key_id) >= 6:
            matches = session.scalars(
                select(ApiKeyRow).where(ApiKeyRow.id.startswith(key_id, autoescape=True))
            ).all()
            if len(matches) == 1:
                return matches[0]
            if matches:
                raise FieldError("id", f"{key_id!r} matches {len(matches)} keys; give more of it")
        raise NotFoundError(f"no API key with id {key_id!r}; `castbook keys list` shows them")


def _clean(field: str, value: str, limit: int) -> str:
    cleaned = value.strip()
    if not cleaned:
        raise FieldError(field, "must not be empty")
    if len(cleaned) > limit:
        raise FieldError(field, f"is {len(cleaned)} characters long; the limit is {limit}")
    if any(not ch.isprintable() for ch in cleaned):
        raise FieldError(field, "must not contain control characters")
    return cleaned


def _checked_limits(
    rate_limit: float | None,
    rate_burst: int | None,
    max_queued: int | None,
    max_storage_bytes: int | None,
) -> dict[str, float | int | None]:
    """A key's quotas as columns; negative or non-finite values are refused by name."""
    limits: dict[str, float | int | None] = {
        "rate_limit": rate_limit,
        "rate_burst": rate_burst,
        "max_queued": max_queued,
        "max_storage_bytes": max_storage_bytes,
    }
    for field, value in limits.items():
        if value is not None and not 0 <= value < float("inf"):
            raise FieldError(field, f"must be 0 (no limit) or positive, got {value!r}")
    if rate_burst is not None and rate_burst < 1:
        raise FieldError("rate_burst", f"must be at least 1, got {rate_burst!r}")
    return limits


def _to_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        owner=row.owner,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        admin=bool(row.admin),
        rate_limit=row.rate_limit,
        rate_burst=row.rate_burst,
        max_queued=row.max_queued,
        max_storage_bytes=row.max_storage_bytes,
    )


# ---- the gate and the FastAPI dependency ---------------------------------------------------

# Everything else needs a key, unknown paths included (they answer 404 only to a valid key).
OPEN_PATHS = frozenset({"/", "/health", "/docs", "/redoc", "/openapi.json", "/favicon.ico"})
# The web UI's files (castbook/web): the page itself asks for a key and sends it; the docs'
# scripts and styles.
OPEN_PREFIXES = ("/static/", "/docs/assets/")


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _token(header: str | None) -> str:
    if not header:
        raise AuthenticationError(
            "this endpoint needs an API key: send 'Authorization: Bearer <key>' "
            "(create one with `castbook keys create`)"
        )
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "the Authorization header must be 'Bearer <key>' (create a key with "
            "`castbook keys create`)"
        )
    return token.strip()


def _key_from_header(keys: ApiKeys, header: str | None) -> ApiKey:
    return keys.authenticate(_token(header))


def _cached_key(keys: ApiKeys, header: str | None) -> ApiKey | None:
    """The header's key if this process verified it moments ago; None: go to the database
    (malformed headers too, so the thread that asks it also words the refusal)."""
    try:
        return keys.cached(_token(header))
    except AuthenticationError:
        return None


class KeyGate:
    """ASGI middleware: a request without a valid key gets 401 before anything else happens
    (its body is not even read), so no handler, validation or upload runs for it.
    ``shape(path, body)`` may dress the error body for the path (the compat API's keys).
    A key verified moments ago is taken from :class:`ApiKeys`' cache without leaving the
    event loop; the request's key is in ``scope["state"]["key"]`` for the gates inside."""

    def __init__(
        self,
        app: Any,
        keys: ApiKeys,
        shape: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.shape = shape or (lambda _path, body: body)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = Request(scope).headers.get("authorization")
        try:
            key = _cached_key(self.keys, header) or await run_in_threadpool(
                _key_from_header, self.keys, header
            )
        except CastbookError as exc:  # a bad key; or the database failed underneath us
            refused = isinstance(exc, AuthenticationError)
            response = JSONResponse(
                self.shape(scope["path"], {"error": str(exc), "type": type(exc).__name__}),
                status_code=401 if refused else 503,
                headers={"WWW-Authenticate": "Bearer"} if refused else None,
            )
            await response(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["owner"] = key.owner
        state["admin"] = key.admin
        state["key"] = key
        await self.app(scope, receive, send)


# auto_error=False: a missing header is answered by our own JSON 401, not FastAPI's 403.
_bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `castbook keys create`, sent as `Authorization: Bearer <key>`.",
)


async def require_owner(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The owner of the request's bearer key, as :class:`KeyGate` found it; anything else is
    a 401. (``credentials`` is declared so the OpenAPI docs offer the bearer scheme.)
    Async, so a request costs no thread hop for it: the gate already did the work."""
    owner = getattr(request.state, "owner", None)
    if isinstance(owner, str):
        return owner
    keys: ApiKeys = request.app.state.services.keys
    found = await run_in_threadpool(_key_from_header, keys, request.headers.get("authorization"))
    return found.owner


class ForbiddenError(CastbookError):
    """A valid key that may not do this (HTTP 403): only admin keys change the server."""


async def require_admin(request: Request, owner: Annotated[str, Depends(require_owner)]) -> str:
    """The owner of an *admin* key (``castbook keys create --admin``); others get 403."""
    admin = getattr(request.state, "admin", None)
    if admin is None:
        keys: ApiKeys = request.app.state.services.keys
        found = await run_in_threadpool(
            _key_from_header, keys, request.headers.get("authorization")
        )
        admin = found.admin
    if not admin:
        raise ForbiddenError(
            "only an admin key may pull or remove models on this server; create one with "
            "`castbook keys create --name NAME --admin`"
        )
    return owner


CurrentOwner = Annotated[str, Depends(require_owner)]
AdminOwner = Annotated[str, Depends(require_admin)]
