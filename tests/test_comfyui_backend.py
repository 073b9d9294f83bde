"""The ComfyUI backend against a real HTTP server on loopback that speaks ComfyUI's wire format."""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from castbook.errors import BackendError, FieldError, GenerationCancelled, InvalidInputError
from castbook.generation.base import PreparedRequest, Progress
from castbook.generation.comfyui_backend import ComfyUIBackend
from castbook.generation.comfyui_workflows import WORKFLOW_DIR, load_workflow
from castbook.generation.presets import BUILTIN_PRESETS, Preset
from castbook.generation.request import GenerationRequest, Mode
from castbook.providers import save_provider_key
from tests.support.backend_contract import BackendContract, fingerprint
from tests.support.fake_comfyui_server import FakeComfyUI

COMFYUI_PRESET = next(p for p in BUILTIN_PRESETS if p.id == "comfyui")


def preset(model: str = COMFYUI_PRESET.model, **options: Any) -> Preset:
    return replace(COMFYUI_PRESET, model=model, options={**COMFYUI_PRESET.options, **options})


def picture(color: tuple[int, int, int], size: tuple[int, int] = (96, 128)) -> Image.Image:
    image = Image.new("RGB", size, color)
    image.paste((255 - color[0], 40, 90), (10, 10, 40, 50))
    return image


def make_prepared(
    *,
    prompt: str = "a red-haired knight",
    negative_prompt: str = "blurry",
    seed: int = 7,
    references: tuple[Image.Image, ...] = (),
    init_image: Image.Image | None = None,
    **fields: Any,
) -> PreparedRequest:
    request = GenerationRequest(prompt=prompt, negative_prompt=negative_prompt, seed=seed, **fields)
    return PreparedRequest(
        request=request,
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=seed,
        references=references,
        init_image=init_image,
    )


def nodes_of(workflow: dict[str, Any], class_type: str) -> list[dict[str, Any]]:
    return [node for node in workflow.values() if node["class_type"] == class_type]


def only(workflow: dict[str, Any], class_type: str) -> dict[str, Any]:
    (node,) = nodes_of(workflow, class_type)
    return node["inputs"]


@pytest.fixture
def comfy() -> Iterator[FakeComfyUI]:
    with FakeComfyUI() as server:
        yield server


@pytest.fixture
def make_backend(comfy: FakeComfyUI) -> Callable[..., ComfyUIBackend]:
    def make(chosen: Preset | None = None, **kwargs: Any) -> ComfyUIBackend:
        kwargs = {"server": comfy.url, "poll_interval": 0.01, "timeout": 5.0, **kwargs}
        return ComfyUIBackend(chosen or COMFYUI_PRESET, **kwargs)

    return make


@pytest.fixture
def backend(make_backend: Callable[..., ComfyUIBackend]) -> ComfyUIBackend:
    return make_backend()


@pytest.fixture
def prepare() -> Callable[..., PreparedRequest]:
    return make_prepared


class TestContract(BackendContract):
    reports_steps = True  # each sampler step, from ComfyUI's websocket


# -- filling the template -------------------------------------------------------------------


def test_placeholders_are_filled_with_their_types(
    backend: ComfyUIBackend, comfy: FakeComfyUI
) -> None:
    request = make_prepared(seed=1234, steps=3, guidance=6.5, width=256, height=320, batch=2)
    result = backend.generate(request, lambda _: None)

    workflow = comfy.workflows[-1]
    assert "{{" not in json.dumps(workflow)
    sampler = only(workflow, "KSampler")
    assert sampler["seed"] == 1234 and type(sampler["seed"]) is int
    assert sampler["steps"] == 3 and type(sampler["steps"]) is int
    assert sampler["cfg"] == 6.5 and type(sampler["cfg"]) is float
    assert (sampler["sampler_name"], sampler["scheduler"]) == ("euler", "normal")
    latent = only(workflow, "EmptyLatentImage")
    assert latent == {"width": 256, "height": 320, "batch_size": 2}
    texts = [node["inputs"]["text"] for node in nodes_of(workflow, "CLIPTextEncode")]
    assert texts == ["a red-haired knight", "blurry"]
    assert only(workflow, "CheckpointLoaderSimple")["ckpt_name"] == (
        "v1-5-pruned-emaonly.safetensors"
    )
    # What the server rendered is what castbook asked for.
    ran = comfy.executions[-1]
    assert (ran["seed"], ran["positive"], ran["negative"]) == (
        1234,
        "a red-haired knight",
        "blurry",
    )
    assert [image.size for image in result.images] == [(256, 320), (256, 320)]
    assert result.metadata["workflow"] == "sd15-ip-adapter"


