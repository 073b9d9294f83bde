"""Text nothing can store, and import files nothing can read, are one-line CLI errors: never
a traceback, and an import still takes the valid characters of a file."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.cli import castbook
from tests.support.drawings import ALICE, character, png_bytes


def entry(name: str, **fields: object) -> dict[str, object]:
    picture = base64.b64encode(png_bytes(character(**ALICE))).decode()
    return {"name": name, "images": [{"data": picture}], **fields}


def export_file(path: Path, *entries: dict[str, object]) -> Path:
    document = {"format": "castbook.characters", "version": 1, "characters": list(entries)}
    # json.dumps writes a lone surrogate as the escape \ud800, as a broken exporter would.
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_import_keeps_the_valid_entries_and_names_the_bad_field(
    castbook_home: Path, tmp_path: Path
) -> None:
    file = export_file(
        tmp_path / "mixed.json",
        entry("Alice", style_prompt="long black hair"),
        entry("Bob", physical={"hair": "short \ud800 red"}),
        entry("Carol", tags=["ok", "\udcff"]),
    )
    code, stdout, err = castbook("character", "import", str(file))
    assert code == 1  # some entries failed, as with any invalid entry
    assert "Imported 1, skipped 0, failed 2." in stdout
    assert "characters[1] ('Bob'): physical.hair: contains '\\ud800'" in stdout
    assert "characters[2] ('Carol'): tags[1]: contains '\\udcff'" in stdout
    assert "Traceback" not in stdout + err
    code, stdout, _ = castbook("character", "list", "--json")
    assert [c["name"] for c in json.loads(stdout)] == ["Alice"]

    code, _, err = castbook("character", "import", "--strict", str(file))
    assert code == 1 and err.count("\n") == 1 and "physical.hair" in err


def test_a_deeply_nested_import_file_is_one_line(castbook_home: Path, tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    code, stdout, err = castbook("character", "import", str(deep))
    assert code == 1 and stdout == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "nests its JSON too deeply" in err and "RecursionError" not in err


def test_fields_with_lone_surrogates_are_one_line_errors(castbook_home: Path) -> None:
    code, _, err = castbook("character", "add", "--name", "Alice\ud800")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: name: contains '\\ud800'"), err
    assert castbook("character", "add", "--name", "Alice")[0] == 0
    code, _, err = castbook("character", "edit", "Alice", "--style", "red \udcff hair")
    assert code == 1 and err.startswith("error: style_prompt: contains '\\udcff'"), err
    code, stdout, _ = castbook("character", "show", "Alice", "--json")
    assert json.loads(stdout)["style_prompt"] == ""


def test_command_line_bytes_that_are_not_utf8(castbook_home: Path) -> None:
    """A terminal in another encoding: Python turns the bytes into lone surrogates."""
    result = subprocess.run(
        [sys.executable, "-m", "castbook", "character", "add", "--name", b"caf\xe9"],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        check=False,
    )
    err = result.stderr.decode()
    assert result.returncode == 1 and result.stdout == b""
    assert err == (
        "error: argument 4 (the value of --name) is not valid UTF-8 text: 'caf\\udce9'; "
        "is the terminal's encoding UTF-8?\n"
    )


def test_a_text_file_that_is_not_utf8_is_one_line(castbook_home: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"at a cafe\n\xff at the beach\n")
    code, _, err = castbook("render", "-c", "Alice", "--prompts-file", str(prompts))
    assert code == 1 and err.count("\n") == 1
    assert "prompts.txt is not UTF-8 text (byte 11 cannot be read)" in err
