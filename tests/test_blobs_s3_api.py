"""The API, its jobs, retention and the CLI with images in an S3 bucket (a real S3-protocol
server on 127.0.0.1): the server keeps no image on its own disk but its cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