def test_prompt_and_seed_change_the_pixels(backend: ComfyUIBackend) -> None:
    def render(**fields: Any) -> bytes:
        return fingerprint(backend.generate(make_prepared(**fields), lambda _: None).images[0])

    assert render(seed=5) == render(seed=5)
    assert render(seed=5) != render(seed=6)
    assert render(seed=5, prompt="a knight") != render(seed=5, prompt="a wizard")


def test_without_references_the_ip_adapter_is_bypassed(
    backend: ComfyUIBackend, comfy: FakeComfyUI
) -> None:
    backend.generate(make_prepared(), lambda _: None)

    workflow = comfy.workflows[-1]
    classes = {node["class_type"] for node in workflow.values()}
    assert classes.isdisjoint(
        {"IPAdapterAdvanced", "IPAdapterModelLoader", "CLIPVisionLoader", "LoadImage"}
    )
    assert only(workflow, "KSampler")["model"] == ["1", 0]
    assert comfy.paths("POST").count("/upload/image") == 0


def test_reference_is_uploaded_and_lands_in_the_load_image_node(
    backend: ComfyUIBackend, comfy: FakeComfyUI
) -> None:
    reference = picture((30, 160, 90))
    without = backend.generate(make_prepared(seed=9), lambda _: None)
    result = backend.generate(
        make_prepared(seed=9, references=(reference,), reference_scale=0.8), lambda _: None
    )

    (name,) = comfy.uploads
    upload = next(r for r in comfy.requests if r.path == "/upload/image")
    assert upload.form == {"overwrite": "true", "type": "input"}
    uploaded = Image.open(io.BytesIO(comfy.uploads[name]))
    assert fingerprint(uploaded) == fingerprint(reference)
    workflow = comfy.workflows[-1]
    assert only(workflow, "LoadImage") == {"image": name}
    ip_adapter = only(workflow, "IPAdapterAdvanced")
    assert ip_adapter["weight"] == 0.8 and type(ip_adapter["weight"]) is float
    assert only(workflow, "KSampler")["model"] == ["5", 0]
    assert comfy.executions[-1]["loaded_images"] == [name]
    assert fingerprint(result.images[0]) != fingerprint(without.images[0])
    assert backend.max_references == 1


def test_img2img_uploads_the_init_image_and_sets_the_samplers_denoise(
    make_backend: Callable[..., ComfyUIBackend], comfy: FakeComfyUI
) -> None:
    backend = make_backend()
    source = picture((200, 40, 40), size=(300, 200))
    reference = picture((20, 20, 200))
    request = make_prepared(
        mode=Mode.I2I,
        init_image=source,
        references=(reference,),
        denoise=0.35,
        batch=2,
        width=256,
        height=256,
    )
    result = backend.generate(request, lambda _: None)

    workflow = comfy.workflows[-1]
    assert result.metadata["workflow"] == "sd15-img2img"
    sampler = only(workflow, "KSampler")
    assert sampler["denoise"] == 0.35 and type(sampler["denoise"]) is float
    loaded = {node["inputs"]["image"] for node in nodes_of(workflow, "LoadImage")}
    assert loaded == set(comfy.uploads) and len(loaded) == 2
    assert only(workflow, "ImageScale")["width"] == 256
    assert only(workflow, "RepeatLatentBatch")["amount"] == 2
    assert [image.size for image in result.images] == [(256, 256), (256, 256)]
    weaker = backend.generate(
        replace(request, request=request.request.model_copy(update={"denoise": 0.9})),
        lambda _: None,
    )
    assert fingerprint(weaker.images[0]) != fingerprint(result.images[0])


def test_img2img_without_an_init_image_is_refused(backend: ComfyUIBackend) -> None:
    with pytest.raises(InvalidInputError, match="init image"):
        backend.generate(make_prepared(mode=Mode.I2I), lambda _: None)


