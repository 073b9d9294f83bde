"""``castbook eval`` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from castbook.library import CharacterLibrary
from tests.support.cli import castbook
from tests.support.drawings import ALICE, BOB, character, png_bytes


@pytest.fixture
def pictures(tmp_path: Path) -> dict[str, Path]:
    files = {
        "ref.png": character(**ALICE),
        "alice-2.png": character(**ALICE, seed=4),
        "alice-3.jpg": character(**ALICE, seed=8),
        "bob.png": character(**BOB, seed=2),
    }
    paths = {}
    for name, image in files.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(png_bytes(image, "JPEG" if name.endswith("jpg") else "PNG"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    paths["broken.png"] = tmp_path / "broken.png"
    return paths


def test_eval_against_a_reference_file(castbook_home: Path, pictures: dict[str, Path]) -> None:
    code, out, err = castbook(
        "eval", str(pictures["ref.png"]), str(pictures["alice-2.png"]), str(pictures["bob.png"]),
        "--no-faces",
    )  # fmt: skip
    assert code == 0, err
    assert "alice-2.png" in out and "bob.png" in out and "Most consistent" in out
    assert "appearance" in out and "ahash" in out


def test_eval_json_and_min_score(castbook_home: Path, pictures: dict[str, Path]) -> None:
    args = [
        "eval",
        str(pictures["ref.png"]),
        str(pictures["alice-2.png"]),
        str(pictures["bob.png"]),
    ]
    code, out, _ = castbook(*args, "--json", "--no-faces")
    assert code == 0
    result = json.loads(out)
    alice, bob = result["scores"]
    assert alice["score"] > 80 > 20 > bob["score"]
    assert result["most_consistent"] == str(pictures["alice-2.png"])
    assert set(alice["components"]) >= {"ahash", "phash", "dhash", "appearance"}
    code, out, err = castbook(*args, "--min-score", "60", "--no-faces")
    assert code == 1 and "1 of 2 images scored below 60" in err
    code, _, _ = castbook(*args[:3], "--min-score", "60", "--no-faces")
    assert code == 0


def test_eval_against_a_character_stores_reference_features(
    castbook_home: Path, pictures: dict[str, Path]
) -> None:
    code, _, err = castbook(
        "character", "add", "--name", "Alice", "--image", str(pictures["ref.png"])
    )
    assert code == 0, err
    args = ["eval", "--character", "alice", str(pictures["alice-3.jpg"]), str(pictures["bob.png"])]
    code, out, err = castbook(*args, "--json", "--no-faces")
    assert code == 0, err
    first = json.loads(out)
    assert first["reference"] == "character alice"
    library = CharacterLibrary.open()
    image = library.get("Alice").images[0]
    from castbook.evaluation import Scorer

    stored = library.stored_features(image, Scorer(faces=False).key)
    assert stored is not None and stored["ahash"]
    # A second run reads the stored features and gives the same numbers.
    code, out, _ = castbook(*args, "--json", "--no-faces")
    assert json.loads(out)["scores"] == first["scores"]
    # Deleting the character forgets the features with the image.
    castbook("character", "delete", "Alice", "--yes")
    assert library.stored_features(image, Scorer(faces=False).key) is None


def test_eval_reports_unreadable_images_and_exits_1(
    castbook_home: Path, pictures: dict[str, Path]
) -> None:
    code, out, err = castbook(
        "eval", str(pictures["ref.png"]), str(pictures["broken.png"]), str(pictures["alice-2.png"]),
        "--no-faces",
    )  # fmt: skip
    assert code == 1
    assert "broken.png" in err and "error" in out
    assert "Most consistent" in out  # the readable image is still scored


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "{ref.png}"], "at least one IMAGE"),
        (["eval", "{broken.png}", "{ref.png}"], "broken.png"),
        (["eval", "-c", "Nobody", "{ref.png}"], "no character named 'Nobody'"),
        (["eval", "{ref.png}", "{bob.png}", "--min-score", "120"], "between 0 and 100"),
    ],
)
def test_eval_errors_are_one_line(
    castbook_home: Path, pictures: dict[str, Path], args: list[str], message: str
) -> None:
    args = [str(pictures[a[1:-1]]) if a.startswith("{") else a for a in args]
    code, _, err = castbook(*args, "--no-faces")
    assert code == 1 and message in err and "Traceback" not in err
