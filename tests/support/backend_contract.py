"""The contract every generation backend's tests inherit (like diffusers' tester mixins).

A test class inherits :class:`BackendContract` and provides two fixtures:

``backend``   a ready backend instance (tiny model, or pointed at a local test server)
``prepare``   a callable ``prepare(**request_fields) -> PreparedRequest`` that builds a
              prepared request for this backend (prompt, references, init image …)

and may set the class attributes below to say what the backend promises.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from PIL import Image

from castbook.errors import GenerationCancelled
from castbook.generation.base import Backend, GenerationResult, PreparedRequest, Progress

Prepare = Callable[..., PreparedRequest]


def fingerprint(image: Image.Image) -> bytes:
    return image.convert("RGB").tobytes()


class BackendContract:
    #: same request + same seed gives the same pixels
    deterministic: bool = True
    #: the backend reports at least one progress event per step (else: at least one event)
    reports_steps: bool = True
    #: sizes the contract asks for (small, to stay fast)
    width: int = 256
    height: int = 320

    def test_is_a_backend(self, backend: Backend) -> None:
        assert isinstance(backend, Backend)
        assert isinstance(backend.name, str) and backend.name
        assert backend.max_references >= 0

    def test_returns_the_requested_count_and_size(self, backend: Backend, prepare: Prepare) -> None:
        request = prepare(batch=2, width=self.width, height=self.height, steps=2)
        result = backend.generate(request, lambda _: None)
        assert isinstance(result, GenerationResult)
        assert len(result.images) == 2
        for image in result.images:
            assert image.size == (self.width, self.height)
        assert result.seed == request.seed

    def test_same_seed_same_images(self, backend: Backend, prepare: Prepare) -> None:
        if not self.deterministic:
            pytest.skip("this backend does not promise reproducible seeds")
        first = backend.generate(prepare(seed=1234, steps=2), lambda _: None)
        again = backend.generate(prepare(seed=1234, steps=2), lambda _: None)
        other = backend.generate(prepare(seed=4321, steps=2), lambda _: None)
        assert [fingerprint(i) for i in first.images] == [fingerprint(i) for i in again.images]
        assert [fingerprint(i) for i in first.images] != [fingerprint(i) for i in other.images]

    def test_reports_progress(self, backend: Backend, prepare: Prepare) -> None:
        events: list[Progress] = []
        backend.generate(prepare(steps=3), events.append)
        assert events, "no progress was reported"
        assert all(0 <= e.step <= e.total for e in events)
        assert [e.step for e in events] == sorted(e.step for e in events)
        if self.reports_steps:
            assert events[-1].step == events[-1].total == 3
            assert len(events) >= 3

    def test_cancels_between_steps(self, backend: Backend, prepare: Prepare) -> None:
        seen: list[Progress] = []

        def cancel_after_first(event: Progress) -> None:
            seen.append(event)
            raise GenerationCancelled("cancelled by the test")

        with pytest.raises(GenerationCancelled):
            backend.generate(prepare(steps=4), cancel_after_first)
        assert len(seen) == 1
