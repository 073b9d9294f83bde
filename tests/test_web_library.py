"""The Characters tab in a real headless Chromium: edit, export, import and Extract.

Same set-up as tests/test_web_ui.py (Debian's ``chromium`` driven by Playwright, skipped
without it except under ``CI=true``, never a browser download, only 127.0.0.1 reachable),
against one real ``castbook serve`` for the module whose Character Extractor points at a fake
OpenAI-compatible chat server on loopback (tests/support/fake_chat_server.py), so the
proposal the page shows is known.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.support.drawings import character as drawn_character
from tests.support.drawings import png_bytes as encode
from tests.support.fake_chat_server import GOOD_ANSWER, ChatReply, FakeChatServer, answer_json
from tests.support.server import Server
from tests.support.web import (
    BLOB_URL,
    api_client,
    castbook_server,
    enter_key,
    png_bytes,
    require_browser,
    screenshot,
    server_page,
)

ROOT = Path(__file__).resolve().parents[1]
EDIT_SCREENSHOT = ROOT / "docs" / "web-edit.png"
EXTRACT_SCREENSHOT = ROOT / "docs" / "web-extract.png"
FACES_DIR = ROOT.parent / "shared" / "eval" / "faces"
CHAT_KEY = "sk-web-test-key-123456"
# The extractor's answer in the Extract test: two things it could not see.
PARTIAL_ANSWER = json.loads(answer_json(physical={"eyes": "unknown"}, accessories=[]))

require_browser()

from playwright.sync_api import Browser, Page, expect  # noqa: E402

# ---- one server (with a fake vision-language model) and one browser for the module ----------


@pytest.fixture(scope="module")
def chat() -> Iterator[FakeChatServer]:
    with FakeChatServer() as server:
        yield server


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, chat: FakeChatServer
) -> Iterator[tuple[Server, str]]:
    env = {
        "CASTBOOK_EXTRACT_BASE_URL": chat.base_url,
        "CASTBOOK_EXTRACT_MODEL": "vision-test",
        "CASTBOOK_EXTRACT_API_KEY": CHAT_KEY,
    }
    with castbook_server(tmp_path_factory.mktemp("web-library") / "home", env) as served:
        yield served


@pytest.fixture
def page(browser: Browser, served: tuple[Server, str]) -> Iterator[Page]:
    with server_page(browser, served[0], viewport=(1280, 800)) as page:
        enter_key(page, served[1])
        yield page


@pytest.fixture
def http(served: tuple[Server, str]) -> Iterator[httpx.Client]:
    with api_client(*served) as client:
        yield client


# ---- helpers --------------------------------------------------------------------------------


def upload(name: str, data: bytes, mime: str = "image/png") -> dict[str, Any]:
    return {"name": name, "mimeType": mime, "buffer": data}


def add_character(
    http: httpx.Client, name: str, images: list[bytes] = (), **fields: Any
) -> dict[str, Any]:
    created = http.post("/v1/characters", json={"name": name, **fields})
    assert created.status_code == 201, created.text
    if images:
        files = [("image", (f"{name}-{i}.png", data, "image/png")) for i, data in enumerate(images)]
        uploaded = http.post(f"/v1/characters/{name}/images", files=files)
        assert uploaded.status_code == 201, uploaded.text
        return uploaded.json()
    return created.json()


def names(http: httpx.Client) -> set[str]:
    return {c["name"] for c in http.get("/v1/characters").json()}


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def field(page: Page, name: str):
    return page.locator(f"#character-form [name='{name}']")


def error_under(page: Page, name: str):
    return page.locator(f'#character-dialog .field-error[data-error-for="{name}"]')


CORNER_COLOUR_IS = """([selector, rgb]) => {
    const img = document.querySelector(selector);
    if (!img || !img.complete || !img.naturalWidth) return false;
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(img, 0, 0);
    const pixel = context.getImageData(1, 1, 1, 1).data;
    return rgb.every((value, i) => Math.abs(pixel[i] - value) <= 12);
}"""


def expect_thumbnail_colour(page: Page, name: str, rgb: tuple[int, int, int]) -> None:
    """Wait until the card's thumbnail, as the browser shows it, is mostly ``rgb``."""
    selector = f'.card[data-name="{name}"] img.thumb'
    page.wait_for_function(CORNER_COLOUR_IS, arg=[selector, list(rgb)])


