"""The optional learned-embedding encoder (CLIP / DINOv2 from a local folder).

Models are tiny random-weight ones built from configs with a fixed seed and saved to a temp
folder, then loaded through the same path a user's model takes. Tests that need torch and
transformers skip without them; the folder checks, the missing-dependency errors and the
"importing does not import torch" check run everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image, ImageDraw

from castbook.errors import InvalidInputError, MissingDependencyError
from castbook.evaluation import learned
from castbook.evaluation.learned import (
    EMBEDDING_MODEL_ENV,
    LearnedEmbedder,
    configured_embedder,
    load_learned_embedder,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- pictures ---------------------------------------------------------------------------


def face(
    color: tuple[int, int, int], size: tuple[int, int] = (48, 64), mark: int = 0
) -> Image.Image:
    image = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w // 4, h // 5, 3 * w // 4, 4 * h // 5), fill=(240, 210, 180))
    draw.rectangle((mark % w, 0, mark % w + 6, 8), fill=(20, 20 + mark * 40 % 200, 220))
    return image


def stripes(size: tuple[int, int] = (64, 48)) -> Image.Image:
    image = Image.new("RGB", size, (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for x in range(0, size[0], 8):
        draw.rectangle((x, 0, x + 3, size[1]), fill=(255, 255, 0))
    return image


def pictures() -> list[Image.Image]:
    return [
        face((200, 120, 80)),
        face((30, 60, 200), mark=3),
        stripes(),
        face((90, 200, 90), size=(80, 40), mark=7),
        Image.new("RGB", (33, 33), (250, 250, 250)),
    ]


# --- model folders ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> ModuleType:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.support import tiny_vision_models

    return tiny_vision_models


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def clip_dir(tiny: ModuleType, model_root: Path) -> Path:
    return tiny.make_tiny_clip(model_root / "clip")


@pytest.fixture(scope="module")
def clip_vision_dir(tiny: ModuleType, model_root: Path) -> Path:
    return tiny.make_tiny_clip(model_root / "clip-vision", vision_only=True)


@pytest.fixture(scope="module")
def dinov2_dir(tiny: ModuleType, model_root: Path) -> Path:
    return tiny.make_tiny_dinov2(model_root / "dinov2")


# (fixture name, family, model_type, dim)
FAMILIES = [
    ("clip_dir", "clip", "clip", 16),
    ("clip_vision_dir", "clip", "clip_vision_model", 16),
    ("dinov2_dir", "dinov2", "dinov2", 32),
]


@pytest.fixture(params=FAMILIES, ids=[f[0].removesuffix("_dir") for f in FAMILIES])
def family(request: pytest.FixtureRequest) -> dict[str, Any]:
    fixture, family, model_type, dim = request.param
    path = request.getfixturevalue(fixture)
    return {"dir": path, "family": family, "model_type": model_type, "dim": dim}


@pytest.fixture(scope="module")
def embedders() -> dict[Path, LearnedEmbedder]:
    return {}


@pytest.fixture
def embedder(family: dict[str, Any], embedders: dict[Path, LearnedEmbedder]) -> LearnedEmbedder:
    """One load per folder for the module; tests that need fresh loads make their own."""
    if family["dir"] not in embedders:
        embedders[family["dir"]] = LearnedEmbedder(family["dir"])
    return embedders[family["dir"]]


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def fake_folder(
    path: Path, config: Any = None, *, weights: bool = True, processor: bool = True
) -> Path:
    """A folder shaped like a model folder, for the checks that happen before any loading."""
    path.mkdir(parents=True, exist_ok=True)
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (path / "config.json").write_text(text)
    if weights:
        (path / "model.safetensors").write_bytes(b"not really weights")
    if processor:
        (path / "preprocessor_config.json").write_text(json.dumps({"do_resize": True}))
    return path


# --- importing stays cheap --------------------------------------------------------------


def test_importing_the_module_does_not_import_torch_or_transformers() -> None:
    code = (
        "import sys\n"
        "import castbook.evaluation.learned as m\n"
        "assert callable(m.load_learned_embedder) and m.EMBEDDING_MODEL_ENV\n"
        "heavy = sorted(n for n in ('torch', 'transformers') if n in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout, result.stdout


# --- folder checks (no torch needed) ----------------------------------------------------


def test_missing_folder_is_invalid_input(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(InvalidInputError) as caught:
        LearnedEmbedder(missing)
    message = str(caught.value)
    assert "does not exist" in message and str(missing) in message
    assert EMBEDDING_MODEL_ENV in message and "save_pretrained" in message


def test_a_file_is_not_a_model_folder(tmp_path: Path) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="is a file, not a folder"):
        LearnedEmbedder(file)


def test_folder_without_config_is_invalid_input(tmp_path: Path) -> None:
    folder = fake_folder(tmp_path / "m", config=None)
    with pytest.raises(InvalidInputError) as caught:
        LearnedEmbedder(folder)
    assert "has no config.json" in str(caught.value)
    assert "save_pretrained" in str(caught.value)


def test_unreadable_config_is_invalid_input(tmp_path: Path) -> None:
    folder = fake_folder(tmp_path / "m", config="{not json")
    with pytest.raises(InvalidInputError, match=r"cannot read .*config\.json"):
        LearnedEmbedder(folder)


def test_config_without_model_type_is_invalid_input(tmp_path: Path) -> None:
    folder = fake_folder(tmp_path / "m", config={"hidden_size": 32})
    with pytest.raises(InvalidInputError, match="names no model_type"):
        LearnedEmbedder(folder)


def test_unknown_model_type_names_it_and_the_supported_ones(tmp_path: Path) -> None:
    folder = fake_folder(tmp_path / "m", config={"model_type": "vit", "hidden_size": 32})
    with pytest.raises(InvalidInputError) as caught:
        LearnedEmbedder(folder)
    message = str(caught.value)
    assert "'vit'" in message
    for supported in ("clip", "clip_vision_model", "dinov2"):
        assert supported in message
    assert "\n" not in message


def test_folder_without_weights_is_invalid_input(tmp_path: Path) -> None:
    folder = fake_folder(tmp_path / "m", config={"model_type": "dinov2"}, weights=False)
    with pytest.raises(InvalidInputError, match=r"has no weights \(model.safetensors"):
        LearnedEmbedder(folder)


def test_folder_without_image_processor_config_is_invalid_input(tmp_path: Path) -> None:
    folder = fake_folder(tmp_path / "m", config={"model_type": "clip"}, processor=False)
    with pytest.raises(InvalidInputError, match=r"no preprocessor_config\.json"):
        LearnedEmbedder(folder)


def test_load_learned_embedder_checks_the_folder_too(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_learned_embedder(tmp_path / "nowhere")


# --- missing extras ---------------------------------------------------------------------


def test_missing_torch_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = fake_folder(tmp_path / "m", config={"model_type": "clip"})
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(MissingDependencyError) as caught:
        LearnedEmbedder(folder)
    assert caught.value.extra == "embeddings"
    assert "torch is missing" in str(caught.value)
    assert "castbook[embeddings]" in str(caught.value)


def test_missing_transformers_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    folder = fake_folder(tmp_path / "m", config={"model_type": "dinov2"})
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError) as caught:
        LearnedEmbedder(folder)
    assert caught.value.extra == "embeddings"
    assert "transformers is missing" in str(caught.value)


# --- similarity (numpy only) ------------------------------------------------------------


def test_similarity_is_cosine() -> None:
    np = pytest.importorskip("numpy")
    a = np.array([3.0, 4.0, 0.0], dtype=np.float32)
    assert LearnedEmbedder.similarity(a, a * 2) == pytest.approx(1.0)
    assert LearnedEmbedder.similarity(a, -a) == pytest.approx(-1.0)
    assert LearnedEmbedder.similarity(a, np.array([0.0, 0.0, 5.0])) == pytest.approx(0.0)
    assert LearnedEmbedder.similarity(a, np.array([4.0, 3.0, 0.0])) == pytest.approx(24 / 25)
    assert LearnedEmbedder.similarity(a[None, :], a[None, :]) == pytest.approx(1.0)
    assert isinstance(LearnedEmbedder.similarity(a, a), float)


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        ([1.0, 0.0], [1.0, 0.0, 0.0], "shapes"),
        ([[1.0, 0.0]], [1.0, 0.0], "shapes"),
        ([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], "one vector"),
        ([0.0, 0.0], [1.0, 0.0], "all-zero"),
    ],
)
def test_similarity_rejects_what_it_cannot_compare(a: Any, b: Any, match: str) -> None:
    np = pytest.importorskip("numpy")
    with pytest.raises(ValueError, match=match):
        LearnedEmbedder.similarity(np.array(a), np.array(b))


# --- loading and embedding (torch + transformers) ---------------------------------------


def test_loads_the_family_from_the_saved_folder(
    family: dict[str, Any], embedder: LearnedEmbedder
) -> None:
    assert embedder.family == family["family"]
    assert embedder.model_type == family["model_type"]
    assert embedder.dim == family["dim"]
    assert embedder.device == "cpu"
    assert embedder.model_dir == family["dir"].resolve()
    assert embedder.name.startswith(family["family"] + ":")


def test_embeddings_have_shape_n_by_dim_and_unit_norm(embedder: LearnedEmbedder) -> None:
    import numpy as np

    vectors = embedder.embed(pictures())
    assert vectors.shape == (5, embedder.dim)
    assert vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_the_same_image_has_similarity_one(embedder: LearnedEmbedder) -> None:
    image = face((200, 120, 80))
    first = embedder.embed([image])[0]
    again = embedder.embed([image.copy()])[0]
    assert LearnedEmbedder.similarity(first, again) == pytest.approx(1.0, abs=1e-5)


def test_different_images_are_less_similar(embedder: LearnedEmbedder) -> None:
    vectors = embedder.embed(pictures())
    scores = [
        LearnedEmbedder.similarity(vectors[i], vectors[j])
        for i in range(len(vectors))
        for j in range(i + 1, len(vectors))
    ]
    assert max(scores) < 0.9999
    assert min(scores) < 0.99


def test_loading_twice_gives_the_same_vectors(family: dict[str, Any]) -> None:
    import numpy as np

    first = LearnedEmbedder(family["dir"]).embed(pictures())
    second = LearnedEmbedder(family["dir"]).embed(pictures())
    np.testing.assert_allclose(first, second, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_a_batch_gives_the_same_vectors_as_one_by_one(
    embedder: LearnedEmbedder, batch_size: int
) -> None:
    import numpy as np

    images = pictures()
    batched = embedder.embed(images, batch_size=batch_size)
    single = np.stack([embedder.embed([image])[0] for image in images])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_matches_transformers_run_directly(
    family: dict[str, Any], embedder: LearnedEmbedder
) -> None:
    """The vectors are the model's own image features: the real weights were loaded (not a
    re-initialised projection) and the right output was taken."""
    import numpy as np
    import torch
    import transformers

    images = pictures()
    processor = transformers.AutoImageProcessor.from_pretrained(family["dir"])
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        if family["model_type"] == "clip":
            model = transformers.CLIPModel.from_pretrained(family["dir"]).eval()
            features = model.visual_projection(
                model.vision_model(pixel_values=pixels).pooler_output
            )
        elif family["model_type"] == "clip_vision_model":
            model = transformers.CLIPVisionModelWithProjection.from_pretrained(family["dir"]).eval()
            features = model(pixel_values=pixels).image_embeds
        else:
            model = transformers.Dinov2Model.from_pretrained(family["dir"]).eval()
            features = model(pixel_values=pixels).last_hidden_state[:, 0]
    expected = torch.nn.functional.normalize(features, dim=-1).numpy()
    np.testing.assert_allclose(embedder.embed(images), expected, atol=1e-5)


def test_dropout_in_the_config_does_not_make_vectors_random(
    family: dict[str, Any], tmp_path: Path
) -> None:
    """The model runs in eval mode: dropout is off even where the config asks for it."""
    import numpy as np

    folder = copy_model(family["dir"], tmp_path / "dropout")
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    target = config["vision_config"] if family["model_type"] == "clip" else config
    target.update(attention_dropout=0.5, hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
    config_file.write_text(json.dumps(config))
    embedder = LearnedEmbedder(folder)
    images = [face((200, 120, 80)), stripes()]
    np.testing.assert_array_equal(embedder.embed(images), embedder.embed(images))


def test_non_rgb_images_are_converted(family: dict[str, Any], tmp_path: Path) -> None:
    """Even when the processor config would not convert them itself."""
    import numpy as np

    folder = copy_model(family["dir"], tmp_path / "no-convert")
    config_file = folder / "preprocessor_config.json"
    config_file.write_text(
        json.dumps({**json.loads(config_file.read_text()), "do_convert_rgb": False})
    )
    embedder = LearnedEmbedder(folder)
    rgb = face((120, 120, 120))
    gray = rgb.convert("L")
    rgba = rgb.convert("RGBA")
    vectors = embedder.embed([gray, rgba, gray.convert("RGB"), rgb, rgb.convert("P")])
    assert vectors.shape == (5, embedder.dim)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    np.testing.assert_allclose(vectors[1], vectors[3], atol=1e-6)


def test_no_images_give_an_empty_matrix(embedder: LearnedEmbedder) -> None:
    vectors = embedder.embed([])
    assert vectors.shape == (0, embedder.dim)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5])
def test_bad_batch_size_is_rejected(embedder: LearnedEmbedder, batch_size: Any) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        embedder.embed([face((1, 2, 3))], batch_size=batch_size)


def test_non_images_are_rejected(embedder: LearnedEmbedder) -> None:
    with pytest.raises(TypeError, match=r"images\[1\]"):
        embedder.embed([face((1, 2, 3)), b"png bytes"])  # type: ignore[list-item]


def test_old_style_clip_processor_config_gives_the_same_vectors(
    tiny: ModuleType, clip_dir: Path, tmp_path: Path
) -> None:
    import numpy as np

    legacy = tiny.write_legacy_clip_preprocessor(copy_model(clip_dir, tmp_path / "legacy"))
    assert "feature_extractor_type" in (legacy / "preprocessor_config.json").read_text()
    np.testing.assert_allclose(
        LearnedEmbedder(legacy).embed(pictures()),
        LearnedEmbedder(clip_dir).embed(pictures()),
        atol=1e-5,
    )


# --- names ------------------------------------------------------------------------------


def test_name_is_stable_for_the_same_model(family: dict[str, Any], tmp_path: Path) -> None:
    first = LearnedEmbedder(family["dir"]).name
    assert first == LearnedEmbedder(family["dir"]).name
    assert first == LearnedEmbedder(str(family["dir"])).name
    # The name follows the content, so a copied model keeps its cached embeddings.
    assert first == LearnedEmbedder(copy_model(family["dir"], tmp_path / "copy")).name
    prefix, digest = first.split(":")
    assert prefix == family["family"]
    assert len(digest) == 12 and int(digest, 16) >= 0


def test_name_changes_with_the_model(
    tiny: ModuleType, clip_dir: Path, clip_vision_dir: Path, dinov2_dir: Path, tmp_path: Path
) -> None:
    names = {
        LearnedEmbedder(clip_dir).name,
        LearnedEmbedder(clip_vision_dir).name,
        LearnedEmbedder(dinov2_dir).name,
        # Same config, other weights.
        LearnedEmbedder(tiny.make_tiny_clip(tmp_path / "clip-seed1", seed=1)).name,
        LearnedEmbedder(tiny.make_tiny_dinov2(tmp_path / "dinov2-seed1", seed=1)).name,
        # Same weights, other preprocessing.
        LearnedEmbedder(
            tiny.write_legacy_clip_preprocessor(copy_model(clip_dir, tmp_path / "legacy"))
        ).name,
    }
    assert len(names) == 6


def test_name_samples_the_ends_of_large_weight_files(
    tiny: ModuleType, clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights bigger than two samples are fingerprinted by their first and last bytes, which
    still tells retrained weights apart."""
    monkeypatch.setattr(learned, "_SAMPLE_BYTES", 256)
    assert (clip_dir / "model.safetensors").stat().st_size > 2 * 256
    other = tiny.make_tiny_clip(tmp_path / "clip-seed1", seed=1)
    name = LearnedEmbedder(clip_dir).name
    assert name == LearnedEmbedder(clip_dir).name
    assert name != LearnedEmbedder(other).name
    monkeypatch.undo()
    assert name != LearnedEmbedder(clip_dir).name  # sampled, not the whole file