USER_WORKFLOW = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "{{checkpoint}}"}},
    "6": {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "portrait of {{prompt}}, {{style}} style", "clip": ["4", 1]},
    },
    "7": {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "lowres, {{negative_prompt}}", "clip": ["4", 1]},
    },
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 512, "height": 384, "batch_size": "{{batch}}"},
    },
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "model": ["4", 0],
            "seed": "{{seed}}",
            "steps": 4,
            "cfg": 8,
            "sampler_name": "euler",
            "scheduler": "normal",
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
            "denoise": 1,
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "mine", "images": ["8", 0]}},
}


def write_workflow(path: Path, workflow: dict[str, Any]) -> Path:
    path.write_text(json.dumps(workflow), encoding="utf-8")
    return path


def test_a_user_workflow_file_is_filled_and_queued(
    make_backend: Callable[..., ComfyUIBackend], comfy: FakeComfyUI, tmp_path: Path
) -> None:
    write_workflow(tmp_path / "portrait.json", USER_WORKFLOW)
    # A relative path is read beside the presets file that names it.
    user_preset = replace(
        preset("portrait.json", style="ink", checkpoint="dreamshaper_8.safetensors"),
        modes=(Mode.T2I,),
        source=str(tmp_path / "presets.toml"),
    )
    backend = make_backend(user_preset)
    assert backend.max_references == 0

    result = backend.generate(make_prepared(prompt="a fox", seed=3, batch=3), lambda _: None)

    workflow = comfy.workflows[-1]
    assert workflow["6"]["inputs"]["text"] == "portrait of a fox, ink style"
    assert workflow["7"]["inputs"]["text"] == "lowres, blurry"
    assert workflow["4"]["inputs"]["ckpt_name"] == "dreamshaper_8.safetensors"
    assert workflow["3"]["inputs"]["seed"] == 3
    assert workflow["5"]["inputs"]["batch_size"] == 3
    assert [image.size for image in result.images] == [(512, 384)] * 3


def test_an_editor_workflow_is_refused_with_how_to_export_it(tmp_path: Path) -> None:
    path = write_workflow(tmp_path / "ui.json", {"nodes": [], "links": [], "version": 0.4})
    with pytest.raises(InvalidInputError, match=r"Export \(API\)"):
        load_workflow(str(path))


def test_a_request_the_template_cannot_take_names_what_it_supports(
    make_backend: Callable[..., ComfyUIBackend], comfy: FakeComfyUI, tmp_path: Path
) -> None:
    path = write_workflow(tmp_path / "plain.json", USER_WORKFLOW)
    backend = make_backend(replace(preset(str(path), style="ink"), modes=(Mode.T2I,)))

    with pytest.raises(InvalidInputError) as caught:
        backend.generate(make_prepared(references=(picture((1, 2, 3)),)), lambda _: None)

    message = str(caught.value)
    assert "{{reference_image}}" in message
    assert "{{batch}}, {{checkpoint}}, {{negative_prompt}}, {{prompt}}, {{seed}}, {{style}}" in (
        message
    )
    assert comfy.requests == []


def test_an_unknown_placeholder_is_refused_when_the_backend_is_made(
    make_backend: Callable[..., ComfyUIBackend], tmp_path: Path
) -> None:
    path = write_workflow(tmp_path / "plain.json", USER_WORKFLOW)
    with pytest.raises(InvalidInputError, match=r"unknown placeholders \{\{style\}\}"):
        make_backend(replace(preset(str(path)), modes=(Mode.T2I,)))


def test_unused_reference_slots_are_bypassed_and_the_rest_still_runs(
    make_backend: Callable[..., ComfyUIBackend], comfy: FakeComfyUI, tmp_path: Path
) -> None:
    two = json.loads((WORKFLOW_DIR / "sd15_ip_adapter.json").read_text())
    two["20"] = {"class_type": "LoadImage", "inputs": {"image": "{{reference_image_2}}"}}
    two["21"] = {
        "class_type": "IPAdapterAdvanced",
        "inputs": {**two["5"]["inputs"], "model": ["5", 0], "image": ["20", 0]},
    }
    two["9"]["inputs"]["model"] = ["21", 0]
    path = write_workflow(tmp_path / "two.json", two)
    backend = make_backend(replace(preset(str(path)), modes=(Mode.T2I,)))
    assert backend.max_references == 2

    backend.generate(make_prepared(references=(picture((5, 5, 5)),)), lambda _: None)

    workflow = comfy.workflows[-1]
    assert "20" not in workflow and "21" not in workflow
    assert workflow["9"]["inputs"]["model"] == ["5", 0]
    assert {"2", "3", "4", "5"} <= set(workflow)


