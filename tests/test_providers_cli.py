"""``castbook providers``: providers and their keys in ``providers.toml`` from the command
line, keys read from stdin or a hidden prompt and shown masked only, and ``providers test``
against the suite's fake OpenAI, Gemini and ComfyUI servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from castbook.cli import providers as providers_cli
from tests.support.cli import castbook
from tests.support.fake_comfyui_server import FakeComfyUI
from tests.support.fake_gemini_server import FakeGeminiServer
from tests.support.fake_openai_server import FakeOpenAIServer

GOOD = "AIzaSy-good-key-0000000000abcd"
BAD = "AIzaSy-refused-key-00000000wxyz"
BUSY = "AIzaSy-busy-key-000000000000busy"


@pytest.fixture(autouse=True)
def no_env_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CASTBOOK_EXTRACT_BASE_URL", "CASTBOOK_EXTRACT_MODEL", "CASTBOOK_EXTRACT_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def ok(*args: str, input: str | None = None) -> str:
    code, out, err = castbook(*args, input=input)
    assert code == 0, out + err
    return out


def fails(*args: str, input: str | None = None) -> str:
    code, out, err = castbook(*args, input=input)
    assert code == 1, out + err
    return err


def listed() -> list[dict]:
    return json.loads(ok("providers", "list", "--json"))


def test_add_list_and_remove_keep_keys_masked_and_the_file_private(castbook_home: Path) -> None:
    assert "No providers yet" in ok("providers", "list")
    ok("providers", "add", "google", "--kind", "gemini", "--prefer", "free")
    added = ok("providers", "key", "add", "google", "--tier", "free", input=f"{GOOD}\n")
    assert "#1" in added and "AIz…abcd" in added and GOOD not in added
    ok("providers", "key", "add", "google", input=BAD)  # paid, the default
    ok("providers", "add", "local", "--kind", "openai", "--base-url", "http://127.0.0.1:9/v1/",
       "--model", "llava")  # fmt: skip

    path = castbook_home / "providers.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    google, local = listed()
    assert google["base_url"] == "https://generativelanguage.googleapis.com/v1beta"
    assert google["model"] == "gemini-2.5-flash-image"
    assert google["image_keys_first"] == "free"
    assert [(k["index"], k["key"], k["tier"]) for k in google["keys"]] == [
        (1, "AIz…abcd", "free"),
        (2, "AIz…wxyz", "paid"),
    ]
    assert local["base_url"] == "http://127.0.0.1:9/v1" and local["keys"] == []
    table = ok("providers", "list")
    assert "AIz…abcd" in table and "no keys" in table
    for text in (table, json.dumps(listed())):
        assert GOOD not in text and BAD not in text

    # The same key again changes its tier, not the count.
    again = ok("providers", "key", "add", "google", "--tier", "paid", input=GOOD)
    assert "Already there" in again
    assert [k["tier"] for k in listed()[0]["keys"]] == ["paid", "paid"]

    assert "AIz…wxyz" in ok("providers", "key", "remove", "google", "wxyz")  # by suffix
    assert "AIz…abcd" in ok("providers", "key", "remove", "google", "1")  # by index
    assert listed()[0]["keys"] == []
    assert "0 key(s)" in ok("providers", "remove", "google")
    assert [p["name"] for p in listed()] == ["local"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_hidden_prompt_reads_the_key_without_echoing_it(
    castbook_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok("providers", "add", "google", "--kind", "gemini")
    monkeypatch.setattr(providers_cli, "_stdin_is_piped", lambda: False)
    out = ok("providers", "key", "add", "google", "--tier", "free", input=f"{GOOD}\n")
    assert "API key (hidden)" in out and GOOD not in out
    assert listed()[0]["keys"][0]["key"] == "AIz…abcd"


def test_bad_input_is_named_and_leaves_the_file_as_it_was(castbook_home: Path) -> None:
    ok("providers", "add", "google", "--kind", "gemini")
    ok("providers", "key", "add", "google", input=GOOD)
    path = castbook_home / "providers.toml"
    before = path.read_bytes()

    assert "already exists" in fails("providers", "add", "google", "--kind", "gemini")
    assert "kind: must be one of openai, gemini, comfyui" in fails(
        "providers", "add", "x", "--kind", "claude"
    )
    assert "must be an http(s) URL" in fails(
        "providers", "add", "x", "--kind", "openai", "--base-url", "ftp://host/v1", "--model", "m"
    )
    assert "base_url: is required" in fails("providers", "add", "x", "--kind", "comfyui")
    assert "letters, digits" in fails("providers", "add", "a b", "--kind", "gemini")
    assert "CASTBOOK_EXTRACT_API_KEY" in fails("providers", "add", "env", "--kind", "openai")
    assert "no provider named 'nope'" in fails("providers", "key", "add", "nope", input=GOOD)
    assert "no provider named 'nope'" in fails("providers", "remove", "nope")
    assert "no provider named 'nope'" in fails("providers", "test", "nope")
    assert "tier: must be 'free' or 'paid'" in fails(
        "providers", "key", "add", "google", "--tier", "gold", input=GOOD
    )
    assert "exactly one key, got 2" in fails(
        "providers", "key", "add", "google", input=f"{GOOD}\n{BAD}\n"
    )
    assert "exactly one key, got 0" in fails("providers", "key", "add", "google", input="\n")
    assert "no key #5" in fails("providers", "key", "remove", "google", "5")
    assert "ends with 'zzzz'" in fails("providers", "key", "remove", "google", "zzzz")
    assert "last 4+ characters" in fails("providers", "key", "remove", "google", "cd")
    assert path.read_bytes() == before


def test_set_changes_url_model_and_tier_and_keeps_the_keys(castbook_home: Path) -> None:
    with FakeGeminiServer() as gone:
        dead = gone.base_url
    ok("providers", "add", "google", "--kind", "gemini", "--base-url", dead)
    ok("providers", "key", "add", "google", "--tier", "free", input=GOOD)
    path = castbook_home / "providers.toml"
    with FakeGeminiServer(api_keys=[GOOD]) as server:
        assert "no key of provider 'google' works" in fails("providers", "test", "google")
        assert "cannot reach" in listed()[0]["keys"][0]["last_error"]

        said = ok("providers", "set", "google", "--base-url", server.base_url + "/",
                  "--model", "gemini-3-pro-image-preview", "--prefer", "free")  # fmt: skip
        assert "free keys first" in said and "gemini-3-pro-image-preview" in said
        [google] = listed()
        assert google["base_url"] == server.base_url
        assert google["model"] == "gemini-3-pro-image-preview"
        assert google["prefer"] == "free" and google["image_keys_first"] == "free"
        # The key stays; the test of the old endpoint is forgotten.
        assert [(k["key"], k["tier"], k["checked_at"]) for k in google["keys"]] == [
            ("AIz…abcd", "free", None)
        ]
        assert "ok" in ok("providers", "test", "google")  # the new URL is the one used
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # "" clears a field back to the kind's default; --prefer paid turns the order round.
    ok("providers", "set", "google", "--base-url", "", "--model", "", "--prefer", "paid")
    [google] = listed()
    assert google["base_url"] == "https://generativelanguage.googleapis.com/v1beta"
    assert google["model"] == "gemini-2.5-flash-image"
    assert google["image_keys_first"] == "paid"

    before = path.read_bytes()
    assert "nothing to change" in fails("providers", "set", "google")
    assert "http(s) URL" in fails("providers", "set", "google", "--base-url", "ftp://h/v1")
    assert "prefer: must be 'free' or 'paid'" in fails(
        "providers", "set", "google", "--prefer", "gold"
    )
    assert "no provider named 'nope'" in fails("providers", "set", "nope", "--model", "m")
    ok("providers", "add", "local", "--kind", "openai", "--base-url", "http://127.0.0.1:9/v1",
       "--model", "llava")  # fmt: skip
    middle = path.read_bytes()
    # An OpenAI-compatible provider has no default model to fall back on.
    assert "model: is required" in fails("providers", "set", "local", "--model", "")
    assert path.read_bytes() == middle and before in middle


def test_a_file_every_user_can_read_is_refused_with_the_fix(castbook_home: Path) -> None:
    ok("providers", "add", "google", "--kind", "gemini")
    path = castbook_home / "providers.toml"
    os.chmod(path, 0o644)
    error = fails("providers", "list")
    assert f"chmod 600 {path}" in " ".join(error.split())
    assert "readable by every user" in fails("providers", "key", "add", "google", input=GOOD)


def test_gemini_keys_are_tested_one_by_one_and_the_outcome_is_listed(castbook_home: Path) -> None:
    with FakeGeminiServer(api_keys=[GOOD, BUSY]) as server:
        server.exhausted[BUSY] = "37s"
        ok("providers", "add", "google", "--kind", "gemini", "--base-url", server.base_url)
        for key in (BAD, GOOD, BUSY):
            ok("providers", "key", "add", "google", input=key)
        out = json.loads(ok("providers", "test", "google", "--json"))
        text = ok("providers", "test", "google")
        sent = [r for r in server.requests if r.method == "GET"]
    assert out["working"] == 1 and out["url"] == f"{server.base_url}/models"
    refused, works, busy = out["checks"]
    assert (works["key"], works["ok"]) == ("AIz…abcd", True)
    assert refused["ok"] is False and "refused the key" in refused["message"]
    assert "API key not valid" in refused["message"]
    assert busy["status"] == 429 and busy["retry_after"] == 37
    assert "wait 37 s" in busy["message"]
    assert "AIz…abcd (paid): ok" in " ".join(text.split())
    # The key travels in the header, the URL asks for one model only.
    assert {r.path for r in sent} == {"/v1beta/models?pageSize=1"}
    assert {r.key for r in sent} == {BAD, GOOD, BUSY}
    for text_out in (json.dumps(out), text):
        assert GOOD not in text_out and BAD not in text_out and BUSY not in text_out

    keys = listed()[0]["keys"]
    assert keys[0]["last_error"] and "refused" in keys[0]["last_error"]
    assert keys[1]["last_error"] is None and keys[1]["checked_at"]
    assert 0 < keys[2]["cooling_for"] <= 37
    assert "refused the key" in ok("providers", "list")


def test_openai_and_comfyui_providers_are_tested_with_their_own_calls(
    castbook_home: Path,
) -> None:
    with FakeOpenAIServer(api_key="sk-test-good-key-123456") as server:
        ok("providers", "add", "oa", "--kind", "openai", "--base-url", server.base_url,
           "--model", "gpt-4o-mini")  # fmt: skip
        ok("providers", "key", "add", "oa", "--tier", "free", input="sk-test-wrong-key-99999")
        error = fails("providers", "test", "oa")
        assert "no key of provider 'oa' works" in error
        ok("providers", "key", "add", "oa", input="sk-test-good-key-123456")
        out = json.loads(ok("providers", "test", "oa", "--json"))
        assert [c["ok"] for c in out["checks"]] == [False, True]
        assert out["checks"][0]["status"] == 401
        assert "1 model(s) listed" in out["checks"][1]["message"]
        auth = [r.headers.get("authorization") for r in server.requests if r.path == "/v1/models"]
        assert "Bearer sk-test-good-key-123456" in auth

    with FakeComfyUI() as comfy:
        ok("providers", "add", "comfy", "--kind", "comfyui", "--base-url", comfy.url)
        out = json.loads(ok("providers", "test", "comfy", "--json"))
        assert out["checks"] == [
            {"key": None, "tier": None, "ok": True, "status": 200,
             "message": "works (ComfyUI 0.3.fake)", "retry_after": None}
        ]  # fmt: skip
        assert "/system_stats" in comfy.paths("GET")

    # A provider whose server is gone: the error names the host, not a traceback.
    error = " ".join(fails("providers", "test", "comfy").split())
    assert "provider 'comfy' failed its check: cannot reach 127.0.0.1" in error
    ok("providers", "add", "empty", "--kind", "gemini")
    assert "has no keys" in fails("providers", "test", "empty")


def test_a_malformed_file_is_named_and_never_rewritten(castbook_home: Path) -> None:
    castbook_home.mkdir(parents=True, exist_ok=True)
    path = castbook_home / "providers.toml"
    path.write_text('[providers.broken]\nkind = "gemini"\n[[providers.broken.keys]]\ntier = "x"\n')
    os.chmod(path, 0o600)
    before = path.read_bytes()
    assert "providers.broken.keys[0]" in fails("providers", "add", "other", "--kind", "gemini")
    assert "providers.broken.keys[0]" in fails("providers", "key", "remove", "broken", "1")
    assert path.read_bytes() == before