# --- broken model folders ---------------------------------------------------------------


def test_garbage_weights_are_invalid_input(clip_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(clip_dir, tmp_path / "garbage")
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    with pytest.raises(InvalidInputError) as caught:
        LearnedEmbedder(folder)
    assert "cannot load the clip model" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_weights_missing_layers_are_invalid_input(dinov2_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = copy_model(dinov2_dir, tmp_path / "partial")
    weights = load_file(folder / "model.safetensors")
    kept = {key: value for key, value in weights.items() if ".layer.1." not in key}
    assert len(kept) < len(weights)
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InvalidInputError, match=r"do not fit its config.json \(missing"):
        LearnedEmbedder(folder)


def test_clip_vision_model_without_projection_is_invalid_input(
    tiny: ModuleType, tmp_path: Path
) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(**tiny.VISION_CONFIG)
    transformers.CLIPVisionModel(config).save_pretrained(tmp_path / "no-projection")
    shutil.copy(
        tiny.make_tiny_clip(tmp_path / "donor", vision_only=True) / "preprocessor_config.json",
        tmp_path / "no-projection",
    )
    with pytest.raises(InvalidInputError, match="visual_projection"):
        LearnedEmbedder(tmp_path / "no-projection")


def test_broken_processor_config_is_invalid_input(clip_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(clip_dir, tmp_path / "bad-processor")
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_processor_type": "NoSuchImageProcessor"})
    )
    with pytest.raises(InvalidInputError, match="cannot load the image processor"):
        LearnedEmbedder(folder)


# --- devices ----------------------------------------------------------------------------


def test_a_whole_clip_checkpoint_loads_without_complaints_about_its_text_tower(
    clip_dir: Path,
) -> None:
    import logging

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    collect = Collect()
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(collect)
    try:
        LearnedEmbedder(clip_dir)
    finally:
        transformers_logger.removeHandler(collect)
    assert not [message for message in collect.messages if "text_model" in message]


def test_device_can_be_chosen(clip_dir: Path) -> None:
    assert LearnedEmbedder(clip_dir, device="cpu").device == "cpu"


def test_unknown_device_is_invalid_input(clip_dir: Path) -> None:
    with pytest.raises(InvalidInputError, match="unknown torch device 'gpu-please'"):
        LearnedEmbedder(clip_dir, device="gpu-please")


def test_cuda_without_a_gpu_is_invalid_input(clip_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InvalidInputError, match="no CUDA GPU"):
        LearnedEmbedder(clip_dir, device="cuda")


# --- cache and setting ------------------------------------------------------------------


def test_load_learned_embedder_caches_per_folder_and_device(
    clip_dir: Path, dinov2_dir: Path
) -> None:
    first = load_learned_embedder(clip_dir)
    assert load_learned_embedder(str(clip_dir)) is first
    assert load_learned_embedder(clip_dir / ".." / clip_dir.name) is first
    assert load_learned_embedder(clip_dir, device="cpu") is not first
    assert load_learned_embedder(clip_dir, device="cpu") is load_learned_embedder(
        clip_dir, device="cpu"
    )
    assert load_learned_embedder(dinov2_dir) is not first


def test_load_learned_embedder_reloads_a_changed_model(tiny: ModuleType, tmp_path: Path) -> None:
    folder = tiny.make_tiny_clip(tmp_path / "m", seed=0)
    before = load_learned_embedder(folder)
    tiny.make_tiny_clip(folder, seed=1)
    after = load_learned_embedder(folder)
    assert after is not before
    assert after.name != before.name


def test_configured_embedder_is_none_without_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(EMBEDDING_MODEL_ENV, raising=False)
    assert configured_embedder() is None
    assert configured_embedder({}) is None
    assert configured_embedder({EMBEDDING_MODEL_ENV: ""}) is None
    assert configured_embedder({EMBEDDING_MODEL_ENV: "   "}) is None


def test_configured_embedder_reads_the_setting(
    clip_dir: Path, dinov2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_mapping = configured_embedder({EMBEDDING_MODEL_ENV: str(dinov2_dir)})
    assert from_mapping is not None
    assert from_mapping.family == "dinov2"
    assert from_mapping is load_learned_embedder(dinov2_dir)

    monkeypatch.setenv(EMBEDDING_MODEL_ENV, str(clip_dir))
    from_env = configured_embedder()
    assert from_env is not None
    assert from_env.family == "clip"
    assert from_env.name == LearnedEmbedder(clip_dir).name


def test_configured_embedder_with_a_bad_folder_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        configured_embedder({EMBEDDING_MODEL_ENV: str(tmp_path / "nowhere")})


def test_the_module_names_its_public_api() -> None:
    assert set(learned.__all__) >= {
        "EMBEDDING_MODEL_ENV",
        "LearnedEmbedder",
        "configured_embedder",
        "load_learned_embedder",
    }
    assert EMBEDDING_MODEL_ENV == "CASTBOOK_EVAL_EMBEDDING_MODEL"