def wait_for_card(page: Page, name: str) -> None:
    page.reload()  # characters made over HTTP: the page learns of them on load
    expect(page.locator(".card .name", has_text=name)).to_be_visible()


# ---- Extract ----------------------------------------------------------------------------------


def test_extract_proposes_fields_for_review_and_create_saves_them(
    page: Page, http: httpx.Client, chat: FakeChatServer, tmp_path: Path
) -> None:
    drawing = encode(drawn_character(hair=(190, 60, 30), shirt=(40, 100, 60)))
    before = len(chat.requests)
    page.click("#new-character")
    expect(page.locator("#character-dialog")).to_be_visible()
    expect(page.locator("#extract-character")).to_be_disabled()  # nothing to read yet
    page.set_input_files("#field-image", files=[upload("wren.png", drawing)])
    expect(page.locator("#image-list .image-item")).to_have_count(1)
    expect(page.locator("#image-list img")).to_have_attribute("src", BLOB_URL)

    # The provider is down: the API's error appears under the image; nothing is filled.
    chat.script("*", ChatReply(status=503, message="the vision model is overloaded"))
    page.click("#extract-character")
    image_error = error_under(page, "image")
    expect(image_error).to_contain_text("Extraction failed")
    expect(image_error).to_contain_text("the vision model is overloaded")
    expect(field(page, "hair")).to_have_value("")
    expect(page.locator("#extract-result")).to_be_hidden()

    # It answers (slowly): busy while it runs, then the form holds the proposal.
    chat.script("*", ChatReply(content=json.dumps(PARTIAL_ANSWER), delay=1.0))
    page.click("#extract-character")
    expect(page.locator("#extract-character")).to_have_text("Extracting…")
    expect(page.locator("#extract-character")).to_be_disabled()
    expect(page.locator("#save-character")).to_be_disabled()
    expect(page.locator("#extract-result")).to_be_visible()
    expect(image_error).to_be_hidden()
    expect(page.locator("#extract-character")).to_have_text("Extract from image")
    assert len(chat.requests) == before + 2
    sent = json.dumps(chat.requests[-1].json)
    assert "data:image/png;base64," in sent and chat.requests[-1].token == CHAT_KEY

    expect(field(page, "style_prompt")).to_have_value(GOOD_ANSWER["style_prompt"])
    expect(field(page, "description")).to_have_value(GOOD_ANSWER["description"])
    for trait in ("hair", "face", "body", "skin"):
        expect(field(page, trait)).to_have_value(GOOD_ANSWER["physical"][trait])
    expect(field(page, "clothing")).to_have_value(GOOD_ANSWER["clothing"])
    expect(field(page, "distinctive_features")).to_have_value(
        "\n".join(GOOD_ANSWER["distinctive_features"])
    )
    expect(field(page, "hair")).to_have_class("proposed")
    # What it could not see stays empty, marked, and is named.
    expect(field(page, "eyes")).to_have_value("")
    expect(field(page, "eyes")).to_have_class("unfilled")
    expect(field(page, "accessories")).to_have_value("")
    result = page.locator("#extract-result")
    expect(result.locator(".extract-source")).to_contain_text(
        "Vision-language model env/vision-test"
    )
    expect(result.locator(".extract-unfilled")).to_have_text(
        "Could not determine: eyes, accessories."
    )
    expect(page.locator("#field-name")).to_be_focused()

    # Review: the user names the character and corrects a field; nothing is saved yet.
    page.fill("#field-name", "Wren")
    page.fill("#field-eyes", "amber eyes")
    page.fill("#field-tags", "hero, ranger")
    screenshot(page, EXTRACT_SCREENSHOT, tmp_path)
    assert "Wren" not in names(http)

    page.click("#save-character")
    expect(page.locator("#character-dialog")).to_be_hidden()
    card = page.locator(".card", has_text="Wren")
    expect(card.locator("img.thumb")).to_have_attribute("src", BLOB_URL)
    expect(card.locator(".meta")).to_have_text("1 image")
    wren = http.get("/v1/characters/Wren").json()
    assert wren["style_prompt"] == GOOD_ANSWER["style_prompt"]
    assert wren["description"] == GOOD_ANSWER["description"]
    assert wren["physical"] == {**GOOD_ANSWER["physical"], "eyes": "amber eyes"}
    assert wren["clothing"] == GOOD_ANSWER["clothing"]
    assert wren["accessories"] == []
    assert wren["distinctive_features"] == GOOD_ANSWER["distinctive_features"]
    assert wren["tags"] == ["hero", "ranger"]
    assert len(wren["images"]) == 1 and wren["primary_image"] == wren["images"][0]["sha256"]
    stored = http.get(f"/v1/characters/Wren/images/{wren['primary_image']}")
    assert image_size(stored.content) == image_size(drawing)
    assert len(chat.requests) == before + 2  # Create did not extract again


