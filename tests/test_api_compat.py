"""``POST /getImagetoImage`` and ``POST /getImage``: the face-consistency API's names and ranges,
run for real on the tiny SD 1.5 model (with IP-Adapter, so the face is also a reference)."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
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
