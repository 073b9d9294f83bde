"""Running a workflow: a validated graph run node by node, in topological order.

:func:`run_workflow` is what the ``workflow`` job kind (:mod:`castbook.tasks.workflow`)
calls, with the services of its process (:class:`WorkflowServices`: the backends and the
scorer every job kind shares).

Job input: ``{"graph": <graph JSON>, "workflow": saved workflow id or None}``. Values passed
between nodes are ids, never pixels: an image is its blob id (sha256), a character its
library id and name. Every image or video a node makes is kept as a blob and listed as one
of the job's outputs. Progress counts nodes (``node gen: running 2/4`` while a node works);
cancellation arrives between nodes and between a node's steps.

A node that fails ends the run; the task's ``error_data.node`` names it, and what the nodes
before it made is kept with the task (its outputs and a result with their statuses), as it
is when the run is cancelled.

Result: ``{"order": [...], "nodes": {node_id: {"type", "status", "outputs": {...},
"scores"?}}, "outputs": {output_node_id: value}}``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from castbook.blobs import BlobStore
from castbook.db import Database
from castbook.errors import CastbookError, FieldError, GenerationCancelled
from castbook.evaluation.shared import SharedScorer
from castbook.generation import (
    BackendPool,
    Mode,
    apply_preset,
    parse_request,
    prepare_request,
    run_generation,
)
from castbook.generation.outputs import encode_mp4, encode_png, generation_parameters
from castbook.jobs import Job, JobContext, JobOutput, PartialResults, StoppedWithResults
from castbook.library import Character, CharacterLibrary
from castbook.render.batch import BatchRender, render_batch, variant_parameters
from castbook.render.references import character_reference_features
from castbook.settings import Settings
from castbook.workflow.cache import CachedNode, NodeCache, signature
from castbook.workflow.graph import Graph, Link, ParsedNode, parse_graph
from castbook.workflow.nodes import (
    BatchRenderNode,
    CharacterNode,
    ConsistencyEvalNode,
    ImageNode,
    ImageToImageNode,
    ImageToVideoNode,
    OutputNode,
    TextToImageNode,
)

if TYPE_CHECKING:
    from castbook.evaluation import Scorer

__all__ = ["WorkflowServices", "run_workflow"]

_RENDER_FIELDS = ("negative_prompt", "width", "height", "steps", "guidance", "seed")


@dataclass(frozen=True)
class CharacterValue:
    id: str
    name: str
    reference: str | None = None  # the chosen reference image; None: the primary one

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True)
class WorkflowServices:
    """What a run uses of its process: storage, and the backends (loaded models) and the
    scorer that every job kind of the process shares."""

    settings: Settings
    database: Database
    blobs: BlobStore
    backends: BackendPool
    scorer: SharedScorer


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
    return run.files, result


class _Run:
    """One run of a graph: the node outputs so far, the job's files, its progress."""

    def __init__(self, jobs: WorkflowServices, job: Job, context: JobContext, graph: Graph) -> None:
        self.jobs = jobs
        self.job = job
        self.context = context
        self.graph = graph
        self.library = CharacterLibrary(jobs.database, jobs.blobs, owner=job.owner)
        self.values: dict[str, dict[str, Any]] = {}
        self.files: list[JobOutput] = []
        self.done = 0
        self._presets: Any = None  # the preset catalogue, read once per run
        reuse = job.input.get("cache", True)
        self.cache = NodeCache(context.store, jobs.blobs, job.owner) if reuse else None

    # ---- values between nodes -------------------------------------------------------------

    def value(self, link: Link) -> Any:
        return self.values[link.node][link.output]

    def image(self, link: Link) -> str:
        value = self.value(link)
        if isinstance(value, CharacterValue):  # an image port takes a character's reference
            return value.reference or _reference_of(self.library.get_by_id(value.id))
        return str(value)

    def images(self, link: Link) -> list[str]:
        value = self.value(link)
        return list(value) if isinstance(value, list) else [self.image(link)]

    def characters(self, node: ParsedNode, name: str) -> list[str]:
        """Character names from a port's links and names, in order, without repeats."""
        given = node.links.get(name, [])
        items = given if isinstance(given, list) else [given]
        names: list[str] = []
        for item in items:
            if isinstance(item, Link):
                names.append(self.value(item).name)
            else:
                names.append(self.library.get(item).name)
        return list(dict.fromkeys(names))

    def keep(self, data: bytes, output: JobOutput) -> str:
        sha = self.jobs.blobs.put(data)[0]
        self.files.append(JobOutput(sha, *_fields(output)))
        return sha

    def preset(self, preset_id: str | None, mode: Mode) -> Any:
        if self._presets is None:
            from castbook.generation import load_presets

            self._presets = load_presets(self.jobs.settings.home)
        return self._presets.get(preset_id) if preset_id else self._presets.default_for(mode)

    def progress(self, node_id: str, step: int, total: int) -> None:
        message = f"node {node_id}: running {step}/{total}"
        self.context.progress(self.done, len(self.graph.order), message)

    # ---- the nodes --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        results: dict[str, dict[str, Any]] = {}
        for node_id in self.graph.order:
            parsed = self.graph.nodes[node_id]
            try:
                self.progress(node_id, 0, 1)  # also where a cancel arrives between nodes
                key = self.signature(parsed)
                hit = self.cache.get(key) if key and self.cache else None
                outputs, extra = self.reuse(hit) if hit else self.run_node(parsed)
            except CastbookError as exc:
                stopped = "cancelled" if isinstance(exc, GenerationCancelled) else "failed"
                results[node_id] = {"type": parsed.node.type, "status": stopped, "outputs": {}}
                if stopped == "failed":
                    results[node_id]["error"] = str(exc)
                # What the finished nodes made stays with the task.
                partial = PartialResults(list(self.files), self.summary(results))
                raise StoppedWithResults(exc, partial, {"node": node_id}) from exc
            self.values[node_id] = outputs
            results[node_id] = {
                "type": parsed.node.type,
                "status": "succeeded",
                "outputs": {k: _json(v) for k, v in outputs.items()},
                **extra,
            }
            if key:
                results[node_id]["signature"] = key
            if hit:
                results[node_id]["cached_from"] = hit.task
            self.done += 1
        return self.summary(results)

    def summary(self, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        collected = {
            nid: results[nid]["outputs"]["value"]
            for nid in self.graph.order
            if nid in results
            and results[nid]["status"] == "succeeded"
            and isinstance(self.graph.nodes[nid].node, OutputNode)
        }
        return {"order": self.graph.order, "nodes": results, "outputs": collected}

    # ---- re-using earlier outputs ----------------------------------------------------------

    def signature(self, parsed: ParsedNode) -> str | None:
        """What the node's outputs depend on, hashed; None when a re-run should compute
        them again (no seed: every run is meant to differ) or computing is cheap."""
        node = parsed.node
        seeded = isinstance(
            node, TextToImageNode | ImageToImageNode | ImageToVideoNode | BatchRenderNode
        ) and (node.seed is not None)
        if not seeded and not isinstance(node, ConsistencyEvalNode):
            return None
        parts: dict[str, Any] = {
            "type": node.type,
            "version": type(node).version,
            "literals": node.model_dump(mode="json"),
            "inputs": {name: self.fingerprint(value) for name, value in parsed.links.items()},
        }
        mode = type(node).mode
        if mode is not None:
            preset = self.preset(getattr(node, "preset", None), mode)
            parts["preset"] = {
                k: v for k, v in asdict(preset).items() if k not in ("source", "description")
            }
        if isinstance(node, ConsistencyEvalNode | BatchRenderNode):
            parts["scorer"] = self.jobs.scorer.get().key
        return signature(parts)

    def fingerprint(self, value: Link | list[Link | str]) -> list[Any]:
        """A port's values as the signature sees them: ids, and characters by their id,
        last change and reference images (a change to any of them is a new signature)."""
        prints: list[Any] = []
        for item in value if isinstance(value, list) else [value]:
            given = self.value(item) if isinstance(item, Link) else self.library.get(item)
            if isinstance(given, CharacterValue):
                prints.append(
                    {**_character_print(self.library.get_by_id(given.id)), "use": given.reference}
                )
            elif isinstance(given, Character):
                prints.append(_character_print(given))
            else:
                prints.append(given)
        return prints

    def reuse(self, hit: CachedNode) -> tuple[dict[str, Any], dict[str, Any]]:
        """A cached node's outputs; its files become this task's too (listed once)."""
        listed = {output.sha256 for output in self.files}
        self.files.extend(f for f in hit.files if f.sha256 not in listed)
        extra = {"scores": hit.result["scores"]} if "scores" in hit.result else {}
        return dict(hit.result["outputs"]), extra

    def run_node(self, parsed: ParsedNode) -> tuple[dict[str, Any], dict[str, Any]]:
        node = parsed.node
        if isinstance(node, CharacterNode):
            character = self.library.find(node.character)
            if node.reference is not None and all(
                image.sha256 != node.reference for image in character.images
            ):
                raise FieldError(
                    f"{parsed.id}.reference",
                    f"{character.name} has no reference image {node.reference[:12]}",
                )
            value = CharacterValue(character.id, character.name, node.reference)
            image = node.reference or (_reference_of(character) if character.images else None)
            return {"character": value, "image": image}, {}
        if isinstance(node, ImageNode):
            if not self.jobs.blobs.exists(node.image):
                raise FieldError(f"{parsed.id}.image", f"no stored image {node.image[:12]}")
            return {"image": node.image}, {}
        if isinstance(node, OutputNode):
            link = parsed.links["value"]
            assert isinstance(link, Link)
            return {"value": self.value(link)}, {}
        if isinstance(node, TextToImageNode | ImageToImageNode | ImageToVideoNode):
            return self.generate(parsed), {}
        if isinstance(node, BatchRenderNode):
            return self.batch_render(parsed)
        if isinstance(node, ConsistencyEvalNode):
            return self.evaluate(parsed)
        raise FieldError(parsed.id, f"no runner for node type {node.type!r}")  # pragma: no cover

    def generate(self, parsed: ParsedNode) -> dict[str, Any]:
        node = parsed.node
        assert isinstance(node, TextToImageNode | ImageToImageNode | ImageToVideoNode)
        values: dict[str, Any] = {
            k: getattr(node, k) for k in _RENDER_FIELDS if getattr(node, k) is not None
        }
        values["prompt"] = node.prompt
        if isinstance(node, TextToImageNode):
            values.update(mode=Mode.T2I, batch=node.batch)
            if node.reference_scale is not None:
                values["reference_scale"] = node.reference_scale
        elif isinstance(node, ImageToImageNode):
            values.update(mode=Mode.I2I, batch=node.batch, strength=node.strength)
        else:
            values["mode"] = Mode.I2V
            values.update({k: getattr(node, k) for k in ("num_frames", "fps") if getattr(node, k)})
        if "characters" in node.ports:
            values["characters"] = self.characters(parsed, "characters")
        image_link = parsed.links.get("image")
        if isinstance(image_link, Link):
            values["init_image"] = self.image(image_link)
        preset = self.preset(node.preset, values["mode"])
        try:
            request = apply_preset(parse_request(values), preset)
        except FieldError as exc:
            raise FieldError(f"{parsed.id}.{exc.field}", str(exc)) from None
        prepared = prepare_request(request, preset, library=self.library)
        self.progress(parsed.id, 0, request.steps)
        result = run_generation(
            self.jobs.backends.get(preset),
            prepared,
            lambda event: self.progress(parsed.id, event.step, event.total),
        )
        if request.mode == Mode.I2V:
            video = result.videos[0]
            width, height = video.frames[0].size
            sha = self.keep(
                encode_mp4(video), JobOutput("", "video", "video/mp4", width, height, result.seed)
            )
            return {"video": sha}
        seeds = result.metadata.get("seeds") or [None] * len(result.images)
        shas = []
        for index, image in enumerate(result.images):
            data = encode_png(image, generation_parameters(prepared, result, index))
            output = JobOutput("", "image", "image/png", image.width, image.height, seeds[index])
            shas.append(self.keep(data, output))
        return {"images": shas}

    def batch_render(self, parsed: ParsedNode) -> tuple[dict[str, Any], dict[str, Any]]:
        node = parsed.node
        assert isinstance(node, BatchRenderNode)
        preset = self.preset(node.preset, Mode.T2I)
        fields = ("width", "height", "steps", "guidance", "seed")
        spec = BatchRender(
            characters=tuple(self.characters(parsed, "characters")),
            prompts=tuple(node.prompts),
            preset=preset.id,
            request={k: getattr(node, k) for k in fields if getattr(node, k) is not None},
            min_score=node.min_score,
            max_attempts=node.max_attempts if node.min_score is not None else 1,
        )
        rendered = render_batch(
            spec,
            library=self.library,
            preset=preset,
            backend=self.jobs.backends.get(preset),
            scorer=self.jobs.scorer.get(),
            progress=lambda done, total, _: self.progress(parsed.id, done, total),
        )
        shas: list[str] = []
        scores: list[dict[str, Any]] = []
        described = variant_parameters(spec, preset, rendered)
        for variant, parameters in zip(rendered.variants, described, strict=True):
            data = encode_png(variant.image, parameters)
            output = JobOutput(
                "", "image", "image/png", variant.image.width, variant.image.height, variant.seed
            )
            sha = self.keep(data, output)
            shas.append(sha)
            scores.append(
                {
                    "image": sha,
                    "prompt": variant.prompt,
                    "score": round(variant.score, 2),
                    "scores": {k: round(v, 2) for k, v in variant.scores.items()},
                    "attempts": variant.attempts,
                    "best": variant.best,
                }
            )
        best = shas[rendered.best.index]
        return {"images": shas, "scores": scores, "best": best}, {"scores": scores}

    def evaluate(self, parsed: ParsedNode) -> tuple[dict[str, Any], dict[str, Any]]:
        from castbook.evaluation import compare

        images_link, character_link = parsed.links["images"], parsed.links["character"]
        assert isinstance(images_link, Link) and isinstance(character_link, Link)
        character = self.library.get_by_id(self.value(character_link).id)
        scorer: Scorer = self.jobs.scorer.get()
        references = character_reference_features(self.library, scorer, character)
        images = self.images(images_link)
        scores: list[dict[str, Any]] = []
        for index, sha in enumerate(images):
            self.progress(parsed.id, index, len(images))
            features = scorer.features(self.jobs.blobs.get(sha), f"image {index + 1}")
            best = max(compare(r, features, scorer.calibration).score for r in references)
            scores.append({"image": sha, "character": character.name, "score": round(best, 2)})
        top = max(range(len(scores)), key=lambda i: (scores[i]["score"], -i)) if scores else None
        for index, entry in enumerate(scores):
            entry["best"] = index == top
        best = scores[top]["image"] if top is not None else None
        return {"scores": scores, "best": best}, {"scores": scores}


def _character_print(character: Character) -> dict[str, Any]:
    return {
        "id": character.id,
        "updated_at": character.updated_at.isoformat(),
        "images": [image.sha256 for image in character.images],
    }


def _reference_of(character: Character) -> str:
    primary = character.primary_image
    if primary is None:
        raise FieldError("image", f"{character.name} has no reference image; upload one first")
    return primary.sha256


def _fields(output: JobOutput) -> tuple[Any, ...]:
    return (output.kind, output.media_type, output.width, output.height, output.seed)


def _json(value: Any) -> Any:
    if isinstance(value, CharacterValue):
        return value.to_json()
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value
