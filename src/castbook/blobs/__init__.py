"""Content-addressed storage for image bytes: a blob's name is the sha256 of its content.

:class:`Blobs` is what every store does; :class:`BlobStore` is the local folder (the
default) and :class:`~castbook.blobs.s3.S3BlobStore` an S3-compatible bucket
(``CASTBOOK_BLOB_URL=s3://bucket/prefix``). :func:`open_blob_store` picks one from the
settings; boto3 is imported only when a bucket is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from castbook.blobs.base import BlobInfo, Blobs, blob_ids_in, is_blob_id
from castbook.blobs.store import BlobStore

if TYPE_CHECKING:
    from castbook.settings import Settings

__all__ = ["BlobInfo", "BlobStore", "Blobs", "blob_ids_in", "is_blob_id", "open_blob_store"]


def open_blob_store(settings: Settings, url: str | None = None) -> Blobs:
    """The store ``settings`` name (or ``url``, e.g. ``castbook blobs migrate --to``): the
    bucket of ``CASTBOOK_BLOB_URL`` with this machine's cache, else ``CASTBOOK_BLOB_DIR``."""
    url = url if url is not None else settings.blob_url
    if not url:
        return BlobStore(settings.blob_dir)
    from castbook.blobs.cache import BlobCache
    from castbook.blobs.s3 import S3BlobStore

    cache = BlobCache(settings.blob_cache_dir, int(settings.blob_cache_mb * 1024 * 1024))
    return S3BlobStore(
        url, endpoint=settings.blob_endpoint, region=settings.blob_region, cache=cache
    )
