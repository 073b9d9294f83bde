"""``GET /v1/results``, ``GET /v1/results.zip`` and ``GET /v1/results/{id}/thumbnail``: the
gallery of your past results.

Every image and video of your finished tasks (generations, batch renders, stories,
workflows), newest first, with what each was made with: the prompt and negative prompt its
model was given (after character injection), seed, preset, characters, score, the workflow
and node. Filtered by character, saved workflow, score and kind, and paged by an opaque
cursor (``next_cursor``) over an index, so thousands of results page as fast as ten. The zip
streams every result the filters pick, each with a JSON file of its parameters.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal, NamedTuple

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from castbook.api.auth import CurrentOwner
from castbook.api.services import AppServices, Services
from castbook.errors import CastbookError, FieldError, NotFoundError
from castbook.images import make_thumbnail, open_image
from castbook.jobs.gallery import GalleryFilter, GalleryItem, ResultGallery
from castbook.tasks.gallery import describe_outputs
from castbook.workflow import WorkflowStore

__all__ = ["router"]

router = APIRouter(tags=["results"])

_EXTENSIONS = {"image/png": "png", "video/mp4": "mp4", "image/jpeg": "jpg", "image/webp": "webp"}

Character = Annotated[
    str | None,
    Query(max_length=200, description="Only results showing this character (id or name)."),
]
Workflow = Annotated[
    str | None,
    Query(max_length=200, description="Only results of runs of this saved workflow (id or name)."),
]
MinScore = Annotated[
    float | None,
    Query(ge=0, le=100, description="Only results with a consistency score of at least this."),
]
Kind = Annotated[Literal["image", "video"] | None, Query(description="Only images or videos.")]


def _gallery(services: Services, owner: str) -> ResultGallery:
    """The owner's gallery, with the tasks that ended since it was last read indexed."""
    gallery = ResultGallery(services.database, owner, describe_outputs)
    gallery.index()
    return gallery


class Asked(NamedTuple):
    """The filters as the query gives them (names or ids), before :func:`_filter`."""

    character: str | None
    workflow: str | None
    min_score: float | None
    kind: str | None


def _asked(
    character: Character = None,
    workflow: Workflow = None,
    min_score: MinScore = None,
    kind: Kind = None,
) -> Asked:
    return Asked(character, workflow, min_score, kind)


# The query parameters both the list and the zip take.
Filters = Annotated[Asked, Depends(_asked)]


def _filter(services: Services, owner: str, asked: Asked) -> GalleryFilter:
    """Names and ids as the gallery stores them: a character by its name (a deleted one's
    name still finds its results), a saved workflow by its id."""
    character, workflow, min_score, kind = asked
    if character is not None:
        character = character.strip()
        with contextlib.suppress(NotFoundError):  # a deleted character: its name as given
            character = services.library(owner).find(character).name
    workflow_id = None
    if workflow is not None:
        store = WorkflowStore(services.database, owner)
        named = [saved.id for saved in store.list() if workflow in (saved.id, saved.name)]
        workflow_id = named[0] if named else workflow.strip()
    return GalleryFilter(character or None, workflow_id, min_score, kind)


def _cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if not cursor.isdigit():
        raise FieldError("cursor", f"is not a cursor of this list: {cursor[:40]!r}")
    return int(cursor)


_MARK = "0result0"  # stands for an id in the URL template; ids are hex, so it never occurs


def _url_template(request: Request) -> str:
    return str(request.url_for("download_result", sha256=_MARK))


def _item_json(item: GalleryItem, url: str, workflows: dict[str, str]) -> dict[str, Any]:
    return {
        "id": item.sha256,
        "url": url.replace(_MARK, item.sha256),
        "kind": item.kind,
        "media_type": item.media_type,
        "width": item.width,
        "height": item.height,
        "seed": item.seed,
        "task": item.task,
        "task_kind": item.task_kind,
        "node": item.node,
        "workflow": (
            {"id": item.workflow, "name": workflows.get(item.workflow)} if item.workflow else None
        ),
        "preset": item.preset,
        "prompt": item.prompt,
        "negative_prompt": item.negative_prompt,
        "characters": list(item.characters),
        "score": item.score,
        "finished_at": item.finished_at.isoformat(),
    }


def _workflow_names(services: Services, owner: str) -> dict[str, str]:
    return {saved.id: saved.name for saved in WorkflowStore(services.database, owner).list()}


