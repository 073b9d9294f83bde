"""Generation requests, presets and output files (backends have their own test files)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from castbook.errors import FieldError, InvalidInputError, NotFoundError
from castbook.generation import (
    GenerationRequest,
    GenerationResult,
    Mode,
    PreparedRequest,
    Video,
    load_presets,
    parse_request,
    prepare_request,
    read_parameters,
    resolve_request,
    save_result,
)
from castbook.library import CharacterLibrary, ImageInput
from tests.conftest import make_image_bytes


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch", 9, "batch: must be between 1 and 8, got 9"),
        ("batch", 0, "between 1 and 8"),
        ("width", 255, "width: must be between 256 and 1536"),
        ("height", 1537, "height: must be between 256 and 1536"),
        ("steps", 51, "steps: must be between 1 and 50"),
        ("guidance", 0.5, "guidance: must be between 1 and 30"),
        ("denoise", 1.5, "denoise: must be between 0 and 1"),
        ("strength", 0.5, "strength: castbook calls it denoise"),
        ("mode", "t2v", "mode"),
        ("width", "wide", "width"),
        ("colour", "red", "colour: extra inputs are not permitted"),
    ],
)
def test_out_of_range_values_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(FieldError, match=message):
        parse_request({field: value})


def test_edges_of_the_ranges_are_accepted() -> None:
    low = parse_request({"batch": 1, "width": 256, "height": 256, "steps": 1, "guidance": 1,
                         "denoise": 0})  # fmt: skip
    high = parse_request({"batch": 8, "width": 1536, "height": 1536, "steps": 50, "guidance": 30,
                          "denoise": 1})  # fmt: skip
    assert (low.batch, high.batch, high.width, high.steps) == (1, 8, 1536, 50)


def test_builtin_presets_cover_every_mode_and_backend() -> None:
    catalog = load_presets(None)
    ids = {p.id for p in catalog}
    assert {"sd15-ip-adapter", "sdxl-ip-adapter-face", "animatediff-sd15", "svd-i2v"} <= ids
    assert {p.backend for p in catalog} == {"diffusers", "openai", "gemini", "comfyui"}
    assert catalog.default_for(Mode.I2V).supports(Mode.I2V)
    with pytest.raises(NotFoundError, match="known presets"):
        catalog.get("nope")


def test_user_presets_add_and_override(tmp_path: Path) -> None:
    (tmp_path / "presets.toml").write_text(
        """
[presets.my-sd15]
backend = "diffusers"
model = "/models/sd15"
modes = ["t2i"]
defaults = { steps = 12, width = 640 }
options = { family = "sd15" }