def _faces_ready() -> bool:
    from castbook.evaluation.faces import faces_available

    return FACES_DIR.is_dir() and faces_available()


@pytest.mark.skipif(not _faces_ready(), reason="needs ../shared/eval/faces and dlib")
def test_extract_with_the_local_analyser_says_what_it_measured(
    page: Page, chat: FakeChatServer
) -> None:
    before = len(chat.requests)
    photo = (FACES_DIR / "img45.jpg").read_bytes()  # long black hair, light skin
    page.click("#new-character")
    page.set_input_files("#field-image", files=[upload("photo.jpg", photo, "image/jpeg")])
    page.check("#extract-local")
    page.click("#extract-character")
    result = page.locator("#extract-result")
    # The local analyser detects the face and measures colours on the server: on two busy
    # cores (a face model loading beside other tests) that took over 5 s.
    expect(result).to_be_visible(timeout=60_000)
    expect(result.locator(".extract-source")).to_contain_text("Local analyser")
    expect(result.locator(".extract-note")).to_contain_text(
        "Local analyser (no vision-language model configured)"
    )
    expect(result.locator(".extract-unfilled")).to_contain_text("eyes, face, body")
    expect(field(page, "hair")).to_have_value("black")
    expect(field(page, "description")).to_have_value("")  # the report is not a description
    for trait in ("eyes", "face", "body"):
        expect(field(page, trait)).to_have_class("unfilled")
    assert len(chat.requests) == before  # the picture stayed on the server
    page.click("#cancel-character")
    expect(page.locator("#character-dialog")).to_be_hidden()


def sent_image(request: Any) -> bytes:
    """The picture a chat request carried (its image_url data URL), decoded."""
    for message in request.messages:
        for part in message.get("content") if isinstance(message.get("content"), list) else []:
            if part.get("type") == "image_url":
                return base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
    raise AssertionError("no image in the request")


def test_extract_while_editing_reads_the_primary_image_and_saves_nothing(
    page: Page, http: httpx.Client, chat: FakeChatServer
) -> None:
    drawing = encode(drawn_character(hair=(190, 60, 30), shirt=(40, 100, 60)))  # 256×256
    add_character(http, "Vale", [png_bytes((30, 30, 30)), drawing], hair="short black hair")
    vale = http.get("/v1/characters/Vale").json()
    http.patch("/v1/characters/Vale", json={"primary_image": vale["images"][1]["sha256"]})
    wait_for_card(page, "Vale")
    page.locator(".card", has_text="Vale").locator("button.edit").click()
    page.click("#extract-character")
    expect(page.locator("#extract-result")).to_be_visible()
    assert image_size(sent_image(chat.requests[-1])) == (256, 256)  # the primary, not the first
    expect(field(page, "hair")).to_have_value(GOOD_ANSWER["physical"]["hair"])
    expect(field(page, "name")).to_have_value("Vale")
    expect(page.locator(".extract-review")).to_have_text(
        "Review the highlighted fields, then press Save."
    )
    # Escape does not throw the proposal away; Cancel does, and nothing was saved.
    page.keyboard.press("Escape")
    expect(page.locator("#character-dialog")).to_be_visible()
    expect(page.locator('#character-dialog .form-error[data-error-for=""]')).to_contain_text(
        "Unsaved changes"
    )
    page.click("#cancel-character")
    expect(page.locator("#character-dialog")).to_be_hidden()
    assert http.get("/v1/characters/Vale").json()["physical"]["hair"] == "short black hair"


