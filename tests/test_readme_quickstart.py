"""The README's quick start runs exactly as written, and its Python example prints what the
README says it prints.

Laid out as ``scripts/start.sh`` leaves a fresh clone: ``.venv`` (this test's own virtual
environment), and ``.castbook-quickstart/pictures`` drawn by ``scripts/make_demo_pictures.py``.
The shell block then runs under ``bash -euo pipefail``, so any command that fails fails the
test. Nothing is downloaded: the quick start uses no model.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def fenced_block(after: str, language: str) -> str:
    """The first ```language block after the heading ``after``."""
    start = README.index(after)
    match = re.compile(rf"^```{language}\n(.*?)^```", re.MULTILINE | re.DOTALL).search(
        README, start
    )
    assert match, f"no ```{language} block after {after!r} in README.md"
    return match.group(1)


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Path:
    """What the quick start finds after ``bash scripts/start.sh``."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the quick start sources .venv/bin/activate; run the tests from a venv")
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / ".venv").symlink_to(sys.prefix)
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_demo_pictures.py"),
         str(clone / ".castbook-quickstart" / "pictures")],
        check=True,
    )  # fmt: skip
    return clone


def environment(clone: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CASTBOOK_", "VIRTUAL_ENV"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(clone / "hf-empty"), COLUMNS="100")
    return env


def test_quick_start_runs_as_written(fresh_clone: Path) -> None:
    block = fenced_block("## Quick start", "bash")
    assert block.startswith("source .venv/bin/activate"), "the block must be runnable alone"
    python_example = fenced_block("### Prompt injection", "python")
    *code, printed = python_example.rstrip("\n").splitlines()
    assert printed.startswith("# "), "the example's last line shows what it prints"
    # The example runs in the quick start's shell: same folder, same CASTBOOK_HOME.
    script = f"{block}\npython - <<'PYTHON'\n{chr(10).join(code)}\nPYTHON\n"

    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=fresh_clone,
        env=environment(fresh_clone),
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert "looks like" not in result.stderr  # Alice and Bob are different characters
    assert result.stdout.rstrip("\n").splitlines()[-1] == printed.removeprefix("# ")
    demo = fresh_clone / ".castbook-quickstart"
    assert (demo / "my-library" / "castbook.db").is_file()
    assert (demo / "other-library" / "castbook.db").is_file()  # the import into a new library
    assert "Imported 2, skipped 0, failed 0." in result.stdout
    assert "Deleted Bob." in result.stdout
    assert "home: " + str(demo / "my-library") in result.stdout
