"""Opening a database: one at the newest revision is used as it is, without starting Alembic
(a process's ~0.15 s of CPU, paid by every CLI command, server and worker); an older one is
upgraded as before."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import event

from castbook.db import Database, database
from castbook.db.database import _MIGRATIONS as MIGRATIONS
from castbook.db.database import head_revision
from castbook.errors import StorageError


def alembic_config(connection: object | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def test_the_quick_head_is_alembics_head() -> None:
    assert [head_revision()] == ScriptDirectory.from_config(alembic_config()).get_heads()


def test_a_database_at_the_head_opens_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'castbook.db'}"
    Database(url).dispose()  # migrated here
    probe = (
        "import json, sys\n"
        "from castbook.db import Database\n"
        f"database = Database({url!r})\n"
        "print(json.dumps([database.revision(), 'alembic' in sys.modules]))\n"
    )
    opened = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(opened.stdout.strip().splitlines()[-1]) == [head_revision(), False]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_older_database_is_still_upgraded(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database("castbook_old")
    old = Database(url, migrate=False)
    assert old.revision() is None  # nothing there yet
    with old.engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0012")
    assert old.revision() == "0012"
    old.dispose()
    upgraded = Database(url)
    assert upgraded.revision() == head_revision() != "0012"
    upgraded.dispose()


def test_migrations_that_are_not_one_chain_leave_the_choice_to_alembic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    for name, down in (("a", None), ("b", '"a"'), ("c", '"a"')):  # two heads: b and c
        (versions / f"{name}.py").write_text(
            f'revision = "{name}"\ndown_revision = {down or "None"}\n'
        )
    monkeypatch.setattr(database, "_MIGRATIONS", tmp_path)
    head_revision.cache_clear()
    try:
        assert head_revision() is None
        (versions / "c.py").write_text('revision = "c"\ndown_revision = ("a", "b")\n')  # a merge
        head_revision.cache_clear()
        assert head_revision() is None
        (versions / "c.py").write_text('revision = "c"\ndown_revision = "b"\n')
        head_revision.cache_clear()
        assert head_revision() == "c"
    finally:
        monkeypatch.undo()
        head_revision.cache_clear()


def test_a_file_that_is_not_a_database_is_refused_by_name(tmp_path: Path) -> None:
    """SQLite says "file is not a database" as a DatabaseError, not an OperationalError: it
    is one clear error naming the file (it was a traceback), and the file is left as it is."""
    path = tmp_path / "notes.db"
    path.write_text("not a database\n")
    with pytest.raises(StorageError, match=r"cannot open the database .*notes\.db.*not a database"):
        Database(f"sqlite:///{path}")
    assert path.read_text() == "not a database\n"


def test_an_unreachable_server_is_tried_once_and_named(tmp_path: Path) -> None:
    """A server that cannot be reached is one StorageError naming it (password hidden),
    after one attempt: not the revision check's and then Alembic's (twice a connect
    timeout where a host does not answer)."""
    pytest.importorskip("psycopg")
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))  # bound and never listening: connections are refused
        port = bound.getsockname()[1]
        database = Database(f"postgresql://ann:secret@127.0.0.1:{port}/castbook", migrate=False)
        attempts: list[object] = []
        event.listen(database.engine, "do_connect", lambda *args: attempts.append(args))
        with pytest.raises(StorageError, match="cannot open the database") as refused:
            database.upgrade()
        database.dispose()
    assert f"postgresql://ann:***@127.0.0.1:{port}/castbook" in str(refused.value)
    assert "secret" not in str(refused.value) and len(attempts) == 1
