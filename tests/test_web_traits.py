"""The character's fields are defined once (``castbook.library.models``): the API serves them
at ``GET /v1/characters/fields``, the web form builds its inputs from that answer, and the
CLI's table, the API's request bodies, the export formats and injection follow the same list.

The API tests run in-process; the browser tests drive a real ``castbook serve`` in Debian's
``chromium`` (tests/support/web.py), and are skipped without it (failed under ``CI=true``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from castbook.api.routes_characters import CharacterCreate, CharacterPatch
from castbook.cli.character import _field_rows
from castbook.library import character_phrases
from castbook.library.models import (
    EDITABLE_FIELDS,
    FORM_FIELDS,
    LIST_FIELDS,
    MAX_ITEM_LENGTH,
    MAX_LIST_ITEMS,
    MAX_NAME_LENGTH,
    MAX_TEXT_LENGTH,
    PHYSICAL_TRAITS,
    CharacterFields,
    clean_fields,
    fields_as_dict,
)
from tests.conftest import make_image_bytes
from tests.support.api import ApiFactory
from tests.support.server import Server
from tests.support.web import (
    api_client,
    castbook_server,
    enter_key,
    require_browser,
    server_page,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# The ids the form's inputs had before it was built from the API (other tests use them).
KEPT_IDS = {
    "style_prompt": "field-style",
    "negative_prompt": "field-negative",
    "distinctive_features": "field-traits",
}

# ---- the endpoint -------------------------------------------------------------------------


def test_fields_endpoint_lists_the_editable_fields_in_order_with_their_limits(
    make_api: ApiFactory,
) -> None:
    api = make_api()
    assert api.client.get("/v1/characters/fields").status_code == 401
    answer = api.client.get("/v1/characters/fields", headers=api.key("alice"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    fields = {field["name"]: field for field in body["fields"]}
    assert [field["name"] for field in body["fields"]] == list(EDITABLE_FIELDS)
    assert body["sections"] == {"appearance": "Appearance"}

    assert fields["name"]["required"] and fields["name"]["max_length"] == MAX_NAME_LENGTH
    for name in EDITABLE_FIELDS:
        field = fields[name]
        assert field["label"] and field["required"] == (name == "name")
        assert field["group"] == ("physical" if name in PHYSICAL_TRAITS else None)
        in_appearance = name in PHYSICAL_TRAITS or name == "clothing"
        assert field["section"] == ("appearance" if in_appearance else None)
        if name in LIST_FIELDS:
            assert field["kind"] == "list"
            assert (field["max_length"], field["max_items"]) == (MAX_ITEM_LENGTH, MAX_LIST_ITEMS)
            assert field["separator"] == ("," if name == "tags" else "\n")
        else:
            assert field["kind"] in ("text", "long_text")
            assert field["max_items"] is None and field["separator"] is None
            if name != "name":
                assert field["max_length"] == MAX_TEXT_LENGTH
    assert fields["distinctive_features"]["label"] == "Distinctive features"
    assert fields["style_prompt"]["kind"] == "long_text"
    assert fields["hair"]["kind"] == "text"

    openapi = api.client.get("/openapi.json").json()
    answer_schema = openapi["paths"]["/v1/characters/fields"]["get"]["responses"]["200"]
    ref = answer_schema["content"]["application/json"]["schema"]["$ref"]
    described = openapi["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(described["properties"]) == {"fields", "sections"}
    field_ref = described["properties"]["fields"]["items"]["$ref"]
    field_schema = openapi["components"]["schemas"][field_ref.rsplit("/", 1)[1]]
    assert set(field_schema["properties"]) == set(body["fields"][0])


def test_a_character_named_fields_is_still_reachable_by_id(make_api: ApiFactory) -> None:
    api = make_api()
    headers = api.key("alice")
    created = api.client.post("/v1/characters", json={"name": "fields"}, headers=headers)
    assert created.status_code == 201, created.text
    by_id = api.client.get(f"/v1/characters/{created.json()['id']}", headers=headers)
    assert by_id.json()["name"] == "fields"
    # The path itself is the field list (as /export is the export), even with that character.
    assert "fields" in api.client.get("/v1/characters/fields", headers=headers).json()


# ---- everything else that lists the fields follows the model -------------------------------


def _every_field_set() -> CharacterFields:
    """A character with a distinct value in every field (two entries in each list)."""
    values: dict[str, object] = {}
    for field in FORM_FIELDS:
        word = field.name.replace("_", "-")
        values[field.name] = [f"{word} one", f"{word} two"] if field.kind == "list" else word
    return clean_fields(values)


def test_the_field_list_is_the_models_fields_flattened() -> None:
    nested = [n for n in CharacterFields.model_fields if n != "physical"]
    assert sorted(EDITABLE_FIELDS) == sorted([*nested, *PHYSICAL_TRAITS])
    assert [field.name for field in FORM_FIELDS] == list(EDITABLE_FIELDS)
    assert set(fields_as_dict(_every_field_set())) == set(EDITABLE_FIELDS)


def test_the_api_bodies_take_exactly_the_editable_fields() -> None:
    flat = fields_as_dict(_every_field_set())
    assert set(CharacterCreate.model_fields) - {"physical"} == set(EDITABLE_FIELDS)
    assert set(CharacterPatch.model_fields) - {"physical", "primary_image"} == set(EDITABLE_FIELDS)
    assert CharacterCreate.model_validate(flat).changes() == flat
    traits = {trait: f"nested {trait}" for trait in PHYSICAL_TRAITS}
    assert CharacterPatch.model_validate({"physical": traits}).changes() == traits


def test_the_cli_table_shows_every_field_but_the_name_in_order() -> None:
    character = _every_field_set()
    rows = _field_rows(character)
    assert [label for label, _ in rows] == [
        name.replace("_", " ") for name in EDITABLE_FIELDS if name != "name"
    ]
    shown = dict(rows)
    assert shown["hair"] == "hair" and shown["skin"] == "skin"
    assert shown["distinctive features"] == "distinctive-features one, distinctive-features two"


def test_injection_uses_every_trait() -> None:
    phrases = " | ".join(character_phrases(_every_field_set()))
    for trait in PHYSICAL_TRAITS:
        assert trait in phrases, trait


def test_both_export_formats_carry_every_trait(make_api: ApiFactory) -> None:
    api = make_api()
    headers = api.key("alice")
    body = fields_as_dict(_every_field_set())
    created = api.client.post("/v1/characters", json=body, headers=headers)
    assert created.status_code == 201, created.text
    params = {"format": "castbook"}
    exported = api.client.get("/v1/characters/export", params=params, headers=headers).json()
    (character,) = exported["characters"]
    for name in EDITABLE_FIELDS:
        holder = character["physical"] if name in PHYSICAL_TRAITS else character
        assert holder[name] == body[name], name
    # nbp leaves out a character without an image (the app cannot show one): give it one.
    png = ("a.png", make_image_bytes(), "image/png")
    uploaded = api.client.post(
        f"/v1/characters/{created.json()['id']}/images", files=[("image", png)], headers=headers
    )
    assert uploaded.status_code == 201, uploaded.text
    params = {"format": "nbp"}
    exported = api.client.get("/v1/characters/export", params=params, headers=headers).json()
    (nbp,) = exported["characters"]
    assert nbp["physicalTraits"] == {trait: trait for trait in PHYSICAL_TRAITS}


# ---- the web form, in a real browser ------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    require_browser()
    with castbook_server(tmp_path_factory.mktemp("web-traits") / "home") as served:
        yield served


@pytest.fixture
def http(served: tuple[Server, str]) -> Iterator[httpx.Client]:
    with api_client(*served) as client:
        yield client


@pytest.fixture
def page(browser: Browser, served: tuple[Server, str]) -> Iterator[Page]:
    with server_page(browser, served[0], viewport=(1280, 800)) as page:
        enter_key(page, served[1])
        yield page


NAMED_CONTROLS = """() => [...document.querySelectorAll("#character-fields [name]")].map((e) => ({
    name: e.name, id: e.id, tag: e.tagName.toLowerCase(), maxLength: e.maxLength,
    placeholder: e.placeholder, required: e.required,
    label: e.closest("label").textContent.trim(),
    errorSlot: Boolean(document.querySelector(`.field-error[data-error-for="${e.name}"]`)),
    section: e.closest("fieldset.traits")?.querySelector("legend").textContent ?? null,
}))"""


def test_the_form_has_one_input_per_field_the_api_lists(page: Page, http: httpx.Client) -> None:
    from playwright.sync_api import expect

    fields = http.get("/v1/characters/fields").json()["fields"]
    page.click("#new-character")
    expect(page.locator("#character-dialog")).to_be_visible()
    expect(page.locator("#field-name")).to_be_focused()
    controls = page.evaluate(NAMED_CONTROLS)
    assert [control["name"] for control in controls] == [field["name"] for field in fields]
    for field, control in zip(fields, controls, strict=True):
        assert control["id"] == KEPT_IDS.get(field["name"], f"field-{field['name']}")
        assert control["label"].startswith(field["label"])
        if field["hint"]:
            assert f"({field['hint']})" in control["label"]
        assert control["placeholder"] == field["placeholder"]
        assert control["required"] == field["required"]
        assert control["errorSlot"], field["name"]
        assert control["section"] == ("Appearance" if field["section"] == "appearance" else None)
        one_line = field["kind"] == "text" or field["separator"] == ","
        assert control["tag"] == ("input" if one_line else "textarea"), field["name"]
        if field["kind"] != "list":  # a list's limit is per entry, checked by the server
            assert control["maxLength"] == field["max_length"], field["name"]
    page.click("#cancel-character")


def test_hair_and_distinctive_features_round_trip_through_the_form(
    page: Page, http: httpx.Client
) -> None:
    from playwright.sync_api import expect

    page.click("#new-character")
    page.fill("#field-name", "Tamsin")
    page.fill("#field-hair", "copper braid")
    page.fill("#field-traits", "freckles\n\nscar over the left eye\n")
    page.fill("#field-tags", "scout,  ranger")
    page.click("#save-character")
    expect(page.locator("#character-dialog")).to_be_hidden()
    tamsin = http.get("/v1/characters/Tamsin").json()
    assert tamsin["physical"]["hair"] == "copper braid"
    assert tamsin["distinctive_features"] == ["freckles", "scar over the left eye"]
    assert tamsin["tags"] == ["scout", "ranger"]

    # Edit: the form shows what was saved, and Save sends only what changed.
    patches: list[Any] = []
    page.on(
        "request",
        lambda r: patches.append(r.post_data_json) if r.method == "PATCH" else None,
    )
    page.locator(".card", has_text="Tamsin").dblclick()
    expect(page.locator("#field-hair")).to_have_value("copper braid")
    expect(page.locator("#field-traits")).to_have_value("freckles\nscar over the left eye")
    expect(page.locator("#field-tags")).to_have_value("scout, ranger")
    page.fill("#field-hair", "copper braid, shaved sides")
    page.click("#save-character")
    expect(page.locator("#character-dialog")).to_be_hidden()
    assert patches == [{"hair": "copper braid, shaved sides"}]
    tamsin = http.get("/v1/characters/Tamsin").json()
    assert tamsin["physical"]["hair"] == "copper braid, shaved sides"
    assert tamsin["distinctive_features"] == ["freckles", "scar over the left eye"]


def test_every_field_the_api_lists_round_trips_through_the_form(
    page: Page, http: httpx.Client
) -> None:
    from playwright.sync_api import expect

    fields = http.get("/v1/characters/fields").json()["fields"]
    typed: dict[str, str] = {}
    wanted: dict[str, Any] = {}
    for field in fields:
        word = "Ysolde" if field["name"] == "name" else f"{field['name']} value"
        if field["kind"] == "list":
            entries = [f"{word} 1", f"{word} 2"]
            typed[field["name"]] = field["separator"].join(entries)
            wanted[field["name"]] = entries
        else:
            typed[field["name"]] = wanted[field["name"]] = word

    page.click("#new-character")
    for name, text in typed.items():
        page.locator(f'#character-fields [name="{name}"]').fill(text)
    page.click("#save-character")
    expect(page.locator("#character-dialog")).to_be_hidden()
    saved = http.get("/v1/characters/Ysolde").json()
    for field in fields:
        holder = saved[field["group"]] if field["group"] else saved
        assert holder[field["name"]] == wanted[field["name"]], field["name"]

    # Editing shows every saved value in its input, as it would be typed.
    page.locator(".card", has_text="Ysolde").dblclick()
    for field in fields:
        shown = typed[field["name"]]
        if field["separator"] == ",":
            shown = shown.replace(",", ", ")
        expect(page.locator(f'#character-fields [name="{field["name"]}"]')).to_have_value(shown)
    page.click("#cancel-character")


def test_without_the_field_list_the_form_says_why_and_cannot_save(
    browser: Browser, served: tuple[Server, str]
) -> None:
    from playwright.sync_api import expect

    with server_page(browser, served[0], viewport=(1280, 800)) as page:
        failing = json.dumps({"error": "the field list is unavailable"})
        page.route(
            "**/v1/characters/fields",
            lambda route: route.fulfill(status=503, body=failing, content_type="application/json"),
        )
        enter_key(page, served[1])
        page.click("#new-character")
        error = page.locator("#fields-error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("Could not load the character's fields")
        expect(error).to_contain_text("the field list is unavailable")
        expect(page.locator("#character-fields [name]")).to_have_count(0)
        expect(page.locator("#save-character")).to_be_disabled()

        # The server answers again: the next opening builds the fields.
        page.unroute("**/v1/characters/fields")
        page.click("#cancel-character")
        page.click("#new-character")
        expect(page.locator("#field-hair")).to_be_visible()
        expect(page.locator("#fields-error")).to_have_count(0)
        expect(page.locator("#save-character")).to_be_enabled()
