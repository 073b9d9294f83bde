"""The API docs work offline (their files come from castbook, never a CDN), every answer
carries the security headers, and ``/favicon.ico`` needs no key."""

from __future__ import annotations

import re

import httpx
import pytest

from castbook.api.headers import CONTENT_SECURITY_POLICY, REDOC_CONTENT_SECURITY_POLICY
from tests.support.api import Api, ApiFactory

# src="…" / href="…" / spec-url="…" in a page, and url(…) in a stylesheet.
_REFERENCE = re.compile(r"""(?:src|href|spec-url|data-openapi)="([^"]*)"|url\(([^)]*)\)""")


def references(html: str) -> list[str]:
    return [a or b for a, b in _REFERENCE.findall(html)]


@pytest.fixture
def api(make_api: ApiFactory) -> Api:
    return make_api()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_everything_from_castbook(api: Api, page: str) -> None:
    answer = api.client.get(page)  # no key
    assert answer.status_code == 200
    assert "text/html" in answer.headers["content-type"]
    found = references(answer.text)
    assert found, "the page loads its scripts from somewhere"
    assert "<script>" not in answer.text  # no inline script: the policy would block it
    for reference in found:
        assert reference.startswith("/"), f"{page} refers to another host: {reference}"
        assert not reference.startswith("//"), f"{page} refers to another host: {reference}"
        loaded = api.client.get(reference)  # no key for the docs' files either
        assert loaded.status_code == 200, reference
        if reference.endswith(".js"):
            assert loaded.headers["content-type"].startswith("text/javascript")
            assert len(loaded.content) > 200 or "SwaggerUIBundle(" in loaded.text
    assert api.client.get("/openapi.json").json()["info"]["title"] == "castbook"


def test_swagger_assets_are_the_real_bundles(api: Api) -> None:
    bundle = api.client.get("/docs/assets/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.content and len(bundle.content) > 500_000
    assert api.client.get("/docs/assets/redoc.standalone.js").content.count(b"Redoc") > 0
    css = api.client.get("/docs/assets/swagger-ui.css")
    assert css.headers["content-type"].startswith("text/css")
    # The stylesheet's own pictures are inline data: URLs (allowed by img-src), not links.
    assert all(u.strip("'\"").startswith("data:") for _, u in _REFERENCE.findall(css.text) if u)
    assert api.client.get("/docs/assets/..%2Fapp.py").status_code == 404
    assert api.client.get("/docs/assets/nothing.js").status_code == 404


def assert_security_headers(response: httpx.Response, policy: str) -> None:
    headers = response.headers
    assert headers["content-security-policy"] == policy, response.request.url
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"


def test_policy_allows_only_the_own_origin() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no inline or foreign script, anywhere
    assert directives["frame-ancestors"] == "'none'"
    for value in directives.values():
        assert "http" not in value and "*" not in value and "unsafe" not in value
    redoc = dict(d.split(" ", 1) for d in REDOC_CONTENT_SECURITY_POLICY.split("; "))
    assert redoc["script-src"] == "'self'" and redoc["frame-ancestors"] == "'none'"


def test_every_answer_carries_the_security_headers(api: Api) -> None:
    key = api.key("alice")
    client = api.client
    strict = CONTENT_SECURITY_POLICY
    assert_security_headers(client.get("/"), strict)  # the web app
    assert_security_headers(client.get("/static/app.js"), strict)
    assert_security_headers(client.get("/health"), strict)
    assert_security_headers(client.get("/v1/characters", headers=key), strict)
    assert_security_headers(client.get("/v1/characters"), strict)  # 401 from the key gate
    assert_security_headers(client.get("/v1/characters/nobody", headers=key), strict)  # 404
    assert_security_headers(client.get("/docs"), strict)
    assert_security_headers(client.get("/redoc"), REDOC_CONTENT_SECURITY_POLICY)
    assert_security_headers(client.get("/openapi.json"), strict)


def test_every_answer_says_how_long_the_server_took(api: Api) -> None:
    key = api.key("alice")
    for response in (
        api.client.get("/v1/characters", headers=key),
        api.client.get("/v1/characters"),  # a 401 from the key gate is timed too
        api.client.get("/health"),
    ):
        name, _, duration = response.headers["server-timing"].partition(";dur=")
        assert name == "app", response.headers["server-timing"]
        assert 0 <= float(duration) < 60_000


def test_favicon_needs_no_key(api: Api) -> None:
    answer = api.client.get("/favicon.ico")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/x-icon"
    assert answer.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
