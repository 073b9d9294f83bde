"""Batch Render and the consistency gate, end to end on the tiny diffusers model."""

from __future__ import annotations

from pathlib import Path

import pytest

from castbook.errors import FieldError
from castbook.evaluation import Scorer
from castbook.library import CharacterLibrary
from castbook.render.batch import BatchRender, render_batch

pytest.importorskip("diffusers")
from castbook.generation import Preset
from castbook.generation.diffusers_backend import DiffusersBackend
from tests.support.story_setup import library_with_alice_and_bob, tiny_preset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Preset, DiffusersBackend]:
    preset = tiny_preset(tmp_path_factory.mktemp("tiny"))
    return preset, DiffusersBackend(preset)


@pytest.fixture
def characters(tmp_path: Path) -> CharacterLibrary:
    return library_with_alice_and_bob(tmp_path)


def test_three_variants_scored_and_the_best_picked(characters, tiny) -> None:
    preset, backend = tiny
    events = []
    result = render_batch(
        BatchRender(("Alice",), ("at a cafe", "at the beach", "on a train"), "tiny",
                    {"seed": 11}),
        library=characters, preset=preset, backend=backend, scorer=Scorer(faces=False),
        progress=lambda done, total, message: events.append((done, total, message)),
    )  # fmt: skip
    assert [v.prompt for v in result.variants] == ["at a cafe", "at the beach", "on a train"]
    assert result.final_prompts[1] == "long black hair, at the beach"
    assert [v.seed for v in result.variants] == [11, 12, 13]
    assert all(0 <= v.score <= 100 and set(v.scores) == {"Alice"} for v in result.variants)
    assert sum(v.best for v in result.variants) == 1
    assert result.best.score == max(v.score for v in result.variants)
    assert all(v.attempts == 1 and v.passed is None for v in result.variants)
    assert events[0] == (0, 3, "running 0/3") and events[-1] == (3, 3, "running 3/3")


def test_the_gate_rerolls_a_variant_under_the_threshold(characters, tiny) -> None:
    preset, backend = tiny
    # No tiny-model picture reaches 100: every variant is re-rolled up to the limit.
    result = render_batch(
        BatchRender(("Alice", "Bob"), ("at a cafe", "at the beach"), "tiny", {"seed": 5},
                    min_score=100, max_attempts=3),
        library=characters, preset=preset, backend=backend, scorer=Scorer(faces=False),
    )  # fmt: skip
    for variant in result.variants:
        assert variant.attempts == 3 and len(variant.attempt_scores) == 3
        assert variant.score == pytest.approx(max(variant.attempt_scores), abs=0.01)
        assert variant.passed is False
        assert variant.score == pytest.approx(min(variant.scores.values()), abs=0.01)
        assert set(variant.scores) == {"Alice", "Bob"}
    assert result.rerolls == 4
    # Each kept picture is the attempt with the best score; seeds differ between attempts.
    assert len({v.seed for v in result.variants}) == 2


def test_a_reachable_threshold_stops_rerolling(characters, tiny) -> None:
    preset, backend = tiny
    result = render_batch(
        BatchRender(("Alice",), ("x",), "tiny", {"seed": 1}, min_score=0, max_attempts=3),
        library=characters, preset=preset, backend=backend, scorer=Scorer(faces=False),
    )  # fmt: skip
    assert result.variants[0].attempts == 1 and result.variants[0].passed is True


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (BatchRender(("Alice",), (), "tiny"), "prompts"),
        (BatchRender(("Alice",), tuple(f"p{i}" for i in range(9)), "tiny"), "prompts"),
        (BatchRender((), ("x",), "tiny"), "characters"),
        (BatchRender(("Alice",), ("x",), "tiny", max_attempts=0), "max_attempts"),
        (BatchRender(("Alice",), ("x",), "tiny", min_score=120), "min_score"),
    ],
)
def test_bad_batch_renders_are_refused(characters, tiny, spec, field) -> None:
    preset, backend = tiny
    with pytest.raises(FieldError, match=field):
        render_batch(spec, library=characters, preset=preset, backend=backend,
                     scorer=Scorer(faces=False))  # fmt: skip


def test_variants_render_in_one_call_like_single_renders(characters, tiny) -> None:
    import numpy as np

    from castbook.generation import prepare_request, resolve_request

    preset, backend = tiny
    prepared = [
        prepare_request(
            resolve_request({"prompt": p, "characters": ["Alice"], "seed": i}, preset),
            preset,
            library=characters,
        )
        for i, p in enumerate(["at a cafe", "at the beach", "on a train"])
    ]
    together = backend.generate_variants(prepared, lambda _: None)
    alone = [backend.generate(p, lambda _: None) for p in prepared]
    assert [r.metadata["batched_variants"] for r in together] == [3, 3, 3]
    for a, b in zip(together, alone, strict=True):
        difference = np.abs(np.asarray(a.images[0], int) - np.asarray(b.images[0], int))
        assert difference.max() <= 2  # batched float maths, same picture
    # Different sizes cannot share a call: each runs on its own.
    mixed = [prepared[0], prepare_request(
        resolve_request({"prompt": "x", "width": 320, "seed": 9}, preset), preset
    )]  # fmt: skip
    assert all(
        "batched_variants" not in r.metadata
        for r in backend.generate_variants(mixed, lambda _: None)
    )


def test_batch_render_batches_first_attempts(characters, tiny) -> None:
    preset, backend = tiny
    result = render_batch(
        BatchRender(("Alice",), ("a", "b", "c"), "tiny", {"seed": 2}),
        library=characters, preset=preset, backend=backend, scorer=Scorer(faces=False),
    )  # fmt: skip
    assert result.batched and [v.seed for v in result.variants] == [2, 3, 4]
