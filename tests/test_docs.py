"""Every CLI command, option and setting is documented."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from castbook.cli.app import app
from castbook.errors import FieldError
from castbook.settings import SETTINGS, Setting, Settings

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


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_is_in_the_readme_table(setting: Setting) -> None:
    readme = (ROOT / "README.md").read_text()
    default = setting.default if setting.default.startswith("(") else f"`{setting.default}`"
    assert f"| `{setting.env}` | {default} | {setting.meaning} |" in readme


def test_every_castbook_variable_is_a_setting() -> None:
    """No room reads a CASTBOOK_* variable that Settings does not know."""
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert {s.field for s in SETTINGS} == fields
    known = {s.env for s in SETTINGS}
    used = set()
    for path in (ROOT / "src" / "castbook").rglob("*.py"):
        used |= set(re.findall(r"CASTBOOK_[A-Z_]*[A-Z]", path.read_text("utf-8")))
    assert used <= known, f"not in castbook.settings.SETTINGS: {sorted(used - known)}"


def test_a_bad_setting_names_its_variable() -> None:
    with pytest.raises(FieldError, match="CASTBOOK_MAX_VARIANTS: must be a whole number"):
        Settings.from_env({"CASTBOOK_MAX_VARIANTS": "many"})
    with pytest.raises(FieldError, match="CASTBOOK_EXECUTOR: must be local or celery"):
        Settings.from_env({"CASTBOOK_EXECUTOR": "threads"})
    settings = Settings.from_env({"CASTBOOK_HOME": "/x", "CASTBOOK_JOB_LEASE": "30"})
    assert settings.job_lease == 30.0 and settings.database_url == "sqlite:////x/castbook.db"


def test_readme_has_the_two_commands_near_the_top() -> None:
    readme = (ROOT / "README.md").read_text()
    top = readme[:2500]
    assert "bash scripts/start.sh" in top and "bash scripts/test.sh" in top
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci
