"""Blobs in an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, Backblaze B2), so workers
on other machines need no shared disk.

The client is boto3 (the ``s3`` extra): it honours the standard AWS settings — the
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` variables,
``AWS_PROFILE`` and ``~/.aws/config`` (SSO included), instance and container roles,
``AWS_ENDPOINT_URL`` — and speaks every operation this store needs (docs/deployment.md says
why it was chosen over obstore and s3fs).

The object store keeps the folder's promises:

- **identity**: the key is ``<prefix><first two hex digits>/<sha256>``, the folder's layout;
- **idempotent writes**: :meth:`S3BlobStore.put` first refreshes an existing object (a
  server-side copy onto itself, which moves its ``Last-Modified`` without sending the bytes)
  and uploads only when there is none;
- **nothing half-visible**: a blob goes up in one ``PutObject`` carrying its SHA-256 checksum,
  which S3 applies atomically and refuses when the bytes it received do not match — an upload
  cut off half-way leaves no object. From :data:`MULTIPART_THRESHOLD` on (S3 takes at most
  5 GB in one ``PutObject``) boto3's managed transfer sends it in parts, each with its own
  checksum: the object appears only when ``CompleteMultipartUpload`` succeeds, and a failed
  transfer aborts the upload, so its parts neither show nor stay billed;
- **checked reads**: what :meth:`S3BlobStore.get` downloads is hashed, and bytes that are
  not the blob they are named after raise :class:`~castbook.errors.StorageError` instead of
  being served. A presigned URL (the bucket serves the bytes, not castbook) is handed out only
  for an object whose SHA-256 checksum, kept by the store since its upload, is its name.

Reads go through a :class:`~castbook.blobs.cache.BlobCache` on the machine's disk when one is
given, so a warm worker does not download the same references again.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import os
import tempfile
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from castbook.blobs.base import BlobInfo, Blobs, is_blob_id
from castbook.blobs.cache import BlobCache
from castbook.errors import FieldError, MissingDependencyError, NotFoundError, StorageError

__all__ = ["MULTIPART_THRESHOLD", "S3BlobStore", "parse_s3_url"]

_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
#: From this size on a blob goes up (and is refreshed) in parts. S3 refuses a single
#: ``PutObject`` or ``CopyObject`` over 5 GB; parts also let a large upload retry a part
#: rather than the whole. Below it one request is cheaper than three.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
#: The size of a part (S3's minimum is 5 MiB; boto3 raises it when an object would need more
#: than 10 000 parts, so objects up to S3's 5 TB limit go up).
MULTIPART_CHUNK = 16 * 1024 * 1024
#: Asking for sizes of at least this many blobs lists the bucket (1 000 objects per request)
#: instead of asking for each object (:meth:`S3BlobStore.sizes`).
LIST_FOR_SIZES_FROM = 200


def parse_s3_url(url: str, setting: str = "CASTBOOK_BLOB_URL") -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → (``bucket``, ``some/prefix/``); the prefix may be empty."""
    if not url.startswith("s3://"):
        raise FieldError(setting, f"must be an s3://bucket/prefix URL, got {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise FieldError(setting, f"names no bucket: {url!r} (write s3://bucket/prefix)")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class S3BlobStore(Blobs):
    kind = "s3"

    def __init__(
        self,
        url: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        cache: BlobCache | None = None,
        attempts: int = 3,
        timeout: float = 60.0,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        multipart_chunk: int = MULTIPART_CHUNK,
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.endpoint = endpoint
        self.region = region
        self.cache = cache
        self.multipart_threshold = multipart_threshold
        self.multipart_chunk = multipart_chunk
        self._attempts = attempts
        self._timeout = timeout
        self.client()  # fail now, naming the extra, rather than on the first image

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def client(self) -> Any:
        return _client(self.endpoint, self.region, self._attempts, self._timeout)

    def key(self, blob_id: str) -> str:
        if not is_blob_id(blob_id):
            raise NotFoundError(f"{blob_id!r} is not a blob id (64 lowercase hex digits)")
        return f"{self.prefix}{blob_id[:2]}/{blob_id}"

    # ---- the store ----------------------------------------------------------------------

    def exists(self, blob_id: str) -> bool:
        return self.stat(blob_id) is not None

    def put(self, data: bytes) -> tuple[str, bool]:
        blob_id = hashlib.sha256(data).hexdigest()
        # Already there: fresh again, for collectors.
        if self._refresh(blob_id, "store", size=len(data)):
            return blob_id, False
        if len(data) >= self.multipart_threshold:
            self._upload_in_parts(blob_id, data)
        else:
            # boto3 sends the SHA-256 of exactly these bytes (the ones just named); S3 refuses
            # an upload whose bytes do not match it and keeps it for checked presigned URLs.
            self._call(
                "store",
                blob_id,
                "put_object",
                Bucket=self.bucket,
                Key=self.key(blob_id),
                Body=data,
                ChecksumAlgorithm="SHA256",
            )
        if self.cache is not None and self.cache.max_bytes:
            self.cache.add(blob_id, data)
        return blob_id, True

    def get(self, blob_id: str) -> bytes:
        if self.cache is not None and self.cache.max_bytes:
            data = self.cache.read(blob_id)
            if data is not None:
                return data
            data = self._download(blob_id)
            self.cache.add(blob_id, data)
            return data
        return self._download(blob_id)

    def local_path(self, blob_id: str) -> Path:
        cache = self.cache or BlobCache(Path(tempfile.gettempdir()) / "castbook-blob-cache", 0)
        return cache.hit(blob_id) or cache.add(blob_id, self._download(blob_id))

    def touch(self, blob_id: str) -> bool:
        return self._refresh(blob_id, "refresh")

    def _refresh(self, blob_id: str, doing: str, size: int | None = None) -> bool:
        """Give the object a new ``Last-Modified``: a copy onto itself (allowed when its
        metadata changes) that happens inside the store. An object of ``size`` from the
        multipart threshold on, or one S3 finds too large for one copy, is copied in parts."""
        if size is not None and size >= self.multipart_threshold:
            return self._copy_in_parts(blob_id, doing)
        key = self.key(blob_id)
        try:
            self._call(
                doing,
                blob_id,
                "copy_object",
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                MetadataDirective="REPLACE",
                Metadata=_TOUCHED,
            )
        except _Missing:
            return False
        except StorageError as exc:
            if not _too_large_to_copy(exc.__cause__):
                raise
            return self._copy_in_parts(blob_id, doing)
        return True

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunk,
            max_concurrency=4,
        )

    def _upload_in_parts(self, blob_id: str, data: bytes) -> None:
        """A multipart upload (boto3's managed transfer). S3 shows the object only once every
        part is in and the upload is completed; when a part fails for good, s3transfer aborts
        the upload, which drops the parts already sent."""
        try:
            self.client().upload_fileobj(
                io.BytesIO(data),
                self.bucket,
                self.key(blob_id),
                ExtraArgs={"ChecksumAlgorithm": "SHA256"},
                Config=self._transfer_config(),
            )
        except Exception as exc:
            raise self._storage_error("store", blob_id, exc) from exc

    def _copy_in_parts(self, blob_id: str, doing: str) -> bool:
        key = self.key(blob_id)
        try:
            self.client().copy(
                {"Bucket": self.bucket, "Key": key},
                self.bucket,
                key,
                ExtraArgs={"MetadataDirective": "REPLACE", "Metadata": _TOUCHED},
                Config=self._transfer_config(),
            )
        except Exception as exc:
            if _is_missing(exc):
                return False
            raise self._storage_error(doing, blob_id, exc) from exc
        return True

    def stat(self, blob_id: str) -> BlobInfo | None:
        try:
            head = self._call(
                "look up", blob_id, "head_object", Bucket=self.bucket, Key=self.key(blob_id)
            )
        except _Missing:
            return None
        return BlobInfo(int(head["ContentLength"]), _written(head["LastModified"]))

    def delete(self, blob_id: str) -> bool:
        if self.cache is not None:
            self.cache.discard(blob_id)
        if not self.exists(blob_id):  # S3 deletes a missing key without a word
            return False
        self._call("delete", blob_id, "delete_object", Bucket=self.bucket, Key=self.key(blob_id))
        return True

    def entries(self) -> Iterator[tuple[str, BlobInfo]]:
        paginator = self.client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix)
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    blob_id = _blob_id_of(item["Key"], self.prefix)
                    if blob_id is not None:
                        yield blob_id, BlobInfo(int(item["Size"]), _written(item["LastModified"]))
        except Exception as exc:
            raise self._storage_error("list", None, exc) from exc

    def sizes(self, blob_ids: Collection[str]) -> dict[str, int]:
        """A ``HEAD`` per blob for a few; from :data:`LIST_FOR_SIZES_FROM` on, one listing of
        the bucket (1 000 objects a request) keeping the sizes of those asked for."""
        wanted = {blob_id for blob_id in blob_ids if is_blob_id(blob_id)}
        if len(wanted) < LIST_FOR_SIZES_FROM:
            return super().sizes(wanted)
        return {blob_id: info.st_size for blob_id, info in self.entries() if blob_id in wanted}

    def presigned_url(
        self, blob_id: str, seconds: float, *, media_type: str, filename: str
    ) -> str | None:
        """A URL for the object, only when the SHA-256 checksum the store keeps for it (sent
        with its upload) is its name: the bucket, not castbook, serves those bytes, so an
        object overwritten outside castbook, or uploaded in parts (whose checksum is of its
        parts), gets None and the API streams it through a checked read instead."""
        try:
            head = self._call(
                "look up",
                blob_id,
                "head_object",
                Bucket=self.bucket,
                Key=self.key(blob_id),
                ChecksumMode="ENABLED",
            )
        except _Missing:
            return None
        expected = base64.b64encode(bytes.fromhex(blob_id)).decode()
        if head.get("ChecksumSHA256") != expected:
            return None
        return self.client().generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self.key(blob_id),
                "ResponseContentType": media_type,
                "ResponseContentDisposition": f"inline; filename*=UTF-8''{quote(filename)}",
            },
            ExpiresIn=max(1, int(seconds)),
        )

    # ---- plumbing -----------------------------------------------------------------------

    def _download(self, blob_id: str) -> bytes:
        try:
            response = self._call(
                "read", blob_id, "get_object", Bucket=self.bucket, Key=self.key(blob_id)
            )
            data = response["Body"].read()
        except _Missing:
            raise NotFoundError(
                f"blob {blob_id} is missing from {self.location}; "
                "the store was changed outside castbook"
            ) from None
        except StorageError:
            raise
        except Exception as exc:  # the connection broke while the body streamed
            raise self._storage_error("read", blob_id, exc) from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != blob_id:
            raise StorageError(
                f"blob {blob_id} in {self.location} is corrupt: its {len(data)} bytes hash to "
                f"{actual[:16]}…, not to its name; it is not served (restore it from a backup "
                "or delete it)"
            )
        return data

    def _call(self, doing: str, blob_id: str | None, operation: str, **params: Any) -> Any:
        try:
            return getattr(self.client(), operation)(**params)
        except Exception as exc:
            if _is_missing(exc):
                raise _Missing from None
            raise self._storage_error(doing, blob_id, exc) from exc

    def _storage_error(self, doing: str, blob_id: str | None, exc: Exception) -> StorageError:
        what = f"blob {blob_id}" if blob_id else "the blobs"
        where = f" at {self.endpoint}" if self.endpoint else ""
        reason = _reason(exc)
        return StorageError(f"could not {doing} {what} in {self.location}{where}: {reason}")


