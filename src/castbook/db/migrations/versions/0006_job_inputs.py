"""Stored images a job's input names keep their blobs alive while the job exists.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BLOB_ID = re.compile(r"[0-9a-f]{64}")


def _blob_ids(value: object) -> set[str]:
    if isinstance(value, str):
        return {value} if _BLOB_ID.fullmatch(value) else set()
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return set().union(*(_blob_ids(item) for item in value)) if value else set()
    return set()


def upgrade() -> None:
    table = op.create_table(
        "job_inputs",
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("sha256", sa.String(64), primary_key=True),
    )
    op.create_index("ix_job_inputs_sha256", "job_inputs", ["sha256"])
    # Jobs already stored name their images too (the same walk as JobStore.create).
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("input", sa.JSON))
    rows = [
        {"job_id": job_id, "sha256": sha}
        for job_id, job_input in op.get_bind().execute(sa.select(jobs.c.id, jobs.c.input))
        for sha in sorted(_blob_ids(job_input))
    ]
    if rows:
        op.bulk_insert(table, rows)


def downgrade() -> None:
    op.drop_index("ix_job_inputs_sha256", "job_inputs")
    op.drop_table("job_inputs")
