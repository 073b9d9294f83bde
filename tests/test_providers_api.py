"""``/v1/providers``: admin keys only; keys go in once and come back masked, in the answers,
the list, errors and the server's log alike; ``…/test`` calls the fake Gemini server."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from tests.support.fake_gemini_server import FakeGeminiServer

GOOD = "AIzaSy-good-key-0000000000abcd"
BAD = "AIzaSy-refused-key-00000000wxyz"


@pytest.fixture(autouse=True)
def no_env_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CASTBOOK_EXTRACT_BASE_URL", "CASTBOOK_EXTRACT_MODEL", "CASTBOOK_EXTRACT_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def served(make_api):
    api = make_api()
    _, plain = api.services.keys.create("admin", admin=True)
    admin = {"Authorization": f"Bearer {plain}"}
    return api, admin, api.key("user")


def test_only_admin_keys_see_or_change_providers(served) -> None:
    api, admin, user = served
    client = api.client
    calls = [
        ("GET", "/v1/providers", None),
        ("POST", "/v1/providers", {"name": "g", "kind": "gemini"}),
        ("PATCH", "/v1/providers/g", {"model": "m"}),
        ("DELETE", "/v1/providers/g", None),
        ("POST", "/v1/providers/g/keys", {"key": GOOD}),
        ("DELETE", "/v1/providers/g/keys/1", None),
        ("POST", "/v1/providers/g/test", None),
    ]
    for method, path, body in calls:
        answer = client.request(method, path, json=body, headers=user)
        assert answer.status_code == 403, (path, answer.text)
        assert "admin key" in answer.json()["error"] and "provider" in answer.json()["error"]
        assert client.request(method, path, json=body).status_code == 401
    assert client.get("/v1/providers", headers=admin).json() == []


def test_providers_and_keys_round_trip_masked(
    served, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api, admin, _ = served
    client = api.client
    caplog.set_level(logging.DEBUG)
    created = client.post(
        "/v1/providers", json={"name": "google", "kind": "gemini", "prefer": "free"}, headers=admin
    )
    assert created.status_code == 201, created.text
    assert created.json()["keys"] == [] and created.json()["image_keys_first"] == "free"

    added = client.post(
        "/v1/providers/google/keys", json={"key": GOOD, "tier": "free"}, headers=admin
    )
    assert added.status_code == 201
    assert added.json() == {
        "provider": "google", "index": 1, "key": "AIz…abcd", "tier": "free", "added": True
    }  # fmt: skip
    client.post("/v1/providers/google/keys", json={"key": BAD}, headers=admin)
    listed = client.get("/v1/providers", headers=admin)
    assert [(k["key"], k["tier"]) for k in listed.json()[0]["keys"]] == [
        ("AIz…abcd", "free"),
        ("AIz…wxyz", "paid"),
    ]
    assert stat.S_IMODE((home / "providers.toml").stat().st_mode) == 0o600

    removed = client.delete("/v1/providers/google/keys/2", headers=admin)
    assert removed.json() == {"provider": "google", "index": 2, "key": "AIz…wxyz", "tier": "paid"}
    gone = client.delete("/v1/providers/google/keys/2", headers=admin)
    assert gone.status_code == 404 and "no key #2" in gone.json()["error"]
    assert client.delete("/v1/providers/google", headers=admin).json() == {
        "name": "google",
        "removed_keys": 1,
    }
    assert client.get("/v1/providers", headers=admin).json() == []
    everything = listed.text + added.text + removed.text + caplog.text
    assert GOOD not in everything and BAD not in everything


def test_patch_changes_only_the_fields_given(served, home: Path) -> None:
    api, admin, _ = served
    client = api.client
    client.post("/v1/providers", json={"name": "google", "kind": "gemini"}, headers=admin)
    client.post("/v1/providers/google/keys", json={"key": GOOD, "tier": "free"}, headers=admin)

    changed = client.patch(
        "/v1/providers/google",
        json={"base_url": "http://127.0.0.1:9/v1beta/", "prefer": "free"},
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    google = changed.json()
    assert google["base_url"] == "http://127.0.0.1:9/v1beta"
    assert google["model"] == "gemini-2.5-flash-image"  # not given: as it was
    assert google["image_keys_first"] == "free"
    assert [(k["key"], k["tier"]) for k in google["keys"]] == [("AIz…abcd", "free")]
    assert GOOD not in changed.text
    assert client.get("/v1/providers", headers=admin).json() == [google]

    # null clears: back to Google's endpoint and paid keys first.
    cleared = client.patch(
        "/v1/providers/google", json={"base_url": None, "prefer": None}, headers=admin
    ).json()
    assert cleared["base_url"] == "https://generativelanguage.googleapis.com/v1beta"
    assert cleared["image_keys_first"] == "paid"
    assert stat.S_IMODE((home / "providers.toml").stat().st_mode) == 0o600

    before = (home / "providers.toml").read_bytes()
    for body, status, said in (
        ({}, 422, "nothing to change"),
        ({"kind": "openai"}, 422, "kind"),
        ({"prefer": "gold"}, 422, "prefer"),
        ({"base_url": "ftp://h/v1"}, 422, "http(s) URL"),
    ):
        answer = client.patch("/v1/providers/google", json=body, headers=admin)
        assert answer.status_code == status, (body, answer.text)
        assert said in answer.json()["error"], answer.text
    missing = client.patch("/v1/providers/nope", json={"model": "m"}, headers=admin)
    assert missing.status_code == 404 and "no provider named 'nope'" in missing.text
    assert (home / "providers.toml").read_bytes() == before


def test_bad_input_is_refused_without_quoting_the_key(served, home: Path) -> None:
    api, admin, _ = served
    client = api.client
    client.post("/v1/providers", json={"name": "google", "kind": "gemini"}, headers=admin)
    before = (home / "providers.toml").read_bytes()

    def error(method: str, path: str, body: object, status: int = 422) -> str:
        answer = client.request(method, path, json=body, headers=admin)
        assert answer.status_code == status, answer.text
        return answer.json()["error"]

    assert "already exists" in error(
        "POST", "/v1/providers", {"name": "google", "kind": "gemini"}, 409
    )
    assert "kind" in error("POST", "/v1/providers", {"name": "x", "kind": "claude"})
    bad_url = {"name": "x", "kind": "openai", "base_url": "ftp://h/v1", "model": "m"}
    assert "http(s) URL" in error("POST", "/v1/providers", bad_url)
    assert "no provider named 'nope'" in error(
        "POST", "/v1/providers/nope/keys", {"key": GOOD}, 404
    )
    assert "no provider named 'nope'" in error("DELETE", "/v1/providers/nope", None, 404)
    assert "no provider named 'nope'" in error("POST", "/v1/providers/nope/test", None, 404)
    secret = "AIzaSy-secret-never-shown-1234"
    for body in (
        {"key": secret, "tier": "gold"},
        {"key": secret, "extra": 1},
        [secret],
        {"key": secret + "\x00"},
        {"key": secret * 200},
        {"key": 12345},
    ):
        message = error("POST", "/v1/providers/google/keys", body)
        assert secret not in message and "12345" not in message, message
    assert (home / "providers.toml").read_bytes() == before


def test_testing_a_provider_says_which_key_works_and_the_list_remembers(served) -> None:
    api, admin, _ = served
    client = api.client
    with FakeGeminiServer(api_keys=[GOOD]) as server:
        client.post(
            "/v1/providers",
            json={"name": "google", "kind": "gemini", "base_url": server.base_url},
            headers=admin,
        )
        for key in (BAD, GOOD):
            client.post("/v1/providers/google/keys", json={"key": key}, headers=admin)
        answer = client.post("/v1/providers/google/test", headers=admin)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["working"] == 1 and result["url"] == f"{server.base_url}/models"
    assert [(c["key"], c["ok"]) for c in result["checks"]] == [
        ("AIz…wxyz", False),
        ("AIz…abcd", True),
    ]
    assert "refused the key" in result["checks"][0]["message"]
    keys = client.get("/v1/providers", headers=admin).json()[0]["keys"]
    assert "refused the key" in keys[0]["last_error"] and keys[1]["last_error"] is None
    assert GOOD not in answer.text and BAD not in answer.text
