"""The blob store contract, run against the local folder and a real S3-protocol server
(moto, on 127.0.0.1), and the object store's faults: a corrupt object, a connection cut
in the middle of an upload, a server that is not there."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from castbook.blobs import Blobs, BlobStore
from castbook.blobs.cache import BlobCache
from castbook.errors import NotFoundError, StorageError
from tests.support.s3_server import CuttingProxy, S3Server


def _s3_store(server: S3Server, tmp_path: Path, cache_bytes: int = 64 << 20, **options):
    from castbook.blobs.s3 import S3BlobStore

    cache = BlobCache(tmp_path / "cache", cache_bytes) if cache_bytes else None
    return S3BlobStore(server.new_bucket(), endpoint=server.endpoint, cache=cache, **options)


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Blobs]:
    if request.param == "folder":
        yield BlobStore(tmp_path / "blobs")
    else:
        yield _s3_store(request.getfixturevalue("s3_server"), tmp_path)


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# ---- the contract ------------------------------------------------------------------------


def test_put_get_list_delete(store: Blobs) -> None:
    first, created = store.put(b"first image")
    second, _ = store.put(b"second image")
    assert created and first == hashlib.sha256(b"first image").hexdigest()
    assert store.get(first) == b"first image"
    assert store.exists(first) and store.exists(second)
    assert list(store) == sorted([first, second])
    assert dict(store.entries())[second].st_size == len(b"second image")
    assert store.usage() == (2, len(b"first image") + len(b"second image"))
    assert store.local_path(first).read_bytes() == b"first image"
    assert store.delete(first) and not store.delete(first)
    assert not store.exists(first) and store.stat(first) is None
    with pytest.raises(NotFoundError, match="missing"):
        store.get(first)
    with pytest.raises(NotFoundError, match="not a blob id"):
        store.get("../etc/passwd")
    assert list(store) == [second]


def test_writing_the_same_bytes_again_stores_them_once(store: Blobs) -> None:
    blob_id, created = store.put(b"same bytes")
    again, created_again = store.put(b"same bytes")
    assert (again, created, created_again) == (blob_id, True, False)
    assert store.usage() == (1, len(b"same bytes"))
    assert store.get(blob_id) == b"same bytes"


def test_touch_and_put_refresh_a_blob_for_collectors(store: Blobs) -> None:
    blob_id, _ = store.put(b"referenced soon")
    written = store.stat(blob_id).st_mtime
    assert not store.touch("0" * 64)
    # S3 keeps whole seconds: wait until the clock has moved past the blob's second.
    _wait_for(lambda: time.time() > written + 1.05)
    assert store.touch(blob_id)
    touched = store.stat(blob_id).st_mtime
    assert touched > written
    assert store.delete_if_older(blob_id, cutoff=touched - 0.5) is None  # newer: kept
    assert store.delete_if_older(blob_id, cutoff=time.time() + 5) == len(b"referenced soon")
    assert not store.exists(blob_id)


def test_a_blob_written_after_a_cut_off_is_never_taken_for_older(store: Blobs) -> None:
    """A collector's cut-off taken just before a write must keep that blob, even though S3's
    Last-Modified only counts whole seconds."""
    for n in range(5):
        cutoff = time.time()
        blob_id, _ = store.put(f"fresh {n}".encode())
        assert store.delete_if_older(blob_id, cutoff) is None
        assert store.stat(blob_id).st_mtime >= cutoff


# ---- the object store's faults -----------------------------------------------------------


def test_a_corrupt_object_is_detected_and_not_served(s3_server: S3Server, tmp_path: Path) -> None:
    store = _s3_store(s3_server, tmp_path)
    blob_id, _ = store.put(b"the real bytes")
    store.cache.discard(blob_id)  # as on another machine: nothing cached yet
    # Something outside castbook overwrites the object with other bytes.
    s3_server.client().put_object(Bucket=store.bucket, Key=store.key(blob_id), Body=b"rotten")
    with pytest.raises(StorageError, match=rf"blob {blob_id} in s3://.* is corrupt.*not served"):
        store.get(blob_id)
    with pytest.raises(StorageError, match="corrupt"):
        store.local_path(blob_id)
    assert store.cache.read(blob_id) is None  # never cached


def test_an_upload_cut_off_half_way_leaves_nothing(s3_server: S3Server, tmp_path: Path) -> None:
    from castbook.blobs.s3 import S3BlobStore

    direct = _s3_store(s3_server, tmp_path, cache_bytes=0)
    target = urlparse(s3_server.endpoint)
    proxy = CuttingProxy((target.hostname, target.port), allow=40_000)
    try:
        cut = S3BlobStore(direct.location, endpoint=proxy.endpoint, attempts=2, timeout=10)
        data = os.urandom(300_000)
        blob_id = hashlib.sha256(data).hexdigest()
        with pytest.raises(StorageError, match=rf"could not store blob {blob_id} in s3://"):
            cut.put(data)
        assert proxy.cut >= 1
    finally:
        proxy.close()
    assert not direct.exists(blob_id)
    assert list(direct) == []
    # The same bytes go up whole once the store is reachable again.
    assert direct.put(data) == (blob_id, True)
    assert direct.get(blob_id) == data


def test_an_unreachable_store_is_a_clear_error(tmp_path: Path, s3_server: S3Server) -> None:
    import socket

    from castbook.blobs.s3 import S3BlobStore

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = S3BlobStore(
        "s3://nowhere/blobs", endpoint=f"http://127.0.0.1:{port}", attempts=1, timeout=5
    )
    with pytest.raises(StorageError, match=rf"could not store blob .* at http://127.0.0.1:{port}"):
        store.put(b"anything")
    with pytest.raises(StorageError, match="could not list the blobs in s3://nowhere/blobs/"):
        list(store.entries())


def test_a_bad_blob_url_names_the_setting() -> None:
    from castbook.errors import FieldError
    from castbook.settings import Settings

    with pytest.raises(FieldError, match="CASTBOOK_BLOB_URL: must be an s3://bucket/prefix"):
        Settings.from_env({"CASTBOOK_BLOB_URL": "/var/blobs"})
    with pytest.raises(FieldError, match="CASTBOOK_BLOB_PRESIGN: must be at most 604800"):
        Settings.from_env({"CASTBOOK_BLOB_PRESIGN": "999999"})
    settings = Settings.from_env({"CASTBOOK_HOME": "/h", "CASTBOOK_BLOB_URL": "s3://b/p"})
    assert settings.blob_cache_dir == Path("/h/blob-cache")


# ---- the worker cache --------------------------------------------------------------------


def test_the_cache_serves_a_warm_read_without_the_network(
    s3_server: S3Server, tmp_path: Path
) -> None:
    store = _s3_store(s3_server, tmp_path)
    blob_id, _ = store.put(b"reference image")
    store.cache.discard(blob_id)
    assert store.get(blob_id) == b"reference image"  # fetched, checked, cached
    assert store.cache.read(blob_id) == b"reference image"
    # With the object gone from the bucket, the warm cache still answers.
    s3_server.client().delete_object(Bucket=store.bucket, Key=store.key(blob_id))
    assert store.get(blob_id) == b"reference image"


def test_the_cache_evicts_the_least_recently_used(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache", max_bytes=3000, protect_seconds=0)
    blobs = {hashlib.sha256(bytes([n]) * 1000).hexdigest(): bytes([n]) * 1000 for n in range(3)}
    for age, (blob_id, data) in enumerate(blobs.items()):
        path = cache.add(blob_id, data)
        os.utime(path, (time.time() - 1000 + age, time.time() - 1000 + age))
    first, second, third = blobs
    assert cache.hit(first)  # used now: the most recent
    extra = bytes([9]) * 1000
    cache.add(hashlib.sha256(extra).hexdigest(), extra)
    assert cache.read(second) is None  # the least recently used went
    assert cache.read(first) == blobs[first] and cache.read(third) == blobs[third]
    assert cache.size() <= 3000


def _reader(store_url: str, endpoint: str, cache_dir: str, ids: list[str], rounds: int) -> None:
    from castbook.blobs.s3 import S3BlobStore

    cache = BlobCache(cache_dir, max_bytes=5 * 20_000, protect_seconds=0)
    store = S3BlobStore(store_url, endpoint=endpoint, cache=cache)
    for n in range(rounds):
        for blob_id in ids[n % 3 :] + ids[: n % 3]:
            data = store.get(blob_id)
            if hashlib.sha256(data).hexdigest() != blob_id:
                raise SystemExit(f"wrong bytes for {blob_id}")


def test_the_cache_is_safe_under_concurrent_processes(s3_server: S3Server, tmp_path: Path) -> None:
    """Four processes share one small cache folder: each fetches, adds and evicts while the
    others read; every read gets the right bytes, and the folder ends within its size."""
    store = _s3_store(s3_server, tmp_path, cache_bytes=0)
    ids = [store.put(os.urandom(20_000))[0] for _ in range(12)]
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(
            target=_reader,
            args=(store.location, s3_server.endpoint, str(tmp_path / "shared"), ids, 4),
        )
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    cache = BlobCache(tmp_path / "shared", max_bytes=5 * 20_000, protect_seconds=0)
    assert cache.evict() <= 5 * 20_000
    assert not [p for p in (tmp_path / "shared").rglob(".tmp-*")]


def test_a_job_whose_upload_is_cut_off_fails_with_the_reason(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """The store going away in the middle of a job's upload fails the job, naming the store;
    the bucket holds no part of the output."""
    from castbook.blobs.s3 import S3BlobStore
    from castbook.db import Database
    from castbook.jobs import JobOutput, JobStatus, JobStore, run_job

    direct = _s3_store(s3_server, tmp_path, cache_bytes=0)
    target = urlparse(s3_server.endpoint)
    proxy = CuttingProxy((target.hostname, target.port), allow=40_000)
    cut = S3BlobStore(direct.location, endpoint=proxy.endpoint, attempts=2, timeout=10)
    store = JobStore(Database(f"sqlite:///{tmp_path / 'jobs.db'}"), cut)

    def render(job, context):
        sha, _ = cut.put(os.urandom(300_000))
        return [JobOutput(sha, "image", "image/png", 8, 8, 1)], {}

    try:
        job = run_job(store, {"demo": render}, store.create(kind="demo", input={}).id, "w")
    finally:
        proxy.close()
    assert job.status is JobStatus.FAILED
    assert "could not store blob" in job.error and direct.location in job.error
    assert list(direct) == []


# ---- large objects: multipart uploads ----------------------------------------------------

MIB = 1024 * 1024


class _Counting:
    """Count the S3 operations a store's client makes (botocore's event hooks; the client
    is shared per process, so the hook is removed on leaving)."""

    def __init__(self, store, *operations: str, on=None) -> None:
        self.client = store.client()
        self.operations = operations
        self.on = on
        self.counts = dict.fromkeys(operations, 0)
        self._id = f"castbook-test-{id(self)}"

    def _seen(self, event_name: str, **_: object) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        self.counts[operation] += 1
        if self.on is not None:
            self.on(operation)

    def __enter__(self) -> _Counting:
        for operation in self.operations:
            self.client.meta.events.register(
                f"after-call.s3.{operation}", self._seen, unique_id=f"{self._id}-{operation}"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for operation in self.operations:
            self.client.meta.events.unregister(
                f"after-call.s3.{operation}", unique_id=f"{self._id}-{operation}"
            )


def test_a_large_blob_goes_up_in_parts_and_shows_only_when_complete(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """Above the multipart threshold (tiny here: S3's 5 MiB minimum part) a blob goes up in
    parts; while parts arrive nothing is under its key, and it appears whole at the end."""
    store = _s3_store(
        s3_server, tmp_path, cache_bytes=0, multipart_threshold=6 * MIB, multipart_chunk=5 * MIB
    )
    data = os.urandom(11 * MIB)  # three parts
    blob_id = hashlib.sha256(data).hexdigest()
    look = s3_server.client()  # the test's own client: it watches from outside
    seen: list[tuple[bool, int]] = []

    def after_part(operation: str) -> None:
        visible = look.list_objects_v2(Bucket=store.bucket).get("KeyCount", 0) > 0
        uploads = look.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
        seen.append((visible, len(uploads)))

    with _Counting(store, "UploadPart", "PutObject", on=after_part) as calls:
        assert store.put(data) == (blob_id, True)
    assert calls.counts == {"UploadPart": 3, "PutObject": 0}
    assert seen and all(not visible and uploads == 1 for visible, uploads in seen), seen
    assert store.get(blob_id) == data  # whole, and its hash checked on the way back
    assert look.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []

    # Storing it again refreshes it for collectors with a copy in parts (S3 refuses one
    # CopyObject over 5 GB), without sending the bytes.
    written = store.stat(blob_id).st_mtime
    _wait_for(lambda: time.time() > written + 1.05)
    with _Counting(store, "UploadPart", "UploadPartCopy", "CopyObject") as calls:
        assert store.put(data) == (blob_id, False)
    assert calls.counts == {"UploadPart": 0, "UploadPartCopy": 3, "CopyObject": 0}
    assert store.stat(blob_id).st_mtime > written
    assert store.get(blob_id) == data


def test_a_multipart_upload_cut_off_leaves_nothing_and_is_aborted(
    s3_server: S3Server, tmp_path: Path
) -> None:
    from castbook.blobs.s3 import S3BlobStore

    direct = _s3_store(s3_server, tmp_path, cache_bytes=0)
    target = urlparse(s3_server.endpoint)
    proxy = CuttingProxy((target.hostname, target.port), allow=1 * MIB)  # parts are 5 MiB
    data = os.urandom(11 * MIB)
    blob_id = hashlib.sha256(data).hexdigest()
    try:
        cut = S3BlobStore(
            direct.location,
            endpoint=proxy.endpoint,
            attempts=2,
            timeout=10,
            multipart_threshold=6 * MIB,
            multipart_chunk=5 * MIB,
        )
        calls = _Counting(cut, "CreateMultipartUpload", "AbortMultipartUpload")
        failed = pytest.raises(StorageError, match=rf"could not store blob {blob_id} in s3://")
        with calls, failed:
            cut.put(data)
        assert proxy.cut >= 1
        assert calls.counts == {"CreateMultipartUpload": 1, "AbortMultipartUpload": 1}
    finally:
        proxy.close()
    look = s3_server.client()
    assert not direct.exists(blob_id) and list(direct) == []
    assert look.list_multipart_uploads(Bucket=direct.bucket).get("Uploads", []) == []


# ---- storage accounting ------------------------------------------------------------------


def test_accounting_asks_the_store_once_per_blob_ever(
    store: Blobs, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sizes are learned once and kept in the database: a second count asks the store
    nothing; many new blobs are sized from one listing, not a HEAD each."""
    from castbook.blobs import s3
    from castbook.db import Database
    from castbook.jobs import sizes
    from castbook.jobs.sizes import blob_sizes, total_bytes

    database = Database(database_url)
    payloads = [f"image {n}".encode() * (n + 1) for n in range(5)]
    ids = [store.put(data)[0] for data in payloads]
    asked: list[list[str]] = []
    real_sizes = store.sizes

    def counted(blob_ids):
        asked.append(sorted(blob_ids))
        return real_sizes(blob_ids)

    monkeypatch.setattr(store, "sizes", counted)
    expected = sum(map(len, payloads))
    assert total_bytes(database, store, [*ids[:2], "not-a-blob", "0" * 64]) == len(
        payloads[0]
    ) + len(payloads[1])
    assert total_bytes(database, store, ids) == expected
    assert total_bytes(database, store, ids) == expected
    assert asked[:2] == [sorted([*ids[:2], "0" * 64]), sorted(ids[2:])]
    assert blob_sizes(database, store, ids[:1]) == {ids[0]: len(payloads[0])}
    assert len(asked) == 2  # the later counts asked nothing
    # Another process recorded some of a batch first: the rest is still recorded.
    late, _ = store.put(b"counted by two processes at once")
    sizes._record(database, {ids[0]: len(payloads[0]), late: 32})
    assert blob_sizes(database, store, [late]) == {late: 32} and len(asked) == 2
    database.dispose()
    if store.kind != "s3":
        return
    # On the bucket, many blobs met for the first time are sized from one listing.
    monkeypatch.setattr(s3, "LIST_FOR_SIZES_FROM", 3)
    with _Counting(store, "HeadObject", "ListObjectsV2") as calls:
        assert real_sizes(ids) == dict(zip(ids, map(len, payloads), strict=True))
    assert calls.counts == {"HeadObject": 0, "ListObjectsV2": 1}