# ---- edit ---------------------------------------------------------------------------------


def test_edit_changes_fields_and_manages_reference_images(
    page: Page, http: httpx.Client, tmp_path: Path
) -> None:
    first = png_bytes((200, 60, 40))
    add_character(
        http, "Mira", [first], style_prompt="a young knight with short silver hair",
        hair="short silver hair", accessories=["red scarf"], tags=["hero"],
    )  # fmt: skip
    wait_for_card(page, "Mira")
    expect_thumbnail_colour(page, "Mira", (200, 60, 40))
    patches: list[Any] = []
    page.on(
        "request",
        lambda r: patches.append(r.post_data_json) if r.method == "PATCH" else None,
    )

    # Double-click opens the form pre-filled.
    page.locator(".card", has_text="Mira").dblclick()
    expect(page.locator("#character-form-title")).to_have_text("Edit Mira")
    expect(page.locator("#save-character")).to_have_text("Save")
    expect(field(page, "name")).to_have_value("Mira")
    expect(field(page, "hair")).to_have_value("short silver hair")
    expect(field(page, "accessories")).to_have_value("red scarf")
    expect(field(page, "tags")).to_have_value("hero")
    items = page.locator("#image-list .image-item")
    expect(items).to_have_count(1)

    # Fields typed before image changes survive them.
    page.fill("#field-eyes", "amber eyes")
    page.fill("#field-accessories", "red scarf\nsilver gauntlets")
    page.fill("#field-tags", "hero, knight")
    page.fill("#field-negative", "blurry")

    # Add images: uploaded at once; the first stays primary (shown first, and larger).
    second = png_bytes((40, 60, 200))
    page.set_input_files("#field-image", files=[upload("side.png", second)])
    expect(items).to_have_count(2)
    old_sha, new_sha = (i["sha256"] for i in http.get("/v1/characters/Mira").json()["images"])
    old, new = (items.and_(page.locator(f"[data-key='{sha}']")) for sha in (old_sha, new_sha))
    expect(old).to_have_class("image-item primary")
    expect(new).to_have_class("image-item")

    # Make the new one primary: the server and the card's thumbnail follow.
    new.locator(".make-primary").click()
    expect(new).to_have_class("image-item primary")
    expect(old).to_have_class("image-item")
    expect(items.first).to_have_attribute("data-key", new_sha)
    assert http.get("/v1/characters/Mira").json()["primary_image"] == new_sha
    expect_thumbnail_colour(page, "Mira", (40, 60, 200))
    expect(page.locator(".card", has_text="Mira").locator(".meta")).to_have_text("2 images")
    expect(field(page, "eyes")).to_have_value("amber eyes")
    page.mouse.move(0, 0)
    screenshot(page, EDIT_SCREENSHOT, tmp_path)

    # Remove the old one (no question asked while another is left).
    old.locator(".remove-image").click()
    expect(items).to_have_count(1)
    expect(page.locator("#confirm-dialog")).to_be_hidden()
    assert [i["sha256"] for i in http.get("/v1/characters/Mira").json()["images"]] == [new_sha]

    # The last one asks first; cancelling keeps it.
    new.locator(".remove-image").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("only reference image")
    page.click("#cancel-delete")
    expect(items).to_have_count(1)
    assert len(http.get("/v1/characters/Mira").json()["images"]) == 1

    # Save sends only what changed.
    patches.clear()
    page.click("#save-character")
    expect(page.locator("#character-dialog")).to_be_hidden()
    assert patches == [
        {
            "negative_prompt": "blurry",
            "eyes": "amber eyes",
            "accessories": ["red scarf", "silver gauntlets"],
            "tags": ["hero", "knight"],
        }
    ]
    mira = http.get("/v1/characters/Mira").json()
    assert mira["physical"]["eyes"] == "amber eyes"
    assert mira["physical"]["hair"] == "short silver hair"
    assert mira["accessories"] == ["red scarf", "silver gauntlets"]
    assert mira["negative_prompt"] == "blurry"
    expect(page.locator(".card", has_text="Mira").locator(".tag")).to_have_text(["hero", "knight"])
    expect(page.locator(".card", has_text="Mira").locator(".meta")).to_have_text("1 image")

    # The edit button opens the same form; removing the last image after confirming works.
    page.locator(".card", has_text="Mira").locator("button.edit").click()
    expect(field(page, "eyes")).to_have_value("amber eyes")
    new.locator(".remove-image").click()
    page.click("#confirm-delete")
    expect(items).to_have_count(0)
    expect(page.locator("#images-empty")).to_be_visible()
    expect(page.locator("#extract-character")).to_be_disabled()
    page.click("#cancel-character")
    expect(page.locator(".card", has_text="Mira").locator(".meta")).to_have_text(
        "no reference image"
    )
    assert http.get("/v1/characters/Mira").json()["images"] == []

    # Deleting the character still asks in its own words.
    page.locator(".card", has_text="Mira").locator("button.delete").click()
    expect(page.locator("#confirm-text")).to_contain_text('Delete "Mira"')
    expect(page.locator("#confirm-delete")).to_have_text("Delete")
    page.click("#confirm-delete")
    expect(page.locator(".card", has_text="Mira")).to_have_count(0)
    assert "Mira" not in names(http)


