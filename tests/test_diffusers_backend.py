"""The local diffusers backend, end to end on tiny random-weight models.

Every model is built by ``tests/support/tiny_diffusers.py``, saved to a temp folder and loaded
through the preset path a user's local model takes. Nothing is downloaded: the Hugging Face
hub is switched offline and any connection off this machine fails the test.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from castbook.errors import (  # noqa: E402
    FieldError,
    InvalidInputError,
    MissingDependencyError,
    ModelNotAvailableError,
)
from castbook.generation.base import PreparedRequest, Progress  # noqa: E402
from castbook.generation.diffusers_backend import DiffusersBackend, PipelineCache  # noqa: E402
from castbook.generation.prepare import prepare_request, run_generation  # noqa: E402
from castbook.generation.presets import Preset  # noqa: E402
from castbook.generation.request import GenerationRequest, Mode, parse_request  # noqa: E402
from tests.support import tiny_diffusers  # noqa: E402
from tests.support.backend_contract import BackendContract, Prepare, fingerprint  # noqa: E402

CHARACTER = "Mira, red hair, green eyes, freckles"


# ---------------------------------------------------------------------------- offline


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    """No hub look-ups and no connections off this machine while these tests run."""
    real_connect = socket.socket.connect

    def local_only(sock: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if sock.family == socket.AF_UNIX or host in ("127.0.0.1", "::1", "localhost"):
            return real_connect(sock, address)
        raise OSError(f"a diffusers test tried to reach {address!r}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        hub_constants = sys.modules.get("huggingface_hub.constants")
        if hub_constants is not None:
            patch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
        patch.setattr(socket.socket, "connect", local_only)
        yield


# ---------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-diffusers")


@pytest.fixture(scope="session")
def sd15_dir(tiny_root: Path) -> Path:
    return tiny_diffusers.make_tiny_sd15(tiny_root / "sd15")


@pytest.fixture(scope="session")
def ip_adapter_dir(tiny_root: Path) -> Path:
    return tiny_diffusers.make_tiny_ip_adapter(tiny_root / "ip-adapter")


@pytest.fixture(scope="session")
def animatediff_dir(tiny_root: Path) -> Path:
    return tiny_diffusers.make_tiny_animatediff(tiny_root / "animatediff")


@pytest.fixture(scope="session")
def sdxl_dir(tiny_root: Path) -> Path:
    return tiny_diffusers.make_tiny_sdxl(tiny_root / "sdxl")


@pytest.fixture(scope="session")
def svd_dir(tiny_root: Path) -> Path:
    return tiny_diffusers.make_tiny_svd(tiny_root / "svd")


@pytest.fixture(scope="module")
def cache() -> PipelineCache:
    """Shared by the module's backends, the way a worker shares one between presets."""
    return PipelineCache(max_pipelines=8)


def ip_options(folder: Path) -> dict[str, Any]:
    return {
        "ip_adapter": str(folder),
        "ip_adapter_subfolder": "",
        "ip_adapter_weight": tiny_diffusers.IP_ADAPTER_WEIGHT,
        "image_encoder_folder": "image_encoder",
    }


def sd15_preset(model: Path | str, **options: Any) -> Preset:
    return Preset(
        id="tiny-sd15",
        backend="diffusers",
        model=str(model),
        modes=(Mode.T2I, Mode.I2I),
        options={"family": "sd15", **options},
    )


@pytest.fixture
def plain(sd15_dir: Path, cache: PipelineCache) -> DiffusersBackend:
    """SD 1.5 without an IP-Adapter."""
    return DiffusersBackend(sd15_preset(sd15_dir), cache=cache)


@pytest.fixture
def with_ip(sd15_dir: Path, ip_adapter_dir: Path, cache: PipelineCache) -> DiffusersBackend:
    return DiffusersBackend(sd15_preset(sd15_dir, **ip_options(ip_adapter_dir)), cache=cache)


# ---------------------------------------------------------------------------- requests


