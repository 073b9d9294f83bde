"""A Celery worker that shares no folder with the server: it takes its input image from an
S3 bucket (a real S3-protocol server on 127.0.0.1) and puts its result there, and the server
reads the result back from the bucket.

The worker generates on the fake ComfyUI server (tests/support/fake_comfyui_server.py): the
bucket is under test here, not the backend, and a worker that generates with diffusers
imports torch first (~5 s of CPU). Celery workers on the tiny SD 1.5 with their images in a
bucket run the executor contract in tests/test_celery_executor.py."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from castbook.blobs import open_blob_store
from castbook.db import Database
from castbook.generation import load_presets, resolve_request
from castbook.jobs import JobStatus, JobStore
from castbook.settings import Settings
from castbook.tasks import generation_job_input
from tests.conftest import make_image_bytes
from tests.support.fake_comfyui_server import FakeComfyUI
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server

pytest.importorskip("celery")
JOB_DEADLINE_S = 300.0  # generous: a worker starts slowly on a loaded machine


@pytest.fixture
def comfy() -> Iterator[FakeComfyUI]:
    with FakeComfyUI() as server:
        yield server


def test_a_worker_without_the_servers_folder_runs_from_the_bucket(
    redis_server: RedisServer, s3_server: S3Server, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    from castbook.jobs.celery_executor import create_executor

    bucket = s3_server.new_bucket()
    database_url = f"sqlite:///{tmp_path / 'shared' / 'castbook.db'}"
    (tmp_path / "shared").mkdir()
    shared = {
        "CASTBOOK_DATABASE_URL": database_url,
        "CASTBOOK_REDIS_URL": redis_server.url,
        "CASTBOOK_BLOB_URL": bucket,
        "CASTBOOK_BLOB_ENDPOINT": s3_server.endpoint,
    }
    presets = (
        '[presets.tiny]\nbackend = "comfyui"\nmodel = "workflow:sd15-ip-adapter"\n'
        'modes = ["t2i", "i2i"]\ndefaults = { width = 256, height = 256, steps = 2 }\n'
        f'options = {{ server = "{comfy.url}" }}\n'
    )
    server_home, worker_home = tmp_path / "server", tmp_path / "worker"
    for home in (server_home, worker_home):
        home.mkdir()
        (home / "presets.toml").write_text(presets)
    settings = Settings.from_env({**shared, "CASTBOOK_HOME": str(server_home)})
    blobs = open_blob_store(settings)
    database = Database(settings.database_url)
    store = JobStore(database, blobs)
    init_image, _ = blobs.put(make_image_bytes((40, 90, 200), size=(256, 256)))

    env = {key: value for key, value in os.environ.items() if not key.startswith("CASTBOOK_")}
    env.update(shared, CASTBOOK_HOME=str(worker_home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["HF_HOME"] = str(worker_home / "hf-empty")
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "castbook", "worker", "--pool", "solo", "--queue", "default"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    executor = create_executor(settings, {}, store=store, environ=shared)
    executor.start()
    try:
        values = {"prompt": "a lighthouse", "seed": 3, "mode": "i2i", "init_image": init_image}
        resolved = resolve_request(values, load_presets(server_home).get("tiny"))
        job = store.create(kind="generation", input=generation_job_input(resolved, "tiny"))
        executor.submit(job)
        deadline = time.monotonic() + JOB_DEADLINE_S
        while not (job := store.get(job.id)).done:
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
            time.sleep(0.1)
        assert job.status is JobStatus.SUCCEEDED, (job.error, log.read_text()[-3000:])
        result = job.outputs[0].sha256
        # The server reads the worker's result from the bucket (its cache holds only what it
        # wrote itself), and neither machine has a blob folder.
        assert blobs.cache.read(result) is None
        assert hashlib.sha256(blobs.get(result)).hexdigest() == result
        assert set(blobs) == {init_image, result}
        assert not (server_home / "blobs").exists() and not (worker_home / "blobs").exists()
        assert (worker_home / "blob-cache").is_dir()  # the worker read its input through it
    finally:
        worker.kill()
        worker.wait(timeout=30)
        executor.shutdown()
        database.dispose()
