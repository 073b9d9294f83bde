"""Saved workflows: a named graph per owner. Another owner's workflows do not exist here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from castbook.db import Database, WorkflowRow
from castbook.errors import ConflictError, NotFoundError

__all__ = ["SavedWorkflow", "WorkflowStore"]


@dataclass(frozen=True)
class SavedWorkflow:
    id: str
    owner: str
    name: str
    graph: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    def to_json(self, *, graph: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }
        if graph:
            data["graph"] = self.graph
        return data


class WorkflowStore:
    def __init__(self, database: Database, owner: str) -> None:
        self.database = database
        self.owner = owner

    def save(self, name: str, graph: dict[str, Any]) -> SavedWorkflow:
        """Store a (validated) graph under a name that is new for this owner."""
        now = datetime.now(UTC)
        row = WorkflowRow(
            id=uuid.uuid4().hex,
            owner=self.owner,
            name=name,
            graph=graph,
            created_at=now,
            updated_at=now,
        )
        with self.database.session() as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                raise ConflictError(
                    f"a workflow named {name!r} already exists; choose another name or "
                    "delete that one first"
                ) from None
            return _to_saved(row)

    def list(self) -> list[SavedWorkflow]:
        with self.database.session() as session:
            rows = session.scalars(
                select(WorkflowRow)
                .where(WorkflowRow.owner == self.owner)
                .order_by(WorkflowRow.name)
            ).all()
            return [_to_saved(row) for row in rows]

    def get(self, workflow_id: str) -> SavedWorkflow:
        with self.database.session() as session:
            return _to_saved(self._row(session, workflow_id))

    def delete(self, workflow_id: str) -> None:
        with self.database.session() as session:
            session.delete(self._row(session, workflow_id))
            session.commit()

    def _row(self, session: Any, workflow_id: str) -> WorkflowRow:
        row = session.get(WorkflowRow, workflow_id)
        if row is None or row.owner != self.owner:
            raise NotFoundError(f"no workflow {workflow_id!r}")
        return row


def _to_saved(row: WorkflowRow) -> SavedWorkflow:
    return SavedWorkflow(
        row.id, row.owner, row.name, dict(row.graph), row.created_at, row.updated_at
    )
