"""API keys carry their own quotas; the hot task queries get the indexes they lack.

``job_outputs.job_id`` had no index, so every poll of a task (``GET /v1/tasks/{id}``, its
event stream) scanned the whole outputs table for that task's outputs; counting an owner's
queued and running tasks (the queued-task quota) wants ``(owner, status)``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("rate_limit", sa.Float, nullable=True))
        batch.add_column(sa.Column("rate_burst", sa.Integer, nullable=True))
        batch.add_column(sa.Column("max_queued", sa.Integer, nullable=True))
        batch.add_column(sa.Column("max_storage_bytes", sa.BigInteger, nullable=True))
    op.create_index("ix_job_outputs_job_id", "job_outputs", ["job_id", "position"])
    op.create_index("ix_jobs_owner_status", "jobs", ["owner", "status"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_status", "jobs")
    op.drop_index("ix_job_outputs_job_id", "job_outputs")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("max_storage_bytes")
        batch.drop_column("max_queued")
        batch.drop_column("rate_burst")
        batch.drop_column("rate_limit")
