"""Text no store can keep, bodies that cannot be parsed and absurdly deep JSON are invalid
input over HTTP: 422 naming the field, never an internal error, and nothing written."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.support.api import Api, ApiFactory, alice_png

JSON = {"content-type": "application/json"}
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def api(make_api: ApiFactory) -> Api:
    return make_api()


@pytest.fixture
def key(api: Api) -> dict[str, str]:
    return api.key("alice")


def post_raw(api: Api, path: str, body: bytes, key: dict[str, str]) -> Any:
    return api.client.post(path, content=body, headers={**key, **JSON})


def assert_invalid(answer: Any, field: str, *words: str) -> None:
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["field"] == field, problem
    assert "internal error" not in problem["error"]
    for word in words:
        assert word in problem["error"], problem


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (rb'{"name": "\ud800"}', "name"),  # a lone high surrogate, as a JSON escape
        (rb'{"name": "Alice", "description": "tall \udfff"}', "description"),
        (rb'{"name": "Alice", "tags": ["ok", "\uDC00"]}', "tags.1"),  # upper-case hex too
        (rb'{"name": "Alice", "physical": {"hair": "\ud800 black"}}', "physical.hair"),
        (b'{"name": "\xed\xa0\x80"}', "name"),  # the surrogate's raw bytes (CESU-8)
    ],
)
def test_a_lone_surrogate_is_422_naming_the_field(
    api: Api, key: dict[str, str], body: bytes, field: str
) -> None:
    answer = post_raw(api, "/v1/characters", body, key)
    assert_invalid(answer, field, "lone surrogate")
    assert api.client.get("/v1/characters", headers=key).json() == []  # nothing written


def test_text_is_checked_on_every_route(api: Api, key: dict[str, str]) -> None:
    made = api.client.post("/v1/characters", json={"name": "Alice"}, headers=key)
    assert made.status_code == 201
    answer = api.client.patch(
        "/v1/characters/Alice",
        content=rb'{"style_prompt": "red \ud800"}',
        headers={**key, **JSON},
    )
    assert_invalid(answer, "style_prompt", "lone surrogate")
    assert api.client.get("/v1/characters/Alice", headers=key).json()["style_prompt"] == ""
    generation = post_raw(api, "/v1/generations", rb'{"prompt": "a cat \ud800"}', key)
    assert_invalid(generation, "prompt", "lone surrogate")
    compat = post_raw(api, "/getImage", rb'{"id": "\ud800"}', key)
    assert compat.status_code == 422 and compat.json()["field"] == "id"


def test_valid_surrogate_pairs_are_fine(api: Api, key: dict[str, str]) -> None:
    answer = post_raw(api, "/v1/characters", rb'{"name": "Star \ud83c\udf1f"}', key)
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == "Star \N{GLOWING STAR}"


def test_a_form_field_with_surrogate_bytes_is_refused(api: Api, key: dict[str, str]) -> None:
    api.client.post("/v1/characters", json={"name": "Alice"}, headers=key)
    answer = api.client.post(
        "/v1/characters/Alice/images",
        files=[("image", ("alice.png", alice_png(), "image/png"))],
        data={"primary": "\ud800".encode("utf-8", "surrogatepass")},
        headers=key,
    )
    assert_invalid(answer, "primary")  # Starlette decodes the bytes; never a 500
    assert api.client.get("/v1/characters/Alice", headers=key).json()["images"] == []


def test_malformed_and_too_deep_json_are_422(api: Api, key: dict[str, str]) -> None:
    for path in ("/v1/characters", "/v1/characters/import", "/v1/generations"):
        assert_invalid(post_raw(api, path, b'{"name": ', key), "body", "not valid JSON")
        assert_invalid(post_raw(api, path, DEEP, key), "body", "nested too deeply")
        assert_invalid(post_raw(api, path, b"\xff\xfe{", key), "body")


def test_an_import_reports_the_bad_entry_and_imports_the_rest(
    api: Api, key: dict[str, str]
) -> None:
    picture = base64.b64encode(alice_png()).decode()
    good = {"name": "Alice", "images": [{"data": picture}]}
    bad = {"name": "Bob", "description": "\ud800"}
    document = {"format": "castbook.characters", "version": 1, "characters": [good, bad]}
    body = json.dumps(document).encode()  # json.dumps writes the surrogate as \ud800
    answer = post_raw(api, "/v1/characters/import", body, key)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["imported_names"] == ["Alice"]
    [failed] = report["failed_details"]
    assert failed["entry"] == "characters[1] ('Bob')"
    assert failed["reason"].startswith("description: contains '\\ud800'")
    strict = post_raw(api, "/v1/characters/import?strict=true", body, key)
    assert strict.status_code == 422 and "description" in strict.json()["error"]
