"""Nodes that score pictures against characters: batch render, consistency eval."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from castbook.evaluation import compare
from castbook.generation import Mode
from castbook.generation.outputs import encode_png
from castbook.jobs import JobOutput
from castbook.render.batch import BatchRender, render_batch, variant_parameters
from castbook.render.references import character_reference_features
from castbook.workflow.nodes.base import Node, Port, PortType, Prompt, limits, register
from castbook.workflow.values import CharacterValue

if TYPE_CHECKING:
    from castbook.workflow.context import NodeContext

__all__ = ["BatchRenderNode", "ConsistencyEvalNode"]

_REQUEST_FIELDS = ("width", "height", "steps", "guidance", "seed")


@register
class BatchRenderNode(Node):
    """Prompt variants of the same characters, each scored, the best marked."""

    type: Literal["batch_render"]
    title: ClassVar[str] = "Batch render"
    mode: ClassVar[Mode | None] = Mode.T2I
    scored: ClassVar[bool] = True
    prompts: list[Prompt] = Field(min_length=1, max_length=8)
    preset: str | None = None
    min_score: float | None = Field(default=None, ge=0, le=100)
    max_attempts: int = Field(default=1, ge=1, le=10)
    width: int | None = Field(default=None, **limits("width"))
    height: int | None = Field(default=None, **limits("height"))
    steps: int | None = Field(default=None, **limits("steps"))
    guidance: float | None = Field(default=None, **limits("guidance"))
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    ports: ClassVar[dict[str, Port]] = {
        "characters": Port(PortType.CHARACTER, many=True, names=True),
    }
    outputs: ClassVar[dict[str, PortType]] = {
        "images": PortType.IMAGES,
        "scores": PortType.SCORES,
        "best": PortType.IMAGE,
    }

    def reusable(self) -> bool:
        return self.seed is not None

    def invoke(self, context: NodeContext) -> dict[str, Any]:
        preset = context.preset(self.preset, Mode.T2I)
        spec = BatchRender(
            characters=tuple(context.characters("characters")),
            prompts=tuple(self.prompts),
            preset=preset.id,
            request={k: getattr(self, k) for k in _REQUEST_FIELDS if getattr(self, k) is not None},
            min_score=self.min_score,
            max_attempts=self.max_attempts if self.min_score is not None else 1,
        )
        rendered = render_batch(
            spec,
            library=context.library,
            preset=preset,
            backend=context.backend(preset),
            scorer=context.scorer(),
            progress=lambda done, total, _: context.progress(done, total),
        )
        context.report(preset=preset.id, characters=list(spec.characters))
        shas: list[str] = []
        scores: list[dict[str, Any]] = []
        described = variant_parameters(spec, preset, rendered)
        negatives = rendered.final_negative_prompts or (None,) * len(rendered.variants)
        for variant, parameters, final_prompt, negative in zip(
            rendered.variants, described, rendered.final_prompts, negatives, strict=True
        ):
            image = variant.image
            output = JobOutput("", "image", "image/png", image.width, image.height, variant.seed)
            sha = context.keep(encode_png(image, parameters), output)
            shas.append(sha)
            scores.append(
                {
                    "image": sha,
                    "prompt": variant.prompt,
                    # What the model was given, after the characters' style prompts and traits.
                    "final_prompt": final_prompt,
                    "negative_prompt": negative,
                    "score": round(variant.score, 2),
                    "scores": {k: round(v, 2) for k, v in variant.scores.items()},
                    "attempts": variant.attempts,
                    "best": variant.best,
                }
            )
        return {"images": shas, "scores": scores, "best": shas[rendered.best.index]}


@register
class ConsistencyEvalNode(Node):
    """Scores images (0-100) against a character's reference images, or against one image
    wired as the reference, and picks the best."""

    type: Literal["consistency_eval"]
    version: ClassVar[str] = "1.1"  # 1.1: ``character`` also takes a plain image
    title: ClassVar[str] = "Consistency eval"
    scored: ClassVar[bool] = True
    ports: ClassVar[dict[str, Port]] = {
        "images": Port(PortType.IMAGES),
        # A character (all its reference images) or an image (that one picture).
        "character": Port(PortType.IMAGE),
    }
    outputs: ClassVar[dict[str, PortType]] = {"scores": PortType.SCORES, "best": PortType.IMAGE}

    def reusable(self) -> bool:
        return True

    def invoke(self, context: NodeContext) -> dict[str, Any]:
        scorer = context.scorer()
        given = context.value("character")
        against: dict[str, str]
        if isinstance(given, CharacterValue):
            character = context.character("character")
            references = character_reference_features(context.library, scorer, character)
            against = {"character": character.name}
        else:
            reference = context.image("character")
            references = [scorer.features(context.blobs.get(reference), "the reference image")]
            against = {"reference": reference}
        images = context.images("images")
        scores: list[dict[str, Any]] = []
        for index, sha in enumerate(images):
            context.progress(index, len(images))
            features = scorer.features(context.blobs.get(sha), f"image {index + 1}")
            best = max(compare(r, features, scorer.calibration).score for r in references)
            scores.append({"image": sha, **against, "score": round(best, 2)})
        top = max(range(len(scores)), key=lambda i: (scores[i]["score"], -i)) if scores else None
        for index, entry in enumerate(scores):
            entry["best"] = index == top
        best = scores[top]["image"] if top is not None else None
        return {"scores": scores, "best": best}
