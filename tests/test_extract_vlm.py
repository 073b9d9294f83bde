"""The VLM Character Extractor and provider keys, against a real chat-completions server."""

from __future__ import annotations

import base64
import io
import json
import os
import stat

import pytest
from PIL import Image

from castbook.errors import BackendError, FieldError, UnsupportedImageError
from castbook.extract.keys import (
    KeyRing,
    ProviderConfig,
    ProviderKey,
    load_providers,
    save_provider_key,
)
from castbook.extract.schema import EXTRACTION_JSON_SCHEMA, UNKNOWN
from castbook.extract.vlm import extract_with_vlm
from tests.support.fake_chat_server import GOOD_ANSWER, ChatReply, FakeChatServer, answer_json

FREE = "sk-free-0123456789abcdefFREE"
PAID = "sk-paid-0123456789abcdefPAID"
FREE2 = "sk-free-9876543210fedcbaFRE2"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def server():
    with FakeChatServer() as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock()


def provider_for(server: FakeChatServer, *keys: ProviderKey) -> ProviderConfig:
    return ProviderConfig("openai", server.base_url, "gpt-4o-mini", keys)


def two_keys() -> tuple[ProviderKey, ProviderKey]:
    # Paid first on purpose: the ring must still try the free key first.
    return ProviderKey("openai", PAID, "paid"), ProviderKey("openai", FREE, "free")


def assert_no_secret(text: str) -> None:
    for secret in (FREE, PAID, FREE2):
        assert secret not in text
        assert secret[8:] not in text


# ---------------------------------------------------------------------- extraction


def test_good_answer_and_request_shape(server, clock):
    keys = two_keys()
    image = png_bytes()
    result = extract_with_vlm(
        image, provider_for(server, *keys), ring=KeyRing(keys, clock=clock), timeout=5
    )
    assert result.physical.hair == "long wavy red hair"
    assert result.accessories == ["silver pendant"]
    assert result.style_prompt == GOOD_ANSWER["style_prompt"]
    assert result.source == "vlm:openai/gpt-4o-mini"
    assert result.unfilled == []

    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.token == FREE
    body = request.json
    assert body["model"] == "gpt-4o-mini"
    assert body["temperature"] == 0
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "character", "schema": EXTRACTION_JSON_SCHEMA, "strict": True},
    }
    system, user = body["messages"]
    assert system["role"] == "system"
    for phrase in ("ONLY", "unknown", "empty list", "Never invent", "background", "1 to 3"):
        assert phrase in system["content"]
    parts = {part["type"]: part for part in user["content"]}
    assert parts["image_url"]["image_url"]["url"] == (
        "data:image/png;base64," + base64.b64encode(image).decode()
    )
    assert parts["text"]["text"]


def test_unknown_fields_become_unfilled(server):
    server.script(
        "*",
        ChatReply(
            content=answer_json(
                physical={"eyes": "unknown", "body": "Unknown"},
                clothing="",
                accessories=[],
                distinctive_features=["unknown"],
            )
        ),
    )
    result = extract_with_vlm(png_bytes(), provider_for(server), timeout=5)
    assert result.physical.eyes == UNKNOWN and result.physical.body == UNKNOWN
    assert result.clothing == UNKNOWN
    assert result.distinctive_features == []
    assert result.unfilled == [
        "physical.eyes",
        "physical.body",
        "clothing",
        "accessories",
        "distinctive_features",
    ]
    # A provider with no keys (a local server) sends no Authorization header.
    assert server.tokens() == [None]
    assert result.character_fields("Ada")["eyes"] == ""


def test_invalid_json_is_repaired_once(server):
    server.script("*", ChatReply(content="Sure! Here is the character: {hair: red"), ChatReply())
    keys = two_keys()
    result = extract_with_vlm(png_bytes(), provider_for(server, *keys), ring=KeyRing(keys))
    assert result.physical.hair == "long wavy red hair"
    first, second = server.requests
    assert len(second.messages) == len(first.messages) + 2
    assistant, repair = second.messages[-2:]
    assert assistant == {
        "role": "assistant",
        "content": "Sure! Here is the character: {hair: red",
    }
    assert repair["role"] == "user"
    assert "not valid character JSON" in repair["content"]
    assert "not JSON" in repair["content"]
    assert "only the corrected JSON" in repair["content"]
    assert second.json["response_format"] == first.json["response_format"]


def test_fenced_json_is_accepted(server):
    server.script("*", ChatReply(content="```json\n" + answer_json() + "\n```"))
    result = extract_with_vlm(png_bytes(), provider_for(server), timeout=5)
    assert result.clothing == GOOD_ANSWER["clothing"]
    assert len(server.requests) == 1


