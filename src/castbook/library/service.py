"""The character library: create, read, edit and delete characters and their reference images.

Writes follow one rule so that a failure never leaves half a change behind: image bytes
are written to the blob store first (content-addressed, so an existing blob is never
touched), the rows are committed second, and if anything fails before the commit the blobs
this change created are removed again. After a commit that dropped images, blobs that no
row references any more are deleted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, selectinload

from castbook.blobs import Blobs, open_blob_store
from castbook.db import (
    CharacterLoraRow,
    CharacterRow,
    Database,
    ImageFeaturesRow,
    ReferenceImageRow,
)
from castbook.db.references import referenced_blob_ids
from castbook.errors import (
    CharacterNotFoundError,
    DuplicateNameError,
    FieldError,
    StorageError,
)
from castbook.images import PreparedImage, prepare_reference
from castbook.library.models import (
    Character,
    CharacterFields,
    CharacterLora,
    PhysicalTraits,
    ReferenceImage,
    clean_fields,
    fields_as_dict,
    name_key,
)
from castbook.library.text import check_text_fields
from castbook.settings import DEFAULT_OWNER, Settings

__all__ = ["CharacterLibrary", "ImageInput", "NewCharacter", "NewLora", "prepare_images"]

MAX_IMAGES_PER_CHARACTER = 16


@dataclass(frozen=True)
class ImageInput:
    """Raw image bytes from a user, with a label (usually the file name) for error messages."""

    data: bytes
    source: str = "image"


@dataclass(frozen=True)
class NewLora:
    """A LoRA ready to be stored with a character: its ``.safetensors`` bytes and what
    :class:`CharacterLora` says about it (``sha256`` and ``byte_size`` come from ``data``)."""

    data: bytes
    base_model: str
    family: str
    trigger: str
    rank: int
    steps: int
    resolution: int
    weight: float = 1.0
    training: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True)
class NewCharacter:
    """A character ready to be written: validated fields and prepared (decoded) images."""

    fields: CharacterFields
    images: tuple[PreparedImage, ...] = ()
    primary_index: int = 0
    id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    loras: tuple[NewLora, ...] = ()


@dataclass
class _Write:
    session: Session
    created_blobs: list[str] = field(default_factory=list)
    dropped_blobs: set[str] = field(default_factory=set)


def _now() -> datetime:
    return datetime.now(UTC)


def prepare_images(images: Iterable[ImageInput | PreparedImage]) -> tuple[PreparedImage, ...]:
    return tuple(
        image
        if isinstance(image, PreparedImage)
        else prepare_reference(image.data, source=image.source)
        for image in images
    )


class CharacterLibrary:
    """One owner's characters, stored in a :class:`Database` and a :class:`Blobs` store."""

    def __init__(self, database: Database, blobs: Blobs, owner: str = DEFAULT_OWNER) -> None:
        self.database = database
        self.blobs = blobs
        self.owner = owner

    @classmethod
    def open(cls, settings: Settings | None = None, owner: str = DEFAULT_OWNER) -> CharacterLibrary:
        settings = settings or Settings.from_env()
        return cls(Database(settings.database_url), open_blob_store(settings), owner)

    # ---- reading -------------------------------------------------------------------------

    def list(self) -> list[Character]:
        with self.database.session() as session:
            rows = session.scalars(
                self._query().order_by(CharacterRow.name_key, CharacterRow.id)
            ).all()
            return [_to_character(row) for row in rows]

    def get(self, name: str) -> Character:
        with self.database.session() as session:
            return _to_character(self._row(session, name))

    def find(self, ref: str) -> Character:
        """By id first, then by name (ignoring case): what users and clients pass around."""
        try:
            return self.get_by_id(ref)
        except CharacterNotFoundError:
            return self.get(ref)

    def get_by_id(self, character_id: str) -> Character:
        with self.database.session() as session:
            row = session.scalars(self._query().where(CharacterRow.id == character_id)).first()
            if row is None:
                raise CharacterNotFoundError(character_id)
            return _to_character(row)

    def exists(self, name: str) -> bool:
        with self.database.session() as session:
            return self._find(session, name) is not None

    def image_bytes(self, image: ReferenceImage) -> bytes:
        return self.blobs.get(image.sha256)

    def thumbnail_bytes(self, image: ReferenceImage) -> bytes:
        return self.blobs.get(image.thumbnail_sha256)

    def loras(self, character: Character) -> list[CharacterLora]:
        """The LoRAs trained for ``character``, one per base model."""
        with self.database.session() as session:
            rows = session.scalars(
                select(CharacterLoraRow)
                .where(CharacterLoraRow.character_id == character.id)
                .order_by(CharacterLoraRow.base_model)
            ).all()
            return [_to_lora(row) for row in rows]

    def lora_for(self, character: Character, base_model: str) -> CharacterLora | None:
        """``character``'s LoRA for ``base_model``, or None."""
        return next((lora for lora in self.loras(character) if lora.base_model == base_model), None)

    def lora_bytes(self, lora: CharacterLora) -> bytes:
        return self.blobs.get(lora.sha256)

    def save_lora(self, character: Character, lora: NewLora) -> CharacterLora:
        """Store ``lora`` with ``character``, replacing its LoRA for the same base model (whose
        blob goes when nothing else uses it)."""
        with self._write() as write:
            row = self._row_by_id(write.session, character.id)
            old = write.session.get(CharacterLoraRow, (row.id, lora.base_model))
            if old is not None:
                write.dropped_blobs.add(old.sha256)
                write.session.delete(old)
                write.session.flush()
            write.session.add(self._lora_row(write, row.id, lora))
        stored = self.lora_for(character, lora.base_model)
        assert stored is not None
        return stored

    def set_lora_weight(
        self, character: Character, base_model: str, weight: float
    ) -> CharacterLora:
        """How strongly generation applies ``character``'s LoRA for ``base_model``."""
        check_lora_weight(weight)
        with self._write() as write:
            row = write.session.get(CharacterLoraRow, (character.id, base_model))
            if row is None:
                raise FieldError("base_model", f"{character.name!r} has no LoRA for {base_model!r}")
            row.weight = float(weight)
        stored = self.lora_for(character, base_model)
        assert stored is not None
        return stored

    def remove_lora(self, character: Character, base_model: str) -> CharacterLora:
        with self._write() as write:
            row = write.session.get(CharacterLoraRow, (character.id, base_model))
            if row is None:
                raise FieldError("base_model", f"{character.name!r} has no LoRA for {base_model!r}")
            removed = _to_lora(row)
            write.dropped_blobs.add(row.sha256)
            write.session.delete(row)
        return removed

    def stored_features(self, image: ReferenceImage, key: str) -> dict[str, Any] | None:
        """Scoring features kept for a reference image, or None (see castbook.evaluation)."""
        with self.database.session() as session:
            row = session.get(ImageFeaturesRow, (image.sha256, key))
            return None if row is None else json.loads(row.payload)

    def store_features(self, image: ReferenceImage, key: str, payload: dict[str, Any]) -> None:
        with self.database.session() as session:
            if session.get(ImageFeaturesRow, (image.sha256, key)) is not None:
                return
            session.add(
                ImageFeaturesRow(
                    sha256=image.sha256,
                    feature_key=key,
                    payload=json.dumps(payload, separators=(",", ":")),
                    created_at=_now(),
                )
            )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()  # another process stored the same features first

    # ---- writing -------------------------------------------------------------------------

    def create(
        self,
        fields: CharacterFields | Mapping[str, object],
        images: Sequence[ImageInput | PreparedImage] = (),
        *,
        primary_index: int = 0,
    ) -> Character:
        if not isinstance(fields, CharacterFields):
            check_text_fields(fields)
            fields = clean_fields(dict(fields))
        new = NewCharacter(fields, prepare_images(images), primary_index)
        with self._write() as write:
            row = self._insert(write, new)
            write.session.flush()
            character_id = row.id
        return self.get_by_id(character_id)

    def create_many(self, characters: Sequence[NewCharacter]) -> list[Character]:
        """Write several characters in one transaction: all of them or none."""
        with self._write() as write:
            ids = [self._insert(write, new).id for new in characters]
        return [self.get_by_id(character_id) for character_id in ids]

    def update(
        self,
        name: str,
        changes: Mapping[str, object] | None = None,
        *,
        add_images: Sequence[ImageInput | PreparedImage] = (),
        remove_images: Sequence[str] = (),
        replace_images: Sequence[ImageInput | PreparedImage] | None = None,
        primary: str | None = None,
    ) -> Character:
        """Change fields and images of the character called ``name``.

        ``remove_images`` and ``primary`` take image references: a 1-based position as
        shown by ``castbook character show``, or a unique prefix (6+ hex digits) of the
        image's sha256. ``replace_images`` drops every current image first.
        """
        if changes:
            check_text_fields(changes)
        added = prepare_images(add_images)
        replacements = None if replace_images is None else prepare_images(replace_images)
        with self._write() as write:
            row = self._row(write.session, name)
            if changes:
                merged = fields_as_dict(_to_fields(row))
                merged.update(changes)
                fields = clean_fields(merged)
                if name_key(fields.name) != row.name_key:
                    self._ensure_name_free(write.session, fields.name)
                _apply_fields(row, fields)
            images = list(row.images)
            removed = list(images) if replacements is not None else []
            if replacements is not None:
                added = replacements + added
            for ref in remove_images:
                image = _resolve_image(images, ref)
                if image not in removed:
                    removed.append(image)
            for image in removed:
                images.remove(image)
                row.images.remove(image)
                write.dropped_blobs.update((image.sha256, image.thumbnail_sha256))
            # Deletes must reach the database before inserts that may re-add the same image.
            write.session.flush()
            for prepared in added:
                if any(image.sha256 == prepared.sha256 for image in images):
                    raise FieldError(
                        "image", f"{prepared.sha256[:12]} is already a reference of {row.name!r}"
                    )
                image = self._image_row(write, prepared, position=0)
                row.images.append(image)
                images.append(image)
            _check_image_count(len(images))
            chosen = _resolve_image(images, primary) if primary is not None else None
            if chosen is None and images and not any(image.is_primary for image in images):
                chosen = images[0]
            for position, image in enumerate(images):
                image.position = position
                if chosen is not None:
                    image.is_primary = image is chosen
            row.updated_at = _now()
            character_id = row.id
        return self.get_by_id(character_id)

    def delete(self, name: str) -> Character:
        """Delete a character and every image and LoRA blob nothing else still uses."""
        with self._write() as write:
            row = self._row(write.session, name)
            deleted = _to_character(row)
            for image in row.images:
                write.dropped_blobs.update((image.sha256, image.thumbnail_sha256))
            loras = write.session.scalars(
                select(CharacterLoraRow).where(CharacterLoraRow.character_id == row.id)
            ).all()
            for lora in loras:
                write.dropped_blobs.add(lora.sha256)
                # The database cascades too, but SQLite only with foreign keys switched on.
                write.session.delete(lora)
            write.session.delete(row)
        return deleted

    # ---- internals -----------------------------------------------------------------------

    def _query(self):
        return (
            select(CharacterRow)
            .where(CharacterRow.owner == self.owner)
            .options(selectinload(CharacterRow.images))
        )

    def _find(self, session: Session, name: str) -> CharacterRow | None:
        return session.scalars(self._query().where(CharacterRow.name_key == name_key(name))).first()

    def _row(self, session: Session, name: str) -> CharacterRow:
        try:
            row = self._find(session, name)
        except FieldError:
            row = None
        if row is None:
            raise CharacterNotFoundError(name)
        return row

    def _row_by_id(self, session: Session, character_id: str) -> CharacterRow:
        row = session.scalars(self._query().where(CharacterRow.id == character_id)).first()
        if row is None:
            raise CharacterNotFoundError(character_id)
        return row

    def _lora_row(self, write: _Write, character_id: str, lora: NewLora) -> CharacterLoraRow:
        check_lora_weight(lora.weight)
        blob_id, created = self.blobs.put(lora.data)
        if created:
            write.created_blobs.append(blob_id)
        return CharacterLoraRow(
            character_id=character_id,
            base_model=lora.base_model,
            family=lora.family,
            sha256=blob_id,
            byte_size=len(lora.data),
            trigger=lora.trigger,
            rank=lora.rank,
            steps=lora.steps,
            resolution=lora.resolution,
            weight=float(lora.weight),
            training=dict(lora.training),
            created_at=lora.created_at or _now(),
        )

    def _ensure_name_free(self, session: Session, name: str) -> None:
        if self._find(session, name) is not None:
            raise DuplicateNameError(name)

    def _insert(self, write: _Write, new: NewCharacter) -> CharacterRow:
        self._ensure_name_free(write.session, new.fields.name)
        _check_image_count(len(new.images))
        if new.images and not 0 <= new.primary_index < len(new.images):
            raise FieldError(
                "primary",
                f"image {new.primary_index + 1} does not exist; there are {len(new.images)}",
            )
        character_id = new.id or uuid.uuid4().hex
        if write.session.get(CharacterRow, character_id) is not None:
            character_id = uuid.uuid4().hex
        created = new.created_at or _now()
        row = CharacterRow(
            id=character_id,
            owner=self.owner,
            created_at=created,
            updated_at=new.updated_at or created,
        )
        _apply_fields(row, new.fields)
        seen: set[str] = set()
        for position, prepared in enumerate(new.images):
            if prepared.sha256 in seen:
                raise FieldError("image", f"the same image is given twice ({prepared.sha256[:12]})")
            seen.add(prepared.sha256)
            image = self._image_row(write, prepared, position)
            image.is_primary = position == new.primary_index
            row.images.append(image)
        write.session.add(row)
        # Flush now so a name taken by a concurrent writer fails inside this transaction.
        write.session.flush()
        bases = [lora.base_model for lora in new.loras]
        if len(set(bases)) != len(bases):
            raise FieldError("loras", "two LoRAs for the same base model")
        for lora in new.loras:
            write.session.add(self._lora_row(write, row.id, lora))
        return row

    def _image_row(
        self, write: _Write, prepared: PreparedImage, position: int
    ) -> ReferenceImageRow:
        blob_ids = []
        for data in (prepared.data, prepared.thumbnail):
            blob_id, created = self.blobs.put(data)
            if created:
                write.created_blobs.append(blob_id)
            blob_ids.append(blob_id)
        thumbnail_id = blob_ids[1]
        return ReferenceImageRow(
            position=position,
            sha256=prepared.sha256,
            media_type=prepared.media_type,
            width=prepared.width,
            height=prepared.height,
            byte_size=len(prepared.data),
            is_primary=False,
            thumbnail_sha256=thumbnail_id,
            thumbnail_media_type=prepared.thumbnail_media_type,
        )

    @contextmanager
    def _write(self) -> Iterator[_Write]:
        with self.database.session() as session:
            write = _Write(session)
            try:
                yield write
                session.commit()
            except BaseException as exc:
                session.rollback()
                self._delete_unreferenced(session, write.created_blobs)
                if isinstance(exc, IntegrityError):
                    raise _integrity_error(exc) from exc
                if isinstance(exc, OperationalError):
                    raise StorageError(f"the database refused the change: {exc.orig}") from exc
                raise
        with self.database.session() as session:
            deleted = self._delete_unreferenced(session, write.dropped_blobs)
            if deleted:
                # Stored scoring features of images nobody uses any more.
                session.execute(
                    delete(ImageFeaturesRow).where(ImageFeaturesRow.sha256.in_(deleted))
                )
                session.commit()

    def _delete_unreferenced(self, session: Session, blob_ids: Iterable[str]) -> list[str]:
        candidates = set(blob_ids)
        if not candidates:
            return []
        # Images a job produced or was given keep their blob too (a result may equal a
        # reference; a queued task may name a reference as its init image).
        unreferenced = sorted(candidates - referenced_blob_ids(session, candidates))
        for blob_id in unreferenced:
            self.blobs.delete(blob_id)
        return unreferenced


