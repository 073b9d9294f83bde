"""Finished tasks are found by when they finished (retention prunes the oldest). (A task's
outputs are found by its id through ``ix_job_outputs_job_id`` from 0007, which also spares
deleting a task a scan of job_outputs: benchmarks/prune.py, 10,000 tasks, half expired, took
99 s to prune on SQLite without it, 41 s with it, nearly all of it unlinking 15,000 files.)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_at", "jobs")
