"""Table definitions. Any change here needs a new Alembic revision in ``migrations/versions``."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "ApiKeyRow",
    "Base",
    "BlobSizeRow",
    "CharacterLoraRow",
    "CharacterRow",
    "GalleryCharacterRow",
    "GalleryItemRow",
    "IdentityRevisionRow",
    "IdentityVectorRow",
    "ImageFeaturesRow",
    "JobInputRow",
    "JobOutputRow",
    "JobRow",
    "ReferenceImageRow",
    "UTCDateTime",
    "WorkflowRow",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone on its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class CharacterRow(Base):
    __tablename__ = "characters"
    __table_args__ = (UniqueConstraint("owner", "name_key", name="uq_characters_owner_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    # casefold() can lengthen a name (ß -> ss), hence the wider column.
    name_key: Mapped[str] = mapped_column(String(400), nullable=False)
    style_prompt: Mapped[str] = mapped_column(Text, nullable=False, default="")
    negative_prompt: Mapped[str] = mapped_column(Text, nullable=False, default="")
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    hair: Mapped[str] = mapped_column(Text, nullable=False, default="")
    eyes: Mapped[str] = mapped_column(Text, nullable=False, default="")
    face: Mapped[str] = mapped_column(Text, nullable=False, default="")
    body: Mapped[str] = mapped_column(Text, nullable=False, default="")
    skin: Mapped[str] = mapped_column(Text, nullable=False, default="")
    clothing: Mapped[str] = mapped_column(Text, nullable=False, default="")
    accessories: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    distinctive_features: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    images: Mapped[list[ReferenceImageRow]] = relationship(
        back_populates="character",
        cascade="all, delete-orphan",
        order_by="ReferenceImageRow.position",
        passive_deletes=True,
    )


class CharacterLoraRow(Base):
    """A LoRA trained for a character: its ``.safetensors`` bytes are a blob (kept alive by
    this row), with the base model it belongs to and how it was trained. One per base model:
    training again for the same base replaces it."""

    __tablename__ = "character_loras"

    character_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("characters.id", ondelete="CASCADE"), primary_key=True
    )
    base_model: Mapped[str] = mapped_column(String(400), primary_key=True)
    family: Mapped[str] = mapped_column(String(32), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    byte_size: Mapped[int] = mapped_column(Integer, nullable=False)
    trigger: Mapped[str] = mapped_column(String(64), nullable=False)
    rank: Mapped[int] = mapped_column(Integer, nullable=False)
    steps: Mapped[int] = mapped_column(Integer, nullable=False)
    resolution: Mapped[int] = mapped_column(Integer, nullable=False)
    # How strongly generation applies it unless a request says otherwise.
    weight: Mapped[float] = mapped_column(Float, nullable=False, default=1.0)
    # The rest of the training settings and figures (learning rate, seed, final loss …).
    training: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ReferenceImageRow(Base):
    __tablename__ = "reference_images"
    __table_args__ = (
        UniqueConstraint("character_id", "sha256", name="uq_reference_images_character_sha"),
        Index("ix_reference_images_sha256", "sha256"),
        Index("ix_reference_images_thumbnail_sha256", "thumbnail_sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    character_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("characters.id", ondelete="CASCADE"), nullable=False
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    media_type: Mapped[str] = mapped_column(String(32), nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    byte_size: Mapped[int] = mapped_column(Integer, nullable=False)
    is_primary: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    thumbnail_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    thumbnail_media_type: Mapped[str] = mapped_column(String(32), nullable=False)

    character: Mapped[CharacterRow] = relationship(back_populates="images")


class ImageFeaturesRow(Base):
    """Scoring features of one stored image, keyed by what they contain (see evaluation)."""

    __tablename__ = "image_features"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    feature_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class IdentityVectorRow(Base):
    """One reference image's identity vectors (the identity search's stored index): its
    appearance descriptor and face embeddings as float32 bytes, for one feature key.

    Deleted by the database with its reference image (and so with its character). Each
    write bumps the owner's :class:`IdentityRevisionRow`, which tells a process when its
    in-memory index is stale.
    """

    __tablename__ = "identity_vectors"
    __table_args__ = (
        UniqueConstraint("reference_image_id", "feature_key", name="uq_identity_vectors_image_key"),
        Index("ix_identity_vectors_owner_key", "owner", "feature_key"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reference_image_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("reference_images.id", ondelete="CASCADE"), nullable=False
    )
    character_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("characters.id", ondelete="CASCADE"), nullable=False
    )
    owner: Mapped[str] = mapped_column(String(64), nullable=False)
    feature_key: Mapped[str] = mapped_column(String(200), nullable=False)
    # float32, little-endian: DIMENSIONS values; faces: n × 128 (b"" none found, NULL not
    # looked for).
    appearance: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    faces: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class IdentityRevisionRow(Base):
    """An owner's change counter for identity search: bumped, in the same transaction, by
    database triggers (migration 0013) on every insert, delete or move of the owner's
    reference images and identity vectors, whoever writes them (cascades included).

    A process keeps the owner's index in memory and reloads it only when this changed: one
    primary-key read per search. The triggers live on ``reference_images`` and
    ``identity_vectors``; a later migration that recreates either table (SQLite's batch
    mode copies a table to alter it) must create them again (``tests/test_identify.py``
    checks they fire after every migration).
    """

    __tablename__ = "identity_revisions"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False)


class JobRow(Base):
    """One piece of queued work; the table is the source of truth for its state."""

    __tablename__ = "jobs"
    __table_args__ = (
        # Listing an owner's tasks, newest first (GET /v1/tasks).
        Index("ix_jobs_owner_created", "owner", "created_at"),
        # The executors' queue scans.
        Index("ix_jobs_status", "status"),
        # Counting an owner's queued and running tasks (the queued-task quota).
        Index("ix_jobs_owner_status", "owner", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    queue: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    input: Mapped[dict] = mapped_column(JSON, nullable=False)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_data: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    progress_step: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    progress_message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    outputs: Mapped[list[JobOutputRow]] = relationship(
        cascade="all, delete-orphan", order_by="JobOutputRow.position", passive_deletes=True
    )
    inputs: Mapped[list[JobInputRow]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )


class JobOutputRow(Base):
    """An image or video a job produced; its bytes are a blob, so it keeps the blob alive."""

    __tablename__ = "job_outputs"
    # Every read of a task (polling, its event stream, each task of a list) loads its
    # outputs by job, in order.
    __table_args__ = (Index("ix_job_outputs_job_id", "job_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    media_type: Mapped[str] = mapped_column(String(32), nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class GalleryItemRow(Base):
    """An image or video of a finished task as the gallery lists it (``GET /v1/results``):
    what it was made with — the prompt and negative prompt sent, preset, score, workflow —
    taken out of the task's result once, so the owner's results can be filtered and paged
    by index instead of by reading every task's JSON. Goes with its task."""

    __tablename__ = "gallery_items"
    __table_args__ = (
        UniqueConstraint("job_id", "position", name="uq_gallery_items_output"),
        # The gallery's pages, newest first (keyset: id below the cursor).
        Index("ix_gallery_items_owner_shown_id", "owner", "shown", "id"),
        Index("ix_gallery_items_owner_workflow", "owner", "workflow", "id"),
        # Which tasks are indexed already (the newest finish of an owner).
        Index("ix_gallery_items_owner_finished", "owner", "finished_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    owner: Mapped[str] = mapped_column(String(64), nullable=False)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    task_kind: Mapped[str] = mapped_column(String(32), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    media_type: Mapped[str] = mapped_column(String(32), nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # False for what is not a picture of its own: contact sheets, storyboards, PDFs.
    shown: Mapped[bool] = mapped_column(Boolean, nullable=False)
    workflow: Mapped[str | None] = mapped_column(String(32), nullable=True)  # saved workflow id
    node: Mapped[str | None] = mapped_column(String(100), nullable=True)
    preset: Mapped[str | None] = mapped_column(String(100), nullable=True)
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    negative_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    characters: Mapped[list] = mapped_column(JSON, nullable=False)  # names, in order


class GalleryCharacterRow(Base):
    """A character a gallery item shows (by name, as the task named it): the character
    filter's index. Keyed like the item (task and position), so a task's items and theirs
    are written in one batch each."""

    __tablename__ = "gallery_characters"
    __table_args__ = (
        Index("ix_gallery_characters_owner_name", "owner", "name", "job_id", "position"),
    )

    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), nullable=False)