@router.get("/results", summary="Your past results, newest first (the gallery)")
def list_results(
    request: Request,
    owner: CurrentOwner,
    services: AppServices,
    filters: Filters,
    cursor: Annotated[str | None, Query(description="The previous page's next_cursor.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 60,
) -> dict[str, Any]:
    """``{items, next_cursor, total}``; ``total`` counts every result the filters pick."""
    where = _filter(services, owner, filters)
    page = _gallery(services, owner).page(where, cursor=_cursor(cursor), limit=limit)
    names = _workflow_names(services, owner) if any(i.workflow for i in page.items) else {}
    url = _url_template(request)
    return {
        "items": [_item_json(item, url, names) for item in page.items],
        "next_cursor": str(page.next_cursor) if page.next_cursor is not None else None,
        "total": page.total,
    }


@router.get(
    "/results.zip",
    summary="Download your results (all, or those the filters pick) as a zip",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
async def download_results_zip(
    request: Request,
    owner: CurrentOwner,
    services: AppServices,
    filters: Filters,
) -> StreamingResponse:
    """Each result as its file (``0001-<id>.png``) beside a JSON file of its parameters
    (``0001-<id>.json``: the prompt and negative prompt sent, seed, preset, characters,
    score, task, node, workflow), and ``results.json`` listing them all. Streamed as it is
    written: the archive is never held whole on the server."""

    def prepare() -> tuple[ResultGallery, GalleryFilter, dict[str, str]]:
        where = _filter(services, owner, filters)
        return _gallery(services, owner), where, _workflow_names(services, owner)

    gallery, where, names = await run_in_threadpool(prepare)
    return StreamingResponse(
        _zip_stream(services, request, gallery, where, names),
        media_type="application/zip",
        headers={"Content-Disposition": 'attachment; filename="castbook-results.zip"'},
    )


class _Thumbnails:
    """Small WebP copies of result images, made on request and kept in memory, least
    recently used out first. A result is named by its content, so a copy never goes stale."""

    def __init__(self, entries: int = 1024) -> None:
        self.entries = entries
        self.kept: OrderedDict[str, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, sha256: str, make: Callable[[], bytes]) -> bytes:
        with self.lock:
            if sha256 in self.kept:
                self.kept.move_to_end(sha256)
                return self.kept[sha256]
        data = make()
        with self.lock:
            self.kept[sha256] = data
            while len(self.kept) > self.entries:
                self.kept.popitem(last=False)
        return data


@router.get(
    "/results/{sha256}/thumbnail",
    summary="A result image, small (WebP, at most 256 px a side)",
    response_class=Response,
    responses={200: {"content": {"image/webp": {}}}},
)
def result_thumbnail(
    sha256: str, request: Request, owner: CurrentOwner, services: AppServices
) -> Response:
    """What the gallery's grid shows: a few kB instead of the whole PNG. Only images of your
    own tasks; a video has none (404)."""
    output = services.output_of(owner, sha256.lower())
    if output is None or output.kind != "image":
        raise NotFoundError(f"no result image {sha256[:16]} among your tasks")
    state = request.app.state
    if getattr(state, "result_thumbnails", None) is None:
        state.result_thumbnails = _Thumbnails()
    data = state.result_thumbnails.get(
        output.sha256,
        lambda: make_thumbnail(open_image(services.blobs.get(output.sha256), source="result")),
    )
    return Response(
        data,
        media_type="image/webp",
        headers={"Cache-Control": "private, max-age=31536000, immutable"},
    )


class _Chunks(io.RawIOBase):
    """A write-only stream whose bytes are taken out as they are written (zipfile writes a
    data descriptor after each file when it cannot seek back)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.chunks.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def _zip_stream(
    services: Services,
    request: Request,
    gallery: ResultGallery,
    where: GalleryFilter,
    names: dict[str, str],
) -> Iterator[bytes]:
    url = _url_template(request)
    sink = _Chunks()
    listed: list[dict[str, Any]] = []
    with zipfile.ZipFile(sink, "w") as archive:
        for number, item in enumerate(gallery.all(where), start=1):
            stem = f"{number:04d}-{item.sha256[:16]}"
            made = item.finished_at.timetuple()[:6]
            parameters = _item_json(item, url, names)
            try:
                data = services.blobs.get(item.sha256)
            except CastbookError as exc:
                parameters["missing"] = str(exc)
                data = None
            if data is not None:
                extension = _EXTENSIONS.get(item.media_type, "bin")
                parameters["file"] = f"{stem}.{extension}"
                # Pictures and videos are compressed already: stored, not deflated again.
                archive.writestr(zipfile.ZipInfo(parameters["file"], made), data)
            archive.writestr(
                zipfile.ZipInfo(f"{stem}.json", made),
                json.dumps(parameters, indent=2, ensure_ascii=False),
                compress_type=zipfile.ZIP_DEFLATED,
            )
            listed.append(parameters)
            yield sink.take()
        archive.writestr(
            zipfile.ZipInfo("results.json"),
            json.dumps({"count": len(listed), "results": listed}, indent=2, ensure_ascii=False),
            compress_type=zipfile.ZIP_DEFLATED,
        )
    yield sink.take()