def picture(color: tuple[int, int, int], size: tuple[int, int] = (96, 96)) -> Image.Image:
    image = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w // 4, h // 5, 3 * w // 4, 4 * h // 5), fill=(240, 210, 180))
    return image


RED = picture((200, 40, 40))
BLUE = picture((40, 60, 200))


def make_prepare(**base: Any) -> Prepare:
    """``prepare(**fields)``: request fields plus ``reference_images=`` and ``init=`` images."""

    def prepare(**fields: Any) -> PreparedRequest:
        fields = {**base, **fields}
        references = tuple(fields.pop("reference_images", ()))
        init = fields.pop("init", None)
        fields.setdefault("seed", 1234)
        fields.setdefault("width", 256)
        fields.setdefault("height", 256)
        fields.setdefault("prompt", "a portrait")
        if references:
            fields["references"] = tuple(f"ref-{i}" for i in range(len(references)))
        if init is not None:
            fields["init_image"] = "init"
        request = GenerationRequest(**fields)
        return PreparedRequest(
            request=request,
            prompt=f"{request.prompt}, {CHARACTER}",  # as the injection layer hands it over
            negative_prompt=request.negative_prompt,
            seed=request.seed or 0,
            references=references,
            init_image=init,
        )

    return prepare


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def distance(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def same_within_rounding(a: Image.Image, b: Image.Image) -> bool:
    """Equal but for batched float maths (a batch of 1 and of N sum in different orders)."""
    return float(np.abs(pixels(a) - pixels(b)).max()) <= 2


def quiet(_: Progress) -> None:
    return None


# ---------------------------------------------------------------------------- the contract


class TestTextToImageContract(BackendContract):
    @pytest.fixture
    def backend(self, with_ip: DiffusersBackend) -> DiffusersBackend:
        return with_ip

    @pytest.fixture
    def prepare(self) -> Prepare:
        return make_prepare(reference_images=(RED,))


class TestImageToImageContract(BackendContract):
    @pytest.fixture
    def backend(self, with_ip: DiffusersBackend) -> DiffusersBackend:
        return with_ip

    @pytest.fixture
    def prepare(self) -> Prepare:
        # denoise 1 runs every step, so the contract's "total == steps" holds for i2i too
        return make_prepare(mode="i2i", init=BLUE, denoise=1.0)


# ---------------------------------------------------------------------------- import & deps


def test_importing_the_backend_does_not_import_torch() -> None:
    probe = (
        "import json, sys\n"
        "import castbook.generation.diffusers_backend as b\n"
        "assert b.DiffusersBackend.name == 'diffusers'\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    modules = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert not modules & {"torch", "diffusers", "transformers", "huggingface_hub"}


def test_missing_diffusers_names_the_extra(sd15_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(MissingDependencyError, match=r"castbook\[diffusers\]") as caught:
        DiffusersBackend(sd15_preset(sd15_dir))
    assert caught.value.extra == "diffusers"
    assert "diffusers is missing" in str(caught.value)


# ---------------------------------------------------------------------------- loading


def test_two_generations_load_the_model_once(sd15_dir: Path) -> None:
    own = PipelineCache()
    first = DiffusersBackend(sd15_preset(sd15_dir), cache=own)
    prepare = make_prepare(steps=1)
    first.generate(prepare(), quiet)
    first.generate(prepare(seed=7), quiet)
    first.generate(prepare(mode="i2i", init=RED, denoise=1.0), quiet)  # from_pipe, no reload
    DiffusersBackend(sd15_preset(sd15_dir), cache=own).generate(prepare(), quiet)
    assert own.loads == 1
    (entry,) = own.entries()
    assert entry.derived["img2img"].unet is entry.pipeline.unet


def test_each_backend_has_its_own_cache_by_default(sd15_dir: Path) -> None:
    backend = DiffusersBackend(sd15_preset(sd15_dir))
    assert backend.cache is not DiffusersBackend(sd15_preset(sd15_dir)).cache


def test_a_hub_model_not_in_the_cache_says_how_to_fix_it(tmp_path: Path) -> None:
    preset = Preset(
        id="my-sd15",
        backend="diffusers",
        model="castbook-tests/never-downloaded",
        modes=(Mode.T2I,),
        options={"family": "sd15", "hf_cache": str(tmp_path / "hf")},
    )
    with pytest.raises(ModelNotAvailableError) as caught:
        DiffusersBackend(preset).generate(make_prepare()(), quiet)
    message = str(caught.value)
    assert "'my-sd15'" in message
    assert "castbook-tests/never-downloaded" in message
    assert "castbook models pull my-sd15" in message and "presets.toml" in message


def test_a_missing_folder_is_not_available(tmp_path: Path) -> None:
    backend = DiffusersBackend(sd15_preset(tmp_path / "nowhere"))
    with pytest.raises(ModelNotAvailableError, match="not a folder on this machine"):
        backend.generate(make_prepare()(), quiet)


def test_a_missing_ip_adapter_is_not_available(sd15_dir: Path, tmp_path: Path) -> None:
    preset = sd15_preset(sd15_dir, **ip_options(tmp_path / "no-adapter"))
    with pytest.raises(ModelNotAvailableError, match="ip_adapter"):
        DiffusersBackend(preset).generate(make_prepare()(), quiet)


def test_a_hub_id_loads_from_the_local_hugging_face_cache(sd15_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "hf" / "models--castbook-tests--tiny-sd15"
    shutil.copytree(sd15_dir, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    preset = Preset(
        id="hub-sd15",
        backend="diffusers",
        model="castbook-tests/tiny-sd15",
        modes=(Mode.T2I,),
        options={"family": "sd15", "hf_cache": str(tmp_path / "hf")},
    )
    result = DiffusersBackend(preset).generate(make_prepare(steps=1)(), quiet)
    assert result.metadata["model"] == "castbook-tests/tiny-sd15"
    assert len(result.images) == 1


# ---------------------------------------------------------------------------- text to image


def test_metadata_records_what_produced_the_images(with_ip: DiffusersBackend) -> None:
    request = make_prepare(steps=2, guidance=5.0, reference_images=(RED,), reference_scale=0.8)()
    metadata = with_ip.generate(request, quiet).metadata
    assert metadata["backend"] == "diffusers"
    assert metadata["model"] == with_ip.preset.model
    assert metadata["family"] == "sd15"
    assert metadata["scheduler"] == "DDIMScheduler"
    assert (metadata["device"], metadata["dtype"]) == ("cpu", "float32")
    assert (metadata["width"], metadata["height"]) == (256, 256)
    assert (metadata["steps"], metadata["guidance"], metadata["seed"]) == (2, 5.0, 1234)
    assert metadata["reference_scale"] == 0.8
    assert metadata["prompt"] == f"a portrait, {CHARACTER}"
    assert metadata["prompt_truncated"] is False


def test_the_injected_prompt_reaches_the_pipeline(
    with_ip: DiffusersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare = make_prepare(steps=2)
    with_ip.generate(prepare(), quiet)  # loads the pipeline
    (entry,) = [e for e in with_ip.cache.entries() if e.key.ip_adapter is not None]
    seen: list[Any] = []
    encode = entry.pipeline.encode_prompt

    def spy(prompt: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(prompt)
        return encode(prompt, *args, **kwargs)

    monkeypatch.setattr(entry.pipeline, "encode_prompt", spy)
    cat = with_ip.generate(prepare(prompt="a cat"), quiet).images[0]
    assert seen == [f"a cat, {CHARACTER}"]
    dog = with_ip.generate(prepare(prompt="a dog"), quiet).images[0]
    assert distance(cat, dog) > 1.0


def test_sizes_that_are_not_multiples_of_8_come_back_exact(plain: DiffusersBackend) -> None:
    result = plain.generate(make_prepare(width=260, height=301, steps=1)(), quiet)
    assert result.images[0].size == (260, 301)


def test_a_batch_is_one_call_equal_to_single_generations(with_ip: DiffusersBackend) -> None:
    prepare = make_prepare(steps=2, reference_images=(RED,))
    events: list[Progress] = []
    batch = with_ip.generate(prepare(batch=3, seed=50), events.append)
    assert [e.step for e in events] == [1, 2]  # one pipeline call, not three
    assert batch.metadata["seeds"] == [50, 51, 52]
    for i, image in enumerate(batch.images):
        alone = with_ip.generate(prepare(seed=50 + i), quiet).images[0]
        assert same_within_rounding(image, alone)
    assert distance(batch.images[0], batch.images[1]) > 1.0


def test_out_of_memory_falls_back_to_smaller_chunks(
    sd15_dir: Path, ip_adapter_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # its own cache: the batch size it learns must not leak into the other tests
    with_ip = DiffusersBackend(sd15_preset(sd15_dir, **ip_options(ip_adapter_dir)))
    prepare = make_prepare(steps=1, batch=4, seed=9, reference_images=(BLUE,))
    whole = with_ip.generate(prepare(), quiet).images
    pipeline_class = type(next(e for e in with_ip.cache.entries() if e.key.ip_adapter).pipeline)
    real_call = pipeline_class.__call__
    sizes: list[int] = []

    def small_gpu(self: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(kwargs["num_images_per_prompt"])
        if kwargs["num_images_per_prompt"] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_class, "__call__", small_gpu)
    chunked = with_ip.generate(prepare(), quiet).images
    assert sizes == [4, 2, 1, 1, 1, 1]
    assert all(same_within_rounding(a, b) for a, b in zip(chunked, whole, strict=True))
    sizes.clear()
    with_ip.generate(prepare(), quiet)  # remembers what fitted
    assert sizes == [1, 1, 1, 1]


def test_dtype_and_scheduler_can_be_chosen(sd15_dir: Path, cache: PipelineCache) -> None:
    preset = sd15_preset(sd15_dir, scheduler="EulerDiscreteScheduler")
    backend = DiffusersBackend(preset, dtype="bf16", cache=cache)
    events: list[Progress] = []
    result = backend.generate(make_prepare(steps=2)(), events.append)
    assert (result.metadata["dtype"], result.metadata["scheduler"]) == (
        "bfloat16",
        "EulerDiscreteScheduler",
    )
    assert [e.step for e in events] == [1, 2]
    with pytest.raises(FieldError, match="dtype"):
        DiffusersBackend(preset, dtype="int8")


def test_the_preset_family_decides_the_modes(sd15_dir: Path) -> None:
    # A preset may only declare modes its family does; requests are checked against the
    # preset's modes once, when they are resolved, so the backend checks the preset itself.
    claims_video = Preset("sd15-video", "diffusers", str(sd15_dir), (Mode.T2I, Mode.I2V))
    with pytest.raises(FieldError, match="does t2i, i2i, not i2v"):
        DiffusersBackend(claims_video)


def test_sdxl_family(sdxl_dir: Path, cache: PipelineCache) -> None:
    folder = sdxl_dir
    modes = (Mode.T2I, Mode.I2I)
    preset = Preset("tiny-sdxl", "diffusers", str(folder), modes, options={"family": "sdxl"})
    backend = DiffusersBackend(preset, cache=cache)
    t2i = backend.generate(make_prepare(steps=2, batch=2)(), quiet)
    i2i = backend.generate(make_prepare(mode="i2i", init=RED, steps=2, denoise=0.5)(), quiet)
    assert [i.size for i in t2i.images] == [(256, 256)] * 2
    assert i2i.images[0].size == (256, 256)
    assert (t2i.metadata["family"], t2i.metadata["scheduler"]) == ("sdxl", "EulerDiscreteScheduler")
    wrong = Preset("sdxl-as-sd15", "diffusers", str(folder), modes, options={"family": "sd15"})
    with pytest.raises(InvalidInputError, match="family = 'sdxl'"):
        DiffusersBackend(wrong).generate(make_prepare(steps=1)(), quiet)


# ---------------------------------------------------------------------------- references


def test_the_reference_image_changes_the_output(with_ip: DiffusersBackend) -> None:
    prepare = make_prepare(steps=2, seed=77)
    red = with_ip.generate(prepare(reference_images=(RED,)), quiet).images[0]
    blue = with_ip.generate(prepare(reference_images=(BLUE,)), quiet).images[0]
    assert distance(red, blue) > 1.0


def test_scale_zero_is_the_model_without_the_adapter(
    with_ip: DiffusersBackend, plain: DiffusersBackend
) -> None:
    prepare = make_prepare(steps=2, seed=78)
    without = with_ip.generate(prepare(), quiet)
    zero = with_ip.generate(prepare(reference_images=(RED,), reference_scale=0.0), quiet)
    bare = plain.generate(prepare(), quiet)
    assert without.metadata["reference_scale"] == 0.0
    assert fingerprint(zero.images[0]) == fingerprint(without.images[0])
    assert fingerprint(bare.images[0]) == fingerprint(without.images[0])


def test_the_preset_scale_applies_unless_the_request_sets_one(
    sd15_dir: Path, ip_adapter_dir: Path, cache: PipelineCache
) -> None:
    preset = sd15_preset(sd15_dir, ip_adapter_scale=0.3, **ip_options(ip_adapter_dir))
    backend = DiffusersBackend(preset, cache=cache)
    prepare = make_prepare(steps=1, reference_images=(RED,))
    assert backend.generate(prepare(), quiet).metadata["reference_scale"] == 0.3
    assert backend.generate(prepare(reference_scale=1.5), quiet).metadata["reference_scale"] == 1.5


def test_references_are_encoded_once(sd15_dir: Path, ip_adapter_dir: Path) -> None:
    backend = DiffusersBackend(sd15_preset(sd15_dir, **ip_options(ip_adapter_dir)))
    prepare = make_prepare(steps=1, reference_images=(RED, BLUE))
    backend.generate(prepare(batch=3), quiet)
    backend.generate(prepare(seed=5), quiet)
    backend.generate(make_prepare(steps=1, reference_images=(BLUE,))(), quiet)
    (entry,) = backend.cache.entries()
    assert entry.encodes == 2
    # A reference with a stored id is cached under the id, its pixels never hashed: the
    # same pixels under a new id are encoded again, the same id is not.
    with_id = replace(prepare(), references=(RED,), reference_ids=("1" * 64,))
    backend.generate(with_id, quiet)
    backend.generate(with_id, quiet)
    assert entry.encodes == 3


def test_several_references_condition_together(
    sd15_dir: Path, ip_adapter_dir: Path, cache: PipelineCache
) -> None:
    prepare = make_prepare(steps=2, seed=79)
    results = {}
    for combine in ("concat", "mean"):
        preset = sd15_preset(sd15_dir, reference_combine=combine, **ip_options(ip_adapter_dir))
        backend = DiffusersBackend(preset, cache=cache)
        assert backend.max_references == 4
        results[combine] = backend.generate(prepare(reference_images=(RED, BLUE)), quiet)
    red = backend.generate(prepare(reference_images=(RED,)), quiet).images[0]
    blue = backend.generate(prepare(reference_images=(BLUE,)), quiet).images[0]
    for result in results.values():
        assert result.metadata["references"] == 2
        assert distance(result.images[0], red) > 0.5
        assert distance(result.images[0], blue) > 0.5
    assert distance(results["concat"].images[0], results["mean"].images[0]) > 0.5
    with pytest.raises(FieldError, match="at most 4"):
        run_generation(backend, prepare(reference_images=(RED,) * 5), quiet)


def test_no_ip_adapter_takes_no_references(plain: DiffusersBackend) -> None:
    assert plain.max_references == 0
    loads = plain.cache.loads
    with pytest.raises(FieldError, match="references"):
        run_generation(plain, make_prepare(reference_images=(RED,))(), quiet)
    assert plain.cache.loads == loads  # refused before the slow part


# ---------------------------------------------------------------------------- image to image


def test_denoise_decides_how_much_of_the_init_image_survives(plain: DiffusersBackend) -> None:
    # Two different init images, same seed: at low denoise the outputs keep their inits'
    # differences, at high denoise the noise dominates. (Pixel distance to the init itself
    # says little here: a random-weight VAE does not reproduce its input.)
    prepare = make_prepare(mode="i2i", steps=10, seed=3)
    source_a, source_b = picture((200, 40, 40), (256, 256)), picture((40, 40, 200), (256, 256))

    def spread(denoise: float) -> float:
        a = plain.generate(prepare(init=source_a, denoise=denoise), quiet).images[0]
        b = plain.generate(prepare(init=source_b, denoise=denoise), quiet).images[0]
        return distance(a, b)

    assert spread(0.2) > 3 * spread(0.9)


def test_img2img_reports_the_steps_it_really_runs(plain: DiffusersBackend) -> None:
    events: list[Progress] = []
    result = plain.generate(
        make_prepare(mode="i2i", init=RED, steps=4, denoise=0.5)(), events.append
    )
    assert [(e.step, e.total) for e in events] == [(1, 2), (2, 2)]
    assert result.metadata["denoise"] == 0.5
    assert result.images[0].size == (256, 256)


def test_img2img_needs_an_init_image(sd15_dir: Path) -> None:
    # prepare_request refuses it, so no backend is handed an i2i request without one.
    preset = sd15_preset(sd15_dir)
    with pytest.raises(FieldError, match="init_image"):
        prepare_request(parse_request({"mode": "i2i", "prompt": "x"}), preset)


# ---------------------------------------------------------------------------- video


def test_animatediff_makes_one_video_per_batch_item(
    animatediff_dir: Path, cache: PipelineCache
) -> None:
    preset = Preset(
        id="tiny-animatediff",
        backend="diffusers",
        model=str(animatediff_dir / "model"),
        modes=(Mode.I2V,),
        options={
            "family": "animatediff",
            "motion_adapter": str(animatediff_dir / "motion_adapter"),
            **ip_options(animatediff_dir / "ip_adapter"),
        },
    )
    backend = DiffusersBackend(preset, cache=cache)
    prepare = make_prepare(mode="i2v", steps=2, num_frames=3, fps=6, seed=11)
    events: list[Progress] = []
    red = backend.generate(prepare(init=RED, batch=2), events.append)
    assert len(red.videos) == 2 and not red.images
    for video in red.videos:
        assert len(video.frames) == 3 and video.fps == 6
        assert {frame.size for frame in video.frames} == {(256, 256)}
    assert [e.step for e in events] == [1, 2]
    blue = backend.generate(prepare(init=BLUE), quiet)
    assert distance(red.videos[0].frames[0], blue.videos[0].frames[0]) > 1.0  # via IP-Adapter
    again = backend.generate(prepare(init=BLUE), quiet)
    assert fingerprint(again.videos[0].frames[-1]) == fingerprint(blue.videos[0].frames[-1])


def test_stable_video_diffusion_animates_the_init_image(
    svd_dir: Path, cache: PipelineCache
) -> None:
    preset = Preset("tiny-svd", "diffusers", str(svd_dir), (Mode.I2V,), options={"family": "svd"})
    backend = DiffusersBackend(preset, cache=cache)
    assert backend.max_references == 1
    events: list[Progress] = []
    result = backend.generate(
        make_prepare(mode="i2v", steps=2, num_frames=3, guidance=2.0, init=RED)(), events.append
    )
    (video,) = result.videos
    assert len(video.frames) == 3
    assert video.frames[0].size == (256, 256)
    assert [e.step for e in events] == [1, 2]
    assert result.metadata["family"] == "svd" and result.metadata["num_frames"] == 3
    with pytest.raises(FieldError, match="init_image"):
        backend.generate(make_prepare(mode="i2v", steps=1, num_frames=2)(), quiet)
