"""Every error the API answers with is JSON of one shape, and request bodies have a limit.

::

    {"error": "batch: must be between 1 and 8, got 9",   one line, fit to show a user
     "type": "FieldError",                                what kind of problem
     "field": "batch",                                    the field at fault, when there is one
     "errors": [{"field": ..., "message": ..., "type": ...}]}   every problem (422 only)

Status codes: 401 no or bad API key, 403 a key that may not do this (only admin keys pull
or remove models), 404 not found (also another owner's ids), 409 conflict,
413 body too large, 422 invalid input (malformed or too deeply nested JSON, a body that
cannot be parsed, text with lone surrogates, wrong types, out-of-range values, unusable
images), 503 storage or queue unavailable.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from castbook.api.auth import AuthenticationError, ForbiddenError
from castbook.errors import (
    BackendError,
    CastbookError,
    ConflictError,
    DuplicateNameError,
    FieldError,
    InvalidInputError,
    MissingDependencyError,
    NotFoundError,
    StorageError,
)
from castbook.generation.request import LIMITS, range_message

__all__ = [
    "BodyLimit",
    "FieldProblem",
    "error_response",
    "install_error_handlers",
    "validation_problems",
]

log = logging.getLogger("castbook.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})
_RANGE_ERRORS = frozenset({"greater_than_equal", "less_than_equal", "greater_than", "less_than"})
# Ranges by the names clients send (castbook's own and the compat API's), for messages that
# say the whole range: "batch: must be between 1 and 8, got 9".
_RANGE_NAMES: dict[str, str] = {
    **{name: name for name in LIMITS},
    "num_inference_steps": "steps",
    "guidance_scale": "guidance",
    "strength": "denoise",  # the compat API's; the same 0–1
}

# (error class, HTTP status); the first match wins, so subclasses come first.
_STATUS: tuple[tuple[type[CastbookError], int], ...] = (
    (AuthenticationError, 401),
    (ForbiddenError, 403),
    (InvalidInputError, 422),
    (NotFoundError, 404),
    (ConflictError, 409),
    (StorageError, 503),
    (MissingDependencyError, 503),
    (BackendError, 502),
)


FieldProblem = dict[str, Any]


def error_response(
    status: int,
    message: str,
    kind: str,
    *,
    field: str | None = None,
    errors: Sequence[FieldProblem] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": message, "type": kind}
    if field is not None:
        body["field"] = field
    if errors is not None:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status, headers=headers)


def castbook_error_response(exc: CastbookError) -> JSONResponse:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    field = exc.field if isinstance(exc, FieldError) else None
    if isinstance(exc, DuplicateNameError):
        field = "name"  # the form field a client shows the clash under
    errors = None
    if isinstance(exc, InvalidInputError):
        errors = [{"field": field, "message": str(exc), "type": type(exc).__name__}]
    return error_response(
        status, str(exc), type(exc).__name__, field=field, errors=errors, headers=headers
    )


def validation_problems(errors: Sequence[Any]) -> list[FieldProblem]:
    """pydantic's errors as ``{field, message, type}``, the field named as the client sent it."""
    problems = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in _LOCATIONS:
            where, loc = loc[0], loc[1:]
        else:
            where = "body"
        kind = error.get("type", "invalid")
        if kind == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "")
            problems.append(
                {
                    "field": "body",
                    "message": f"the body is not valid JSON ({reason})".replace(" ()", ""),
                    "type": kind,
                }
            )
            continue
        field = ".".join(loc) if loc else where
        message = str(error.get("msg", "is invalid"))
        if kind == "missing":
            message = "is required"
        elif kind in _RANGE_ERRORS and field in _RANGE_NAMES:
            message = range_message(_RANGE_NAMES[field], error.get("input"), _shown)
        elif "input" in error and kind not in ("extra_forbidden",):
            message = f"{message}, got {_shown(error['input'])}"
        if message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        problems.append({"field": field, "message": message, "type": kind})
    return problems


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CastbookError)
    async def _castbook(_: Request, exc: CastbookError) -> JSONResponse:
        response = castbook_error_response(exc)
        if response.status_code >= 500:
            log.warning("%s: %s", type(exc).__name__, exc)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = validation_problems(exc.errors())
        if not problems:
            problems = [{"field": "body", "message": "is invalid", "type": "invalid"}]
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        message = f"{first['field']}: {first['message']}{more}"
        return error_response(
            422, message, "ValidationError", field=first["field"], errors=problems
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _FASTAPI_PARSE_ERROR:
            return _unparsable_body(exc.__cause__)
        names = {404: "NotFound", 405: "MethodNotAllowed"}
        return error_response(
            exc.status_code,
            str(exc.detail),
            names.get(exc.status_code, "HTTPError"),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, UnicodeError):  # text that slipped past reject_invalid_text
            return error_response(422, f"text that is not valid Unicode: {exc}", "ValidationError")
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(
            500, f"internal error: {type(exc).__name__}; see the server log", "InternalError"
        )


# What FastAPI raises (as a 400) when reading the body fails other than as invalid JSON.
_FASTAPI_PARSE_ERROR = "There was an error parsing the body"


def _unparsable_body(cause: BaseException | None) -> JSONResponse:
    """A body FastAPI could not parse is invalid input like malformed JSON: 422, field body."""
    if isinstance(cause, RecursionError):
        message = "the body's JSON is nested too deeply to read"
    else:
        reason = f" ({type(cause).__name__})" if cause is not None else ""
        message = f"the body cannot be parsed{reason}"
    problem = {"field": "body", "message": message, "type": "body_invalid"}
    return error_response(
        422, f"body: {message}", "ValidationError", field="body", errors=[problem]
    )


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, before any handler sees them.

    ``Content-Length`` is checked first; a body without one (chunked) is counted as it
    arrives. The body is read completely here and replayed to the app, so a rejected request
    never reaches a handler and nothing is written for it.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_bytes / (1024 * 1024)
        response = error_response(
            413,
            f"the request body is over the limit of {limit:g} MB "
            "(CASTBOOK_API_MAX_BODY_MB sets it)",
            "RequestTooLarge",
        )
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
