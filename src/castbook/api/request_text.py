"""Refuse request text that nothing can store or answer with (lone surrogates), naming it.

JSON may carry ``"\\ud800"``: Python parses it into a string that no database, file or JSON
answer can encode, so without this check it fails deep inside a write as an internal error.
Every route runs :func:`reject_invalid_text` (an app-wide dependency) after FastAPI has read
the body, so the body is parsed once; a 422 names the field as the client sent it
(``traits.hair``, ``prompts.2``). The import endpoint is left to report such entries as
failed, one by one, like every other invalid entry of an import file.
"""

from __future__ import annotations

import re

from fastapi import Request

from castbook.errors import FieldError
from castbook.library.text import find_invalid_text

__all__ = ["reject_invalid_text"]

# A surrogate as a JSON escape, or as raw (CESU-8) bytes, which json.loads lets through.
# Bodies without either, nearly all, are not looked at again.
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
# Routes that check every entry themselves and report the bad ones as failed.
_CHECKED_PER_ENTRY = frozenset({"/v1/characters/import"})


async def reject_invalid_text(request: Request) -> None:
    if request.scope.get("path") in _CHECKED_PER_ENTRY:
        return
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith(_FORMS):
        # Starlette decodes form fields itself (undecodable bytes become replacement
        # characters), so they hold no surrogates; and it has consumed their stream.
        return
    body = await request.body()
    if not body or _MAYBE_SURROGATE.search(body) is None:
        return
    try:
        document = await request.json()
    except (ValueError, RecursionError):  # not JSON: the route's own parsing says so
        return
    found = find_invalid_text(document)
    if found is not None:
        raise FieldError(found.dotted() or "body", found.problem)
