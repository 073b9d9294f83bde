"""``/v1/batch-renders`` and ``/v1/stories``: Batch Render and Story Mode as tasks.

Like a generation, each is validated completely (fields and ranges, the preset, every
character and its reference images, every variant's or scene's request) before anything is
written; then it becomes a job row (kinds ``batch_render`` and ``story``, see
:mod:`castbook.tasks.render`) and the caller gets the task at once (202), to follow
with ``GET /v1/tasks/{id}`` or its event stream. The finished task's ``result`` carries the
scores, seeds and attempts, and names its files by output id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from castbook.api.auth import CurrentOwner
from castbook.api.services import AppServices, Services
from castbook.api.submission import (
    QUEUE_PATTERN,
    choose_preset,
    task_json,
)
from castbook.errors import FieldError, NotFoundError
from castbook.generation import Mode, Preset, preset_room_problem, resolve_request
from castbook.generation.request import PROMPT_MAX, within
from castbook.jobs import Job
from castbook.library import Character, CharacterLibrary
from castbook.render.batch import BatchRender
from castbook.render.story import Story
from castbook.tasks.render import BATCH_RENDER, STORY

__all__ = ["BatchRenderSubmission", "StorySubmission", "router"]

router = APIRouter(tags=["batch render and stories"])

# Renders per variant (or panel) with a gate but no max_attempts, as the CLI.
_DEFAULT_GATE_ATTEMPTS = 3
_Prompt = Annotated[str, Field(max_length=PROMPT_MAX)]


class _Gate(BaseModel):
    min_score: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Consistency gate: re-render anything scoring under this (0-100).",
    )
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        le=10,
        description="Renders per variant or panel at most, with min_score (default 3).",
    )
    inference_type: str | None = Field(
        default=None,
        pattern=QUEUE_PATTERN,
        description="The queue to run on (a10g, a100, h100 …); default: 'default'.",
    )

    def attempts(self) -> int:
        if self.min_score is None:
            return 1
        return self.max_attempts or _DEFAULT_GATE_ATTEMPTS


class BatchRenderSubmission(_Gate):
    """N prompt variants of the same characters in one task, each scored, the best marked."""

    model_config = ConfigDict(extra="forbid")

    characters: list[str] = Field(
        default_factory=list, description="Ids or names of your characters (at least one)."
    )
    prompts: list[_Prompt] = Field(
        default_factory=list,
        description="The prompt variants: 1 up to max_variants (default and cap: the "
        "server's CASTBOOK_MAX_VARIANTS, 8 unless set).",
    )
    max_variants: int | None = Field(
        default=None, ge=1, description="Lower the cap on the number of prompts."
    )
    preset: str | None = Field(default=None, description="Preset id; default: the t2i default.")
    seed: int | None = Field(
        default=None, **within("seed"), description="The first variant's seed (then +1 each)."
    )
    width: int | None = Field(default=None, **within("width"))
    height: int | None = Field(default=None, **within("height"))
    steps: int | None = Field(default=None, **within("steps"))
    guidance: float | None = Field(default=None, **within("guidance"))
    reference_scale: float | None = Field(default=None, **within("reference_scale"))
    negative_prompt: str | None = Field(default=None, max_length=PROMPT_MAX)


class StorySubmission(Story, _Gate):
    """A story document (the schema of story files: title, characters, preset, defaults,
    scenes), plus how to render it."""

    continuity: bool = Field(
        default=False, description="Use each scene's previous panel as an extra reference."
    )

    def _scene_characters_are_in_the_story(self) -> StorySubmission:
        # Checked by the route instead, which can name the scene and entry at fault.
        return self


def _created(request: Request, job: Job) -> JSONResponse:
    return JSONResponse(
        task_json(request, job),
        status_code=202,
        headers={"Location": str(request.url_for("get_task", task_id=job.id))},
    )


def _characters(library: CharacterLibrary, refs: list[str], field: str) -> list[Character]:
    """Each ref (id or name) as one of the owner's characters with reference images."""
    found: list[Character] = []
    for index, ref in enumerate(refs):
        try:
            character = library.find(ref)
        except NotFoundError:
            raise FieldError(f"{field}.{index}", f"no character {ref!r}") from None
        if not character.images:
            raise FieldError(
                f"{field}.{index}",
                f"{character.name} has no reference images to score against; upload one first",
            )
        found.append(character)
    return found


def _check(resolve: Callable[[], object], prefix: str = "") -> None:
    """Run ``resolve`` (the resolution the job will make, against the preset) and name the
    submission's field in what it refuses: a mode the preset lacks is the preset's fault."""
    try:
        resolve()
    except FieldError as exc:
        if exc.field == "mode":
            raise FieldError("preset", str(exc).removeprefix("mode: ")) from None
        raise FieldError(f"{prefix}{exc.field}", str(exc).removeprefix(f"{exc.field}: ")) from None


