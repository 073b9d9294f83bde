"""The relational store: SQLAlchemy models, engine set-up and Alembic migrations."""

from castbook.db.database import Database
from castbook.db.schema import Base, CharacterRow, ImageFeaturesRow, ReferenceImageRow

__all__ = ["Base", "CharacterRow", "Database", "ImageFeaturesRow", "ReferenceImageRow"]
