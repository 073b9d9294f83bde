"""``/v1/workflows``: validate, save, list, load, delete and run workflow graphs.

A graph is validated completely before it runs: its shape (see
:mod:`castbook.workflow.graph`), then what only the owner's data can tell (characters with
reference images, presets, stored images: each node's ``check``, see
:mod:`castbook.workflow.validate`). Every problem comes back at once as 422
``{"error", "type": "WorkflowError", "errors": [{"node", "field", "message"}]}``. A run is
one task of kind ``workflow`` (202); ``GET /v1/tasks/{id}`` shows its per-node results.

Saving checks only the JSON shape (:func:`castbook.workflow.check_draft`): an unfinished
workflow is a draft that can be saved and finished later; the answer says what a run would
refuse (``valid``, ``problems``), and running it checks everything.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from castbook.api.auth import CurrentOwner
from castbook.api.problems import error_response
from castbook.api.services import AppServices, Services
from castbook.api.submission import QUEUE_PATTERN, task_json
from castbook.errors import FieldError, NotFoundError
from castbook.generation import PresetCatalog
from castbook.jobs import Job
from castbook.library import CharacterLibrary
from castbook.tasks.workflow import WORKFLOW
from castbook.workflow import (
    Graph,
    GraphError,
    WorkflowStore,
    check_draft,
    check_graph,
    node_catalog,
)

__all__ = ["router"]

router = APIRouter(prefix="/workflows", tags=["workflows"])


class GraphBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    graph: dict[str, Any] = Field(description="{nodes: {id: {type, inputs}}}")


class SaveBody(GraphBody):
    name: str = Field(min_length=1, max_length=100, description="Unique among your workflows.")


_CACHE = Field(
    default=True,
    description="Re-use a node's outputs from an earlier run when its inputs, seed, preset and "
    "characters are unchanged; false renders every node again.",
)


class RunBody(GraphBody):
    inference_type: str | None = Field(default=None, pattern=QUEUE_PATTERN)
    cache: bool = _CACHE
    workflow: str | None = Field(
        default=None,
        max_length=32,
        description="The saved workflow this graph was loaded from or saved as (its id), kept "
        "with the task so the gallery can list that workflow's results; the graph given is "
        "what runs.",
    )


class RunSavedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inference_type: str | None = Field(default=None, pattern=QUEUE_PATTERN)
    cache: bool = _CACHE


def _problems_response(exc: GraphError) -> JSONResponse:
    first = exc.problems[0]
    return error_response(
        422,
        str(exc),
        "WorkflowError",
        field=".".join(p for p in (first.node, first.field) if p) or None,
        errors=[p.to_json() for p in exc.problems],
    )


class _OwnerData:
    """One owner's library, presets and images, as the workflow checks ask for them."""

    def __init__(self, services: Services, owner: str) -> None:
        self.services = services
        self.owner = owner

    @cached_property
    def library(self) -> CharacterLibrary:
        return self.services.library(self.owner)

    @cached_property
    def presets(self) -> PresetCatalog:
        return self.services.presets()

    def owns_image(self, sha256: str) -> bool:
        return self.services.owns_image(self.owner, sha256)


def _checked(services: Services, owner: str, data: dict[str, Any]) -> Graph:
    """The graph, checked (its shape, then each node against the owner's data) by
    :func:`castbook.workflow.check_graph`; raises GraphError."""
    return check_graph(data, _OwnerData(services, owner))


def _queue(
    request: Request,
    services: Services,
    owner: str,
    graph: Graph,
    workflow: str | None,
    queue: str | None,
    cache: bool,
) -> JSONResponse:
    job: Job = services.jobs.create(
        kind=WORKFLOW,
        input={"graph": graph.source, "workflow": workflow, "cache": cache},
        owner=owner,
        queue=queue or "default",
    )
    job = services.submit(job)
    return JSONResponse(
        task_json(request, job),
        status_code=202,
        headers={"Location": str(request.url_for("get_task", task_id=job.id))},
    )


@router.get("/node-types", summary="The node types, their inputs, outputs and wiring rules")
def node_types() -> dict[str, Any]:
    """What an editor needs to build nodes and their forms: every input (values with their
    ranges and defaults, ports with their types) and output, and which port types each
    input port accepts."""
    return node_catalog()


@router.post("/validate", summary="Validate a workflow graph (nothing is written)")
def validate_workflow(owner: CurrentOwner, services: AppServices, body: GraphBody) -> Any:
    """200 ``{"valid": true, "order": [...]}``, or 422 with every problem, each naming its
    node and input."""
    try:
        graph = _checked(services, owner, body.graph)
    except GraphError as exc:
        return _problems_response(exc)
    return {"valid": True, "order": graph.order}


@router.post("/run", status_code=202, summary="Run a workflow graph given inline")
def run_inline_workflow(
    request: Request, owner: CurrentOwner, services: AppServices, body: RunBody
) -> JSONResponse:
    if body.workflow is not None:
        try:
            WorkflowStore(services.database, owner).get(body.workflow)
        except NotFoundError as exc:
            raise FieldError("workflow", str(exc)) from None
    try:
        graph = _checked(services, owner, body.graph)
    except GraphError as exc:
        return _problems_response(exc)
    return _queue(request, services, owner, graph, body.workflow, body.inference_type, body.cache)


@router.post("", status_code=201, summary="Save a workflow (a draft may be unfinished)")
def save_workflow(owner: CurrentOwner, services: AppServices, body: SaveBody) -> Any:
    """Only the graph's JSON shape is checked (422 otherwise), so an unfinished workflow can
    be saved as a draft; names are unique per owner (409). The answer adds ``valid`` and
    ``problems``: what a run would refuse now (a run checks again)."""
    try:
        source = check_draft(body.graph)
    except GraphError as exc:
        return _problems_response(exc)
    saved = WorkflowStore(services.database, owner).save(body.name, source)
    try:
        _checked(services, owner, source)
        problems: list[dict[str, Any]] = []
    except GraphError as exc:
        problems = [p.to_json() for p in exc.problems]
    answer = {**saved.to_json(), "valid": not problems, "problems": problems}
    return JSONResponse(answer, status_code=201)


@router.get("", summary="List your workflows")
def list_workflows(owner: CurrentOwner, services: AppServices) -> list[dict[str, Any]]:
    return [w.to_json(graph=False) for w in WorkflowStore(services.database, owner).list()]


@router.get("/{workflow_id}", summary="Get a workflow with its graph")
def get_workflow(workflow_id: str, owner: CurrentOwner, services: AppServices) -> dict[str, Any]:
    return WorkflowStore(services.database, owner).get(workflow_id).to_json()


@router.delete("/{workflow_id}", status_code=204, summary="Delete a workflow")
def delete_workflow(workflow_id: str, owner: CurrentOwner, services: AppServices) -> Response:
    WorkflowStore(services.database, owner).delete(workflow_id)
    return Response(status_code=204)


@router.post("/{workflow_id}/run", status_code=202, summary="Run a saved workflow")
def run_saved_workflow(
    request: Request,
    workflow_id: str,
    owner: CurrentOwner,
    services: AppServices,
    body: RunSavedBody | None = None,
) -> JSONResponse:
    """Checked again first: characters, presets or images it names may be gone since."""
    saved = WorkflowStore(services.database, owner).get(workflow_id)
    try:
        graph = _checked(services, owner, saved.graph)
    except GraphError as exc:
        return _problems_response(exc)
    body = body or RunSavedBody()
    return _queue(request, services, owner, graph, saved.id, body.inference_type, body.cache)
