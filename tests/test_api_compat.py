"""``POST /getImagetoImage`` and ``POST /getImage``: the face-consistency API's names and ranges,
run for real on the tiny SD 1.5 model (with IP-Adapter, so the face is also a reference)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from castbook.api.compat import ImageToImageRequest
from tests.conftest import make_image_bytes
from tests.support.api import ApiFactory, alice_png

# The API fixtures of test_api, shared by name.

COMPAT_KEYS = {
    "time_required", "error", "error_data", "input", "output", "app_id", "task_id", "status",
}  # fmt: skip


def data_uri(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


@pytest.fixture
def image_server() -> Iterator[str]:
    """A loopback HTTP server with /face.png and /notes.txt."""
    files = {"/face.png": (alice_png(), "image/png"), "/notes.txt": (b"hello", "text/plain")}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, media = files.get(self.path, (b"missing", "text/plain"))
            self.send_response(200 if self.path in files else 404)
            self.send_header("Content-Type", media)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_waits_for_the_result_by_default(make_api: ApiFactory, generating: Path) -> None:
    api = make_api()
    headers = api.key("alice")
    response = api.client.post(
        "/getImagetoImage",
        json={"app_id": "tiny", "image": data_uri(alice_png()), "prompt": "smiling",
              "negative_prompt": "blurry", "batch": 2, "height": 256, "width": 320,
              "num_inference_steps": 2, "guidance_scale": 5, "strength": 0.6,
              "unknown_to_us": True},
        headers=headers,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == COMPAT_KEYS
    assert answer["status"] == "succeeded", answer
    assert answer["error"] is None and answer["app_id"] == "tiny"
    assert answer["time_required"] > 0
    assert answer["input"]["prompt"] == "smiling" and answer["input"]["strength"] == 0.6
    assert answer["input"]["image"].startswith("data URI")
    assert len(answer["output"]) == 2
    for url in answer["output"]:
        download = api.client.get(url, headers=headers)
        assert download.status_code == 200 and download.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(download.content)) as image:
            assert image.size == (320, 256)
    # The face went in as the i2i start and as the IP-Adapter reference.
    task = api.client.get(f"/v1/tasks/{answer['task_id']}", headers=headers).json()
    request = task["input"]["request"]
    reference = hashlib.sha256(alice_png()).hexdigest()
    assert request["mode"] == "i2i" and request["init_image"] == reference
    assert request["references"] == [reference]
    assert request["steps"] == 2 and request["guidance"] == 5 and request["batch"] == 2
    assert task["queue"] == "default"
    again = api.client.post("/getImage", json={"id": answer["task_id"]}, headers=headers)
    assert again.json() == answer


def test_celery_answers_at_once_on_the_inference_type_queue(
    make_api: ApiFactory, generating: Path, image_server: str
) -> None:
    api = make_api(allow_private_urls=True)  # the image server is on loopback
    headers = api.key("alice")
    response = api.client.post(
        "/getImagetoImage",
        json={"app_id": "tiny-plain", "image": f"{image_server}/face.png", "celery": True,
              "inference_type": "h100", "num_inference_steps": 2},
        headers=headers,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    queued = response.json()
    assert set(queued) == COMPAT_KEYS
    assert queued["status"] in ("queued", "running") and queued["output"] == []
    assert queued["input"]["image"] == f"{image_server}/face.png"
    assert api.wait(queued["task_id"], headers)["queue"] == "h100"
    done = api.client.post("/getImage", json={"id": queued["task_id"]}, headers=headers).json()
    assert done["status"] == "succeeded" and len(done["output"]) == 1
    # tiny-plain takes no reference images: the face is the i2i start only.
    task = api.client.get(f"/v1/tasks/{queued['task_id']}", headers=headers).json()
    assert "references" not in task["input"]["request"]


def test_large_references_are_resized_to_fit_keeping_the_aspect_ratio(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    headers = api.key("alice")
    large = make_image_bytes((200, 30, 30), (3000, 1500), "JPEG")
    answer = api.client.post(
        "/getImagetoImage",
        json={"app_id": "tiny-plain", "image": data_uri(large, "image/jpeg"), "celery": True},
        headers=headers,
    ).json()
    assert answer["input"]["image_resized_to"] == [1536, 768]
    stored = api.services.blobs.get(answer["input"]["image_id"])
    with Image.open(io.BytesIO(stored)) as image:
        assert image.size == (1536, 768)
    assert api.wait(answer["task_id"], headers)["status"] == "succeeded"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"batch": 0}, "batch", "between 1 and 8"),
        ({"batch": 9}, "batch", "between 1 and 8"),
        ({"height": 255}, "height", "between 256 and 1536"),
        ({"width": 1537}, "width", "between 256 and 1536"),
        ({"num_inference_steps": 0}, "num_inference_steps", "between 1 and 50"),
        ({"num_inference_steps": 51}, "num_inference_steps", "between 1 and 50"),
        ({"guidance_scale": 0.5}, "guidance_scale", "between 1 and 30"),
        ({"guidance_scale": 30.5}, "guidance_scale", "between 1 and 30"),
        ({"strength": -0.1}, "strength", "between 0 and 1"),
        ({"strength": 1.01}, "strength", "between 0 and 1"),
        ({"batch": "two"}, "batch", "valid integer"),
        ({"celery": "maybe"}, "celery", "valid boolean"),
        ({"inference_type": "t4"}, "inference_type", "'a10g', 'a100' or 'h100'"),
        ({"app_id": None}, "app_id", "valid string"),
        ({"app_id": "nope"}, "app_id", "no preset 'nope'"),
        ({"app_id": "tiny-t2i"}, "app_id", "does t2i, not i2i"),
        ({"image": None}, "image", "valid string"),
        ({"image": "file:///etc/passwd"}, "image", "http(s) URL"),
        ({"image": "/etc/passwd"}, "image", "http(s) URL"),
        ({"image": "http://127.0.0.1:9/face.png"}, "image", "loopback"),
        ({"image": "http://169.254.169.254/latest/meta-data"}, "image", "link-local"),
        ({"image": data_uri(b"not an image")}, "image", "not"),
    ],
)
def test_invalid_requests_name_the_field_and_write_nothing(
    make_api: ApiFactory, generating: Path, change: dict[str, Any], field: str, message: str
) -> None:
    api = make_api()
    headers = api.key("alice")
    body = {"app_id": "tiny", "image": data_uri(alice_png()), "celery": True, **change}
    response = api.client.post("/getImagetoImage", json=body, headers=headers)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == field, problem
    assert message in problem["error"], problem
    assert api.job_count() == 0 and api.blobs() == set()


def test_missing_fields_are_named(make_api: ApiFactory) -> None:
    api = make_api()
    response = api.client.post("/getImagetoImage", json={}, headers=api.key("alice"))
    assert response.status_code == 422
    assert {p["field"] for p in response.json()["errors"]} == {"app_id", "image"}


def test_urls_that_are_not_images_are_refused(
    make_api: ApiFactory, generating: Path, image_server: str
) -> None:
    api = make_api(allow_private_urls=True)
    headers = api.key("alice")
    for path in ("/notes.txt", "/missing.png"):
        body = {"app_id": "tiny", "image": image_server + path, "celery": True}
        response = api.client.post("/getImagetoImage", json=body, headers=headers)
        assert response.status_code == 422 and response.json()["field"] == "image", response.text
    assert api.job_count() == 0


def test_boundary_values_are_accepted() -> None:
    low = ImageToImageRequest(
        app_id="a", image="x", batch=1, height=256, width=256, num_inference_steps=1,
        guidance_scale=1, strength=0, inference_type="a10g",
    )  # fmt: skip
    high = ImageToImageRequest(
        app_id="a", image="x", batch=8, height=1536, width=1536, num_inference_steps=50,
        guidance_scale=30, strength=1, inference_type="a100",
    )  # fmt: skip
    assert (low.batch, high.batch, high.height, low.strength) == (1, 8, 1536, 0)
    assert ImageToImageRequest(app_id="a", image="x").celery is False


def test_get_image_for_unknown_and_other_owners_tasks(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    alice, bob = api.key("alice"), api.key("bob")
    answer = api.client.post(
        "/getImagetoImage",
        json={"app_id": "tiny-plain", "image": data_uri(alice_png()), "celery": True},
        headers=alice,
    ).json()
    for headers, task_id in ((alice, "nope"), (bob, answer["task_id"])):
        response = api.client.post("/getImage", json={"id": task_id}, headers=headers)
        assert response.status_code == 404 and "no task" in response.json()["error"]
    assert api.client.post("/getImage", json={}, headers=alice).json()["field"] == "id"
    assert api.wait(answer["task_id"], alice)["status"] == "succeeded"


# ---- strength: how closely the result follows the face --------------------------------------


def test_strength_maps_monotonically_toward_the_reference() -> None:
    from castbook.api.compat import follow_reference
    from castbook.generation import Preset
    from castbook.generation.request import Mode

    for defaults in ({}, {"reference_scale": 0.9}, {"reference_scale": 2.0}):
        preset = Preset("p", "diffusers", "m", (Mode.I2I,), defaults=defaults)
        mapped = [follow_reference(i / 1000, preset) for i in range(1001)]
        denoise = [m["denoise"] for m in mapped]
        scale = [m["reference_scale"] for m in mapped]
        assert denoise == sorted(denoise, reverse=True) and scale == sorted(scale)
        assert (denoise[0], denoise[-1], scale[0]) == (1.0, 0.0, 0.0)
        assert all(0 <= s <= 2 for s in scale)
        base = defaults.get("reference_scale", 0.6)
        assert follow_reference(0.5, preset)["reference_scale"] == pytest.approx(min(base, 2))


def test_strength_reaches_the_job_as_denoise_and_reference_scale(
    make_api: ApiFactory, generating: Path
) -> None:
    from castbook.api.compat import follow_reference

    api = make_api()
    headers = api.key("alice")
    preset = api.services.presets().get("tiny")
    face = data_uri(alice_png())
    submitted = {}
    for strength in (0.0, 0.3, 0.7, 1.0):
        body = {"app_id": "tiny", "image": face, "strength": strength, "num_inference_steps": 2,
                "width": 256, "height": 256, "celery": True}  # fmt: skip
        answer = api.client.post("/getImagetoImage", json=body, headers=headers).json()
        submitted[strength] = answer["task_id"]
    for strength, task_id in submitted.items():
        task = api.wait(task_id, headers)
        assert task["status"] == "succeeded", task
        request = task["input"]["request"]
        expected = follow_reference(strength, preset)
        assert (request["denoise"], request["reference_scale"]) == (
            expected["denoise"],
            expected["reference_scale"],
        )
    # strength 1: the result is the face itself (at the asked size), nothing redrawn.
    answer = api.client.post("/getImage", json={"id": submitted[1.0]}, headers=headers).json()
    result = api.client.get(answer["output"][0], headers=headers).content
    with Image.open(io.BytesIO(result)) as got, Image.open(io.BytesIO(alice_png())) as face_image:
        expected_pixels = face_image.convert("RGB").resize((256, 256), Image.Resampling.LANCZOS)
        assert got.convert("RGB").tobytes() == expected_pixels.tobytes()


# ---- no allowed input ends in "internal error" ---------------------------------------------


# (endpoint, steps, strength for compat / denoise for /v1, batch, width = height)
FULL_GRID = [
    (endpoint, steps, value, batch, 256)
    for endpoint in ("compat", "v1")
    for steps in (1, 50)
    for value in (0.0, 0.01, 0.5, 1.0)
    for batch in (1, 8)
] + [("compat", 1, 0.5, 1, 1536), ("v1", 1, 0.5, 1, 1536)]
# What the default run takes: every corner value on each endpoint, every case where
# steps × denoise < 1 (where "internal error" came from), batch 8 with and without a
# pipeline, and a 1536 request (strength 1, so no denoising step); each runs at most one
# denoising step on the tiny model (~1.5 s, 6 s at batch 8). CASTBOOK_FULL_GRID=1 runs all
# 34, with 50-step and 1536 denoising runs (11 min on 2 busy cores; 30 s for one 1536 step).
DEFAULT_GRID = [
    ("compat", 1, 0.0, 1, 256), ("compat", 1, 0.01, 8, 256), ("compat", 1, 0.5, 1, 256),
    ("compat", 1, 1.0, 1, 256), ("compat", 50, 1.0, 8, 256), ("compat", 1, 1.0, 1, 1536),
    ("v1", 1, 0.0, 1, 256), ("v1", 1, 0.01, 1, 256), ("v1", 1, 0.5, 1, 256),
    ("v1", 50, 0.0, 8, 256), ("v1", 50, 0.01, 1, 256), ("v1", 1, 1.0, 8, 256),
]  # fmt: skip
GRID = FULL_GRID if os.environ.get("CASTBOOK_FULL_GRID") == "1" else DEFAULT_GRID


def test_every_corner_of_the_documented_ranges_succeeds(
    make_api: ApiFactory, generating: Path
) -> None:
    """steps 1/50 × strength (compat) or denoise (/v1) 0/0.01/0.5/1 × batch 1/8 × 256/1536
    (see GRID): every one succeeds. steps × denoise < 1 used to end in "internal error:
    RuntimeError: cannot reshape tensor of 0 elements"."""
    api = make_api()
    headers = api.key("alice")
    face = data_uri(alice_png())
    tasks = []
    for case in GRID:
        endpoint, steps, value, batch, size = case
        if endpoint == "compat":
            body = {"app_id": "tiny", "image": face, "num_inference_steps": steps,
                    "strength": value, "batch": batch, "width": size, "height": size,
                    "guidance_scale": 1, "celery": True}  # fmt: skip
            answer = api.client.post("/getImagetoImage", json=body, headers=headers)
            assert answer.status_code == 200, answer.text
            tasks.append((case, answer.json()["task_id"]))
        else:
            body = {"mode": "i2i", "preset": "tiny", "init_image": face, "steps": steps,
                    "denoise": value, "batch": batch, "width": size, "height": size,
                    "guidance": 1}  # fmt: skip
            answer = api.client.post("/v1/generations", json=body, headers=headers)
            assert answer.status_code == 202, answer.text
            tasks.append((case, answer.json()["id"]))
    for case, task_id in tasks:
        task = api.wait(task_id, headers, timeout=600)
        assert task["status"] == "succeeded", (case, task.get("error"))
        assert len(task["outputs"]) == case[3], case
        assert task["outputs"][0]["width"] == case[4], case


