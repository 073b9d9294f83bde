"""Batch Render: N prompt variants of the same characters, each scored, the best picked.

The consistency gate re-renders any variant scoring under ``min_score`` with a new seed, up
to ``max_attempts`` renders in all, and keeps the best attempt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from castbook.errors import FieldError
from castbook.evaluation import ImageFeatures, Scorer, compare
from castbook.generation import (
    Backend,
    GenerationRequest,
    Preset,
    check_references,
    prepare_request,
    resolve_request,
    run_generation,
)
from castbook.generation.base import PreparedRequest, Progress
from castbook.generation.request import LIMITS, range_message
from castbook.library import Character, CharacterLibrary
from castbook.render.references import character_reference_features

__all__ = [
    "DEFAULT_MAX_VARIANTS",
    "BatchRender",
    "BatchRenderResult",
    "GatedRender",
    "VariantResult",
    "render_batch",
    "render_gated",
    "score_characters",
    "variant_parameters",
]

DEFAULT_MAX_VARIANTS = 8
# Seeds of re-rolls are spread far from the first attempts' (which use seed, seed+1 …).
_REROLL_STRIDE = 100_003


@dataclass(frozen=True)
class BatchRender:
    """What the user asked for. ``request`` holds the other GenerationRequest fields."""

    characters: tuple[str, ...]
    prompts: tuple[str, ...]
    preset: str
    request: dict[str, Any] = field(default_factory=dict)
    min_score: float | None = None
    max_attempts: int = 1
    max_variants: int = DEFAULT_MAX_VARIANTS

    def validate(self) -> None:
        if not self.prompts:
            raise FieldError("prompts", "give at least one prompt variant")
        if len(self.prompts) > self.max_variants:
            raise FieldError(
                "prompts", f"{len(self.prompts)} variants; the limit is {self.max_variants}"
            )
        if not self.characters:
            raise FieldError("characters", "a batch render needs at least one character")
        if not 1 <= self.max_attempts <= 10:
            raise FieldError("max_attempts", f"must be between 1 and 10, got {self.max_attempts}")
        if self.min_score is not None and not 0 <= self.min_score <= 100:
            raise FieldError("min_score", f"must be between 0 and 100, got {self.min_score}")

    def variant_requests(self, preset: Preset) -> list[GenerationRequest]:
        """One single-image request per prompt variant: the shared fields resolved against
        the preset once, then each variant's prompt and seed (seed, seed + 1 …) set on it."""
        values = {**self.request, "characters": list(self.characters), "batch": 1}
        base = resolve_request({**values, "prompt": self.prompts[0]}, preset)
        first = base.seed
        if first is not None and first + len(self.prompts) - 1 > LIMITS["seed"][1]:
            last = first + len(self.prompts) - 1
            raise FieldError(
                "seed", f"{range_message('seed', last)} (the last variant's seed: seed + 1 each)"
            )
        return [
            base.model_copy(
                update={"prompt": prompt, "seed": first + index if first is not None else None}
            )
            for index, prompt in enumerate(self.prompts)
        ]


@dataclass(frozen=True)
class VariantResult:
    index: int
    prompt: str
    image: Image.Image
    seed: int
    score: float  # the weakest character's score: the variant is as consistent as that
    scores: dict[str, float]  # per character
    attempts: int
    attempt_scores: tuple[float, ...]
    passed: bool | None  # against min_score; None without a gate
    best: bool = False


@dataclass(frozen=True)
class BatchRenderResult:
    variants: tuple[VariantResult, ...]
    final_prompts: tuple[str, ...]
    request: GenerationRequest  # the first variant's, as resolved against the preset
    batched: bool = False  # the first attempts ran as one backend call
    # Each variant's negative prompt as sent (the characters' merged in); () if not known.
    final_negative_prompts: tuple[str, ...] = ()

    @property
    def best(self) -> VariantResult:
        return next(v for v in self.variants if v.best)

    @property
    def rerolls(self) -> int:
        return sum(v.attempts - 1 for v in self.variants)


ProgressFn = Callable[[int, int, str], None]


def variant_parameters(
    spec: BatchRender, preset: Preset, result: BatchRenderResult
) -> list[dict[str, Any]]:
    """What each variant's PNG records (its A1111 ``parameters`` line and castbook JSON):
    the prompt sent, the user's variant, seed, scores and the settings after the preset."""
    applied = result.request
    return [
        {
            "mode": "t2i",
            "prompt": final_prompt,
            "negative_prompt": applied.negative_prompt,
            "user_prompt": variant.prompt,
            "characters": list(spec.characters),
            "seed": variant.seed,
            "score": round(variant.score, 2),
            "scores": {name: round(score, 2) for name, score in variant.scores.items()},
            "attempts": variant.attempts,
            "preset": preset.id,
            "steps": applied.steps,
            "guidance": applied.guidance,
            "reference_scale": applied.reference_scale,
            "width": variant.image.width,
            "height": variant.image.height,
            "variant": variant.index + 1,
        }
        for variant, final_prompt in zip(result.variants, result.final_prompts, strict=True)
    ]


