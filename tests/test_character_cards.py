"""Character Card V2 / V3 (SillyTavern, RisuAI, chub): PNG, JSON and .charx cards."""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from castbook.blobs import BlobStore
from castbook.db import Database
from castbook.errors import ImportFormatError, InvalidInputError
from castbook.library import CharacterLibrary, ExportFormat, ImageInput, export_characters
from castbook.library.exchange import (
    export_card,
    export_to_file,
    import_card_bytes,
    import_document,
    import_file,
)
from tests.conftest import make_image_bytes
from tests.support.cli import castbook

# A pixel of make_image_bytes' plain background: away from its oval and its corner mark
# (a dark 3×4 rectangle at the top left, so (1, 1) is never the background colour).
# Format tests: the blob store underneath does not matter, and test_library.py and
# test_exchange.py already run the library on a bucket (the `library` fixture).
LIBRARY_STORES = ("folder",)
BACKGROUND = (60, 76)

# ---- helpers --------------------------------------------------------------------------------


def b64_json(card: object) -> str:
    return base64.b64encode(json.dumps(card).encode("utf-8")).decode("ascii")


def png_text(data: bytes) -> dict[str, str]:
    """The text chunks as a plain Pillow read sees them."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return dict(image.text)


def card_of(data: bytes, keyword: str = "ccv3") -> dict[str, Any]:
    return json.loads(base64.b64decode(png_text(data)[keyword]))


def make_card(spec: str = "chara_card_v3", **data: Any) -> dict[str, Any]:
    fields = {
        "name": "Seraphina",
        "description": "A guardian of the glade.",
        "personality": "caring, protective",
        "scenario": "You wake in her cottage.",
        "first_mes": "*She smiles.* You're awake.",
        "mes_example": "",
        "creator_notes": "Works best with long replies.",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": ["Hello again."],
        "tags": ["fantasy", "female"],
        "creator": "someone",
        "character_version": "1.2",
        "extensions": {"talkativeness": "0.5", "depth_prompt": {"depth": 4, "prompt": "x"}},
        "character_book": {"entries": [{"keys": ["glade"], "content": "A forest."}]},
    }
    if spec == "chara_card_v3":
        fields["group_only_greetings"] = []
        fields["nickname"] = "Sera"
    fields.update(data)
    return {"spec": spec, "spec_version": "3.0" if spec.endswith("v3") else "2.0", "data": fields}


def png_card(
    image: bytes | None = None,
    *,
    ccv3: object = None,
    chara: object = None,
    raw: dict | None = None,
) -> bytes:
    """A card as SillyTavern writes it: tEXt chunks of base64 JSON (``raw`` text as given)."""
    picture = Image.open(io.BytesIO(image or make_image_bytes((30, 140, 90))))
    info = PngImagePlugin.PngInfo()
    if chara is not None:
        info.add_text("chara", b64_json(chara))
    if ccv3 is not None:
        info.add_text("ccv3", b64_json(ccv3))
    for keyword, text in (raw or {}).items():
        info.add_text(keyword, text)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def png_bomb(width: int = 20000, height: int = 10000) -> bytes:
    """A 200 MP PNG of a few hundred KB, with a valid card in it."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    text = b"ccv3\x00" + b64_json(make_card()).encode()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", text)
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def charx(card: object, files: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("card.json", json.dumps(card))
        for name, content in (files or {}).items():
            archive.writestr(name, content)
    return buffer.getvalue()


def open_library(root: Path) -> CharacterLibrary:
    root.mkdir(parents=True, exist_ok=True)
    return CharacterLibrary(
        Database(f"sqlite:///{root / 'castbook.db'}"), BlobStore(root / "blobs")
    )


@pytest.fixture
def library(tmp_path: Path) -> Iterator[CharacterLibrary]:
    library = open_library(tmp_path / "a")
    yield library
    library.database.dispose()


@pytest.fixture
def other(tmp_path: Path) -> Iterator[CharacterLibrary]:
    library = open_library(tmp_path / "b")
    yield library
    library.database.dispose()


def assert_untouched(library: CharacterLibrary) -> None:
    """Nothing written: no character, no image file."""
    assert library.list() == []
    assert list(library.blobs) == []
    root = getattr(library.blobs, "root", None)  # the folder: not even a temporary file
    assert root is None or not root.exists() or [p for p in root.rglob("*") if p.is_file()] == []


@pytest.fixture
def alice(library: CharacterLibrary):
    return library.create(
        {
            "name": "Alice",
            "style_prompt": "long black hair, blue eyes",
            "negative_prompt": "glasses",
            "description": "A calm barista.\n\nPersonality: patient, dry humour",
            "hair": "long black",
            "eyes": "blue",
            "clothing": "white shirt",
            "accessories": ["silver necklace"],
            "distinctive_features": ["mole under left eye"],
            "tags": ["cafe", "hero"],
        },
        [
            ImageInput(make_image_bytes((200, 10, 10)), "a.png"),
            ImageInput(make_image_bytes((10, 10, 200), fmt="JPEG"), "b.jpg"),
            ImageInput(make_image_bytes((10, 200, 10), fmt="WEBP"), "c.webp"),
        ],
        primary_index=1,
    )


def same_fields(a, b) -> bool:
    skip = {"images"}
    return a.model_dump(exclude=skip) == b.model_dump(exclude=skip)


# ---- export ---------------------------------------------------------------------------------


def test_png_card_has_v3_and_v2_chunks_a_plain_pillow_read_finds(library, alice) -> None:
    data = export_card(library, [alice])
    text = png_text(data)
    assert set(text) >= {"ccv3", "chara"}
    v3, v2 = card_of(data, "ccv3"), card_of(data, "chara")
    assert (v3["spec"], v3["spec_version"]) == ("chara_card_v3", "3.0")
    assert (v2["spec"], v2["spec_version"]) == ("chara_card_v2", "2.0")
    for card in (v3, v2):
        assert card["data"]["name"] == "Alice"
        assert card["data"]["description"] == "A calm barista."
        assert card["data"]["personality"] == "patient, dry humour"
        assert card["data"]["tags"] == ["cafe", "hero"]
        own = card["data"]["extensions"]["castbook"]
        assert own["style_prompt"] == "long black hair, blue eyes"
        assert own["physical"]["hair"] == "long black"
    assert v2["name"] == "Alice" and v2["personality"] == "patient, dry humour"  # V1 mirror
    assert len(v3["data"]["extensions"]["castbook"]["references"]) == 2
    assert "references" not in v2["data"]["extensions"]["castbook"]
    assert v3["data"]["assets"][0] == {
        "type": "icon",
        "uri": "ccdefault:",
        "name": "main",
        "ext": "png",
    }
    with Image.open(io.BytesIO(data)) as image:  # the primary (a JPEG) as the card's picture
        assert image.format == "PNG" and image.size == (64, 80)
        assert image.getpixel(BACKGROUND)[2] > 150


def test_card_json_embeds_the_primary_image(library, alice) -> None:
    card = export_characters(library, [alice], ExportFormat.CARD_JSON)
    assert card["spec"] == "chara_card_v3"
    icon = card["data"]["assets"][0]
    assert icon["type"] == "icon" and icon["name"] == "main" and icon["ext"] == "jpg"
    assert icon["uri"].startswith("data:image/jpeg;base64,")
    assert isinstance(card["data"]["creation_date"], int)


def test_a_card_holds_one_character(library, alice) -> None:
    library.create({"name": "Bob"})
    everyone = library.list()
    with pytest.raises(InvalidInputError, match="holds one character"):
        export_card(library, everyone)
    with pytest.raises(InvalidInputError, match="holds one character"):
        export_characters(library, everyone, ExportFormat.CARD_JSON)
    with pytest.raises(InvalidInputError, match="no reference image"):
        export_card(library, [library.get("Bob")])


# ---- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "json"])
def test_castbook_round_trip_keeps_every_field_and_image(library, other, alice, fmt) -> None:
    if fmt == "png":
        report = import_card_bytes(other, export_card(library, [alice]), source="alice.png")
    else:
        report = import_document(other, export_characters(library, [alice], ExportFormat.CARD_JSON))
    assert report.as_dict()["imported"] == 1
    back = other.get("Alice")
    assert same_fields(back, alice)  # id, timestamps, description, traits, tags
    assert len(back.images) == 3
    assert back.images.index(back.primary_image) == 1
    # The further references come back byte for byte; the card picture is the primary.
    for index in (0, 2):
        assert other.image_bytes(back.images[index]) == library.image_bytes(alice.images[index])
    if fmt == "json":
        assert other.image_bytes(back.primary_image) == library.image_bytes(alice.primary_image)


def test_a_foreign_card_keeps_its_unknown_keys_on_re_export(library, other) -> None:
    original = make_card(custom_field={"kept": True})
    original["data"]["extensions"]["chub"] = {"id": 42}
    original["top_level_extra"] = "kept too"
    report = import_card_bytes(library, png_card(ccv3=original), source="sera.png")
    assert report.as_dict()["imported"] == 1
    sera = library.get("Seraphina")
    assert sera.description == (
        "A guardian of the glade.\n\nPersonality: caring, protective\n\n"
        "Scenario: You wake in her cottage.\n\nCreator notes: Works best with long replies."
    )
    assert sera.tags == ("fantasy", "female")
    assert len(sera.images) == 1
    # The stored picture is the card's picture (pixels unchanged).
    with Image.open(io.BytesIO(library.image_bytes(sera.primary_image))) as stored:
        assert stored.getpixel(BACKGROUND) == (30, 140, 90)

    library.update("Seraphina", {"style_prompt": "silver hair, green eyes"})
    again = card_of(export_card(library, [library.get("Seraphina")]))
    data = again["data"]
    assert again["top_level_extra"] == "kept too"
    for key in ("description", "personality", "scenario", "creator_notes", "first_mes",
                "alternate_greetings", "character_book", "nickname", "custom_field"):  # fmt: skip
        assert data[key] == original["data"][key], key
    assert data["extensions"]["chub"] == {"id": 42}
    assert data["extensions"]["talkativeness"] == "0.5"
    assert data["extensions"]["castbook"]["style_prompt"] == "silver hair, green eyes"

    # Editing the description in castbook splits it back into the card's fields.
    library.update("Seraphina", {"description": "Keeper of the glade.\n\nScenario: A storm."})
    data = card_of(export_card(library, [library.get("Seraphina")]))["data"]
    assert (data["description"], data["personality"], data["scenario"]) == (
        "Keeper of the glade.",
        "",
        "A storm.",
    )
    assert data["character_book"] == original["data"]["character_book"]

    # And the re-exported card imports elsewhere with the same fields.
    exported = export_card(library, [library.get("Seraphina")])
    import_card_bytes(other, exported, source="again.png")
    assert same_fields(other.get("Seraphina"), library.get("Seraphina"))


def test_v2_only_card(library) -> None:
    card = make_card("chara_card_v2")
    report = import_card_bytes(library, png_card(chara=card), source="v2.png")
    assert report.as_dict()["imported"] == 1
    seraphina = library.get("Seraphina")
    assert seraphina.description.startswith("A guardian of the glade.\n\nPersonality:")
    upgraded = card_of(export_card(library, [seraphina]))
    assert upgraded["spec"] == "chara_card_v3"
    assert upgraded["data"]["character_book"] == card["data"]["character_book"]
    assert upgraded["data"]["group_only_greetings"] == []


def test_v3_only_card(library) -> None:
    report = import_card_bytes(library, png_card(ccv3=make_card()), source="v3.png")
    assert report.as_dict()["imported_names"] == ["Seraphina"]
    sera = library.get("Seraphina")
    assert sera.description.startswith("A guardian of the glade.\n\nPersonality: caring")
    assert sera.description.endswith("Creator notes: Works best with long replies.")
    assert sera.tags == ("fantasy", "female")
    assert sera.style_prompt == ""
    # The card's picture is the one reference, and it is the primary.
    assert len(sera.images) == 1 and sera.primary_image is sera.images[0]
    with Image.open(io.BytesIO(library.image_bytes(sera.primary_image))) as stored:
        assert stored.getpixel(BACKGROUND) == (30, 140, 90)


def test_ccv3_is_preferred_over_chara(library) -> None:
    v2 = make_card("chara_card_v2", name="Old Name")
    v3 = make_card(name="New Name")
    import_card_bytes(library, png_card(chara=v2, ccv3=v3), source="both.png")
    assert [c.name for c in library.list()] == ["New Name"]


def test_plain_json_card_file(library, tmp_path: Path) -> None:
    path = tmp_path / "sera.json"
    path.write_text(json.dumps(make_card("chara_card_v2")))
    report = import_file(library, path)
    assert report.as_dict()["imported"] == 1
    assert library.get("Seraphina").images == ()


def test_json_card_with_a_data_url_icon(library) -> None:
    icon = base64.b64encode(make_image_bytes((1, 2, 250))).decode()
    card = make_card(assets=[{"type": "icon", "uri": f"data:image/png;base64,{icon}",
                              "name": "main", "ext": "png"}])  # fmt: skip
    import_document(library, card)
    sera = library.get("Seraphina")
    assert len(sera.images) == 1
    again = export_characters(library, [sera], ExportFormat.CARD_JSON)
    assert again["data"]["nickname"] == "Sera"  # kept: the card lives in the stored PNG
    uri = again["data"]["assets"][0]["uri"]
    assert uri.startswith("data:image/png;base64,")
    picture = base64.b64decode(uri.partition(",")[2])
    assert not {"ccv3", "chara"} & set(png_text(picture))  # the card is not inside it twice


def test_charx_card(library, tmp_path: Path) -> None:
    icon = make_image_bytes((250, 250, 0))
    card = make_card(assets=[{"type": "icon", "uri": "embeded://assets/icon/image/main.png",
                              "name": "main", "ext": "png"}])  # fmt: skip
    path = tmp_path / "sera.charx"
    path.write_bytes(charx(card, {"assets/icon/image/main.png": icon}))
    assert import_file(library, path).as_dict()["imported"] == 1
    sera = library.get("Seraphina")
    with Image.open(io.BytesIO(library.image_bytes(sera.primary_image))) as stored:
        assert stored.getpixel(BACKGROUND) == (250, 250, 0)


def test_a_charx_icon_over_the_image_limit_is_refused_before_it_is_read(library) -> None:
    buffer = io.BytesIO()
    card = make_card(assets=[{"type": "icon", "uri": "embeded://assets/huge.png",
                              "name": "main", "ext": "png"}])  # fmt: skip
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", json.dumps(card))
        archive.writestr("assets/huge.png", b"\0" * (26 * 1024 * 1024))  # ~26 kB zipped
    with pytest.raises(ImportFormatError, match=r"assets/huge.png is too large .*limit"):
        import_card_bytes(library, buffer.getvalue(), source="huge.charx")
    assert_untouched(library)


def test_a_name_already_in_the_library_is_skipped(library, alice) -> None:
    data = export_card(library, [alice])
    report = import_card_bytes(library, data, source="alice.png").as_dict()
    assert (report["imported"], report["skipped"]) == (0, 1)


def test_a_large_card_picture_is_resized_and_keeps_the_card(library) -> None:
    big = make_image_bytes((90, 90, 90), size=(2000, 1000))
    import_card_bytes(library, png_card(big, ccv3=make_card(custom_field=1)), source="big.png")
    sera = library.get("Seraphina")
    assert (sera.primary_image.width, sera.primary_image.height) == (1536, 768)
    assert card_of(export_card(library, [sera]))["data"]["custom_field"] == 1


def test_overlong_foreign_text_and_tags_are_clipped_to_castbook_limits(library) -> None:
    card = make_card(description="x" * 5000, tags=[f"t{i}" for i in range(80)])
    import_card_bytes(library, png_card(ccv3=card), source="long.png")
    sera = library.get("Seraphina")
    assert len(sera.description) == 4000 and sera.description.endswith("…")
    assert len(sera.tags) == 50
    # Unchanged in castbook: the card's own full text goes back out.
    assert card_of(export_card(library, [sera]))["data"]["description"] == "x" * 5000


# ---- malformed cards: one clear error each, nothing written --------------------------------


MALFORMED = {
    "no card chunk": (lambda: png_card(), "without a character card"),
    "bad base64": (
        lambda: png_card(raw={"ccv3": "not base64 !!!"}),
        "'ccv3' chunk is not valid base64",
    ),
    "not json": (
        lambda: png_card(raw={"chara": base64.b64encode(b"{oops").decode()}),
        "'chara' chunk does not hold card JSON",
    ),
    "wrong spec": (
        lambda: png_card(ccv3={**make_card(), "spec": "chara_card_v9"}),
        "spec 'chara_card_v9'",
    ),
    "no spec (V1)": (lambda: png_card(chara={"name": "Old"}), "has no 'spec'"),
    "wrong spec_version": (
        lambda: png_card(ccv3={**make_card(), "spec_version": "2.0"}),
        "spec_version '2.0' is not a version of chara_card_v3",
    ),
    "no data": (
        lambda: png_card(ccv3={"spec": "chara_card_v3", "spec_version": "3.0"}),
        "no 'data' object",
    ),
    "cut short": (lambda: png_card(ccv3=make_card())[:-30], "damaged PNG"),
    "bad chunk checksum": (lambda: _bad_crc(png_card(ccv3=make_card())), "checksum"),
    "zip without card.json": (lambda: charx_without_card(), "without card.json"),
    "json that is no card": (lambda: b'{"hello": 1}', "not a character card"),
    "garbage": (lambda: b"GIF89a....", "not a character card"),
}


def _bad_crc(data: bytes) -> bytes:
    at = data.index(b"ccv3") - 4  # the chunk type
    (length,) = struct.unpack(">I", data[at - 4 : at])
    crc_at = at + 4 + length
    return data[:crc_at] + bytes([data[crc_at] ^ 0xFF]) + data[crc_at + 1 :]


def charx_without_card() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("other.json", "{}")
    return buffer.getvalue()


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_cards_are_refused_whole(library, case: str) -> None:
    make, message = MALFORMED[case]
    with pytest.raises(ImportFormatError, match=message):
        import_card_bytes(library, make(), source="bad.png")
    assert_untouched(library)


def test_a_json_card_with_a_wrong_spec_through_import_document(library) -> None:
    with pytest.raises(ImportFormatError, match="spec 'chara_card_v4'"):
        import_document(library, {"spec": "chara_card_v4", "data": {"name": "X"}})
    assert_untouched(library)


def test_a_card_whose_picture_is_a_bomb_fails_and_writes_nothing(library) -> None:
    report = import_card_bytes(library, png_bomb(), source="bomb.png").as_dict()
    assert (report["imported"], report["failed"]) == (0, 1)
    reason = report["failed_details"][0]["reason"]
    assert "200 MP" in reason and "limit is 40 MP" in reason
    assert_untouched(library)


def test_bad_castbook_extension_fails_the_card(library) -> None:
    card = make_card()
    card["data"]["extensions"]["castbook"] = {"references": [{"data": "%%%"}]}
    report = import_card_bytes(library, png_card(ccv3=card), source="x.png").as_dict()
    assert report["failed"] == 1
    assert "references[0].data is not valid base64" in report["failed_details"][0]["reason"]
    assert_untouched(library)


def test_lone_surrogate_in_a_card_fails_it(library) -> None:
    text = json.dumps(make_card()).replace("A guardian", "\\ud800 guardian")
    raw = base64.b64encode(text.encode()).decode()
    report = import_card_bytes(library, png_card(raw={"ccv3": raw}), source="x.png").as_dict()
    assert report["failed"] == 1 and "surrogate" in report["failed_details"][0]["reason"]


# ---- the CLI --------------------------------------------------------------------------------


def test_cli_export_card_and_import_it(castbook_home: Path, tmp_path: Path) -> None:
    picture = tmp_path / "alice.png"
    picture.write_bytes(make_image_bytes())
    code, _, err = castbook(
        "character", "add", "--name", "Alice", "--image", str(picture), "--style", "red scarf"
    )
    assert code == 0, err
    card_path = tmp_path / "out" / "alice.card.png"
    code, out, err = castbook(
        "character", "export", "Alice", "--format", "card", "-o", str(card_path)
    )
    assert code == 0, err
    assert "character card" in out
    assert (
        card_of(card_path.read_bytes())["data"]["extensions"]["castbook"]["style_prompt"]
        == "red scarf"
    )
    json_path = tmp_path / "alice.card.json"
    code, _, err = castbook(
        "character", "export", "Alice", "--format", "card-json", "-o", str(json_path)
    )
    assert code == 0, err
    assert json.loads(json_path.read_text())["spec"] == "chara_card_v3"

    code, out, _ = castbook("character", "delete", "Alice", "--yes")
    assert code == 0, out
    code, out, err = castbook("character", "import", str(card_path))
    assert code == 0, err
    assert "Imported 1" in out
    code, out, err = castbook("character", "show", "Alice", "--json")
    assert code == 0, err
    back = json.loads(out)
    assert back["style_prompt"] == "red scarf" and len(back["images"]) == 1
    code, out, _ = castbook("character", "import", str(json_path))
    assert code == 0 and "skipped 1" in out

    assert castbook("character", "add", "--name", "Bob")[0] == 0
    two = tmp_path / "two.png"
    code, out, err = castbook("character", "export", "--all", "--format", "card", "-o", str(two))
    assert code == 1 and "holds one character" in err and not two.exists()


def test_cli_import_malformed_card_is_one_error_line(castbook_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(png_card(raw={"ccv3": "@@@"}))
    code, out, err = castbook("character", "import", str(path))
    assert code == 1
    assert "not valid base64" in err
    assert "Traceback" not in err + out


def test_export_to_file_writes_a_png_card(library, alice, tmp_path: Path) -> None:
    path = tmp_path / "alice.png"
    export_to_file(library, [alice], path, ExportFormat.CARD)
    assert card_of(path.read_bytes())["data"]["name"] == "Alice"


# ---- the HTTP API ---------------------------------------------------------------------------


def test_api_export_and_import_cards(make_api) -> None:
    from tests.support.api import add_character

    api = make_api()
    headers = api.key("ann")
    add_character(api, headers)
    exported = api.client.get(
        "/v1/characters/export", params={"format": "card", "id": "Alice"}, headers=headers
    )
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"] == "image/png"
    assert 'filename="Alice.png"' in exported.headers["content-disposition"]
    assert card_of(exported.content)["data"]["name"] == "Alice"

    as_json = api.client.get(
        "/v1/characters/export", params={"format": "card-json", "id": "Alice"}, headers=headers
    )
    assert as_json.status_code == 200 and as_json.json()["spec"] == "chara_card_v3"

    two = api.client.post("/v1/characters", json={"name": "Bob"}, headers=headers)
    assert two.status_code == 201
    refused = api.client.get("/v1/characters/export", params={"format": "card"}, headers=headers)
    assert refused.status_code == 422 and "holds one character" in refused.text

    bea = api.key("bea")  # another owner imports both
    answer = api.client.post(
        "/v1/characters/import/card",
        files={"file": ("alice.png", exported.content, "image/png")},
        headers=bea,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["imported_names"] == ["Alice"]
    charx_file = charx(make_card())
    answer = api.client.post(
        "/v1/characters/import/card",
        files={"file": ("sera.charx", charx_file, "application/zip")},
        headers=bea,
    )
    assert answer.json()["imported"] == 1
    answer = api.client.post("/v1/characters/import", json=make_card(name="Json Sera"), headers=bea)
    assert answer.json()["imported_names"] == ["Json Sera"]
    names = {c["name"] for c in api.client.get("/v1/characters", headers=bea).json()}
    assert names == {"Alice", "Seraphina", "Json Sera"}

    bad = api.client.post(
        "/v1/characters/import/card",
        files={"file": ("bad.png", png_card(raw={"ccv3": "@@@"}), "image/png")},
        headers=bea,
    )
    assert bad.status_code == 422 and "not valid base64" in bad.text
    bomb = api.client.post(
        "/v1/characters/import/card",
        files={"file": ("bomb.png", png_bomb(), "image/png")},
        headers=bea,
    )
    assert bomb.status_code == 200 and bomb.json()["failed"] == 1
    after = {c["name"] for c in api.client.get("/v1/characters", headers=bea).json()}
    assert after == names
