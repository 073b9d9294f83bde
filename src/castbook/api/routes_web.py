"""The browser UI: ``/`` serves ``index.html`` and ``/static/<file>`` its scripts and styles.

Neither needs an API key (both are in the key gate's open paths): the page asks the user for
a key, keeps it in ``localStorage`` and sends it as ``Authorization: Bearer`` on every API
call it makes. Only the files shipped in ``castbook/web`` are served.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from castbook.errors import NotFoundError

__all__ = ["WEB_DIR", "router"]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
# The UI changes with the package; make the browser revalidate instead of using a stale copy.
_HEADERS = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


def _web_file(name: str) -> FileResponse:
    path = WEB_DIR / name
    suffix = path.suffix.lower()
    # Plain file names only: no folders, no dot files, nothing outside WEB_DIR.
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in _MEDIA_TYPES:
        raise NotFoundError(f"no static file {name!r}")
    if not path.is_file():
        raise NotFoundError(f"no static file {name!r}")
    return FileResponse(path, media_type=_MEDIA_TYPES[suffix], headers=_HEADERS)


@router.get("/")
def index() -> FileResponse:
    return _web_file("index.html")


@router.get("/static/{name:path}")
def static_file(name: str) -> FileResponse:
    return _web_file(name)
