"""Finished tasks are found by when they finished (retention prunes the oldest), and a
task's outputs by its id: without it, deleting a task makes the foreign-key check and ON
DELETE CASCADE scan all of job_outputs (benchmarks/prune.py: 10,000 tasks, half expired,
took 99 s to prune on SQLite before, 41 s after, nearly all of it unlinking 15,000 files).

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
    op.create_index("ix_job_outputs_job_id", "job_outputs", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_job_outputs_job_id", "job_outputs")
    op.drop_index("ix_jobs_finished_at", "jobs")
