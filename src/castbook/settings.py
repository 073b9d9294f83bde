"""Where castbook keeps its data, read from the environment once and passed around explicitly."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_OWNER", "Settings"]

# Until API keys exist every record belongs to the local user; the column is there so the
# HTTP API can scope records per key owner without a data migration.
DEFAULT_OWNER = "local"


@dataclass(frozen=True)
class Settings:
    """castbook's settings.

    ``CASTBOOK_HOME``         data folder (default ``~/.castbook``)
    ``CASTBOOK_DATABASE_URL`` SQLAlchemy URL (default SQLite ``$CASTBOOK_HOME/castbook.db``)
    ``CASTBOOK_BLOB_DIR``     content-addressed image store (default ``$CASTBOOK_HOME/blobs``)
    """

    home: Path
    database_url: str
    blob_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("CASTBOOK_HOME") or Path.home() / ".castbook").expanduser()
        database_url = env.get("CASTBOOK_DATABASE_URL") or f"sqlite:///{home / 'castbook.db'}"
        blob_dir = Path(env.get("CASTBOOK_BLOB_DIR") or home / "blobs").expanduser()
        return cls(home=home, database_url=database_url, blob_dir=blob_dir)

    @classmethod
    def for_home(cls, home: str | os.PathLike[str], database_url: str | None = None) -> Settings:
        home = Path(home)
        return cls(
            home=home,
            database_url=database_url or f"sqlite:///{home / 'castbook.db'}",
            blob_dir=home / "blobs",
        )
