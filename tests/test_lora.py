"""Character LoRAs (issue 19): training on the tiny random-weight SD 1.5, storing the adapter
with the character, exporting it, and generation applying it.

One LoRA is trained once for the module (40 steps at 64 px, rank 4) and shared by the tests
that only read it; cancel/resume trains its own few steps.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from castbook.blobs import BlobStore  # noqa: E402
from castbook.db import Database  # noqa: E402
from castbook.errors import (  # noqa: E402
    FieldError,
    GenerationCancelled,
    InvalidInputError,
    StorageError,
)
from castbook.generation.diffusers_backend import DiffusersBackend, PipelineCache  # noqa: E402
from castbook.generation.lora_train import (  # noqa: E402
    CHECKPOINT,
    TrainingProgress,
    TrainingSettings,
    check_training,
    checkpoint_step,
    train_character,
    train_lora,
    trigger_token,
)
from castbook.generation.prepare import character_loras, prepare_request  # noqa: E402
from castbook.generation.presets import BUILTIN_PRESETS, Preset  # noqa: E402
from castbook.generation.request import GenerationRequest, Mode  # noqa: E402
from castbook.library import Character, CharacterLibrary  # noqa: E402
from castbook.library.castbook_json import export_document  # noqa: E402
from castbook.library.exchange import import_document  # noqa: E402
from tests.conftest import make_image_bytes  # noqa: E402
from tests.support.api import ApiFactory  # noqa: E402

# A fixed seed whose 40 steps show the fall; the per-step loss is mostly the timestep drawn,
# so the test also measures the loss on one fixed batch, before and after (see below).
SETTINGS = TrainingSettings(steps=40, rank=4, resolution=64, learning_rate=3e-2, seed=1)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared, busy machine: one thread. With two, torch's threads wait on
    each other for cores other processes hold, and a tiny training step took 15× longer
    (benchmarks/train_lora.py: 0.5–0.8 against 11.5 steps/s on 2 cores at load 8)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _preset(model: Path, preset_id: str = "tiny-plain", **options: Any) -> Preset:
    return Preset(
        id=preset_id,
        backend="diffusers",
        model=str(model),
        modes=(Mode.T2I, Mode.I2I),
        options={"family": "sd15", "device": "cpu", **options},
    )


def _images(count: int) -> list[bytes]:
    colours = [(200, 60, 40), (40, 160, 90), (60, 80, 200), (220, 200, 40)]
    return [make_image_bytes(colours[i % 4], size=(96, 96), mark=i * 7) for i in range(count)]


def _library(root: Path) -> CharacterLibrary:
    return CharacterLibrary(Database(f"sqlite:///{root / 'castbook.db'}"), BlobStore(root / "b"))


@pytest.fixture(scope="module")
def trained(
    tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[CharacterLibrary, Character, Preset, Any]]:
    """Mira (3 references, red hair) and the LoRA trained for the tiny SD 1.5."""
    root = tmp_path_factory.mktemp("lora")
    library = _library(root)
    mira = library.create(
        {"name": "Mira", "hair": "red", "style_prompt": "watercolor"},
        [*map(_as_input, _images(3))],
    )
    preset = _preset(tiny_models["sd15"])
    events: list[TrainingProgress] = []
    lora, result = train_character(library, mira, preset, SETTINGS, root / "work", events.append)
    yield library, mira, preset, (lora, result, events)
    library.database.dispose()


def _as_input(data: bytes) -> Any:
    from castbook.library import ImageInput

    return ImageInput(data, "ref.png")


def test_training_lowers_the_loss_and_stores_a_lora_diffusers_loads(
    trained: Any, tiny_models: dict[str, Path]
) -> None:
    library, mira, preset, (lora, result, events) = trained
    losses = result.losses
    assert len(losses) == SETTINGS.steps and [e.step for e in events] == list(range(1, 41))
    assert events[-1] == TrainingProgress(40, 40, losses[-1], "step 40 of 40")
    quarter = len(losses) // 4
    first, last = sum(losses[:quarter]) / quarter, sum(losses[-quarter:]) / quarter
    assert last < first, (first, last)
    assert lora.base_model == preset.model and lora.trigger == trigger_token(mira.id)
    assert (lora.rank, lora.steps, lora.resolution) == (4, 40, 64)
    assert lora.training["caption"].startswith(lora.trigger + ", ")
    assert "red hair" in lora.training["caption"]
    data = library.lora_bytes(lora)
    assert data == result.data and library.loras(mira) == [lora]

    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load

    tensors = load(data)
    assert tensors and all(name.startswith("unet.") for name in tensors)
    fresh = StableDiffusionPipeline.from_pretrained(str(tiny_models["sd15"]), safety_checker=None)
    images = [Image.open(io.BytesIO(library.image_bytes(image))) for image in mira.images]
    before = _fixed_batch_loss(fresh, images, lora.training["caption"])
    fresh.load_lora_weights(tensors, adapter_name="mira")
    assert fresh.get_list_adapters() == {"unet": ["mira"]}
    after = _fixed_batch_loss(fresh, images, lora.training["caption"])
    assert after < before * 0.97, (before, after)


def _fixed_batch_loss(pipe: Any, images: list[Image.Image], caption: str) -> float:
    """The noise-prediction loss on the training images at five fixed timesteps with fixed
    noise: what training lowers, without the per-step draw of timesteps in the way."""
    generator = torch.Generator().manual_seed(0)
    tokens = pipe.tokenizer(caption, padding="max_length", truncation=True, return_tensors="pt")
    total, count = 0.0, 0
    with torch.no_grad():
        states = pipe.text_encoder(tokens.input_ids)[0]
        for image in images:
            rgb = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32)
            pixels = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1
            latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
            for step in (100, 300, 500, 700, 900):
                timestep = torch.tensor([step])
                noise = torch.randn(latents.shape, generator=generator)
                noisy = pipe.scheduler.add_noise(latents, noise, timestep)
                predicted = pipe.unet(noisy, timestep, states).sample
                total += float(torch.nn.functional.mse_loss(predicted, noise))
                count += 1
    return total / count


def _generate(library: CharacterLibrary, preset: Preset, cache: PipelineCache, **values: Any):
    values = {"characters": ("Mira",), **values}
    request = GenerationRequest(
        prompt="portrait", width=256, height=256, steps=2, seed=11, **values
    )
    prepared = prepare_request(request, preset, library=library)
    result = DiffusersBackend(preset, cache=cache).generate(prepared, lambda _: None)
    return prepared, result


def _pixels(result: Any) -> bytes:
    return result.images[0].tobytes()


def test_generation_applies_the_lora_and_says_so(trained: Any) -> None:
    library, _, preset, (lora, _, _) = trained
    cache = PipelineCache()
    prepared, with_lora = _generate(library, preset, cache)
    assert prepared.prompt.startswith(lora.trigger + ", ")
    assert with_lora.metadata["loras"] == [
        {
            "character": "Mira",
            "sha256": lora.sha256,
            "weight": 1.0,
            "trigger": lora.trigger,
            "base_model": preset.model,
        }
    ]
    _, again = _generate(library, preset, cache)
    _, off = _generate(library, preset, cache, lora_weight=0.0)
    assert _pixels(again) == _pixels(with_lora)
    assert _pixels(off) != _pixels(with_lora)
    assert off.metadata["loras"][0]["weight"] == 0.0
    # Without the LoRA at all (a fresh pipeline, nothing loaded) equals weight 0.
    bare = replace(prepared, loras=())
    plain = DiffusersBackend(preset, cache=PipelineCache()).generate(bare, lambda _: None)
    assert _pixels(plain) == _pixels(off)
    assert "loras" not in plain.metadata
    # The same cached pipeline, a request without the character's LoRA: switched off.
    after = DiffusersBackend(preset, cache=cache).generate(bare, lambda _: None)
    assert _pixels(after) == _pixels(plain)


def test_the_consistency_report_renders_without_and_with_the_lora(trained: Any) -> None:
    from castbook.evaluation import Scorer
    from castbook.generation.outputs import PARAMETERS_KEY
    from castbook.render.lora_report import (
        MAX_REPORT_PROMPTS,
        REPORT_PROMPTS,
        REPORT_SEED,
        lora_report,
    )

    library, mira, preset, (lora, _, _) = trained
    preset = replace(preset, defaults={"width": 256, "height": 256, "steps": 2})
    assert len(REPORT_PROMPTS) == MAX_REPORT_PROMPTS
    backend = DiffusersBackend(preset, cache=PipelineCache())
    calls: list[tuple[int, int]] = []
    with Scorer(faces=False) as scorer:
        with pytest.raises(FieldError, match="between 1 and 8, got 9"):
            lora_report(library, mira, preset, backend, scorer, 9)
        report = lora_report(
            library, mira, preset, backend, scorer, 2, lambda d, t, _: calls.append((d, t))
        )
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert [(r.prompt, r.seed, r.with_lora) for r in report.renders] == [
        (REPORT_PROMPTS[0], REPORT_SEED, False),
        (REPORT_PROMPTS[0], REPORT_SEED, True),
        (REPORT_PROMPTS[1], REPORT_SEED + 1, False),
        (REPORT_PROMPTS[1], REPORT_SEED + 1, True),
    ]
    pictures = [Image.open(io.BytesIO(r.png)) for r in report.renders]
    prompts = [json.loads(p.info[PARAMETERS_KEY])["prompt"] for p in pictures]
    # Without: no adapter and no trigger word; with: the trigger word leads.
    assert lora.trigger not in prompts[0] and prompts[1].startswith(lora.trigger + ", ")
    assert pictures[0].tobytes() != pictures[1].tobytes()
    assert pictures[0].size == (256, 256)
    assert all(0 <= r.score <= 100 for r in report.renders)
    figures = report.figures()
    assert figures["references"] is False  # the plain preset has no IP-Adapter
    without, with_ = report.scores(False), report.scores(True)
    assert figures["without"] == {"mean": round(sum(without) / 2, 2), "worst": min(without)}
    assert figures["with"] == {"mean": round(sum(with_) / 2, 2), "worst": min(with_)}
    assert figures["gain"]["worst"] == round(min(with_) - min(without), 2)
    sheet = Image.open(io.BytesIO(report.sheet))
    assert 2 * 256 < sheet.width < 3 * 256 and sheet.height > 2 * 256  # 2 prompts × 2 rows


def test_the_lora_applies_beside_the_ip_adapter(trained: Any, tiny_models: dict[str, Path]) -> None:
    """The default preset (sd15-ip-adapter) conditions on the reference through IP-Adapter
    and applies the LoRA in the same pipeline: both act, and the report says it had the
    references."""
    from castbook.evaluation import Scorer
    from castbook.render.lora_report import lora_report
    from tests.support.tiny_diffusers import IP_ADAPTER_WEIGHT

    library, mira, _, (lora, _, _) = trained
    preset = _preset(
        tiny_models["sd15"],
        "tiny-ip",
        ip_adapter=str(tiny_models["ip"]),
        ip_adapter_subfolder="",
        ip_adapter_weight=IP_ADAPTER_WEIGHT,
        image_encoder_folder="image_encoder",
    )
    cache = PipelineCache()
    prepared, with_lora = _generate(library, preset, cache)
    assert prepared.references and [u.sha256 for u in prepared.loras] == [lora.sha256]
    assert with_lora.metadata["loras"][0]["sha256"] == lora.sha256
    _, again = _generate(library, preset, cache)
    _, off = _generate(library, preset, cache, lora_weight=0.0)
    _, unreferenced = _generate(library, preset, cache, reference_scale=0.0)
    assert _pixels(again) == _pixels(with_lora)
    assert _pixels(off) != _pixels(with_lora)  # the LoRA acts beside the IP-Adapter
    assert _pixels(unreferenced) != _pixels(with_lora)  # and the IP-Adapter beside the LoRA
    preset = replace(preset, defaults={"width": 256, "height": 256, "steps": 2})
    with Scorer(faces=False) as scorer:
        report = lora_report(
            library, mira, preset, DiffusersBackend(preset, cache=cache), scorer, 1
        )
    assert report.figures()["references"] is True
    assert [r.with_lora for r in report.renders] == [False, True]


def test_an_animatediff_preset_on_the_same_sd15_applies_its_lora(
    trained: Any, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """AnimateDiff runs the SD 1.5 model's own UNet with motion modules beside its blocks,
    as animatediff-sd15 runs sd15-ip-adapter's model: the LoRA trained on that model
    applies to the video too (the character appears in it), at its weight."""
    from tests.support.tiny_diffusers import IP_ADAPTER_WEIGHT, make_tiny_motion_adapter

    library, _, _, (lora, _, _) = trained
    preset = Preset(
        id="tiny-animatediff",
        backend="diffusers",
        model=str(tiny_models["sd15"]),
        modes=(Mode.I2V,),
        options={
            "family": "animatediff",
            "device": "cpu",
            "motion_adapter": str(make_tiny_motion_adapter(tmp_path / "motion")),
            "ip_adapter": str(tiny_models["ip"]),
            "ip_adapter_subfolder": "",
            "ip_adapter_weight": IP_ADAPTER_WEIGHT,
            "image_encoder_folder": "image_encoder",
        },
    )
    uses, notes = character_loras([library.get("Mira")], preset, library)
    assert [use.sha256 for use in uses] == [lora.sha256] and notes == []
    cache = PipelineCache()

    def video(**values: Any) -> Any:
        request = GenerationRequest(
            mode=Mode.I2V, prompt="waving", characters=("Mira",), width=256, height=256,
            steps=2, seed=5, num_frames=2, **values,
        )  # fmt: skip
        prepared = prepare_request(request, preset, library=library)
        assert prepared.prompt.startswith(lora.trigger + ", ")
        return DiffusersBackend(preset, cache=cache).generate(prepared, lambda _: None)

    with_lora, again, off = video(), video(), video(lora_weight=0.0)
    assert with_lora.metadata["loras"][0]["sha256"] == lora.sha256
    frames = [[frame.tobytes() for frame in r.videos[0].frames] for r in (with_lora, again, off)]
    assert frames[0] == frames[1] and frames[0] != frames[2]


def test_augmentation_crops_jitters_and_flips_only_when_asked() -> None:
    """Each step's image: a square crop of 80–100 % of the shorter side, colour jitter of at
    most ±5 % per enhancement, and a horizontal flip only with ``flip`` (half the time)."""
    import random

    from castbook.generation.lora_train import _augmented

    # Red rises from left to right: a flip shows as the left edge redder than the right.
    ramp = np.zeros((120, 200, 3), dtype=np.uint8)
    ramp[:, :, 0] = np.linspace(20, 235, 200, dtype=np.uint8)[None, :]
    image = Image.fromarray(ramp)
    for flip in (False, True):
        settings = replace(SETTINGS, flip=flip)
        rng = random.Random(5)
        flipped = []
        for _ in range(40):
            pixels, sizes = _augmented(torch, [image], rng, settings)
            assert pixels.shape == (1, 3, 64, 64)
            original_h, original_w, top, left, height, width = sizes
            assert (original_h, original_w, height, width) == (120, 200, 64, 64)
            # A crop of at least 96 px (80 % of 120) starts within 120 − 96 and 200 − 96 of
            # the edges, in pixels of the 64 px training image.
            assert 0 <= top <= round(24 * 64 / 96) and 0 <= left <= round(104 * 64 / 96)
            red = pixels[0, 0]
            flipped.append(bool(red[:, :4].mean() > red[:, -4:].mean()))
        if flip:
            assert 10 < sum(flipped) < 30, flipped
        else:
            assert not any(flipped)
    # Jitter: a flat grey changes only in brightness (contrast and saturation leave it), by
    # at most 5 %; a flat red keeps its hue (contrast and saturation blend towards grey,
    # brightness scales) and its saturation and value stay within 15 %; and both change
    # from step to step.
    import colorsys

    for fill in ((128, 128, 128), (200, 60, 40)):
        hue, saturation, value = colorsys.rgb_to_hsv(*(c / 255 for c in fill))
        flat = Image.new("RGB", (96, 96), fill)
        rng = random.Random(7)
        seen = set()
        for _ in range(30):
            pixels, _ = _augmented(torch, [flat], rng, SETTINGS)
            rgb = (pixels[0, :, 0, 0].numpy() + 1) * 127.5
            h, s, v = colorsys.rgb_to_hsv(*(float(c) / 255 for c in rgb))
            if saturation:
                assert abs(h - hue) < 0.01, (fill, rgb)
                assert 0.85 < s / saturation < 1.15 and 0.85 < v / value < 1.15, (fill, rgb)
            else:
                assert s < 0.01 and 0.94 < v / value < 1.06, (fill, rgb)
            seen.add(tuple(np.round(rgb).astype(int)))
        assert len(seen) > 5, (fill, seen)


def test_two_characters_loras_apply_together(trained: Any) -> None:
    from safetensors.torch import load, save

    from castbook.library.service import NewLora

    library, _, preset, (lora, _, _) = trained
    if not library.exists("Twin"):
        twin = library.create({"name": "Twin"})
        # Another adapter: Mira's with its up-projections negated (the opposite change).
        mirrored = {
            name: -value if ".up." in name or "lora_B" in name else value
            for name, value in load(library.lora_bytes(lora)).items()
        }
        assert any(".up." in name or "lora_B" in name for name in mirrored)
        fields = lora.model_dump(include={"base_model", "family", "rank", "steps", "resolution"})
        library.save_lora(twin, NewLora(data=save(mirrored), trigger="cbktwin00", **fields))
    cache = PipelineCache()
    _, alone = _generate(library, preset, cache)
    _, both = _generate(library, preset, cache, characters=("Mira", "Twin"))
    assert [use["character"] for use in both.metadata["loras"]] == ["Mira", "Twin"]
    assert both.metadata["prompt"].startswith(f"{lora.trigger}, cbktwin00, ")
    assert _pixels(both) != _pixels(alone)


def test_a_mismatched_base_or_backend_is_a_note_not_an_error(trained: Any) -> None:
    library, mira, _, (lora, _, _) = trained
    other = _preset(Path("/models/another-sd15"), "other")
    uses, notes = character_loras([mira], other, library)
    assert uses == [] and "trained on" in notes[0] and "/models/another-sd15" in notes[0]
    hosted = next(p for p in BUILTIN_PRESETS if p.backend == "openai")
    uses, notes = character_loras([mira], hosted, library)
    assert uses == [] and "not applicable to the openai backend" in notes[0]
    prepared = prepare_request(
        GenerationRequest(prompt="x", characters=("Mira",)), hosted, library=library
    )
    assert prepared.lora_notes == tuple(notes) and lora.trigger not in prepared.prompt
    # The note reaches the output metadata of a real call (the fake OpenAI-compatible server).
    from castbook.generation.openai_backend import OpenAIImagesBackend
    from castbook.generation.prepare import run_generation
    from tests.support.fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer(api_key="sk-lora-test-1234") as server:
        backend = OpenAIImagesBackend(
            hosted, base_url=server.base_url, api_key="sk-lora-test-1234", timeout=30.0
        )
        made = run_generation(backend, prepared, lambda _: None)
    assert made.metadata["lora_notes"] == list(notes) and "loras" not in made.metadata
    gemini = next(p for p in BUILTIN_PRESETS if p.backend == "gemini")
    uses, notes = character_loras([mira], gemini, library)
    assert uses == [] and "not applicable to the gemini backend" in notes[0]
    # ComfyUI applies it once the preset says where ComfyUI reads LoRAs from and which base
    # model its checkpoint is (tests/test_comfyui_backend.py runs it).
    comfyui = next(p for p in BUILTIN_PRESETS if p.backend == "comfyui")
    uses, notes = character_loras([mira], comfyui, library)
    assert uses == [] and "has no lora_dir option" in notes[0]
    placed = replace(comfyui, options={**comfyui.options, "lora_dir": "/comfy/models/loras"})
    uses, notes = character_loras([mira], placed, library)
    assert uses == [] and "trained on" in notes[0] and "stable-diffusion-v1-5" in notes[0]
    same_base = replace(placed, options={**placed.options, "base_model": lora.base_model})
    uses, notes = character_loras([mira], same_base, library)
    assert [use.sha256 for use in uses] == [lora.sha256] and notes == []


def test_export_and_import_carry_the_lora_byte_for_byte(trained: Any, tmp_path: Path) -> None:
    library, mira, _, (lora, _, _) = trained
    document = json.loads(json.dumps(export_document(library, [mira])))
    target = _library(tmp_path)
    report = import_document(target, document)
    assert report.imported == ["Mira"]
    copy = target.get("Mira")
    (imported,) = target.loras(copy)
    assert target.lora_bytes(imported) == library.lora_bytes(lora)
    assert imported.model_dump(exclude={"created_at"}) == lora.model_dump(exclude={"created_at"})
    # Damaged bytes are refused with the character, nothing half-written.
    document["characters"][0]["loras"][0]["data"] = document["characters"][0]["images"][0]["data"]
    document["characters"][0]["name"] = "Mira 2"
    report = import_document(target, document)
    assert report.imported == [] and "sha256" in report.failed[0][1]
    # Deleting the character deletes the adapter's blob.
    target.delete("Mira")
    assert not target.blobs.exists(lora.sha256)
    target.database.dispose()


def test_cancel_then_resume_ends_where_an_uninterrupted_run_ends(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    images = [Image.open(io.BytesIO(data)) for data in _images(3)]
    settings = TrainingSettings(steps=6, rank=2, resolution=64, learning_rate=1e-2, seed=3)
    model = tiny_models["sd15"]
    whole = train_lora(model, images, "cbk000000, red hair", settings, tmp_path / "a")

    def cancel_at_4(event: TrainingProgress) -> None:
        if event.step == 4:
            raise GenerationCancelled("stop")

    work = tmp_path / "b"
    with pytest.raises(GenerationCancelled):
        train_lora(model, images, "cbk000000, red hair", settings, work, cancel_at_4)
    assert (work / CHECKPOINT).exists()
    with pytest.raises(InvalidInputError, match="other settings"):
        train_lora(model, images, "cbk000000", replace(settings, rank=3), work)
    resumed = train_lora(model, images, "cbk000000, red hair", settings, work)
    assert resumed.resumed_from == 4 and not (work / CHECKPOINT).exists()
    assert resumed.losses == whole.losses
    assert resumed.data == whole.data


def test_a_lora_that_could_not_be_stored_is_kept_for_the_next_run(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing fails after the last step (the database went away): the finished run stays
    in its checkpoint, and the same command again stores that LoRA without a step more."""
    library = _library(tmp_path)
    mira = library.create({"name": "Mira", "hair": "red"}, [*map(_as_input, _images(3))])
    preset = _preset(tiny_models["sd15"])
    settings = TrainingSettings(steps=4, rank=2, resolution=64, learning_rate=1e-2, seed=5)
    work = tmp_path / "work"
    store = library.save_lora

    def down(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError("the database is down")

    monkeypatch.setattr(library, "save_lora", down)
    with pytest.raises(OSError, match="database is down"):
        train_character(library, mira, preset, settings, work)
    assert checkpoint_step(work) == 4 and library.loras(mira) == []
    monkeypatch.setattr(library, "save_lora", store)
    events: list[TrainingProgress] = []
    lora, trained = train_character(library, mira, preset, settings, work, events.append)
    assert trained.resumed_from == 4 and [e for e in events if e.step > 0] == []
    assert checkpoint_step(work) is None
    assert [x.sha256 for x in library.loras(mira)] == [lora.sha256]
    # The LoRA an uninterrupted run gives (it replaces the stored one: the same bytes).
    _, whole = train_character(library, mira, preset, settings, tmp_path / "whole")
    assert trained.data == whole.data and trained.losses == whole.losses
    library.database.dispose()


def test_prior_preservation_trains_beside_class_images_and_resumes(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """DreamBooth's prior preservation: the base model draws class images from the caption
    without the trigger word, each step trains on a character image and a class image, and
    a cancelled run resumes onto the same weights, reading the class images it drew.

    What it is for — the adapter leaving the class as the base model drew it — needs a base
    model that denoises its own pictures well. The random-weight model does not: on it the
    class images' loss with prior preservation was 0.96–1.005 times the loss without over
    five runs (three seeds, 12–20 steps), no signal to test. So the test checks the
    mechanism: each step's UNet call is a batch of two, the second conditioned on the class
    prompt, as diffusers' train_dreambooth_lora does."""
    from diffusers import StableDiffusionPipeline

    model = tiny_models["sd15"]
    images = [Image.open(io.BytesIO(data)) for data in _images(3)]
    caption = "cbk000000, red hair"
    settings = TrainingSettings(
        steps=12, rank=4, resolution=64, learning_rate=3e-2, seed=4,
        prior_preservation=True, class_images=3, class_steps=2,
    )  # fmt: skip
    from diffusers import UNet2DConditionModel

    calls: list[tuple[int, Any]] = []
    forward = UNet2DConditionModel.forward

    def spy(unet: Any, sample: Any, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        if unet.training:  # the training steps, not the class images' denoising
            states = args[0] if args else kwargs["encoder_hidden_states"]
            calls.append((sample.shape[0], states.detach().clone()))
        return forward(unet, sample, timestep, *args, **kwargs)

    events: list[TrainingProgress] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(UNet2DConditionModel, "forward", spy)
        whole = train_lora(model, images, caption, settings, tmp_path / "a", events.append)
    drawing = [e.message for e in events if e.step == 0]
    assert drawing == [f"prior preservation: class image {i} of 3" for i in (1, 2, 3)]
    assert [e.step for e in events if e.step] == list(range(1, 13))
    folder = tmp_path / "a" / "class-images"
    assert len(list(folder.glob("*.png"))) == 3
    assert json.loads((folder / "class.json").read_text())["prompt"] == "red hair"
    assert all(np.isfinite(whole.losses)) and len(whole.losses) == 12

    pipe = StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None)
    encoded = {}
    for text in (caption, "red hair"):
        tokens = pipe.tokenizer(text, padding="max_length", truncation=True, return_tensors="pt")
        with torch.no_grad():
            encoded[text] = pipe.text_encoder(tokens.input_ids)[0][0]
    assert len(calls) == 12 and all(size == 2 for size, _ in calls)
    for _, states in calls:
        assert torch.allclose(states[0], encoded[caption], atol=1e-5)
        assert torch.allclose(states[1], encoded["red hair"], atol=1e-5)

    def cancel_at_5(event: TrainingProgress) -> None:
        if event.step == 5:
            raise GenerationCancelled("stop")

    work = tmp_path / "b"
    with pytest.raises(GenerationCancelled):
        train_lora(model, images, caption, settings, work, cancel_at_5)
    with pytest.raises(InvalidInputError, match="other settings"):
        train_lora(model, images, caption, replace(settings, class_prompt="a cat"), work)
    resumed = train_lora(model, images, caption, settings, work)
    assert resumed.resumed_from == 5 and resumed.data == whole.data
    assert resumed.losses == whole.losses


def test_class_images_are_kept_for_the_same_model_and_class_settings_only(
    tmp_path: Path,
) -> None:
    """The class images a run drew are read again by a run with the same model, prompt,
    steps, size and seed (a resume, the CLI's next training), topped up when more are asked,
    and drawn again for another model or prompt, never mixed in."""
    from types import SimpleNamespace

    from castbook.generation.lora_train import _class_images

    drawn: list[tuple[str, int]] = []

    class Pipe:
        def set_progress_bar_config(self, **_: Any) -> None:
            pass

        def __call__(self, prompt: str, **kwargs: Any) -> Any:
            drawn.append((prompt, kwargs["num_inference_steps"]))
            shade = len(drawn) * 10
            return SimpleNamespace(images=[Image.new("RGB", (64, 64), (shade, 0, 0))])

    settings = replace(SETTINGS, prior_preservation=True, class_images=2, class_steps=3)

    def draw(prompt: str, model: str, count: int = 2) -> list[tuple[int, ...]]:
        drawn.clear()
        chosen = replace(settings, class_images=count)
        images = _class_images(torch, Pipe(), prompt, chosen, tmp_path, None, model)
        return [image.getpixel((0, 0)) for image in images]

    first = draw("red hair", "/models/a")
    assert len(drawn) == 2 and first == [(10, 0, 0), (20, 0, 0)]
    assert draw("red hair", "/models/a") == first and drawn == []  # read, not drawn
    assert draw("red hair", "/models/a", 3)[:2] == first and drawn == [("red hair", 3)]
    assert draw("red hair", "/models/b") == first and len(drawn) == 2  # drawn again
    draw("blue hair", "/models/b")
    assert [prompt for prompt, _ in drawn] == ["blue hair"] * 2
    assert len(list((tmp_path / "class-images").glob("*.png"))) == 2


@pytest.mark.parametrize(
    ("change", "count", "field", "message"),
    [
        ({}, 1, "images", "has 1 reference image(s); a LoRA needs at least 3"),
        ({}, 0, "images", "has no reference images"),
        ({"rank": 0}, 3, "rank", "between 1 and 256, got 0"),
        ({"rank": -4}, 3, "rank", "got -4"),
        ({"steps": 0}, 3, "steps", "between 1 and 100000, got 0"),
        ({"resolution": 100}, 3, "resolution", "multiple of 8"),
        # torch's generators take no more (prior preservation's class seeds derive from it)
        ({"seed": 2**32}, 3, "seed", "between 0 and 4294967295, got 4294967296"),
        ({"seed": -1}, 3, "seed", "got -1"),
        ({"prior_preservation": True, "class_images": 0}, 3, "class_images", "got 0"),
        ({"prior_preservation": True, "class_steps": 101}, 3, "class_steps", "and 100, got"),
        ({"prior_preservation": True, "prior_loss_weight": 0}, 3, "prior_loss_weight", "above 0"),
        # refused with prior preservation off too (not stored in the job unused)
        ({"class_images": 1001}, 3, "class_images", "and 1000, got 1001"),
        ({"prior_loss_weight": float("nan")}, 3, "prior_loss_weight", "got nan"),
        ({"class_prompt": "x" * 1001}, 3, "class_prompt", "at most 1000 characters"),
    ],
)
def test_bad_training_input_is_refused_before_any_work(
    change: dict[str, Any], count: int, field: str, message: str
) -> None:
    preset = _preset(Path("/nowhere"))
    with pytest.raises(FieldError) as caught:
        check_training(preset, replace(SETTINGS, **change), count)
    assert caught.value.field == field and message in str(caught.value)


@pytest.mark.parametrize("preset_id", ["openai-images", "comfyui", "svd-i2v"])
def test_a_base_model_without_a_trainable_unet_is_refused(preset_id: str) -> None:
    preset = next(p for p in BUILTIN_PRESETS if p.id == preset_id)
    with pytest.raises(FieldError) as caught:
        check_training(preset, SETTINGS, 5)
    assert caught.value.field == "preset" and "sd15-ip-adapter" in str(caught.value)


def _transformer_pipeline(folder: Path) -> Path:
    """A model folder as a DiT pipeline lays it out (PixArt-α's model_index.json): a
    transformer where SD 1.5 has its UNet. No weights: a refusal must come before loading."""
    folder.mkdir(parents=True)
    index = {
        "_class_name": "PixArtAlphaPipeline",
        "_diffusers_version": "0.30.0",
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"],
        "transformer": ["diffusers", "PixArtTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def test_a_model_folder_without_a_unet_is_refused_before_it_loads(tmp_path: Path) -> None:
    preset = _preset(_transformer_pipeline(tmp_path / "pixart"), "dit")
    with pytest.raises(FieldError) as caught:
        check_training(preset, SETTINGS, 3)
    message = str(caught.value)
    assert caught.value.field == "preset"
    assert "PixArtAlphaPipeline" in message and "a transformer, not a UNet" in message
    # A folder with a UNet, and one not on this machine (its job says so when it loads),
    # pass this check.
    check_training(_preset(Path("/nowhere")), SETTINGS, 3)


def test_sdxl_trains_with_its_size_conditioning_and_generation_applies_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The SDXL preset's family: two text encoders (the pooled embedding and the size and
    crop ids go to the UNet as in diffusers' SDXL script), saved as an SDXL LoRA that a fresh
    StableDiffusionXLPipeline loads and the diffusers backend applies."""
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load

    from tests.support.tiny_diffusers import make_tiny_sdxl

    root = tmp_path_factory.mktemp("lora-sdxl")
    model = make_tiny_sdxl(root / "sdxl")
    library = _library(root)
    kai = library.create({"name": "Kai", "hair": "blue"}, [*map(_as_input, _images(3))])
    preset = Preset(
        id="tiny-sdxl",
        backend="diffusers",
        model=str(model),
        modes=(Mode.T2I,),
        defaults={"width": 256, "height": 256, "steps": 2},
        options={"family": "sdxl", "device": "cpu"},
    )
    check_training(preset, SETTINGS, 3)  # no longer refused
    settings = TrainingSettings(steps=6, rank=2, resolution=64, learning_rate=1e-2, seed=2)
    lora, trained = train_character(library, kai, preset, settings, root / "work")
    assert lora.family == "sdxl" and len(trained.losses) == 6
    assert all(np.isfinite(trained.losses))
    tensors = load(library.lora_bytes(lora))
    assert tensors and all(name.startswith("unet.") for name in tensors)
    fresh = StableDiffusionXLPipeline.from_pretrained(str(model))
    fresh.load_lora_weights(tensors, adapter_name="kai")
    assert fresh.get_list_adapters() == {"unet": ["kai"]}

    cache = PipelineCache()
    request = GenerationRequest(prompt="portrait", characters=("Kai",), width=256, height=256,
                                steps=2, seed=5)  # fmt: skip
    prepared = prepare_request(request, preset, library=library)
    assert prepared.prompt.startswith(lora.trigger + ", ")
    with_lora = DiffusersBackend(preset, cache=cache).generate(prepared, lambda _: None)
    plain = DiffusersBackend(preset, cache=cache).generate(
        replace(prepared, loras=()), lambda _: None
    )
    assert with_lora.metadata["loras"][0]["sha256"] == lora.sha256
    assert _pixels(with_lora) != _pixels(plain)
    # Prior preservation on SDXL: the class image's size ids and pooled embedding join the
    # batch beside the character's.
    prior = replace(settings, steps=3, prior_preservation=True, class_images=1, class_steps=1)
    pictures = [Image.open(io.BytesIO(data)) for data in _images(3)]
    trained = train_lora(model, pictures, "cbk1, blue hair", prior, root / "prior", family="sdxl")
    assert len(trained.losses) == 3 and all(np.isfinite(trained.losses))
    assert len(list((root / "prior" / "class-images").glob("*.png"))) == 1
    library.database.dispose()


def test_the_api_trains_as_a_task_and_lists_the_lora(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    headers = api.key("local")
    made = api.client.post("/v1/characters", json={"name": "Ona", "hair": "grey"}, headers=headers)
    ref = made.json()["id"]
    files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(_images(1))]
    api.client.post(f"/v1/characters/{ref}/images", files=files, headers=headers)
    body = {"preset": "tiny-plain", "steps": 3, "rank": 2, "resolution": 64}
    refused = api.client.post(f"/v1/characters/{ref}/train", json=body, headers=headers)
    assert refused.status_code == 422 and "at least 3" in refused.json()["error"]
    assert api.job_count() == 0
    files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(_images(4)[1:])]
    api.client.post(f"/v1/characters/{ref}/images", files=files, headers=headers)
    hosted = api.client.post(
        f"/v1/characters/{ref}/train", json={**body, "preset": "openai-images"}, headers=headers
    )
    assert hosted.status_code == 422 and hosted.json()["field"] == "preset"
    dit = _preset(_transformer_pipeline(generating / "pixart"), "tiny-dit")
    with (generating / "presets.toml").open("a") as presets:
        presets.write(f'\n[presets.tiny-dit]\nbackend = "diffusers"\nmodel = "{dit.model}"\n')
    unet_less = api.client.post(
        f"/v1/characters/{ref}/train", json={**body, "preset": "tiny-dit"}, headers=headers
    )
    assert unet_less.status_code == 422 and "not a UNet" in unet_less.json()["error"]
    assert api.job_count() == 0

    prior = {"prior_preservation": True, "class_images": 1, "class_steps": 1}
    no_class = api.client.post(
        f"/v1/characters/{ref}/train", json={**body, **prior, "class_images": 0}, headers=headers
    )
    assert no_class.status_code == 422 and no_class.json()["field"] == "class_images"
    assert api.job_count() == 0
    submitted = api.client.post(
        f"/v1/characters/{ref}/train",
        json={**body, **prior, "report_prompts": 1},
        headers=headers,
    )
    assert submitted.status_code == 202, submitted.text
    done = api.wait(submitted.json()["id"], headers)
    assert done["status"] == "succeeded", done
    assert done["kind"] == "lora_train" and done["result"]["steps"] == 3
    # The consistency report: one prompt without and with the LoRA, and the sheet, as outputs.
    report = done["result"]["consistency"]
    assert set(report) == {"without", "with", "gain", "references", "renders", "sheet"}
    assert report["references"] is False  # tiny-plain has no IP-Adapter
    assert [r["lora"] for r in report["renders"]] == [False, True]
    outputs = [output["id"] for output in done["outputs"]]
    assert outputs == [r["output"] for r in report["renders"]] + [report["sheet"]]
    assert report["gain"]["mean"] == round(
        report["renders"][1]["score"] - report["renders"][0]["score"], 2
    )
    listed = api.client.get(f"/v1/characters/{ref}/loras", headers=headers).json()["loras"]
    assert [lora["sha256"] for lora in listed] == [done["result"]["sha256"]]
    assert listed[0]["training"]["prior_preservation"] == {
        "class_prompt": "grey hair",
        "class_images": 1,
        "class_steps": 1,
        "prior_loss_weight": 1.0,
    }
    weighted = api.client.patch(
        f"/v1/characters/{ref}/loras",
        json={"base_model": listed[0]["base_model"], "weight": 0.5},
        headers=headers,
    )
    assert weighted.status_code == 200 and weighted.json()["weight"] == 0.5
    too_strong = api.client.patch(
        f"/v1/characters/{ref}/loras",
        json={"base_model": listed[0]["base_model"], "weight": 3},
        headers=headers,
    )
    assert too_strong.status_code == 422
    assert done["result"]["sha256"] in api.blobs()
    assert not (generating / "training" / done["id"]).exists()

    # Cancelled while training: stops at the next step, stores nothing, keeps no checkpoint.
    long = api.client.post(
        f"/v1/characters/{ref}/train",
        json={**body, "steps": 100_000, "report_prompts": 0},
        headers=headers,
    ).json()
    running = api.wait(long["id"], headers, until=lambda task: task["progress"]["step"] >= 2)
    assert "loss" in running["progress"]["message"], running
    api.client.post(f"/v1/tasks/{long['id']}/cancel", headers=headers)
    cancelled = api.wait(long["id"], headers)
    assert cancelled["status"] == "cancelled", cancelled
    assert cancelled["progress"]["step"] < 100_000
    after = api.client.get(f"/v1/characters/{ref}/loras", headers=headers).json()["loras"]
    assert [lora["sha256"] for lora in after] == [done["result"]["sha256"]]
    assert not (generating / "training" / long["id"]).exists()

    # Cancelled during the report: the LoRA trained is kept, and so is the training's result.
    reported = api.client.post(
        f"/v1/characters/{ref}/train", json={**body, "report_prompts": 8}, headers=headers
    ).json()
    running = api.wait(
        reported["id"],
        headers,
        until=lambda task: (
            task["progress"]["step"] > body["steps"] or task["status"] not in ("queued", "running")
        ),
    )
    assert "consistency report" in running["progress"]["message"], running
    api.client.post(f"/v1/tasks/{reported['id']}/cancel", headers=headers)
    stopped = api.wait(reported["id"], headers)
    assert stopped["status"] == "cancelled", stopped
    assert "consistency" not in stopped["result"] and stopped["result"]["steps"] == 3
    kept = api.client.get(f"/v1/characters/{ref}/loras", headers=headers).json()["loras"]
    assert [lora["sha256"] for lora in kept] == [stopped["result"]["sha256"]]

    # Exported: castbook's format carries the LoRA; the nbp format says it leaves it out.
    own = api.client.get("/v1/characters/export", params={"id": ref}, headers=headers)
    assert [x["sha256"] for x in own.json()["characters"][0]["loras"]] == [kept[0]["sha256"]]
    assert "X-Castbook-Warnings" not in own.headers
    nbp = api.client.get(
        "/v1/characters/export", params={"id": ref, "format": "nbp"}, headers=headers
    )
    assert json.loads(nbp.headers["X-Castbook-Warnings"]) == [
        "Ona's LoRA is not in the nbp format; export with format castbook to keep it"
    ]
    # Removed: gone from the list and from the blob store (nothing else uses it).
    base = {"base_model": kept[0]["base_model"]}
    removed = api.client.delete(f"/v1/characters/{ref}/loras", params=base, headers=headers)
    assert removed.status_code == 200 and removed.json()["sha256"] == kept[0]["sha256"]
    assert api.client.get(f"/v1/characters/{ref}/loras", headers=headers).json()["loras"] == []
    assert kept[0]["sha256"] not in api.blobs()
    again = api.client.delete(f"/v1/characters/{ref}/loras", params=base, headers=headers)
    assert again.status_code == 422 and "has no LoRA for" in again.json()["error"], again.text


def test_the_cli_trains_and_refuses_too_few_images(
    castbook_home: Path, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from castbook.settings import Settings
    from tests.support.cli import castbook

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    castbook_home.mkdir(parents=True)
    (castbook_home / "presets.toml").write_text(
        f'[presets.tiny-plain]\nbackend = "diffusers"\nmodel = "{tiny_models["sd15"]}"\n'
        "defaults = { width = 256, height = 256, steps = 2 }\n"
        'options = { family = "sd15", device = "cpu" }\n'
        f'[presets.tiny-ip]\nbackend = "diffusers"\nmodel = "{tiny_models["sd15"]}"\n'
        "defaults = { width = 256, height = 256, steps = 2 }\n"
        f'options = {{ family = "sd15", device = "cpu", ip_adapter = "{tiny_models["ip"]}", '
        'ip_adapter_subfolder = "", ip_adapter_weight = "ip_adapter.safetensors", '
        'image_encoder_folder = "image_encoder" }\n'
        f'[presets.tiny-video]\nbackend = "diffusers"\nmodel = "{tiny_models["sd15"]}"\n'
        'modes = ["i2v"]\noptions = { family = "animatediff", device = "cpu" }\n'
    )
    library = CharacterLibrary.open(Settings.from_env())
    library.create({"name": "Solo"}, [_as_input(_images(1)[0])])
    library.create({"name": "Tri", "tags": ["symmetric"]}, [*map(_as_input, _images(3))])
    train = ("character", "train", "--preset", "tiny-plain", "--resolution", "64", "--rank", "2")
    code, _, err = castbook(*train, "Solo", "--steps", "2")
    assert code != 0 and "a LoRA needs at least 3" in err
    # A class setting without --prior-preservation is refused, not silently left unused.
    code, _, err = castbook(*train, "Tri", "--steps", "2", "--class-images", "5")
    assert code == 1 and "--class-images set prior preservation: add --prior-preservation" in err
    code, _, err = castbook(*train, "Tri", "--class-images", "0", "--prior-preservation")
    assert code == 1 and "class_images" in err and "got 0" in err, err
    assert library.loras(library.get("Tri")) == []
    sheet = castbook_home / "sheet.png"
    code, out, err = castbook(*train, "Tri", "--steps", "2", "--report-prompts", "1",
                              "--sheet", str(sheet), "--prior-preservation",
                              "--class-images", "1", "--class-steps", "1")  # fmt: skip
    assert code == 0, err
    (lora,) = library.loras(library.get("Tri"))
    assert "Trained Tri's LoRA" in out and lora.sha256[:12] in out and "2 steps" in out
    # The consistency report: the prompt's row, then mean and worst with their gain.
    assert "Consistency without and with the LoRA" in out, out
    assert "portrait, looking at the viewer" in out and "mean" in out and "worst" in out
    assert Image.open(sheet).format == "PNG"
    assert lora.training["flip"] is True  # tagged symmetric
    # No traits to name the class: prior preservation's class prompt is generic.
    assert lora.training["prior_preservation"]["class_prompt"] == "a character"
    from castbook.library import ExportFormat
    from castbook.library.exchange import lora_warnings

    tri = library.get("Tri")
    assert lora_warnings(library, [tri], ExportFormat.CASTBOOK) == []
    assert "not in the nbp format" in lora_warnings(library, [tri], ExportFormat.NBP)[0]

    # The character's LoRAs from the command line: listed, weighted, used, removed.
    code, out, _ = castbook("character", "show", "Tri")
    assert code == 0 and f"trigger word {lora.trigger}, weight 1" in out, out
    code, out, _ = castbook("character", "show", "Tri", "--json")
    assert code == 0 and [x["sha256"] for x in json.loads(out)["loras"]] == [lora.sha256]
    code, out, _ = castbook("character", "loras", "Tri", "--json")
    assert code == 0 and [x["sha256"] for x in json.loads(out)] == [lora.sha256]
    code, _, err = castbook("character", "loras", "Tri", "--weight", "3")
    assert code == 1 and "weight" in err and "3" in err, err
    code, _, err = castbook("character", "loras", "Tri", "--weight", "1", "--base-model", "x")
    assert code == 1 and "has no LoRA for x" in err, err
    code, out, _ = castbook("character", "loras", "Tri", "--weight", "0.5", "-p", "tiny-plain")
    assert code == 0 and "now applies at weight 0.5" in out, out
    assert library.loras(tri)[0].weight == 0.5
    generate = ("generate", "-c", "Tri", "-p", "portrait", "--preset", "tiny-ip",
                "--seed", "3", "--json", "--output", str(castbook_home / "out"))  # fmt: skip
    code, out, err = castbook(*generate)
    assert code == 0, err
    assert [(x["sha256"], x["weight"]) for x in json.loads(out)["loras"]] == [(lora.sha256, 0.5)]
    code, out, err = castbook(*generate, "--lora-weight", "0")
    assert code == 0, err
    assert [x["weight"] for x in json.loads(out)["loras"]] == [0.0]
    code, _, err = castbook(*generate, "--lora-weight", "2.5")
    assert code == 1 and "lora_weight" in err, err
    # The preview says what generation sends: the trigger word on a matching preset, a note
    # on a hosted one.
    code, out, _ = castbook("prompt", "-c", "Tri", "--preset", "tiny-ip", "--json")
    assert code == 0 and json.loads(out)["prompt"] == lora.trigger, out
    code, out, _ = castbook("prompt", "at sea", "-c", "Tri", "--preset", "openai-images")
    assert code == 0 and lora.trigger not in out and "not applicable to the openai" in out, out
    # A video preset (i2v only) is previewed as what it does: AnimateDiff applies the LoRA.
    code, out, err = castbook("prompt", "waving", "-c", "Tri", "--preset", "tiny-video", "--json")
    assert code == 0 and json.loads(out)["prompt"] == f"{lora.trigger}, waving", (out, err)
    code, _, err = castbook("prompt", "-c", "Tri", "--preset", "tiny-video", "--mode", "t2i")
    assert code == 1 and "does i2v, not t2i" in err, err
    # --remove asks first: no keeps it, no answer (no terminal) names --yes.
    code, _, err = castbook("character", "loras", "Tri", "--remove", input="n\n")
    assert code == 1 and "Nothing removed" in err, err
    code, _, err = castbook("character", "loras", "Tri", "--remove", input="")
    assert code == 1 and "nothing removed; pass --yes" in err, err
    assert [x.sha256 for x in library.loras(tri)] == [lora.sha256]
    code, out, _ = castbook("character", "loras", "Tri", "--remove", "--yes")
    assert code == 0 and "Removed Tri's LoRA" in out, out
    assert library.loras(tri) == [] and not library.blobs.exists(lora.sha256)
    code, out, _ = castbook("character", "loras", "Tri")
    assert code == 0 and "has no LoRA" in out
    code, _, err = castbook("character", "loras", "Tri", "--weight", "1")
    assert code == 1 and "castbook character train Tri" in err, err
    library.database.dispose()


def _cli_home_with_tri(
    castbook_home: Path, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> CharacterLibrary:
    """A home for the CLI's training tests: the tiny SD 1.5 as ``tiny-plain`` and Tri, three
    reference images."""
    from castbook.settings import Settings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    castbook_home.mkdir(parents=True)
    (castbook_home / "presets.toml").write_text(
        f'[presets.tiny-plain]\nbackend = "diffusers"\nmodel = "{tiny_models["sd15"]}"\n'
        'options = { family = "sd15", device = "cpu" }\n'
    )
    library = CharacterLibrary.open(Settings.from_env())
    library.create({"name": "Tri", "hair": "red"}, [*map(_as_input, _images(3))])
    return library


def test_the_cli_continues_an_interrupted_training(
    castbook_home: Path, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C keeps a checkpoint and says how to go on; the same command continues from it,
    and other settings are refused with the checkpoint's path rather than mixed in."""
    from castbook.generation import lora_train
    from tests.support.cli import castbook

    library = _cli_home_with_tri(castbook_home, tiny_models, monkeypatch)
    original = lora_train.train_lora

    def ctrl_c_at_step_2(*args: Any, **kwargs: Any) -> Any:
        progress = args[5]

        def stop(event: TrainingProgress) -> None:
            progress(event)
            if event.step == 2:
                raise KeyboardInterrupt

        return original(*args[:5], stop, *args[6:], **kwargs)

    train = ("character", "train", "Tri", "--preset", "tiny-plain", "--resolution", "64",
             "--rank", "2", "--steps", "4", "--report-prompts", "0")  # fmt: skip
    monkeypatch.setattr(lora_train, "train_lora", ctrl_c_at_step_2)
    code, _, err = castbook(*train)
    assert code == 130 and "interrupted at step 2 of 4" in err, err
    assert "run the same command to continue" in err and library.loras(library.get("Tri")) == []

    def ctrl_c_while_loading(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    # Ctrl-C again before the resumed run's first step (the model loading): the checkpoint
    # still holds step 2, and the message says so rather than step 0.
    monkeypatch.setattr(lora_train, "train_lora", ctrl_c_while_loading)
    code, _, err = castbook(*train)
    assert code == 130 and "interrupted at step 2 of 4" in err, err
    monkeypatch.setattr(lora_train, "train_lora", original)
    code, _, err = castbook(*train[:-4], "--steps", "5", "--report-prompts", "0")
    assert code == 1 and "checkpoint of a run with other settings" in err, err
    code, out, err = castbook(*train)
    assert code == 0 and "4 steps, continued from step 2" in out, (out, err)
    (lora,) = library.loras(library.get("Tri"))
    assert lora.steps == 4
    # The finished run left no checkpoint: a Ctrl-C before the first step has nothing to keep.
    monkeypatch.setattr(lora_train, "train_lora", ctrl_c_while_loading)
    code, _, err = castbook(*train)
    assert code == 130 and "before the first training step; the next run starts over" in err
    monkeypatch.setattr(lora_train, "train_lora", original)

    # Ctrl-C during the consistency report: the LoRA is stored, and the message says so
    # (it printed Click's bare "Aborted!", leaving a retraining as the obvious next step).
    from castbook.cli import character as character_cli

    def ctrl_c_in_report(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(character_cli, "_consistency_report", ctrl_c_in_report)
    code, _, err = castbook(*train[:-1], "1")
    (stored,) = library.loras(library.get("Tri"))
    assert code == 130 and "interrupted during the consistency report" in err, err
    assert stored.created_at > lora.created_at and stored.sha256[:12] in err  # stored anew
    library.database.dispose()


def test_the_cli_says_a_trained_lora_it_could_not_store_is_kept(
    castbook_home: Path, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing fails after the last step (the database out of reach): beside the error, the
    command says the checkpoint keeps the trained run, and the same command stores it."""
    from tests.support.cli import castbook

    library = _cli_home_with_tri(castbook_home, tiny_models, monkeypatch)

    def down(*_args: Any, **_kwargs: Any) -> Any:
        raise StorageError("the database refused the change: disk I/O error")

    train = ("character", "train", "Tri", "--preset", "tiny-plain", "--resolution", "64",
             "--rank", "2", "--steps", "2", "--report-prompts", "0")  # fmt: skip
    store = CharacterLibrary.save_lora
    monkeypatch.setattr(CharacterLibrary, "save_lora", down)
    code, _, err = castbook(*train)
    assert code == 1 and "disk I/O error" in err, err
    assert "all 2 steps are trained but the LoRA could not be stored" in err, err
    assert "run the same command again to store it without training" in err, err
    # Failing again before any step (the checkpoint is the finished run's): said again.
    code, _, err = castbook(*train)
    assert code == 1 and "all 2 steps are trained" in err, err
    monkeypatch.setattr(CharacterLibrary, "save_lora", store)
    code, out, err = castbook(*train)
    assert code == 0 and "2 steps, continued from step 2" in out, (out, err)
    assert len(library.loras(library.get("Tri"))) == 1
    library.database.dispose()