def test_edit_a_taken_name_shows_the_error_and_keeps_the_edits(
    page: Page, http: httpx.Client
) -> None:
    add_character(http, "Oskar", style_prompt="a tall villain")
    add_character(http, "Petra", style_prompt="a sailor")
    wait_for_card(page, "Petra")
    page.locator(".card", has_text="Oskar").locator("button.edit").click()
    page.fill("#field-style", "a tall villain in a black coat")
    page.fill("#field-name", "petra")
    page.click("#save-character")
    name_error = error_under(page, "name")
    expect(name_error).to_contain_text("already exists")
    expect(page.locator("#field-name")).to_have_class("field-invalid")
    expect(page.locator("#character-dialog")).to_be_visible()
    expect(field(page, "style_prompt")).to_have_value("a tall villain in a black coat")
    assert http.get("/v1/characters/Oskar").json()["style_prompt"] == "a tall villain"

    page.fill("#field-name", "Oskar the Grey")
    page.click("#save-character")
    expect(page.locator("#character-dialog")).to_be_hidden()
    expect(page.locator(".card .name", has_text="Oskar the Grey")).to_be_visible()
    renamed = http.get("/v1/characters/Oskar the Grey").json()
    assert renamed["style_prompt"] == "a tall villain in a black coat"


# ---- export and import ------------------------------------------------------------------------