def test_schema_invalid_twice_is_an_error(server):
    bad = json.dumps({"description": "x", "physical": {"hair": 3}, "mood": "happy"})
    server.script("*", ChatReply(content=bad), ChatReply(content=answer_json(accessories="ring")))
    with pytest.raises(BackendError) as caught:
        extract_with_vlm(png_bytes(), provider_for(server), timeout=5)
    message = str(caught.value)
    assert "not valid character JSON after a repair attempt" in message
    assert "accessories" in message
    assert len(server.requests) == 2
    assert "unexpected mood" in server.requests[1].messages[-1]["content"]


# ---------------------------------------------------------------------- keys


def test_429_on_free_key_falls_back_to_paid_then_retries_after_cool_down(server, clock):
    keys = two_keys()
    ring = KeyRing(keys, clock=clock)
    provider = provider_for(server, *keys)
    server.script(
        FREE, ChatReply(status=429, message="Rate limit reached", code="rate_limit_exceeded")
    )
    result = extract_with_vlm(png_bytes(), provider, ring=ring, cool_down=60)
    assert result.source == "vlm:openai/gpt-4o-mini"
    assert server.tokens() == [FREE, PAID]
    assert [k.key for k in ring.ordered("openai")] == [PAID]

    extract_with_vlm(png_bytes(), provider, ring=ring, cool_down=60)
    assert server.tokens()[2:] == [PAID]  # the free key is still cooling down

    clock.now += 61
    extract_with_vlm(png_bytes(), provider, ring=ring, cool_down=60)
    assert server.tokens()[3:] == [FREE]  # tried again after its cool-down


@pytest.mark.parametrize(
    ("status", "code", "type_"),
    [(429, "insufficient_quota", "insufficient_quota"), (403, None, "insufficient_quota")],
)
def test_quota_errors_move_to_the_next_key(server, clock, status, code, type_):
    keys = (*two_keys(), ProviderKey("openai", FREE2, "free"))
    ring = KeyRing(keys, clock=clock)
    server.script(FREE, ChatReply(status=status, code=code, type=type_, message="quota {key}"))
    extract_with_vlm(png_bytes(), provider_for(server, *keys), ring=ring)
    assert server.tokens() == [FREE, FREE2]  # free keys first, then paid


def test_all_keys_exhausted_names_the_provider_with_masked_keys(server, clock):
    keys = two_keys()
    ring = KeyRing(keys, clock=clock)
    for key in (FREE, PAID):
        server.script(key, ChatReply(status=429, message="Too many requests for {key}"))
    with pytest.raises(BackendError) as caught:
        extract_with_vlm(png_bytes(), provider_for(server, *keys), ring=ring)
    message = str(caught.value)
    assert caught.value.status == 429
    assert "openai" in message and "rate-limited" in message
    assert keys[0].masked in message and keys[1].masked in message
    assert_no_secret(message)
    assert server.tokens() == [FREE, PAID]
    # Nothing left to try: the next call fails without a request.
    with pytest.raises(BackendError, match="every key for openai"):
        extract_with_vlm(png_bytes(), provider_for(server, *keys), ring=ring)
    assert len(server.requests) == 2


def test_401_is_reported_with_the_masked_key(server):
    keys = two_keys()
    server.script(FREE, ChatReply(status=401, message="Incorrect API key provided: {key}"))
    with pytest.raises(BackendError) as caught:
        extract_with_vlm(png_bytes(), provider_for(server, *keys), ring=KeyRing(keys))
    message = str(caught.value)
    assert caught.value.status == 401
    assert f"the key {keys[1].masked} for openai was refused" in message
    assert "Incorrect API key provided: ***" in message
    assert_no_secret(message)
    assert server.tokens() == [FREE]  # a refused key is not a reason to spend the paid one


def test_timeout(server):
    server.script("*", ChatReply(delay=2.0))
    with pytest.raises(BackendError, match=r"timed out after 0\.3 s"):
        extract_with_vlm(png_bytes(), provider_for(server), timeout=0.3)


def test_server_error_carries_the_message(server):
    server.script("*", ChatReply(status=503, message="model is loading", type="server_error"))
    with pytest.raises(BackendError, match="model is loading") as caught:
        extract_with_vlm(png_bytes(), provider_for(server), timeout=5)
    assert caught.value.status == 503


def test_provider_keys_join_a_ring_built_elsewhere(server):
    keys = two_keys()
    extract_with_vlm(png_bytes(), provider_for(server, *keys), ring=KeyRing(), timeout=5)
    assert server.tokens() == [FREE]


def test_not_an_image_is_refused_before_any_request(server):
    with pytest.raises(UnsupportedImageError):
        extract_with_vlm(b"hello", provider_for(server), timeout=5)
    assert server.requests == []


