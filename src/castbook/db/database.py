"""Engine set-up for SQLite (embedded default) and PostgreSQL, with migrations on open."""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from castbook.errors import StorageError

__all__ = ["Database"]

_MIGRATIONS = Path(__file__).with_name("migrations")
_REVISION = re.compile(r'^revision = "([^"]+)"$', re.MULTILINE)
_DOWN_REVISION = re.compile(r'^down_revision = (?:None|"([^"]+)")$', re.MULTILINE)


@functools.cache
def head_revision() -> str | None:
    """The newest migration's revision, read from the migration files' ``revision`` and
    ``down_revision`` lines without Alembic (importing it and loading the scripts costs a
    process ~0.15 s of CPU); None where the files are not one plain chain (a merge, a
    branch, a line written another way), and Alembic decides. tests/test_database_open.py
    checks it against Alembic's own head."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (_MIGRATIONS / "versions").glob("*.py"):
        source = script.read_text(encoding="utf-8")
        revision, down = _REVISION.findall(source), _DOWN_REVISION.findall(source)
        if len(revision) != 1 or len(down) != 1:
            return None
        revisions.add(revision[0])
        if down[0]:
            parents.add(down[0])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def _enable_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the CLI read while a server writes; the busy timeout waits out short write
    # transactions instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Database:
    """An engine, a session factory, and the schema brought up to date."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise StorageError(f"CASTBOOK_DATABASE_URL is not a database URL: {url!r}") from exc
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise StorageError(
                f"castbook supports SQLite and PostgreSQL databases, not {self.dialect!r}"
            )
        if self.dialect == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        if self.dialect == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            # A file database cannot drop a connection; a network one can (a restarted
            # server): only there is a ping per checkout worth its cost.
            ping = self.dialect != "sqlite"
            self.engine: Engine = create_engine(parsed, pool_pre_ping=ping)
        except (NoSuchModuleError, ModuleNotFoundError) as exc:
            raise StorageError(
                "PostgreSQL support needs the psycopg driver: pip install 'castbook[postgres]'"
            ) from exc
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _enable_sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one write lock per file, and a writer that finds it taken sleeps in
        # growing steps (1, 2, 5 … 25 ms) before it looks again. Writers of this process
        # that take this lock first queue here instead and are woken the moment the one
        # before them is done (other processes still meet SQLite's wait).
        self.write_lock: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        if migrate:
            self.upgrade()

    def upgrade(self) -> None:
        """Bring the schema to the newest revision (safe to call on an up-to-date database).

        A database already at the newest revision is left alone without starting Alembic:
        every process that opens one (each CLI command, server, worker) pays for the check
        alone, one query."""
        head = head_revision()
        if head is not None and self.revision() == head:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        try:
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except DBAPIError as exc:  # also SQLite's "file is not a database" (no OperationalError)
            raise self._cannot_open(exc) from exc

    def revision(self) -> str | None:
        """The revision the schema is at (Alembic's ``alembic_version`` table); None for a
        database that has none yet or whose table cannot be read (then Alembic decides). A
        database that cannot be opened is a StorageError here: one attempt to reach an
        unreachable server, not this one and then Alembic's."""
        try:
            connection = self.engine.connect()
        except DBAPIError as exc:
            raise self._cannot_open(exc) from exc
        with connection:
            try:
                rows = connection.execute(text("SELECT version_num FROM alembic_version"))
                versions = [row[0] for row in rows]
            except DBAPIError:  # no such table yet: upgrade() creates it
                return None
        return versions[0] if len(versions) == 1 else None

    def _cannot_open(self, exc: DBAPIError) -> StorageError:
        return StorageError(f"cannot open the database {self.safe_url}: {exc.orig}")

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
