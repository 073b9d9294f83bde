"""``castbook generate`` end to end: a user preset pointing at tiny local models on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.support.cli import castbook
from tests.support.drawings import ALICE, character, png_bytes

pytest.importorskip("diffusers")


def test_generate_with_a_character(cli_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = castbook(
        "generate", "-c", "Alice", "-p", "at a cafe", "--preset", "tiny", "--batch", "2",
        "--seed", "5", "-o", str(out), "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout)
    assert result["prompt"] == "long black hair, at a cafe" and result["seed"] == 5
    paths = [Path(o["path"]) for o in result["outputs"]]
    assert len(paths) == 2 and all(p.parent == out for p in paths)
    with Image.open(paths[0]) as image:
        assert image.size == (256, 256)
        parameters = json.loads(image.text["castbook"])
    assert parameters["prompt"] == "long black hair, at a cafe"
    assert parameters["seed"] == 5 and parameters["characters"] == ["Alice"]
    assert parameters["backend_references"] == 1


def test_same_seed_same_picture_from_the_cli(cli_home: Path, tmp_path: Path) -> None:
    args = ["generate", "-c", "Alice", "-p", "x", "--preset", "tiny", "--seed", "9", "--json"]
    first = json.loads(castbook(*args, "-o", str(tmp_path / "a"))[1])
    second = json.loads(castbook(*args, "-o", str(tmp_path / "b"))[1])
    with (
        Image.open(first["outputs"][0]["path"]) as a,
        Image.open(second["outputs"][0]["path"]) as b,
    ):
        assert a.tobytes() == b.tobytes()


def test_generate_image_to_image_and_video(cli_home: Path, tmp_path: Path) -> None:
    init = tmp_path / "init.png"
    init.write_bytes(png_bytes(character(**ALICE, seed=3)))
    code, stdout, err = castbook(
        "generate", "-c", "Alice", "--mode", "i2i", "--init", str(init), "--denoise", "0.5",
        "--preset", "tiny", "-o", str(tmp_path / "i2i"), "--json",
    )  # fmt: skip
    assert code == 0, err
    assert len(json.loads(stdout)["outputs"]) == 1
    code, stdout, err = castbook(
        "generate", "-c", "Alice", "-p", "waving", "--mode", "i2v", "--preset", "tiny-video",
        "--gif", "-o", str(tmp_path / "video"), "--json",
    )  # fmt: skip
    assert code == 0, err
    kinds = [o["kind"] for o in json.loads(stdout)["outputs"]]
    assert kinds == ["video", "gif"]
    with Image.open(json.loads(stdout)["outputs"][1]["path"]) as gif:
        assert gif.n_frames == 4


def test_progress_is_shown_per_step(cli_home: Path, tmp_path: Path) -> None:
    code, stdout, _ = castbook(
        "generate", "-p", "a cat", "--preset", "tiny-plain", "-o", str(tmp_path / "o")
    )
    assert code == 0
    assert "saved image" in stdout and "--seed" in stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "Alice", "-p", "x", "--preset", "tiny-plain"], "takes at most 0 reference"),
        (["-p", "x", "--preset", "tiny", "--batch", "9"], "batch: must be between 1 and 8"),
        (["-p", "x", "--preset", "sd15-ip-adapter"], "sd15-ip-adapter"),
        (["-p", "x", "--preset", "nope"], "no preset 'nope'"),
        (["-c", "Nobody", "-p", "x", "--preset", "tiny"], "no character named 'Nobody'"),
        (["--mode", "i2i", "-p", "x", "--preset", "tiny"], "init_image"),
    ],
)
def test_generate_errors_are_one_line(
    cli_home: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    code, _, err = castbook("generate", *args, "-o", str(tmp_path / "o"))
    assert code == 1
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
