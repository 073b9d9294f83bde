"""Identity search for the API: features from the evaluation workers, and the lookalike
check the character routes run after references are added.

The server's HTTP process never runs the face model: features are computed by the same
worker processes (and fair per-owner queue) as ``POST /v1/evaluations``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import Response

from castbook.api.services import Services
from castbook.errors import CastbookError

if TYPE_CHECKING:
    from castbook.evaluation.features import ImageFeatures
    from castbook.evaluation.identity_search import Lookalike
    from castbook.library import Character

__all__ = ["PoolFeatures", "check_lookalikes", "warnings_header"]

_MP = 1_000_000

log = logging.getLogger("castbook.api")


class PoolFeatures:
    """A :class:`~castbook.evaluation.identity_search.FeatureSource` on the app's evaluation
    workers, queued under ``owner``. Blocks the calling (thread pool) thread."""

    def __init__(self, services: Services, owner: str) -> None:
        self.services = services
        self.owner = owner

    def key(self) -> str:
        pool = self.services.evaluations()
        if pool.key is None:
            return self.features([])[0]  # the first worker to answer tells it
        return pool.key

    def features(
        self, images: Sequence[tuple[bytes, str]]
    ) -> tuple[str, list[ImageFeatures | CastbookError]]:
        from castbook.evaluation.features import ImageFeatures
        from castbook.evaluation.pool import FeaturesRequest

        request = FeaturesRequest(
            images=tuple(data for data, _ in images),
            names=tuple(name for _, name in images),
            pixel_budget=self.services.settings.eval_pixel_budget * _MP,
        )
        result = self.services.evaluations().submit(self.owner, request).result()
        return result.key, [
            ImageFeatures.from_json(features) if features is not None else CastbookError(error)
            for features, error in zip(result.features, result.errors, strict=True)
        ]


def check_lookalikes(
    services: Services, owner: str, characters: Sequence[Character]
) -> list[Lookalike]:
    """Which of ``characters``' references already match another of the owner's characters
    (nothing when ``CASTBOOK_IDENTIFY_ON_ADD`` is off)."""
    from castbook.evaluation.identity_search import IdentitySearch

    if not services.settings.identify_on_add:
        return []
    try:
        return IdentitySearch.check_added(
            services.library(owner), PoolFeatures(services, owner), characters
        )
    except CastbookError as exc:
        # The characters are saved already: a check that could not run must not read as a
        # failed upload (the next search indexes what was missed).
        log.warning("lookalike check skipped: %s", exc)
        return []


def warnings_header(response: Response, lines: Sequence[str]) -> None:
    """Add ``lines`` to the ``X-Castbook-Warnings`` header (a JSON list of lines)."""
    if not lines:
        return
    existing: list[Any] = json.loads(response.headers.get("X-Castbook-Warnings", "[]"))
    response.headers["X-Castbook-Warnings"] = json.dumps([*existing, *lines])
