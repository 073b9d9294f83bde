"""Choosing the analyser: a configured vision-language model, else the local analyser."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from castbook.errors import NotFoundError
from castbook.extract.schema import Extraction
from castbook.images import prepare_reference

__all__ = ["Extractor"]


class Extractor:
    """Holds the providers and their key ring (rate-limit cool-downs live as long as it)."""

    def __init__(self, home: Path | None, environ: Mapping[str, str] | None = None) -> None:
        from castbook.providers import KeyRing, load_providers

        # Only OpenAI-compatible providers speak chat completions; a gemini or comfyui one
        # in the same file is for the generation backends.
        self.providers = [p for p in load_providers(home, environ) if p.kind == "openai"]
        self.ring = KeyRing([key for provider in self.providers for key in provider.keys])

    def extract(
        self,
        image: bytes,
        *,
        provider: str | None = None,
        source: str = "image",
        analyse: Callable[[bytes], Extraction] | None = None,
    ) -> Extraction:
        """Propose a character's fields from ``image`` (validated like a reference first).
        ``analyse`` runs the local analyser on the prepared picture (default: here, in this
        process; the HTTP server passes one that runs it in its evaluation workers)."""
        # The same checks and the same ≤1536 px picture as a reference image gets.
        prepared = prepare_reference(image, source=source)
        chosen = self._provider(provider)
        if chosen is None:
            if analyse is not None:
                return analyse(prepared.data)
            from castbook.extract.local import analyse_locally

            return analyse_locally(prepared.data)
        from castbook.extract.vlm import extract_with_vlm

        return extract_with_vlm(prepared.data, chosen, ring=self.ring)

    def _provider(self, name: str | None):
        if name is None:
            return self.providers[0] if self.providers else None
        if name == "local":
            return None
        for provider in self.providers:
            if provider.name == name:
                return provider
        known = ", ".join(["local", *(p.name for p in self.providers)])
        raise NotFoundError(f"no extraction provider {name!r}; configured: {known}")
