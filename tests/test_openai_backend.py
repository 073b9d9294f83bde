"""The OpenAI-compatible images backend against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from PIL import Image

from castbook.errors import (
    BackendError,
    FieldError,
    GenerationCancelled,
    GenerationError,
    ModelNotAvailableError,
)
from castbook.generation.base import PreparedRequest, Progress
from castbook.generation.openai_backend import OpenAIImagesBackend
from castbook.generation.presets import BUILTIN_PRESETS, Preset
from castbook.generation.request import GenerationRequest, Mode
from castbook.providers import mask, save_provider_key
from tests.support.backend_contract import BackendContract
from tests.support.fake_openai_server import FakeOpenAIServer, Reply, color_for, make_png

KEY = "sk-test-0123456789abcdef"
BUILTIN = next(p for p in BUILTIN_PRESETS if p.id == "openai-images")
# The fake server answers any size; without the built-in gpt-image-1 size list the
# requested size is passed through as is, which is what most tests look at.
PRESET = dataclasses.replace(
    BUILTIN, options={k: v for k, v in BUILTIN.options.items() if k != "sizes"}
)

Prepare = Callable[..., PreparedRequest]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key=KEY) as running:
        yield running


def make_backend(
    server: FakeOpenAIServer, preset: Preset = PRESET, **kwargs
) -> OpenAIImagesBackend:
    options = {"api_key": KEY, "timeout": 5.0, "backoff": 0.01, "max_retries": 2, **kwargs}
    return OpenAIImagesBackend(preset, base_url=server.base_url, **options)


@pytest.fixture
def backend(server: FakeOpenAIServer) -> OpenAIImagesBackend:
    return make_backend(server)


def picture(color: tuple[int, int, int], size: tuple[int, int] = (64, 80)) -> Image.Image:
    return Image.new("RGB", size, color)


@pytest.fixture
def prepare() -> Prepare:
    def build(
        *,
        prompt: str = "a portrait of Mara",
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


def colour_at_centre_edge(image: Image.Image) -> tuple[int, int, int]:
    # The fake draws an oval in the middle; the top-left corner keeps the background.
    return image.convert("RGB").getpixel((2, 2))


class TestContract(BackendContract):
    deterministic = False
    reports_steps = False


# ------------------------------------------------------------------ configuration


def test_reads_base_url_and_key_from_the_presets_env_vars(server: FakeOpenAIServer) -> None:
    env = {"CASTBOOK_OPENAI_BASE_URL": server.base_url + "/", "OPENAI_API_KEY": KEY}
    backend = OpenAIImagesBackend(PRESET, environ=env)
    assert backend.base_url == server.base_url
    assert backend.host == f"127.0.0.1:{server.port}"
    assert KEY not in repr(backend)


def test_defaults_to_the_openai_api() -> None:
    backend = OpenAIImagesBackend(PRESET, environ={"OPENAI_API_KEY": "sk-x"})
    assert backend.base_url == "https://api.openai.com/v1"


def test_missing_key_names_the_env_var() -> None:
    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        OpenAIImagesBackend(PRESET, environ={})
    custom = Preset(
        id="mine",
        backend="openai",
        model="m",
        modes=(Mode.T2I,),
        options={"api_key_env": "MY_IMAGES_KEY"},
    )
    with pytest.raises(BackendError, match="MY_IMAGES_KEY"):
        OpenAIImagesBackend(custom, environ={"OPENAI_API_KEY": "not this one"})


def test_rejects_a_base_url_that_is_not_http() -> None:
    with pytest.raises(FieldError, match="base_url"):
        OpenAIImagesBackend(PRESET, base_url="ftp://example.com", api_key="k", environ={})


# ------------------------------------------------------------------ routing


def test_t2i_posts_json_to_generations(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    result = backend.generate(prepare(batch=2, width=256, height=320, seed=9), lambda _: None)

    [sent] = server.images_requests()
    assert sent.path == "/v1/images/generations"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": "gpt-image-1",
        "prompt": "a portrait of Mara",
        "n": 2,
        "size": "256x320",
    }
    # The prompt arrived: each image carries the colour the server derives from it.
    assert [colour_at_centre_edge(i) for i in result.images] == [
        color_for("a portrait of Mara", 0),
        color_for("a portrait of Mara", 1),
    ]
    assert result.seed == 9
    meta = result.metadata
    assert meta["backend"] == "openai"
    assert meta["model"] == "gpt-image-1"
    assert meta["base_url_host"] == f"127.0.0.1:{server.port}"
    assert meta["endpoint"] == "images/generations"
    assert meta["size_requested"] == "256x320"
    assert meta["size_returned"] == ["256x320", "256x320"]
    assert meta["resized"] is False
    assert meta["seed_reproducible"] is False


def test_references_go_to_edits_as_image_parts(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    refs = (picture((255, 0, 0)), picture((0, 255, 0)), picture((0, 0, 255), (50, 50)))
    result = backend.generate(prepare(references=refs), lambda _: None)

    [sent] = server.images_requests()
    assert sent.path == "/v1/images/edits"
    assert sent.headers["content-type"].startswith("multipart/form-data")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.form == {
        "model": "gpt-image-1",
        "prompt": "a portrait of Mara",
        "n": "1",
        "size": "256x256",
    }
    assert [f.field for f in sent.files] == ["image[]"] * 3
    assert all(f.content_type == "image/png" for f in sent.files)
    uploaded = [f.image() for f in sent.files]
    assert all(i.format == "PNG" for i in uploaded)
    assert [i.convert("RGB").getpixel((0, 0)) for i in uploaded] == [
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
    ]
    assert uploaded[2].size == (50, 50)
    assert result.metadata["endpoint"] == "images/edits"
    assert result.metadata["images_sent"] == 3
    assert colour_at_centre_edge(result.images[0]) == color_for("a portrait of Mara", 0)


def test_i2i_sends_the_init_image_first(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    init = picture((10, 20, 30), (96, 96))
    refs = (picture((200, 0, 0)), picture((0, 200, 0)))
    result = backend.generate(prepare(init_image=init, references=refs), lambda _: None)

    [sent] = server.images_requests()
    assert sent.path == "/v1/images/edits"
    assert len(sent.files) == len(refs) + 1
    colours = [f.image().convert("RGB").getpixel((0, 0)) for f in sent.files]
    assert colours == [(10, 20, 30), (200, 0, 0), (0, 200, 0)]
    assert result.metadata["ignored"] == ["denoise"]


def test_i2i_without_references_still_uses_edits(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    backend.generate(prepare(init_image=picture((1, 2, 3))), lambda _: None)
    [sent] = server.images_requests()
    assert sent.path == "/v1/images/edits"
    assert len(sent.files) == 1


def test_too_many_images_are_refused_before_any_request(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    refs = tuple(picture((i, i, i), (8, 8)) for i in range(backend.max_references))
    with pytest.raises(FieldError, match="at most 16"):
        backend.generate(prepare(init_image=picture((1, 1, 1)), references=refs), lambda _: None)
    assert server.images_requests() == []


def test_negative_prompt_is_appended(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    result = backend.generate(
        prepare(prompt="Mara in the rain", negative_prompt="blurry, extra fingers"),
        lambda _: None,
    )
    [sent] = server.images_requests()
    assert sent.json["prompt"] == "Mara in the rain\n\nAvoid: blurry, extra fingers"
    assert "negative_prompt" not in sent.json
    assert "Avoid" in result.metadata["negative_prompt"]


def test_preset_options_reach_the_request(server: FakeOpenAIServer, prepare: Prepare) -> None:
    preset = Preset(
        id="dalle",
        backend="openai",
        model="dall-e-3",
        modes=(Mode.T2I,),
        options={
            "response_format": "b64_json",
            "max_n": 1,
            "extra_body": {"quality": "hd"},
        },
    )
    backend = make_backend(server, preset)
    result = backend.generate(prepare(batch=2), lambda _: None)
    sent = server.images_requests()
    assert [r.json for r in sent] == [
        {
            "quality": "hd",
            "model": "dall-e-3",
            "prompt": "a portrait of Mara",
            "n": 1,
            "size": "256x256",
            "response_format": "b64_json",
        }
    ] * 2
    assert len(result.images) == 2
    assert result.metadata["calls"] == 2


def test_supported_sizes_pick_the_closest_shape(server: FakeOpenAIServer, prepare: Prepare) -> None:
    preset = Preset(
        id="gpt",
        backend="openai",
        model="gpt-image-1",
        modes=(Mode.T2I,),
        options={"sizes": ["1024x1024", "1536x1024", "1024x1536"]},
    )
    backend = make_backend(server, preset)
    result = backend.generate(prepare(width=256, height=384), lambda _: None)
    [sent] = server.images_requests()
    assert sent.json["size"] == "1024x1536"
    assert result.images[0].size == (256, 384)
    assert result.metadata["size_asked"] == "1024x1536"
    assert result.metadata["size_returned"] == ["1024x1536"]
    assert result.metadata["resized"] is True


# ------------------------------------------------------------------ responses


def test_url_answers_are_downloaded(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(kind="url", revised_prompt="A detailed portrait of Mara"))
    result = backend.generate(prepare(batch=2), lambda _: None)

    downloads = [r for r in server.requests if r.method == "GET"]
    assert len(downloads) == 2
    assert all(r.path.startswith("/v1/files/") for r in downloads)
    # The API's own origin may need the key for its files.
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in downloads)
    assert [colour_at_centre_edge(i) for i in result.images] == [
        color_for("a portrait of Mara", 0),
        color_for("a portrait of Mara", 1),
    ]
    assert result.metadata["revised_prompt"] == [
        "A detailed portrait of Mara",
        "A detailed portrait of Mara",
    ]


def test_the_key_is_not_sent_to_another_origin(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    with FakeOpenAIServer(api_key=None) as storage:
        url = storage._store_file(make_png("stored", 0, (256, 256)))
        server.script(Reply(raw_body=json.dumps({"data": [{"url": url}]}).encode()))
        result = backend.generate(prepare(), lambda _: None)
        [download] = storage.requests
    assert download.method == "GET"
    assert "authorization" not in download.headers
    assert colour_at_centre_edge(result.images[0]) == color_for("stored", 0)


def test_a_failed_download_is_a_backend_error(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    url = f"{server.base_url}/files/missing.png?sig=secret"
    server.script(Reply(raw_body=json.dumps({"data": [{"url": url}]}).encode()))
    with pytest.raises(BackendError, match="downloading image 1") as caught:
        backend.generate(prepare(), lambda _: None)
    assert caught.value.status == 404
    assert "secret" not in str(caught.value)  # signed URLs' query strings stay out


def test_a_single_revised_prompt_is_a_string(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(revised_prompt="better prompt"))
    result = backend.generate(prepare(), lambda _: None)
    assert result.metadata["revised_prompt"] == "better prompt"


def test_wrong_size_is_resized_and_noted(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(size=(512, 640)))
    result = backend.generate(prepare(width=256, height=320), lambda _: None)
    assert result.images[0].size == (256, 320)
    assert result.metadata["size_returned"] == ["512x640"]
    assert result.metadata["resized"] is True
    assert colour_at_centre_edge(result.images[0]) == color_for("a portrait of Mara", 0)


def test_wrong_shape_is_cropped_not_stretched(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(size=(512, 512)))
    result = backend.generate(prepare(width=256, height=384), lambda _: None)
    assert result.images[0].size == (256, 384)
    assert result.metadata["resized"] is True


@pytest.mark.parametrize("kind", ["bad_b64", "bad_image"])
def test_invalid_image_data_is_a_backend_error(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare, kind: str
) -> None:
    server.script(Reply(kind=kind))
    with pytest.raises(BackendError, match="image 1"):
        backend.generate(prepare(), lambda _: None)


def test_an_answer_without_images_is_a_backend_error(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(raw_body=b'{"data": []}'))
    with pytest.raises(BackendError, match="no images"):
        backend.generate(prepare(), lambda _: None)
    server.script(Reply(raw_body=b"<html>oops</html>"))
    with pytest.raises(BackendError, match="not JSON"):
        backend.generate(prepare(), lambda _: None)


def test_fewer_images_than_asked_are_topped_up(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(count=1))
    result = backend.generate(prepare(batch=3), lambda _: None)
    assert len(result.images) == 3
    assert [r.json["n"] for r in server.images_requests()] == [3, 2]


# ------------------------------------------------------------------ errors


def test_wrong_key_is_401_naming_the_env_var_and_never_the_key(
    server: FakeOpenAIServer, prepare: Prepare
) -> None:
    wrong = "sk-wrong-key-abcdef987654"
    env = {"OPENAI_API_KEY": wrong, "CASTBOOK_OPENAI_BASE_URL": server.base_url}
    backend = OpenAIImagesBackend(PRESET, environ=env, backoff=0.01)
    with pytest.raises(BackendError) as caught:
        backend.generate(prepare(), lambda _: None)
    error = caught.value
    assert error.status == 401
    assert "OPENAI_API_KEY" in str(error)
    assert "Incorrect API key provided" in str(error)  # the server's own message
    assert wrong not in str(error)
    assert wrong not in repr(error.args)
    assert len(server.images_requests()) == 1  # not retried


def test_403_is_an_auth_error(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(status=403, message="key {key} may not use gpt-image-1"))
    with pytest.raises(BackendError) as caught:
        backend.generate(prepare(), lambda _: None)
    assert caught.value.status == 403
    assert "may not use gpt-image-1" in str(caught.value)
    assert KEY not in str(caught.value)


def test_429_is_retried_honouring_retry_after(server: FakeOpenAIServer, prepare: Prepare) -> None:
    backend = make_backend(server, backoff=5.0)  # Retry-After wins over the backoff
    server.script(Reply(status=429, message="slow down", headers={"Retry-After": "0.2"}))
    events: list[Progress] = []
    started = time.monotonic()
    result = backend.generate(prepare(), events.append)
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 3
    assert len(result.images) == 1
    assert len(server.images_requests()) == 2
    assert result.metadata["attempts"] == 2
    assert [e.message for e in events][1].startswith("retrying (attempt 2 of 3)")
    assert events[-1] == Progress(1, 1, "done")


def test_retry_after_as_an_http_date(server: FakeOpenAIServer, prepare: Prepare) -> None:
    backend = make_backend(server, max_retries=1)
    when = format_datetime(datetime.now(UTC) - timedelta(seconds=5), usegmt=True)
    server.script(Reply(status=429, headers={"Retry-After": when}))
    assert len(backend.generate(prepare(), lambda _: None).images) == 1


def test_429_exhausted_is_rate_limited(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(
        *[Reply(status=429, message="Rate limit reached", headers={"Retry-After": "0"})] * 3
    )
    with pytest.raises(BackendError) as caught:
        backend.generate(prepare(), lambda _: None)
    assert caught.value.status == 429
    assert "rate limited" in str(caught.value)
    assert "Rate limit reached" in str(caught.value)
    assert len(server.images_requests()) == 3  # 1 + max_retries


def test_a_retry_after_too_long_gives_up_at_once(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(status=429, headers={"Retry-After": "3600"}))
    with pytest.raises(BackendError, match="wait 3600 s"):
        backend.generate(prepare(), lambda _: None)
    assert len(server.images_requests()) == 1


def test_exhausted_quota_is_not_retried(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(status=429, message="You exceeded your quota", code="insufficient_quota"))
    with pytest.raises(BackendError, match="exceeded your quota") as caught:
        backend.generate(prepare(), lambda _: None)
    assert caught.value.status == 429
    assert len(server.images_requests()) == 1


def test_500_is_retried_then_succeeds(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(status=500, message="upstream hiccup"), Reply(status=503))
    result = backend.generate(prepare(), lambda _: None)
    assert len(result.images) == 1
    assert len(server.images_requests()) == 3


def test_500_exhausted_carries_the_servers_message(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(*[Reply(status=500, message="The server had an error")] * 3)
    with pytest.raises(BackendError) as caught:
        backend.generate(prepare(), lambda _: None)
    assert caught.value.status == 500
    assert "The server had an error" in str(caught.value)
    assert "(HTTP 500)" in str(caught.value)
    assert len(server.images_requests()) == 3


def test_400_is_not_retried(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(
        Reply(status=400, message="Your request was rejected by the safety system", code="x")
    )
    with pytest.raises(BackendError) as caught:
        backend.generate(prepare(), lambda _: None)
    assert caught.value.status == 400
    assert "rejected by the safety system" in str(caught.value)
    assert len(server.images_requests()) == 1


def test_unknown_model(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(status=404, message="no such model", code="model_not_found"))
    with pytest.raises(ModelNotAvailableError, match="gpt-image-1"):
        backend.generate(prepare(), lambda _: None)


def test_wrong_base_url_is_a_404_that_says_so(server: FakeOpenAIServer, prepare: Prepare) -> None:
    backend = OpenAIImagesBackend(PRESET, base_url=server.origin + "/nope", api_key=KEY)
    with pytest.raises(BackendError, match="CASTBOOK_OPENAI_BASE_URL") as caught:
        backend.generate(prepare(), lambda _: None)
    assert caught.value.status == 404


def test_timeout_says_how_long_it_waited(server: FakeOpenAIServer, prepare: Prepare) -> None:
    backend = make_backend(server, timeout=0.3)
    server.script(Reply(delay=3))
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"timed out after 0\.3 s") as caught:
        backend.generate(prepare(), lambda _: None)
    assert time.monotonic() - started < 2
    assert caught.value.status is None
    assert len(server.images_requests()) == 1  # a timed-out generation is not resent


def test_unreachable_server(prepare: Prepare) -> None:
    with FakeOpenAIServer() as gone:
        url = gone.base_url
    backend = OpenAIImagesBackend(PRESET, base_url=url, api_key=KEY, timeout=2)
    with pytest.raises(BackendError, match=r"cannot reach 127\.0\.0\.1"):
        backend.generate(prepare(), lambda _: None)


def test_errors_are_generation_errors() -> None:
    assert issubclass(BackendError, GenerationError)


# ------------------------------------------------------------------ progress and cancelling


def test_progress_is_submitted_then_done(backend: OpenAIImagesBackend, prepare: Prepare) -> None:
    events: list[Progress] = []
    backend.generate(prepare(), events.append)
    assert events[0].step == 0 and events[0].total == 1
    assert events[0].message.startswith("submitted")
    assert events[-1] == Progress(1, 1, "done")


def test_cancelling_before_the_request_sends_nothing(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    def cancel(_: Progress) -> None:
        raise GenerationCancelled("stop")

    with pytest.raises(GenerationCancelled):
        backend.generate(prepare(), cancel)
    assert server.requests == []


def test_cancelling_before_a_retry(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(status=503))

    def cancel_on_retry(event: Progress) -> None:
        if event.message.startswith("retrying"):
            raise GenerationCancelled("stop")

    with pytest.raises(GenerationCancelled):
        backend.generate(prepare(), cancel_on_retry)
    assert len(server.images_requests()) == 1


def test_cancelling_before_a_download(
    server: FakeOpenAIServer, backend: OpenAIImagesBackend, prepare: Prepare
) -> None:
    server.script(Reply(kind="url"))

    def cancel_on_download(event: Progress) -> None:
        if event.message.startswith("downloading"):
            raise GenerationCancelled("stop")

    with pytest.raises(GenerationCancelled):
        backend.generate(prepare(), cancel_on_download)
    assert [r.method for r in server.requests] == ["POST"]


# ------------------------------------------------------------------ provider keys

PAID = "sk-paid-key-0000aaaa1111"
FREE = "sk-free-key-2222bbbb3333"


def write_openai_provider(
    home: Path, base_url: str, *entries: tuple[str, str], name: str = "mine", prefer: str = ""
) -> None:
    for key, tier in entries:
        save_provider_key(
            home,
            name,
            key,
            tier,  # type: ignore[arg-type]
            kind="openai",
            base_url=base_url,
            model="gpt-image-1",
        )
    if prefer:
        path = home / "providers.toml"
        text = path.read_text().replace('kind = "openai"', f'kind = "openai"\nprefer = "{prefer}"')
        path.write_text(text)
        os.chmod(path, 0o600)


def keys_used(server: FakeOpenAIServer) -> list[str]:
    return [
        r.headers.get("authorization", "").removeprefix("Bearer ") for r in server.images_requests()
    ]


def provider_backend(
    home: Path, preset: Preset = PRESET, env: dict[str, str] | None = None, **kwargs: object
) -> OpenAIImagesBackend:
    environ = {"CASTBOOK_HOME": str(home), **(env or {})}
    options: dict[str, object] = {"backoff": 0.01, "timeout": 10.0, **kwargs}
    return OpenAIImagesBackend(preset, environ=environ, **options)  # type: ignore[arg-type]


def named(provider: str) -> Preset:
    return dataclasses.replace(PRESET, options={**PRESET.options, "provider": provider})


@pytest.fixture
def keyed_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(PAID, FREE, KEY) as running:
        yield running


def test_a_429_moves_to_the_next_key_and_the_limited_key_cools_down(
    keyed_server: FakeOpenAIServer, tmp_path: Path, prepare: Prepare
) -> None:
    write_openai_provider(tmp_path, keyed_server.base_url, (PAID, "paid"), (FREE, "free"))
    backend = provider_backend(tmp_path, named("mine"))
    assert backend.base_url == keyed_server.base_url  # the named provider's base URL
    keyed_server.script(Reply(status=429, message="slow down {key}", headers={"Retry-After": "30"}))
    events: list[Progress] = []
    started = time.monotonic()
    result = backend.generate(prepare(), events.append)
    assert time.monotonic() - started < 10  # not the 30 s of Retry-After: the next key at once
    assert keys_used(keyed_server) == [PAID, FREE]
    assert len(result.images) == 1
    assert result.metadata["key_tiers"] == ["free"]
    assert result.metadata["attempts"] == 2
    notes = " ".join(e.message for e in events)
    assert "next key" in notes and PAID not in notes and FREE not in notes
    # The paid key cools for the server's 30 s: the next generation does not try it.
    backend.generate(prepare(), lambda _: None)
    assert keys_used(keyed_server) == [PAID, FREE, FREE]


def test_paid_keys_go_first_for_images(
    keyed_server: FakeOpenAIServer, tmp_path: Path, prepare: Prepare
) -> None:
    # Found by its base URL, without a `provider` option; listed free first in the file.
    write_openai_provider(tmp_path, keyed_server.base_url, (FREE, "free"), (PAID, "paid"))
    backend = provider_backend(tmp_path, env={"CASTBOOK_OPENAI_BASE_URL": keyed_server.base_url})
    backend.generate(prepare(), lambda _: None)
    assert keys_used(keyed_server) == [PAID]


def test_prefer_free_turns_the_order_round(
    keyed_server: FakeOpenAIServer, tmp_path: Path, prepare: Prepare
) -> None:
    write_openai_provider(
        tmp_path, keyed_server.base_url, (PAID, "paid"), (FREE, "free"), prefer="free"
    )
    provider_backend(tmp_path, named("mine")).generate(prepare(), lambda _: None)
    assert keys_used(keyed_server) == [FREE]


def test_a_provider_at_another_url_is_not_used(
    keyed_server: FakeOpenAIServer, tmp_path: Path, prepare: Prepare
) -> None:
    write_openai_provider(tmp_path, "https://elsewhere.example/v1", (PAID, "paid"))
    env = {"CASTBOOK_OPENAI_BASE_URL": keyed_server.base_url, "OPENAI_API_KEY": KEY}
    provider_backend(tmp_path, env=env).generate(prepare(), lambda _: None)
    assert keys_used(keyed_server) == [KEY]


def test_the_env_key_joins_the_providers_keys_as_paid(
    keyed_server: FakeOpenAIServer, tmp_path: Path, prepare: Prepare
) -> None:
    write_openai_provider(tmp_path, keyed_server.base_url, (FREE, "free"))
    backend = provider_backend(tmp_path, named("mine"), env={"OPENAI_API_KEY": KEY})
    keyed_server.script(Reply(status=429, headers={"Retry-After": "30"}))
    backend.generate(prepare(), lambda _: None)
    assert keys_used(keyed_server) == [KEY, FREE]


def test_the_env_key_alone_behaves_as_before(
    keyed_server: FakeOpenAIServer, tmp_path: Path, prepare: Prepare
) -> None:
    env = {"CASTBOOK_OPENAI_BASE_URL": keyed_server.base_url, "OPENAI_API_KEY": KEY}
    backend = provider_backend(tmp_path, env=env)
    keyed_server.script(Reply(status=429, headers={"Retry-After": "0.1"}))
    result = backend.generate(prepare(), lambda _: None)
    assert keys_used(keyed_server) == [KEY, KEY]  # the one key retried after Retry-After
    assert result.metadata["key_tiers"] == ["paid"]


def test_insufficient_quota_on_one_key_moves_to_the_next(
    keyed_server: FakeOpenAIServer, tmp_path: Path, prepare: Prepare
) -> None:
    write_openai_provider(tmp_path, keyed_server.base_url, (PAID, "paid"), (FREE, "free"))
    backend = provider_backend(tmp_path, named("mine"))
    keyed_server.script(Reply(status=429, message="quota", code="insufficient_quota"))
    assert len(backend.generate(prepare(), lambda _: None).images) == 1
    assert keys_used(keyed_server) == [PAID, FREE]


def test_every_key_limited_names_them_masked(
    keyed_server: FakeOpenAIServer, tmp_path: Path, prepare: Prepare
) -> None:
    write_openai_provider(tmp_path, keyed_server.base_url, (PAID, "paid"), (FREE, "free"))
    backend = provider_backend(tmp_path, named("mine"))
    keyed_server.script(
        *[Reply(status=429, message="limit {key}", headers={"Retry-After": "600"})] * 2
    )
    with pytest.raises(BackendError) as caught:
        backend.generate(prepare(), lambda _: None)
    text = str(caught.value)
    assert caught.value.status == 429
    assert mask(PAID) in text and mask(FREE) in text
    assert PAID not in text and FREE not in text
    assert "castbook providers key add" in text
    assert keys_used(keyed_server) == [PAID, FREE]


def test_a_refused_provider_key_is_named_masked_with_its_source(
    keyed_server: FakeOpenAIServer, tmp_path: Path, prepare: Prepare
) -> None:
    wrong = "sk-wrong-provider-key-99999"
    write_openai_provider(tmp_path, keyed_server.base_url, (wrong, "paid"))
    with pytest.raises(BackendError) as caught:
        provider_backend(tmp_path, named("mine")).generate(prepare(), lambda _: None)
    text = str(caught.value)
    assert caught.value.status == 401
    assert mask(wrong) in text and "provider 'mine'" in text and "providers.toml" in text
    assert wrong not in text


def test_a_named_provider_that_is_missing_is_a_clear_error(tmp_path: Path) -> None:
    write_openai_provider(tmp_path, "https://elsewhere.example/v1", (PAID, "paid"))
    with pytest.raises(FieldError) as caught:
        provider_backend(tmp_path, named("nope"), env={"OPENAI_API_KEY": KEY})
    text = str(caught.value)
    assert "'nope'" in text and "providers.toml" in text and "mine" in text
    assert PAID not in text