def test_a_node_that_cannot_run_without_its_reference_is_explained(
    make_backend: Callable[..., ComfyUIBackend], comfy: FakeComfyUI, tmp_path: Path
) -> None:
    graph = json.loads((WORKFLOW_DIR / "sd15_ip_adapter.json").read_text())
    graph["20"] = {"class_type": "ImageScale", "inputs": {"image": ["4", 0]}}
    graph["5"]["inputs"]["image"] = ["20", 0]
    path = write_workflow(tmp_path / "scaled.json", graph)
    backend = make_backend(replace(preset(str(path)), modes=(Mode.T2I,)))

    with pytest.raises(InvalidInputError, match=r"node 20 \(ImageScale\) needs"):
        backend.generate(make_prepared(), lambda _: None)
    assert comfy.workflows == []


# -- the server's errors ---------------------------------------------------------------------


def test_an_invalid_workflow_summarises_the_node_errors(
    make_backend: Callable[..., ComfyUIBackend],
) -> None:
    backend = make_backend(preset(checkpoint="missing-model.safetensors"))
    with pytest.raises(BackendError) as caught:
        backend.generate(make_prepared(), lambda _: None)

    assert caught.value.status == 400
    message = str(caught.value)
    assert "Prompt outputs failed validation" in message
    assert "node 1 (CheckpointLoaderSimple): Value not in list" in message
    assert "missing-model.safetensors" in message
    assert "checkpoint" in message


def test_a_missing_custom_node_pack_is_named(backend: ComfyUIBackend, comfy: FakeComfyUI) -> None:
    comfy.missing_classes = {"IPAdapterAdvanced"}
    with pytest.raises(BackendError, match="ComfyUI_IPAdapter_plus") as caught:
        backend.generate(make_prepared(references=(picture((9, 9, 9)),)), lambda _: None)
    assert "node IPAdapterAdvanced does not exist" in str(caught.value)


def test_a_server_error_keeps_its_status_and_text(
    backend: ComfyUIBackend, comfy: FakeComfyUI
) -> None:
    comfy.prompt_failure = (500, "500 Internal Server Error\n\nServer got itself in trouble")
    with pytest.raises(BackendError, match="Server got itself in trouble") as caught:
        backend.generate(make_prepared(), lambda _: None)
    assert caught.value.status == 500


def test_an_execution_error_names_the_node_and_the_exception(
    backend: ComfyUIBackend, comfy: FakeComfyUI
) -> None:
    comfy.execution_error = "Allocation on device would exceed allowed memory"
    with pytest.raises(BackendError) as caught:
        backend.generate(make_prepared(), lambda _: None)
    message = str(caught.value)
    assert "node 9 (KSampler)" in message
    assert "torch.OutOfMemoryError: Allocation on device would exceed allowed memory" in message


def test_an_unreachable_server_says_how_to_point_at_one() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    backend = ComfyUIBackend(COMFYUI_PRESET, server=url, poll_interval=0.01)
    with pytest.raises(BackendError) as caught:
        backend.generate(make_prepared(), lambda _: None)
    assert str(caught.value) == (
        f"comfyui: cannot reach ComfyUI at {url} — is it running? set CASTBOOK_COMFYUI_URL"
    )


def test_a_prompt_that_never_finishes_times_out_and_is_cancelled(
    make_backend: Callable[..., ComfyUIBackend], comfy: FakeComfyUI
) -> None:
    comfy.never_finish = True
    backend = make_backend(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"did not finish within 0\.3 s"):
        backend.generate(make_prepared(), lambda _: None)
    assert time.monotonic() - started < 3
    (prompt_id,) = comfy.prompt_ids
    assert {"delete": [prompt_id]} in [r.json for r in comfy.requests if r.path == "/queue"]
    assert {"prompt_id": prompt_id} in [r.json for r in comfy.requests if r.path == "/interrupt"]


def test_cancelling_while_it_renders_interrupts_the_prompt(
    backend: ComfyUIBackend, comfy: FakeComfyUI
) -> None:
    comfy.pending_polls = 50
    events: list[Progress] = []

    def cancel_on_third(event: Progress) -> None:
        events.append(event)
        if len(events) == 3:
            raise GenerationCancelled("cancelled by the user")

    with pytest.raises(GenerationCancelled):
        backend.generate(make_prepared(), cancel_on_third)
    interrupts = [r for r in comfy.requests if r.path == "/interrupt"]
    assert len(interrupts) == 1
    assert interrupts[0].json == {"prompt_id": comfy.prompt_ids[0]}
    assert comfy.paths()[-2:] == ["/queue", "/interrupt"]