LORA_WEIGHT_RANGE = (0.0, 2.0)


def check_lora_weight(weight: object) -> None:
    """A LoRA's weight: 0 (off) to 2 (twice as strong as trained)."""
    low, high = LORA_WEIGHT_RANGE
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not low <= weight <= high:
        raise FieldError("lora_weight", f"must be between {low:g} and {high:g}, got {weight!r}")


def _to_lora(row: CharacterLoraRow) -> CharacterLora:
    return CharacterLora(
        base_model=row.base_model,
        family=row.family,
        sha256=row.sha256,
        byte_size=row.byte_size,
        trigger=row.trigger,
        rank=row.rank,
        steps=row.steps,
        resolution=row.resolution,
        weight=row.weight,
        training=dict(row.training or {}),
        created_at=row.created_at,
    )


def _integrity_error(exc: IntegrityError) -> Exception:
    text = str(exc.orig)
    if "uq_characters_owner_name" in text or "characters.name_key" in text:
        return StorageError("another writer saved a character with the same name at the same time")
    return StorageError(f"the database refused the change: {exc.orig}")


def _check_image_count(count: int) -> None:
    if count > MAX_IMAGES_PER_CHARACTER:
        raise FieldError(
            "images", f"a character can have at most {MAX_IMAGES_PER_CHARACTER} reference images"
        )


