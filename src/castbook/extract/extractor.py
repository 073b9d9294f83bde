"""Choosing the analyser: a configured vision-language model, else the local analyser."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from castbook.errors import NotFoundError
from castbook.extract.schema import Extraction
from castbook.images import PreparedImage, prepare_reference
from castbook.providers import ProviderConfig

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
        self, image: bytes, *, provider: str | None = None, source: str = "image"
    ) -> Extraction:
        """Propose a character's fields from ``image`` (validated like a reference first)."""
        prepared, chosen = self.choose(image, provider=provider, source=source)
        if chosen is None:
            from castbook.extract.local import analyse_locally

            return analyse_locally(prepared.data)
        return self.read(prepared, chosen)

    def choose(
        self, image: bytes, *, provider: str | None = None, source: str = "image"
    ) -> tuple[PreparedImage, ProviderConfig | None]:
        """``image`` checked and prepared as a reference is, and who reads it: a configured
        provider, or None for the local analyser (``castbook.extract.local.analyse_locally``
        of the prepared bytes, which a server runs in its evaluation workers)."""
        # The same checks and the same ≤1536 px picture as a reference image gets.
        prepared = prepare_reference(image, source=source)
        return prepared, self._provider(provider)

    def read(self, prepared: PreparedImage, chosen: ProviderConfig) -> Extraction:
        """The provider's proposal for a picture :meth:`choose` prepared."""
        from castbook.extract.vlm import extract_with_vlm

        return extract_with_vlm(prepared.data, chosen, ring=self.ring)

    def _provider(self, name: str | None) -> ProviderConfig | None:
        if name is None:
            return self.providers[0] if self.providers else None
        if name == "local":
            return None
        for provider in self.providers:
            if provider.name == name:
                return provider
        known = ", ".join(["local", *(p.name for p in self.providers)])
        raise NotFoundError(f"no extraction provider {name!r}; configured: {known}")