# ---------------------------------------------------------------------- config


def test_masking_and_reprs_never_show_keys():
    key = ProviderKey("openai", "sk-abcdefghijklmnopa1b2", "free", name="main")
    assert key.masked == "sk-…a1b2"
    assert ProviderKey("openai", "abcdefgh12").masked == "…12"
    assert ProviderKey("openai", "short").masked == "***"
    keys = (key, ProviderKey("openai", PAID, "paid"))
    config = ProviderConfig("openai", "https://api.openai.com/v1", "gpt-4o-mini", keys)
    ring = KeyRing(keys)
    for text in (repr(key), str(key), repr(config), str(config), repr(ring), str(ring)):
        assert "sk-abcdefghijklmnopa1b2" not in text and "abcdefghijklmnop" not in text
        assert_no_secret(text)
    assert "sk-…a1b2" in repr(config)
    with pytest.raises(FieldError):
        ProviderKey("openai", FREE, "gold")  # type: ignore[arg-type]


def test_providers_toml_is_private_and_round_trips(tmp_path):
    home = tmp_path / "home"
    path = save_provider_key(home, "openai", FREE, "free", name="personal")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    save_provider_key(home, "openai", PAID, "paid")
    save_provider_key(
        home,
        "local",
        "sk-local-key-000000000",
        base_url="http://127.0.0.1:11434/v1",
        model="llava",
    )
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in home.iterdir()] == ["providers.toml"]  # no temp file left

    providers = load_providers(home, environ={})
    assert [(p.name, p.base_url, p.model) for p in providers] == [
        ("openai", "https://api.openai.com/v1", "gpt-4o-mini"),
        ("local", "http://127.0.0.1:11434/v1", "llava"),
    ]
    openai = providers[0]
    assert [(k.key, k.tier, k.name) for k in openai.keys] == [
        (FREE, "free", "personal"),
        (PAID, "paid", ""),
    ]
    assert [k.key for k in KeyRing.from_providers(providers).ordered("openai")] == [FREE, PAID]
    for text in (repr(providers), str(providers)):
        assert_no_secret(text)
    # Saving a key again updates it instead of adding a copy.
    save_provider_key(home, "openai", FREE, "paid")
    assert [(k.tier) for k in load_providers(home, environ={})[0].keys] == ["paid", "paid"]

    with pytest.raises(FieldError) as caught:
        save_provider_key(home, "other", FREE2)  # a new non-openai provider needs a URL
    assert_no_secret(str(caught.value))


def test_broken_config_errors_do_not_leak_keys(tmp_path):
    (tmp_path / "providers.toml").write_text(
        f'[providers.openai]\n[[providers.openai.keys]]\nkey = "{FREE}"\ntier = "gold"\n'
    )
    (tmp_path / "providers.toml").chmod(0o600)  # private, so the content is what is refused
    with pytest.raises(FieldError, match="tier") as caught:
        load_providers(tmp_path, environ={})
    assert_no_secret(str(caught.value))
    (tmp_path / "providers.toml").write_text(f'key = "{FREE}\n')
    (tmp_path / "providers.toml").chmod(0o600)
    with pytest.raises(FieldError, match="not valid TOML") as caught:
        load_providers(tmp_path, environ={})
    assert_no_secret(str(caught.value))


def test_environment_configuration(tmp_path, server):
    assert load_providers(tmp_path, environ={}) == []
    env = {
        "CASTBOOK_EXTRACT_BASE_URL": server.base_url + "/",
        "CASTBOOK_EXTRACT_MODEL": "llava:13b",
        "CASTBOOK_EXTRACT_API_KEY": PAID,
    }
    save_provider_key(tmp_path, "openai", FREE, "free")
    first, second = load_providers(tmp_path, environ=env)
    assert (first.name, first.base_url, first.model) == ("env", server.base_url, "llava:13b")
    assert [(k.key, k.tier) for k in first.keys] == [(PAID, "paid")]
    assert second.name == "openai"
    assert_no_secret(repr(first))

    result = extract_with_vlm(png_bytes(), first, environ=env)
    assert result.source == "vlm:env/llava:13b"
    assert server.tokens() == [PAID]

    only_key = load_providers(tmp_path / "empty", environ={"CASTBOOK_EXTRACT_API_KEY": PAID})
    assert [(p.name, p.base_url, p.model) for p in only_key] == [
        ("env", "https://api.openai.com/v1", "gpt-4o-mini")
    ]
    with pytest.raises(FieldError):
        load_providers(tmp_path, environ={"CASTBOOK_EXTRACT_BASE_URL": "ftp://x"})
