"""The API docs (``/docs``: Swagger UI, ``/redoc``: ReDoc) and ``/favicon.ico``, offline.

FastAPI's own docs pages load Swagger UI and ReDoc from a CDN and start them with an inline
script; a server without internet (or a browser honouring the Content-Security-Policy of
:mod:`castbook.api.headers`) would show a blank page. Here the pages load the scripts and
styles from the installed ``fastapi-offline`` package (Swagger UI 5 and ReDoc 2, as
published; MIT) under ``/docs/assets/``, and Swagger UI is started by a script file of
ours, so nothing is fetched from another host and nothing runs inline. None of it needs a key.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from castbook.errors import MissingDependencyError, NotFoundError

__all__ = ["ASSETS_PREFIX", "router"]

ASSETS_PREFIX = "/docs/assets/"
_FAVICON = Path(__file__).resolve().parent.parent / "web" / "favicon.ico"
_PACKAGED = {  # served name -> (file in fastapi_offline/static, media type)
    "swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("swagger-ui.css", "text/css; charset=utf-8"),
    "redoc.standalone.js": ("redoc.standalone.js", "text/javascript; charset=utf-8"),
}
# Reads the schema's address from the page (so a root_path prefix works) and starts the UI
# as FastAPI's page would, keeping a pasted key across reloads.
_SWAGGER_INIT = """\
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapi,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  persistAuthorization: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""
# The files change only with the installed package; a day of caching is safe.
_CACHE = {"Cache-Control": "public, max-age=86400"}

router = APIRouter(include_in_schema=False)


@cache
def _assets_dir() -> Path:
    # find_spec locates the package without importing it (its __init__ imports FastAPI's
    # docs helpers we do not use).
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "the API docs need the fastapi-offline package (pip install fastapi-offline)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def _page(request: Request, title: str, head: str, body: str) -> HTMLResponse:
    root = escape(request.scope.get("root_path", ""))
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="icon" href="{root}/favicon.ico">
{head.format(root=root)}
</head>
<body>
{body.format(root=root)}
</body>
</html>
"""
    return HTMLResponse(html)


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return _page(
        request,
        "castbook API – Swagger UI",
        '<link rel="stylesheet" href="{root}/docs/assets/swagger-ui.css">',
        '<div id="swagger-ui" data-openapi="{root}/openapi.json"></div>\n'
        '<script src="{root}/docs/assets/swagger-ui-bundle.js"></script>\n'
        '<script src="{root}/docs/assets/swagger-init.js"></script>',
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    # ReDoc's standalone bundle renders every <redoc spec-url> element by itself.
    return _page(
        request,
        "castbook API – ReDoc",
        "",
        '<redoc spec-url="{root}/openapi.json"></redoc>\n'
        '<script src="{root}/docs/assets/redoc.standalone.js"></script>',
    )


@router.get("/docs/assets/{name}")
def docs_asset(name: str) -> Response:
    if name == "swagger-init.js":
        return Response(_SWAGGER_INIT, media_type="text/javascript; charset=utf-8")
    if name not in _PACKAGED:
        raise NotFoundError(f"no docs asset {name!r}")
    file, media_type = _PACKAGED[name]
    return FileResponse(_assets_dir() / file, media_type=media_type, headers=_CACHE)


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    return FileResponse(_FAVICON, media_type="image/x-icon", headers=_CACHE)
