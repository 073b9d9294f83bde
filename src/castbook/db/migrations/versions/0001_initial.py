"""The character library: characters and their reference images.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from castbook.db.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "characters",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("name_key", sa.String(400), nullable=False),
        sa.Column("style_prompt", sa.Text, nullable=False),
        sa.Column("negative_prompt", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("hair", sa.Text, nullable=False),
        sa.Column("eyes", sa.Text, nullable=False),
        sa.Column("face", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("skin", sa.Text, nullable=False),
        sa.Column("clothing", sa.Text, nullable=False),
        sa.Column("accessories", sa.JSON, nullable=False),
        sa.Column("distinctive_features", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("owner", "name_key", name="uq_characters_owner_name"),
    )
    op.create_table(
        "reference_images",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "character_id",
            sa.String(32),
            sa.ForeignKey("characters.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("byte_size", sa.Integer, nullable=False),
        sa.Column("is_primary", sa.Boolean, nullable=False),
        sa.Column("thumbnail_sha256", sa.String(64), nullable=False),
        sa.Column("thumbnail_media_type", sa.String(32), nullable=False),
        sa.UniqueConstraint("character_id", "sha256", name="uq_reference_images_character_sha"),
    )
    op.create_index("ix_reference_images_sha256", "reference_images", ["sha256"])
    op.create_index(
        "ix_reference_images_thumbnail_sha256", "reference_images", ["thumbnail_sha256"]
    )


def downgrade() -> None:
    op.drop_table("reference_images")
    op.drop_table("characters")