# ---- error answers keep the documented keys -------------------------------------------------


def test_error_answers_carry_the_documented_keys(make_api: ApiFactory, generating: Path) -> None:
    api = make_api()
    headers = api.key("alice")
    face = data_uri(alice_png())
    cases = [
        ("/getImagetoImage", {"app_id": "tiny", "image": face, "batch": 9}, headers, 422),
        ("/getImagetoImage", {"app_id": "nope", "image": face}, headers, 422),
        ("/getImagetoImage", {"image": face}, headers, 422),
        ("/getImagetoImage", {"app_id": "tiny", "image": face}, {}, 401),
        ("/getImagetoImage", {"app_id": "tiny", "image": face}, {"Authorization": "Bearer x"}, 401),
        ("/getImage", {"id": "no-such-task"}, headers, 404),
        ("/getImage", {}, headers, 422),
    ]
    for path, body, sent_headers, status in cases:
        response = api.client.post(path, json=body, headers=sent_headers)
        assert response.status_code == status, (path, body, response.text)
        answer = response.json()
        assert set(answer) >= COMPAT_KEYS, answer
        assert answer["error"] and answer["error_data"]["type"] == answer["type"], answer
        assert answer["output"] == [] and answer["task_id"] is None and answer["status"] is None
        assert answer["time_required"] is None and answer["input"] is None
    malformed = api.client.post(
        "/getImagetoImage",
        content=b"{not json",
        headers={**headers, "content-type": "application/json"},
    )
    assert malformed.status_code == 422 and set(malformed.json()) >= COMPAT_KEYS
    unauthorised = api.client.post("/getImage", json={"id": "x"})
    assert unauthorised.headers["www-authenticate"] == "Bearer"


