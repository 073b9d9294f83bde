"""The ``castbook`` command line, driven through Typer's CliRunner against a temp CASTBOOK_HOME."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_image_bytes
from tests.support.cli import castbook


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    files = {
        "alice": ("alice.png", make_image_bytes((200, 30, 30), (120, 160))),
        "alice2": ("alice2.jpg", make_image_bytes((190, 40, 40), (120, 160), "JPEG")),
        "bob": ("bob.webp", make_image_bytes((30, 30, 200), (120, 160), "WEBP")),
        "huge": ("huge.png", make_image_bytes((10, 10, 10), (3000, 1500))),
    }
    paths = {}
    for key, (name, data) in files.items():
        paths[key] = tmp_path / name
        paths[key].write_bytes(data)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    paths["text"] = text
    return paths


def add_alice(images: dict[str, Path]) -> None:
    code, _, err = castbook(
        "character", "add", "--name", "Alice", "--image", str(images["alice"]),
        "--style", "long black hair, blue eyes, white shirt, silver necklace",
        "--hair", "long black", "--eyes", "blue", "--accessory", "silver necklace",
        "--accessory", "watch", "--feature", "mole", "--tag", "hero",
    )  # fmt: skip
    assert code == 0, err


def show(name: str) -> dict:
    code, out, err = castbook("character", "show", name, "--json")
    assert code == 0, err
    return json.loads(out)


def test_add_list_show(castbook_home: Path, images: dict[str, Path]) -> None:
    add_alice(images)
    code, out, _ = castbook("character", "list")
    assert code == 0 and "Alice" in out and "1 character" in out
    code, out, _ = castbook("character", "list", "--json")
    (listed,) = json.loads(out)
    assert listed["name"] == "Alice"
    alice = show("alice")
    assert alice["style_prompt"].startswith("long black hair")
    assert alice["physical"]["eyes"] == "blue"
    assert alice["accessories"] == ["silver necklace", "watch"]
    assert alice["distinctive_features"] == ["mole"] and alice["tags"] == ["hero"]
    assert alice["primary_image"] == alice["images"][0]["sha256"]
    code, out, _ = castbook("character", "show", "Alice")
    assert code == 0 and "silver necklace" in out and "Reference images" in out
    assert (castbook_home / "castbook.db").exists()
    assert len(list((castbook_home / "blobs").rglob("*"))) >= 2


def test_several_images_and_primary(castbook_home: Path, images: dict[str, Path]) -> None:
    code, _, err = castbook(
        "character", "add", "--name", "Alice", "--image", str(images["alice"]),
        "--image", str(images["alice2"]), "--primary", "2",
    )  # fmt: skip
    assert code == 0, err
    alice = show("Alice")
    assert [i["is_primary"] for i in alice["images"]] == [False, True]


def test_large_reference_is_resized_and_the_user_is_told(
    castbook_home: Path, images: dict[str, Path]
) -> None:
    code, _, err = castbook("character", "add", "--name", "Wide", "--image", str(images["huge"]))
    assert code == 0
    assert "resized to 1536×768" in err and "original is not kept" in err
    assert (show("Wide")["images"][0]["width"], show("Wide")["images"][0]["height"]) == (1536, 768)


def test_chinese_name(castbook_home: Path, images: dict[str, Path]) -> None:
    code, out, _ = castbook("character", "add", "--name", "主角", "--image", str(images["bob"]))
    assert code == 0 and "主角" in out
    assert show("主角")["name"] == "主角"
    code, out, _ = castbook("character", "list")
    assert "主角" in out


def test_list_filters_by_tag_and_handles_an_empty_library(
    castbook_home: Path, images: dict[str, Path]
) -> None:
    code, out, _ = castbook("character", "list")
    assert code == 0 and "empty" in out
    add_alice(images)
    castbook("character", "add", "--name", "Bob")
    code, out, _ = castbook("character", "list", "--tag", "HERO", "--json")
    assert [c["name"] for c in json.loads(out)] == ["Alice"]


def test_edit_fields_and_images(castbook_home: Path, images: dict[str, Path]) -> None:
    add_alice(images)
    code, _, err = castbook(
        "character", "edit", "Alice", "--name", "Alicia", "--hair", "short red",
        "--accessory", "", "--add-image", str(images["alice2"]), "--add-image", str(images["bob"]),
        "--primary", "3",
    )  # fmt: skip
    assert code == 0, err
    alicia = show("Alicia")
    assert alicia["physical"]["hair"] == "short red"
    assert alicia["accessories"] == []
    assert alicia["style_prompt"].startswith("long black hair")  # untouched
    assert [i["is_primary"] for i in alicia["images"]] == [False, False, True]
    sha = alicia["images"][0]["sha256"]
    code, _, err = castbook("character", "edit", "Alicia", "--remove-image", sha[:10])
    assert code == 0, err
    assert len(show("Alicia")["images"]) == 2
    code, _, err = castbook("character", "edit", "Alicia", "--replace-images", str(images["alice"]))
    assert code == 0, err
    assert [i["sha256"] for i in show("Alicia")["images"]] == [sha]


def test_edit_without_changes_is_an_error(castbook_home: Path, images: dict[str, Path]) -> None:
    add_alice(images)
    code, _, err = castbook("character", "edit", "Alice")
    assert code == 1 and "nothing to change" in err


def test_delete_asks_first(castbook_home: Path, images: dict[str, Path]) -> None:
    add_alice(images)
    code, _, err = castbook("character", "delete", "Alice", input="n\n")
    assert code == 1 and "Nothing deleted" in err
    assert show("Alice")["name"] == "Alice"
    code, _, err = castbook("character", "delete", "Alice", input="")
    assert code == 1 and "--yes" in err
    code, out, _ = castbook("character", "delete", "Alice", input="y\n")
    assert code == 0 and "Deleted Alice" in out
    assert not [p for p in (castbook_home / "blobs").rglob("*") if p.is_file()]


def test_delete_with_yes_keeps_other_characters(
    castbook_home: Path, images: dict[str, Path]
) -> None:
    add_alice(images)
    castbook("character", "add", "--name", "Twin", "--image", str(images["alice"]))
    code, _, _ = castbook("character", "delete", "alice", "--yes")
    assert code == 0
    twin = show("Twin")
    blob = castbook_home / "blobs" / twin["images"][0]["sha256"][:2] / twin["images"][0]["sha256"]
    assert blob.read_bytes() == images["alice"].read_bytes()


def test_export_and_import(castbook_home: Path, images: dict[str, Path], tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    add_alice(images)
    castbook("character", "add", "--name", "Bob", "--image", str(images["bob"]))
    out_file = tmp_path / "lib.json"
    code, out, err = castbook("character", "export", "--all", "--output", str(out_file))
    assert code == 0, err
    assert "2 characters" in out
    code, out, _ = castbook("character", "export", "Bob", "--output", "-")
    assert [c["name"] for c in json.loads(out)["characters"]] == ["Bob"]
    code, _, _ = castbook(
        "character", "export", "Alice", "--format", "nbp", "-o", str(tmp_path / "n.json")
    )
    assert code == 0 and json.loads((tmp_path / "n.json").read_text())["type"] == "characters"

    monkeypatch.setenv("CASTBOOK_HOME", str(tmp_path / "second"))
    code, out, _ = castbook("character", "import", str(out_file))
    assert code == 0 and "Imported 2, skipped 0, failed 0" in out
    code, out, _ = castbook("character", "import", str(out_file), "--json")
    assert code == 0
    assert json.loads(out)["skipped"] == 2
    assert show("Alice")["tags"] == ["hero"]


def test_import_reports_failures_with_exit_1(castbook_home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({
        "format": "castbook.characters", "version": 1,
        "characters": [{"name": "Ok"}, {"name": "Broken", "images": [{"data": "@@@"}]}],
    }))  # fmt: skip
    code, out, _ = castbook("character", "import", str(bad))
    assert code == 1
    assert "Imported 1, skipped 0, failed 1" in out and "Broken" in out and "base64" in out
    code, out, err = castbook("character", "import", str(bad), "--strict")
    assert code == 1 and "nothing was imported" in err


def test_prompt_preview(castbook_home: Path, images: dict[str, Path]) -> None:
    add_alice(images)
    castbook("character", "add", "--name", "Bob", "--style", "red cap", "--negative", "beard")
    code, out, _ = castbook("prompt", "at a cafe, morning light", "-c", "Alice", "--json")
    assert code == 0
    assert json.loads(out)["prompt"] == (
        "long black hair, blue eyes, white shirt, silver necklace, watch, mole, "
        "at a cafe, morning light"
    )
    code, out, _ = castbook("prompt", "at a cafe", "-c", "Alice", "-c", "Bob", "--json")
    result = json.loads(out)
    assert result["prompt"].startswith("Alice (") and "Bob (red cap)" in result["prompt"]
    assert result["negative_prompt"] == "beard"


def test_info(castbook_home: Path, images: dict[str, Path]) -> None:
    add_alice(images)
    code, out, _ = castbook("info", "--json")
    assert code == 0
    details = json.loads(out)
    assert details["characters"] == 1 and details["home"] == str(castbook_home)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["character", "show", "Nobody"], "no character named 'Nobody'"),
        (["character", "add", "--name", "X", "--image", "missing.png"], "not found"),
        (["character", "add", "--name", "X", "--image", "{text}"], "notes.png"),
        (["character", "add", "--name", "", "--image", "{alice}"], "name: must not be empty"),
        (["character", "add", "--name", "X" * 101], "limit is 100"),
        (["character", "add", "--name", "X", "--image", "{alice}", "--primary", "3"], "--primary"),
        (["character", "export", "--output", "x.json"], "--all"),
        (["character", "import", "missing.json"], "not found"),
        (["prompt", "hi", "-c", "Nobody"], "Nobody"),
    ],
)
def test_errors_are_one_clear_line(
    castbook_home: Path, images: dict[str, Path], args: list[str], message: str
) -> None:
    args = [a.format(**{k: str(v) for k, v in images.items()}) for a in args]
    code, _, err = castbook(*args)
    assert code == 1
    assert message in err
    assert "Traceback" not in err
    assert err.strip().startswith("error:") and len(err.strip().splitlines()) <= 2


def test_duplicate_name_is_refused_and_the_library_is_unchanged(
    castbook_home: Path, images: dict[str, Path]
) -> None:
    add_alice(images)
    before = show("Alice")
    code, _, err = castbook("character", "add", "--name", "ALICE", "--image", str(images["bob"]))
    assert code == 1 and "already exists" in err
    assert show("Alice") == before
    blobs = {p.name for p in (castbook_home / "blobs").rglob("*") if p.is_file()}
    assert before["images"][0]["sha256"] in blobs and len(blobs) == 2  # image + thumbnail


def test_version() -> None:
    code, out, _ = castbook("--version")
    assert code == 0 and out.startswith("castbook ")