def _check_room(preset: Preset, count: int, field: str) -> None:
    problem = preset_room_problem(preset, count)
    if problem is not None:
        raise FieldError(field, problem)


# ---- batch renders --------------------------------------------------------------------------


def queue_batch_render(services: Services, owner: str, body: BatchRenderSubmission) -> Job:
    cap = services.config.max_variants
    limit = min(body.max_variants or cap, cap)
    characters = _characters(services.library(owner), body.characters, "characters")
    names = list(dict.fromkeys(c.name for c in characters))
    request = body.model_dump(
        exclude_none=True,
        include={"seed", "width", "height", "steps", "guidance", "reference_scale",
                 "negative_prompt"},
    )  # fmt: skip
    spec = BatchRender(
        characters=tuple(names),
        prompts=tuple(body.prompts),
        preset="",
        request=request,
        min_score=body.min_score,
        max_attempts=body.attempts(),
        max_variants=limit,
    )
    spec.validate()
    preset = choose_preset(services, body.preset, Mode.T2I)
    _check_room(preset, len(names), "characters")
    _check(lambda: spec.variant_requests(preset))  # as render_batch resolves them
    job = services.jobs.create(
        kind=BATCH_RENDER,
        input={
            "characters": names,
            "prompts": list(spec.prompts),
            "preset": preset.id,
            "request": request,
            "min_score": spec.min_score,
            "max_attempts": spec.max_attempts,
            "max_variants": limit,
        },
        owner=owner,
        queue=body.inference_type or "default",
    )
    return services.submit(job)


@router.post("/batch-renders", status_code=202, summary="Queue a batch render")
def create_batch_render(
    request: Request, owner: CurrentOwner, services: AppServices, body: BatchRenderSubmission
) -> JSONResponse:
    """Answers 202 with the task. While it runs, its progress says ``running 2/4`` (and when
    the consistency gate re-rolls a variant, which one and its score); when it has
    succeeded, ``result.variants`` lists every variant with its scores, seed, attempts and
    ``output`` id, ``result.best`` the most consistent one, and ``result.contact_sheet``
    the contact sheet's output id."""
    return _created(request, queue_batch_render(services, owner, body))


# ---- stories --------------------------------------------------------------------------------


def queue_story(services: Services, owner: str, body: StorySubmission) -> Job:
    known = {name.casefold(): index for index, name in enumerate(body.characters)}
    for number, scene in enumerate(body.scenes):
        for index, name in enumerate(scene.characters):
            if name.casefold() not in known:
                cast = ", ".join(body.characters)
                raise FieldError(
                    f"scenes.{number}.characters.{index}",
                    f"{name!r} is not one of the story's characters ({cast})",
                )
    characters = _characters(services.library(owner), body.characters, "characters")
    canonical = [characters[known[name.casefold()]].name for name in body.characters]
    document = body.model_dump(
        mode="json", exclude={"continuity", "min_score", "max_attempts", "inference_type"}
    )
    document["characters"] = list(dict.fromkeys(canonical))
    for scene in document["scenes"]:
        scene["characters"] = [canonical[known[n.casefold()]] for n in scene["characters"]]
    preset = choose_preset(services, body.preset, Mode.T2I)
    document["preset"] = preset.id
    story = Story.model_validate(document)
    base_seed = story.defaults.get("seed")
    for index, scene in enumerate(story.scenes):  # as render_story builds them
        _check_room(preset, len(set(scene.characters)), f"scenes.{index}.characters")
        values = {**story.defaults, "prompt": scene.prompt, "characters": scene.characters}
        if scene.negative_prompt:
            values["negative_prompt"] = scene.negative_prompt
        if scene.seed is not None:
            values["seed"] = scene.seed
        elif base_seed is not None:
            values["seed"] = base_seed + index
        _check(lambda values=values: resolve_request(values, preset), f"scenes.{index}.")
    job = services.jobs.create(
        kind=STORY,
        input={
            "story": story.model_dump(mode="json"),
            "preset": preset.id,
            "continuity": body.continuity,
            "min_score": body.min_score,
            "max_attempts": body.attempts(),
        },
        owner=owner,
        queue=body.inference_type or "default",
    )
    return services.submit(job)


@router.post("/stories", status_code=202, summary="Queue a story: panels and a storyboard")
def create_story(
    request: Request, owner: CurrentOwner, services: AppServices, body: StorySubmission
) -> JSONResponse:
    """The body is a story document, as in a story file (``castbook story render``), plus
    ``continuity``, ``min_score``, ``max_attempts`` and ``inference_type``. Every scene is
    rendered; re-rendering single scenes is the CLI's ``--scene``. The finished task's
    ``result.panels`` lists each panel's scores, seed, attempts and ``output`` id, and
    ``result.storyboard`` the output ids of the storyboard PNG, PDF, HTML page and drift
    chart."""
    return _created(request, queue_story(services, owner, body))