def test_an_interrupt_on_the_server_counts_as_a_cancellation(
    backend: ComfyUIBackend, comfy: FakeComfyUI
) -> None:
    comfy.never_finish = True
    pressed: list[bool] = []

    def press_cancel_in_comfyui(event: Progress) -> None:
        # Once: on busy cores a second "waiting" event can come before the interrupt lands.
        if "waiting" in event.message and not pressed:
            import httpx

            pressed.append(True)
            httpx.post(f"{comfy.url}/interrupt")

    with pytest.raises(GenerationCancelled, match="interrupted on the ComfyUI server"):
        backend.generate(make_prepared(), press_cancel_in_comfyui)
    # Only the user's own interrupt: castbook does not send another for a finished prompt.
    assert [r.json for r in comfy.requests if r.path == "/interrupt"] == [None]


def test_cancelling_after_the_render_finished_interrupts_nothing(
    backend: ComfyUIBackend, comfy: FakeComfyUI
) -> None:
    def cancel_while_downloading(event: Progress) -> None:
        if event.message.startswith("downloading"):
            raise GenerationCancelled("too late to stop the render")

    with pytest.raises(GenerationCancelled):
        backend.generate(make_prepared(steps=4), cancel_while_downloading)
    assert "/interrupt" not in comfy.paths()


def test_a_workflow_with_more_images_than_the_batch_is_refused(
    make_backend: Callable[..., ComfyUIBackend], tmp_path: Path
) -> None:
    doubled = {
        **USER_WORKFLOW,
        "10": {"class_type": "SaveImage", "inputs": {"filename_prefix": "b", "images": ["8", 0]}},
    }
    path = write_workflow(tmp_path / "twice.json", doubled)
    backend = make_backend(replace(preset(str(path), style="ink"), modes=(Mode.T2I,)))
    with pytest.raises(BackendError, match="produced 2 images, expected 1"):
        backend.generate(make_prepared(), lambda _: None)


