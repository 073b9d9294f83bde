"""`import castbook` and `castbook --help` stay light: no ML stack, nothing slow."""

from __future__ import annotations

import json
import subprocess
import sys

# "google": the google-genai SDK (0.8 s, ~60 MB), imported by the Gemini backend only.
HEAVY = ("torch", "diffusers", "transformers", "dlib", "celery", "cv2", "google")

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


def test_a_gemini_submission_check_does_not_import_the_sdk() -> None:
    # Submitting asks the preset's backend how many references it takes (it is built for
    # that); only a generation needs google-genai.
    body = (
        "from castbook.generation.prepare import reference_room\n"
        "from castbook.generation.presets import BUILTIN_PRESETS\n"
        "preset = next(p for p in BUILTIN_PRESETS if p.id == 'gemini-image')\n"
        "assert reference_room(preset) == 3, reference_room(preset)\n"
    )
    assert "google" not in loaded_modules(body)
