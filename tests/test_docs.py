"""Every CLI command, option and setting is documented."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import typer

from castbook.cli.app import app
from castbook.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md").read_text() + (ROOT / "docs" / "cli.md").read_text()


def commands(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, list[str]]]:
    children = getattr(command, "commands", None)
    if children:
        for name, child in children.items():
            yield from commands(child, (*path, name))
        return
    options = [o for p in command.params for o in getattr(p, "opts", []) if o.startswith("--")]
    yield " ".join(path), [o for o in options if o != "--help"]


def test_every_command_and_option_is_documented() -> None:
    found = list(commands(typer.main.get_command(app)))
    assert len(found) >= 9
    reference = (ROOT / "docs" / "cli.md").read_text()
    for name, options in found:
        heading = re.search(rf"^## `castbook {re.escape(name)}\b.*$", reference, re.MULTILINE)
        assert heading, f"docs/cli.md has no section for `castbook {name}`"
        section = reference[heading.start() :].split("\n## ", 1)[0]
        for option in options:
            assert f"`{option}" in section, f"`castbook {name} {option}` is not documented"


def test_every_setting_is_documented() -> None:
    settings = re.findall(r"``(CASTBOOK_[A-Z_]+)``", Settings.__doc__ or "")
    assert settings
    for setting in settings:
        assert setting in DOCS, f"{setting} is not documented"


def test_readme_has_the_two_commands_near_the_top() -> None:
    readme = (ROOT / "README.md").read_text()
    top = readme[:2500]
    assert "bash scripts/start.sh" in top and "bash scripts/test.sh" in top
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci
