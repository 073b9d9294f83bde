"""Images a client names in a request: an http(s) URL, a ``data:`` URI, or a stored image id.

URLs are fetched with the SSRF-safe fetcher (:mod:`castbook.api.fetch`); every image must
decode, and one larger than 1536×1536 is shrunk to fit, keeping its aspect ratio. A stored
image id (sha256) is accepted only when it belongs to the caller: a reference image of one of
their characters or a result of one of their tasks. File paths are never accepted: they
would read the server's disk.

Resolving does not write anything; :func:`store_images` writes the new blobs once the whole
request has been validated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from castbook.api.fetch import FetchPolicy, fetch_image, redact_url
from castbook.api.services import Services
from castbook.blobs import is_blob_id
from castbook.errors import FieldError, ImageError
from castbook.images import MAX_FILE_BYTES, PreparedImage, prepare_reference

__all__ = ["ResolvedImage", "resolve_image", "store_images"]


@dataclass(frozen=True)
class ResolvedImage:
    sha256: str
    prepared: PreparedImage | None  # None: already stored
    source: str  # what the client sent, shortened, for the task's recorded input

    @property
    def resized(self) -> bool:
        return self.prepared is not None and self.prepared.resized


def resolve_image(services: Services, owner: str, value: object, field: str) -> ResolvedImage:
    if not isinstance(value, str) or not value.strip():
        raise FieldError(field, "must be an http(s) URL, a data: URI or a stored image id")
    text = value.strip()
    lowered = text[:8].lower()
    if lowered.startswith(("http://", "https://", "data:")):
        data = _fetch(services, text, field)
        try:
            prepared = prepare_reference(data, source=field)
        except ImageError as exc:
            raise FieldError(field, str(exc)) from None
        # Signed URLs carry secrets in their query; the task records the URL without it.
        shown = (
            redact_url(text) if not lowered.startswith("data:") else f"data URI ({len(data)} bytes)"
        )
        return ResolvedImage(prepared.sha256, prepared, shown)
    if is_blob_id(text.lower()):
        sha = text.lower()
        if services.owns_image(owner, sha) and services.blobs.exists(sha):
            return ResolvedImage(sha, None, sha)
        raise FieldError(field, f"no stored image {sha[:12]}… among your references and results")
    raise FieldError(
        field,
        "must be an http(s) URL, a data: URI, or the id (sha256) of one of your reference "
        "images or results",
    )


def store_images(services: Services, images: Iterable[ResolvedImage]) -> None:
    for image in images:
        if image.prepared is not None:
            services.blobs.put(image.prepared.data)


def _fetch(services: Services, url: str, field: str) -> bytes:

    config = services.config
    policy = FetchPolicy(
        allow_private=config.allow_private_urls,
        allowed_hosts=config.allowed_hosts,
        max_bytes=MAX_FILE_BYTES,
        timeout=config.fetch_timeout,
    )
    try:
        return fetch_image(url, policy)
    except FieldError as exc:
        if exc.field == field:
            raise
        message = str(exc).removeprefix(f"{exc.field}: ")
        raise FieldError(field, message) from None
    except ImageError as exc:
        raise FieldError(field, str(exc)) from None
