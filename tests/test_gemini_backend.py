"""The Gemini image backend against a real HTTP server on 127.0.0.1 speaking the API's JSON."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from castbook.blobs import BlobStore
from castbook.db import Database
from castbook.errors import (
    BackendError,
    FieldError,
    GenerationCancelled,
    MissingDependencyError,
    ModelNotAvailableError,
)
from castbook.generation.base import PreparedRequest, Progress
from castbook.generation.gemini_backend import GeminiImagesBackend, nearest_aspect_ratio
from castbook.generation.prepare import (
    create_backend,
    prepare_request,
    reference_room,
    resolve_request,
    run_generation,
)
from castbook.generation.presets import BUILTIN_PRESETS, Preset
from castbook.generation.request import GenerationRequest, Mode
from castbook.library import CharacterLibrary, ImageInput
from castbook.providers import save_provider_key
from tests.conftest import make_image_bytes
from tests.support.backend_contract import BackendContract
from tests.support.fake_gemini_server import FakeGeminiServer, Reply, color_for, size_for

KEY = "AIzaSyTEST-0123456789abcdefghij"
FREE = "AIzaSyFREE-0123456789abcdefghij"
PAID = "AIzaSyPAID-0123456789abcdefghij"
ALL_KEYS = (KEY, FREE, PAID)
PRESET = next(p for p in BUILTIN_PRESETS if p.id == "gemini-image")
PROMPT = "a portrait of Mara"

Prepare = Callable[..., PreparedRequest]


@pytest.fixture
def server() -> Iterator[FakeGeminiServer]:
    with FakeGeminiServer(api_keys=ALL_KEYS) as running:
        yield running


def make_backend(
    server: FakeGeminiServer, preset: Preset = PRESET, **kwargs: object
) -> GeminiImagesBackend:
    options: dict[str, object] = {
        "api_key": KEY,
        "timeout": 10.0,
        "backoff": 0.01,
        "max_retries": 2,
        "environ": {},
        **kwargs,
    }
    return GeminiImagesBackend(preset, base_url=server.base_url, **options)  # type: ignore[arg-type]


def with_options(**options: object) -> Preset:
    return dataclasses.replace(PRESET, options={**PRESET.options, **options})


@pytest.fixture
def backend(server: FakeGeminiServer) -> GeminiImagesBackend:
    return make_backend(server)


def picture(color: tuple[int, int, int], size: tuple[int, int] = (64, 80)) -> Image.Image:
    return Image.new("RGB", size, color)


@pytest.fixture
def prepare() -> Prepare:
    def build(
        *,
        prompt: str = PROMPT,
        negative_prompt: str = "",
        references: tuple[Image.Image, ...] = (),
        init_image: Image.Image | None = None,
        **fields: object,
    ) -> PreparedRequest:
        fields.setdefault("width", 256)
        fields.setdefault("height", 256)
        if init_image is not None:
            fields.setdefault("mode", Mode.I2I)
            fields.setdefault("init_image", "init-blob")
        request = GenerationRequest(prompt=prompt, negative_prompt=negative_prompt, **fields)
        return PreparedRequest(
            request=request,
            prompt=prompt,
            negative_prompt=negative_prompt,
            seed=request.seed if request.seed is not None else 42,
            references=references,
            init_image=init_image,
            options=dict(PRESET.options),
        )

    return build


def background(image: Image.Image) -> tuple[int, int, int]:
    # The fake draws an oval in the middle; the top-left corner keeps the background.
    return image.convert("RGB").getpixel((2, 2))


def assert_no_key(text: str) -> None:
    for secret in ALL_KEYS:
        assert secret not in text


class TestContract(BackendContract):
    deterministic = False
    reports_steps = False


# ------------------------------------------------------------------ configuration


def test_reads_base_url_and_key_from_the_environment(server: FakeGeminiServer, tmp_path: Path):
    env = {
        "CASTBOOK_GEMINI_BASE_URL": server.base_url + "/",
        "GEMINI_API_KEY": KEY,
        "CASTBOOK_HOME": str(tmp_path),
    }
    backend = GeminiImagesBackend(PRESET, environ=env)
    assert backend.base_url == server.base_url
    assert backend.host == f"127.0.0.1:{server.port}"
    assert_no_key(repr(backend))
    result = backend.generate(make_request(), lambda _: None)
    assert server.keys_used() == [KEY]
    assert result.metadata["key_tiers"] == ["paid"]


def make_request(**fields: object) -> PreparedRequest:
    request = GenerationRequest(prompt=PROMPT, width=256, height=256, **fields)
    return PreparedRequest(request=request, prompt=PROMPT, negative_prompt="", seed=1)


def test_defaults_to_googles_endpoint(tmp_path: Path) -> None:
    backend = GeminiImagesBackend(PRESET, environ={"CASTBOOK_HOME": str(tmp_path)})
    assert backend.base_url == "https://generativelanguage.googleapis.com/v1beta"
    assert backend.max_references == 3


def test_missing_key_names_both_places_before_any_call(
    server: FakeGeminiServer, tmp_path: Path, prepare: Prepare
) -> None:
    env = {"CASTBOOK_HOME": str(tmp_path), "CASTBOOK_GEMINI_BASE_URL": server.base_url}
    backend = GeminiImagesBackend(PRESET, environ=env)  # building needs no key
    with pytest.raises(BackendError, match="GEMINI_API_KEY") as caught:
        backend.generate(prepare(), lambda _: None)
    assert "providers.toml" in str(caught.value)
    assert server.requests == []


def test_rejects_a_base_url_that_is_not_http(tmp_path: Path) -> None:
    with pytest.raises(FieldError, match="base_url"):
        GeminiImagesBackend(PRESET, base_url="ftp://example.com", api_key="k", environ={})


def test_a_named_provider_must_exist(tmp_path: Path) -> None:
    preset = with_options(provider="google")
    with pytest.raises(FieldError, match="no provider 'google' of kind gemini"):
        GeminiImagesBackend(preset, environ={"CASTBOOK_HOME": str(tmp_path)})


def test_the_preset_is_built_in_and_its_reference_cap_is_known_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASTBOOK_HOME", str(tmp_path))
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    assert isinstance(create_backend(PRESET), GeminiImagesBackend)
    # Submissions ask the backend's room before anything runs: known without any key.
    assert reference_room(PRESET) == 3
    assert reference_room(with_options(max_images=14)) == 14


# ------------------------------------------------------------------ what is sent


def test_t2i_sends_the_prompt_and_the_generation_config(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    result = backend.generate(prepare(width=256, height=320, seed=9), lambda _: None)

    [sent] = server.generate_requests()
    assert sent.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY
    assert "key=" not in sent.path  # the key travels in a header, never in the URL
    assert sent.json == {
        "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": {"aspectRatio": "4:5"},
        },
    }
    [image] = result.images
    assert image.size == (256, 320)
    assert background(image) == color_for(PROMPT)  # the prompt arrived
    assert result.seed == 9
    meta = result.metadata
    assert meta["backend"] == "gemini"
    assert meta["model"] == "gemini-2.5-flash-image"
    assert meta["endpoint"] == "models/gemini-2.5-flash-image:generateContent"
    assert meta["aspect_ratio"] == "4:5"
    assert meta["size_requested"] == "256x320"
    assert meta["size_returned"] == ["224x288"]  # 896x1152 from the fake, shrunk by 4
    assert meta["resized"] is True
    assert meta["seed_reproducible"] is False
    assert meta["model_text"] == "Here is the picture you asked for."
    assert "image_size" not in meta
    assert_no_key(repr(meta))


def test_negative_prompt_is_appended(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    result = backend.generate(prepare(negative_prompt="glasses"), lambda _: None)
    [sent] = server.generate_requests()
    assert sent.parts[0] == {"text": f"{PROMPT}\n\nAvoid: glasses"}
    assert "negative_prompt" in result.metadata


def test_references_go_as_inline_parts_after_the_prompt(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    refs = (picture((255, 0, 0)), picture((0, 255, 0)), picture((0, 0, 255), (50, 50)))
    result = backend.generate(prepare(references=refs), lambda _: None)

    [sent] = server.generate_requests()
    assert "text" in sent.parts[0] and len(sent.parts) == 4
    inline = sent.inline_images()
    assert [mime for mime, _ in inline] == ["image/png"] * 3
    decoded = [Image.open(io.BytesIO(data)) for _, data in inline]
    assert [i.convert("RGB").getpixel((0, 0)) for i in decoded] == [
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
    ]
    assert decoded[2].size == (50, 50)
    assert result.metadata["images_sent"] == 3


def test_i2i_sends_the_init_image_first(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    init = picture((9, 9, 9))
    refs = (picture((255, 0, 0)), picture((0, 255, 0)))
    result = backend.generate(prepare(init_image=init, references=refs), lambda _: None)
    [sent] = server.generate_requests()
    colours = [
        Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0))
        for _, data in sent.inline_images()
    ]
    assert colours == [(9, 9, 9), (255, 0, 0), (0, 255, 0)]
    assert result.metadata["ignored"] == ["denoise"]


@pytest.fixture
def small_library(tmp_path: Path) -> Iterator[CharacterLibrary]:
    database = Database(f"sqlite:///{tmp_path / 'castbook.db'}")
    yield CharacterLibrary(database, BlobStore(tmp_path / "blobs"))
    database.dispose()


def test_a_characters_stored_reference_is_sent_byte_for_byte_with_the_injected_prompt(
    server: FakeGeminiServer, backend: GeminiImagesBackend, small_library: CharacterLibrary
) -> None:
    small_library.create(
        {"name": "Alice", "style_prompt": "long black hair, blue eyes"},
        [ImageInput(make_image_bytes((200, 20, 20)), "alice.png")],
    )
    small_library.create(
        {"name": "Bob", "style_prompt": "red beard"},
        [ImageInput(make_image_bytes((20, 20, 200), fmt="JPEG"), "bob.jpg")],
    )
    request = resolve_request(
        {"prompt": "at a cafe", "characters": ["alice", "bob"], "width": 512, "height": 512},
        PRESET,
    )
    prepared = prepare_request(request, PRESET, library=small_library)
    result = run_generation(backend, prepared, lambda _: None)

    [sent] = server.generate_requests()
    assert sent.parts[0] == {"text": prepared.prompt}
    assert "long black hair, blue eyes" in prepared.prompt and "red beard" in prepared.prompt
    stored = [
        small_library.image_bytes(small_library.get(name).primary_image)
        for name in ("Alice", "Bob")
    ]
    assert [data for _, data in sent.inline_images()] == stored
    # Sent as stored, not re-encoded: the JPEG stays a JPEG.
    assert [mime for mime, _ in sent.inline_images()] == ["image/png", "image/jpeg"]
    assert result.metadata["aspect_ratio"] == "1:1"


def test_more_references_than_the_model_takes_is_refused_before_any_call(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    four = tuple(picture((i, i, i)) for i in range(4))
    with pytest.raises(FieldError, match="at most 3"):
        run_generation(backend, prepare(references=four), lambda _: None)
    with pytest.raises(FieldError, match=r"at most 3 images per request \(the init image"):
        backend.generate(prepare(init_image=picture((1, 1, 1)), references=four[:3]), print)
    assert server.requests == []
    # A model that takes more: the preset says so.
    roomy = make_backend(server, preset=with_options(max_images=14))
    assert len(roomy.generate(prepare(references=four), lambda _: None).images) == 1


@pytest.mark.parametrize(
    ("size", "ratio"),
    [
        ((1024, 1024), "1:1"),
        ((256, 320), "4:5"),
        ((768, 1024), "3:4"),
        ((1536, 864), "16:9"),
        ((864, 1536), "9:16"),
        ((1536, 640), "21:9"),
        ((1200, 800), "3:2"),
        ((1000, 1100), "1:1"),
    ],
)
def test_sizes_map_to_the_nearest_aspect_ratio(size: tuple[int, int], ratio: str) -> None:
    assert nearest_aspect_ratio(*size) == ratio


def test_a_model_with_image_sizes_gets_the_smallest_that_covers_the_request(
    server: FakeGeminiServer, prepare: Prepare
) -> None:
    pro = dataclasses.replace(PRESET, model="gemini-3-pro-image-preview")
    backend = make_backend(server, preset=pro)
    assert backend.max_references == 14
    big = backend.generate(prepare(width=1536, height=864), lambda _: None)
    small = backend.generate(prepare(width=512, height=512), lambda _: None)
    first, second = server.generate_requests()
    assert first.json["generationConfig"]["imageConfig"] == {
        "aspectRatio": "16:9",
        "imageSize": "2K",
    }
    assert second.json["generationConfig"]["imageConfig"]["imageSize"] == "1K"
    assert big.metadata["image_size"] == "2K"
    assert big.metadata["size_returned"] == ["{}x{}".format(*size_for("16:9", "2K"))]
    assert big.images[0].size == (1536, 864)
    assert small.metadata["image_size"] == "1K"


def test_a_batch_is_one_request_per_image_within_the_concurrency_limit(
    server: FakeGeminiServer, prepare: Prepare
) -> None:
    backend = make_backend(server, preset=with_options(max_concurrent=2))
    server.script(*[Reply(delay=0.3)] * 4)
    events: list[Progress] = []
    result = backend.generate(prepare(batch=4), events.append)
    assert len(result.images) == 4
    assert len(server.generate_requests()) == 4
    assert server.max_in_flight == 2
    assert result.metadata["calls"] == 4
    assert [e.step for e in events] == sorted(e.step for e in events)
    assert events[-1] == Progress(4, 4, "done")


def test_one_failed_image_fails_the_batch_without_waiting_for_the_others(
    server: FakeGeminiServer, prepare: Prepare
) -> None:
    backend = make_backend(server, preset=with_options(max_concurrent=2))
    server.script(Reply(status=400, message="Unsupported prompt."), Reply(delay=6))
    started = time.monotonic()
    with pytest.raises(BackendError, match="bad request: Unsupported prompt"):
        backend.generate(prepare(batch=4), lambda _: None)
    assert time.monotonic() - started < 5  # the slow one in flight is not waited for
    # The images not yet started are never sent (the second may not have gone out yet).
    assert 1 <= len(server.generate_requests()) <= 2


def test_a_thought_draft_is_not_taken_for_the_answer(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(kind="thought_first"))
    result = backend.generate(prepare(), lambda _: None)
    assert background(result.images[0]) == color_for(PROMPT)


# ------------------------------------------------------------------ keys


def write_providers(home: Path, *entries: tuple[str, str], prefer: str | None = None) -> None:
    for key, tier in entries:
        save_provider_key(home, "google", key, tier, kind="gemini")  # type: ignore[arg-type]
    if prefer is not None:
        path = home / "providers.toml"
        text = path.read_text().replace('kind = "gemini"', f'kind = "gemini"\nprefer = "{prefer}"')
        path.write_text(text)
        os.chmod(path, 0o600)


def provider_backend(server: FakeGeminiServer, home: Path, **kwargs: object) -> GeminiImagesBackend:
    env = {"CASTBOOK_HOME": str(home), "CASTBOOK_GEMINI_BASE_URL": server.base_url}
    options: dict[str, object] = {"backoff": 0.01, "timeout": 10.0, **kwargs}
    return GeminiImagesBackend(PRESET, environ=env, **options)  # type: ignore[arg-type]


def test_image_work_uses_paid_keys_first_and_moves_on_after_a_429(
    server: FakeGeminiServer, tmp_path: Path, prepare: Prepare
) -> None:
    write_providers(tmp_path, (FREE, "free"), (PAID, "paid"))
    backend = provider_backend(server, tmp_path)
    server.exhausted[PAID] = "30s"
    events: list[Progress] = []
    result = backend.generate(prepare(), events.append)
    assert server.keys_used() == [PAID, FREE]
    assert result.metadata["key_tiers"] == ["free"]
    assert any("rate-limited" in e.message for e in events)
    assert_no_key(" ".join(e.message for e in events))
    # The paid key cools down for the server's retryDelay: the next picture skips it.
    backend.generate(prepare(), lambda _: None)
    assert server.keys_used()[-1] == FREE
    assert len(server.keys_used()) == 3


def test_prefer_free_turns_the_order_round(
    server: FakeGeminiServer, tmp_path: Path, prepare: Prepare
) -> None:
    write_providers(tmp_path, (PAID, "paid"), (FREE, "free"), prefer="free")
    provider_backend(server, tmp_path).generate(prepare(), lambda _: None)
    assert server.keys_used() == [FREE]


def test_the_env_key_joins_the_providers_keys_and_new_keys_are_read_at_once(
    server: FakeGeminiServer, tmp_path: Path, prepare: Prepare
) -> None:
    env = {
        "CASTBOOK_HOME": str(tmp_path),
        "CASTBOOK_GEMINI_BASE_URL": server.base_url,
        "GEMINI_API_KEY": KEY,
    }
    backend = GeminiImagesBackend(PRESET, environ=env, backoff=0.01)
    backend.generate(prepare(), lambda _: None)
    write_providers(tmp_path, (PAID, "paid"))  # added while the backend lives
    backend.generate(prepare(), lambda _: None)
    assert server.keys_used() == [KEY, PAID]


def test_one_sdk_client_per_key_is_kept_and_dropped_with_its_key(
    server: FakeGeminiServer, tmp_path: Path, prepare: Prepare
) -> None:
    from castbook.providers.manage import remove_key

    write_providers(tmp_path, (PAID, "paid"))
    backend = provider_backend(server, tmp_path)
    backend.generate(prepare(), lambda _: None)
    client = backend._clients[PAID]  # building one loads CA certificates: kept
    backend.generate(prepare(), lambda _: None)
    assert backend._clients[PAID] is client
    remove_key(tmp_path, "google", 1)
    write_providers(tmp_path, (FREE, "free"))
    backend.generate(prepare(), lambda _: None)
    assert server.keys_used() == [PAID, PAID, FREE]
    assert set(backend._clients) == {FREE}


def test_when_every_key_is_cooling_it_waits_for_the_servers_delay(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(status=429, error_status="RESOURCE_EXHAUSTED", retry_delay="0.4s"))
    events: list[Progress] = []
    started = time.monotonic()
    result = backend.generate(prepare(), events.append)
    assert time.monotonic() - started >= 0.4
    assert len(result.images) == 1
    assert server.keys_used() == [KEY, KEY]
    assert result.metadata["attempts"] == 2
    assert any(e.message.startswith("every key is rate-limited") for e in events)


def test_every_key_exhausted_is_a_429_naming_the_masked_keys(
    server: FakeGeminiServer, tmp_path: Path, prepare: Prepare
) -> None:
    write_providers(tmp_path, (FREE, "free"), (PAID, "paid"))
    backend = provider_backend(server, tmp_path, max_retries=1)
    server.exhausted.update({FREE: "0.05s", PAID: "0.05s"})
    with pytest.raises(BackendError, match="rate limited") as caught:
        backend.generate(prepare(), lambda _: None)
    error = str(caught.value)
    assert caught.value.status == 429
    assert "exceeded your current quota" in error
    assert "AIz…ghij (free)" in error and "AIz…ghij (paid)" in error
    assert_no_key(error)
    # Both keys tried, then tried again once their delay passed; never more than each key
    # 1 + max_retries times (how many exactly depends on timing).
    used = server.keys_used()
    assert set(used[:2]) == {FREE, PAID}
    assert 3 <= len(used) <= 4


def test_a_retry_delay_too_long_gives_up_at_once(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(status=429, error_status="RESOURCE_EXHAUSTED", retry_delay="3600s"))
    started = time.monotonic()
    with pytest.raises(BackendError, match="next one free in 3600 s"):
        backend.generate(prepare(), lambda _: None)
    assert time.monotonic() - started < 5
    assert len(server.generate_requests()) == 1


# ------------------------------------------------------------------ errors


def test_a_wrong_key_names_the_masked_key_and_is_not_retried(
    server: FakeGeminiServer, prepare: Prepare
) -> None:
    wrong = "AIzaSyWRONG-987654321zyxwvuts"
    backend = make_backend(server, api_key=wrong)
    with pytest.raises(BackendError) as caught:
        backend.generate(prepare(), lambda _: None)
    error = str(caught.value)
    assert caught.value.status == 400
    assert "API key not valid" in error  # the server's own message
    assert "AIz…vuts" in error
    assert wrong not in error and wrong not in repr(caught.value.args)
    assert len(server.generate_requests()) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_name_the_masked_key(
    server: FakeGeminiServer, tmp_path: Path, prepare: Prepare, status: int
) -> None:
    write_providers(tmp_path, (PAID, "paid"))
    backend = provider_backend(server, tmp_path)
    server.script(Reply(status=status, message="Permission denied", error_status="DENIED"))
    with pytest.raises(BackendError) as caught:
        backend.generate(prepare(), lambda _: None)
    error = str(caught.value)
    assert caught.value.status == status
    assert "AIz…ghij" in error and "provider 'google'" in error
    assert_no_key(error)


def test_400_carries_the_servers_message_and_is_not_retried(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    server.script(
        Reply(status=400, message="Request contains an invalid argument.", error_status="X")
    )
    with pytest.raises(BackendError, match="bad request: Request contains an invalid argument"):
        backend.generate(prepare(), lambda _: None)
    assert len(server.generate_requests()) == 1


def test_unknown_model(server: FakeGeminiServer, prepare: Prepare) -> None:
    backend = make_backend(server, preset=dataclasses.replace(PRESET, model="gemini-9-nope"))
    with pytest.raises(ModelNotAvailableError, match="gemini-9-nope"):
        backend.generate(prepare(), lambda _: None)


def test_a_blocked_prompt_is_a_safety_error(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(kind="prompt_blocked", block_reason="PROHIBITED_CONTENT"))
    with pytest.raises(
        BackendError, match=r"blocked by the provider's safety filter: .*PROHIBITED_CONTENT"
    ):
        backend.generate(prepare(), lambda _: None)
    assert len(server.generate_requests()) == 1


@pytest.mark.parametrize("reason", ["IMAGE_SAFETY", "PROHIBITED_CONTENT", "SAFETY"])
def test_a_blocked_picture_is_a_safety_error(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare, reason: str
) -> None:
    server.script(Reply(kind="finish", finish_reason=reason))
    with pytest.raises(BackendError, match=f"blocked by the provider's safety filter: .*{reason}"):
        backend.generate(prepare(), lambda _: None)


def test_a_text_only_answer_says_what_the_model_said(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(kind="text_only", text="I can't draw that person, sorry."))
    with pytest.raises(
        BackendError, match="the model answered with text only: I can't draw that person"
    ):
        backend.generate(prepare(), lambda _: None)


def test_no_image_and_no_text(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(kind="finish", finish_reason="NO_IMAGE"))
    with pytest.raises(BackendError, match=r"no image .*NO_IMAGE"):
        backend.generate(prepare(), lambda _: None)


def test_bad_image_data_is_a_backend_error(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(kind="bad_b64"))
    with pytest.raises(BackendError, match="not valid base64"):
        backend.generate(prepare(), lambda _: None)
    server.script(Reply(raw_body=b"<html>oops</html>"))
    with pytest.raises(BackendError, match="not JSON"):
        backend.generate(prepare(), lambda _: None)


def test_5xx_is_retried_then_succeeds(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(status=500, error_status="INTERNAL"), Reply(status=503))
    assert len(backend.generate(prepare(), lambda _: None).images) == 1
    assert len(server.generate_requests()) == 3


def test_5xx_retries_are_bounded(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    server.script(*[Reply(status=500, message="An internal error has occurred.")] * 3)
    with pytest.raises(BackendError, match="An internal error has occurred") as caught:
        backend.generate(prepare(), lambda _: None)
    assert caught.value.status == 500
    assert len(server.generate_requests()) == 3


def test_timeout_says_how_long_it_waited_and_is_not_resent(
    server: FakeGeminiServer, prepare: Prepare
) -> None:
    backend = make_backend(server, timeout=0.3)
    server.script(Reply(delay=6))
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"timed out after 0\.3 s") as caught:
        backend.generate(prepare(), lambda _: None)
    assert time.monotonic() - started < 5
    assert caught.value.status is None
    assert len(server.generate_requests()) == 1


def test_the_sdks_own_retries_are_off(server: FakeGeminiServer, prepare: Prepare) -> None:
    # The SDK would retry 429/5xx/timeouts itself if asked; castbook asks it not to, so a
    # 503 with max_retries 0 is one request, and a 429's next try is castbook's (next key).
    backend = make_backend(server, max_retries=0)
    server.script(Reply(status=503, message="The model is overloaded.", error_status="UNAVAILABLE"))
    with pytest.raises(BackendError, match=r"The model is overloaded\. \(once\)") as caught:
        backend.generate(prepare(), lambda _: None)
    assert caught.value.status == 503
    assert len(server.generate_requests()) == 1


def test_retry_after_header_when_the_error_has_no_retry_info(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    server.script(
        Reply(status=429, error_status="RESOURCE_EXHAUSTED", headers={"Retry-After": "1"})
    )
    started = time.monotonic()
    assert len(backend.generate(prepare(), lambda _: None).images) == 1
    assert time.monotonic() - started >= 1.0
    assert server.keys_used() == [KEY, KEY]


def test_a_base_url_without_a_version_is_used_as_it_is(
    server: FakeGeminiServer, prepare: Prepare
) -> None:
    # A proxy's own path: the SDK must not add its default API version to it.
    backend = GeminiImagesBackend(PRESET, base_url=server.origin, api_key=KEY, environ={})
    with pytest.raises(ModelNotAvailableError, match="Unknown path /models/"):
        backend.generate(prepare(), lambda _: None)


def test_without_the_sdk_the_error_names_the_extra(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "google", None)  # makes `from google import genai` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'castbook\[gemini\]'"):
        backend.generate(prepare(), lambda _: None)
    assert server.requests == []


def _chain(error: BaseException | None) -> str:
    """The text of an exception and of everything it was raised from or during."""
    seen = []
    while error is not None and len(seen) < 10:
        seen.append(f"{type(error).__name__}: {error} {error.args!r}")
        error = error.__cause__ or error.__context__
    return "\n".join(seen)


def test_no_key_reaches_a_log_line_or_an_exception_chain(
    server: FakeGeminiServer, tmp_path: Path, prepare: Prepare, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: castbook's, the SDK's, httpx's
    write_providers(tmp_path, (FREE, "free"), (PAID, "paid"))
    backend = provider_backend(server, tmp_path)
    server.script(
        Reply(status=429, error_status="RESOURCE_EXHAUSTED", retry_delay="30s"),  # paid → free
        Reply(status=500, error_status="INTERNAL"),  # retried
        Reply(status=403, message="Permission denied", error_status="PERMISSION_DENIED"),
    )
    texts = []
    with pytest.raises(BackendError) as caught:
        backend.generate(prepare(), lambda event: texts.append(event.message))
    assert "AIz…ghij" in str(caught.value)
    assert server.keys_used() == [PAID, FREE, FREE]
    server.script(Reply(delay=6))
    with pytest.raises(BackendError, match="timed out") as timed_out:
        make_backend(server, timeout=0.3).generate(prepare(), lambda _: None)
    text = "\n".join([caplog.text, *texts, _chain(caught.value), _chain(timed_out.value)])
    assert ":generateContent" in caplog.text  # the HTTP client's request lines were captured
    assert_no_key(text)
    assert caught.value.__cause__ is None  # the SDK's exception is not attached


def test_unreachable_server(prepare: Prepare) -> None:
    with FakeGeminiServer() as gone:
        url = gone.base_url
    backend = GeminiImagesBackend(PRESET, base_url=url, api_key=KEY, timeout=2, environ={})
    with pytest.raises(BackendError, match=r"cannot reach 127\.0\.0\.1"):
        backend.generate(prepare(), lambda _: None)


def test_a_key_echoed_by_the_server_is_redacted(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(status=400, message=f"bad key {KEY} in request"))
    with pytest.raises(BackendError) as caught:
        backend.generate(prepare(), lambda _: None)
    assert_no_key(str(caught.value))
    assert "bad key *** in request" in str(caught.value)


# ------------------------------------------------------------------ cancelling


def test_cancelling_before_the_request_sends_nothing(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    def cancel(_: Progress) -> None:
        raise GenerationCancelled("stop")

    with pytest.raises(GenerationCancelled):
        backend.generate(prepare(batch=3), cancel)
    assert server.requests == []


def test_cancelling_while_waiting_for_a_key(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(status=429, error_status="RESOURCE_EXHAUSTED", retry_delay="30s"))
    backend.max_retry_wait = 60

    def cancel_on_wait(event: Progress) -> None:
        if "rate-limited" in event.message:
            raise GenerationCancelled("stop")

    started = time.monotonic()
    with pytest.raises(GenerationCancelled):
        backend.generate(prepare(), cancel_on_wait)
    assert time.monotonic() - started < 20  # the 30 s wait was cut short
    assert len(server.generate_requests()) == 1


def test_the_image_carries_the_servers_data(
    server: FakeGeminiServer, backend: GeminiImagesBackend, prepare: Prepare
) -> None:
    # The answer's bytes are decoded, not made up: another prompt, another colour.
    result = backend.generate(prepare(prompt="someone else"), lambda _: None)
    assert background(result.images[0]) == color_for("someone else")


# ------------------------------------------------------------------ end to end


def test_castbook_generate_with_the_gemini_preset_keeps_the_key_out_of_every_output(
    server: FakeGeminiServer,
    castbook_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support.cli import castbook
    from tests.support.drawings import ALICE, character, png_bytes

    monkeypatch.setenv("CASTBOOK_GEMINI_BASE_URL", server.base_url)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    castbook_home.mkdir(parents=True, exist_ok=True)
    alice = tmp_path / "alice.png"
    alice.write_bytes(png_bytes(character(**ALICE)))
    code, _, err = castbook(
        "character", "add", "--name", "Alice", "--image", str(alice), "--style", "long black hair"
    )
    assert code == 0, err
    out = tmp_path / "out"
    code, stdout, err = castbook(
        "generate", "-c", "Alice", "-p", "at a cafe", "--preset", "gemini-image",
        "--batch", "2", "--width", "512", "--height", "768", "-o", str(out), "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout)
    [first, second] = server.generate_requests()
    assert first.parts[0] == {"text": "long black hair, at a cafe"}
    assert first.json["generationConfig"]["imageConfig"] == {"aspectRatio": "2:3"}
    assert len(first.inline_images()) == 1 and second.json == first.json
    paths = [Path(o["path"]) for o in result["outputs"]]
    assert len(paths) == 2
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (512, 768)
            assert background(image) == color_for("long black hair, at a cafe")
            recorded = image.text["castbook"]
        assert_no_key(recorded)
    assert_no_key(stdout + err)
    assert_no_key("".join(p.read_text(errors="ignore") for p in castbook_home.rglob("*.db*")))


def test_through_the_api_task_records_hold_no_key_and_too_many_characters_are_a_422(
    server: FakeGeminiServer, make_api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.api import add_character

    monkeypatch.setenv("CASTBOOK_GEMINI_BASE_URL", server.base_url)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    api = make_api()
    headers = api.key("local")
    for name in ("Alice", "Bea", "Cleo", "Dora"):
        add_character(api, headers, name)

    submitted = api.client.post(
        "/v1/generations",
        json={"preset": "gemini-image", "characters": ["Alice"], "prompt": "at a cafe"},
        headers=headers,
    )
    assert submitted.status_code == 202, submitted.text
    task = api.wait(submitted.json()["id"], headers, timeout=120)
    assert task["status"] == "succeeded", task
    assert len(server.generate_requests()) == 1
    listed = api.client.get("/v1/tasks", headers=headers).text
    assert_no_key(json.dumps(task) + listed)

    # Four characters: the model takes three pictures. Refused when submitted (422,
    # naming the cap), so no task is made and no call goes out.
    before = len(api.client.get("/v1/tasks", headers=headers).json())
    refused = api.client.post(
        "/v1/generations",
        json={"preset": "gemini-image", "characters": ["Alice", "Bea", "Cleo", "Dora"],
              "prompt": "a group photo"},
        headers=headers,
    )  # fmt: skip
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert "characters" in error and "takes at most 3 reference image(s)" in error, error
    assert "this request has 4" in error
    # i2i: the init image is one of the model's three pictures.
    init = "data:image/png;base64," + base64.b64encode(make_image_bytes()).decode()
    i2i = api.client.post(
        "/v1/generations",
        json={"preset": "gemini-image", "mode": "i2i", "characters": ["Alice", "Bea", "Cleo"],
              "init_image": init, "prompt": "the same three"},
        headers=headers,
    )  # fmt: skip
    assert i2i.status_code == 422, i2i.text
    assert "with the init image: 3 images per request" in i2i.json()["error"]
    assert "takes at most 2 reference image(s); this request has 3" in i2i.json()["error"]
    # The same in a workflow: an image_to_image node's three characters and its init image
    # are four pictures (its text_to_image twin with three fits).
    three = [[name.casefold(), "character"] for name in ("Alice", "Bea", "Cleo")]
    nodes: dict[str, dict[str, object]] = {
        name.casefold(): {"type": "character", "inputs": {"character": name}}
        for name in ("Alice", "Bea", "Cleo")
    }
    nodes["redraw"] = {"type": "image_to_image", "inputs": {
        "image": ["alice", "character"], "prompt": "x", "preset": "gemini-image",
        "characters": three}}  # fmt: skip
    checked = api.client.post(
        "/v1/workflows/validate", json={"graph": {"nodes": nodes}}, headers=headers
    )
    assert checked.status_code == 422, checked.text
    (problem,) = checked.json()["errors"]
    assert (problem["node"], problem["field"]) == ("redraw", "characters")
    assert "with the init image: 3 images per request" in problem["message"]
    nodes["redraw"]["type"] = "text_to_image"
    del nodes["redraw"]["inputs"]["image"]
    checked = api.client.post(
        "/v1/workflows/validate", json={"graph": {"nodes": nodes}}, headers=headers
    )
    assert checked.status_code == 200, checked.text
    assert len(api.client.get("/v1/tasks", headers=headers).json()) == before
    assert len(server.generate_requests()) == 1

    # A refused key fails the task with the masked key, never the key itself.
    wrong = "AIzaSyWRONG-987654321zyxwvuts"
    monkeypatch.setenv("GEMINI_API_KEY", wrong)
    failed = api.client.post(
        "/v1/generations",
        json={"preset": "gemini-image", "prompt": "a lighthouse"},
        headers=headers,
    )
    task = api.wait(failed.json()["id"], headers, timeout=120)
    assert task["status"] == "failed", task
    text = json.dumps(task)
    assert "AIz…vuts" in task["error"], task["error"]
    assert wrong not in text
