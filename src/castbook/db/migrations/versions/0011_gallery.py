"""The gallery's index of results: one row per image or video of a finished task, with what
it was made with, and the characters it shows (issue 18).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from castbook.db.schema import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gallery_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=False),
        sa.Column("task_kind", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=True),
        sa.Column("shown", sa.Boolean, nullable=False),
        sa.Column("workflow", sa.String(32), nullable=True),
        sa.Column("node", sa.String(100), nullable=True),
        sa.Column("preset", sa.String(100), nullable=True),
        sa.Column("prompt", sa.Text, nullable=True),
        sa.Column("negative_prompt", sa.Text, nullable=True),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("characters", sa.JSON, nullable=False),
        sa.UniqueConstraint("job_id", "position", name="uq_gallery_items_output"),
    )
    op.create_index("ix_gallery_items_owner_shown_id", "gallery_items", ["owner", "shown", "id"])
    op.create_index("ix_gallery_items_owner_workflow", "gallery_items", ["owner", "workflow", "id"])
    op.create_index("ix_gallery_items_owner_finished", "gallery_items", ["owner", "finished_at"])
    op.create_table(
        "gallery_characters",
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
    )
    op.create_index(
        "ix_gallery_characters_owner_name",
        "gallery_characters",
        ["owner", "name", "job_id", "position"],
    )


def downgrade() -> None:
    op.drop_table("gallery_characters")
    op.drop_table("gallery_items")