[presets.sd15-ip-adapter]
backend = "diffusers"
model = "/models/other"
"""
    )
    catalog = load_presets(tmp_path)
    mine = catalog.get("my-sd15")
    assert mine.defaults == {"steps": 12, "width": 640} and mine.modes == (Mode.T2I,)
    assert catalog.get("sd15-ip-adapter").model == "/models/other"
    request = resolve_request({"prompt": "x", "width": 768}, mine)
    assert (request.steps, request.width) == (12, 768)  # the user's value wins
    with pytest.raises(FieldError, match="does t2i, not i2v"):
        resolve_request({"mode": "i2v"}, mine)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[presets.x]\nbackend = 'magic'\nmodel = 'm'", "backend must be one of"),
        ("[presets.x]\nbackend = 'diffusers'", "model must be"),
        ("[presets.x]\nbackend = 'diffusers'\nmodel = 'm'\nmodes = ['t2x']", "modes"),
        ("[presets.x]\nbackend = 'diffusers'\nmodel = 'm'\ndefaults = { prompt = 'x' }", "cannot"),
        ("[presets.x]\nbackend = 'diffusers'\nmodel = 'm'\ndefaults = { steps = 99 }", "steps"),
        ("[presets.x]\nbackend = 'diffusers'\nmodel = 'm'\ncolour = 1", "unknown keys"),
        ("[presets.x\n", "not valid TOML"),
    ],
)
def test_bad_user_presets_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "presets.toml").write_text(text)
    with pytest.raises(InvalidInputError, match=message):
        load_presets(tmp_path)


def test_prepare_injects_characters_and_their_references(library: CharacterLibrary) -> None:
    library.create(
        {
            "name": "Alice",
            "style_prompt": "long black hair, blue eyes",
            "negative_prompt": "glasses",
        },
        [ImageInput(make_image_bytes((200, 20, 20)), "alice.png")],
    )
    preset = load_presets(None).get("sd15-ip-adapter")
    request = resolve_request({"prompt": "at a cafe", "characters": ["alice"]}, preset)
    prepared = prepare_request(request, preset, library=library)
    assert prepared.prompt == "long black hair, blue eyes, at a cafe"
    assert prepared.negative_prompt == "glasses"
    assert len(prepared.references) == 1
    assert prepared.references[0].getpixel((0, 79)) == (200, 20, 20)
    # The reference travels with its stored id, which caches key on.
    alice = library.get("Alice")
    assert prepared.reference_ids == (alice.primary_image.sha256,)
    assert prepared.reference_keys() == prepared.reference_ids
    assert 0 <= prepared.seed < 2**32 and prepared.init_image is None
    assert prepared.options["family"] == "sd15"


def test_prepare_i2i_uses_the_init_image_or_the_first_reference(
    library: CharacterLibrary, tmp_path: Path
) -> None:
    library.create({"name": "A"}, [ImageInput(make_image_bytes((9, 9, 9)), "a.png")])
    init = tmp_path / "init.png"
    init.write_bytes(make_image_bytes((1, 2, 3)))
    preset = load_presets(None).get("sd15-ip-adapter")
    with_init = prepare_request(
        parse_request({"mode": "i2i", "characters": ["A"], "init_image": str(init), "seed": 7}),
        preset,
        library=library,
    )
    assert with_init.init_image.getpixel((0, 79)) == (1, 2, 3) and with_init.seed == 7
    fallback = prepare_request(
        parse_request({"mode": "i2i", "characters": ["A"]}), preset, library=library
    )
    assert fallback.init_image.getpixel((0, 79)) == (9, 9, 9)
    with pytest.raises(FieldError, match="init_image"):
        prepare_request(parse_request({"mode": "i2i", "prompt": "x"}), preset, library=library)
    with pytest.raises(FieldError, match="neither a stored image id nor a readable file"):
        prepare_request(
            parse_request({"prompt": "x", "references": [str(tmp_path / "gone.png")]}), preset
        )
    with pytest.raises(FieldError, match="prompt"):
        prepare_request(parse_request({}), preset)


def test_saved_pngs_carry_their_parameters(tmp_path: Path) -> None:
    request = GenerationRequest(prompt="at a cafe", steps=3, seed=5, batch=2)
    prepared = PreparedRequest(request, "long hair, at a cafe", "blurry", 5)
    images = (Image.new("RGB", (256, 256), "red"), Image.new("RGB", (256, 256), "blue"))
    result = GenerationResult(images=images, seed=5, metadata={"model": "tiny"})
    saved = save_result(result, prepared, tmp_path / "out", stem="t")
    assert [s.path.name for s in saved] == ["t-5-1.png", "t-5-2.png"]
    parameters = read_parameters(saved[1].path)
    assert parameters["prompt"] == "long hair, at a cafe" and parameters["seed"] == 5
    assert parameters["index"] == 1 and parameters["backend_model"] == "tiny"
    with Image.open(saved[0].path) as png:
        assert "Negative prompt: blurry" in png.text["parameters"]
    again = save_result(result, prepared, tmp_path / "out", stem="t")
    assert again[0].path.name == "t-5-1_2.png"  # never overwrites


def test_videos_are_written_as_mp4_and_gif(tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg")
    from castbook.evaluation.video import sample_frames

    frames = tuple(Image.new("RGB", (257, 255), (i * 30, 0, 0)) for i in range(8))
    request = GenerationRequest(mode=Mode.I2V, seed=1)
    result = GenerationResult(videos=(Video(frames, fps=8),), seed=1)
    saved = save_result(result, PreparedRequest(request, "p", "", 1), tmp_path, gif=True, stem="v")
    assert [s.kind for s in saved] == ["video", "gif"]
    decoded = sample_frames(saved[0].path, max_frames=8)
    assert len(decoded) == 8 and decoded[0].image.size == (258, 256)
    with Image.open(saved[1].path) as gif:
        assert gif.n_frames == 8


# ---- one definition of every range, one resolution per request ------------------------


def test_every_entry_point_reads_its_ranges_from_limits() -> None:
    from typer.testing import CliRunner

    from castbook.api.compat import ImageToImageRequest
    from castbook.cli.app import app
    from castbook.generation.request import LIMITS, range_text

    def bounds(model: type, field: str) -> tuple[float, float]:
        schema = model.model_json_schema()["properties"][field]
        options = schema.get("anyOf", [schema])
        (numeric,) = [o for o in options if "minimum" in o]
        return numeric["minimum"], numeric["maximum"]

    for name, limits in LIMITS.items():
        assert bounds(GenerationRequest, name) == limits, name
    compat_names = {"batch": "batch", "width": "width", "height": "height", "steps":
                    "num_inference_steps", "guidance": "guidance_scale", "denoise": "strength",
                    "seed": "seed"}  # fmt: skip
    for ours, theirs in compat_names.items():
        assert bounds(ImageToImageRequest, theirs) == LIMITS[ours], theirs
    help_text = " ".join(CliRunner().invoke(app, ["generate", "--help"]).output.split())
    for name in ("width", "steps", "guidance", "denoise", "batch", "num_frames", "fps"):
        assert range_text(name) in help_text, name


def test_a_stored_resolved_request_is_trusted_as_stored(tmp_path: Path) -> None:
    from castbook.tasks.generation import generation_job_input, stored_request

    (tmp_path / "presets.toml").write_text(
        '[presets.mine]\nbackend = "diffusers"\nmodel = "/m"\n[presets.mine.defaults]\nsteps = 7\n'
    )
    preset = load_presets(tmp_path).get("mine")
    request = resolve_request({"prompt": "x", "guidance": 3}, preset)
    job_input = generation_job_input(request, "mine")
    assert job_input["request"]["steps"] == 7 and job_input["resolved"] is True
    # The preset is edited after submission: the job runs what was accepted.
    (tmp_path / "presets.toml").write_text(
        '[presets.mine]\nbackend = "diffusers"\nmodel = "/m"\n[presets.mine.defaults]\nsteps = 9\n'
    )
    edited = load_presets(tmp_path).get("mine")
    assert stored_request(job_input, edited) == request
    # A row from before requests were stored resolved is resolved when it runs.
    assert stored_request({"request": {"prompt": "x"}, "preset": "mine"}, edited).steps == 9


def test_a_reference_added_without_an_id_is_keyed_by_its_pixels() -> None:
    red, also_red = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "red")
    prepared = PreparedRequest(
        GenerationRequest(prompt="x"), "x", "", 1, references=(red, also_red),
        reference_ids=("a" * 64,),
    )  # fmt: skip
    first, second = prepared.reference_keys()
    assert first == "a" * 64 and second.startswith("pixels:")
    assert (
        second
        == PreparedRequest(
            GenerationRequest(), "x", "", 1, references=(Image.new("RGB", (8, 8), "red"),)
        ).reference_keys()[0]
    )


def test_img2img_runs_at_least_one_step_whatever_steps_times_denoise() -> None:
    from castbook.generation.diffusers_backend import img2img_schedule

    for steps in range(1, 51):
        for denoise in (0.001, 0.01, 0.019, 0.02, 0.1, 1 / 3, 0.5, 0.99, 1.0):
            schedule = img2img_schedule(steps, denoise)
            runs = int(schedule * denoise)  # what diffusers' img2img runs of the schedule
            assert runs >= 1, (steps, denoise)
            if steps * denoise >= 1:
                assert schedule == steps, (steps, denoise)  # unchanged where it already ran
            else:
                assert runs == 1 and int((schedule - 1) * denoise) == 0  # the shortest that runs