class DescriptionClient:
    """A client written only from the face-consistency API's description (ARCHITECTURE.md,
    "Reference facts"): POST /getImagetoImage with celery true, then POST /getImage with the
    task id until the status is final; errors read from ``error``."""

    def __init__(self, http: Any, key: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {key}"}

    def generate(self, **fields: Any) -> dict[str, Any]:
        answer = self.http.post(
            "/getImagetoImage", json={**fields, "celery": True}, headers=self.headers
        ).json()
        if answer["error"]:
            return answer
        deadline = time.monotonic() + 120
        while answer["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)
            answer = self.http.post(
                "/getImage", json={"id": answer["task_id"]}, headers=self.headers
            ).json()
        return answer


def test_a_client_written_from_the_description_works_unchanged(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    key = api.key("alice")["Authorization"].removeprefix("Bearer ")
    client = DescriptionClient(api.client, key)
    done = client.generate(
        app_id="tiny", image=data_uri(alice_png()), prompt="smiling", negative_prompt="",
        batch=2, height=256, width=256, num_inference_steps=2, guidance_scale=5, strength=0.6,
        inference_type="a10g",
    )  # fmt: skip
    assert done["status"] == "succeeded" and done["error"] is None, done
    assert len(done["output"]) == 2 and done["app_id"] == "tiny" and done["time_required"] > 0
    refused = client.generate(app_id="tiny", image=data_uri(alice_png()), batch=9)
    assert "batch" in refused["error"] and refused["status"] is None
    stranger = DescriptionClient(api.client, "not-a-key")
    assert "key" in stranger.generate(app_id="tiny", image=data_uri(alice_png()))["error"].lower()