def render_batch(
    spec: BatchRender,
    *,
    library: CharacterLibrary,
    preset: Preset,
    backend: Backend,
    scorer: Scorer,
    progress: ProgressFn | None = None,
    concurrency: int | None = None,
) -> BatchRenderResult:
    """Render, score and (with a gate) re-roll every variant; mark the most consistent."""
    spec.validate()
    report = progress or (lambda done, total, message: None)
    characters = [library.get(name) for name in spec.characters]
    references = {c.name: character_reference_features(library, scorer, c) for c in characters}
    requests = spec.variant_requests(preset)
    prepared_first = [prepare_request(r, preset, library=library) for r in requests]
    for prepared in prepared_first:
        check_references(backend, prepared)

    total = len(spec.prompts)
    done = 0
    lock = threading.Lock()

    def render_variant(index: int) -> VariantResult:
        nonlocal done
        with lock:
            # Also where a job's cancellation arrives, before any work on this variant.
            report(done, total, f"running {done}/{total}")

        def rerolling(score: float) -> None:
            with lock:
                report(done, total, f"variant {index + 1} scored {score:.0f}; re-rolling")

        gated = render_gated(
            backend,
            prepared_first[index],
            lambda image: score_characters(scorer, references, characters, image),
            min_score=spec.min_score,
            max_attempts=spec.max_attempts,
            on_reroll=rerolling,
            first_image=first_images[index] if first_images is not None else None,
        )
        with lock:
            done += 1
            report(done, total, f"running {done}/{total}")
        return VariantResult(
            index=index,
            prompt=spec.prompts[index],
            image=gated.image,
            seed=gated.seed,
            score=gated.score,
            scores=gated.scores,
            attempts=gated.attempts,
            attempt_scores=gated.attempt_scores,
            passed=gated.passed,
        )

    report(0, total, f"running 0/{total}")
    # A backend that can render different prompts in one call renders every first attempt
    # at once; re-rolls (different seeds, fewer of them) go one by one.
    first_images: list[Image.Image] | None = None
    generate_variants = getattr(backend, "generate_variants", None)
    if generate_variants is not None and total > 1:
        results = generate_variants(prepared_first, _no_step_progress)
        first_images = [result.images[0] for result in results]
    workers = concurrency or _concurrency(backend, total)
    with ThreadPoolExecutor(workers, thread_name_prefix="castbook-variant") as pool:
        variants = list(pool.map(render_variant, range(total)))
    best = max(range(total), key=lambda i: (variants[i].score, -i))
    marked = tuple(
        VariantResult(**{**v.__dict__, "best": i == best}) for i, v in enumerate(variants)
    )
    return BatchRenderResult(
        marked,
        tuple(p.prompt for p in prepared_first),
        request=requests[0],
        batched=first_images is not None,
        final_negative_prompts=tuple(p.negative_prompt for p in prepared_first),
    )


@dataclass(frozen=True)
class GatedRender:
    image: Image.Image
    seed: int
    score: float
    scores: dict[str, float]
    attempts: int
    attempt_scores: tuple[float, ...]
    passed: bool | None


def render_gated(
    backend: Backend,
    prepared: PreparedRequest,
    score: Callable[[Image.Image], dict[str, float]],
    *,
    min_score: float | None,
    max_attempts: int,
    on_reroll: Callable[[float], None] = lambda _: None,
    first_image: Image.Image | None = None,
) -> GatedRender:
    """Render one picture; under ``min_score`` re-render with new seeds, keep the best.

    ``first_image`` is the first attempt when it was already rendered (batched variants).
    """
    attempts: list[tuple[float, dict[str, float], Image.Image, int]] = []
    for attempt in range(max_attempts if min_score is not None else 1):
        seed = (prepared.seed + attempt * _REROLL_STRIDE) % 2**32
        if attempt == 0 and first_image is not None:
            image = first_image
        else:
            this = prepared if attempt == 0 else replace(prepared, seed=seed)
            image = run_generation(backend, this, _no_step_progress).images[0]
        scores = score(image)
        # A picture with no character in it has nothing to be consistent with.
        attempts.append((min(scores.values(), default=100.0), scores, image, seed))
        if min_score is None or attempts[-1][0] >= min_score:
            break
        if attempt + 1 < max_attempts:
            on_reroll(attempts[-1][0])
    best, scores, image, seed = max(attempts, key=lambda a: a[0])
    return GatedRender(
        image=image,
        seed=seed,
        score=best,
        scores=scores,
        attempts=len(attempts),
        attempt_scores=tuple(round(a[0], 2) for a in attempts),
        passed=None if min_score is None else best >= min_score,
    )


def _concurrency(backend: Backend, variants: int) -> int:
    # Remote backends work in parallel on their side; a local pipeline runs one call at a
    # time, so more threads there would only queue on its lock.
    return min(variants, 4) if backend.name in ("openai", "gemini", "comfyui") else 1


def _no_step_progress(_: Progress) -> None:
    return None


def score_characters(
    scorer: Scorer,
    references: dict[str, list[ImageFeatures]],
    characters: Sequence[Character],
    image: Image.Image,
) -> dict[str, float]:
    features = scorer.features(image)  # once, whatever the number of characters
    return {
        character.name: max(
            compare(reference, features, scorer.calibration).score
            for reference in references[character.name]
        )
        for character in characters
    }
