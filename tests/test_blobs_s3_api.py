"""The API, its jobs, retention and the CLI with images in an S3 bucket (a real S3-protocol
server on 127.0.0.1): the server keeps no image on its own disk but its cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from castbook.api import ApiConfig, create_app
from castbook.blobs import BlobStore, open_blob_store
from castbook.jobs.retention import prune
from castbook.settings import Settings
from tests.support.api import Api, add_character
from tests.support.cli import castbook
from tests.support.s3_server import S3Server


@pytest.fixture
def s3_settings(generating: Path, s3_server: S3Server, tmp_path: Path) -> Settings:
    return dataclasses.replace(
        Settings.for_home(generating),
        blob_url=s3_server.new_bucket(),
        blob_endpoint=s3_server.endpoint,
        blob_cache_dir_setting=tmp_path / "server-cache",
        blob_presign=60,
        identify_on_add=False,  # the lookalike check starts face models; not about storage
    )


@pytest.fixture
def open_api() -> Iterator:
    opened: list[TestClient] = []

    def make(settings: Settings) -> Api:
        config = ApiConfig(events_poll_seconds=0.02, job_workers=1, local_jobs="thread")
        client = TestClient(create_app(settings, config=config))
        client.__enter__()
        opened.append(client)
        return Api(client, client.app.state.services)

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def test_a_generation_with_its_images_in_a_bucket(
    s3_settings: Settings, open_api, s3_server: S3Server
) -> None:
    api = open_api(s3_settings)
    store = api.services.blobs
    assert store.kind == "s3" and not s3_settings.blob_dir.exists()
    alice, bob = api.key("alice"), api.key("bob")
    made = add_character(api, alice)
    reference = made["images"][0]["sha256"]
    assert store.exists(reference)
    store.cache.discard(reference)  # the worker fetches it from the bucket, as elsewhere
    task = api.client.post(
        "/v1/generations",
        json={"preset": "tiny", "characters": ["Alice"], "prompt": "at a cafe", "seed": 3},
        headers=alice,
    ).json()
    done = api.wait(task["id"], alice)
    assert done["status"] == "succeeded", done
    result = done["outputs"][0]["id"]
    assert store.cache.read(reference) is not None  # read through the cache
    assert result in set(store)
    assert not s3_settings.blob_dir.exists()  # nothing went to the local folder

    # The owner is redirected to a short-lived presigned URL; the bytes come from the bucket.
    response = api.client.get(f"/v1/results/{result}", headers=alice, follow_redirects=False)
    assert response.status_code == 307, response.text
    location = response.headers["location"]
    assert location.startswith(f"{s3_server.endpoint}/") and "Expires=" in location
    fetched = httpx.get(location)
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.content).hexdigest() == result
    assert fetched.headers["content-type"] == "image/png"
    # Anyone else still gets 404 and no URL.
    refused = api.client.get(f"/v1/results/{result}", headers=bob, follow_redirects=False)
    assert refused.status_code == 404 and "location" not in refused.headers

    # Without presigning the API streams the bytes itself (from its cache).
    streamed_api = open_api(dataclasses.replace(s3_settings, blob_presign=0))
    streamed = streamed_api.client.get(f"/v1/results/{result}", headers=alice)
    assert streamed.status_code == 200
    assert hashlib.sha256(streamed.content).hexdigest() == result

    # Retention works on the bucket: the expired task's output goes, the reference stays.
    later = datetime.now(UTC) + timedelta(days=2)
    report = prune(api.services.database, store, older_than=3600, now=later)
    assert report.tasks == 1 and report.blobs >= 1
    assert result not in set(store) and reference in set(store)


def test_migrate_a_folder_to_a_bucket_and_info(
    castbook_home: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = BlobStore(castbook_home / "blobs")
    ids = [folder.put(f"image {n}".encode() * 1000)[0] for n in range(6)]
    rotten = folder.put(b"will rot")[0]
    folder.path(rotten).write_bytes(b"rotten on disk")
    url = s3_server.new_bucket("prod")
    monkeypatch.setenv("CASTBOOK_BLOB_ENDPOINT", s3_server.endpoint)

    code, out, err = castbook("blobs", "migrate", "--to", url)
    assert code == 1, out + err  # one blob failed
    assert f"migrating {folder.location} → {url}/" in out
    assert "7/7 blobs" in out and "6 copied" in out and "6 verified, 1 failed" in out
    assert f"failed {rotten}" in out and "corrupt" in out

    # Run again: resumable, nothing sent twice, everything checked again.
    code, out, _ = castbook("blobs", "migrate", "--to", url, "--json")
    report = json.loads(out)
    assert code == 1
    assert (report["copied"], report["present"], report["verified"]) == (0, 6, 6)
    assert list(report["failed"]) == [rotten]

    monkeypatch.setenv("CASTBOOK_BLOB_URL", url)
    code, out, _ = castbook("info", "--json")
    assert code == 0, out
    info = json.loads(out)
    assert info["blob_store"] == f"{url}/ (s3)"
    assert info["blobs"] == 6
    assert info["blob_bytes"] == sum(len(f"image {n}".encode() * 1000) for n in range(6))
    assert sorted(ids) == list(open_blob_store(Settings.from_env()))
    # And back: the bucket to a fresh folder (a backup), without touching the local cache.
    code, out, _ = castbook("blobs", "migrate", "--to", str(castbook_home / "backup"), "--json")
    assert code == 0 and json.loads(out)["copied"] == 6
    assert sorted(ids) == list(BlobStore(castbook_home / "backup"))
    assert not (castbook_home / "blob-cache").exists()


# ---- faults, through the API and its jobs ------------------------------------------------


def _noise_png(side: int = 200) -> bytes:
    """A picture that does not compress: larger than the cutting proxy lets through."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def test_corrupt_objects_fail_the_task_and_are_never_served(
    s3_settings: Settings, open_api, s3_server: S3Server
) -> None:
    """An object overwritten outside castbook (bytes no longer its name): a result is
    neither streamed nor handed out as a presigned URL, and a task reading a corrupt
    reference fails with the reason."""
    api = open_api(s3_settings)  # presigned downloads on
    store = api.services.blobs
    alice = api.key("alice")
    reference = add_character(api, alice)["images"][0]["sha256"]
    body = {"preset": "tiny", "characters": ["Alice"], "prompt": "at a cafe", "seed": 3}
    task = api.client.post("/v1/generations", json=body, headers=alice).json()
    done = api.wait(task["id"], alice)
    assert done["status"] == "succeeded", done
    result = done["outputs"][0]["id"]

    outside = s3_server.client()
    for blob_id in (result, reference):
        outside.put_object(Bucket=store.bucket, Key=store.key(blob_id), Body=b"rotten bytes")
        store.cache.discard(blob_id)  # as on a machine that never read it
    for presign in (60, 0):
        api_now = api if presign else open_api(dataclasses.replace(s3_settings, blob_presign=0))
        response = api_now.client.get(
            f"/v1/results/{result}", headers=alice, follow_redirects=False
        )
        assert response.status_code == 503, (presign, response.status_code, response.text[:200])
        assert "location" not in response.headers
        assert f"blob {result}" in response.text and "corrupt" in response.text
        assert store.cache.read(result) is None  # nothing cached either

    again = api.client.post("/v1/generations", json={**body, "seed": 4}, headers=alice).json()
    failed = api.wait(again["id"], alice)
    assert failed["status"] == "failed", failed
    assert f"blob {reference}" in failed["error"] and "corrupt" in failed["error"], failed
    assert not failed["outputs"]


