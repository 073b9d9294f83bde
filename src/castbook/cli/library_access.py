"""Opening the library from the environment (CASTBOOK_HOME, CASTBOOK_DATABASE_URL)."""

from __future__ import annotations

from castbook.library import CharacterLibrary
from castbook.settings import Settings


def open_library() -> CharacterLibrary:
    return CharacterLibrary.open(Settings.from_env())
