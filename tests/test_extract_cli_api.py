"""The Character Extractor from the CLI and the API, with a real chat server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from castbook.library import CharacterLibrary
from tests.support.api import ApiFactory, alice_png
from tests.support.cli import castbook
from tests.support.drawings import ALICE, character, png_bytes
from tests.support.fake_chat_server import GOOD_ANSWER, FakeChatServer


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch):
    with FakeChatServer() as server:
        monkeypatch.setenv("CASTBOOK_EXTRACT_BASE_URL", server.base_url)
        monkeypatch.setenv("CASTBOOK_EXTRACT_MODEL", "vision-test")
        monkeypatch.setenv("CASTBOOK_EXTRACT_API_KEY", "sk-test-key-123456")
        yield server


@pytest.fixture
def drawing(tmp_path: Path) -> Path:
    path = tmp_path / "alice.png"
    path.write_bytes(png_bytes(character(**ALICE)))
    return path


def test_cli_extract_with_a_provider_and_save(
    castbook_home: Path, chat: FakeChatServer, drawing: Path
) -> None:
    code, out, err = castbook("character", "extract", str(drawing), "--json")
    assert code == 0, err
    proposal = json.loads(out)
    assert proposal["physical"]["hair"] == GOOD_ANSWER["physical"]["hair"]
    assert proposal["source"] == "vlm:env/vision-test"
    assert proposal["saved"] is None
    request = chat.requests[0]
    assert request.token == "sk-test-key-123456"
    code, out, err = castbook("character", "extract", str(drawing), "--save", "--name", "Alice")
    assert code == 0 and "Saved Alice" in out, err
    alice = CharacterLibrary.open().get("Alice")
    assert alice.physical.hair == GOOD_ANSWER["physical"]["hair"]
    assert len(alice.images) == 1
    assert "sk-test-key-123456" not in out + err


def test_cli_extract_offline_says_what_it_could_not_fill(
    castbook_home: Path, drawing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in (
        "CASTBOOK_EXTRACT_BASE_URL",
        "CASTBOOK_EXTRACT_MODEL",
        "CASTBOOK_EXTRACT_API_KEY",
    ):
        monkeypatch.delenv(variable, raising=False)
    code, out, err = castbook("character", "extract", str(drawing))
    assert code == 0, err
    assert "local" in out and "could not determine" in out and "eyes" in out
    code, _, err = castbook("character", "extract", str(drawing), "--save")
    assert code == 1 and "--name" in err
    code, _, err = castbook("character", "extract", str(drawing), "--provider", "nope")
    assert code == 1 and "no extraction provider 'nope'" in err


def test_api_extract_and_save(make_api: ApiFactory, chat: FakeChatServer) -> None:
    api = make_api()
    headers = api.key("alice")
    files = {"image": ("alice.png", alice_png(), "image/png")}
    response = api.client.post("/v1/characters/extract", headers=headers, files=files)
    assert response.status_code == 200, response.text
    assert response.json()["extraction"]["clothing"] == GOOD_ANSWER["clothing"]
    assert response.json()["character"] is None
    response = api.client.post(
        "/v1/characters/extract", headers=headers, files=files,
        data={"save": "true", "name": "Alice"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["character"]["name"] == "Alice"
    assert api.client.get("/v1/characters/Alice", headers=headers).status_code == 200
    missing_name = api.client.post(
        "/v1/characters/extract", headers=headers, files=files, data={"save": "true"}
    )
    assert missing_name.status_code == 422 and "name" in missing_name.text
    not_an_image = api.client.post(
        "/v1/characters/extract", headers=headers,
        files={"image": ("notes.png", b"text", "image/png")},
    )  # fmt: skip
    assert not_an_image.status_code == 422
    assert "sk-test-key-123456" not in json.dumps(response.json())


FACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "eval" / "faces"


@pytest.mark.skipif(not (FACES_DIR / "img45.jpg").is_file(), reason="needs ../shared/eval/faces")
@pytest.mark.blob_stores("folder")  # it stores nothing
def test_the_server_runs_the_local_analyser_in_its_evaluation_workers(
    make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("dlib")
    # The face detector in this (the HTTP) process fails; the workers are spawned processes
    # with their own: only an analysis that ran there can answer.
    import castbook.evaluation.faces as faces

    def not_here(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the local analyser ran in the process serving HTTP")

    monkeypatch.setattr(faces, "load_face_embedder", not_here)
    api = make_api()
    headers = api.key("ann")
    photo = (FACES_DIR / "img45.jpg").read_bytes()  # long black hair, light skin
    files = {"image": ("photo.jpg", photo, "image/jpeg")}
    response = api.client.post(
        "/v1/characters/extract", headers=headers, files=files, data={"provider": "local"}
    )
    assert response.status_code == 200, response.text
    extraction = response.json()["extraction"]
    assert extraction["source"] == "local" and extraction["physical"]["hair"] == "black"
    not_an_image = api.client.post(
        "/v1/characters/extract", headers=headers,
        files={"image": ("notes.png", b"text", "image/png")}, data={"provider": "local"},
    )  # fmt: skip
    assert not_an_image.status_code == 422
