"""Bearer API keys: created once in plain text, kept only as their sha256, revocable.

A key looks like ``cb_`` followed by 43 URL-safe characters (256 random bits). The database
keeps the sha256 of the whole key and its first characters (``prefix``) so a user can tell
keys apart in ``castbook keys list``; the key itself cannot be recovered from either. A key
belongs to an *owner*: every character, task and result made through it is that owner's.
Keys of the same owner see the same records; the CLI's records belong to the owner
``local``, which is also the default owner of a new key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
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
        }


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys:
    """The API keys stored in a :class:`Database`."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def create(
        self, name: str, owner: str = DEFAULT_OWNER, *, admin: bool = False
    ) -> tuple[ApiKey, str]:
        """Make a key; returns its record and the plain key, which is never shown again.
        An ``admin`` key may also pull and remove the server's models."""
        name = _clean("name", name, _MAX_NAME)
        owner = _clean("owner", owner, _MAX_OWNER)
        plain = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id=uuid.uuid4().hex,
            owner=owner,
            name=name,
            prefix=plain[:_SHOWN_PREFIX],
            key_hash=hash_key(plain),
            created_at=datetime.now(UTC),
            admin=admin,
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
            return _to_key(row)

    def authenticate(self, plain: str) -> ApiKey:
        """The active key ``plain`` is, or :class:`AuthenticationError`."""
        if not plain.startswith(KEY_PREFIX) or len(plain) > _MAX_KEY_LENGTH:
            raise AuthenticationError(
                f"that is not a castbook API key (they start with {KEY_PREFIX!r})"
            )
        digest = hash_key(plain)
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
            return _to_key(row)

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
    )


# ---- the gate and the FastAPI dependency ---------------------------------------------------

# Everything else needs a key, unknown paths included (they answer 404 only to a valid key).
OPEN_PATHS = frozenset({"/", "/health", "/docs", "/redoc", "/openapi.json", "/favicon.ico"})
# The web UI's files (castbook/web): the page itself asks for a key and sends it; the docs'
# scripts and styles.
OPEN_PREFIXES = ("/static/", "/docs/assets/")


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _key_from_header(keys: ApiKeys, header: str | None) -> ApiKey:
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
    return keys.authenticate(token.strip())


class KeyGate:
    """ASGI middleware: a request without a valid key gets 401 before anything else happens
    (its body is not even read), so no handler, validation or upload runs for it.
    ``shape(path, body)`` may dress the error body for the path (the compat API's keys)."""

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
            key = await run_in_threadpool(_key_from_header, self.keys, header)
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
        await self.app(scope, receive, send)


# auto_error=False: a missing header is answered by our own JSON 401, not FastAPI's 403.
_bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `castbook keys create`, sent as `Authorization: Bearer <key>`.",
)


def require_owner(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The owner of the request's bearer key, as :class:`KeyGate` found it; anything else is
    a 401. (``credentials`` is declared so the OpenAPI docs offer the bearer scheme.)"""
    owner = getattr(request.state, "owner", None)
    if isinstance(owner, str):
        return owner
    keys: ApiKeys = request.app.state.services.keys
    return _key_from_header(keys, request.headers.get("authorization")).owner


class ForbiddenError(CastbookError):
    """A valid key that may not do this (HTTP 403): only admin keys change the server."""


def require_admin(request: Request, owner: Annotated[str, Depends(require_owner)]) -> str:
    """The owner of an *admin* key (``castbook keys create --admin``); others get 403."""
    admin = getattr(request.state, "admin", None)
    if admin is None:
        keys: ApiKeys = request.app.state.services.keys
        admin = _key_from_header(keys, request.headers.get("authorization")).admin
    if not admin:
        raise ForbiddenError(
            "only an admin key may pull or remove models on this server; create one with "
            "`castbook keys create --name NAME --admin`"
        )
    return owner


CurrentOwner = Annotated[str, Depends(require_owner)]
AdminOwner = Annotated[str, Depends(require_admin)]