def test_previews_beside_the_saved_images_are_ignored(
    make_backend: Callable[..., ComfyUIBackend], tmp_path: Path
) -> None:
    with_preview = {
        **USER_WORKFLOW,
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    path = write_workflow(tmp_path / "preview.json", with_preview)
    backend = make_backend(replace(preset(str(path), style="ink"), modes=(Mode.T2I,)))
    assert len(backend.generate(make_prepared(batch=2), lambda _: None).images) == 2


# -- configuration ---------------------------------------------------------------------------


def test_the_server_comes_from_the_argument_then_the_environment_then_the_preset() -> None:
    environ = {"CASTBOOK_COMFYUI_URL": "http://gpu-box:8188/"}
    assert ComfyUIBackend(COMFYUI_PRESET, server="http://a:1", environ=environ).server == (
        "http://a:1"
    )
    assert ComfyUIBackend(COMFYUI_PRESET, environ=environ).server == "http://gpu-box:8188"
    assert ComfyUIBackend(COMFYUI_PRESET, environ={}).server == "http://127.0.0.1:8188"


def test_the_environment_variable_reaches_a_real_server(comfy: FakeComfyUI) -> None:
    backend = ComfyUIBackend(
        COMFYUI_PRESET, environ={"CASTBOOK_COMFYUI_URL": comfy.url}, poll_interval=0.01
    )
    assert len(backend.generate(make_prepared(), lambda _: None).images) == 1


def test_an_unknown_built_in_workflow_lists_the_known_ones() -> None:
    with pytest.raises(Exception, match="workflow:sd15-ip-adapter, workflow:sd15-img2img"):
        ComfyUIBackend(preset("workflow:sdxl-turbo"), environ={})


# -- a comfyui provider: its base URL is the server, its key a bearer token -----------------

PROXY_KEY = "cb-proxy-key-5555cccc6666"


def test_a_named_comfyui_provider_gives_the_server_and_its_bearer_key(
    comfy: FakeComfyUI, tmp_path: Path, prepare: Callable[..., PreparedRequest]
) -> None:
    save_provider_key(tmp_path, "farm", PROXY_KEY, "paid", kind="comfyui", base_url=comfy.url)
    env = {"CASTBOOK_HOME": str(tmp_path), "CASTBOOK_COMFYUI_URL": "http://127.0.0.1:9"}
    chosen = preset(provider="farm")
    backend = ComfyUIBackend(chosen, environ=env, poll_interval=0.01, timeout=5.0)
    assert backend.server == comfy.url  # the provider's, not CASTBOOK_COMFYUI_URL's
    assert PROXY_KEY not in repr(backend)
    result = backend.generate(prepare(), lambda _: None)
    assert len(result.images) == 1
    assert PROXY_KEY not in json.dumps(result.metadata)
    sent = {(r.method, r.path): r.authorization for r in comfy.requests}
    assert ("GET", "/ws") in sent  # the websocket was opened, with the key
    assert ("POST", "/prompt") in sent
    assert set(sent.values()) == {f"Bearer {PROXY_KEY}"}


def test_without_a_provider_no_authorization_is_sent(
    backend: ComfyUIBackend, comfy: FakeComfyUI, prepare: Callable[..., PreparedRequest]
) -> None:
    backend.generate(prepare(), lambda _: None)
    assert comfy.requests and all(r.authorization == "" for r in comfy.requests)


def test_a_named_comfyui_provider_that_is_missing_is_a_clear_error(tmp_path: Path) -> None:
    env = {"CASTBOOK_HOME": str(tmp_path), "CASTBOOK_COMFYUI_URL": "http://127.0.0.1:9"}
    with pytest.raises(FieldError) as caught:
        ComfyUIBackend(preset(provider="farm"), environ=env)
    assert "'farm'" in str(caught.value) and "providers.toml" in str(caught.value)


# -- character LoRAs: written to ComfyUI's loras folder, applied by LoraLoader nodes ----------


def _lora_file(tmp_path: Path, seed: int = 0) -> tuple[Path, str]:
    """A small SD 1.5-style LoRA file (safetensors) and its sha256, as the blob store keeps it."""
    import hashlib

    np = pytest.importorskip("numpy")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(seed)
    tensors = {
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight": (
            rng.standard_normal((2, 64)).astype("float32")
        ),
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora.up.weight": (
            rng.standard_normal((64, 2)).astype("float32")
        ),
    }
    data = safetensors_numpy.save(tensors)
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / "blobs" / sha
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, sha


def _lora_use(path: Path, sha: str, character: str = "Mira", weight: float = 0.8):
    from castbook.generation.base import LoraUse

    return LoraUse(
        character=character,
        sha256=sha,
        path=str(path),
        weight=weight,
        trigger=f"cbk{sha[:6]}",
        base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
    )


@pytest.fixture
def lora_comfy(tmp_path: Path) -> Iterator[FakeComfyUI]:
    with FakeComfyUI(loras_dir=tmp_path / "ComfyUI" / "models" / "loras") as server:
        yield server


def _lora_backend(comfy: FakeComfyUI, **options: Any) -> ComfyUIBackend:
    chosen = preset(lora_dir=str(comfy.loras_dir), **options)
    return ComfyUIBackend(chosen, server=comfy.url, poll_interval=0.01, timeout=5.0)


def test_a_character_lora_is_written_to_the_loras_folder_and_loaded_by_lora_loader(
    lora_comfy: FakeComfyUI, tmp_path: Path
) -> None:
    path, sha = _lora_file(tmp_path)
    use = _lora_use(path, sha)
    backend = _lora_backend(lora_comfy)
    plain = backend.generate(make_prepared(), lambda _: None)
    without = lora_comfy.workflows[-1]
    # No LoRA: both LoraLoader slots bypassed, the sampler and text encoders on the checkpoint.
    assert nodes_of(without, "LoraLoader") == []
    assert only(without, "KSampler")["model"] == ["1", 0]
    assert [n["inputs"]["clip"] for n in nodes_of(without, "CLIPTextEncode")] == [["1", 1]] * 2

    result = backend.generate(replace(make_prepared(), loras=(use,)), lambda _: None)
    written = lora_comfy.loras_dir / "castbook" / f"castbook-{sha[:16]}.safetensors"
    assert written.read_bytes() == path.read_bytes()
    workflow = lora_comfy.workflows[-1]
    (loader_id,) = [k for k, n in workflow.items() if n["class_type"] == "LoraLoader"]
    assert workflow[loader_id]["inputs"] == {
        "model": ["1", 0],
        "clip": ["1", 1],
        "lora_name": f"castbook/castbook-{sha[:16]}.safetensors",
        "strength_model": 0.8,
        "strength_clip": 0.8,
    }
    assert only(workflow, "KSampler")["model"] == [loader_id, 0]
    assert [n["inputs"]["clip"] for n in nodes_of(workflow, "CLIPTextEncode")] == [
        [loader_id, 1]
    ] * 2
    assert lora_comfy.executions[-1]["loras"] == [
        {"name": f"castbook/castbook-{sha[:16]}.safetensors", "sha256": sha, "strength": 0.8}
    ]
    assert result.metadata["loras"] == [use.described()]
    assert "lora_notes" not in result.metadata
    assert fingerprint(result.images[0]) != fingerprint(plain.images[0])
    # Placed once: the next request finds the same file and ComfyUI lists it.
    before = written.stat().st_mtime_ns
    backend.generate(replace(make_prepared(), loras=(use,)), lambda _: None)
    assert written.stat().st_mtime_ns == before
    assert lora_comfy.paths("GET").count("/models/loras") == 2