class JobInputRow(Base):
    """A stored image a job's input names (an init image, a reference, an uploaded picture):
    like an output, it keeps the blob alive for as long as the job exists, so deleting a
    character never takes an image from a task that was accepted with it."""

    __tablename__ = "job_inputs"

    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class ApiKeyRow(Base):
    """A bearer API key, stored as its sha256 only; ``prefix`` lets users tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Admin keys may change the server itself (pull or remove models), not only records.
    admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # This key's own quotas (castbook.api.quotas); NULL takes the server's setting, 0 means
    # no limit for this key.
    rate_limit: Mapped[float | None] = mapped_column(Float, nullable=True)
    rate_burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_queued: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_storage_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class WorkflowRow(Base):
    """A saved workflow graph (graph JSON as given), named per owner."""

    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_workflows_owner_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    graph: Mapped[dict] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class BlobSizeRow(Base):
    """What a blob's bytes take, learned once: a blob is named by its content, so its size
    never changes. Storage accounting (the storage quota, ``castbook info``) reads sizes here
    instead of asking the store object by object (a request each on S3); a blob deleted
    later leaves a row that is still true should the same bytes come back."""

    __tablename__ = "blob_sizes"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    byte_size: Mapped[int] = mapped_column(BigInteger, nullable=False)
