"""The relational store: SQLAlchemy models, engine set-up and Alembic migrations."""

from castbook.db.database import Database
from castbook.db.schema import (
    ApiKeyRow,
    Base,
    BlobSizeRow,
    CharacterLoraRow,
    CharacterRow,
    GalleryCharacterRow,
    GalleryItemRow,
    IdentityRevisionRow,
    IdentityVectorRow,
    ImageFeaturesRow,
    JobInputRow,
    JobOutputRow,
    JobRow,
    ReferenceImageRow,
    WorkflowRow,
)

__all__ = [
    "ApiKeyRow",
    "Base",
    "BlobSizeRow",
    "CharacterLoraRow",
    "CharacterRow",
    "Database",
    "GalleryCharacterRow",
    "GalleryItemRow",
    "IdentityRevisionRow",
    "IdentityVectorRow",
    "ImageFeaturesRow",
    "JobInputRow",
    "JobOutputRow",
    "JobRow",
    "ReferenceImageRow",
    "WorkflowRow",
]