def test_a_store_cut_off_mid_upload_fails_the_request_or_task_and_shows_nothing(
    s3_settings: Settings, open_api, s3_server: S3Server
) -> None:
    """Every connection to the store is cut after 20 kB: an upload through the API is a
    clear 503 that stores no row, a task whose result cannot go up fails with the reason,
    and the bucket holds no part of either."""
    from urllib.parse import urlparse

    from tests.support.s3_server import CuttingProxy

    target = urlparse(s3_server.endpoint)
    proxy = CuttingProxy((target.hostname, target.port), allow=20_000)
    try:
        settings = dataclasses.replace(s3_settings, blob_endpoint=proxy.endpoint)
        api = open_api(settings)
        alice = api.key("alice")
        made = api.client.post("/v1/characters", json={"name": "Alice"}, headers=alice)
        assert made.status_code == 201, made.text
        picture = _noise_png()
        refused = api.client.post(
            f"/v1/characters/{made.json()['id']}/images",
            files=[("image", ("noise.png", picture, "image/png"))],
            headers=alice,
        )
        assert refused.status_code == 503, refused.text
        assert "could not store blob" in refused.text and settings.blob_url in refused.text
        character = api.client.get("/v1/characters/Alice", headers=alice).json()
        assert character["images"] == []

        body = {"preset": "tiny", "prompt": "static on a screen", "seed": 5}
        task = api.client.post("/v1/generations", json=body, headers=alice).json()
        done = api.wait(task["id"], alice)
        assert done["status"] == "failed", done
        assert "could not store blob" in done["error"], done
        assert settings.blob_url in done["error"] and not done["outputs"]
        assert proxy.cut >= 2
    finally:
        proxy.close()
    outside = s3_server.client()
    bucket = settings.blob_url.removeprefix("s3://").split("/", 1)[0]
    assert outside.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_retention_on_a_bucket_never_takes_what_a_running_task_may_still_name(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """The bucket's collector follows the folder's rule: while a task runs, nothing written
    after it started (a result it has stored but not yet recorded) is taken, however late
    the pass; once nothing runs, an unnamed blob older than the cut-off goes."""
    from sqlalchemy import select

    from castbook.db import BlobSizeRow, Database
    from castbook.jobs import JobOutput, JobStore
    from castbook.jobs.sizes import total_bytes
    from tests.conftest import s3_blob_store

    blobs = s3_blob_store(s3_server, tmp_path)
    database = Database(f"sqlite:///{tmp_path / 'castbook.db'}")
    jobs = JobStore(database, blobs)
    task = jobs.create(kind="generation", input={}, owner="ann")
    jobs.start(task.id, "worker-1")
    result, _ = blobs.put(b"a result stored, not yet recorded")
    stray, _ = blobs.put(b"nobody will ever name this")
    later = datetime.now(UTC) + timedelta(days=2)

    report = prune(database, blobs, older_than=None, now=later)
    assert (report.blobs, report.held_back) == (0, 2)
    assert {result, stray} <= set(blobs)

    jobs.succeed(task.id, [JobOutput(result, "image", "image/png", 8, 8, 1)], {})
    assert total_bytes(database, blobs, [result, stray]) > 0  # both sizes recorded
    report = prune(database, blobs, older_than=None, now=later)
    assert report.blobs == 1 and report.bytes == len(b"nobody will ever name this")
    assert set(blobs) == {result}
    with database.session() as session:  # the deleted blob's recorded size went with it
        assert set(session.scalars(select(BlobSizeRow.sha256))) == {result}
    database.dispose()
