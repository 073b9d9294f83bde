"""Failure injection for the library's write protocol: fail the commit after the blobs of
a change were written, and snapshot everything a user could observe, to compare."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from castbook.library import CharacterLibrary

__all__ = ["Boom", "fail_commit", "snapshot"]


def snapshot(library: CharacterLibrary) -> tuple[object, ...]:
    """Everything a user could observe of the stored library."""
    characters = tuple(c.model_dump() for c in library.list())
    blobs = tuple(sorted(library.blobs))
    return characters, blobs


class Boom(RuntimeError):
    pass


def fail_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail right before the commit, after the blobs of the change were written."""

    def commit(self: Session) -> None:
        self.flush()
        raise Boom("disk full")

    monkeypatch.setattr(Session, "commit", commit)