def test_export_downloads_json_with_the_images(
    page: Page, http: httpx.Client, tmp_path: Path
) -> None:
    add_character(http, "Quill", [png_bytes((20, 160, 90))], tags=["scribe"])
    add_character(http, "Rook", [png_bytes((90, 20, 160)), png_bytes((160, 90, 20))])
    wait_for_card(page, "Rook")

    page.click("#export-characters")
    expect(page.locator("#export-dialog")).to_be_visible()
    expect(page.locator("#export-scope-shown")).to_be_disabled()  # no search: all of them
    with page.expect_download() as download_info:
        page.click("#export-download")
    download = download_info.value
    assert download.suggested_filename.startswith("castbook-characters-")
    document = json.loads(Path(download.path()).read_text())
    expect(page.locator("#export-dialog")).to_be_hidden()
    assert document["format"] == "castbook.characters"
    assert {c["name"] for c in document["characters"]} == names(http)
    rook = next(c for c in document["characters"] if c["name"] == "Rook")
    assert len(rook["images"]) == 2
    for image in rook["images"]:
        assert image_size(base64.b64decode(image["data"])) == (image["width"], image["height"])

    # Only the ones the search shows, in the nbp format: nbp cannot show a character
    # without an image, so Quillon is left out and the dialog says so.
    add_character(http, "Quillon", [], tags=["scribe"])
    wait_for_card(page, "Quillon")
    page.fill("#search", "scribe")
    expect(page.locator(".card")).to_have_count(2)
    page.click("#export-characters")
    expect(page.locator("#export-scope-shown")).to_be_checked()
    page.check("#export-form input[name='format'][value='nbp']")
    with page.expect_download() as download_info:
        page.click("#export-download")
    download = download_info.value
    assert download.suggested_filename.startswith("nbp-characters-")
    expect(page.locator("#export-error")).to_contain_text("Quillon")
    document = json.loads(Path(download.path()).read_text())
    assert document["type"] == "characters"
    assert [c["name"] for c in document["characters"]] == ["Quill"]
    assert image_size(base64.b64decode(document["characters"][0]["imageData"])) == (96, 128)


def gif_bytes(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 80), color).save(buffer, format="GIF")
    return buffer.getvalue()


def test_import_reports_imported_skipped_and_failed(page: Page, http: httpx.Client) -> None:
    add_character(http, "Sable", style_prompt="a fox-eared thief")
    wait_for_card(page, "Sable")
    document = {
        "version": 1,
        "type": "characters",
        "characters": [
            {"name": "Sable", "description": "another Sable"},
            {
                "name": "Tamsin",
                "description": "a lighthouse keeper",
                "physicalTraits": {"hair": "grey braid", "eyes": "unknown"},
                "imageData": base64.b64encode(gif_bytes((120, 120, 30))).decode(),
            },
            {"name": "Ursa", "imageData": "this is not base64!"},
        ],
    }
    page.set_input_files(
        "#import-file",
        files=[{"name": "cast.json", "mimeType": "application/json",
                "buffer": json.dumps(document).encode()}],
    )  # fmt: skip
    dialog = page.locator("#import-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#import-title")).to_have_text("Import cast.json")
    report = page.locator("#import-report")
    expect(report.locator(".count")).to_have_text(["1 imported", "1 skipped", "1 failed"])
    expect(report.locator(".imported li")).to_have_text(["Tamsin"])
    expect(report.locator(".skipped li")).to_have_text(
        ["Sable — a character with this name already exists"]
    )
    expect(report.locator(".failed li")).to_contain_text(["Ursa"])
    expect(report.locator(".warnings li")).to_contain_text(["Tamsin — imageData was a GIF"])
    page.click("#import-close")
    expect(dialog).to_be_hidden()
    card = page.locator(".card", has_text="Tamsin")
    expect(card.locator("img.thumb")).to_have_attribute("src", BLOB_URL)
    tamsin = http.get("/v1/characters/Tamsin").json()
    assert (tamsin["physical"]["hair"], tamsin["physical"]["eyes"]) == ("grey braid", "")
    assert http.get("/v1/characters/Sable").json()["description"] == ""

    # A file that is not JSON: said plainly, nothing imported.
    page.set_input_files(
        "#import-file", files=[{"name": "notes.json", "mimeType": "application/json",
                                "buffer": b"{not json"}],
    )  # fmt: skip
    expect(page.locator("#import-error")).to_contain_text("notes.json is not a JSON file")
    expect(page.locator("#import-report")).to_be_hidden()
    page.click("#import-close")


