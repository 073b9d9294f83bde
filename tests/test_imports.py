"""`import castbook` and `castbook --help` stay light: no ML stack, nothing slow."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers", "dlib", "celery", "cv2")

_PROBE = """
import json, sys
{body}
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


def loaded_modules(body: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(body=body)],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_import_castbook_is_light() -> None:
    modules = loaded_modules("import castbook")
    assert not modules & {*HEAVY, "sqlalchemy", "PIL", "typer", "rich"}


def test_cli_help_imports_no_ml_stack() -> None:
    body = (
        "from castbook.cli.app import app\n"
        "try:\n"
        "    app(['--help'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    modules = loaded_modules(body)
    assert "typer" in modules  # the probe really ran the CLI
    assert not modules & set(HEAVY)


def test_console_script_help_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "castbook", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "character" in result.stdout
