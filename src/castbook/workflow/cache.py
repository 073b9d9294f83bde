"""Node outputs re-used by input signature, so a re-run only renders what changed.

A node's signature is a hash of everything its outputs depend on: its type and version, its
literal inputs, the values wired into it (image ids; characters by id, last change and
reference images), the preset it renders with (backend, model, options, defaults) and the
scorer's feature set. Only nodes whose outputs follow from those alone are cached:
generation nodes with a ``seed`` (without one every run is meant to differ), batch renders
with a seed, and consistency evals. The cache is the owner's earlier workflow tasks: a node
with the same signature whose files are all still stored is taken as it is, its files listed
again as the new task's outputs (which keeps them alive and downloadable).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from castbook import __version__
from castbook.blobs import Blobs
from castbook.jobs import JobOutput, JobStore

__all__ = ["CachedNode", "NodeCache", "signature"]

# How many of the owner's latest workflow tasks are searched for a signature.
RECENT_TASKS = 200


def signature(parts: dict[str, Any]) -> str:
    """A stable hash of ``parts`` (JSON-able; key order does not matter)."""
    text = json.dumps({"castbook": __version__, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CachedNode:
    task: str  # the task that computed it
    result: dict[str, Any]  # its entry in that task's result["nodes"]
    files: list[JobOutput]  # the files among its outputs


class NodeCache:
    """Looks signatures up in one owner's earlier workflow tasks."""

    def __init__(self, jobs: JobStore, blobs: Blobs, owner: str) -> None:
        self.jobs = jobs
        self.blobs = blobs
        self.owner = owner
        self._index: dict[str, CachedNode] | None = None

    def get(self, key: str) -> CachedNode | None:
        if self._index is None:
            self._index = self._read()
        found = self._index.get(key)
        if found is None or not all(self.blobs.exists(f.sha256) for f in found.files):
            return None
        return found

    def _read(self) -> dict[str, CachedNode]:
        index: dict[str, CachedNode] = {}
        # Newest first: the latest computation of a signature wins.
        for job in self.jobs.list(self.owner, limit=RECENT_TASKS, kind="workflow"):
            files = {output.sha256: output for output in job.outputs}
            for entry in (job.result or {}).get("nodes", {}).values():
                key = entry.get("signature")
                if not key or key in index or entry.get("status") != "succeeded":
                    continue
                outputs = entry.get("outputs", {})
                made = [outputs.get("video"), *(outputs.get("images") or [])]
                index[key] = CachedNode(job.id, entry, [files[s] for s in made if s in files])
        return index
