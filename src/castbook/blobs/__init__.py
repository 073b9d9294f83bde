"""Content-addressed storage for image bytes: a file's name is the sha256 of its content."""

from castbook.blobs.store import BlobStore, blob_ids_in, is_blob_id

__all__ = ["BlobStore", "blob_ids_in", "is_blob_id"]
