"""The identity search's stored index: each reference image's identity vectors, per owner.

The vectors are bytes here (``castbook.evaluation.identity`` reads and writes them); this
module only files them next to the reference image they describe. The database deletes
them with the image, and so with its character. The same rows serve SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from castbook.db import (
    CharacterRow,
    IdentityRevisionRow,
    IdentityVectorRow,
    ImageFeaturesRow,
    ReferenceImageRow,
)
from castbook.library.service import CharacterLibrary

__all__ = [
    "StoredVectors",
    "UnindexedImage",
    "cache_features",
    "cached_features",
    "character_names",
    "clear_vectors",
    "has_other_references",
    "index_revision",
    "load_vectors",
    "store_vectors",
    "unindexed_images",
]


@dataclass(frozen=True)
class UnindexedImage:
    """A reference image of the owner's with no vectors for a feature key yet."""

    image_id: int
    character_id: str
    character_name: str
    sha256: str


@dataclass(frozen=True)
class StoredVectors:
    image_id: int
    character_id: str
    position: int  # the image's position among its character's references
    sha256: str
    appearance: bytes
    faces: bytes | None


def index_revision(library: CharacterLibrary) -> int:
    """The owner's identity change counter: database triggers bump it with every insert,
    delete or move of the owner's reference images and stored vectors (migration 0013), so
    a process holding the index in memory knows when to look again. 0: nothing written
    since the counter was added."""
    with library.database.session() as session:
        value = session.scalar(
            select(IdentityRevisionRow.revision).where(IdentityRevisionRow.owner == library.owner)
        )
    return int(value or 0)


def has_other_references(library: CharacterLibrary, character_ids: Iterable[str] = ()) -> bool:
    """Whether the owner has a reference image of a character not in ``character_ids``."""
    query = (
        select(ReferenceImageRow.id)
        .join(CharacterRow, CharacterRow.id == ReferenceImageRow.character_id)
        .where(CharacterRow.owner == library.owner)
        .limit(1)
    )
    excluded = sorted(set(character_ids))
    if excluded:
        query = query.where(CharacterRow.id.not_in(excluded))
    with library.database.session() as session:
        return session.scalars(query).first() is not None


def character_names(library: CharacterLibrary, character_ids: Iterable[str]) -> dict[str, str]:
    """The names of the owner's characters among ``character_ids`` (a search's matches:
    never the whole library)."""
    wanted = sorted(set(character_ids))
    if not wanted:
        return {}
    # By id alone, the owner checked here: given "owner = ? AND id IN (...)", SQLite's
    # planner (no table statistics) walks the owner's index, all 10 000 characters of a
    # large library, instead of a handful of primary-key lookups (2.9 against 0.3 ms).
    query = select(CharacterRow.id, CharacterRow.name, CharacterRow.owner).where(
        CharacterRow.id.in_(wanted)
    )
    with library.database.session() as session:
        return {row[0]: row[1] for row in session.execute(query) if row[2] == library.owner}


def unindexed_images(
    library: CharacterLibrary, key: str, character_ids: Iterable[str] | None = None
) -> list[UnindexedImage]:
    """The owner's reference images (of ``character_ids``, or all) without vectors for key."""
    # An anti-join on the (image, key) unique index: only the owner's images are looked at.
    query = (
        select(ReferenceImageRow.id, CharacterRow.id, CharacterRow.name, ReferenceImageRow.sha256)
        .join(CharacterRow, CharacterRow.id == ReferenceImageRow.character_id)
        .outerjoin(
            IdentityVectorRow,
            (IdentityVectorRow.reference_image_id == ReferenceImageRow.id)
            & (IdentityVectorRow.feature_key == key),
        )
        .where(CharacterRow.owner == library.owner, IdentityVectorRow.id.is_(None))
        .order_by(CharacterRow.id, ReferenceImageRow.position)
    )
    if character_ids is not None:
        query = query.where(CharacterRow.id.in_(sorted(set(character_ids))))
    with library.database.session() as session:
        return [UnindexedImage(*row) for row in session.execute(query)]


def store_vectors(
    library: CharacterLibrary,
    key: str,
    vectors: Iterable[tuple[UnindexedImage, bytes, bytes | None]],
) -> int:
    """File each image's vectors; an image deleted meanwhile, or indexed by another process
    first, is skipped. Returns how many were stored."""
    stored = 0
    now = datetime.now(UTC)
    for image, appearance, faces in vectors:
        with library.database.session() as session:
            exists = session.get(ReferenceImageRow, image.image_id)
            if exists is None or exists.character_id != image.character_id:
                continue
            session.add(
                IdentityVectorRow(
                    reference_image_id=image.image_id,
                    character_id=image.character_id,
                    owner=library.owner,
                    feature_key=key,
                    appearance=appearance,
                    faces=faces,
                    created_at=now,
                )
            )
            try:
                session.commit()
                stored += 1
            except IntegrityError:
                session.rollback()  # indexed by another process, or deleted just now
    return stored


def load_vectors(
    library: CharacterLibrary, key: str, character_ids: Iterable[str] | None = None
) -> list[StoredVectors]:
    """The owner's stored vector rows for ``key`` (of ``character_ids``, or all), by
    character and position."""
    query = (
        select(
            IdentityVectorRow.reference_image_id,
            IdentityVectorRow.character_id,
            ReferenceImageRow.position,
            ReferenceImageRow.sha256,
            IdentityVectorRow.appearance,
            IdentityVectorRow.faces,
        )
        .join(ReferenceImageRow, ReferenceImageRow.id == IdentityVectorRow.reference_image_id)
        .where(IdentityVectorRow.owner == library.owner, IdentityVectorRow.feature_key == key)
        .order_by(IdentityVectorRow.character_id, ReferenceImageRow.position)
    )
    if character_ids is not None:
        query = query.where(IdentityVectorRow.character_id.in_(sorted(set(character_ids))))
    with library.database.session() as session:
        return [
            StoredVectors(row[0], row[1], row[2], row[3], bytes(row[4]), _bytes(row[5]))
            for row in session.execute(query)
        ]


def cached_features(library: CharacterLibrary, sha256: str, key: str) -> dict[str, Any] | None:
    """The scoring features the library keeps for an image (``castbook eval --character``
    stores them too), so indexing never recomputes what scoring already did."""
    with library.database.session() as session:
        row = session.get(ImageFeaturesRow, (sha256, key))
        return None if row is None else json.loads(row.payload)


def cache_features(
    library: CharacterLibrary, sha256: str, key: str, payload: dict[str, Any]
) -> None:
    with library.database.session() as session:
        if session.get(ImageFeaturesRow, (sha256, key)) is not None:
            return
        session.add(
            ImageFeaturesRow(
                sha256=sha256,
                feature_key=key,
                payload=json.dumps(payload, separators=(",", ":")),
                created_at=datetime.now(UTC),
            )
        )
        try:
            session.commit()
        except IntegrityError:
            session.rollback()  # another process stored the same features first


def clear_vectors(library: CharacterLibrary) -> int:
    """Delete the owner's stored vectors (every key): ``castbook identify --reindex``."""
    with library.database.session() as session:
        result = session.execute(
            delete(IdentityVectorRow).where(IdentityVectorRow.owner == library.owner)
        )
        session.commit()
        return int(result.rowcount or 0)


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)
