"""A task's inputs stay alive until it is gone: deleting a character never takes an image
from a task that was accepted with it, and a stored image id never reads a server file."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from castbook.blobs import blob_ids_in, open_blob_store
from castbook.db import Database
from castbook.db.database import _MIGRATIONS as MIGRATIONS
from castbook.errors import FieldError
from castbook.generation.prepare import prepare_request
from castbook.generation.presets import Preset
from castbook.generation.request import Mode, parse_request
from castbook.jobs import Job, JobContext, JobOutput, JobStore
from castbook.library import CharacterLibrary, ImageInput
from castbook.settings import Settings
from castbook.tasks import handlers as task_handlers
from tests.conftest import make_image_bytes
from tests.support.api import ApiFactory, add_character

HOLD_S = 120  # generous: the held task waits for the test to release it


def red() -> ImageInput:
    return ImageInput(make_image_bytes((220, 30, 30)), "red.png")


def blue() -> ImageInput:
    return ImageInput(make_image_bytes((30, 30, 220)), "blue.png")


def sha(image: ImageInput) -> str:
    return hashlib.sha256(image.data).hexdigest()


def test_blob_ids_are_found_at_any_depth() -> None:
    a, b = "a" * 64, "0123456789abcdef" * 4
    value = {"request": {"init_image": a, "references": [b, "not-an-id"], "steps": 2}}
    assert blob_ids_in(value) == {a, b}
    assert blob_ids_in({"nodes": [{"inputs": {"image": ("x", a.upper())}}]}) == set()
    assert blob_ids_in(7) == set()


def test_a_task_keeps_the_images_its_input_names(library: CharacterLibrary) -> None:
    library.create({"name": "A"}, [red(), blue()])
    jobs = JobStore(library.database)
    jobs.create(kind="generation", input={"request": {"mode": "i2i", "init_image": sha(red())}})
    library.delete("A")
    assert library.blobs.exists(sha(red()))  # the queued task still needs it
    assert not library.blobs.exists(sha(blue()))  # nobody names this one


def test_a_stored_image_id_never_reads_a_server_file(
    library: CharacterLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = sha(red())
    (tmp_path / missing).write_bytes(red().data)  # a file of that name where the server runs
    monkeypatch.chdir(tmp_path)
    request = parse_request({"mode": "i2i", "init_image": missing, "prompt": "x"})
    preset = Preset("p", "diffusers", "unused", (Mode.T2I, Mode.I2I))
    with pytest.raises(FieldError, match="not in this library") as caught:
        prepare_request(request, preset, library=library)
    assert caught.value.field == "init_image"


def test_deleting_a_character_does_not_fail_a_task_already_accepted(
    make_api: ApiFactory, generating: Path, api_settings: Callable[..., Settings]
) -> None:
    settings = api_settings()
    database = Database(settings.database_url)
    real = task_handlers(settings, database, open_blob_store(settings))
    started, release = threading.Event(), threading.Event()

    def held(job: Job, context: JobContext) -> tuple[list[JobOutput], dict[str, Any]]:
        started.set()
        assert release.wait(HOLD_S), "the test never released the task"
        return real["generation"](job, context)

    api = make_api(handlers={**real, "generation": held})
    headers = api.key("local")
    made = add_character(api, headers)
    reference = made["images"][0]["sha256"]
    body = {"preset": "tiny", "mode": "i2i", "init_image": reference, "prompt": "in the rain"}
    native = api.client.post("/v1/generations", json=body, headers=headers)
    assert native.status_code == 202, native.text
    # The face-consistency API with the same bytes as a data: image: the same blob.
    picture = base64.b64encode(api.services.blobs.get(reference)).decode()
    compat = api.client.post(
        "/getImagetoImage",
        json={"app_id": "tiny", "image": f"data:image/png;base64,{picture}",
              "prompt": "in the rain", "celery": True},
        headers=headers,
    )  # fmt: skip
    assert compat.status_code == 200, compat.text
    assert started.wait(HOLD_S)

    deleted = api.client.delete(f"/v1/characters/{made['id']}", headers=headers)
    assert deleted.status_code == 204, deleted.text
    assert reference in api.blobs()
    release.set()
    for task_id in (native.json()["id"], compat.json()["task_id"]):
        done = api.wait(task_id, headers, timeout=HOLD_S)
        assert done["status"] == "succeeded", done
    database.dispose()


def test_the_migration_records_the_inputs_of_jobs_already_stored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
        connection.execute(
            sa.text(
                "INSERT INTO jobs (id, owner, kind, queue, status, input, progress_step, "
                "progress_total, progress_message, attempts, cancel_requested, created_at, "
                "updated_at) VALUES ('j1', 'local', 'generation', 'default', 'queued', :input, "
                "0, 0, 'queued', 0, 0, '2026-12-01', '2026-12-01')"
            ),
            {"input": '{"request": {"init_image": "' + "c" * 64 + '"}}'},
        )
    engine.dispose()
    database = Database(url)  # upgrades to the newest revision
    with database.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT job_id, sha256 FROM job_inputs")).all()
    assert rows == [("j1", "c" * 64)]
    database.dispose()