_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def _client(endpoint: str | None, region: str | None, attempts: int, timeout: float) -> Any:
    """One boto3 client per process and configuration: making one reads botocore's service
    models (a good part of a second), and clients are thread-safe. A forked child makes its
    own: a client's connections must not be shared across processes."""
    key = (os.getpid(), endpoint, region, attempts, timeout)
    client = _clients.get(key)
    if client is not None:
        return client
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _new_client(endpoint, region, attempts, timeout)
    return client


def _new_client(endpoint: str | None, region: str | None, attempts: int, timeout: float) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise MissingDependencyError("an S3 blob store", "s3", "boto3") from exc
    config = Config(
        retries={"max_attempts": attempts, "mode": "standard"},
        connect_timeout=min(10.0, timeout),
        read_timeout=timeout,
        # Path-style addressing works with every S3-compatible server and with bucket names
        # that hold dots; AWS still accepts it.
        s3={"addressing_style": "path"} if endpoint else {},
        max_pool_connections=32,
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=region, config=config
    )


class _Missing(Exception):
    """The object is not there (HTTP 404)."""


_TOUCHED = {"castbook-touched": "1"}


def _too_large_to_copy(exc: BaseException | None) -> bool:
    """S3's answer to a ``CopyObject`` of a source over 5 GB (``InvalidRequest``: "The
    specified copy source is larger than the maximum allowable size for a copy source")."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    error = response.get("Error", {})
    return error.get("Code") == "InvalidRequest" and "larger than" in str(error.get("Message"))


def _blob_id_of(key: str, prefix: str) -> str | None:
    rest = key[len(prefix) :]
    shard, _, blob_id = rest.partition("/")
    return blob_id if is_blob_id(blob_id) and shard == blob_id[:2] else None


def _written(last_modified: Any) -> float:
    """When an object was last written, rounded *up*: ``Last-Modified`` counts whole
    seconds, and a collector must never take a blob written just after its cut-off for one
    written before it (one kept a second too long is collected by the next pass)."""
    return float(math.floor(last_modified.timestamp()) + 1)


def _is_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code in _MISSING or (status == "404" and code != "NoSuchBucket")


def _reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', '?')}: {error.get('Message', '') or exc}"
    return f"{type(exc).__name__}: {exc}"
