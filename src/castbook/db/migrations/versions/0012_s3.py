"""Blob sizes, learned once, so storage accounting asks no object store per blob (issue 20).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Empty at first: sizes are learned as accounting first needs them (castbook.jobs.sizes).
    op.create_table(
        "blob_sizes",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("byte_size", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("blob_sizes")
