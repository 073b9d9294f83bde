"""Running a workflow: a validated graph run node by node, in topological order.

:func:`run_workflow` is what the ``workflow`` job kind (:mod:`castbook.tasks.workflow`)
calls, with the services of its process (:class:`WorkflowServices`: the backends and the
scorer every job kind shares). This module walks the graph — order, re-use, progress,
cancellation, errors; each node's own work is its :meth:`~castbook.workflow.nodes.Node.invoke`.

Job input: ``{"graph": <graph JSON>, "workflow": saved workflow id or None}``. Values passed
between nodes are ids, never pixels: an image is its blob id (sha256), a character its
library id and name. Every image or video a node makes is kept as a blob and listed as one
of the job's outputs. Progress counts nodes (``node gen: running 2/4`` while a node works);
cancellation arrives between nodes and between a node's steps.

A node that fails ends the run; the task's ``error_data.node`` names it, and what the nodes
before it made is kept with the task (its outputs and a result with their statuses), as it
is when the run is cancelled.

Result: ``{"order": [...], "nodes": {node_id: {"type", "status", "outputs": {...},
"scores"?, ...}}, "outputs": {output_node_id: value}}``; a node's ``scores`` output is
repeated as its ``scores``, and what it reported (:meth:`NodeContext.report`: a generating
node's final ``prompt`` and ``negative_prompt``) is added to its entry.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from castbook.errors import CastbookError, GenerationCancelled
from castbook.jobs import Job, JobContext, JobOutput, PartialResults, StoppedWithResults
from castbook.library import Character
from castbook.workflow.cache import CachedNode, NodeCache, signature
from castbook.workflow.context import NodeContext, RunState, WorkflowServices
from castbook.workflow.graph import Graph, Link, ParsedNode, parse_graph
from castbook.workflow.values import CharacterValue, to_json

__all__ = ["WorkflowServices", "run_workflow"]


def run_workflow(
    services: WorkflowServices, job: Job, context: JobContext
) -> tuple[list[JobOutput], dict[str, Any]]:
    """Run the job's graph (``job.input["graph"]``); returns the files it made and its
    result."""
    graph = parse_graph(job.input["graph"])
    run = _Run(services, job, context, graph)
    result = run.run()
    if job.input.get("workflow"):
        result["workflow"] = job.input["workflow"]
    return run.state.files, result


class _Run:
    """One walk of a graph: each node re-used or invoked in turn, and their results."""

    def __init__(
        self, services: WorkflowServices, job: Job, context: JobContext, graph: Graph
    ) -> None:
        self.graph = graph
        self.state = RunState(services, job.owner, context, len(graph.order))
        reuse = job.input.get("cache", True)
        self.cache = NodeCache(context.store, services.blobs, job.owner) if reuse else None

    def run(self) -> dict[str, Any]:
        state = self.state
        results: dict[str, dict[str, Any]] = {}
        for node_id in self.graph.order:
            parsed = self.graph.nodes[node_id]
            node_context = NodeContext(state, parsed)
            try:
                state.progress(node_id, 0, 1)  # also where a cancel arrives between nodes
                key = self.signature(parsed)
                hit = self.cache.get(key) if key and self.cache else None
                if hit:
                    outputs = self.reuse(hit)
                    node_context.report(**_reported(hit.result))
                else:
                    outputs = parsed.node.invoke(node_context)
            except CastbookError as exc:
                stopped = "cancelled" if isinstance(exc, GenerationCancelled) else "failed"
                results[node_id] = {"type": parsed.node.type, "status": stopped, "outputs": {}}
                results[node_id].update(_reported(node_context.details))
                if stopped == "failed":
                    results[node_id]["error"] = str(exc)
                # What the finished nodes made stays with the task.
                partial = PartialResults(list(state.files), self.summary(results))
                raise StoppedWithResults(exc, partial, {"node": node_id}) from exc
            state.values[node_id] = outputs
            results[node_id] = {
                "type": parsed.node.type,
                "status": "succeeded",
                "outputs": {k: to_json(v) for k, v in outputs.items()},
                **_reported(node_context.details),
            }
            if "scores" in outputs:
                results[node_id]["scores"] = outputs["scores"]
            if key:
                results[node_id]["signature"] = key
            if hit:
                results[node_id]["cached_from"] = hit.task
            state.done += 1
        return self.summary(results)

    def summary(self, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        collected = {
            nid: results[nid]["outputs"]["value"]
            for nid in self.graph.order
            if nid in results
            and results[nid]["status"] == "succeeded"
            and type(self.graph.nodes[nid].node).workflow_output
        }
        return {"order": self.graph.order, "nodes": results, "outputs": collected}

    # ---- re-using earlier outputs ----------------------------------------------------------

    def signature(self, parsed: ParsedNode) -> str | None:
        """What the node's outputs depend on, hashed; None when a re-run should compute
        them again (no seed: every run is meant to differ) or computing is cheap."""
        node = parsed.node
        if not node.reusable():
            return None
        parts: dict[str, Any] = {
            "type": node.type,
            "version": type(node).version,
            "literals": node.model_dump(mode="json"),
            "inputs": {name: self.fingerprint(value) for name, value in parsed.links.items()},
        }
        mode = type(node).mode
        if mode is not None:
            preset = self.state.preset(getattr(node, "preset", None), mode)
            parts["preset"] = {
                k: v for k, v in asdict(preset).items() if k not in ("source", "description")
            }
        if type(node).scored:
            parts["scorer"] = self.state.services.scorer.get().key
        return signature(parts)

    def fingerprint(self, value: Link | list[Link | str]) -> list[Any]:
        """A port's values as the signature sees them: ids, and characters by their id,
        last change and reference images (a change to any of them is a new signature)."""
        library = self.state.library
        prints: list[Any] = []
        for item in value if isinstance(value, list) else [value]:
            given = self.state.value(item) if isinstance(item, Link) else library.get(item)
            if isinstance(given, CharacterValue):
                prints.append(
                    {**_character_print(library.get_by_id(given.id)), "use": given.reference}
                )
            elif isinstance(given, Character):
                prints.append(_character_print(given))
            else:
                prints.append(given)
        return prints

    def reuse(self, hit: CachedNode) -> dict[str, Any]:
        """A cached node's outputs; its files become this task's too (listed once)."""
        files = self.state.files
        listed = {output.sha256 for output in files}
        files.extend(f for f in hit.files if f.sha256 not in listed)
        return dict(hit.result["outputs"])


# A node's entry in the result: what the run writes; the rest is what the node reported.
_ENTRY_KEYS = frozenset(
    {"type", "status", "outputs", "scores", "signature", "cached_from", "error"}
)


def _reported(entry: dict[str, Any]) -> dict[str, Any]:
    """What a node reported, from its details or an earlier run's entry for it."""
    return {k: v for k, v in entry.items() if k not in _ENTRY_KEYS}


def _character_print(character: Character) -> dict[str, Any]:
    return {
        "id": character.id,
        "updated_at": character.updated_at.isoformat(),
        "images": [image.sha256 for image in character.images],
    }
