"""Finished tasks are found by when they finished (retention prunes the oldest).

Revision ID: 0007_retention
Revises: 0006
Create Date: 2026-12-06
"""

from alembic import op

revision = "0007_retention"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_at", "jobs")