def test_export_as_a_character_card_and_import_it_back(
    page: Page, http: httpx.Client, tmp_path: Path
) -> None:
    add_character(http, "Vesper", [png_bytes((30, 40, 200))], style_prompt="a moth-winged bard")
    add_character(http, "Yestin")
    wait_for_card(page, "Vesper")

    # A card holds one character: with the whole library chosen, the dialog says so.
    page.click("#export-characters")
    page.check("#export-form input[name='format'][value='card']")
    page.click("#export-download")
    expect(page.locator("#export-error")).to_contain_text("holds one character")
    page.keyboard.press("Escape")

    page.fill("#search", "Vesper")
    expect(page.locator(".card")).to_have_count(1)
    page.click("#export-characters")
    expect(page.locator("#export-scope-shown")).to_be_checked()
    page.check("#export-form input[name='format'][value='card']")
    with page.expect_download() as download_info:
        page.click("#export-download")
    download = download_info.value
    assert download.suggested_filename == "Vesper.png"
    data = Path(download.path()).read_bytes()
    with Image.open(io.BytesIO(data)) as picture:
        picture.load()
        assert picture.format == "PNG" and {"ccv3", "chara"} <= set(picture.text)
        card = json.loads(base64.b64decode(picture.text["ccv3"]))
    assert card["spec"] == "chara_card_v3" and card["data"]["name"] == "Vesper"
    assert card["data"]["extensions"]["castbook"]["style_prompt"] == "a moth-winged bard"

    # The PNG card goes back in through Import… (the server reads PNG cards).
    assert http.delete("/v1/characters/Vesper").status_code == 204
    page.set_input_files("#import-file", files=[upload("Vesper.png", data)])
    expect(page.locator("#import-report .count")).to_have_text(
        ["1 imported", "0 skipped", "0 failed"]
    )
    page.click("#import-close")
    assert http.get("/v1/characters/Vesper").json()["style_prompt"] == "a moth-winged bard"


# ---- Who is this? -------------------------------------------------------------------------------

DROP_FILE = """([name, type, b64]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, { type }));
    return transfer;
}"""


def back_view(hair: tuple[int, int, int], shirt: tuple[int, int, int], seed: int) -> bytes:
    """A drawn character seen from behind (its drawn face would decide, and dlib finds all
    drawn faces alike): the palette says who it is."""
    from PIL import ImageDraw

    image = drawn_character(hair=hair, shirt=shirt, seed=seed)
    ImageDraw.Draw(image).ellipse((98, 80, 158, 160), fill=hair)
    return encode(image)


def drop_file(page: Page, name: str, data: bytes, mime: str = "image/png") -> None:
    transfer = page.evaluate_handle(DROP_FILE, [name, mime, base64.b64encode(data).decode()])
    page.dispatch_event("#characters-panel", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#characters-panel", "drop", {"dataTransfer": transfer})


def test_dropping_a_picture_on_the_characters_tab_shows_who_it_is(
    page: Page, http: httpx.Client
) -> None:
    teal, yellow = (10, 160, 150), (250, 220, 0)
    made = add_character(http, "Tansy", [back_view(teal, yellow, 0)])
    add_character(http, "Umber", [back_view((120, 60, 20), (90, 90, 200), 0)])
    wait_for_card(page, "Tansy")
    drop_file(page, "who.png", back_view(teal, yellow, 3))
    result = page.locator("#identify-result")
    expect(result).to_have_attribute("data-state", "known", timeout=120_000)
    expect(result.locator(".identify-verdict")).to_contain_text("Looks like Tansy (score")
    expect(page.locator(f'.card[data-id="{made["id"]}"]')).to_have_class("card identified")
    # Not a picture: said so, nothing highlighted.
    drop_file(page, "notes.txt", b"just words", "text/plain")
    expect(result).to_have_attribute("data-state", "error")
    expect(result).to_contain_text("Drop a picture")
    expect(page.locator(".card.identified")).to_have_count(0)
    # The button takes a file too; an unreadable one gets the server's reason.
    page.set_input_files("#identify-file", files=[upload("broken.png", b"\x89PNG broken")])
    expect(result).to_have_attribute("data-state", "error", timeout=120_000)
    expect(result).to_contain_text("Could not read broken.png")
