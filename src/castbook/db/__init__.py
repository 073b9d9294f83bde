"""The relational store: SQLAlchemy models, engine set-up and Alembic migrations."""

from castbook.db.database import Database
from castbook.db.schema import Base, CharacterRow, ReferenceImageRow

__all__ = ["Base", "CharacterRow", "Database", "ReferenceImageRow"]