def _resolve_image(images: Sequence[ReferenceImageRow], ref: str) -> ReferenceImageRow:
    ref = ref.strip().lower()
    if ref.isdigit():
        index = int(ref)
        if 1 <= index <= len(images):
            return images[index - 1]
        raise FieldError("image", f"there is no image {index}; the character has {len(images)}")
    if len(ref) < 6 or any(ch not in "0123456789abcdef" for ch in ref):
        raise FieldError(
            "image", f"{ref!r} is neither a position (1, 2, …) nor a sha256 prefix of 6+ hex digits"
        )
    matches = [image for image in images if image.sha256.startswith(ref)]
    if len(matches) != 1:
        problem = "matches no image" if not matches else "matches several images"
        raise FieldError("image", f"{ref!r} {problem} of this character")
    return matches[0]


def _apply_fields(row: CharacterRow, fields: CharacterFields) -> None:
    row.name = fields.name
    row.name_key = name_key(fields.name)
    row.style_prompt = fields.style_prompt
    row.negative_prompt = fields.negative_prompt
    row.description = fields.description
    row.hair = fields.physical.hair
    row.eyes = fields.physical.eyes
    row.face = fields.physical.face
    row.body = fields.physical.body
    row.skin = fields.physical.skin
    row.clothing = fields.clothing
    row.accessories = list(fields.accessories)
    row.distinctive_features = list(fields.distinctive_features)
    row.tags = list(fields.tags)


def _to_fields(row: CharacterRow) -> CharacterFields:
    return CharacterFields(
        name=row.name,
        style_prompt=row.style_prompt,
        negative_prompt=row.negative_prompt,
        description=row.description,
        physical=PhysicalTraits(
            hair=row.hair, eyes=row.eyes, face=row.face, body=row.body, skin=row.skin
        ),
        clothing=row.clothing,
        accessories=tuple(row.accessories),
        distinctive_features=tuple(row.distinctive_features),
        tags=tuple(row.tags),
    )


def _to_character(row: CharacterRow) -> Character:
    return Character(
        **_to_fields(row).model_dump(),
        id=row.id,
        images=tuple(
            ReferenceImage(
                sha256=image.sha256,
                media_type=image.media_type,
                width=image.width,
                height=image.height,
                byte_size=image.byte_size,
                is_primary=image.is_primary,
                thumbnail_sha256=image.thumbnail_sha256,
                thumbnail_media_type=image.thumbnail_media_type,
            )
            for image in sorted(row.images, key=lambda image: image.position)
        ),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
