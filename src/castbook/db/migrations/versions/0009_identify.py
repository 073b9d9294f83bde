"""The identity search's stored index: each reference image's identity vectors (appearance
descriptor, face embeddings) as float32 bytes, deleted with the image by the database.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from castbook.db.schema import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_vectors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "reference_image_id",
            sa.Integer,
            sa.ForeignKey("reference_images.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "character_id",
            sa.String(32),
            sa.ForeignKey("characters.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("feature_key", sa.String(200), nullable=False),
        sa.Column("appearance", sa.LargeBinary, nullable=False),
        sa.Column("faces", sa.LargeBinary, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint(
            "reference_image_id", "feature_key", name="uq_identity_vectors_image_key"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_identity_vectors_owner_key", "identity_vectors", ["owner", "feature_key"])


def downgrade() -> None:
    op.drop_index("ix_identity_vectors_owner_key", "identity_vectors")
    op.drop_table("identity_vectors")