def test_two_loras_chain_and_one_more_than_the_slots_is_a_note(
    lora_comfy: FakeComfyUI, tmp_path: Path
) -> None:
    uses = []
    for index, name in enumerate(("Mira", "Oskar", "Vale")):
        path, sha = _lora_file(tmp_path, seed=index)
        uses.append(_lora_use(path, sha, name, weight=0.5 + index / 4))
    result = _lora_backend(lora_comfy).generate(
        replace(make_prepared(), loras=tuple(uses)), lambda _: None
    )
    workflow = lora_comfy.workflows[-1]
    loaders = nodes_of(workflow, "LoraLoader")
    assert [n["inputs"]["strength_model"] for n in loaders] == [0.5, 0.75]
    assert loaders[1]["inputs"]["model"][0] in workflow  # chained on the first
    assert [x["sha256"] for x in lora_comfy.executions[-1]["loras"]] == [
        uses[0].sha256,
        uses[1].sha256,
    ]
    assert [x["character"] for x in result.metadata["loras"]] == ["Mira", "Oskar"]
    (note,) = result.metadata["lora_notes"]
    assert "Vale's LoRA not applied" in note and "takes 2 LoRA(s)" in note


def test_a_lora_dir_comfyui_does_not_read_is_an_error_naming_both_folders(
    lora_comfy: FakeComfyUI, tmp_path: Path
) -> None:
    path, sha = _lora_file(tmp_path)
    elsewhere = tmp_path / "not-comfyui"
    chosen = preset(lora_dir=str(elsewhere))
    backend = ComfyUIBackend(chosen, server=lora_comfy.url, poll_interval=0.01, timeout=5.0)
    with pytest.raises(BackendError) as caught:
        backend.generate(replace(make_prepared(), loras=(_lora_use(path, sha),)), lambda _: None)
    message = str(caught.value)
    assert "does not list castbook/castbook-" in message and str(elsewhere) in message
    assert "extra_model_paths.yaml" in message
    assert lora_comfy.paths("POST").count("/prompt") == 0


def test_without_lora_dir_the_lora_is_a_note_and_the_picture_is_made(
    lora_comfy: FakeComfyUI, tmp_path: Path
) -> None:
    path, sha = _lora_file(tmp_path)
    backend = ComfyUIBackend(COMFYUI_PRESET, server=lora_comfy.url, poll_interval=0.01, timeout=5.0)
    result = backend.generate(
        replace(make_prepared(), loras=(_lora_use(path, sha),)), lambda _: None
    )
    assert nodes_of(lora_comfy.workflows[-1], "LoraLoader") == []
    assert "has no lora_dir option" in result.metadata["lora_notes"][0]
    assert "loras" not in result.metadata


def test_a_damaged_lora_fails_in_the_lora_loader_as_comfyui_reports_it(
    lora_comfy: FakeComfyUI, tmp_path: Path
) -> None:
    import hashlib

    data = b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      "
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / sha
    path.write_bytes(data)
    with pytest.raises(BackendError) as caught:
        _lora_backend(lora_comfy).generate(
            replace(make_prepared(), loras=(_lora_use(path, sha),)), lambda _: None
        )
    assert "LoraLoader" in str(caught.value) and "deserializing header" in str(caught.value)
