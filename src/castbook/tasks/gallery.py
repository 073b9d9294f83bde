"""What each output of a finished task was made with, for the gallery (``GET /v1/results``).

Every job kind keeps that in its own result shape — a generation's ``prompt``, a batch
render's ``variants``, a story's ``panels``, a workflow's ``nodes`` — so this module, which
knows the kinds, reads it out once per output: the prompt and negative prompt the model was
given (after character injection), the preset, the characters, the score, the node. The
gallery's index (:class:`castbook.jobs.gallery.ResultGallery`) stores it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from castbook.jobs import Job
from castbook.tasks.generation import GENERATION
from castbook.tasks.render import BATCH_RENDER, STORY
from castbook.tasks.workflow import WORKFLOW

__all__ = ["OutputDescription", "describe_outputs"]

_PICTURES = ("image", "video")
_Described = Mapping[str, "OutputDescription"]


@dataclass(frozen=True)
class OutputDescription:
    """One output of a task as the gallery shows it; ``shown`` is False for what is not a
    picture of its own (a contact sheet, a storyboard, a PDF)."""

    shown: bool = True
    prompt: str | None = None
    negative_prompt: str | None = None
    preset: str | None = None
    score: float | None = None
    characters: tuple[str, ...] = ()
    node: str | None = None
    workflow: str | None = None


def describe_outputs(job: Job) -> list[OutputDescription]:
    """One description per output of ``job``, in order."""
    result = job.result or {}
    if job.kind == GENERATION:
        made = _generation(job.input, result)
        by_sha = {output.sha256: made for output in job.outputs}
    elif job.kind == BATCH_RENDER:
        by_sha = _batch_render(job.input, result)
    elif job.kind == STORY:
        by_sha = _story(result)
    elif job.kind == WORKFLOW:
        by_sha = _workflow(result, workflow=job.input.get("workflow"))
    else:
        by_sha = {}
    workflow = job.input.get("workflow") if job.kind == WORKFLOW else None
    plain = OutputDescription(workflow=workflow if isinstance(workflow, str) else None)
    described = []
    for output in job.outputs:
        found = by_sha.get(output.sha256)
        if output.kind not in _PICTURES or (found is None and job.kind in (BATCH_RENDER, STORY)):
            found = OutputDescription(shown=False)  # the sheet, the board, the PDF
        described.append(found or plain)
    return described


def _names(values: object) -> tuple[str, ...]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        return ()
    return tuple(dict.fromkeys(str(v) for v in values if isinstance(v, str) and v))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _generation(given: Mapping[str, Any], result: Mapping[str, Any]) -> OutputDescription:
    request = given.get("request") or {}
    return OutputDescription(
        prompt=_text(result.get("prompt")),
        negative_prompt=_text(result.get("negative_prompt")),
        preset=_text(result.get("preset")) or _text(given.get("preset")),
        characters=_names(request.get("characters")),
    )


def _batch_render(given: Mapping[str, Any], result: Mapping[str, Any]) -> _Described:
    characters = _names(result.get("characters") or given.get("characters"))
    preset = _text(result.get("preset")) or _text(given.get("preset"))
    found: dict[str, OutputDescription] = {}
    for variant in result.get("variants") or []:
        if isinstance(variant, Mapping) and isinstance(variant.get("output"), str):
            found[variant["output"]] = OutputDescription(
                prompt=_text(variant.get("final_prompt")) or _text(variant.get("prompt")),
                negative_prompt=_text(variant.get("negative_prompt")),
                preset=preset,
                score=_number(variant.get("score")),
                characters=characters,
            )
    return found


def _story(result: Mapping[str, Any]) -> _Described:
    preset = _text(result.get("preset"))
    found: dict[str, OutputDescription] = {}
    for panel in result.get("panels") or []:
        if isinstance(panel, Mapping) and isinstance(panel.get("output"), str):
            found[panel["output"]] = OutputDescription(
                prompt=_text(panel.get("prompt")),
                negative_prompt=_text(panel.get("negative_prompt")),
                preset=preset,
                score=_number(panel.get("score")),
                characters=_names(panel.get("characters")),
                node=f"scene {panel.get('scene')}" if panel.get("scene") else None,
            )
    return found


def _workflow(result: Mapping[str, Any], *, workflow: object) -> _Described:
    """The node that made each output, what it reported (the prompts sent, preset,
    characters), and its score — from the last node in run order that scored it, as the
    canvas's results panel shows it."""
    nodes: Mapping[str, Any] = result.get("nodes") or {}
    order = [n for n in result.get("order") or list(nodes) if isinstance(nodes.get(n), Mapping)]
    made: dict[str, str] = {}
    scored: dict[str, Mapping[str, Any]] = {}
    for node_id in order:
        entry = nodes[node_id]
        outputs = entry.get("outputs") or {}
        images = outputs.get("images") if isinstance(outputs, Mapping) else None
        video = outputs.get("video") if isinstance(outputs, Mapping) else None
        for sha in [*(images if isinstance(images, list) else []), video]:
            if isinstance(sha, str):
                made.setdefault(sha, node_id)
        for score in entry.get("scores") or []:
            if isinstance(score, Mapping) and isinstance(score.get("image"), str):
                scored[score["image"]] = {**scored.get(score["image"], {}), **score}
    found: dict[str, OutputDescription] = {}
    for sha in {*made, *scored}:
        maker = nodes.get(made.get(sha, ""), {})
        score = scored.get(sha, {})
        characters = _names(maker.get("characters"))
        if not characters and isinstance(score.get("character"), str):
            characters = (score["character"],)
        found[sha] = OutputDescription(
            prompt=_text(maker.get("prompt")) or _text(score.get("final_prompt")),
            negative_prompt=_text(maker.get("negative_prompt"))
            or _text(score.get("negative_prompt")),
            preset=_text(maker.get("preset")),
            score=_number(score.get("score")),
            characters=characters,
            node=made.get(sha),
            workflow=workflow if isinstance(workflow, str) else None,
        )
    return found
